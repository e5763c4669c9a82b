"""The imaging chain end to end: area densities and views -> every stage -> the display radiograph."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ct2x.drr.materials import MATERIALS
from ct2x.errors import CT2XError
from ct2x.geometry import CArm
from ct2x.imaging.beam import beam_profile, field_mask, primary, quanta_per_pixel
from ct2x.imaging.console import console
from ct2x.imaging.detector import detect, flat_field, log_image
from ct2x.imaging.filters import view_list
from ct2x.imaging.parameters import ImagingParameters, resolve
from ct2x.imaging.scatter import scatter, through_grid, water_equivalent_thickness


@dataclass(frozen=True)
class ImagingStages:
    """Every stage of one :func:`simulate` call, each ``(V, H, W)`` float32 (``(H, W)`` for one view).

    Attributes:
        primary: the primary transmitted fraction (1 = unattenuated), noise-free.
        thickness: the water-equivalent thickness along each ray, cm.
        beam: the incident fluence relative to the central ray (heel effect, inverse square, obliquity).
        field: the exposed field in [0, 1] (collimation, round field).
        scatter: scatter at the detector before the grid, in units of the central ray's unattenuated fluence.
        expected: the expected quanta reaching the detector (primary and scatter, after the grid).
        signal: the detector's signal, quanta (blurred, with quantum and electronic noise).
        flat: the flat field the log divides by, quanta.
        log: the detector's log ``-log(signal / flat)``: the raw image before the console's processing.
        image: the processed display image in [0, 1], bright = attenuating.
    """

    primary: torch.Tensor
    thickness: torch.Tensor
    beam: torch.Tensor
    field: torch.Tensor
    scatter: torch.Tensor
    expected: torch.Tensor
    signal: torch.Tensor
    flat: torch.Tensor
    log: torch.Tensor
    image: torch.Tensor


def _area(area: torch.Tensor, views: CArm | Sequence[CArm]) -> tuple[torch.Tensor, list[CArm], bool]:
    """Area densities ``(V, M, H, W)`` or ``(M, H, W)`` with one view each -> ``(V, M, H, W)`` float32, views."""
    views, single = view_list(views)
    if not isinstance(area, torch.Tensor) or area.dim() != (3 if single else 4) or area.shape[-3] != len(MATERIALS):
        shape = tuple(area.shape) if isinstance(area, torch.Tensor) else type(area).__name__
        raise CT2XError(f"give area densities (V, {len(MATERIALS)}, H, W) in g/cm^2 (ct2x.drr.area_densities) "
                        f"with a list of views, or ({len(MATERIALS)}, H, W) with one view; got {shape}")  # fmt: skip
    area = area[None] if single else area
    if area.shape[0] != len(views):
        raise CT2XError(f"give one view per image of area densities: {area.shape[0]} image(s), {len(views)} view(s)")
    wrong = [v.detector_shape for v in views if v.detector_shape != tuple(area.shape[-2:])]
    if wrong:
        raise CT2XError(f"the area densities are {tuple(area.shape[-2:])} pixels but a view's detector is {wrong[0]}")
    if not bool(torch.isfinite(area).all()) or bool((area < 0).any()):
        raise CT2XError("the area densities must be finite and non-negative g/cm^2 (ct2x.drr.area_densities)")
    return area.float(), views, single


def _generator(seed: int | None, device: torch.device) -> torch.Generator:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise CT2XError(f"the imaging chain's seed must be a whole number or None, got {seed!r}")
    generator = torch.Generator(device=device)
    generator.manual_seed(secrets.randbits(63) if seed is None else seed % (1 << 63))
    return generator


def simulate(area: torch.Tensor, views: CArm | Sequence[CArm], parameters: str | ImagingParameters = "chest_dr_pa",
             *, seed: int | None = None) -> ImagingStages:  # fmt: skip
    """Radiographs from area densities, with every stage of the imaging chain (:class:`ImagingStages`).

    Stages: primary (the DRR's physics, with any support devices) -> water-equivalent thickness -> beam
    profile (heel effect, inverse square, obliquity) and collimated field -> scatter (kernel model) -> grid ->
    expected quanta (dose) -> focal-spot blur, Poisson noise, detector blur, gain, electronic noise -> flat
    field and log -> the console's processing. See the modules of :mod:`ct2x.imaging` for each stage's model
    and sources.

    Args:
        area: per-material area densities ``(V, M, H, W)`` g/cm^2 (:func:`ct2x.drr.area_densities`), or
            ``(M, H, W)`` for one view; CPU or CUDA.
        views: one :class:`ct2x.geometry.CArm` per image (their distances and pixel spacing count).
        parameters: a preset's name (:data:`ct2x.imaging.PRESETS`) or :class:`ImagingParameters`.
        seed: makes the noise reproducible (on one device); ``None`` draws fresh noise.
    """
    parameters = resolve(parameters)
    area, views, single = _area(area, views)
    device = area.device
    transmitted = primary(area, views, parameters)
    thickness = water_equivalent_thickness(transmitted, parameters.spectrum)
    beam = beam_profile(views, parameters, device)
    field = field_mask(views, parameters, device)
    incident = transmitted * beam * field
    scattered = scatter(incident, views, thickness, parameters.scatter_scale)
    level = torch.tensor([quanta_per_pixel(view, parameters) for view in views], device=device)
    expected = level[:, None, None] * through_grid(incident, scattered, parameters)
    signal = detect(expected, views, parameters, _generator(seed, device))
    flat = flat_field(beam, views, parameters, level * parameters.grid_primary_transmission)
    log = log_image(signal, flat)
    image = console(log, views, parameters, field)
    stages = (transmitted, thickness, beam, field, scattered, expected, signal, flat, log, image)
    return ImagingStages(*(stage[0] if single else stage for stage in stages))


def radiograph(area: torch.Tensor, views: CArm | Sequence[CArm], parameters: str | ImagingParameters = "chest_dr_pa",
               *, seed: int | None = None) -> torch.Tensor:  # fmt: skip
    """The display radiographs ``(V, H, W)`` (``(H, W)`` for one view) in [0, 1], bright = attenuating, of
    :func:`simulate` (same arguments)."""
    return simulate(area, views, parameters, seed=seed).image

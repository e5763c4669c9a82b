"""Radiographs of a CT through the imaging chain, in one call: the CT's per-material area densities
(:func:`ct2x.drr.area_densities`, one march of every ray) then :func:`ct2x.imaging.radiograph`. This is the
one path ``ct2x drr``, the Slicer module and synthesis take from a CT to a radiograph.

:func:`chain_geometry` gives the C-arm of a preset (its distances and detector) with any of them
overridden, as ``ct2x drr`` does for its geometry options.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ct2x.device import torch_device
from ct2x.drr import Materials, area_densities
from ct2x.drr.projector import MARCHERS
from ct2x.drr.render import check_render_memory
from ct2x.errors import CT2XError
from ct2x.geometry import DEFAULT_DETECTOR_PIXELS, DEFAULT_PIXEL_MM, DEFAULT_SDD_MM, DEFAULT_SID_MM, CArm
from ct2x.imaging.chain import radiograph
from ct2x.imaging.parameters import PRESETS, ImagingParameters, resolve
from ct2x.volume import CTVolume


def render_radiographs(
    volume: CTVolume | Materials,
    carms: CArm | Sequence[CArm],
    parameters: str | ImagingParameters,
    *,
    step: float,
    device: str | torch.device | None = None,
    backend: str = "auto",
    seed: int | None = None,
    check_memory: bool = True,
) -> torch.Tensor:
    """Display radiographs of ``volume`` at ``carms`` through the imaging chain.

    Args:
        volume: the CT in HU (LPS placement), or its :func:`ct2x.drr.materials` (converted once for many
            calls; then its device and ray marcher are used).
        carms: the views (one detector shape); their distances and pixel spacing count (dose, blur, scatter).
        parameters: a preset's name (:data:`ct2x.imaging.PRESETS`) or :class:`ct2x.imaging.ImagingParameters`
            (e.g. :func:`ct2x.imaging.randomised`).
        step: ray-marching step in voxels of the CT's smallest spacing (0.1: the paper's).
        device: where the rays are marched and the chain runs (``None`` or ``"auto"``: CUDA when available).
        backend: the ray marcher, ``"numba"``, ``"torch"`` or ``"auto"`` (DeepDRR renders DRRs only: it gives
            no area densities).
        seed: makes the noise reproducible on one device; ``None`` draws fresh noise.
        check_memory: first refuse views whose march and chain cannot fit in memory, warn about ones that need
            more than is free (:func:`ct2x.drr.render.check_render_memory`; off when the caller checked already).

    Returns:
        ``(V, H, W)`` float32 on the CPU, display values in [0, 1], bright = attenuating.
    """
    if backend not in MARCHERS:
        raise CT2XError(
            f"the imaging chain needs the per-material area densities of a ray marcher: use backend "
            f"{', '.join(MARCHERS)}, not {backend!r} (DeepDRR renders raw DRRs only)"
        )
    parameters = resolve(parameters)  # an unknown preset fails before the march
    views = [carms] if isinstance(carms, CArm) else list(carms)
    if check_memory:
        ct, marcher = (volume.volume, volume.marcher) if isinstance(volume, Materials) else (volume, backend)
        check_render_memory(
            ct, views, spectrum=parameters.spectrum, device=torch_device(device), backend=marcher, imaging=True
        )
    area = area_densities(volume, views, step=step, device=torch_device(device), backend=backend)
    return radiograph(area, views, parameters, seed=seed).float().cpu()


def chain_geometry(
    preset: str | None,
    *,
    sdd: float | None = None,
    sid: float | None = None,
    detector_size: Sequence[int] | None = None,
    pixel_mm: Sequence[float] | None = None,
) -> dict[str, object]:
    """The imaging chain of a C-arm: ``sdd``, ``sid`` (mm), ``detector_shape`` (rows, columns) and
    ``pixel_spacing`` (row, column mm), keyword arguments of :class:`ct2x.geometry.CArm` and
    :func:`ct2x.geometry.views`.

    Each value given is used; the others are the preset's (``preset``: a key of
    :data:`ct2x.imaging.PRESETS`; ``None``: DeepDRR's mobile C-arm, SID 530 mm, SDD 1020 mm, 256 pixels of
    1.164 mm). ``detector_size`` and ``pixel_mm`` take one value (square) or two (rows, columns); given alone,
    either keeps the detector's size in mm (the other follows: ``pixel = size_mm / pixels``, ``pixels =
    round(size_mm / pixel)``); neither given, the detector is read out at 256 pixels on its longer side. The
    values are checked where they are given (:class:`ct2x.options.DRROptions`) and by the C-arm's detector check
    (:func:`ct2x.geometry.check_detector`).
    """
    if preset is None:
        field = (DEFAULT_DETECTOR_PIXELS * DEFAULT_PIXEL_MM,) * 2
        base = {"sdd": DEFAULT_SDD_MM, "sid": DEFAULT_SID_MM}
        shape, spacing = (DEFAULT_DETECTOR_PIXELS,) * 2, (DEFAULT_PIXEL_MM,) * 2
    elif preset in PRESETS:
        chosen = PRESETS[preset]
        view = chosen.view(DEFAULT_DETECTOR_PIXELS)
        field, base = tuple(chosen.field_mm), {"sdd": chosen.sdd_mm, "sid": chosen.sid_mm}
        shape, spacing = view.detector_shape, view.pixel_spacing
    else:
        raise CT2XError(f"unknown imaging preset {preset!r}: use one of {', '.join(PRESETS)} (or None)")
    pixels = None if detector_size is None else tuple(int(n) for n in _pair(detector_size, "the detector size"))
    pitch = None if pixel_mm is None else tuple(float(p) for p in _pair(pixel_mm, "the detector pixel spacing"))
    shape, spacing = pixels or shape, pitch or spacing
    if pixels is not None and pitch is None:
        spacing = (field[0] / shape[0], field[1] / shape[1])
    elif pitch is not None and pixels is None:
        shape = (max(1, round(field[0] / spacing[0])), max(1, round(field[1] / spacing[1])))
    return {
        "sdd": base["sdd"] if sdd is None else sdd,
        "sid": base["sid"] if sid is None else sid,
        "detector_shape": tuple(shape),
        "pixel_spacing": tuple(spacing),
    }


def _pair(values: Sequence, what: str) -> tuple:
    """One value (square) or two (rows, columns) as a (row, column) pair."""
    values = tuple(values) if not isinstance(values, (str, bytes)) and hasattr(values, "__len__") else (values,)
    if len(values) not in (1, 2):
        raise CT2XError(f"{what} takes one value (square) or two (rows, columns), got {len(values)}")
    return values[0], values[-1]

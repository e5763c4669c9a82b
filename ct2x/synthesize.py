"""Synthesis (paper eq. 1): X-ray images of a CT at C-arm poses, in the style of a radiograph.

The CT is prepared exactly as for training: read in HU (``ct2x.volume.read_ct``), resampled
to the model's grid (``preprocess``: ``voxel_spacing_mm``, then ``volume_size``^3), scaled
like the training volumes; the MIP at each pose is taken from that grid
(``ct2x.drr.mip``), as ``ct2x prepare`` does, but read out at twice the PAM's input size
(``2 * pam_mip_size`` pixels over the same detector) instead of ``image_size``: the PAM sees
the MIP resized to ``pam_mip_size`` either way, the two agree within 0.03 (mean 0.001) on the
[-1, 1] scale (``Testing/test_synthesize.py``), and the MIP no longer dominates the time.
The C-arm keeps the CT's frame (LPS mm); the isocenter defaults to the centre of the CT's
bounding box, the distances and detector to the geometry the model was trained with (its
card). The detector is read out at the model's ``image_size``, or at any pixel count for a model
with the physics anchor (:func:`model_views` ``detector_pixels`` / ``pixel_mm``). A model of the
``projected`` preset also reads the CT's per-material area densities and MIP at each view, made
from the CT as read (not the grid) at the view's exact geometry (``ct2x.drr.area_densities``,
``ct2x.drr.mip``), as ``ct2x prepare --projections`` makes them for training: the area densities
marched at the output's pixels and averaged to the networks' ``image_size``, while the physics
anchor's base (B, or with ``chain_anchor`` the imaging chain's radiograph C in the reference's
look, :func:`ct2x.imaging.styled`) is made at the output's pixels and G's residual resized to them.

One inference path, :func:`_synthesize`: per batch of views :func:`view_inputs` (the CT's content at
the views, through :meth:`ct2x.models.CT2XGAN.view_content`), then per style the style code and
base and :func:`render_images` (through :meth:`ct2x.models.CT2XGAN.render`); ``ct2x synthesize``,
``ct2x evaluate``, ``ct2x demo`` and the Slicer module all call :func:`synthesize`,
:func:`synthesize_styles` or :func:`synthesize_codes`, which call it.

Style: a reference radiograph (its X-ray style code, eq. 2), a style code stored with the
model (``ct2x.checkpoint.load_style_codes``), or ``drr_style=True``, which uses the DRR style
code of the CT's own DRR at each pose (eq. 5) - the reconstruction of eq. 7.

Every input is scaled for the networks by the model's own transforms (:mod:`ct2x.models.inputs`,
the ones the training data uses); nothing here reads the training data module.

Output images are float32 ``(H, W)`` (the detector's pixels) in [0, 1] (bright = attenuating,
:func:`ct2x.models.inputs.output_image`), displayed like an AP radiograph (``ct2x.geometry``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ct2x.config import CT2XConfig
from ct2x.data.radiographs import film_on_detector, radiograph_from_array, read_radiograph
from ct2x.device import torch_device
from ct2x.drr import Materials, area_densities, coverage, materials, mip, render_drr
from ct2x.drr.render import check_render_memory
from ct2x.errors import CT2XError
from ct2x.geometry import FILM_FIELD_MM, FIT_PIXELS, CArm, fit_views, views
from ct2x.imaging import ImagingParameters, fitted, simulate
from ct2x.models import CT2XGAN, ViewContent
from ct2x.models.inputs import (
    display_input,
    drr_input,
    mip_input,
    output_image,
    projection_input,
    volume_input,
    xray_input,
)
from ct2x.models.physics_anchor import area_base
from ct2x.volume import CTVolume, preprocess

#: The imaging chain's noise in a synthesis by a chain-anchored model is drawn from this seed and the index of
#: the first view of each batch: a synthesis is deterministic.
CHAIN_SEED = 0


@dataclass(frozen=True)
class SynthesizedView:
    """One synthesized view: ``image`` float32 ``(H, W)`` in [0, 1] and its C-arm."""

    image: np.ndarray
    carm: CArm


def model_views(
    config: CT2XConfig,
    card: dict,
    ct: CTVolume,
    primaries: Sequence[float],
    secondaries: Sequence[float] | None = None,
    sdd: float | None = None,
    sid: float | None = None,
    isocenter: tuple[float, float, float] | None = None,
    detector_size_mm: tuple[float, float] | None = None,
    detector_pixels: Sequence[int] | None = None,
    pixel_mm: Sequence[float] | None = None,
) -> list[CArm]:
    """C-arm views for a model: its detector (its training detector width, or ``detector_size_mm`` =
    (height, width) in mm, e.g. a real radiograph's) and distances (its training geometry unless ``sdd`` /
    ``sid`` in mm are given), turning about ``isocenter`` (LPS mm; default the centre of ``ct``'s bounding box).

    The detector is read out at ``image_size`` pixels a side unless ``detector_pixels`` (N, or rows and
    columns) or ``pixel_mm`` (one spacing, or row and column) is given: either alone keeps the detector's size
    in mm (the other follows); both give the detector ``pixels x spacing`` mm."""
    trained = card.get("training", {}).get("dataset_settings", {})
    if detector_size_mm is None:
        width_mm = trained.get("pixel_mm", config.pixel_spacing_mm) * trained.get("detector_size", config.image_size)
        detector_size_mm = (width_mm, width_mm)
    pitch = None if pixel_mm is None else (float(pixel_mm[0]), float(pixel_mm[-1]))
    if detector_pixels is not None:
        shape = (int(detector_pixels[0]), int(detector_pixels[-1]))
    elif pitch is not None:
        shape = tuple(max(1, round(float(mm) / p)) for mm, p in zip(detector_size_mm, pitch, strict=True))
    else:
        shape = (config.image_size, config.image_size)
    spacing = pitch or tuple(float(mm) / n for mm, n in zip(detector_size_mm, shape, strict=True))
    return views(
        list(primaries),
        None if secondaries is None else list(secondaries),
        sdd=sdd if sdd is not None else trained.get("sdd", config.sdd_mm),
        sid=sid if sid is not None else trained.get("sid", config.sid_mm),
        detector_shape=shape,
        pixel_spacing=spacing,
        isocenter=tuple(float(c) for c in (isocenter if isocenter is not None else ct.center_lps)),
    )


def read_out(carms: Sequence[CArm], size: int) -> list[CArm]:
    """The same C-arms and physical detectors read out at ``size`` x ``size`` pixels."""
    return [
        dataclasses.replace(
            c,
            detector_shape=(size, size),
            pixel_spacing=(
                c.pixel_spacing[0] * c.detector_shape[0] / size,
                c.pixel_spacing[1] * c.detector_shape[1] / size,
            ),
        )
        for c in carms
    ]


def mip_views(carms: Sequence[CArm], config: CT2XConfig) -> list[CArm]:
    """The views on which synthesis reads the MIPs: the same C-arms and physical detector, with
    ``2 * pam_mip_size`` pixels a side (see the module docstring)."""
    return read_out(carms, 2 * config.pam_mip_size)


@dataclass(frozen=True)
class PreparedCT:
    """A CT prepared for one model (:func:`prepare_ct`): the CT in HU, its grid resampled as in
    training, the volume input tensor on the model's device and, for a model with the projection
    path, the CT's materials for the area densities. Synthesizing many views one at a time (e.g.
    with a progress bar per view) from one ``PreparedCT`` resamples and converts the CT once."""

    ct: CTVolume
    grid: CTVolume
    volume: torch.Tensor
    materials: Materials | None = None


def prepare_ct(model: CT2XGAN, ct: CTVolume | PreparedCT) -> PreparedCT:
    """Resample ``ct`` to ``model``'s grid (``preprocess``) and scale it as the training volumes;
    a ``PreparedCT`` is returned as it is."""
    if isinstance(ct, PreparedCT):
        return ct
    if not np.any(ct.array):
        raise CT2XError("the CT is empty (all voxels are 0): check the file")
    config = model.config
    grid = preprocess(ct, spacing_mm=config.voxel_spacing_mm, size=config.volume_size)
    volume = volume_input(torch.from_numpy(grid.array), config).to(next(model.parameters()).device)
    return PreparedCT(ct, grid, volume, materials(ct) if config.projection_inputs else None)


@dataclass(frozen=True)
class ViewInputs:
    """What synthesis hands the model at a batch of views (:func:`view_inputs`): the view content (its base B,
    with the physics anchor, at the output's pixels) and, with the projection path, the CT's area densities
    ``(V, 3, H, W)`` g/cm^2 at the output's pixels (what the imaging chain reads)."""

    content: ViewContent
    area: torch.Tensor | None


def view_inputs(model: CT2XGAN, prepared: PreparedCT, carms: Sequence[CArm]) -> ViewInputs:
    """What the CT gives G at ``carms`` (module docstring). The networks read the views at ``image_size``
    pixels (:func:`read_out`); with the projection path the area densities are marched at the output's own
    pixels and averaged over each of the networks' pixels (the MIP is marched at the networks' pixels), and
    the physics anchor's base B is made from them at the output's pixels."""
    config = model.config
    device = prepared.volume.device
    size = config.image_size
    at_model = read_out(carms, size)
    poses = torch.as_tensor(np.stack([c.pose for c in at_model]), dtype=torch.float32, device=device)
    mips = mip_input(mip(prepared.grid, mip_views(at_model, config), step=config.drr_step), config)[:, None].to(device)
    projections = area = None
    if prepared.materials is not None:
        area = area_densities(prepared.materials, carms, step=config.drr_step).to(device)
        full_mip = mip(prepared.ct, at_model, step=config.drr_step)[:, None].to(device)
        projections = projection_input(torch.cat([F.adaptive_avg_pool2d(area, size), full_mip], dim=1), config)
    volume = prepared.volume[None].expand(len(carms), -1, -1, -1, -1)
    base = area_base(area, config) if model.tone_curve is not None else None
    content = model.view_content(volume, poses, mips, projections, base)
    return ViewInputs(content, area)


def render_images(model: CT2XGAN, content: ViewContent, codes: torch.Tensor) -> np.ndarray:
    """G(content, style) as float32 ``(B, H, W)`` in [0, 1] (bright = attenuating): ``image_size`` pixels
    a side, or with the physics anchor the base's pixels (:meth:`ct2x.models.CT2XGAN.render`)."""
    return output_image(model.render(content, codes))[:, 0].float().cpu().numpy()


def _check_detector(model: CT2XGAN, carms: Sequence[CArm]) -> None:
    """A model without the physics anchor makes ``image_size`` pixels a side; one with it reads the views at
    any detector size, all of one size."""
    size = model.config.image_size
    if model.tone_curve is None and any(c.detector_shape != (size, size) for c in carms):
        raise CT2XError(
            f"this model makes {size} x {size} images (it draws the whole image, without the physics anchor): "
            f"read the detector out at {size} pixels (ct2x synthesize: leave out --size and --pixel)"
        )
    if len({c.detector_shape for c in carms}) > 1:
        raise CT2XError("give views of one detector size (synthesize the other sizes in another call)")


@dataclass(frozen=True)
class StyleChoice:
    """One style of a synthesis: a style code ``(num_style_layers, w_dim)``, or ``None`` for each view's DRR
    style (eq. 5); and, for a model whose X-ray path is anchored on the imaging chain (``chain_anchor``), the
    reference film the chain's look is fitted to (``None``: the ``chain_preset``'s own look)."""

    code: torch.Tensor | None
    film: str | Path | np.ndarray | None = None


#: A chain's look is fitted to a film from area densities marched at this step (voxels), noise from this seed.
FIT_STEP_VOXELS = 0.5
FIT_SEED = 0


def fitted_look(
    ct: CTVolume | Materials,
    view: CArm,
    film: str | Path | np.ndarray,
    base: str | ImagingParameters,
    *,
    pixels: int | None = None,
    field_mm: float = FILM_FIELD_MM,
    device: str | torch.device | None = None,
    backend: str = "auto",
) -> ImagingParameters:
    """The imaging chain's parameters fitted to a reference film (a file, or an array of any range) for the views
    of one geometry like ``view``, starting from ``base``: fitted once over ``ct2x.geometry.fit_views`` (AP, the
    obliques and the laterals about its isocenter, at its distances, over the central square of the detector,
    ``pixels`` a side, default ``ct2x.geometry.FIT_PIXELS``; pooled, one setting of the device for every view)
    with the film matched to the AP one (``ct2x.data.radiographs.film_on_detector``, taken to cover
    ``field_mm``), :func:`ct2x.imaging.fitted` on the CT's area densities there, where the rays cross the CT's
    whole length (step :data:`FIT_STEP_VOXELS`, seed :data:`FIT_SEED`). The one fitting rule of ``ct2x
    synthesize`` (a chain-anchored model), ``ct2x drr --style``, the Slicer panel and ``ct2x evaluate``'s chain
    row; a few seconds on the CPU. ``ct``: the CT in HU or its ``ct2x.drr.materials``."""
    return look_on(fit_area(ct, view, pixels=pixels, device=device, backend=backend), film, base, field_mm)


def fit_area(
    ct: CTVolume | Materials,
    view: CArm,
    *,
    pixels: int | None = None,
    device: str | torch.device | None = None,
    backend: str = "auto",
) -> tuple[list[CArm], torch.Tensor, torch.Tensor]:
    """What :func:`fitted_look` fits on, for any number of films of one CT and geometry: the views
    ``ct2x.geometry.fit_views(view, pixels)``, the CT's area densities there ``(5, M, P, P)`` g/cm^2 (step
    :data:`FIT_STEP_VOXELS`) and their CT coverage ``(5, P, P)`` bool (``ct2x.drr.coverage``: the look is fitted
    only where the rays cross the CT's whole length)."""
    at = fit_views(view, pixels or FIT_PIXELS)
    area = area_densities(ct, at, step=FIT_STEP_VOXELS, device=torch_device(device), backend=backend)
    return at, area, coverage(ct if isinstance(ct, CTVolume) else ct.volume, at)


def look_on(
    fit: tuple[list[CArm], torch.Tensor, torch.Tensor],
    film: str | Path | np.ndarray,
    base: str | ImagingParameters,
    field_mm: float = FILM_FIELD_MM,
) -> ImagingParameters:
    """The look fitted to ``film`` on :func:`fit_area`'s views, area densities and coverage (the second half of
    :func:`fitted_look`): the film matched to the AP view, :func:`ct2x.imaging.fitted` from ``base``, seed
    :data:`FIT_SEED`."""
    at, area, covered = fit
    film_there = film_on_detector(film, at[0], field_mm)
    return fitted(area, at, film_there, base, seed=FIT_SEED, covered=covered)


class _ChainBases:
    """The chain anchor's X-ray bases of one synthesis: per style, the chain's radiographs of each batch of
    views in the look fitted to the style's film (:func:`fitted_look`'s rule, once per synthesis and style; the
    ``chain_preset``'s own look without a film), noise seeded by :data:`CHAIN_SEED` and the batch's first view,
    so a synthesis is deterministic."""

    def __init__(self, config: CT2XConfig, prepared: PreparedCT):
        self.config = config
        self.prepared = prepared
        self.looks: dict[int, ImagingParameters] = {}
        self.fit: tuple[list[CArm], torch.Tensor, torch.Tensor] | None = None  # fit_area's, shared by every film

    def base(self, area: torch.Tensor, views: list[CArm], choice: StyleChoice, index: int, first: int) -> torch.Tensor:
        look = self.looks.get(index)
        if look is None:
            look = self.config.chain_preset
            if choice.film is not None:
                if self.fit is None:
                    self.fit = fit_area(self.prepared.materials, views[0], device=area.device)
                look = look_on(self.fit, choice.film, look, self.config.radiograph_field_mm)
            self.looks[index] = look
        image = simulate(area, views, look, seed=CHAIN_SEED + first).image
        return display_input(image.float())[:, None]


def _style_image(style: str | Path | np.ndarray, config: CT2XConfig, device: torch.device) -> torch.Tensor:
    """A style reference (file or array) as the style encoder's input ``(1, 1, S, S)``."""
    if isinstance(style, np.ndarray):
        pixels = torch.from_numpy(radiograph_from_array(style, size=config.image_size))
    else:
        pixels = torch.from_numpy(read_radiograph(style, size=config.image_size))
    return xray_input(pixels[None], config)[None].to(device)


@torch.no_grad()
def synthesize(
    model: CT2XGAN,
    ct: CTVolume | PreparedCT,
    carms: Sequence[CArm],
    *,
    style: str | Path | np.ndarray | None = None,
    style_code: torch.Tensor | None = None,
    drr_style: bool = False,
    batch_size: int = 8,
) -> list[SynthesizedView]:
    """Synthesize one X-ray per view (see the module docstring); deterministic for a given model.

    Args:
        model: a trained CT2X-GAN (``ct2x.checkpoint.load_model``), on its device.
        ct: the CT in HU (any placement), or the same CT already prepared by :func:`prepare_ct`.
        carms: the views (see :func:`model_views`), read out at the model's ``image_size``, or with the
            physics anchor at any detector size (the output's pixels).
        style: the style reference radiograph: a file, or an array (any intensity range, e.g. a
            2D volume from Slicer); or a stored X-ray style code ``style_code``
            ``(num_style_layers, w_dim)``; or ``drr_style=True`` for the DRR style.
        batch_size: views per forward pass.
    """
    styles_given = (style is not None) + (style_code is not None) + bool(drr_style)
    if model.style_encoder is None and styles_given:
        raise CT2XError("this model was trained without the style encoder (an ablation): it takes no style")
    if model.style_encoder is not None and styles_given != 1:
        raise CT2XError(
            "give one style: a reference radiograph (--style FILE), a style stored with the model "
            "(--model-style NAME) or the DRR style (--drr-style)"
        )
    device = next(model.parameters()).device
    if model.style_encoder is None:
        choice = StyleChoice(model.constant_style[0])
    elif style_code is not None:
        choice = StyleChoice(style_code.to(device, torch.float32))
    elif drr_style:
        choice = StyleChoice(None)
    else:
        choice = StyleChoice(model.style_encoder.xray_style(_style_image(style, model.config, device))[0], style)
    images = _synthesize(model, ct, list(carms), [choice], batch_size)[:, 0]
    return [SynthesizedView(image, carm) for image, carm in zip(images, carms, strict=True)]


@torch.no_grad()
def synthesize_styles(
    model: CT2XGAN,
    ct: CTVolume | PreparedCT,
    carms: Sequence[CArm],
    styles: Sequence[str | Path | np.ndarray],
    batch_size: int = 8,
) -> np.ndarray:
    """Every view in each of several style references (files or arrays), as :func:`synthesize` with
    ``style=`` would make them one style at a time, but with the CT's content code computed once per
    view. A model without the style encoder makes one image per view.

    Returns:
        float32 ``(V, R, H, W)`` in [0, 1] (R = ``len(styles)``, or 1 without the style encoder).
    """
    device = next(model.parameters()).device
    if model.style_encoder is None:
        choices = [StyleChoice(model.constant_style[0])]
    else:
        encode = model.style_encoder.xray_style
        choices = [StyleChoice(encode(_style_image(s, model.config, device))[0], s) for s in styles]
    return _synthesize(model, ct, list(carms), choices, batch_size)


@torch.no_grad()
def synthesize_codes(
    model: CT2XGAN,
    ct: CTVolume | PreparedCT,
    carms: Sequence[CArm],
    codes: Sequence[torch.Tensor],
    batch_size: int = 8,
) -> np.ndarray:
    """Every view in each of several style codes ``(num_style_layers, w_dim)`` (e.g. the styles
    stored with a model; a model anchored on the chain draws them on the ``chain_preset``'s look), the
    CT's content (and projections) computed once per view.

    Returns:
        float32 ``(V, R, H, W)`` in [0, 1] (R = ``len(codes)``).
    """
    device = next(model.parameters()).device
    return _synthesize(model, ct, list(carms), [StyleChoice(code.to(device)) for code in codes], batch_size)


def _synthesize(
    model: CT2XGAN, ct: CTVolume | PreparedCT, carms: list[CArm], choices: list[StyleChoice], batch_size: int
) -> np.ndarray:
    """The one inference path: per batch of views, :func:`view_inputs` then, per style, the style codes (the
    views' own DRR style for ``code=None``), the X-ray base of a chain-anchored model (:class:`_ChainBases`)
    and :func:`render_images`. Returns float32 ``(V, R, H, W)`` in [0, 1]."""
    _check_detector(model, carms)
    prepared = prepare_ct(model, ct)
    config = model.config
    fix = "read the detector out at fewer pixels (--size, or the panel's detector pixels) or give fewer views"
    check_render_memory(
        prepared.ct, carms[:batch_size], device=prepared.volume.device, fix=fix, imaging=config.chain_anchor
    )
    chain = _ChainBases(config, prepared) if config.chain_anchor else None
    views = []
    for first in range(0, len(carms), batch_size):
        chunk = carms[first : first + batch_size]
        inputs = view_inputs(model, prepared, chunk)
        per_style = []
        for index, choice in enumerate(choices):
            content = inputs.content
            if choice.code is None:
                drrs = render_drr(prepared.ct, read_out(chunk, config.image_size), step=config.drr_step)
                codes = model.style_encoder.drr_style(drr_input(drrs, config)[:, None].to(content.code.device))
            else:
                codes = choice.code[None].expand(len(chunk), -1, -1)
                if chain is not None:
                    content = dataclasses.replace(content, base=chain.base(inputs.area, chunk, choice, index, first))
            per_style.append(render_images(model, content, codes))
        views.append(np.stack(per_style, axis=1))
    return np.concatenate(views)

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
card). The detector is read out at the model's ``image_size``. A model of the ``projected``
preset also reads the CT's per-material area densities and MIP at each view, made from the CT
as read (not the grid) at the view's exact geometry (``ct2x.drr.area_densities``, ``ct2x.drr.mip``),
as ``ct2x prepare --projections`` makes them for training.

One inference path: :func:`view_content` (the CT's content at the views, through
:meth:`ct2x.models.CT2XGAN.view_content`) then :func:`render_images` (G in a style code, through
:meth:`ct2x.models.CT2XGAN.render`); ``ct2x synthesize``, ``ct2x evaluate``, ``ct2x demo`` and the
Slicer module all call :func:`synthesize` / :func:`synthesize_styles`, which call these.

Style: a reference radiograph (its X-ray style code, eq. 2), a style code stored with the
model (``ct2x.checkpoint.load_style_codes``), or ``drr_style=True``, which uses the DRR style
code of the CT's own DRR at each pose (eq. 5) - the reconstruction of eq. 7.

Every input is scaled for the networks by the model's own transforms (:mod:`ct2x.models.inputs`,
the ones the training data uses); nothing here reads the training data module.

Output images are float32 ``(H, W)`` in [0, 1] (bright = attenuating, :func:`ct2x.models.inputs.output_image`),
displayed like an AP radiograph (``ct2x.geometry``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ct2x.config import CT2XConfig
from ct2x.data.radiographs import radiograph_from_array, read_radiograph
from ct2x.drr import Materials, area_densities, materials, mip, render_drr
from ct2x.errors import CT2XError
from ct2x.geometry import CArm, views
from ct2x.models import CT2XGAN, ViewContent
from ct2x.models.inputs import drr_input, mip_input, output_image, projection_input, volume_input, xray_input
from ct2x.volume import CTVolume, preprocess


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
) -> list[CArm]:
    """C-arm views for a model: its detector (``image_size`` pixels over its training detector
    width, or over ``detector_size_mm`` = (height, width) in mm, e.g. a real radiograph's) and
    distances (its training geometry unless ``sdd`` / ``sid`` in mm are given), turning about
    ``isocenter`` (LPS mm; default the centre of ``ct``'s bounding box)."""
    trained = card.get("training", {}).get("dataset_settings", {})
    if detector_size_mm is None:
        width_mm = trained.get("pixel_mm", config.pixel_spacing_mm) * trained.get("detector_size", config.image_size)
        detector_size_mm = (width_mm, width_mm)
    return views(
        list(primaries),
        None if secondaries is None else list(secondaries),
        sdd=sdd if sdd is not None else trained.get("sdd", config.sdd_mm),
        sid=sid if sid is not None else trained.get("sid", config.sid_mm),
        detector_shape=(config.image_size, config.image_size),
        pixel_spacing=tuple(float(mm) / config.image_size for mm in detector_size_mm),
        isocenter=tuple(float(c) for c in (isocenter if isocenter is not None else ct.center_lps)),
    )


def mip_views(carms: Sequence[CArm], config: CT2XConfig) -> list[CArm]:
    """The views on which synthesis reads the MIPs: the same C-arms and physical detector, with
    ``2 * pam_mip_size`` pixels a side (see the module docstring)."""
    size = 2 * config.pam_mip_size
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


def view_content(model: CT2XGAN, prepared: PreparedCT, carms: Sequence[CArm]) -> ViewContent:
    """What the CT gives G at ``carms`` (read out at ``image_size``): the volume, the poses, the
    PAM's MIPs and, with the projection path, the projection images (module docstring)."""
    config = model.config
    device = prepared.volume.device
    poses = torch.as_tensor(np.stack([c.pose for c in carms]), dtype=torch.float32, device=device)
    mips = mip_input(mip(prepared.grid, mip_views(carms, config), step=config.drr_step), config)[:, None].to(device)
    projections = None
    if prepared.materials is not None:
        area = area_densities(prepared.materials, carms, step=config.drr_step)
        full_mip = mip(prepared.ct, carms, step=config.drr_step)
        projections = projection_input(torch.cat([area, full_mip[:, None]], dim=1), config).to(device)
    volume = prepared.volume[None].expand(len(carms), -1, -1, -1, -1)
    return model.view_content(volume, poses, mips, projections)


def render_images(model: CT2XGAN, content: ViewContent, codes: torch.Tensor) -> np.ndarray:
    """G(content, style) as float32 ``(B, S, S)`` in [0, 1] (bright = attenuating)."""
    return output_image(model.render(content, codes))[:, 0].float().cpu().numpy()


def _content_batches(model: CT2XGAN, ct: CTVolume | PreparedCT, carms: list[CArm], batch_size: int):  # noqa: ANN202 (generator)
    """``(views, ViewContent)`` per batch of ``carms`` (:func:`view_content`). Checks the detector
    size and the CT first."""
    size = model.config.image_size
    if any(c.detector_shape != (size, size) for c in carms):
        raise CT2XError(f"this model makes {size} x {size} images: read the detector out at {size} pixels")
    prepared = prepare_ct(model, ct)
    for start in range(0, len(carms), batch_size):
        chunk = carms[start : start + batch_size]
        yield chunk, view_content(model, prepared, chunk)


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
        carms: the views, read out at the model's ``image_size`` (see :func:`model_views`).
        style: the style reference radiograph: a file, or an array (any intensity range, e.g. a
            2D volume from Slicer); or a stored X-ray style code ``style_code``
            ``(num_style_layers, w_dim)``; or ``drr_style=True`` for the DRR style.
        batch_size: views per forward pass.
    """
    config = model.config
    styles_given = (style is not None) + (style_code is not None) + bool(drr_style)
    if model.style_encoder is None and styles_given:
        raise CT2XError("this model was trained without the style encoder (an ablation): it takes no style")
    if model.style_encoder is not None and styles_given != 1:
        raise CT2XError(
            "give one style: a reference radiograph (--style FILE), a style stored with the model "
            "(--model-style NAME) or the DRR style (--drr-style)"
        )
    device = next(model.parameters()).device
    style_image = None if style is None else _style_image(style, config, device)
    prepared = prepare_ct(model, ct)
    results: list[SynthesizedView] = []
    for chunk, content in _content_batches(model, prepared, list(carms), batch_size):
        if model.style_encoder is None:
            codes = model.constant_style.expand(len(chunk), -1, -1)
        elif style_code is not None:
            codes = style_code.to(device, torch.float32)[None].expand(len(chunk), -1, -1)
        elif drr_style:
            drrs = drr_input(render_drr(prepared.ct, chunk, step=config.drr_step), config)[:, None].to(device)
            codes = model.style_encoder.drr_style(drrs)
        else:
            codes = model.style_encoder.xray_style(style_image.expand(len(chunk), -1, -1, -1))
        images = render_images(model, content, codes)
        results.extend(SynthesizedView(image, carm) for image, carm in zip(images, chunk, strict=True))
    return results


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
        float32 ``(V, R, S, S)`` in [0, 1] (R = ``len(styles)``, or 1 without the style encoder).
    """
    device = next(model.parameters()).device
    if model.style_encoder is None:
        codes = [model.constant_style[0]]
    else:
        codes = [model.style_encoder.xray_style(_style_image(s, model.config, device))[0] for s in styles]
    return synthesize_codes(model, ct, carms, codes, batch_size)


@torch.no_grad()
def synthesize_codes(
    model: CT2XGAN,
    ct: CTVolume | PreparedCT,
    carms: Sequence[CArm],
    codes: Sequence[torch.Tensor],
    batch_size: int = 8,
) -> np.ndarray:
    """Every view in each of several style codes ``(num_style_layers, w_dim)`` (e.g. the styles
    stored with a model), the CT's content (and projections) computed once per view.

    Returns:
        float32 ``(V, R, S, S)`` in [0, 1] (R = ``len(codes)``).
    """
    device = next(model.parameters()).device
    codes = [code.to(device) for code in codes]
    views = []
    for chunk, content in _content_batches(model, ct, list(carms), batch_size):
        per_style = [render_images(model, content, code[None].expand(len(chunk), -1, -1)) for code in codes]
        views.append(np.stack(per_style, axis=1))
    return np.concatenate(views)

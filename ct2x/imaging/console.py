"""The console's processing of the detector's log image into the stored display image in [0, 1]
(bright = attenuating, the DRR's convention: :func:`ct2x.models.inputs.drr_image`).

* **Multi-scale contrast enhancement** (:func:`enhance`): a Laplacian pyramid (Burt P.J., Adelson E.H.
  1983, *The Laplacian pyramid as a compact image code*, IEEE Trans Commun 31:532), each band's detail
  ``x`` mapped by MUSICA's amplitude compression (Vuylsteke P., Schoeters E. 1994, *Multiscale image
  contrast amplification (MUSICA)*, Proc SPIE 2167:551) ``x (1 + (x / M)^2)^((p - 1) / 2)`` (linear
  below ``M``, a power ``p`` above: subtle detail gains more than strong edges) and a gain per band; the
  bands are placed by physical size (level ``k`` holds structures of about ``1.5 x 2^k`` pixels, gains
  interpolated between the octave bands of :data:`ct2x.imaging.parameters.BAND_SCALES_MM`), so a look
  carries across pixel spacings. The residual (coarser than 64 mm) is scaled about its mean: a gain below
  1 compresses the latitude.
* **Unsharp masking** (:func:`unsharp_mask`): ``x + a (x - G_r * x)``, ``G_r`` a Gaussian of ``r`` mm.
* **Tone curve** (:func:`tone`): the window from percentiles of the exposed field, then a sigmoid of
  steepness ``c`` through mid-grey, rescaled to pass through (0, 0) and (1, 1) (``c = 0``: linear), then
  an optional monotone piecewise-linear curve (``tone_points``, e.g. fitted to a film's histogram by
  :func:`ct2x.imaging.fit.fit_style`); unexposed pixels (collimated) are white.
* **Side marker** (:func:`burn_marker`): a lead letter, :data:`MARKER_HEIGHT_MM` tall, white.
* **Bit depth** (:func:`quantize`): ``2^bits`` grey levels.

With unit gains, ``p = 1``, no unsharp masking, the full range as window, ``c = 0`` and no tone points, the
processing is the identity up to the display's min-max scaling (:meth:`ImagingParameters.unprocessed`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ct2x.geometry import CArm
from ct2x.imaging.filters import gaussian_blur, per_view
from ct2x.imaging.parameters import BAND_SCALES_MM, ImagingParameters

#: The pyramid stops at this coarsest band size (mm) or at 8 pixels.
LARGEST_BAND_MM = 64.0
#: 5-tap binomial low-pass of the pyramid (Burt & Adelson 1983).
BINOMIAL = (1.0 / 16, 4.0 / 16, 6.0 / 16, 4.0 / 16, 1.0 / 16)
#: Height of a lead side marker, mm (lead letters are 10-15 mm tall).
MARKER_HEIGHT_MM = 12.0
#: 5 x 7 bitmaps of the side markers.
MARKER_BITMAPS = {
    "L": ("1....", "1....", "1....", "1....", "1....", "1....", "11111"),
    "R": ("1111.", "1...1", "1...1", "1111.", "1.1..", "1..1.", "1...1"),
}
#: The window's percentiles (but 0 and 100) are taken from an even subsample of at most this many pixels.
QUANTILE_SAMPLES = 1 << 16


def compress(detail: torch.Tensor, power: float, scale: float) -> torch.Tensor:
    """MUSICA's amplitude compression ``x (1 + (x / M)^2)^((p - 1) / 2)`` (``p`` = ``power``, ``M`` = ``scale``)."""
    if power == 1.0:
        return detail
    return detail * (1.0 + (detail / scale) ** 2) ** ((power - 1.0) / 2.0)


def _band_position(scale_mm: float) -> tuple[int, int, float]:
    """The octave bands around structures ``scale_mm`` in size and the weight of the upper one: linear in
    ``log2`` of the scale between :data:`BAND_SCALES_MM`, held beyond them."""
    position = math.log2(scale_mm / BAND_SCALES_MM[0])
    low = min(max(int(math.floor(position)), 0), len(BAND_SCALES_MM) - 1)
    return low, min(low + 1, len(BAND_SCALES_MM) - 1), min(max(position - low, 0.0), 1.0)


def band_gain(scale_mm: float, parameters: ImagingParameters) -> float:
    """The gain of structures ``scale_mm`` in size: ``band_gains`` interpolated linearly in ``log2`` of the
    scale between :data:`BAND_SCALES_MM`, held beyond them."""
    low, high, weight = _band_position(scale_mm)
    return (1 - weight) * parameters.band_gains[low] + weight * parameters.band_gains[high]


def band_weights(scale_mm: float) -> tuple[float, ...]:
    """The weights :func:`band_gain` gives each of ``band_gains`` at structures ``scale_mm`` in size (one per
    :data:`BAND_SCALES_MM`, summing to 1): the gain there is linear in the band gains."""
    low, high, weight = _band_position(scale_mm)
    weights = [0.0] * len(BAND_SCALES_MM)
    weights[low] += 1 - weight
    weights[high] += weight
    return tuple(weights)


def _smooth_half(image: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) -> the binomial low-pass at every second row and column (edges replicated)."""
    for dim in (-2, -1):
        count = (image.shape[dim] + 1) // 2
        padded = F.pad(image, (0, 0, 2, 2) if dim == -2 else (2, 2, 0, 0), mode="replicate")
        image = sum(w * padded.narrow(dim, k, 2 * count - 1)[..., ::2, :] if dim == -2 else
                    w * padded.narrow(dim, k, 2 * count - 1)[..., ::2] for k, w in enumerate(BINOMIAL))  # fmt: skip
    return image


def _expand(image: torch.Tensor, size: torch.Size) -> torch.Tensor:
    return F.interpolate(image, size=tuple(size), mode="bilinear", align_corners=False)


def level_scale_mm(level: int, spacing_mm: float) -> float:
    """The size of the structures pyramid level ``level`` holds, mm: ``1.5 x 2^level`` pixels of ``spacing_mm``."""
    return 1.5 * 2**level * spacing_mm


def laplacian_pyramid(image: torch.Tensor, spacing_mm: float,
                      levels: int | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:  # fmt: skip
    """The Laplacian pyramid of images ``(N, 1, H, W)`` with pixels of ``spacing_mm`` (mm): the detail levels,
    finest first (level ``k`` is ``(N, 1, ~H / 2^k, ~W / 2^k)`` and holds structures of about
    :func:`level_scale_mm` in size), down to :data:`LARGEST_BAND_MM` or 8 pixels (or ``levels`` levels, if
    fewer), and the residual (the coarsest low-pass). Adding each level to the expanded coarser one rebuilds
    the image exactly."""
    gaussian, details, level = image, [], 0
    while level_scale_mm(level, spacing_mm) <= LARGEST_BAND_MM and min(gaussian.shape[-2:]) >= 16 and (
            levels is None or level < levels):  # fmt: skip
        coarser = _smooth_half(gaussian)
        details.append(gaussian - _expand(coarser, gaussian.shape[-2:]))
        gaussian, level = coarser, level + 1
    return details, gaussian


def view_spacing_mm(view: CArm) -> float:
    """The geometric mean of a view's (row, column) pixel spacing, mm: the scale the pyramid is placed by."""
    return math.sqrt(view.pixel_spacing[0] * view.pixel_spacing[1])


@per_view
def enhance(log: torch.Tensor, views: Sequence[CArm], parameters: ImagingParameters) -> torch.Tensor:
    """Multi-scale contrast enhancement of log images ``(V, H, W)`` (module docstring), same units."""
    out = []
    for image, view in zip(log, views, strict=True):
        spacing = view_spacing_mm(view)
        details, gaussian = laplacian_pyramid(image[None, None], spacing)
        mean = gaussian.mean()
        result = mean + parameters.residual_gain * (gaussian - mean)
        for k in reversed(range(len(details))):
            gain = band_gain(level_scale_mm(k, spacing), parameters)
            band = details[k] if gain == 1.0 and parameters.compression == 1.0 else gain * compress(
                details[k], parameters.compression, parameters.compression_scale)  # fmt: skip
            result = band + _expand(result, band.shape[-2:])
        out.append(result[0, 0])
    return torch.stack(out)


@per_view
def unsharp_mask(images: torch.Tensor, views: Sequence[CArm], parameters: ImagingParameters) -> torch.Tensor:
    """``x + a (x - G_r * x)`` with ``a`` = ``unsharp_amount`` and ``G_r`` a Gaussian of ``unsharp_radius_mm``."""
    if parameters.unsharp_amount == 0.0:
        return images
    out = []
    for image, view in zip(images, views, strict=True):
        sigma = tuple(parameters.unsharp_radius_mm / s for s in view.pixel_spacing)
        out.append(image + parameters.unsharp_amount * (image - gaussian_blur(image, sigma)))
    return torch.stack(out)


def tone_curve(u: torch.Tensor, contrast: float) -> torch.Tensor:
    """The sigmoid tone curve through (0, 0), (0.5, 0.5) and (1, 1) of steepness ``contrast`` (0: identity)."""
    if contrast == 0.0:
        return u
    ends = torch.sigmoid(torch.tensor([-contrast / 2, contrast / 2], dtype=u.dtype, device=u.device))
    return (torch.sigmoid(contrast * (u - 0.5)) - ends[0]) / (ends[1] - ends[0])


def _percentile(values: torch.Tensor, percent: float) -> torch.Tensor:
    """The ``percent`` percentile of ``values`` (1-D): exact at 0 and 100, else of an even subsample of at
    most :data:`QUANTILE_SAMPLES` values."""
    if percent <= 0.0:
        return values.min()
    if percent >= 100.0:
        return values.max()
    sample = values[:: max(1, math.ceil(values.numel() / QUANTILE_SAMPLES))]
    return torch.quantile(sample, percent / 100.0)


def apply_tone_points(y: torch.Tensor, points: tuple[float, ...]) -> torch.Tensor:
    """The monotone tone curve of :attr:`ImagingParameters.tone_points` at ``y`` in [0, 1]: linear between
    the ``points`` (display values at evenly spaced inputs from 0 to 1); ``()``: the identity."""
    if not points:
        return y
    knots = torch.tensor(points, dtype=y.dtype, device=y.device)
    position = y.clamp(0.0, 1.0) * (len(points) - 1)
    index = position.floor().clamp(0, len(points) - 2).long()
    fraction = position - index
    return knots[index] + fraction * (knots[index + 1] - knots[index])


def tone(images: torch.Tensor, field: torch.Tensor, parameters: ImagingParameters) -> torch.Tensor:
    """Display images in [0, 1] from processed log images ``(..., H, W)``: each image's window is the
    ``window_percentiles`` of its exposed field (``field > 0.5``, same shape), then :func:`tone_curve` and
    :func:`apply_tone_points`; unexposed pixels are white (1)."""
    shape = images.shape
    images, field = images.reshape(-1, *shape[-2:]), field.reshape(-1, *shape[-2:])
    out = []
    for image, exposed in zip(images, field > 0.5, strict=True):
        values = image[exposed] if bool(exposed.any()) else image.flatten()
        low, high = (_percentile(values, p) for p in parameters.window_percentiles)
        u = ((image - low) / (high - low).clamp_min(1e-6)).clamp(0.0, 1.0)
        y = apply_tone_points(tone_curve(u, parameters.tone_contrast).clamp(0.0, 1.0), parameters.tone_points)
        out.append(torch.where(exposed, y, 1.0))
    return torch.stack(out).reshape(shape)


@per_view
def burn_marker(images: torch.Tensor, views: Sequence[CArm], parameters: ImagingParameters) -> torch.Tensor:
    """Display images ``(V, H, W)`` with the side marker (white, :data:`MARKER_HEIGHT_MM` tall) in its corner,
    4 % of the image in from the edges; unchanged without a marker or when it does not fit."""
    if not parameters.marker:
        return images
    out = images.clone()
    bitmap = torch.tensor([[c == "1" for c in row] for row in MARKER_BITMAPS[parameters.marker]], device=images.device)
    for image, view in zip(out, views, strict=True):
        cell = [max(1, round(MARKER_HEIGHT_MM / 7 / s)) for s in view.pixel_spacing]
        letter = bitmap.repeat_interleave(cell[0], 0).repeat_interleave(cell[1], 1)
        (height, width), (rows, columns) = image.shape, letter.shape
        margin = (round(0.04 * height), round(0.04 * width))
        if rows + 2 * margin[0] > height or columns + 2 * margin[1] > width:
            continue
        top = margin[0] if parameters.marker_corner.startswith("top") else height - margin[0] - rows
        left = margin[1] if parameters.marker_corner.endswith("left") else width - margin[1] - columns
        patch = image[top : top + rows, left : left + columns]
        patch[letter] = 1.0
    return out


def quantize(images: torch.Tensor, bits: int) -> torch.Tensor:
    """Display images in [0, 1] rounded to ``2^bits`` grey levels (still in [0, 1])."""
    levels = float(2**bits - 1)
    return torch.round(images.clamp(0.0, 1.0) * levels) / levels


@per_view
def console(log: torch.Tensor, views: Sequence[CArm], parameters: ImagingParameters,
            field: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """The stored display image ``(V, H, W)`` in [0, 1] from the detector's log images ``(V, H, W)``:
    :func:`enhance` -> :func:`unsharp_mask` -> :func:`tone` -> :func:`burn_marker` -> :func:`quantize`.
    ``field`` (same shape, default all exposed): the exposed field; outside it the log is first set to the
    field's largest value (the pyramid then sees no collimation edge) and the display is white."""
    field = torch.ones_like(log) if field is None else field.reshape(log.shape).to(log)
    exposed = field > 0.5
    largest = torch.stack(
        [image[mask].max() if bool(mask.any()) else image.max() for image, mask in zip(log, exposed, strict=True)]
    )
    filled = torch.where(exposed, log, largest[:, None, None])
    processed = unsharp_mask(enhance(filled, views, parameters), views, parameters)
    display = burn_marker(tone(processed, field, parameters), views, parameters)
    return quantize(display, parameters.bits)

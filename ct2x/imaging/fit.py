"""Fitting the imaging chain's look to a reference radiograph, without learning: statistics of the film and of
the chain's output of a CT are matched by a few rounds of closed-form updates.

:func:`fit_style` takes a film (a real radiograph shown as films are, bright = attenuating, already cropped and
resized to the output's pixel grid) and the chain's run on a CT at those views (:class:`ImagingStages` of
:func:`ct2x.imaging.simulate`, or its raw log image alone), and returns :class:`ImagingParameters` whose console
and noise make the chain's output of that CT look like the film. Each of :data:`ROUNDS` rounds:

1. **Noise draw** (from :class:`ImagingStages` only): the detector's signal is drawn again from the stages'
   expected quanta at the current dose and detector MTF (the stages of :func:`ct2x.imaging.detector.detect`,
   the Poisson counts as their normal approximation of one fixed draw), and again with the noise's sign
   flipped: half the difference of the two displays is the display's noise alone.
2. **Tone** (``tone_points``): histogram matching. The display before the tone points is mapped through the
   film's quantiles at its own mid-rank cumulative distribution, sampled at :data:`TONE_POINTS` evenly spaced
   inputs: a monotone piecewise-linear curve after the base's window and sigmoid.
3. **Noise** (``mas``, ``mtf_nyquist``, ``structure_noise``; from stages only): in :data:`BLOCK_PX`-pixel blocks
   usable in both images (exposed, unclipped mid-tones), the :data:`FLAT_SHARE` flattest in the film (least finest-level
   variance: there a film's finest level is mostly its noise), the variance of the finest pyramid level and
   the correlation of neighbouring pixels there (medians over the blocks): the film's of itself, the output's
   of its noise alone (the same place in the same look). The log's noise is modelled as the chain makes it:
   Poisson quanta ``q`` blurred by the detector MTF plus white electronic noise ``e``, of variance
   ``(q v(MTF) + e^2 v(1)) / q^2`` and correlation ``(q v c(MTF) + e^2 v c(1)) / (q v(MTF) + e^2 v(1))``
   (``v``, ``c``: that level's variance and correlation of unit white noise so blurred, at the view's pixel
   spacing), ``q`` the expected quanta in the blocks, plus the structure noise ``s^2 v(MTF)``. The film's
   correlation less the output's picks the MTF (on a grid over :data:`ct2x.imaging.parameters.RANGES`), the
   film's variance over the output's then gives ``q``, hence the mAs, but no less than :data:`DOSE_FLOOR` of
   the base's (nor above ``RANGES``); what that dose leaves unexplained is ``structure_noise`` (at most
   :data:`STRUCTURE_LIMIT`).
4. **Band gains** (``band_gains``): the gain at each Laplacian-pyramid level's scale (the console's own
   pyramid, placed by physical size) is multiplied by the root of the film's over the output's structure
   variance there (the level's variance less the noise's: the output's noise alone, for the film that scaled
   by the noise fit's change); the six octave gains are solved from all levels by least squares, weakly
   pulled to their previous values and to their neighbours (which holds the octaves no level sees).

Then the tone once more. Everything else is kept from ``base``: the tube, scatter, grid and geometry,
``efficiency``, ``electronic_noise``, ``residual_gain`` (the window normalises the overall scale of the
gains, so the residual stays the reference the band gains are relative to), the MUSICA compression, unsharp
masking (a high-pass the finest band gains already span), the window and the sigmoid, the bit depth, the
marker and the collimation. ``base`` must be the parameters the stages were simulated with. Given a log image
alone the noise cannot be drawn again: ``mas`` and ``mtf_nyquist`` are kept and the bands matched with the
log's own noise.

Speed, on one CPU thread (docs/imaging-chain.md): about 1 s for a 512 x 512 view from stages (0.4 s from a log
alone), 0.45 s for 256 x 256.

Measures the tests share: :func:`band_energies`, :func:`histogram_distance`, :func:`film_image`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ct2x.errors import CT2XError
from ct2x.geometry import CArm
from ct2x.imaging.chain import ImagingStages
from ct2x.imaging.console import (
    apply_tone_points,
    band_weights,
    console,
    laplacian_pyramid,
    level_scale_mm,
    view_spacing_mm,
)
from ct2x.imaging.detector import (
    detector_blur,
    detector_gain,
    detector_mtf,
    electronic_noise_std,
    focal_spot_blur,
    log_image,
    structure_texture,
)
from ct2x.imaging.filters import batch, fourier_filter
from ct2x.imaging.parameters import RANGES, ImagingParameters, resolve

#: Points of the fitted tone curve (:attr:`ImagingParameters.tone_points`).
TONE_POINTS = 33
#: Rounds of noise, tone, bands.
ROUNDS = 4
#: Side of the blocks the noise is measured in, pixels.
BLOCK_PX = 16
#: Share of the usable blocks, the film's flattest (least finest-level variance), the noise is measured in.
FLAT_SHARE = 0.2
#: Blocks are usable between these quantiles of the blocks' mean grey (the mid-tones).
MIDTONES = (0.02, 0.98)
#: Fewest usable blocks a noise measure needs; with fewer the noise is kept.
MIN_FLAT_BLOCKS = 4
#: A block with a pixel within this of black or white is clipped (its noise is not seen) and not used.
CLIPPED = 0.01
#: Share of a level's variance kept as structure however much of it the noise explains.
STRUCTURE_FLOOR = 0.1
#: The range of a fitted band gain: a console's multi-scale processing raises or lowers a band's contrast a few
#: times at most (the detail-contrast settings of MUSICA-type processing, Vuylsteke & Schoeters 1994, and the
#: published ranges of :data:`ct2x.imaging.parameters.RANGES`: 0.8-2.5). A film's band energy beyond that is
#: not processing but structure the CT lacks (lung markings finer than its voxels, lines, tubes, another
#: anatomy): raising the CT's bands to it only magnifies the CT's own noise and interpolation texture.
GAIN_LIMITS = (0.5, 3.0)
#: Weights of the pull of each band gain to its previous value and of the steps between neighbouring octaves
#: (relative), against each level's relative error.
RIDGE = 1e-3
SMOOTHNESS = 1e-2
#: Side of the white-noise image the noise's statistics are computed on, pixels; the detector MTFs tried.
NOISE_PX = 96
MTF_GRID = tuple(float(m) for m in np.geomspace(*RANGES["mtf_nyquist"], 12))
#: The fitted dose is at least this share of the base's (a deviation index of -3, half the target exposure:
#: underexposed by the action levels of AAPM TG-116, after IEC 62494-1); more noise than that dose gives is
#: the detector's structure noise.
DOSE_FLOOR = 0.5
#: The most structure noise the fit gives. A detector's own is about 1 % or less per element, and less binned
#: into coarser readout pixels (:data:`ct2x.imaging.parameters.RANGES`); a film as users have it is a copy
#: (resampled, compressed) whose grain at its pixel size is often a few times that.
STRUCTURE_LIMIT = 0.1
#: Seed of the fit's noise draws (the fit is deterministic).
SEED = 0
#: Histograms and quantiles use an even subsample of at most this many pixels.
SAMPLES = 1 << 16
#: Bins of :func:`histogram_distance` over [0, 1].
HISTOGRAM_BINS = 64


@dataclass(frozen=True)
class _Look:
    """Statistics of display images ``(V, H, W)``.

    Attributes:
        variance: per view, per pyramid level (finest first): the level's variance (display units^2) in the
            exposed field; NaN where a level has too few pixels.
        noise_variance: the same of the images' noise alone, where it is known (the chain's output), else None.
        usable: ``(V, R, C)`` bool: the :data:`BLOCK_PX`-pixel blocks the noise may be measured in (exposed,
            unclipped mid-tones away from the border; :func:`_usable_blocks`).
        blocks: ``(2, V, R, C)``: each block's variance of the finest pyramid level and the covariance of its
            neighbouring pixels (:func:`_block_noise`).
        noise: the same of the images' noise alone, where it is known (the chain's output), else None.
    """

    variance: list[list[float]]
    noise_variance: list[list[float]] | None
    usable: torch.Tensor
    blocks: torch.Tensor
    noise: torch.Tensor | None


@dataclass(frozen=True)
class _Chain:
    """What a noise draw needs of :class:`ImagingStages`, ``(V, H, W)`` on the CPU: at the base's dose, the
    expected quanta, the same blurred by the focal spot and the flat field; three fixed standard normal draws
    (quantum, electronic, structure); and the base."""

    expected: torch.Tensor
    blurred: torch.Tensor
    flat: torch.Tensor
    draws: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    base: ImagingParameters


def film_image(film: np.ndarray | torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A reference film as float32 ``shape`` ``(V, H, W)`` in [0, 1] (bright = attenuating, as it is shown).

    ``film``: ``(H, W)`` for one view or ``(V, H, W)``, on the output's pixel grid; values in [0, 1], or 8-bit
    (``uint8``, or whole numbers up to 255: divided by 255) or 16-bit (``uint16``, or whole numbers up to 65535:
    divided by 65535). A wrong shape, a colour image, NaN or infinite pixels, negative values or a constant
    image is a one-line :class:`CT2XError`."""
    array = film.detach().cpu().numpy() if isinstance(film, torch.Tensor) else np.asarray(film)
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise CT2XError(f"give the film as a grey image of numbers, got {array.dtype} values")
    views, size = shape[0], tuple(shape[-2:])
    if array.shape != tuple(shape) and not (views == 1 and array.shape == size):
        wanted = f"{size}" if views == 1 else f"{tuple(shape)}"
        raise CT2XError(f"the film must be a 2-D grey image {wanted} on the log image's pixel grid (crop and resize "
                        f"it first), got shape {array.shape}")  # fmt: skip
    values = array.astype(np.float64).reshape(shape)
    if not np.isfinite(values).all():
        raise CT2XError(f"the film has {int((~np.isfinite(values)).sum())} NaN or infinite pixels")
    low, high = float(values.min()), float(values.max())
    whole = bool(np.all(values == np.round(values)))
    if low < 0 or (high > 1 and not whole) or high > 65535:
        raise CT2XError(f"the film's values must be in [0, 1] or 8/16-bit whole numbers, got {low:g} to {high:g}")
    if np.issubdtype(array.dtype, np.integer):
        top = 255.0 if array.dtype == np.uint8 or (array.dtype != np.uint16 and high <= 255) else 65535.0
    else:
        top = 1.0 if high <= 1 else 255.0 if high <= 255 else 65535.0
    for k, view in enumerate(values):
        if float(view.max() - view.min()) == 0.0:
            raise CT2XError(f"the film{f' of view {k}' if views > 1 else ''} is constant ({view.flat[0]:g} "
                            "everywhere): it has no tone or detail to fit")  # fmt: skip
    return torch.from_numpy(values / top).float()


def _source(source: ImagingStages | torch.Tensor, views: CArm | Sequence[CArm], field: torch.Tensor | None,
            base: ImagingParameters) -> tuple[torch.Tensor, list[CArm], torch.Tensor, _Chain | None]:  # fmt: skip
    """The log images ``(V, H, W)``, the views, the field ``(V, H, W)`` and (from stages) the :class:`_Chain`."""
    if isinstance(source, ImagingStages):
        log, views, field = _inputs(source.log, views, source.field if field is None else field)
        expected, flat = (x.detach().cpu().float().reshape(log.shape) for x in (source.expected, source.flat))
        generator = torch.Generator().manual_seed(SEED)
        draws = tuple(torch.randn(log.shape, generator=generator) for _ in range(3))
        blurred = focal_spot_blur(expected, views, base).clamp_min(0.0)
        return log, views, field, _Chain(expected, blurred, flat, draws, base)
    return (*_inputs(source, views, field), None)


def _inputs(log: torch.Tensor, views: CArm | Sequence[CArm],
            field: torch.Tensor | None) -> tuple[torch.Tensor, list[CArm], torch.Tensor]:  # fmt: skip
    """The log images ``(V, H, W)`` float32 on the CPU, the views and the field ``(V, H, W)``, checked."""
    if not isinstance(log, torch.Tensor):
        raise CT2XError(f"give the chain's log image as a tensor (ImagingStages.log), got {type(log).__name__}")
    log, views, _ = batch(log.detach().cpu(), views)
    if field is None:
        field = torch.ones_like(log)
    elif not isinstance(field, torch.Tensor) or field.numel() != log.numel():
        shape = tuple(field.shape) if isinstance(field, torch.Tensor) else type(field).__name__
        raise CT2XError(f"the field must be a tensor of the log image's shape {tuple(log.shape)}, got {shape}")
    field = field.detach().cpu().reshape(log.shape).float()
    if not bool(torch.isfinite(log).all()):
        raise CT2XError(f"the log image has {int((~torch.isfinite(log)).sum())} NaN or infinite pixels")
    for k, (image, exposed) in enumerate(zip(log, field > 0.5, strict=True)):
        values = image[exposed]
        if values.numel() < 2 or float(values.max() - values.min()) == 0.0:
            raise CT2XError(f"the log image{f' of view {k}' if len(views) > 1 else ''} is constant in its exposed "
                            "field: render it from a CT (ct2x.imaging.simulate(...).log)")  # fmt: skip
    return log, views, field


def _level_masks(exposed: torch.Tensor, count: int) -> list[torch.Tensor]:
    """Where each pyramid level of an image ``(H, W)`` may be measured: its pixels wholly in the exposed field
    (``exposed``, bool), eroded by one pixel and two from the border at that level."""
    area, masks, whole = exposed.float()[None, None], [], bool(exposed.all())
    for level in range(count):
        if level:
            area = F.avg_pool2d(area, 2, ceil_mode=True) if not whole else area[..., ::2, ::2]
        inner = -F.max_pool2d(-area, 3, stride=1, padding=1)[0, 0] > 0.999 if not whole else area[0, 0] > 0.5
        inner[:2], inner[-2:], inner[:, :2], inner[:, -2:] = False, False, False, False
        masks.append(inner)
    return masks


def _usable_blocks(images: torch.Tensor, exposed: torch.Tensor) -> torch.Tensor:
    """``(V, R, C)`` bool: the :data:`BLOCK_PX`-pixel blocks of display images ``(V, H, W)`` the noise may be
    measured in: wholly exposed, unclipped (:data:`CLIPPED`), of mid-tone mean grey (:data:`MIDTONES`: the
    tone curve's ends squash the noise) and, with more than two a side, away from the (replicated) border."""
    count = (images.shape[-2] // BLOCK_PX, images.shape[-1] // BLOCK_PX)
    usable = torch.ones(count, dtype=torch.bool)
    if min(count) > 2:
        usable[0], usable[-1], usable[:, 0], usable[:, -1] = False, False, False, False
    out = []
    for image, inside in zip(images, exposed, strict=True):
        shown = _blocks(image, count)
        good = usable & (shown.amin(-1) > CLIPPED) & (shown.amax(-1) < 1 - CLIPPED)
        good &= _blocks(inside.float(), count).amin(-1) > 0.5
        if bool(good.any()):
            mean = shown.mean(-1)
            low, high = torch.quantile(mean[good], torch.tensor(MIDTONES))
            good &= (mean >= low) & (mean <= high)
        out.append(good)
    return torch.stack(out)


def _block_noise(finest: list[torch.Tensor]) -> torch.Tensor:
    """``(2, V, R, C)``: per :data:`BLOCK_PX`-pixel block, the variance of the finest pyramid level (``finest``:
    per view, ``(H, W)``) and the mean product of its neighbouring pixels (rows and columns)."""
    count = (finest[0].shape[-2] // BLOCK_PX, finest[0].shape[-1] // BLOCK_PX)
    variance, covariance = [], []
    for level in finest:
        pairs = F.pad(level[:, 1:] * level[:, :-1], (0, 1)) + F.pad(level[1:] * level[:-1], (0, 0, 0, 1))
        covariance.append(_blocks(pairs, count).mean(-1) / 2)
        variance.append(_blocks(level, count).var(-1))
    return torch.stack([torch.stack(variance), torch.stack(covariance)])


def _blocks(image: torch.Tensor, count: tuple[int, int]) -> torch.Tensor:
    """``image`` ``(H, W)`` cut into ``count`` blocks of :data:`BLOCK_PX` pixels from its top left: ``(rows,
    columns, BLOCK_PX^2)``."""
    rows, columns = count
    cropped = image[: rows * BLOCK_PX, : columns * BLOCK_PX]
    return cropped.reshape(rows, BLOCK_PX, columns, BLOCK_PX).transpose(1, 2).reshape(rows, columns, -1)


def _look(images: torch.Tensor, views: list[CArm], exposed: torch.Tensor,
          noise: torch.Tensor | None = None) -> _Look:  # fmt: skip
    """The statistics of display images ``(V, H, W)`` (:class:`_Look`) in their exposed field ``(V, H, W)``;
    ``noise`` (same shape): the images' noise alone, when known."""

    def pyramids_of(stack: torch.Tensor) -> list[list[torch.Tensor]]:
        return [
            laplacian_pyramid(x[None, None], view_spacing_mm(view))[0] for x, view in zip(stack, views, strict=True)
        ]

    def variances(levels: list[list[torch.Tensor]]) -> list[list[float]]:
        return [_level_variances(d, m) for d, m in zip(levels, masks, strict=True)]

    pyramids = pyramids_of(images)
    noises = None if noise is None else pyramids_of(noise)
    masks = [_level_masks(inside, len(details)) for details, inside in zip(pyramids, exposed, strict=True)]
    variance, noise_variance = variances(pyramids), None if noises is None else variances(noises)
    count = (images.shape[-2] // BLOCK_PX, images.shape[-1] // BLOCK_PX)
    if min(count) == 0 or not all(pyramids):  # too small for blocks
        usable, blocks = torch.zeros(len(images), *count, dtype=torch.bool), torch.zeros(2, len(images), *count)
        return _Look(variance, noise_variance, usable, blocks, None)
    usable, blocks = _usable_blocks(images, exposed), _block_noise([p[0][0, 0] for p in pyramids])
    alone = None if noises is None else _block_noise([p[0][0, 0] for p in noises])
    return _Look(variance, noise_variance, usable, blocks, alone)


def _level_variances(details: list[torch.Tensor], masks: list[torch.Tensor]) -> list[float]:
    """The variance of each pyramid level ``(1, 1, h, w)`` where its mask ``(h, w)`` holds (NaN: too few)."""
    return [float(d[0, 0][m].var()) if int(m.sum()) >= 16 else math.nan for d, m in zip(details, masks, strict=True)]


def band_energies(images: torch.Tensor, views: CArm | Sequence[CArm],
                  field: torch.Tensor | None = None) -> list[list[tuple[float, float]]]:  # fmt: skip
    """The energy of each Laplacian-pyramid level of display images ``(V, H, W)`` (or ``(H, W)`` with one
    view): per view, ``(scale_mm, std)`` per level, finest first, ``scale_mm`` the size of the structures the
    level holds (:func:`ct2x.imaging.console.level_scale_mm`) and ``std`` its standard deviation (display
    units) in the exposed field (``field > 0.5``, default all) away from its edges; NaN where too small."""
    images, views, _ = batch(images.detach().cpu(), views)
    exposed = (torch.ones_like(images) if field is None else field.detach().cpu().reshape(images.shape)) > 0.5
    out = []
    for image, view, inside in zip(images, views, exposed, strict=True):
        spacing = view_spacing_mm(view)
        details = laplacian_pyramid(image[None, None], spacing)[0]
        levels = []
        for k, (detail, mask) in enumerate(zip(details, _level_masks(inside, len(details)), strict=True)):
            values = detail[0, 0][mask]
            levels.append((level_scale_mm(k, spacing), float(values.std()) if values.numel() >= 16 else math.nan))
        out.append(levels)
    return out


def _sample(values: torch.Tensor) -> torch.Tensor:
    """An even subsample of at most :data:`SAMPLES` of ``values`` (1-D)."""
    return values[:: max(1, math.ceil(values.numel() / SAMPLES))]


def histogram_distance(first: torch.Tensor, second: torch.Tensor, field: torch.Tensor | None = None) -> float:
    """The total variation ``1/2 sum |p - q|`` between the grey-level histograms (:data:`HISTOGRAM_BINS` bins
    over [0, 1]) of two display images of one shape in their exposed field (``field > 0.5``, default all):
    0 for the same histogram, 1 for disjoint ones."""
    if first.shape != second.shape:
        raise CT2XError(f"compare images of one shape, got {tuple(first.shape)} and {tuple(second.shape)}")
    exposed = torch.ones_like(first, dtype=torch.bool) if field is None else field.reshape(first.shape) > 0.5
    p, q = (torch.histc(_sample(x[exposed].float().clamp(0, 1)), HISTOGRAM_BINS, 0.0, 1.0) for x in (first, second))
    return 0.5 * float((p / p.sum() - q / q.sum()).abs().sum())


def _matched_tone(shown: torch.Tensor, target: torch.Tensor, exposed: torch.Tensor) -> tuple[float, ...]:
    """Tone points (:data:`TONE_POINTS`) that map the display ``shown`` (before tone points) onto the film's
    histogram (``target``: its sorted values in the exposed field) in the exposed field: the film's quantile at
    the display's mid-rank distribution at each point."""
    source = _sample(shown[exposed]).sort().values
    inputs = torch.linspace(0.0, 1.0, TONE_POINTS)
    below, upto = (torch.searchsorted(source, inputs, right=r).float() for r in (False, True))
    position = (below + upto) / (2 * source.numel()) * (target.numel() - 1)
    index = position.floor().long().clamp(0, target.numel() - 2) if target.numel() > 1 else position.long() * 0
    fraction = (position - index).clamp(0.0, 1.0)
    values = target[index] + fraction * (target[(index + 1).clamp_max(target.numel() - 1)] - target[index])
    values = torch.cummax(values.clamp(0.0, 1.0), 0).values
    return tuple(float(v) for v in values)


def _fit_tone(parameters: ImagingParameters, film: torch.Tensor, log: torch.Tensor, views: list[CArm],
              field: torch.Tensor, region: torch.Tensor) -> tuple[ImagingParameters, torch.Tensor]:  # fmt: skip
    """``parameters`` with tone points matching the film's histogram (``film``: its sorted values in ``region``)
    in ``region`` (boolean), and the display they give of ``log`` (exposed ``field``)."""
    exposed = field > 0.5
    shown = console(log, views, dataclasses.replace(parameters, tone_points=()), field)
    points = _matched_tone(shown, film, region)
    return dataclasses.replace(parameters, tone_points=points), torch.where(
        exposed, apply_tone_points(shown, points), shown)  # fmt: skip


def _solve_gains(rows: list[tuple[float, ...]], targets: list[float], previous: tuple[float, ...]) -> tuple:
    """Band gains ``g`` minimising ``sum ((w . g - t) / t)^2 + RIDGE sum ((g - g_prev) / g_prev)^2 + SMOOTHNESS
    sum ((g_j+1 - g_j) / g_prev_j)^2`` over the levels' weight rows ``w`` (on the band gains) and target gains
    ``t``, clipped to :data:`GAIN_LIMITS`."""
    if not rows:
        return previous
    weights, goal, prior = np.array(rows), np.array(targets), np.array(previous)
    steps = (np.eye(len(prior), k=1) - np.eye(len(prior)))[:-1] / prior[:-1, None]
    system = np.vstack(
        [weights / goal[:, None], math.sqrt(RIDGE) * np.diag(1.0 / prior), math.sqrt(SMOOTHNESS) * steps]
    )
    right = np.concatenate([np.ones(len(goal)), math.sqrt(RIDGE) * np.ones(len(prior)), np.zeros(len(steps))])
    gains = np.linalg.lstsq(system, right, rcond=None)[0]
    return tuple(float(g) for g in np.clip(gains, *GAIN_LIMITS))


def _band_gains(gains: tuple[float, ...], views: list[CArm], film: _Look, output: _Look,
                noise_ratio: float | None) -> tuple[float, ...]:  # fmt: skip
    """Band gains that scale the gain at each pyramid level by the root of the film's over the output's structure
    variance there, solved over all levels of all views (:func:`_solve_gains`). The structure is the level's
    variance less the noise's: the output's noise alone, and for the film that times ``noise_ratio`` (what the
    output's noise variance changes by with the fitted noise: the structure then makes up the rest of the
    film's variance); with no noise known, the whole variance."""
    known = noise_ratio is not None and output.noise_variance is not None
    noises = output.noise_variance if known else [[0.0] * len(v) for v in output.variance]
    rows, targets = [], []
    for v, view in enumerate(views):
        for k, (wanted, have, noise) in enumerate(zip(film.variance[v], output.variance[v], noises[v], strict=True)):
            a = max(wanted - (noise_ratio * noise if known else 0.0), STRUCTURE_FLOOR * wanted)
            b = max(have - noise, STRUCTURE_FLOOR * have)
            if not (a > 0 and b > 0):  # also NaN
                continue
            weight = band_weights(level_scale_mm(k, view_spacing_mm(view)))
            rows.append(weight)
            targets.append(math.sqrt(a / b) * sum(w * g for w, g in zip(weight, gains, strict=True)))
    return _solve_gains(rows, targets, gains)


def _noise_response(view: CArm, mtfs: Sequence[float], base: ImagingParameters) -> dict:
    """``{mtf: (variance, correlation)}`` of the finest pyramid level of unit white noise at the view's pixel
    spacing blurred by the detector MTF of each ``mtf_nyquist`` in ``mtfs``, and at ``None`` unblurred."""
    margin = 16
    white = torch.randn(NOISE_PX + 2 * margin, NOISE_PX + 2 * margin, generator=torch.Generator().manual_seed(SEED))
    out = {}
    for mtf in (*mtfs, None):
        parameters = dataclasses.replace(base, mtf_nyquist=mtf) if mtf is not None else base
        noise = white if mtf is None else fourier_filter(
            white, view.pixel_spacing, lambda f, p=parameters: detector_mtf(f, p), 8)  # fmt: skip
        level = laplacian_pyramid(noise[None, None], 1.0)[0][0][0, 0, margin:-margin, margin:-margin]
        pairs = float((level[:, 1:] * level[:, :-1]).mean() + (level[1:] * level[:-1]).mean()) / 2
        out[mtf] = (float(level.var()), pairs / float((level * level).mean()))
    return out


def _redrawn_log(chain: _Chain, views: list[CArm], parameters: ImagingParameters) -> tuple[torch.Tensor, torch.Tensor]:
    """The log images ``(V, H, W)`` the chain gives with ``parameters``' dose and detector, and the same with the
    noise's sign flipped: the stages of :func:`ct2x.imaging.detector.detect` on the expected quanta scaled by
    the dose, the Poisson counts drawn as their normal approximation ``q + sqrt(q) z`` of the fit's fixed draw
    ``z`` (the same noise field each round, scaled: the rounds compare like with like), the structure noise's
    gain pattern to first order (``clean s t``)."""
    scale = parameters.mas / chain.base.mas
    gain = detector_gain(views, parameters)
    clean = detector_blur(chain.blurred * scale, views, parameters) * gain
    noise = detector_blur(torch.sqrt(chain.blurred * scale) * chain.draws[0], views, parameters) * gain
    electronic = torch.tensor([electronic_noise_std(view, parameters) for view in views])[:, None, None]
    noise = noise + chain.draws[1] * electronic
    if parameters.structure_noise > 0.0:  # the gain pattern's part of the signal, to first order
        noise = noise + clean * parameters.structure_noise * structure_texture(chain.draws[2], views, parameters)
    flat = chain.flat * scale
    return log_image(clean + noise, flat), log_image(clean - noise, flat)


def _flat_noise(film: _Look, output: _Look) -> tuple[torch.Tensor, tuple[float, float], tuple[float, float]] | None:
    """The noise of the film and of the chain's output in the film's flattest blocks: the chosen blocks ``(N,
    3)`` (view, row, column), and for the film, then the output, the noise's variance and neighbour correlation
    in the finest pyramid level (medians over the blocks). The blocks are the :data:`FLAT_SHARE` of those usable
    in both with the least finest-level variance in the film: where the film shows the least structure, its
    finest level is mostly its noise (a film is another patient: its anatomy is not the output's, so the output's
    structure cannot be subtracted from it). The output's noise is its noise alone (known) in the same blocks,
    the same place in the same look. None: too few blocks or no known noise."""
    usable = film.usable & output.usable
    found = usable.nonzero()
    if output.noise is None or len(found) < MIN_FLAT_BLOCKS:
        return None
    keep = max(MIN_FLAT_BLOCKS, math.ceil(FLAT_SHARE * len(found)))
    chosen = found[torch.argsort(film.blocks[0][usable], stable=True)[:keep]]
    picked = (slice(None), *chosen.T)
    film_noise = film.blocks[picked].median(-1).values.tolist()
    noise = output.noise[picked].median(-1).values.tolist()
    if noise[0] <= 0 or film_noise[0] <= 0:
        return None
    correlation = float(np.clip(film_noise[1] / film_noise[0], -0.9, 0.9))
    return chosen, (film_noise[0], correlation), (noise[0], noise[1] / noise[0])


def _fit_noise(parameters: ImagingParameters, measured: tuple, log_noise_blocks: torch.Tensor, chain: _Chain,
               views: list[CArm], response: dict) -> tuple[ImagingParameters, float]:  # fmt: skip
    """``parameters`` with the ``mtf_nyquist``, ``mas`` and ``structure_noise`` that give the output the film's
    noise correlation and amount in the flat blocks (``measured``: :func:`_flat_noise`; module docstring), and
    the factor the output's noise variance changes by with them (the film's over the output's, unless a range
    stops it). The quanta explain the noise down to :data:`DOSE_FLOOR` of the base's dose; what is left is the
    detector's structure noise. ``log_noise_blocks``: :func:`_block_noise` of the output's log noise: the
    console's change of the noise's correlation is the output's display's less its log's (both of the one draw,
    so the draw's own chance correlation cancels)."""
    chosen, wanted, have = measured
    picked = (slice(None), *chosen.T)
    log_variance, log_covariance = log_noise_blocks[picked].median(-1).values.tolist()
    count = (chain.expected.shape[-2] // BLOCK_PX, chain.expected.shape[-1] // BLOCK_PX)
    expected = torch.stack([_blocks(image, count).median(-1).values for image in chain.expected])
    per_mas = float(expected[tuple(chosen.T)].median()) / chain.base.mas
    electronic = electronic_noise_std(views[0], parameters) ** 2 * response[None][0]

    def model(mtf: float, q: float, structure: float) -> tuple[float, float]:
        blurred = response[mtf][0] * (1.0 / q + structure**2)
        correlation = (blurred * response[mtf][1] + electronic * response[None][1] / q**2) / (
            blurred + electronic / q**2
        )
        return blurred + electronic / q**2, correlation

    variance = model(parameters.mtf_nyquist, per_mas * parameters.mas, parameters.structure_noise)[0]
    amount = max(variance * wanted[0] / have[0], 1e-12 * variance)  # a noiseless film: the most dose
    grain = wanted[1] - (have[1] - log_covariance / max(log_variance, 1e-30))
    low = per_mas * max(RANGES["mas"][0], DOSE_FLOOR * chain.base.mas)
    high = per_mas * RANGES["mas"][1]
    best = (math.inf, parameters.mtf_nyquist, per_mas * parameters.mas, parameters.structure_noise)
    for mtf in MTF_GRID:  # q with the wanted variance: amount q^2 - v q - electronic = 0
        q = (response[mtf][0] + math.sqrt(response[mtf][0] ** 2 + 4 * amount * electronic)) / (2 * amount)
        q = min(max(q, low), high)
        left = amount - model(mtf, q, 0.0)[0]
        structure = min(math.sqrt(max(left, 0.0) / response[mtf][0]), STRUCTURE_LIMIT)
        best = min(best, (abs(model(mtf, q, structure)[1] - grain), mtf, q, structure))
    _, mtf, q, structure = best
    change = model(mtf, q, structure)[0] / variance
    return dataclasses.replace(parameters, mas=q / per_mas, mtf_nyquist=mtf, structure_noise=structure), change


def fit_style(film: np.ndarray | torch.Tensor, source: ImagingStages | torch.Tensor, views: CArm | Sequence[CArm],
              base: ImagingParameters | str = "chest_dr_pa", field: torch.Tensor | None = None,
              *, region: torch.Tensor | None = None, rounds: int = ROUNDS) -> ImagingParameters:  # fmt: skip
    """Imaging parameters whose console and noise make the chain's output of a CT look like a reference film.

    Args:
        film: the reference radiograph, ``(H, W)`` (or ``(V, H, W)``, one per view), grey, bright =
            attenuating (bones white), already cropped and resized to the output's pixel grid; values in
            [0, 1] or 8/16-bit (:func:`film_image`).
        source: the chain's run on the CT at ``views`` with ``base`` (:func:`ct2x.imaging.simulate`): its
            :class:`ImagingStages` (the noise is then fitted too), or its raw log image ``(H, W)`` or
            ``(V, H, W)`` alone (:attr:`ImagingStages.log`: the noise is kept).
        views: the :class:`ct2x.geometry.CArm` view of each image (its pixel spacing places the bands in mm).
        base: the parameters (or a preset's name) the source was simulated with: what the fit starts from
            and keeps.
        field: the exposed field (default the stages' field, or all exposed); statistics are taken inside it.
        region: where in the exposed field the statistics are taken (boolean, shaped like the log; default
            all of it), e.g. the body (:func:`ct2x.imaging.styled`); the console still sees the whole field.
        rounds: rounds of noise, tone and bands (:data:`ROUNDS`).

    Returns:
        ``base`` with ``tone_points`` and ``band_gains`` fitted and, from stages, ``mas`` and ``mtf_nyquist``
        (module docstring); with several views, one set of parameters for all (statistics pooled; the noise
        model uses the first view's pixel spacing).

    Raises:
        CT2XError: a film or log of the wrong shape, constant, or with NaN or infinite pixels; bad views.
    """
    base = resolve(base)
    log, views, field, chain = _source(source, views, field, base)
    target = film_image(film, tuple(log.shape))
    exposed = field > 0.5
    inside = None if region is None else exposed & region.detach().cpu().reshape(exposed.shape).bool()
    exposed = inside if inside is not None and bool(inside.any()) else exposed
    wanted, film_values = _look(target, views, exposed), _sample(target[exposed]).sort().values
    response = _noise_response(views[0], (*MTF_GRID, base.mtf_nyquist), base) if chain is not None else {}
    current = dataclasses.replace(base, tone_points=(), marker="", bits=16)
    for _ in range(max(0, int(rounds))):
        log, flipped = _redrawn_log(chain, views, current) if chain is not None else (log, None)
        current, shown = _fit_tone(current, film_values, log, views, field, exposed)
        # the display's noise alone: the odd part of its response to the noise (window shifts cancel)
        noise = None if flipped is None else (shown - console(flipped, views, current, field)) / 2
        look = _look(shown, views, exposed, noise)
        measured = _flat_noise(wanted, look)
        if measured is None:
            updated, change = current, None
        else:
            log_noise = _block_noise([laplacian_pyramid(x[None, None], 1.0, levels=1)[0][0][0, 0]
                                      for x in (log - flipped) / 2])  # fmt: skip
            updated, change = _fit_noise(current, measured, log_noise, chain, views, response)
        current = dataclasses.replace(updated, band_gains=_band_gains(current.band_gains, views, wanted, look, change))
    log = _redrawn_log(chain, views, current)[0] if chain is not None else log
    current, _ = _fit_tone(current, film_values, log, views, field, exposed)
    return dataclasses.replace(current, marker=base.marker, bits=base.bits)

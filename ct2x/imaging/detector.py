"""The detector: focal-spot and detector blur, quantum and electronic noise, the gain (vignetting), the
flat field and the logarithm. Signals are in effective quanta per readout pixel.

* **Focal-spot blur** (:func:`focal_spot_blur`): a Gaussian focal spot whose FWHM is the nominal size
  (IEC 60336), projected onto the detector by ``(SDD - SID) / SID`` (an object at the isocentre):
  ``MTF(f) = exp(-2 pi^2 sigma^2 f^2)``. It blurs the expected signal, before the quanta are counted.
* **Detector MTF** (:func:`detector_mtf`): the Lorentzian ``1 / (1 + (f / f_c)^2)`` of a phosphor's light
  spread, ``f_c`` set by the MTF at the detector's Nyquist frequency ``1 / (2 pitch)``
  (``mtf_nyquist``; CsI panels about 0.2-0.3, CR 0.1-0.2: Samei & Flynn 2002, 2003). It is applied in
  cycles/mm at the readout's pixel spacing, so a coarse readout of a sharp detector is barely blurred.
* **Quantum noise** (:func:`detect`): Poisson counts of the expected quanta (focal-spot blurred), drawn
  before the detector blur, so their noise power spectrum is ``q MTF(f)^2``: correlated as a detector's.
* **Electronic noise**: white Gaussian after the blur, ``electronic_noise`` quanta per detector element,
  times ``sqrt(readout pixel area / pitch^2)`` (the elements binned into a readout pixel add up).
* **Gain** (:func:`detector_gain`): an image intensifier's vignetting ``1 - v (r / R)^2`` (``R``: half the
  detector's smaller side), on the detected signal.
* **Structure noise** (:func:`structure_texture`): a fixed pattern of the detector's gain, ``1 + s t`` with
  ``t`` unit white noise blurred by the detector MTF and ``s`` = ``structure_noise``: a CR plate's phosphor
  granularity, a flat panel's residual after gain calibration, a copy's grain. Its variance grows with the
  signal squared (Dobbins 2000, Handbook of Medical Imaging vol. 1 ch. 3: the NPS's exposure-squared term;
  Samei & Flynn 2002 measured it in CR), so in the log it is ``s^2`` times the texture's variance
  everywhere, where the quantum noise's falls as 1 / quanta.
* **Flat field and log** (:func:`flat_field`, :func:`log_image`): ``-log(signal / flat)``, the signal
  floored at one quantum (as the DRR's Poisson noise). A gain-calibrated detector's flat holds the beam's
  non-uniformity and the gain (the heel effect and vignetting divide out); an uncalibrated one's (CR, an
  image intensifier) is the central ray's level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ct2x.geometry import CArm
from ct2x.imaging.filters import fourier_filter, per_view, view_list
from ct2x.imaging.parameters import ImagingParameters

#: FWHM of a Gaussian over its standard deviation.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: Pixels of edge replication around an image before Fourier filtering, beyond the blur's own reach.
PAD_PX = 8


def focal_spot_fwhm_mm(view: CArm, parameters: ImagingParameters) -> float:
    """The focal spot's blur at the detector, FWHM in mm: nominal size x ``(SDD - SID) / SID``."""
    return parameters.focal_spot_mm * (view.sdd - view.sid) / view.sid


def focal_spot_mtf(frequency: torch.Tensor, fwhm_mm: float) -> torch.Tensor:
    """The Gaussian focal spot's MTF at ``frequency`` (cycles/mm) for a blur of ``fwhm_mm`` at the detector."""
    sigma = fwhm_mm / FWHM_PER_SIGMA
    return torch.exp(-2.0 * math.pi**2 * sigma**2 * frequency**2)


def corner_frequency(parameters: ImagingParameters) -> float:
    """``f_c`` (cycles/mm) of the Lorentzian detector MTF with ``mtf_nyquist`` at ``1 / (2 pitch)``."""
    nyquist = 1.0 / (2.0 * parameters.pixel_pitch_mm)
    if parameters.mtf_nyquist >= 1.0:
        return math.inf
    return nyquist / math.sqrt(1.0 / parameters.mtf_nyquist - 1.0)


def detector_mtf(frequency: torch.Tensor, parameters: ImagingParameters) -> torch.Tensor:
    """The detector's MTF ``1 / (1 + (f / f_c)^2)`` at ``frequency`` (cycles/mm)."""
    return 1.0 / (1.0 + (frequency / corner_frequency(parameters)) ** 2)


def _pad(view: CArm, reach_mm: float) -> int:
    return PAD_PX + math.ceil(reach_mm / min(view.pixel_spacing))


@per_view
def focal_spot_blur(images: torch.Tensor, views: Sequence[CArm], parameters: ImagingParameters) -> torch.Tensor:
    """Images ``(V, H, W)`` blurred by each view's projected focal spot (:func:`focal_spot_fwhm_mm`)."""
    out = []
    for image, view in zip(images, views, strict=True):
        fwhm = focal_spot_fwhm_mm(view, parameters)
        if fwhm <= 0:
            out.append(image)
            continue
        pad = _pad(view, 4.0 * fwhm / FWHM_PER_SIGMA)
        out.append(fourier_filter(image, view.pixel_spacing, lambda f, w=fwhm: focal_spot_mtf(f, w), pad))
    return torch.stack(out)


@per_view
def detector_blur(images: torch.Tensor, views: Sequence[CArm], parameters: ImagingParameters) -> torch.Tensor:
    """Images ``(V, H, W)`` blurred by the detector's MTF (:func:`detector_mtf`) at each view's pixel spacing."""
    if parameters.mtf_nyquist >= 1.0:
        return images
    reach = 8.0 / (2.0 * math.pi * corner_frequency(parameters))  # the PSF falls as exp(-2 pi f_c r)
    out = [fourier_filter(image, view.pixel_spacing, lambda f: detector_mtf(f, parameters), _pad(view, reach))
           for image, view in zip(images, views, strict=True)]  # fmt: skip
    return torch.stack(out)


def detector_gain(views: CArm | Sequence[CArm], parameters: ImagingParameters,
                  device: torch.device | str = "cpu") -> torch.Tensor:  # fmt: skip
    """The detector's relative gain ``(V, H, W)`` (``(H, W)`` for one view): vignetting ``1 - v (r / R)^2``,
    ``r`` from the detector's centre, ``R`` half its smaller side (``r`` capped at ``sqrt(2) R``)."""
    views, single = view_list(views)
    if parameters.vignetting == 0.0:
        ones = torch.ones(len(views), *views[0].detector_shape, device=device)
        return ones[0] if single else ones
    out = []
    for view in views:
        (height, width), (row_mm, column_mm) = view.detector_shape, view.pixel_spacing
        rows = (torch.arange(height, dtype=torch.float32, device=device) - (height - 1) / 2) * row_mm
        columns = (torch.arange(width, dtype=torch.float32, device=device) - (width - 1) / 2) * column_mm
        r2 = (rows[:, None] ** 2 + columns[None, :] ** 2) / (0.5 * min(view.detector_size_mm)) ** 2
        out.append(1.0 - parameters.vignetting * r2.clamp_max(2.0))
    return out[0] if single else torch.stack(out)


def electronic_noise_std(view: CArm, parameters: ImagingParameters) -> float:
    """The electronic noise of one readout pixel, quanta: per element x ``sqrt(pixel area / pitch^2)``."""
    elements = view.pixel_spacing[0] * view.pixel_spacing[1] / parameters.pixel_pitch_mm**2
    return parameters.electronic_noise * math.sqrt(elements)


@per_view
def detect(expected: torch.Tensor, views: Sequence[CArm], parameters: ImagingParameters,
           generator: torch.Generator) -> torch.Tensor:  # fmt: skip
    """The detector's signal ``(V, H, W)`` (quanta) from the expected quanta ``(V, H, W)`` reaching it:
    focal-spot blur -> Poisson counts -> detector blur -> gain (vignetting) -> + electronic noise -> x structure
    noise (module docstring); the draws come from ``generator`` (on the images' device)."""
    counts = torch.poisson(focal_spot_blur(expected, views, parameters).clamp_min(0.0), generator=generator)
    signal = detector_blur(counts, views, parameters) * detector_gain(views, parameters, expected.device)
    noise = torch.randn(signal.shape, generator=generator, device=signal.device, dtype=signal.dtype)
    sigma = torch.tensor([electronic_noise_std(v, parameters) for v in views], device=signal.device)
    signal = signal + noise * sigma[:, None, None]
    if parameters.structure_noise > 0.0:  # drawn last, so a chain without it draws as it always did
        white = torch.randn(signal.shape, generator=generator, device=signal.device, dtype=signal.dtype)
        signal = signal * (1.0 + parameters.structure_noise * structure_texture(white, views, parameters))
    return signal


def structure_texture(white: torch.Tensor, views: Sequence[CArm], parameters: ImagingParameters) -> torch.Tensor:
    """The detector's structure-noise pattern ``(V, H, W)`` (module docstring) from unit white noise ``white``
    ``(V, H, W)``: blurred by the detector MTF, unitless (its gain is ``1 + structure_noise x`` this)."""
    return detector_blur(white, views, parameters)


@per_view
def flat_field(beam: torch.Tensor, views: Sequence[CArm], parameters: ImagingParameters,
               level: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """The flat field ``(V, H, W)`` the log divides by: each view's open-field signal on the central ray
    behind the grid (``level``, ``(V,)`` quanta) times, on a gain-calibrated detector, the beam's
    non-uniformity ``beam`` ``(V, H, W)`` (:func:`ct2x.imaging.beam.beam_profile`) and the detector's gain."""
    flat = torch.as_tensor(level, dtype=beam.dtype, device=beam.device).reshape(-1, 1, 1).expand_as(beam)
    if parameters.gain_calibrated:
        flat = flat * beam * detector_gain(views, parameters, beam.device)
    return flat


def log_image(signal: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """The detector's log ``-log(signal / flat)`` (signal floored at one quantum): bright = attenuating."""
    return -torch.log(signal.clamp_min(1.0) / flat)

"""Scattered radiation at the detector: a kernel (convolution) model driven by the water-equivalent
thickness along each ray, and the anti-scatter grid.

Model (scatter kernel superposition, as Ohnesorge B., Flohr T., Klingenbeck-Regn K. 1999, *Efficient
object scatter correction algorithm for third and fourth generation CT scanners*, Eur Radiol 9:563, and
Sun M., Star-Lack J.M. 2010, *Improved scatter correction using adaptive scatter kernel superposition*,
Phys Med Biol 55:6695): each ray's primary ``P`` (times the incident beam) emits scatter in proportion
``A(t)`` to its water-equivalent thickness ``t`` (cm), spread over the detector by a kernel ``K``:

    ``S(x) = sum_x' K(x - x') A(t(x')) P(x')``.

* ``t``: the thickness of water (xraydb's attenuation, the view's spectrum, energy-integrated as the
  DRR) that transmits the same primary fraction (:func:`water_equivalent_thickness`); bone counts as
  the water that attenuates as much.
* ``A(t) = SPR_10CM (t / 10 cm)^SPR_EXPONENT``: the scatter-to-primary ratio (SPR) of a water slab of
  thickness ``t`` on the detector in an infinite field, set so that slabs on the detector in a 35 x 35 cm
  field have SPR about 1.6 (10 cm), 4 (20 cm) and 7 (30 cm), within the Monte Carlo and measured values
  of Kalender W. 1981, *Monte Carlo calculations of x-ray scatter data for diagnostic radiology*, Phys Med
  Biol 26:835, Chan H.-P., Doi K. 1985, *Physical characteristics of scattered radiation in diagnostic
  radiology: Monte Carlo simulation studies*, Med Phys 12:152, and Boone J.M., Seibert J.A. 1988, *An
  analytical model of the scattered radiation distribution in diagnostic radiology*, Med Phys 15:721
  (about 1-2.5, 2.5-6 and 5-12 for large fields without a grid).
* ``K(r) = (n + 1) / (2 pi) h^(n+1) / (r^2 + h^2)^((n+3)/2)`` per mm^2 (integral 1): scatter leaving a
  point ``h`` above the detector with a forward-peaked ``cos^n`` angular spread (``n`` =
  :data:`KERNEL_EXPONENT`), ``h`` the distance from the isocentre (the patient's mid-plane, where the
  effective scatter source lies: Sorenson J.A., Floch J. 1985, *Scatter rejection by air gaps: an
  empirical model*, Med Phys 12:308) to the detector. A field smaller than the kernel and an air gap
  (a larger ``h``) lower the SPR, as measured: the field-size and air-gap dependences follow from the
  geometry, nothing is fitted per device. Kernel widths are in mm, so the pixel spacing counts.
* The sum is computed on a grid of about :data:`SCATTER_GRID_MM` (scatter varies slowly), by FFT with
  zero padding (no scatter from outside the detector's field), and interpolated back bilinearly.
* **Grid** (:func:`through_grid`): primary x ``Tp``, scatter x ``Ts``; the SPR falls by the selectivity
  ``Tp / Ts`` (grid ratio 10-12: Tp about 0.7, Ts 0.1-0.15, Bushberg et al. 2012 ch. 7).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ct2x.drr.spectrum import get_spectrum
from ct2x.geometry import CArm
from ct2x.imaging.filters import fast_length, per_view
from ct2x.imaging.parameters import ImagingParameters

#: SPR of a 10 cm water slab on the detector in an infinite field, and the power of thickness it grows with.
SPR_10CM = 1.6
SPR_EXPONENT = 1.4
#: ``n`` of the kernel's ``cos^n`` forward peaking.
KERNEL_EXPONENT = 3
#: Spacing of the grid the scatter is computed on, mm (at most; never finer than the pixels).
SCATTER_GRID_MM = 4.0
#: The scatter source's height above the detector is at least this, mm (a patient lying on it).
MIN_HEIGHT_MM = 20.0
#: Water thicknesses the lookup table is made from, cm (thicker rays are held at its end), and its size.
THICKNESS_TABLE_CM = np.linspace(0.0, 80.0, 321)
TABLE_SIZE = 4096


@lru_cache(maxsize=16)
def _water_table(spectrum: str) -> np.ndarray:
    """(TABLE_SIZE + 1,): the water thickness (cm) whose energy-integrated ``-log`` transmission of
    ``spectrum`` is ``i x step``, then that step (``-log`` units); thicker than the table's end: its end."""
    import xraydb

    spec = get_spectrum(spectrum)
    mu = np.asarray(xraydb.material_mu("water", spec.energies_kev * 1000.0))  # 1/cm at 1 g/cm^3
    attenuation = -np.log(np.exp(-np.outer(THICKNESS_TABLE_CM, mu)) @ spec.weights)  # increasing
    steps = np.linspace(0.0, attenuation[-1], TABLE_SIZE)
    return np.append(np.interp(steps, attenuation, THICKNESS_TABLE_CM), steps[1])


def water_equivalent_thickness(primary: torch.Tensor, spectrum: str) -> torch.Tensor:
    """The water thickness (cm, same shape as ``primary``) that transmits the same energy-integrated
    fraction ``primary`` of the tube spectrum ``spectrum`` (a :mod:`ct2x.drr.spectrum` name; xraydb's
    attenuation of water), interpolated linearly in a table of :data:`TABLE_SIZE` steps of ``-log``."""
    table = torch.as_tensor(_water_table(spectrum), dtype=torch.float32, device=primary.device)
    thickness, step = table[:-1], table[-1]
    position = (-torch.log(primary.clamp(torch.finfo(torch.float32).tiny, 1.0)) / step).clamp(0, TABLE_SIZE - 1)
    index = position.long().clamp_max(TABLE_SIZE - 2)
    weight = position - index
    return thickness[index] * (1.0 - weight) + thickness[index + 1] * weight


def scatter_to_primary_ratio(thickness_cm: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``A(t)``: the infinite-field, zero-air-gap SPR of water ``thickness_cm`` thick (module docstring),
    times ``scale``."""
    return scale * SPR_10CM * (thickness_cm.clamp_min(0.0) / 10.0) ** SPR_EXPONENT


def scatter_height_mm(view: CArm) -> float:
    """The scatter source's height above the detector, mm: the isocentre's distance to it (at least
    :data:`MIN_HEIGHT_MM`)."""
    return max(view.sdd - view.sid, MIN_HEIGHT_MM)


@lru_cache(maxsize=16)
def scatter_kernel(height_mm: float, size: tuple[int, int], spacing_mm: tuple[float, float],
                   reach: tuple[int, int]) -> torch.Tensor:  # fmt: skip
    """The kernel ``K`` (module docstring) times the cell area, on an FFT grid of ``size`` (offset 0 at
    index 0, negative offsets wrapped) with ``spacing_mm``; scaled so that its sum over the disc of the
    grid's ``reach`` (cells each way) equals the disc's exact share ``1 - (h / sqrt(R^2 + h^2))^(n+1)``.
    float32 on the CPU, cached."""
    n, h = KERNEL_EXPONENT, float(height_mm)
    offsets = [torch.fft.fftfreq(s, d=1.0 / s, dtype=torch.float64) * d for s, d in zip(size, spacing_mm, strict=True)]
    r2 = offsets[0][:, None] ** 2 + offsets[1][None, :] ** 2
    kernel = (n + 1) / (2 * math.pi) * h ** (n + 1) / (r2 + h * h) ** ((n + 3) / 2) * spacing_mm[0] * spacing_mm[1]
    radius = min((reach[0] - 1) * spacing_mm[0], (reach[1] - 1) * spacing_mm[1])
    if radius > 0:
        disc = r2 <= radius * radius
        kernel = kernel * ((1 - (h / math.hypot(radius, h)) ** (n + 1)) / kernel[disc].sum())
    return kernel.to(torch.float32)


@per_view
def scatter(emitting_primary: torch.Tensor, views: Sequence[CArm], thickness_cm: torch.Tensor,
            scale: float = 1.0) -> torch.Tensor:  # fmt: skip
    """Scatter at the detector ``(V, H, W)``, in units of the unattenuated central fluence, from the primary
    that reaches the detector ``(V, H, W)`` (transmitted fraction x beam profile x field) and the rays'
    water-equivalent thickness (cm, same shape), by the kernel model of the module docstring (``scale`` x
    ``A``)."""
    thickness_cm = thickness_cm.reshape(emitting_primary.shape)
    emission = scatter_to_primary_ratio(thickness_cm, scale) * emitting_primary
    out = []
    for image, view in zip(emission, views, strict=True):
        (height, width), (row_mm, column_mm) = view.detector_shape, view.pixel_spacing
        coarse_shape = (math.ceil(height / max(1, int(SCATTER_GRID_MM // row_mm))),
                        math.ceil(width / max(1, int(SCATTER_GRID_MM // column_mm))))  # fmt: skip
        spacing = (height * row_mm / coarse_shape[0], width * column_mm / coarse_shape[1])
        coarse = F.interpolate(image[None, None], size=coarse_shape, mode="area")[0, 0]
        size = (fast_length(2 * coarse_shape[0] - 1), fast_length(2 * coarse_shape[1] - 1))
        kernel = scatter_kernel(scatter_height_mm(view), size, spacing, coarse_shape).to(image.device)
        spread = torch.fft.irfft2(torch.fft.rfft2(coarse, s=size) * torch.fft.rfft2(kernel), s=size)
        spread = spread[: coarse_shape[0], : coarse_shape[1]]
        out.append(F.interpolate(spread[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0])
    return torch.stack(out)


def through_grid(primary: torch.Tensor, scattered: torch.Tensor, parameters: ImagingParameters) -> torch.Tensor:
    """What passes the anti-scatter grid: ``Tp x primary + Ts x scatter`` (no grid: Tp = Ts = 1)."""
    return parameters.grid_primary_transmission * primary + parameters.grid_scatter_transmission * scattered

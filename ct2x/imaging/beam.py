"""The X-ray beam: the primary transmitted fraction, the beam's non-uniformity over the detector (heel
effect, inverse square, obliquity), the collimated field, and the photons a detector pixel receives.

Units: fractions of the unattenuated fluence on the central ray (dimensionless), mm on the detector,
quanta per detector readout pixel.

* **Primary** (:func:`primary`): the DRR's noise-free energy-integrated transmitted fraction
  (:func:`ct2x.drr.render.transmitted_fraction`, DeepDRR's materials, SpekPy spectrum).
  Support devices in the beam (ECG leads, catheters, tubes: :mod:`ct2x.imaging.devices`) attenuate it too.
* **Beam profile** (:func:`beam_profile`): SpekPy's fluence off the central ray (Poludniowski G. et al.
  2021, *SpekPy v2.0 - a software toolkit for modeling x-ray tube spectra*, Med Phys 48:3630), whose
  anode self-filtration along the anode-cathode axis is the heel effect (the anode side dims by tens of per
  cent across a radiographic field: 26 % from edge to edge of 43 cm at 180 cm on a 12 degree target, about
  12 % on a 16 degree one), times the inverse square and the obliquity ``cos theta`` of a flat detector
  across the other axis.
* **Field** (:func:`field_mask`): collimator shutters with the focal spot's penumbra (blades
  :data:`COLLIMATOR_MM` from the focus), or an image intensifier's round input field.
* **Exposure** (:func:`quanta_per_pixel`): SpekPy's photon fluence per mAs at 1 m (the spectrum of
  :mod:`ct2x.drr.spectrum`) x mAs x inverse square to the detector x readout pixel area x the detector's
  efficiency.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

from ct2x.drr.render import transmitted_fraction
from ct2x.drr.spectrum import BIN_KEV, get_spectrum
from ct2x.drr.tube import off_axis_fluence
from ct2x.geometry import CArm
from ct2x.imaging.devices import with_devices
from ct2x.imaging.filters import view_list
from ct2x.imaging.parameters import ImagingParameters

#: Distance from the focal spot to the collimator's lower shutters, mm (typical collimators: 200-300 mm).
COLLIMATOR_MM = 250.0
#: Points along the anode-cathode axis where SpekPy's off-axis fluence is evaluated (linear in between).
HEEL_SAMPLES = 33
_MM_PER_CM = 10.0


def primary(area: torch.Tensor, views: Sequence[CArm], parameters: ImagingParameters) -> torch.Tensor:
    """The noise-free energy-integrated primary transmitted fraction ``(V, H, W)`` (1 where nothing
    attenuates) of area densities ``(V, M, H, W)`` g/cm^2 (:func:`ct2x.drr.area_densities`) at ``views``, for
    the tube spectrum of ``parameters`` (:attr:`ImagingParameters.spectrum`), with its support devices in the
    beam (:func:`ct2x.imaging.devices.with_devices`)."""
    body = transmitted_fraction(area, parameters.spectrum)
    return with_devices(area, body, views, parameters.devices, parameters.devices_seed, parameters.spectrum)


@lru_cache(maxsize=64)
def _heel(kvp: int, aluminium_mm: float, anode_angle_deg: float, sdd_mm: float, half_mm: float) -> np.ndarray:
    """(2, HEEL_SAMPLES): positions along the anode-cathode axis (mm from the central ray, negative toward the
    anode) and SpekPy's fluence there relative to the central ray's (inverse square along that axis included)."""
    positions = np.linspace(-half_mm, half_mm, HEEL_SAMPLES)
    relative = off_axis_fluence(
        kvp, anode_angle_deg, aluminium_mm, BIN_KEV, positions / _MM_PER_CM, sdd_mm / _MM_PER_CM
    )
    return np.stack([positions, relative])


def _detector_mm(shape: tuple[int, int], spacing: tuple[float, float],
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(H, 1) row and (1, W) column positions of the pixel centres of a detector of ``shape`` and ``spacing``
    (mm) from its centre, mm (down, right)."""
    (height, width), (row_mm, column_mm) = shape, spacing
    rows = (torch.arange(height, dtype=torch.float64, device=device) - (height - 1) / 2) * row_mm
    columns = (torch.arange(width, dtype=torch.float64, device=device) - (width - 1) / 2) * column_mm
    return rows[:, None], columns[None, :]


def beam_profile(views: CArm | Sequence[CArm], parameters: ImagingParameters,
                 device: torch.device | str = "cpu") -> torch.Tensor:  # fmt: skip
    """The incident fluence over each view's detector relative to its central ray ``(V, H, W)`` (``(H, W)``
    for one view): SpekPy's heel effect (with the inverse square) along the anode-cathode axis
    (``parameters.anode_side``), times the inverse square and the obliquity ``cos theta`` of the flat
    detector across it."""
    views, single = view_list(views)
    tube = (parameters.kvp, parameters.aluminium_mm, parameters.anode_angle_deg, parameters.anode_side)
    out = torch.stack([_profile(v.detector_shape, v.pixel_spacing, v.sdd, *tube) for v in views]).to(device)
    return out[0] if single else out


@lru_cache(maxsize=8)
def _profile(shape: tuple[int, int], spacing: tuple[float, float], sdd: float, kvp: int, aluminium_mm: float,
             anode_angle_deg: float, anode_side: str) -> torch.Tensor:  # fmt: skip
    """:func:`beam_profile` of one detector, ``(H, W)`` float32 on the CPU (cached: the views of a sweep share
    it, it depends on the detector, its distance and the tube only)."""
    rows, columns = _detector_mm(shape, spacing, torch.device("cpu"))
    along, across = (rows, columns) if anode_side in ("top", "bottom") else (columns, rows)
    along = along if anode_side in ("top", "left") else -along  # negative toward the anode
    half = round(float(along.abs().max()) + 1e-3, 3)
    positions, fluence = torch.as_tensor(_heel(kvp, aluminium_mm, anode_angle_deg, sdd, half))
    heel = _interpolate(along.flatten(), positions, fluence).reshape(along.shape)
    z2, x2, y2 = sdd**2, along**2, across**2
    return (heel * (z2 + x2) / (z2 + x2 + y2) * sdd / torch.sqrt(z2 + x2 + y2)).to(torch.float32)


def _interpolate(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of ``(xp, fp)`` (``xp`` increasing) at ``x``, held at the ends."""
    index = torch.searchsorted(xp, x.contiguous()).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[index - 1], xp[index], fp[index - 1], fp[index]
    weight = ((x - x0) / (x1 - x0)).clamp(0.0, 1.0)
    return f0 + weight * (f1 - f0)


def field_mask(views: CArm | Sequence[CArm], parameters: ImagingParameters,
               device: torch.device | str = "cpu") -> torch.Tensor:  # fmt: skip
    """The exposed field ``(V, H, W)`` (``(H, W)`` for one view) in [0, 1]: the collimator's shutters
    (``parameters.collimation``)
    (those above 0) with a linear penumbra ``focal spot x (SDD - c) / c`` wide (``c`` =
    :data:`COLLIMATOR_MM`), and with ``circular_field`` the circle inscribed in the detector (a one-pixel
    edge)."""
    views, single = view_list(views)
    out = []
    top, bottom, left, right = parameters.collimation
    for view in views:
        rows, columns = _detector_mm(view.detector_shape, view.pixel_spacing, torch.device(device))
        height, width = view.detector_size_mm
        penumbra = parameters.focal_spot_mm * (view.sdd - COLLIMATOR_MM) / COLLIMATOR_MM
        width_mm = max(penumbra, 1e-3)
        shutters = [(top, rows + height * (0.5 - top)), (bottom, height * (0.5 - bottom) - rows),
                    (left, columns + width * (0.5 - left)), (right, width * (0.5 - right) - columns)]  # fmt: skip
        mask = torch.ones(view.detector_shape, dtype=torch.float64, device=device)
        for fraction, distance in shutters:
            if fraction > 0:  # an open shutter lies beyond the detector
                mask = mask * (0.5 + distance / width_mm).clamp(0.0, 1.0)
        if parameters.circular_field:
            radius = 0.5 * min(height, width)
            edge = max(view.pixel_spacing)
            mask = mask * (0.5 + (radius - torch.sqrt(rows**2 + columns**2)) / edge).clamp(0.0, 1.0)
        out.append(mask.to(torch.float32))
    return out[0] if single else torch.stack(out)


def quanta_per_pixel(view: CArm, parameters: ImagingParameters) -> float:
    """Effective quanta a readout pixel of ``view`` counts from the unattenuated central ray: SpekPy's
    fluence per mAs at 1 m (photons/cm^2, summed over the spectrum of :mod:`ct2x.drr.spectrum`) x ``mas``
    x ``(1 m / SDD)^2`` x the readout pixel's area x the detector's ``efficiency`` (before the grid:
    :func:`ct2x.imaging.scatter.through_grid` applies its transmissions)."""
    fluence_1m = float(get_spectrum(parameters.spectrum).fluence.sum()) * BIN_KEV  # photons / cm^2 / mAs at 1 m
    inverse_square = (1000.0 / view.sdd) ** 2
    pixel_cm2 = view.pixel_spacing[0] * view.pixel_spacing[1] / _MM_PER_CM**2
    return fluence_1m * parameters.mas * inverse_square * pixel_cm2 * parameters.efficiency

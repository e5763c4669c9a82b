"""HU -> materials and densities (DeepDRR's model) and mass attenuation from xraydb.

* **Materials** by DeepDRR's thresholds: air ``HU <= -800`` < soft tissue ``HU <= 350`` < bone.
* **Density** (g/cm^3) by DeepDRR's two linear fits of (HU, density) data:
  ``max(min(0.001029 * HU + 1.030, 0.0005886 * HU + 1.030), 0)``.
* **Mass attenuation coefficients** ``mu/rho`` (cm^2/g, total with coherent scattering)
  come from xraydb's Elam tables per element, mixed by mass fraction. The compositions
  (fractions by weight) are data: dry air near sea level (NIST), soft tissue and cortical
  bone from ICRU Report 44 (as tabulated by NIST's X-ray mass attenuation database).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

#: Material names in channel order.
MATERIALS: tuple[str, ...] = ("air", "soft tissue", "bone")
#: Upper HU bound of each material but the last (DeepDRR's thresholds).
HU_THRESHOLDS: tuple[float, ...] = (-800.0, 350.0)

#: Fractions by weight (NIST; ICRU-44 for the tissues).
COMPOSITIONS: dict[str, dict[str, float]] = {
    "air": {"C": 0.000124, "N": 0.755268, "O": 0.231781, "Ar": 0.012827},
    "soft tissue": {
        "H": 0.105, "C": 0.256, "N": 0.027, "O": 0.602, "Na": 0.001,
        "P": 0.002, "S": 0.003, "Cl": 0.002, "K": 0.002,
    },
    "bone": {
        "H": 0.034, "C": 0.155, "N": 0.042, "O": 0.435, "Na": 0.001,
        "Mg": 0.002, "P": 0.103, "S": 0.003, "Ca": 0.225,
    },
}  # fmt: skip


#: DeepDRR's two linear fits ``(slope per HU, intercept)`` of density (g/cm^3); the density is their minimum.
DENSITY_FITS: tuple[tuple[float, float], ...] = ((0.001029, 1.030), (0.0005886, 1.030))


def hu_to_density(hu: torch.Tensor) -> torch.Tensor:
    """Mass density in g/cm^3 from HU (DeepDRR's two linear fits, clamped at 0)."""
    (a1, b1), (a2, b2) = DENSITY_FITS
    return torch.clamp(torch.minimum(a1 * hu + b1, a2 * hu + b2), min=0.0)


def hu_to_material_index(hu: torch.Tensor) -> torch.Tensor:
    """Index into :data:`MATERIALS` per voxel (int64): 0 air, 1 soft tissue, 2 bone."""
    thresholds = torch.tensor(HU_THRESHOLDS, dtype=hu.dtype, device=hu.device)
    return torch.bucketize(hu, thresholds, right=False)


def mass_attenuation(material: str, energies_kev: np.ndarray) -> np.ndarray:
    """``mu/rho`` of ``material`` (one of :data:`MATERIALS`) at ``energies_kev``, cm^2/g (xraydb, Elam)."""
    return mixture_attenuation(COMPOSITIONS[material], energies_kev)


def mixture_attenuation(composition: dict[str, float], energies_kev: np.ndarray) -> np.ndarray:
    """``mu/rho`` in cm^2/g at ``energies_kev`` of a mixture given as fractions by weight per element symbol
    (normalised to sum 1; xraydb, Elam)."""
    return np.asarray(_mixture(tuple(composition.items()), tuple(float(e) for e in np.ravel(energies_kev))))


@lru_cache(maxsize=64)
def _mixture(composition: tuple[tuple[str, float], ...], energies_kev: tuple[float, ...]) -> np.ndarray:
    import xraydb

    energies_ev = np.asarray(energies_kev) * 1000.0
    total = sum(fraction for _, fraction in composition)
    mu = sum(fraction / total * np.asarray(xraydb.mu_elam(el, energies_ev)) for el, fraction in composition)
    mu.setflags(write=False)
    return mu


def attenuation_table(energies_kev: np.ndarray) -> np.ndarray:
    """(M, E) ``mu/rho`` in cm^2/g for every material of :data:`MATERIALS` at every energy (keV)."""
    return np.stack([mass_attenuation(m, energies_kev) for m in MATERIALS])

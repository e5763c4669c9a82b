"""X-ray tube spectra from SpekPy, named like DeepDRR's (``"60KV_AL35"``).

A name ``<kV>KV_AL<mm x 10>`` means a tungsten-anode tube at ``kV`` kVp (12 degree anode
angle, SpekPy's default) filtered by ``mm`` millimetres of aluminium: ``60KV_AL35`` is
60 kVp with 3.5 mm Al, ``90KV_AL40`` 90 kVp with 4.0 mm Al, ``120KV_AL43`` 120 kVp with
4.3 mm Al.

The detector is **energy integrating**: a photon of energy E deposits a signal
proportional to E, so the weight of an energy bin is ``w(E) ∝ E · Φ(E)`` with ``Φ`` the
photon fluence per bin. The weights are normalised to sum to 1, so an unattenuated ray
has intensity 1 and ``-log(I)`` is the negative log of the transmitted fraction. Bins
that carry less than 1e-6 of the largest weight are dropped (they change no pixel).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ct2x.drr.tube import spectrum
from ct2x.errors import CT2XError

#: Energy-bin width of the spectra, keV.
BIN_KEV = 1.0
#: Anode angle of the named spectra, degrees (SpekPy's default).
ANODE_ANGLE_DEG = 12.0
#: Tube voltages SpekPy models, kVp.
KVP_RANGE = (30, 300)
_NAME = re.compile(r"^(\d+)KV_AL(\d+)$")
_FORM = "spectrum names have the form <kV>KV_AL<mm of Al x 10>, e.g. 60KV_AL35, 90KV_AL40, 120KV_AL43"


@dataclass(frozen=True)
class Spectrum:
    """A tube spectrum binned at :data:`BIN_KEV`.

    Attributes:
        name: canonical name, e.g. ``"60KV_AL35"``.
        kvp: tube voltage, kVp.
        aluminium_mm: aluminium filtration, mm.
        energies_kev: (E,) bin centres, keV.
        fluence: (E,) relative photon fluence per bin (SpekPy units, photons / cm^2 / keV at 1 m).
        weights: (E,) energy-integrating detector weights ``E * fluence``, normalised to sum 1.
    """

    name: str
    kvp: int
    aluminium_mm: float
    energies_kev: np.ndarray
    fluence: np.ndarray
    weights: np.ndarray


def parse_name(name: str) -> tuple[int, float]:
    """``"60KV_AL35"`` -> ``(60, 3.5)`` (kVp, mm of Al); any other form raises :class:`CT2XError`."""
    match = _NAME.match(str(name).strip().upper())
    if match is None:
        raise CT2XError(f"unknown X-ray spectrum {name!r}: {_FORM}")
    kvp, al_mm = int(match.group(1)), int(match.group(2)) / 10.0
    if not KVP_RANGE[0] <= kvp <= KVP_RANGE[1]:
        raise CT2XError(
            f"spectrum {name!r} asks for {kvp} kVp but the tube model covers {KVP_RANGE[0]}-{KVP_RANGE[1]} kVp: {_FORM}"
        )
    return kvp, al_mm


def get_spectrum(name: str = "60KV_AL35") -> Spectrum:
    """The spectrum called ``name`` (see the module docstring); cached per name (SpekPy is slow; its results are
    kept on disk too, :mod:`ct2x.drr.tube`)."""
    kvp, al_mm = parse_name(name)
    return _compute(kvp, al_mm)


@lru_cache(maxsize=16)
def _compute(kvp: int, al_mm: float) -> Spectrum:
    energies, fluence = spectrum(kvp, ANODE_ANGLE_DEG, al_mm, BIN_KEV)
    weights = energies * fluence
    keep = weights >= 1e-6 * weights.max()
    energies, fluence, weights = energies[keep], fluence[keep], weights[keep]
    weights = weights / weights.sum()
    for array in (energies, fluence, weights):
        array.setflags(write=False)
    name = f"{kvp}KV_AL{round(al_mm * 10)}"
    return Spectrum(name, kvp, al_mm, energies, fluence, weights)

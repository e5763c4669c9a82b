"""SpekPy's X-ray tube model (Poludniowski G. et al. 2021, *SpekPy v2.0*, Med Phys 48:3630), its results kept
on disk between processes.

Every spectrum and off-axis fluence of CT2X comes from here: the DRR's spectra (:mod:`ct2x.drr.spectrum`) and
the imaging chain's heel effect (:mod:`ct2x.imaging.beam`). SpekPy costs about 1.5 s in each new process before
its first answer (importing its data tables, then building its first model) and about 0.25 s for each further
tube, which a one-view ``ct2x drr`` would otherwise pay every time. So each result is stored once as a NumPy
``.npz`` (arrays only, read without pickle) in :func:`cache_folder`, in a folder of SpekPy's version, under a
name hashed from the call's arguments, which the file also holds and which must match when it is read back. A
file that cannot be read (damaged, another version's layout) is computed again and replaced; a folder that
cannot be written (a read-only home) only costs the time: the result is returned all the same.

Units: energies in keV, fluence in SpekPy's photons / cm^2 / keV / mAs at 1 m (its off-axis position and
distance in cm, as SpekPy takes them).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np

from ct2x.atomic import WriteError, atomic_path


def cache_folder() -> Path:
    """The folder SpekPy's results are kept in: ``$XDG_CACHE_HOME/ct2x/spekpy-<version>``, by default under
    ``~/.cache``. Delete it at any time: it is filled again as the results are needed."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "ct2x" / f"spekpy-{metadata.version('spekpy')}"


@lru_cache(maxsize=8)
def _tube(kvp: int, anode_angle_deg: float, aluminium_mm: float, bin_kev: float):  # noqa: ANN202 (a spekpy.Spek)
    """SpekPy's model of that tube, built once per process (about 0.25 s each) for the answers not on disk."""
    import spekpy

    tube = spekpy.Spek(kvp=kvp, th=anode_angle_deg, dk=bin_kev)
    if aluminium_mm > 0:
        tube.filter("Al", aluminium_mm)
    return tube


def spectrum(kvp: int, anode_angle_deg: float, aluminium_mm: float, bin_kev: float) -> tuple[np.ndarray, np.ndarray]:
    """SpekPy's spectrum of a tungsten-anode tube at ``kvp`` with an anode angle ``anode_angle_deg`` (degrees),
    filtered by ``aluminium_mm`` mm of aluminium, in bins of ``bin_kev``: ``(energies, fluence)``, each ``(E,)``
    float64 (bin centres, keV; photon fluence per bin on the central ray at 1 m)."""

    def compute() -> dict[str, np.ndarray]:
        energies, fluence = _tube(kvp, anode_angle_deg, aluminium_mm, bin_kev).get_spectrum()
        return {"energies": np.asarray(energies, np.float64), "fluence": np.asarray(fluence, np.float64)}

    result = _kept(("spectrum", kvp, anode_angle_deg, aluminium_mm, bin_kev), compute)
    return result["energies"], result["fluence"]


def off_axis_fluence(kvp: int, anode_angle_deg: float, aluminium_mm: float, bin_kev: float,
                     along_cm: np.ndarray, distance_cm: float) -> np.ndarray:  # fmt: skip
    """SpekPy's total photon fluence of that tube (as :func:`spectrum`) at ``distance_cm`` from the focus and
    ``along_cm`` (``(N,)``, cm) off the central ray along the anode-cathode axis (negative toward the anode),
    relative to the central ray's at that distance: the heel effect with the inverse square along that axis,
    ``(N,)`` float64."""
    along = tuple(float(x) for x in np.asarray(along_cm, np.float64))

    def compute() -> dict[str, np.ndarray]:
        tube = _tube(kvp, anode_angle_deg, aluminium_mm, bin_kev)
        fluence = np.array([tube.get_flu(x=x, y=0.0, z=distance_cm) for x in along])
        return {"relative": fluence / tube.get_flu(x=0.0, y=0.0, z=distance_cm)}

    return _kept(("off_axis", kvp, anode_angle_deg, aluminium_mm, bin_kev, along, distance_cm), compute)["relative"]


def _kept(key: tuple, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``compute()``'s arrays, read from :func:`cache_folder` when a file of ``key`` is there, else computed and
    stored (atomically; a folder that cannot be written, or no home folder to put it in, is passed over)."""
    text = repr(key)
    try:
        path = cache_folder() / f"{key[0]}-{hashlib.sha256(text.encode()).hexdigest()[:24]}.npz"
    except (RuntimeError, KeyError, metadata.PackageNotFoundError):  # no home folder, or SpekPy not installed
        return compute()
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["key"]) == text:
                return {name: stored[name] for name in stored.files if name != "key"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # absent, damaged, another layout
        pass
    result = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            np.savez(tmp, key=np.array(text), **result)
    except (OSError, WriteError):  # a read-only or full cache folder: the result stands, only the time is lost
        pass
    return result

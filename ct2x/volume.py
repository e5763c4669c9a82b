"""CT volumes in Hounsfield units with their physical placement in LPS.

A :class:`CTVolume` holds the voxels as SimpleITK lays them out, ``array[k, j, i]``
(slice, row, column), together with the voxel spacing (mm along i, j, k), the LPS
position of voxel ``(0, 0, 0)``'s centre, and the direction matrix whose columns are the
unit LPS directions of the i, j and k axes. ``ijk_to_lps`` maps a voxel index to its
centre in LPS millimetres; every resampled output keeps this so it can be put back into
the patient's space.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CTVolume:
    """A CT in HU with its voxel-to-LPS placement.

    Attributes:
        array: float32 HU, shape ``(K, J, I)`` = (slices, rows, columns).
        spacing: (3,) voxel size in mm along i, j, k.
        origin: (3,) LPS position (mm) of the centre of voxel ``(i, j, k) = (0, 0, 0)``.
        direction: (3, 3) columns = unit LPS directions of the i, j and k axes.
    """

    array: np.ndarray
    spacing: np.ndarray
    origin: np.ndarray
    direction: np.ndarray

    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        """Voxel counts along (i, j, k)."""
        k, j, i = self.array.shape
        return i, j, k

    @property
    def ijk_to_lps(self) -> np.ndarray:
        """4x4 affine from voxel index ``(i, j, k, 1)`` to its centre in LPS mm."""
        affine = np.eye(4)
        affine[:3, :3] = np.asarray(self.direction, dtype=np.float64) * np.asarray(self.spacing, dtype=np.float64)
        affine[:3, 3] = self.origin
        return affine

    @property
    def lps_to_ijk(self) -> np.ndarray:
        """4x4 affine from LPS mm to continuous voxel index ``(i, j, k)``."""
        return np.linalg.inv(self.ijk_to_lps)

    @property
    def corners_lps(self) -> np.ndarray:
        """(8, 3) LPS positions of the outer corners of the voxel grid (voxel edges, not centres), mm."""
        size = np.asarray(self.shape_ijk, dtype=np.float64)
        unit = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=np.float64)
        ijk = unit * size - 0.5
        return ijk @ self.ijk_to_lps[:3, :3].T + self.ijk_to_lps[:3, 3]

    @property
    def center_lps(self) -> np.ndarray:
        """Centre of the volume's bounding box, LPS mm (the default isocenter)."""
        return self.corners_lps.mean(axis=0)

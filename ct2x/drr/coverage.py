"""Which detector pixels see the whole CT: a ray that leaves the scanned body through the CT's first or last
slice crosses anatomy the scan does not hold (the dark bands at the ends of a field longer than the CT).

Frames and units:

* Rays are the DRR's (:func:`ct2x.drr.projector._rays`): from :attr:`CArm.source` to every
  :meth:`CArm.pixel_centers` (LPS mm), mapped into continuous voxel indices ``(i, j, k)`` by the CT's
  ``lps_to_ijk``; a ray is the segment ``source + t (pixel - source)``, ``t`` in [0, 1].
* The CT's box is its voxels' outer edges, indices ``-0.5 .. N - 0.5`` on each axis (the box the DRR
  marches through).
* The **long axis** is the voxel axis whose direction (a column of the CT's direction matrix, from its
  ``ijk_to_lps``) lies nearest the patient's superior axis S: the slice axis ``k`` of an axial CT, whatever
  the order or sign in which the file stores its axes.
* The **lateral prism** is the box on the two other axes, unbounded along the long axis; its ends are
  the planes of the first and last slices' outer faces (indices ``-0.5`` and ``N - 0.5`` on the long axis).

A ray is **covered** when its part inside the lateral prism lies between those two planes: it enters and
leaves the patient's cross-section within the scanned length. A ray that never enters the prism passes
beside the patient (air) and is covered too. Covered rays are exactly those whose whole path through the
(infinitely long) patient the CT holds; the others cross the prism beyond the CT's first or last slice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ct2x.drr.projector import _rays
from ct2x.errors import CT2XError
from ct2x.geometry import CArm
from ct2x.volume import CTVolume

#: Tolerance on the long axis, voxels: a ray that grazes an end plane (in float rounding) is covered.
_TOLERANCE_VOXELS = 1e-6


def coverage(volume: CTVolume, carms: CArm | Sequence[CArm]) -> torch.Tensor:
    """Per detector pixel, whether its ray crosses the CT's whole length (see the module docstring).

    Args:
        volume: the CT (only its placement and shape are read).
        carms: the views (one detector shape).

    Returns:
        ``(V, H, W)`` bool on the CPU, in image order; ``True`` = covered.
    """
    if not isinstance(volume, CTVolume):
        raise CT2XError(f"expected a ct2x.volume.CTVolume, got {type(volume).__name__}")
    views = [carms] if isinstance(carms, CArm) else list(carms)
    if not views or not all(isinstance(v, CArm) for v in views):
        raise CT2XError("give one or more ct2x.geometry.CArm views")
    shapes = {v.detector_shape for v in views}
    if len(shapes) != 1:
        raise CT2XError(f"the views must share one detector shape, got {sorted(shapes)}")
    long = volume.long_axis
    high = np.asarray(volume.shape_ijk, dtype=np.float64) - 0.5
    masks = []
    for view in views:  # one view at a time: the rays' float64 geometry stays one detector's
        sources, targets, _ = _rays(volume, [view])
        masks.append(_covered(sources, targets - sources, long, high).reshape(view.detector_shape))
    return torch.from_numpy(np.stack(masks))


def _covered(sources: np.ndarray, direction: np.ndarray, long: int, high: np.ndarray) -> np.ndarray:
    """Rays ``sources + t direction`` (voxel indices, ``t`` in [0, 1]) whose part inside the lateral prism
    (indices ``-0.5 .. high`` on the axes other than ``long``) lies within ``-0.5 .. high[long]`` on ``long``."""
    enter = np.zeros(len(sources))
    leave = np.ones(len(sources))
    for axis in (a for a in range(3) if a != long):
        start, step = sources[:, axis], direction[:, axis]
        with np.errstate(divide="ignore", invalid="ignore"):
            ta, tb = (-0.5 - start) / step, (high[axis] - start) / step
        parallel = step == 0
        inside = (start >= -0.5) & (start <= high[axis])
        # A ray parallel to a slab is inside it for every t (or for none).
        enter = np.maximum(enter, np.where(parallel, np.where(inside, -np.inf, np.inf), np.minimum(ta, tb)))
        leave = np.minimum(leave, np.where(parallel, np.where(inside, np.inf, -np.inf), np.maximum(ta, tb)))
    crosses = leave > enter
    # The long-axis position is linear in t: its extremes over [enter, leave] are at the two ends.
    first = sources[:, long] + np.where(crosses, enter, 0.0) * direction[:, long]
    last = sources[:, long] + np.where(crosses, leave, 0.0) * direction[:, long]
    low_end, high_end = np.minimum(first, last), np.maximum(first, last)
    within = (low_end >= -0.5 - _TOLERANCE_VOXELS) & (high_end <= high[long] + _TOLERANCE_VOXELS)
    return ~crosses | within

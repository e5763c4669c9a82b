"""A torch ray marcher: line integrals (sum) or maximum intensity projections (max) of a voxel field.

Frames and units:

* Rays go from :attr:`CArm.source` to every :meth:`CArm.pixel_centers` (LPS mm) and are
  mapped into continuous voxel indices ``(i, j, k)`` through ``CTVolume.lps_to_ijk``, so
  any direction matrix (flipped, permuted, oblique) is handled by the affine alone.
* Each ray is first clipped to the volume's bounding box (voxel edges, indices
  ``-0.5 .. N - 0.5``) by a ray–box (slab) intersection; rays that miss it get 0 (sum)
  or the field's minimum (max).
* Inside the box a ray of length ``L`` mm gets ``n = ceil(L / step_mm)`` samples at the
  midpoints of ``n`` equal sub-segments (so the actual step is at most the requested
  one, and a constant field integrates exactly), with ``step_mm = step * min(spacing)``.
* Samples are trilinear (``grid_sample``, ``align_corners=True`` so that -1/+1 are voxel
  centres) in the volume padded by one replicated voxel on each side, so the half-voxel
  rim inside the bounding box takes the edge voxel's value (each voxel is a cube).
* ``reduce="sum"`` returns ``sum(samples) * L / n`` = value x mm; ``reduce="max"`` the
  largest sample.

Memory: rays are processed in chunks whose sample tensors stay under ``memory_bytes``
(about ``(24 + 4 * C) * 2`` bytes per sample), independent of the detector size. The
padded field itself (``4 * C`` bytes per voxel) is held once per call in addition. On
the CPU each chunk is split across torch's threads through the batch dimension of
``grid_sample`` (which parallelises over the batch only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ct2x.errors import CT2XError
from ct2x.geometry import CArm
from ct2x.volume import CTVolume

#: Default working-memory budget of one chunk of samples, bytes.
DEFAULT_MEMORY_BYTES = 256 * 2**20
_RAYS_PER_UNIT = 256


def _bytes_per_sample(channels: int) -> int:
    # grid (3 floats) + parameter t and its temporaries (3 floats) + samples (C floats),
    # doubled for the transient copies torch makes while building and reducing them.
    return 2 * (4 * 3 + 4 * 3 + 4 * channels)


def _rays(volume: CTVolume, views: Sequence[CArm]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source and pixel positions in voxel index space (float64) and ray lengths in mm.

    Returns ``(sources (R, 3), targets (R, 3), lengths_mm (R,))`` with ``R = V * H * W``,
    rays ordered view by view, row by row.
    """
    lps_to_ijk = volume.lps_to_ijk
    sources, targets, lengths = [], [], []
    for view in views:
        pixels = view.pixel_centers().reshape(-1, 3)
        source = np.broadcast_to(view.source, pixels.shape)
        sources.append(source @ lps_to_ijk[:3, :3].T + lps_to_ijk[:3, 3])
        targets.append(pixels @ lps_to_ijk[:3, :3].T + lps_to_ijk[:3, 3])
        lengths.append(np.linalg.norm(pixels - source, axis=1))
    return np.concatenate(sources), np.concatenate(targets), np.concatenate(lengths)


def _clip_to_box(
    sources: np.ndarray, targets: np.ndarray, shape_ijk: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Ray parameters ``t0 <= t1`` in [0, 1] (source = 0, pixel = 1) where each ray is inside the box.

    Rays that miss the box get ``t0 == t1``.
    """
    direction = targets - sources
    low = np.full(3, -0.5)
    high = np.asarray(shape_ijk, dtype=np.float64) - 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        ta = (low - sources) / direction
        tb = (high - sources) / direction
    parallel = direction == 0
    inside = (sources >= low) & (sources <= high)
    # A ray parallel to a slab is inside it for every t (or for none).
    ta = np.where(parallel, np.where(inside, -np.inf, np.inf), ta)
    tb = np.where(parallel, np.where(inside, np.inf, -np.inf), tb)
    t0 = np.clip(np.minimum(ta, tb).max(axis=1), 0.0, 1.0)
    t1 = np.clip(np.maximum(ta, tb).min(axis=1), 0.0, 1.0)
    return t0, np.maximum(t1, t0)


def _chunks(counts: np.ndarray, max_samples: int) -> list[tuple[int, int, int]]:
    """Split rays (in order) into ``(start, stop, samples per ray)`` with ``rays x samples <= max_samples``."""
    total = len(counts)
    n_max = max(int(counts.max(initial=0)), 1)
    unit = max(1, min(_RAYS_PER_UNIT, max_samples // n_max))
    starts = np.arange(0, total, unit)
    unit_max = np.maximum.reduceat(counts, starts) if total else np.zeros(0, dtype=counts.dtype)
    chunks: list[tuple[int, int, int]] = []
    start, chunk_max = 0, 0
    for begin, n in zip(starts.tolist(), unit_max.tolist(), strict=True):
        candidate = max(chunk_max, n)
        if begin > start and (min(begin + unit, total) - start) * max(candidate, 1) > max_samples:
            chunks.append((start, begin, chunk_max))
            start, candidate = begin, n
        chunk_max = candidate
    if total:
        chunks.append((start, total, chunk_max))
    return chunks


def project(
    field: torch.Tensor,
    volume: CTVolume,
    views: Sequence[CArm],
    *,
    step: float = 0.1,
    reduce: Literal["sum", "max"] = "sum",
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> torch.Tensor:
    """March every pixel's ray through ``field`` and reduce the samples.

    Args:
        field: ``(C, K, J, I)`` or ``(K, J, I)`` float32 tensor laid out like
            ``volume.array`` (one channel per quantity, e.g. per material), on the
            device to compute on. Its placement is ``volume``'s.
        volume: gives the voxel-to-LPS placement (its ``array`` is not read).
        views: the C-arm views; all must share one detector shape.
        step: sampling step in voxels (of the smallest spacing); must be positive.
        reduce: ``"sum"`` for line integrals (value x mm), ``"max"`` for a MIP.
        memory_bytes: working-memory budget of one chunk of samples, bytes.

    Returns:
        ``(V, C, H, W)`` float32 (``(V, H, W)`` for a 3D ``field``) on ``field``'s device.
    """
    squeeze = field.dim() == 3
    if squeeze:
        field = field.unsqueeze(0)
    channels = field.shape[0]
    if tuple(field.shape[1:]) != tuple(volume.array.shape):
        raise CT2XError(
            f"the voxel field has shape {tuple(field.shape)} but the CT has {volume.array.shape}: "
            "give one value per voxel, laid out like volume.array"
        )
    shapes = {view.detector_shape for view in views}
    if len(shapes) != 1:
        raise CT2XError(f"the views have different detector sizes {sorted(shapes)}: render them in separate calls")
    (height, width), n_views = shapes.pop(), len(views)
    device = field.device

    sources, targets, lengths = _rays(volume, views)
    t0, t1 = _clip_to_box(sources, targets, volume.shape_ijk)
    step_mm = step * float(np.min(volume.spacing))
    inside_mm = (t1 - t0) * lengths
    counts = np.ceil(inside_mm / step_mm - 1e-9).astype(np.int64)
    counts[inside_mm <= 0] = 0

    # Normalised grid coordinates of the volume padded by one voxel: index -> 2 (index + 1) / (N + 1) - 1.
    sizes = np.asarray(volume.shape_ijk, dtype=np.float64)
    scale = 2.0 / (sizes + 1.0)
    origin = sources * scale + (scale - 1.0)
    direction = (targets - sources) * scale
    # A parameter value that puts a sample well outside the padded grid (zero padding => 0).
    t_far = (np.abs(origin).max(axis=1) + 3.0) / np.maximum(np.abs(direction).max(axis=1), 1e-12)

    offset = 0.0
    if reduce == "max":
        offset = float(field.min())
        field = field - offset  # >= 0 everywhere, so the zeros outside never win the max
    padded = F.pad(field.unsqueeze(0), (1, 1, 1, 1, 1, 1), mode="replicate")

    def as_tensor(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float32).to(device)

    origin_t, direction_t = as_tensor(origin), as_tensor(direction)
    t0_t, span_t, far_t = as_tensor(t0), as_tensor(t1 - t0), as_tensor(t_far)
    counts_t = torch.as_tensor(counts, device=device)
    weight_t = as_tensor(np.where(counts > 0, inside_mm / np.maximum(counts, 1), 0.0))

    batch = torch.get_num_threads() if device.type == "cpu" else 1
    max_samples = max(int(memory_bytes) // _bytes_per_sample(channels), 1)
    out = torch.empty(len(counts), channels, dtype=torch.float32, device=device)
    for start, stop, n in _chunks(counts, max_samples):
        rays = stop - start
        if n == 0:
            out[start:stop] = 0.0
            continue
        split = min(batch, rays)
        per = math.ceil(rays / split)
        pad = per * split - rays
        sl = slice(start, stop)
        k = torch.arange(n, device=device, dtype=torch.float32).unsqueeze(0)  # (1, n)
        count = counts_t[sl].unsqueeze(1).to(torch.float32)  # (R, 1)
        frac = (k + 0.5) / count.clamp_min(1.0)  # (R, n): midpoints of the n sub-segments
        t = torch.where(k < count, t0_t[sl, None] + frac * span_t[sl, None], far_t[sl, None])
        grid = torch.addcmul(origin_t[sl, None, :], t.unsqueeze(2), direction_t[sl, None, :])  # (R, n, 3)
        if pad:
            grid = torch.cat([grid, grid.new_full((pad, n, 3), 3.0)])
        samples = F.grid_sample(
            padded.expand(split, -1, -1, -1, -1),
            grid.view(split, 1, per, n, 3),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )  # (split, C, 1, per, n)
        reduced = samples.sum(dim=4) if reduce == "sum" else samples.amax(dim=4)
        reduced = reduced.squeeze(2).permute(0, 2, 1).reshape(split * per, channels)[:rays]
        out[sl] = reduced * weight_t[sl, None] if reduce == "sum" else reduced
    if reduce == "max":
        out = out + offset
    image = out.view(n_views, height, width, channels).permute(0, 3, 1, 2).contiguous()
    return image[:, 0] if squeeze else image

"""The ray marcher: line integrals (sum) or maximum intensity projections (max) of a voxel field.

Two backends compute the same samples and reductions: ``"numba"``, the compiled CPU
kernel of :mod:`ct2x.drr.kernel` (the fastest on a CPU), and ``"torch"``, the torch
marcher below (CPU or CUDA; the fallback where numba is missing). ``"auto"`` picks numba
on the CPU when it imports, else torch.

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
* Samples are trilinear in the volume padded by one replicated voxel on each side, so the
  half-voxel rim inside the bounding box takes the edge voxel's value (each voxel is a
  cube); ``grid_sample`` with ``align_corners=True`` and zeros outside. For
  ``reduce="sum"`` a trilinear sample at padded index ``(i, j, k)`` is the lerp, by
  ``k - floor(k)``, of two bilinear samples (2D ``grid_sample``) at ``(i, j)`` in the
  padded slices ``floor(k)`` and ``floor(k) + 1``: torch's 2D CPU kernel is vectorised,
  its 3D one is not. The padded slices are tiled into one channels-last 2D "atlas",
  ``m + 1`` slices per tile row with row ``r`` holding slices ``r m .. r m + m`` (the
  last slice of a row repeats as the first of the next), so both slices of a sample sit
  side by side in one row; samples inside the box never reach a neighbouring tile.
  ``reduce="max"`` samples the padded volume with 3D ``grid_sample`` (see :func:`_max_sampler`).
* ``reduce="sum"`` returns ``sum(samples) * L / n`` = value x mm; ``reduce="max"`` the
  largest sample.

Memory (torch backend): rays are processed in chunks whose sample tensors stay under ``memory_bytes``
(about ``4 * (16 + 2 * C)`` bytes per sample), independent of the detector size; rays
are sorted by sample count first so that a chunk wastes few samples on its shorter
rays. The atlas or padded volume (``4 * C`` bytes per padded voxel, plus about one slice
in ``sqrt(K)`` repeated in the atlas) is held once per call in addition. On the CPU each chunk is split
across torch's threads through the batch dimension of ``grid_sample`` (which
parallelises over the batch only).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
#: Ray-marching backends (``"auto"``: the fastest available on the device).
MARCHERS = ("numba", "torch", "auto")
Marcher = Literal["numba", "torch", "auto"]
#: ``(first, stride, counts, weight)`` of every ray (see :func:`ray_samples`).
Samples = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _bytes_per_sample(channels: int) -> int:
    # position (3 floats) + slice, row and column (3) + two 2D grid points (4) + lerp
    # weights and mask (3) + two bilinear samples (2 C), with some slack for temporaries.
    return 4 * (16 + 2 * channels)


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


def ray_samples(volume: CTVolume, views: Sequence[CArm], step: float) -> Samples:
    """Where every ray is sampled: ``(first (R, 3), stride (R, 3), counts (R,), weight (R,))``.

    Sample ``s = 0 .. counts - 1`` of a ray is at voxel index ``first + s * stride``
    (``(i, j, k)``, float64): the midpoints of ``counts`` equal sub-segments of the ray's
    part inside the volume's box, each ``weight`` mm long (``counts = ceil(length /
    step_mm)`` with ``step_mm = step x`` the smallest spacing; 0 and weight 0 for a ray
    that misses the box). Rays are ordered view by view, row by row.
    """
    sources, targets, lengths = _rays(volume, views)
    t0, t1 = _clip_to_box(sources, targets, volume.shape_ijk)
    step_mm = step * float(np.min(volume.spacing))
    inside_mm = (t1 - t0) * lengths
    counts = np.ceil(inside_mm / step_mm - 1e-9).astype(np.int64)
    counts[inside_mm <= 0] = 0
    direction = targets - sources
    stride = direction * ((t1 - t0) / np.maximum(counts, 1))[:, None]
    first = sources + t0[:, None] * direction + 0.5 * stride
    weight = np.where(counts > 0, inside_mm / np.maximum(counts, 1), 0.0)
    return first, stride, counts, weight


def numba_available() -> bool:
    """Whether the compiled CPU kernel can be used (numba imports)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


_warned_fallback = False


def resolve_backend(backend: str, device: torch.device) -> Literal["numba", "torch"]:
    """The marcher for ``backend`` on ``device``: ``"auto"`` is numba on the CPU when it imports, else torch.

    Without numba, ``"auto"`` on the CPU falls back to torch with one warning per process;
    ``"numba"`` asked for explicitly without it, or on a GPU, is an error.
    """
    global _warned_fallback
    if backend not in MARCHERS:
        raise CT2XError(f"unknown ray-marching backend {backend!r}: use one of {', '.join(MARCHERS)}")
    if backend == "torch" or (backend == "auto" and device.type != "cpu"):
        return "torch"
    if device.type != "cpu":
        raise CT2XError(f"backend 'numba' renders on the CPU only, not on {device.type!r}: use backend='torch'")
    if numba_available():
        return "numba"
    if backend == "numba":
        raise CT2XError("backend 'numba' needs the numba package: run `pip install numba`, or use backend='torch'")
    if not _warned_fallback:
        _warned_fallback = True
        warnings.warn(
            "numba is not installed, so DRRs use the slower torch marcher: `pip install numba` for the fast CPU kernel",
            stacklevel=2,
        )
    return "torch"


@contextmanager
def numba_threads() -> Iterator[None]:
    """Run numba's parallel loops on as many threads as torch uses, then restore both counts: numba's OpenMP
    runtime is torch's, so setting numba's count back also sets torch's (torch at 1 thread would leave at 2)."""
    import numba

    threads = torch.get_num_threads()  # first: numba's first call starts its OpenMP pool, which resets torch's
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(previous)
        torch.set_num_threads(threads)


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


def _atlas_layout(shape_ijk: tuple[int, int, int]) -> int:
    """Slices ``m`` per atlas tile row (``m + 1`` tiles wide) that make its ``m``-tile views most nearly square."""
    ni, nj, nk = shape_ijk

    def side(m: int) -> int:
        return max(m * (ni + 2), (nk // m + 1) * (nj + 2))

    return min(range(1, nk + 2), key=side)


def _atlas(field: torch.Tensor, m: int) -> torch.Tensor:
    """The ``(C, K, J, I)`` field padded by one replicated voxel and tiled into ``(1, C, rows (J+2), (m+1) (I+2))``.

    Tile ``(r, c)`` holds padded slice ``r m + c`` (zeros past the last one). The atlas is
    channels-last, so the channels of one texel share a cache line.
    """
    channels, nk, nj, ni = field.shape
    rows = nk // m + 1
    atlas = field.new_zeros(rows, nj + 2, m + 1, ni + 2, channels)
    for r in range(rows):
        slices = torch.arange(r * m, min(r * m + m, nk + 1) + 1, device=field.device)
        source = field.index_select(1, (slices - 1).clamp(0, nk - 1))  # padded slice s = field slice s - 1
        atlas[r, 1:-1, : len(slices), 1:-1] = source.permute(2, 1, 3, 0)
    atlas[..., 0, :], atlas[..., -1, :] = atlas[..., 1, :], atlas[..., -2, :]
    atlas[:, 0], atlas[:, -1] = atlas[:, 1], atlas[:, -2]
    return atlas.view(1, rows * (nj + 2), (m + 1) * (ni + 2), channels).permute(0, 3, 1, 2)


def project(
    field: torch.Tensor,
    volume: CTVolume,
    views: Sequence[CArm],
    *,
    step: float = 0.1,
    reduce: Literal["sum", "max"] = "sum",
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    backend: Marcher = "auto",
    labels: torch.Tensor | None = None,
    channels: int = 1,
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
        memory_bytes: working-memory budget of one chunk of samples, bytes (torch backend).
        backend: ``"numba"`` (CPU only), ``"torch"`` or ``"auto"`` (see :func:`resolve_backend`).
        labels: ``(K, J, I)`` integer channel per voxel in ``0 .. channels - 1`` (sums only):
            ``field`` is then ``(K, J, I)`` and each voxel's value counts in its label's
            channel, 0 in the others (how the DRR's per-material densities are given).

    Returns:
        ``(V, C, H, W)`` float32 (``(V, H, W)`` for a 3D ``field``) on ``field``'s device.
    """
    squeeze = field.dim() == 3 and labels is None
    if field.dim() == 3:
        field = field.unsqueeze(0)
    if labels is None:
        channels = field.shape[0]
    elif reduce != "sum" or field.shape[0] != 1 or labels.shape != field.shape[1:]:
        raise CT2XError("labels go with a (K, J, I) field of the same shape, for line integrals")
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

    samples = ray_samples(volume, views, step)
    if resolve_backend(backend, device) == "numba":
        out = _march_numba(field, samples, reduce, labels, channels)
    else:
        if labels is not None:  # one channel per label, zero elsewhere
            field = torch.stack([torch.where(labels == c, field[0], 0.0) for c in range(channels)])
        out = _march_torch(field, volume.shape_ijk, samples, reduce, memory_bytes)
    image = out.view(n_views, height, width, channels).permute(0, 3, 1, 2).contiguous()
    return image[:, 0] if squeeze else image


def _march_numba(
    field: torch.Tensor, samples: Samples, reduce: Literal["sum", "max"], labels: torch.Tensor | None, channels: int
) -> torch.Tensor:
    """``(R, C)`` reductions of a CPU ``(C, K, J, I)`` field (or labelled ``(1, K, J, I)``) by the compiled kernel."""
    from ct2x.drr import kernel

    cells = field.permute(1, 2, 3, 0).contiguous().numpy()  # (K, J, I, C): channels last
    with numba_threads():
        if labels is None:
            out = kernel.project(cells, samples, reduce == "max")
        else:
            out = kernel.project(cells, samples, False, labels.to(torch.uint8).numpy(), channels)
    if reduce == "max":
        out[samples[2] == 0] = float(field.min())
    return torch.from_numpy(out)


#: ``sample(first (B, 3), stride (B, 3), k (n,), past (B, n), split)``: the samples ``(split, C, B / split, n)``
#: of ``B`` rays at steps ``k``, 0 where ``past`` a ray's end; the rays' ``first`` and ``stride`` are in
#: the sampler's own coordinates (returned by :func:`_max_sampler` / :func:`_sum_sampler`).
Sampler = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def _march_torch(
    field: torch.Tensor,
    shape_ijk: tuple[int, int, int],
    samples: Samples,
    reduce: Literal["sum", "max"],
    memory_bytes: int,
) -> torch.Tensor:
    """``(R, C)`` reductions of a ``(C, K, J, I)`` field (CPU or CUDA) by chunked ``grid_sample`` calls.

    Line integrals sample a 2D atlas of the slices (:func:`_sum_sampler`), maxima the padded
    volume in 3D (:func:`_max_sampler`); :func:`_reduce_chunks` walks the rays.
    """
    first, stride, counts, weight = samples
    first = first + 1.0  # padded index = voxel index + 1
    offset = 0.0
    if reduce == "max":
        offset = float(field.min())  # >= 0 everywhere after, so the zeros outside never win the max
        first, stride, sample = _max_sampler(field - offset, shape_ijk, first, stride)
    else:
        first, stride, sample = _sum_sampler(field, shape_ijk, first, stride, counts)
    out = _reduce_chunks(sample, first, stride, counts, reduce, field.shape[0], memory_bytes, field.device)
    if reduce == "max":
        return out + offset
    return out * torch.as_tensor(weight, dtype=torch.float32).to(field.device)[:, None]


def _max_sampler(
    field: torch.Tensor, shape_ijk: tuple[int, int, int], first: np.ndarray, stride: np.ndarray
) -> tuple[np.ndarray, np.ndarray, Sampler]:
    """3D ``grid_sample`` of the ``(C, K, J, I)`` field (>= 0) padded by one replicated voxel.

    ``first``, ``stride``: padded voxel indices ``(i, j, k)``, returned as ``grid_sample``'s
    normalised coordinates. Maxima keep the 3D sampler: a maximum picks up single samples,
    and the atlas's large coordinates (~sqrt(K) tiles) leave float32 fewer bits for the
    fraction of a voxel.
    """
    padded = F.pad(field.unsqueeze(0), (1, 1, 1, 1, 1, 1), mode="replicate")
    scale = 2.0 / (np.asarray(shape_ijk, dtype=np.float64) + 1.0)  # padded index -> [-1, 1]

    def sample(
        ray_first: torch.Tensor, ray_stride: torch.Tensor, k: torch.Tensor, past: torch.Tensor, split: int
    ) -> torch.Tensor:
        per, n = len(ray_first) // split, len(k)
        grid = torch.addcmul(ray_first[:, None], k[:, None], ray_stride[:, None])  # (B, n, 3)
        grid.masked_fill_(past.unsqueeze(2), 3.0)  # outside the padded grid: 0
        return F.grid_sample(
            padded.expand(split, -1, -1, -1, -1),
            grid.view(split, 1, per, n, 3),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )[:, :, 0]

    return first * scale - 1.0, stride * scale, sample


def _sum_sampler(
    field: torch.Tensor, shape_ijk: tuple[int, int, int], first: np.ndarray, stride: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, Sampler]:
    """Trilinear samples of the ``(C, K, J, I)`` field as the lerp of two bilinear samples of its atlas.

    The atlas (:func:`_atlas`, ``m + 1`` tiles per row) is read through two views ``m``
    tiles wide, the second shifted right by one tile: the same grid point then reads slice
    ``s`` in the first and slice ``s + 1`` in the second. ``first``, ``stride`` (padded
    voxel indices ``(i, j, k)``) are returned with ``i`` and ``j`` as normalised coordinates
    of tile ``(0, 0)`` of a view (index -> 2 index / (size - 1) - 1) and ``k`` unchanged;
    each slice ``s = floor(k)`` gets its tile's offset.
    """
    ni, nj, nk = shape_ijk
    m = _atlas_layout(shape_ijk)
    atlas = _atlas(field, m)
    slices = (atlas[..., : m * (ni + 2)], atlas[..., ni + 2 :])
    view_h, view_w = slices[0].shape[2:]
    scale = np.array([2.0 / (view_w - 1), 2.0 / (view_h - 1), 1.0])
    first, stride = first * scale - np.array([1.0, 1.0, 0.0]), stride * scale
    # Tile offsets as complex numbers x + i y (one gather per sample); slice nk + 1
    # marks the samples past their ray's end and sends them off the atlas (samples 0).
    tile = np.arange(nk + 1)
    far = 4.0 + np.abs(first[:, :2]).max(initial=0.0)
    far += counts.max(initial=0) * np.abs(stride[:, :2]).max(initial=0.0)
    tiles = np.append(tile % m * (ni + 2) * scale[0] + 1j * (tile // m * (nj + 2) * scale[1]), far * (1 + 1j))
    tiles_t = torch.as_tensor(tiles, dtype=torch.complex64).to(field.device)

    def sample(
        ray_first: torch.Tensor, ray_stride: torch.Tensor, k: torch.Tensor, past: torch.Tensor, split: int
    ) -> torch.Tensor:
        per, n = len(ray_first) // split, len(k)
        depth = torch.addcmul(ray_first[:, 2:], ray_stride[:, 2:], k)  # (B, n) padded slice coordinate
        slice0 = depth.long().masked_fill_(past, nk + 1)  # floor(depth) (depth > 0 inside the box)
        frac = depth.sub_(slice0).view(split, 1, per, n)
        grid = tiles_t.take(slice0)  # (B, n) complex: x + i y
        grid += torch.view_as_complex(ray_first[:, :2].contiguous())[:, None]
        grid.addcmul_(k, torch.view_as_complex(ray_stride[:, :2].contiguous())[:, None])
        grid = torch.view_as_real(grid).view(split, per, n, 2)
        lower, upper = (
            F.grid_sample(
                image.expand(split, -1, -1, -1), grid, mode="bilinear", padding_mode="zeros", align_corners=True
            )
            for image in slices
        )
        return lower.lerp_(upper, frac)

    return first, stride, sample


def _reduce_chunks(
    sample: Sampler,
    first: np.ndarray,
    stride: np.ndarray,
    counts: np.ndarray,
    reduce: Literal["sum", "max"],
    channels: int,
    memory_bytes: int,
    device: torch.device,
) -> torch.Tensor:
    """``(R, C)`` sums or maxima of every ray's samples (sums unweighted), in chunks of rays sorted by
    sample count whose samples stay under ``memory_bytes``; on the CPU each chunk is split into one
    batch per torch thread."""

    # One extra ray (index R, no samples) pads chunks to a multiple of the thread count.
    def as_tensor(a: np.ndarray) -> torch.Tensor:
        a = np.concatenate([a, np.zeros((1,) + a.shape[1:], dtype=a.dtype)])
        return torch.as_tensor(a, dtype=torch.float32 if a.dtype == np.float64 else None).to(device)

    first_t, stride_t, counts_t = as_tensor(first), as_tensor(stride), as_tensor(counts)
    order = np.argsort(counts, kind="stable")
    order_t = torch.as_tensor(order, device=device)
    counts = counts[order]
    steps = torch.arange(max(int(counts.max(initial=0)), 1), device=device, dtype=torch.float32)
    batch = torch.get_num_threads() if device.type == "cpu" else 1
    max_samples = max(int(memory_bytes) // _bytes_per_sample(channels), 1)
    out = torch.zeros(len(counts) + 1, channels, dtype=torch.float32, device=device)
    for start, stop, n in _chunks(counts, max_samples):
        rays = stop - start
        if n == 0:
            continue
        split = min(batch, rays)
        per = math.ceil(rays / split)
        index = order_t[start:stop]
        if per * split > rays:
            index = torch.cat([index, index.new_full((per * split - rays,), len(counts))])
        k = steps[:n]
        values = sample(first_t[index], stride_t[index], k, k >= counts_t[index, None], split)  # (split, C, per, n)
        reduced = values.sum(dim=3) if reduce == "sum" else values.amax(dim=3)  # (split, C, per)
        out[index[:rays]] = reduced.transpose(1, 2).reshape(split * per, channels)[:rays]
    return out[:-1]

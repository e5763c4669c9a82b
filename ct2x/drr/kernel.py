"""The compiled CPU ray marcher (numba): line integrals and MIPs with the torch marcher's sampling.

It computes what :func:`ct2x.drr.projector.project` defines, the rays shared among
numba's threads (one ray per loop iteration):

* **Samples**: ray ``r`` has ``counts[r]`` samples at continuous voxel indices
  ``first[r] + s * stride[r]``, ``s = 0 .. counts[r] - 1`` (``(i, j, k)`` order, the
  midpoints of equal sub-segments of the ray's part inside the volume's box; computed by
  :func:`ct2x.drr.projector.ray_samples`).
* **Trilinear**: a sample at ``x`` reads voxels ``floor(x)`` and ``floor(x) + 1`` on each
  axis, clamped to the volume (the half-voxel rim takes the edge voxel, as the torch
  marcher's replicated padding does).
* **Cell walk**: both reductions walk each ray's cells with one 3D DDA, set up at the ray's
  first sample that may touch the active box (:func:`_ray_start`, see *Empty space*) and moved
  on to the cell of the current sample (:func:`_ray_step`), which also gives the first sample
  past that cell and the flat offsets of its eight corners.
* **Sums, a cell at a time** (:func:`_integrate`): a trilinear sample is
  ``sum_c w_c(X, Y, Z) v_c`` over the eight corners ``c`` of its cell, with ``(X, Y, Z)``
  the fractional position and ``w_c`` products of ``X`` or ``1 - X`` (likewise Y, Z).
  Along the ray ``X = X_0 + u d_x`` for the ``m`` consecutive samples ``u = 0 .. m - 1``
  that fall in one cell, so the sum of those samples is ``sum_c W_c v_c`` with ``W_c`` the
  sum over ``u`` of the cubic ``w_c``, in closed form: about the cell's mean sample the odd
  central moments of ``u`` vanish, so a sum of products of ``X, Y, Z`` is ``m`` times the product
  at the mean plus ``m(m^2-1)/12`` times products of two steps ``d``. Every cell a ray crosses costs one
  evaluation, however many samples fall in it (about ten at the default step of 0.1
  voxel), and the result is the sum of the samples themselves, not an approximation of it
  (it differs from sample-by-sample summation by float rounding only; the tests hold it
  to 1e-4 of the torch marcher). ``m`` comes from the sample index at which the ray next
  crosses a cell face; a sample lying on a face to within rounding may be counted in
  either cell, which changes nothing since the trilinear field is continuous there.
* **Labelled fields**: the DRR's per-material densities are zero except in one channel
  per voxel, so the kernel also takes one density per voxel plus a label naming its
  channel (:func:`material_cells`): 5 bytes a voxel instead of 12, and one product per
  corner instead of three. The label's top bit (:data:`UNIFORM`, :func:`cell_labels`) marks
  the voxels whose cell (the voxel and its seven neighbours up each axis) holds one
  material, as about nine cells in ten of a CT do: there the walk reads that one byte
  instead of the eight corners' labels.
* **Maxima, a sample at a time** (:func:`_maximum`): the eight corners of the current
  cell stay in registers while consecutive samples fall in the same cell.
* **Empty space**: a sample whose eight corners all lie outside the *active box* (the
  bounding box of the voxels unlike voxel ``(0, 0, 0)``, the *background*) equals the
  background exactly. Each ray's samples are split analytically into a run that may touch
  the active box, which is computed, and the rest, which is added as ``background x
  count`` (sum) or included once (max) without being visited. A CT padded with constant
  air (e.g. the model's resampled grid) costs nothing outside the body.
* **Reductions**: sums accumulate in float64 and return ``sum * weight[r]`` (the
  sub-segment length in mm); maxima the largest sample.

Fields are ``(K, J, I, C)`` float32, C-contiguous (channels last, so one voxel's
channels share a cache line), labels ``(K, J, I)`` uint8. Compiled on first use and
cached on disk (numba's ``cache=True``: beside this file, or in numba's per-user cache
folder where that is not writable); :func:`warm_up` compiles ahead of time.
"""

from __future__ import annotations

import math

import numba
import numpy as np

#: Stands for "no labels": each channel of the field is its own output channel.
NO_LABELS = np.zeros((0, 0, 0), dtype=np.uint8)
#: The bit of a cell label (:func:`cell_labels`) that marks a cell whose eight corners share one label.
UNIFORM = np.uint8(0x80)
#: The label bits of a cell label.
LABEL = np.uint8(0x7F)


@numba.njit(cache=True, nogil=True)
def _inner_range(f0: float, d: float, lo: int, hi: int, n: int) -> tuple[int, int]:
    """Samples ``s`` in ``[0, n)`` where ``lo - 1 < f0 + s d < hi + 1`` may hold, one extra at each end."""
    if d == 0.0:
        return (0, n) if lo - 1.0 < f0 < hi + 1.0 else (0, 0)
    a, b = (lo - 1.0 - f0) / d, (hi + 1.0 - f0) / d
    if a > b:
        a, b = b, a
    start = max(0, int(math.floor(a)))
    stop = min(n, int(math.ceil(b)) + 1)
    return (start, stop) if stop > start else (0, 0)


@numba.njit(cache=True, nogil=True)
def _active_range(first: np.ndarray, stride: np.ndarray, n: int, lo: np.ndarray, hi: np.ndarray) -> tuple[int, int]:
    """The samples of one ray that may touch the active box ``lo .. hi`` (voxel indices, i j k)."""
    start, stop = 0, n
    for axis in range(3):
        a, b = _inner_range(first[axis], stride[axis], lo[axis], hi[axis], n)
        start, stop = max(start, a), min(stop, b)
    return (start, stop) if stop > start else (0, 0)


@numba.njit(parallel=True, cache=True, nogil=True)
def _row_extents(field: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row ``(k, j)``: first and last ``i`` whose value or label (:data:`LABEL` bits) differs from voxel 0's
    (``I``, -1 if none)."""
    nk, nj, ni, nc = field.shape
    labelled = labels.shape[0] > 0
    first = np.full((nk, nj), ni, dtype=np.int64)
    last = np.full((nk, nj), -1, dtype=np.int64)
    for k in numba.prange(nk):
        for j in range(nj):
            for i in range(ni):
                differs = labelled and (labels[k, j, i] & LABEL) != (labels[0, 0, 0] & LABEL)
                for c in range(nc):
                    differs = differs or field[k, j, i, c] != field[0, 0, 0, c]
                if differs:
                    first[k, j] = min(first[k, j], i)
                    last[k, j] = i
    return first, last


def active_box(field: np.ndarray, labels: np.ndarray = NO_LABELS) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)``: index bounds ``(i, j, k)`` of the voxels unlike voxel 0 (in value or in ``labels & LABEL``);
    ``lo > hi`` if there are none."""
    first, last = _row_extents(field, labels)
    rows = last >= 0
    if not rows.any():
        return np.zeros(3, dtype=np.int64), np.full(3, -1, dtype=np.int64)
    ks, js = np.nonzero(rows)
    lo = np.array([first[rows].min(), js.min(), ks.min()], dtype=np.int64)
    hi = np.array([last[rows].max(), js.max(), ks.max()], dtype=np.int64)
    return lo, hi


@numba.njit(cache=True, nogil=True, inline="always")
def _cell_end(t_face: float, d: float, n: int) -> int:
    """The first sample index past a cell whose exit face the ray reaches at sample parameter ``t_face`` (<= ``n``).

    Moving up an axis (``d > 0``) the samples ``s < t_face`` are inside; moving down, ``s <= t_face``.
    """
    if d == 0.0 or t_face >= n:
        return n
    return int(math.ceil(t_face)) if d > 0.0 else int(math.floor(t_face)) + 1


@numba.njit(cache=True, nogil=True, inline="always")
def _planes(cell: int, size: int, stride: int) -> tuple[int, int]:
    """Flat offsets of the voxel planes ``cell`` and ``cell + 1`` along one axis, clamped to the volume."""
    return min(max(cell, 0), size - 1) * stride, min(max(cell + 1, 0), size - 1) * stride


#: One axis of the cell walk (a 3D DDA): ``(cell, t_face, per_cell, end, planes)``, the cell index
#: holding the current sample, the sample parameter of its exit face and that parameter's step per
#: cell, the first sample past the cell, and the flat offsets of its two corner planes
#: (:func:`_planes`).
Axis = tuple[int, float, float, int, tuple[int, int]]


@numba.njit(cache=True, nogil=True, inline="always")
def _axis_at(f: float, d: float, s: int, n: int, size: int, stride: int) -> Axis:
    """One axis of the walk at sample ``s`` of ``n``, for a ray at ``f + s d`` on an axis of ``size`` voxels."""
    cell = int(math.floor(f + s * d))
    planes = _planes(cell, size, stride)
    if d == 0.0:
        return cell, np.inf, np.inf, n, planes
    t_face = ((cell + 1.0 - f) if d > 0.0 else (cell - f)) / d
    return cell, t_face, abs(1.0 / d), _cell_end(t_face, d, n), planes


@numba.njit(cache=True, nogil=True, inline="always")
def _axis_to(axis: Axis, d: float, s: int, n: int, size: int, stride: int) -> Axis:
    """``axis`` moved on to the cell that holds sample ``s`` (unchanged while ``s`` is still in its cell)."""
    cell, t_face, per_cell, end, planes = axis
    if end > s:
        return axis
    while end <= s:
        cell += 1 if d > 0.0 else -1
        t_face += per_cell
        end = _cell_end(t_face, d, n)
    return cell, t_face, per_cell, end, _planes(cell, size, stride)


@numba.njit(cache=True, nogil=True)
def _ray_start(
    first: np.ndarray, stride: np.ndarray, n: int, lo: np.ndarray, hi: np.ndarray, shape: tuple[int, int, int]
) -> tuple[int, int, tuple[Axis, Axis, Axis]]:
    """Set up one ray's walk: ``(start, stop, axes)``, the samples ``start .. stop - 1`` of ``n`` that may
    touch the active box ``lo .. hi`` and the walk's ``(i, j, k)`` axes at ``start``.

    ``first``, ``stride``: the ray's first sample and step (voxel indices ``i j k``); ``shape``: ``(I, J, K)``.
    """
    start, stop = _active_range(first, stride, n, lo, hi)
    ni, nj, nk = shape
    axes = (
        _axis_at(first[0], stride[0], start, stop, ni, 1),
        _axis_at(first[1], stride[1], start, stop, nj, ni),
        _axis_at(first[2], stride[2], start, stop, nk, ni * nj),
    )
    return start, stop, axes


@numba.njit(cache=True, nogil=True, inline="always")
def _ray_step(
    axes: tuple[Axis, Axis, Axis],
    stride: tuple[float, float, float],
    s: int,
    stop: int,
    shape: tuple[int, int, int],
) -> tuple[tuple[Axis, Axis, Axis], int]:
    """The walk moved on to the cell that holds sample ``s``: ``(axes, end)``, with samples ``s .. end - 1`` in it.

    ``stride``: the ray's step ``(i, j, k)``; ``shape``: ``(I, J, K)``.
    """
    ni, nj, nk = shape
    a = _axis_to(axes[0], stride[0], s, stop, ni, 1)
    b = _axis_to(axes[1], stride[1], s, stop, nj, ni)
    c = _axis_to(axes[2], stride[2], s, stop, nk, ni * nj)
    return (a, b, c), min(a[3], b[3], c[3])


@numba.njit(cache=True, nogil=True, inline="always")
def _cell_weights(
    m: int, px: float, py: float, pz: float, di: float, dj: float, dk: float
) -> tuple[float, float, float, float, float, float, float, float]:
    """``W_q``: the trilinear weights of corner ``q`` summed over the ``m`` samples ``(X, Y, Z) = p + u d``,
    ``u = 0 .. m - 1``, of one cell, with the corner's ``(i, j, k)`` offsets as bits 0, 1, 2 of ``q``."""
    # About the cell's mean sample (x, y, z) = p + (m - 1) / 2 d the odd central moments of u vanish, so each
    # sum of a product of (X, Y, Z) is m times the product at the mean plus v = m (m^2 - 1) / 12 (the second
    # central moment's sum) times the products of two of the steps.
    half = (m - 1) * 0.5
    x, y, z = px + di * half, py + dj * half, pz + dk * half
    v = m * (m * m - 1) * (1.0 / 12.0)
    vxy, vxz, vyz = v * di * dj, v * di * dk, v * dj * dk
    gx, gy, gz = m * x, m * y, m * z
    gxy, gxz, gyz = gx * y + vxy, gx * z + vxz, gy * z + vyz
    gxyz = gxy * z + vxz * y + vyz * x
    w7, w3, w5, w6 = gxyz, gxy - gxyz, gxz - gxyz, gyz - gxyz
    w1, w2, w4 = gx - gxy - gxz + gxyz, gy - gxy - gyz + gxyz, gz - gxz - gyz + gxyz
    w0 = m - gx - gy - gz + gxy + gxz + gyz - gxyz
    return w0, w1, w2, w3, w4, w5, w6, w7


@numba.njit(parallel=True, cache=True, nogil=True)
def _integrate(
    field: np.ndarray,
    labels: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    first: np.ndarray,
    stride: np.ndarray,
    counts: np.ndarray,
    weight: np.ndarray,
    out: np.ndarray,
) -> None:
    """Line integrals: ``out[r, c] = weight[r] x`` the sum of ray ``r``'s samples of channel ``c`` (see above).

    With ``labels``, ``field`` has one channel and a voxel's value counts in channel ``labels[voxel]``.
    """
    nk, nj, ni, nc = field.shape
    shape = (ni, nj, nk)
    labelled = labels.shape[0] > 0
    values = field.reshape(-1, nc)
    flat_labels = labels.reshape(-1)
    for r in numba.prange(counts.shape[0]):
        n = counts[r]
        start, stop, axes = _ray_start(first[r], stride[r], n, lo, hi, shape)
        acc = np.zeros(out.shape[1], dtype=np.float64)
        outside = n - (stop - start)
        if labelled:
            acc[flat_labels[0] & LABEL] = outside * np.float64(values[0, 0])
        else:
            for c in range(nc):
                acc[c] = outside * np.float64(values[0, c])
        fi, fj, fk = first[r, 0], first[r, 1], first[r, 2]
        di, dj, dk = stride[r, 0], stride[r, 1], stride[r, 2]
        s = start
        while s < stop:
            axes, end = _ray_step(axes, (di, dj, dk), s, stop, shape)
            ci, cj, ck = axes[0][0], axes[1][0], axes[2][0]
            (ia, ib), (ja, jb), (ka, kb) = axes[0][4], axes[1][4], axes[2][4]
            m = end - s
            px, py, pz = fi + s * di - ci, fj + s * dj - cj, fk + s * dk - ck
            w0, w1, w2, w3, w4, w5, w6, w7 = _cell_weights(m, px, py, pz, di, dj, dk)
            q0, q1, q2, q3 = ka + ja + ia, ka + ja + ib, ka + jb + ia, ka + jb + ib
            q4, q5, q6, q7 = kb + ja + ia, kb + ja + ib, kb + jb + ia, kb + jb + ib
            if not labelled:
                for c in range(nc):
                    acc[c] += (
                        w0 * values[q0, c] + w1 * values[q1, c] + w2 * values[q2, c] + w3 * values[q3, c]
                        + w4 * values[q4, c] + w5 * values[q5, c] + w6 * values[q6, c] + w7 * values[q7, c]
                    )  # fmt: skip
                s += m
                continue
            lab = flat_labels[q0]
            if lab & UNIFORM:
                acc[lab & LABEL] += (
                    w0 * values[q0, 0] + w1 * values[q1, 0] + w2 * values[q2, 0] + w3 * values[q3, 0]
                    + w4 * values[q4, 0] + w5 * values[q5, 0] + w6 * values[q6, 0] + w7 * values[q7, 0]
                )  # fmt: skip
            else:  # a cell across a material boundary
                acc[lab] += w0 * values[q0, 0]
                acc[flat_labels[q1] & LABEL] += w1 * values[q1, 0]
                acc[flat_labels[q2] & LABEL] += w2 * values[q2, 0]
                acc[flat_labels[q3] & LABEL] += w3 * values[q3, 0]
                acc[flat_labels[q4] & LABEL] += w4 * values[q4, 0]
                acc[flat_labels[q5] & LABEL] += w5 * values[q5, 0]
                acc[flat_labels[q6] & LABEL] += w6 * values[q6, 0]
                acc[flat_labels[q7] & LABEL] += w7 * values[q7, 0]
            s += m
        for c in range(out.shape[1]):
            out[r, c] = acc[c] * weight[r]


@numba.njit(parallel=True, cache=True, nogil=True)
def _maximum(
    field: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    first: np.ndarray,
    stride: np.ndarray,
    counts: np.ndarray,
    out: np.ndarray,
) -> None:
    """Maximum intensity projections: ``out[r, c]`` = the largest of ray ``r``'s samples of channel ``c``.

    The cells are walked as in :func:`_integrate`; a cell whose largest corner does not
    exceed the running maximum cannot raise it (a trilinear sample lies between its
    corners), so only the other cells' samples are interpolated.
    """
    nk, nj, ni, nc = field.shape
    shape = (ni, nj, nk)
    values = field.reshape(-1, nc)
    for r in numba.prange(counts.shape[0]):
        n = counts[r]
        start, stop, axes = _ray_start(first[r], stride[r], n, lo, hi, shape)
        acc = np.empty(nc, dtype=np.float32)
        for c in range(nc):
            acc[c] = values[0, c] if stop - start < n else -np.inf
        fi, fj, fk = first[r, 0], first[r, 1], first[r, 2]
        di, dj, dk = stride[r, 0], stride[r, 1], stride[r, 2]
        s = start
        while s < stop:
            axes, end = _ray_step(axes, (di, dj, dk), s, stop, shape)
            ci, cj, ck = axes[0][0], axes[1][0], axes[2][0]
            (ia, ib), (ja, jb), (ka, kb) = axes[0][4], axes[1][4], axes[2][4]
            for c in range(nc):
                v0, v1, v2, v3 = (
                    values[ka + ja + ia, c],
                    values[ka + ja + ib, c],
                    values[ka + jb + ia, c],
                    values[ka + jb + ib, c],
                )
                v4, v5, v6, v7 = (
                    values[kb + ja + ia, c],
                    values[kb + ja + ib, c],
                    values[kb + jb + ia, c],
                    values[kb + jb + ib, c],
                )
                if max(v0, v1, v2, v3, v4, v5, v6, v7) <= acc[c]:
                    continue
                for u in range(s, end):
                    tx = np.float32(fi + u * di - ci)
                    ty = np.float32(fj + u * dj - cj)
                    tz = np.float32(fk + u * dk - ck)
                    v00, v01 = v0 + tx * (v1 - v0), v2 + tx * (v3 - v2)
                    v10, v11 = v4 + tx * (v5 - v4), v6 + tx * (v7 - v6)
                    w0, w1 = v00 + ty * (v01 - v00), v10 + ty * (v11 - v10)
                    acc[c] = max(acc[c], w0 + tz * (w1 - w0))
            s = end
        for c in range(nc):
            out[r, c] = acc[c]


@numba.njit(parallel=True, cache=True, nogil=True)
def _cell_labels(labels: np.ndarray, out: np.ndarray) -> None:
    # Branch-free along each row so that numba vectorises it; the last voxel of a row has no neighbour up i.
    nk, nj, ni = labels.shape
    for k in numba.prange(nk):
        k1 = min(k + 1, nk - 1)
        for j in range(nj):
            j1 = min(j + 1, nj - 1)
            for i in range(ni - 1):
                lab = labels[k, j, i]
                same = (
                    (lab == labels[k, j, i + 1]) & (lab == labels[k, j1, i]) & (lab == labels[k, j1, i + 1])
                    & (lab == labels[k1, j, i]) & (lab == labels[k1, j, i + 1])
                    & (lab == labels[k1, j1, i]) & (lab == labels[k1, j1, i + 1])
                )  # fmt: skip
                out[k, j, i] = lab | (UNIFORM * np.uint8(same))
            end = labels[k, j, ni - 1]
            same_end = (end == labels[k, j1, ni - 1]) & (end == labels[k1, j, ni - 1]) & (end == labels[k1, j1, ni - 1])
            out[k, j, ni - 1] = end | (UNIFORM * np.uint8(same_end))


def cell_labels(labels: np.ndarray) -> np.ndarray:
    """``labels`` ``(K, J, I)`` uint8 (below :data:`UNIFORM`) with bit :data:`UNIFORM` set on each voxel whose
    cell, the voxels ``(i .. i + 1, j .. j + 1, k .. k + 1)`` clamped to the volume, holds one label: the
    cell walk then reads one byte, not eight, to know that every corner counts in the same channel."""
    out = np.empty(labels.shape, dtype=np.uint8)
    _cell_labels(np.ascontiguousarray(labels, dtype=np.uint8), out)
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def _material_cells(hu: np.ndarray, fits: np.ndarray, thresholds: np.ndarray, density: np.ndarray, label: np.ndarray):
    nk, nj, ni = hu.shape
    for k in numba.prange(nk):
        for j in range(nj):
            for i in range(ni):
                h = hu[k, j, i]
                density[k, j, i] = max(min(fits[0] * h + fits[1], fits[2] * h + fits[3]), np.float32(0.0))
                label[k, j, i] = np.uint8(h > thresholds[0]) + np.uint8(h > thresholds[1])


def material_cells(hu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeepDRR's materials of a ``(K, J, I)`` HU array as a labelled field for :func:`project`.

    Returns ``(density (K, J, I) float32 g/cm^3, material (K, J, I) uint8)``, the index
    into :data:`ct2x.drr.materials.MATERIALS` (its :data:`LABEL` bits) with the uniform-cell
    bit of :func:`cell_labels`: the same numbers, in the same float32 arithmetic, as
    :func:`ct2x.drr.materials.hu_to_density` and :func:`ct2x.drr.materials.hu_to_material_index`,
    in 5 bytes a voxel.
    """
    from ct2x.drr.materials import DENSITY_FITS, HU_THRESHOLDS

    (a1, b1), (a2, b2) = DENSITY_FITS
    hu = np.ascontiguousarray(hu, dtype=np.float32)
    density = np.empty(hu.shape, dtype=np.float32)
    label = np.empty(hu.shape, dtype=np.uint8)
    fits = np.array([a1, b1, a2, b2], dtype=np.float32)
    _material_cells(hu, fits, np.array(HU_THRESHOLDS, dtype=np.float32), density, label)
    return density, cell_labels(label)


def project(
    field: np.ndarray,
    samples: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    reduce_max: bool,
    labels: np.ndarray = NO_LABELS,
    channels: int | None = None,
) -> np.ndarray:
    """``(R, C)`` float32 line integrals (or maxima) of a ``(K, J, I, C)`` float32 field along the rays.

    ``samples`` is ``(first, stride, counts, weight)`` as
    :func:`ct2x.drr.projector.ray_samples` returns it. With ``labels`` (sums only; cell
    labels, :func:`cell_labels`) the field has one channel, each voxel counting in channel
    ``labels[voxel] & LABEL`` of ``channels``. A ray without samples gets 0 (sum) or the
    background (max).
    """
    first, stride, counts, weight = samples
    field = np.ascontiguousarray(field, dtype=np.float32)
    out = np.empty((len(counts), channels or field.shape[3]), dtype=np.float32)
    lo, hi = active_box(field, labels)
    if reduce_max:
        _maximum(field, lo, hi, first, stride, counts, out)
    else:
        _integrate(field, np.ascontiguousarray(labels), lo, hi, first, stride, counts, weight, out)
    return out


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel."""
    density, label = material_cells(np.zeros((2, 2, 2), dtype=np.float32))
    density = density[..., None]
    rays = np.zeros((1, 3)), np.zeros((1, 3)), np.ones(1, dtype=np.int64), np.ones(1)
    project(density, rays, False, label, 3)
    for reduce_max in (False, True):
        project(density, rays, reduce_max)

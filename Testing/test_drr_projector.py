"""Geometry of the ct2x.drr ray marcher: storage invariance, projection matrix, MIP, chunking, DiffDRR parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import body_phantom, shared_file
from peer_renderers import diffdrr_projector

from ct2x.drr import line_integral, mip, render_drr
from ct2x.drr.materials import hu_to_density
from ct2x.geometry import CArm
from ct2x.volume import CTVolume


def restored(volume: CTVolume, perm: tuple[int, int, int], flips: tuple[bool, bool, bool]) -> CTVolume:
    """The same CT stored another way.

    New axis ``a`` is old axis ``perm[a]`` (i, j, k order), reversed if ``flips[a]``.
    """
    data = np.transpose(volume.array, (2, 1, 0))  # [i, j, k]
    data = np.transpose(data, perm)
    for axis, flip in enumerate(flips):
        if flip:
            data = np.flip(data, axis)
    size = np.asarray(volume.shape_ijk)
    first = np.array([size[perm[a]] - 1 if flips[a] else 0 for a in range(3)])
    old_index = np.zeros(3)
    old_index[list(perm)] = first
    direction = np.asarray(volume.direction)[:, list(perm)] * np.where(flips, -1.0, 1.0)
    origin = volume.ijk_to_lps[:3, :3] @ old_index + volume.ijk_to_lps[:3, 3]
    array = np.ascontiguousarray(np.transpose(data, (2, 1, 0)))
    return CTVolume(array, np.asarray(volume.spacing)[list(perm)], origin, direction)


def lopsided_phantom() -> CTVolume:
    """A non-cubic, anisotropic, asymmetric phantom off the origin (so that axis mix-ups show)."""
    rng = np.random.default_rng(0)
    k, j, i = np.meshgrid(np.arange(14), np.arange(18), np.arange(22), indexing="ij")
    hu = np.where((i - 9) ** 2 / 64 + (j - 8) ** 2 / 36 + (k - 6) ** 2 / 25 <= 1, 40.0, -1000.0)
    hu[(i > 12) & (i < 16) & (j > 3) & (j < 7)] = 900.0  # a bone bar off-centre
    hu += rng.normal(0, 20, hu.shape)
    return CTVolume(hu.astype(np.float32), np.array([2.0, 2.5, 3.0]), np.array([-20.0, 5.0, -15.0]), np.eye(3))


VIEW = CArm(
    primary=35.0, secondary=-20.0, detector_shape=(24, 32), pixel_spacing=(5.0, 5.0), isocenter=(2.0, 25.0, 4.0)
)


@pytest.mark.parametrize(
    ("perm", "flips"),
    [
        ((0, 1, 2), (True, False, False)),  # i reversed
        ((0, 1, 2), (True, True, False)),  # RAS-like storage
        ((2, 0, 1), (False, False, False)),  # axes permuted
        ((1, 2, 0), (False, True, True)),  # permuted and flipped
    ],
)
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_direction_matrix_does_not_change_the_drr(perm, flips, backend):
    volume = lopsided_phantom()
    other = restored(volume, perm, flips)
    np.testing.assert_allclose(other.corners_lps.min(0), volume.corners_lps.min(0), atol=1e-9)
    assert other.array.shape != volume.array.shape or not np.array_equal(other.array, volume.array)
    a = render_drr(volume, VIEW, step=0.25, backend=backend)
    b = render_drr(other, VIEW, step=0.25, backend=backend)
    assert a.abs().max().item() > 0.5
    np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-5)
    mips = [mip(v, VIEW, step=0.25, backend=backend).numpy() for v in (other, volume)]
    np.testing.assert_allclose(*mips, atol=1e-2)


@pytest.mark.parametrize("angles", [(0.0, 0.0), (30.0, 15.0), (-70.0, -25.0)])
def test_a_bright_voxel_lands_where_the_projection_matrix_says(angles):
    size, spacing = 21, 1.5
    hu = np.full((size, size, size), -1000.0, dtype=np.float32)
    voxel = (13, 6, 4)  # (i, j, k)
    hu[voxel[2], voxel[1], voxel[0]] = 3000.0
    volume = CTVolume(hu, np.full(3, spacing), np.array([10.0, -30.0, 5.0]), np.eye(3))
    view = CArm(*angles, detector_shape=(48, 40), pixel_spacing=(1.0, 1.0), isocenter=tuple(volume.center_lps))
    u, v = view.project(volume.ijk_to_lps[:3, :3] @ np.array(voxel) + volume.ijk_to_lps[:3, 3])[0]
    image = mip(volume, view, step=0.1)[0].numpy()
    row, col = np.unravel_index(np.argmax(image), image.shape)
    assert abs(col - u) <= 0.5 + 1e-6 and abs(row - v) <= 0.5 + 1e-6
    # The centroid of the line-integral image sits on the projected point to a fraction of a pixel.
    field = np.zeros_like(hu)
    field[voxel[2], voxel[1], voxel[0]] = 1.0
    blob = line_integral(volume, view, values=field, step=0.1)[0].numpy()
    rows, cols = np.indices(blob.shape)
    assert (blob * cols).sum() / blob.sum() == pytest.approx(u, abs=0.15)
    assert (blob * rows).sum() / blob.sum() == pytest.approx(v, abs=0.15)


def trilinear_reference(
    volume: CTVolume, values: np.ndarray, source: np.ndarray, target: np.ndarray
) -> tuple[np.ndarray, float]:
    """Dense samples (0.01 voxel) of one ray inside the bounding box, trilinear, each voxel a cube (numpy).

    Returns the samples and the ray length (mm) between two samples.
    """
    lps_to_ijk = volume.lps_to_ijk
    s = lps_to_ijk[:3, :3] @ source + lps_to_ijk[:3, 3]
    t = lps_to_ijk[:3, :3] @ target + lps_to_ijk[:3, 3]
    n = int(np.linalg.norm(t - s) / 0.01)
    points = s + np.linspace(0, 1, n)[:, None] * (t - s)
    size = np.asarray(volume.shape_ijk)
    points = points[np.all((points >= -0.5) & (points <= size - 0.5), axis=1)]
    points = np.clip(points, 0, size - 1)
    base = np.minimum(np.floor(points).astype(int), np.maximum(size - 2, 0))
    frac = points - base
    data = np.transpose(values, (2, 1, 0))
    out = np.zeros(len(points))
    for corner in np.ndindex(2, 2, 2):
        idx = np.minimum(base + corner, size - 1)
        weight = np.prod(np.where(corner, frac, 1 - frac), axis=1)
        out += weight * data[idx[:, 0], idx[:, 1], idx[:, 2]]
    return out, float(np.linalg.norm(target - source)) / (n - 1)


def test_mip_and_line_integrals_match_a_dense_reference():
    volume = lopsided_phantom()
    view = VIEW
    image = mip(volume, view, step=0.1)[0].numpy()
    integral = line_integral(volume, view, values=volume.array, step=0.1)[0].numpy()
    pixels = view.pixel_centers()
    rng = np.random.default_rng(1)
    hit = 0
    for row, col in zip(rng.integers(0, 24, 12), rng.integers(0, 32, 12), strict=True):
        samples, step_mm = trilinear_reference(volume, volume.array, view.source, pixels[row, col])
        if len(samples) == 0:
            assert image[row, col] == pytest.approx(volume.array.min())
            assert integral[row, col] == 0.0
            continue
        hit += 1
        assert image[row, col] == pytest.approx(samples.max(), abs=15.0)  # 0.1 vs 0.01 voxel steps
        assert integral[row, col] == pytest.approx(samples.sum() * step_mm, rel=0.01, abs=10.0)
    assert hit >= 6


def test_mip_of_the_body_phantom():
    volume = body_phantom(48, 2.0)
    view = CArm(detector_shape=(33, 33), pixel_spacing=(8.0, 8.0))
    image = mip(volume, view)[0].numpy()
    assert image.max() == pytest.approx(1000.0, abs=1e-2)  # the bone rod, seen along its cross-section
    assert image[16, 0] == pytest.approx(-1000.0)  # the corner ray misses the cylinder
    # Rod on the patient's left = image right in AP; the brightest column is right of centre.
    assert np.argmax(image.max(axis=0)) > 16
    assert image[16, 16] == pytest.approx(50.0, abs=1.0)  # through the water and the 50 HU ball


def test_chunking_does_not_change_the_result():
    """The torch marcher's chunks of rays (its memory budget) do not change what it computes."""
    volume = lopsided_phantom()
    views = [VIEW, VIEW.with_angles(-50.0, 10.0)]
    whole = render_drr(volume, views, step=0.2, memory_bytes=2**30, backend="torch")
    tiny = render_drr(volume, views, step=0.2, memory_bytes=50_000, backend="torch")
    np.testing.assert_allclose(tiny.numpy(), whole.numpy(), rtol=1e-6, atol=1e-7)
    mips = [mip(volume, views, memory_bytes=budget, backend="torch").numpy() for budget in (20_000, 2**28)]
    np.testing.assert_array_equal(*mips)


def test_views_are_independent_in_a_batch():
    volume = lopsided_phantom()
    views = [VIEW, VIEW.with_angles(80.0)]
    batch = line_integral(volume, views, step=0.3)
    for n, view in enumerate(views):
        np.testing.assert_allclose(batch[n].numpy(), line_integral(volume, view, step=0.3)[0].numpy(), rtol=1e-6)


# ---------------------------------------------------------------------- DiffDRR


def test_line_integrals_agree_with_diffdrr_on_a_real_ct():
    pytest.importorskip("diffdrr", reason="DiffDRR (dev extra) is not installed")
    from ct2x.volume import read_ct

    volume = read_ct(shared_file("ct/totalseg_aorta_thorax_cropped.nii.gz"))
    density = hu_to_density(torch.from_numpy(volume.array)).numpy()
    view = CArm(primary=25.0, secondary=10.0, detector_shape=(64, 64), pixel_spacing=(4.0, 4.0),
                isocenter=tuple(volume.center_lps))  # fmt: skip
    drr, pose = diffdrr_projector(volume, density, view)
    with torch.no_grad():
        theirs = drr(pose)[0, 0].numpy()
    # Same rays: DiffDRR's source and detector pixels are ours (in RAS).
    with torch.no_grad():
        source, target = drr.detector(pose, None)
    ras = np.array([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(source[0, 0].numpy(), view.source * ras, atol=1e-3)
    np.testing.assert_allclose(target[0].numpy(), view.pixel_centers().reshape(-1, 3) * ras, atol=1e-2)
    ours = line_integral(volume, view, values=density, step=0.1)[0].numpy()
    assert ours.max() > 100.0  # (g/cm^3) x mm: the thorax is 10+ cm thick
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] >= 0.99
    assert np.median(np.abs(ours - theirs)[theirs > 10]) / np.median(theirs[theirs > 10]) < 0.02

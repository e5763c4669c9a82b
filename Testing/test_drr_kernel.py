"""The compiled CPU kernel (numba) against the torch marcher, a dense reference and the fallback."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import body_phantom, shared_file
from test_drr_projector import VIEW, lopsided_phantom

from ct2x.drr import line_integral, mip, projector, render_drr
from ct2x.errors import CT2XError
from ct2x.geometry import CArm
from ct2x.volume import CTVolume

pytest.importorskip("numba", reason="numba (a core dependency) is not installed")


def assert_relative(a: torch.Tensor, b: torch.Tensor, rtol: float) -> None:
    """``|a - b| <= rtol * peak`` everywhere and ``<= rtol * |b|`` per pixel above 1 % of the peak."""
    a, b = a.numpy().astype(np.float64), b.numpy().astype(np.float64)
    scale = np.abs(b).max()
    assert scale > 0
    significant = np.abs(b) > 1e-2 * scale
    np.testing.assert_allclose(a[significant], b[significant], rtol=rtol)
    np.testing.assert_allclose(a, b, atol=rtol * scale)


def views_of(volume: CTVolume, shape: tuple[int, int] = (40, 48), pixel: float = 4.0) -> list[CArm]:
    center = tuple(volume.center_lps)
    base = CArm(detector_shape=shape, pixel_spacing=(pixel, pixel), isocenter=center)
    return [base, base.with_angles(35.0, -20.0), base.with_angles(-90.0, 30.0)]


@pytest.mark.parametrize("volume", [lopsided_phantom(), body_phantom(40, 2.5)], ids=["lopsided", "body"])
def test_kernel_matches_the_torch_marcher(volume):
    views = [VIEW, VIEW.with_angles(-60.0, 5.0)] if volume.array.shape[0] == 14 else views_of(volume)
    channels = np.stack([volume.array, np.abs(volume.array) ** 0.5, np.where(volume.array > 500, 1.0, 0.0)])
    for step in (0.1, 0.37, 1.7):  # 1.7: several cells between two samples
        fast = line_integral(volume, views, values=channels, step=step, backend="numba")
        slow = line_integral(volume, views, values=channels, step=step, backend="torch")
        assert fast.shape == slow.shape == (len(views), 3, *views[0].detector_shape)
        assert_relative(fast, slow, 1e-4)
        drrs = [render_drr(volume, views, step=step, backend=b) for b in ("numba", "torch")]
        assert_relative(*drrs, 1e-4)
        mips = [mip(volume, views, step=step, backend=b).numpy() for b in ("numba", "torch")]
        np.testing.assert_allclose(*mips, atol=0.1)  # HU, of values up to 1000


@pytest.mark.parametrize("m", [1, 2, 3, 10, 57])
def test_a_cells_weights_are_the_sums_of_its_samples_trilinear_weights(m):
    """The closed form of ``_cell_weights`` against the samples' own trilinear weights, summed one by one."""
    from ct2x.drr.kernel import _cell_weights

    rng = np.random.default_rng(m)
    for _ in range(20):
        p, d = rng.uniform(0.0, 1.0, 3), rng.uniform(-1.0, 1.0, 3) / m
        u = np.arange(m)[:, None]
        x = p + u * d  # (m, 3): the samples' fractional positions in the cell
        expected = [np.prod(np.where([(q >> a) & 1 for a in range(3)], x, 1.0 - x), axis=1).sum() for q in range(8)]
        np.testing.assert_allclose(_cell_weights(m, *p, *d), expected, rtol=1e-12, atol=1e-12)


def test_material_cells_are_deepdrrs_materials():
    from ct2x.drr.kernel import LABEL, material_cells
    from ct2x.drr.materials import hu_to_density, hu_to_material_index

    hu = np.concatenate([np.linspace(-1100, 2000, 3101), [-800, -799.9, 350, 350.1]]).astype(np.float32)
    hu = hu.reshape(1, 1, -1)
    density, material = material_cells(hu)
    material = material & LABEL  # without the uniform-cell bit
    np.testing.assert_array_equal(material, hu_to_material_index(torch.from_numpy(hu)).numpy())
    np.testing.assert_allclose(density, hu_to_density(torch.from_numpy(hu)).numpy(), rtol=1e-6, atol=1e-7)
    assert material.dtype == np.uint8 and set(np.unique(material)) == {0, 1, 2}


@pytest.mark.parametrize("shape", [(5, 6, 7), (1, 1, 1), (1, 4, 1), (3, 1, 5), (2, 3, 1)])
def test_a_cell_is_uniform_where_its_eight_corners_share_one_label(shape):
    from ct2x.drr.kernel import LABEL, UNIFORM, cell_labels

    rng = np.random.default_rng(3)
    labels = np.where(rng.random(shape) < 0.15, rng.integers(0, 3, shape), 1).astype(np.uint8)
    cells = cell_labels(labels)
    np.testing.assert_array_equal(cells & LABEL, labels)
    nk, nj, ni = labels.shape
    for k, j, i in np.ndindex(labels.shape):  # the cell's corners, clamped to the volume
        corners = labels[k : min(k + 2, nk), j : min(j + 2, nj), i : min(i + 2, ni)]
        assert bool(cells[k, j, i] & UNIFORM) == bool((corners == labels[k, j, i]).all()), (k, j, i)


def test_uniform_cells_sum_as_the_corner_by_corner_walk():
    from ct2x.drr.kernel import LABEL, material_cells, project
    from ct2x.drr.projector import ray_samples

    volume = lopsided_phantom()
    density, cells = material_cells(volume.array)
    samples = ray_samples(volume, [VIEW, VIEW.with_angles(-60.0, 5.0)], 0.3)
    fast = project(density[..., None], samples, False, cells, 3)
    plain = project(density[..., None], samples, False, cells & LABEL, 3)  # no bit: every cell corner by corner
    assert (cells & LABEL != cells).mean() > 0.5 and fast[:, 2].max() > 0  # mostly uniform cells, some bone
    np.testing.assert_allclose(fast, plain, rtol=1e-6, atol=1e-6)


def test_kernel_matches_the_torch_marcher_on_a_real_ct():
    from ct2x.volume import read_ct

    volume = read_ct(shared_file("ct/totalseg_aorta_thorax_cropped.nii.gz"))
    views = views_of(volume, (48, 48), 5.0)
    drr = render_drr(volume, views, backend="numba")
    assert drr.max() > 2.0  # a thorax attenuates the beam by more than e^-2
    assert_relative(drr, render_drr(volume, views, backend="torch"), 1e-4)
    assert_relative(line_integral(volume, views, backend="numba"), line_integral(volume, views, backend="torch"), 1e-4)
    fast, slow = mip(volume, views, backend="numba"), mip(volume, views, backend="torch")
    np.testing.assert_allclose(fast.numpy(), slow.numpy(), atol=0.1)  # HU; max of a few hundred thousand samples


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_materials_prepared_once_render_the_same_drr(backend):
    from ct2x.drr import materials

    volume = lopsided_phantom()
    views = [VIEW, VIEW.with_angles(-60.0, 5.0)]
    prepared = materials(volume, backend=backend)
    assert prepared.marcher == backend and prepared.density.shape == volume.array.shape
    direct = render_drr(volume, views, step=0.3, backend=backend).numpy()
    np.testing.assert_array_equal(render_drr(prepared, views, step=0.3).numpy(), direct)
    one_by_one = torch.cat([render_drr(prepared, [view], step=0.3) for view in views])  # as the Slicer panel renders
    np.testing.assert_allclose(one_by_one.numpy(), direct, rtol=1e-6, atol=1e-7)
    with pytest.raises(CT2XError, match="CTVolume"):
        materials(volume.array)


def test_kernel_converges_to_a_dense_reference():
    volume = body_phantom(40, 2.5)
    views = views_of(volume)
    dense = line_integral(volume, views, step=0.01, backend="numba")
    assert_relative(line_integral(volume, views, step=0.1, backend="numba"), dense, 5e-3)  # the default step
    with pytest.raises(AssertionError):  # the check can fail: a coarse step does
        assert_relative(line_integral(volume, views, step=1.0, backend="numba"), dense, 5e-3)
    # and the torch marcher's dense result is the same integral
    one = [views[1]]
    assert_relative(line_integral(volume, one, step=0.01, backend="torch"), dense[1:2], 1e-4)


def test_background_outside_the_active_box_is_counted_exactly():
    """Samples the kernel skips (all eight corners equal voxel 0) still count, for sum and max."""
    volume = lopsided_phantom()
    field = np.full(volume.array.shape, 5.0, dtype=np.float32)  # a non-zero background
    field[6:9, 8:12, 9:13] = 50.0  # a small block well inside
    for values in (field, np.full_like(field, 5.0)):  # and a field with no active box at all
        fast = line_integral(volume, VIEW, values=values, step=0.2, backend="numba")
        slow = line_integral(volume, VIEW, values=values, step=0.2, backend="torch")
        assert_relative(fast, slow, 1e-5)
    hu = np.full(volume.array.shape, -1000.0, dtype=np.float32)
    hu[0, 0, 0] = -900.0  # voxel 0 unlike the rest: the active box is the whole volume
    hu[7, 9, 10] = 800.0
    for values in (hu, volume.array):
        other = CTVolume(values, volume.spacing, volume.origin, volume.direction)
        mips = [mip(other, VIEW, backend=b).numpy() for b in ("numba", "torch")]
        np.testing.assert_allclose(*mips, atol=1e-2)


def test_rays_that_miss_the_volume():
    volume = lopsided_phantom()
    off = CArm(detector_shape=(8, 8), pixel_spacing=(1.0, 1.0), isocenter=(500.0, 500.0, 500.0))
    assert line_integral(volume, off, backend="numba").abs().max() == 0.0
    assert mip(volume, off, backend="numba").unique().tolist() == [pytest.approx(float(volume.array.min()))]


def test_threads_do_not_change_the_result():
    volume = body_phantom(32, 3.0)
    views = views_of(volume, (24, 24), 6.0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = render_drr(volume, views, backend="numba")
        torch.set_num_threads(2)
        two = render_drr(volume, views, backend="numba")
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(one.numpy(), two.numpy())


def test_auto_picks_the_kernel_on_the_cpu(monkeypatch):
    assert projector.resolve_backend("auto", torch.device("cpu")) == "numba"
    assert projector.resolve_backend("torch", torch.device("cpu")) == "torch"
    calls = []
    monkeypatch.setattr(projector, "_march_torch", lambda *a: calls.append(a) or 1 / 0)
    line_integral(lopsided_phantom(), VIEW, step=0.5)  # would divide by zero on the torch path
    assert calls == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda v: line_integral(v, VIEW, backend="fast"), "unknown ray-marching backend 'fast'"),
        (lambda v: mip(v, VIEW, backend="deepdrr"), "unknown ray-marching backend 'deepdrr'"),
        (lambda v: render_drr(v, VIEW, backend="numpy"), "unknown DRR backend 'numpy'"),
    ],
)
def test_bad_backends_are_one_line_errors(call, message):
    with pytest.raises(CT2XError, match=message):
        call(lopsided_phantom())


def test_numba_on_a_gpu_is_refused():
    with pytest.raises(CT2XError, match="CPU only"):
        projector.resolve_backend("numba", torch.device("cuda"))


def test_without_numba_auto_falls_back_to_torch_with_one_warning(monkeypatch):
    monkeypatch.setattr(projector, "numba_available", lambda: False)
    monkeypatch.setattr(projector, "_warned_fallback", False)
    volume = lopsided_phantom()
    with pytest.warns(UserWarning, match="numba is not installed") as record:
        first = line_integral(volume, VIEW, step=0.3)
        line_integral(volume, VIEW, step=0.3)
    assert len(record) == 1
    assert_relative(first, line_integral(volume, VIEW, step=0.3, backend="torch"), 1e-6)
    with pytest.raises(CT2XError, match="pip install numba"):
        line_integral(volume, VIEW, backend="numba")


def test_cli_without_numba_warns_once_and_renders(tmp_path):
    """A machine without numba: ``ct2x drr`` prints one ``ct2x: warning:`` line and still writes the views."""
    import SimpleITK as sitk

    from ct2x.volume import to_sitk

    ct = tmp_path / "ct.nrrd"
    sitk.WriteImage(to_sitk(body_phantom(24, 4.0)), str(ct))
    script = "import sys; sys.modules['numba'] = None; from ct2x.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = ["drr", str(ct), "--angles", "-30", "30", "--size", "32", "--pixel", "6", "--out", str(tmp_path / "out")]
    done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, encoding="utf-8", timeout=300)
    assert done.returncode == 0, done.stderr
    warnings = done.stderr.split("ct2x: warning: ")[1:]  # (a progress bar may share the warning's line)
    assert len(warnings) == 1 and warnings[0].startswith("numba is not installed")
    assert len(list((tmp_path / "out").glob("view*[0-9].nrrd"))) == 2  # (and a coverage mask each)


def test_a_numba_march_leaves_torchs_thread_count_and_no_negative_density():
    """numba's OpenMP runtime is torch's: restoring numba's thread count after a march must not change torch's
    (torch at 1 thread went to the machine's count, and the imaging chain's small ops ran hundreds of times
    slower); the march's round-off never gives a negative area density (the imaging chain refuses one)."""
    from ct2x.drr import area_densities

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        volume = lopsided_phantom()
        area = area_densities(volume, [VIEW, VIEW.with_angles(-60.0, 5.0)], backend="numba")
        assert torch.get_num_threads() == 1
        assert float(area.min()) >= 0.0 and float(area.max()) > 0.0
    finally:
        torch.set_num_threads(threads)

"""The CT coverage mask (ct2x.drr.coverage): the detector pixels whose rays cross the CT without leaving
through its first or last slice, and its files beside the views of ``ct2x drr`` and ``ct2x synthesize``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from conftest import write_phantom_ct
from PIL import Image

from ct2x.cli import main
from ct2x.drr import coverage
from ct2x.geometry import CArm
from ct2x.volume import CTVolume, read_ct

SPACING = 4.0


def _slab(slices: int = 6, side: int = 24) -> CTVolume:
    """A water block ``side`` x ``side`` voxels across and ``slices`` thick along S, 4 mm voxels, centred on 0."""
    hu = np.zeros((slices, side, side), np.float32)
    shape_ijk = np.array([side, side, slices], dtype=np.float64)
    return CTVolume(hu, np.full(3, SPACING), -(shape_ijk - 1) / 2 * SPACING, np.eye(3))


def _ray_extremes(volume: CTVolume, carm: CArm, samples: int = 4001, grow_mm: float = 0.0) -> np.ndarray:
    """Independent check, in LPS: per pixel the largest |z| (mm) of the ray's samples inside the axis-aligned
    lateral prism of ``volume``, grown by ``grow_mm`` on each side (NaN where no sample is inside)."""
    corners = volume.corners_lps
    low, high = corners.min(axis=0) - grow_mm, corners.max(axis=0) + grow_mm
    t = np.linspace(0.0, 1.0, samples)
    rows = []
    for row in carm.pixel_centers():  # (W, 3): one detector row at a time
        points = carm.source + t[None, :, None] * (row - carm.source)[:, None, :]  # (W, S, 3)
        inside = np.all((points[..., :2] >= low[:2]) & (points[..., :2] <= high[:2]), axis=-1)
        rows.append(np.where(inside, np.abs(points[..., 2] - (low[2] + high[2]) / 2), -np.inf).max(axis=1))
    z = np.stack(rows)
    return np.where(np.isfinite(z), z, np.nan)


def _reoriented(volume: CTVolume, flips: tuple[int, ...] = (), swap_ik: bool = False) -> CTVolume:
    """The same voxels in the same place, stored with the axes in ``flips`` (0 = i, 1 = j, 2 = k) reversed and,
    with ``swap_ik``, i and k exchanged."""
    array, direction = volume.array, np.array(volume.direction, dtype=np.float64)
    spacing, origin = np.array(volume.spacing, dtype=np.float64), np.array(volume.origin, dtype=np.float64)
    for axis in flips:
        last = np.zeros(3)
        last[axis] = volume.shape_ijk[axis] - 1
        origin = volume.ijk_to_lps[:3, :3] @ last + origin
        array = np.flip(array, 2 - axis)
        direction[:, axis] *= -1
        volume = CTVolume(np.ascontiguousarray(array), spacing, origin, direction.copy())
    if swap_ik:
        array = np.ascontiguousarray(volume.array.transpose(2, 1, 0))
        volume = CTVolume(array, spacing[[2, 1, 0]], origin, direction[:, [2, 1, 0]])
    return volume


def test_rays_past_the_ends_of_a_short_slab_are_uncovered_and_exactly_those() -> None:
    slab = _slab()  # 96 x 96 mm across, 24 mm along S
    ap = CArm(0.0, 0.0, detector_shape=(64, 64), pixel_spacing=(4.656, 4.656))  # 298 mm: far past the slab
    mask = coverage(slab, [ap])
    assert mask.dtype == torch.bool and mask.shape == (1, 64, 64)
    mask = mask[0].numpy()
    # Analytic, for the columns whose rays leave the prism through its far face (y = -48 mm): the ray's largest
    # |z| inside the prism is at that face, |z_pixel| (SID + 48) / SDD; covered where that is <= 12 mm.
    z_pixel = -(np.arange(64) - 31.5) * 4.656
    x_pixel = (np.arange(64) - 31.5) * 4.656
    central = np.abs(x_pixel) * (530 + 48) / 1020 < 48 - 1
    expected_rows = np.abs(z_pixel) * (530 + 48) / 1020 <= 12
    assert 0 < expected_rows.sum() < 64  # the ends of the slab fall inside the field
    np.testing.assert_array_equal(mask[:, central], np.repeat(expected_rows[:, None], central.sum(), axis=1))
    # rays that pass beside the slab (|x| > 48 mm all along) are covered: they cross only air
    beside = np.abs(x_pixel) * (530 - 48) / 1020 > 48 + 1
    assert beside.any() and mask[:, beside].all()


@pytest.mark.parametrize(("primary", "secondary"), [(0.0, 30.0), (40.0, -25.0)])
def test_the_mask_matches_a_brute_force_march_in_lps(primary: float, secondary: float) -> None:
    slab = _slab(slices=8)
    view = CArm(primary, secondary, detector_shape=(48, 40), pixel_spacing=(6.0, 7.0), isocenter=(3.0, -2.0, 5.0))
    mask = coverage(slab, view)[0].numpy()
    extremes = _ray_extremes(slab, view)
    half = 8 * SPACING / 2
    # away from the end planes, and not grazing the prism's sides (where the samples may miss it)
    clear = np.isnan(extremes) | (np.abs(extremes - half) > 1.0)
    clear &= np.isnan(extremes) == np.isnan(_ray_extremes(slab, view, grow_mm=1.0))
    expected = np.isnan(extremes) | (extremes <= half)
    assert clear.mean() > 0.9 and (~expected[clear]).any() and expected[clear].any()
    np.testing.assert_array_equal(mask[clear], expected[clear])


def test_an_ap_view_of_a_long_phantom_inside_the_field_is_all_covered() -> None:
    long = _slab(slices=100)  # 400 mm along S
    view = CArm(0.0, 0.0, detector_shape=(32, 32), pixel_spacing=(4.0, 4.0))  # 128 mm detector, 66 mm at the slab
    assert coverage(long, [view, view.with_angles(30.0)]).all()


def test_flipping_or_permuting_the_ct_axes_keeps_the_mask() -> None:
    slab = _slab(slices=7, side=20)
    carms = [CArm(p, s, detector_shape=(40, 40), pixel_spacing=(7.0, 7.0)) for p, s in ((0, 0), (35, 20), (-70, -30))]
    reference = coverage(slab, carms)
    assert not reference.all() and reference.any()
    for flips, swap in (((2,), False), ((0, 2), False), ((0, 1, 2), False), ((), True), ((1,), True)):
        other = _reoriented(slab, flips, swap)
        np.testing.assert_allclose(other.corners_lps.min(axis=0), slab.corners_lps.min(axis=0))
        assert other.long_axis == (0 if swap else 2)
        assert torch.equal(coverage(other, carms), reference), (flips, swap)


def test_coverage_refuses_what_it_cannot_read() -> None:
    from ct2x.errors import CT2XError

    with pytest.raises(CT2XError, match="CTVolume"):
        coverage(np.zeros((4, 4, 4)), [CArm()])
    with pytest.raises(CT2XError, match="one detector shape"):
        coverage(_slab(), [CArm(), CArm(detector_shape=(8, 8))])


def test_ct2x_drr_writes_the_masks_beside_the_views(tmp_path: Path, capsys) -> None:
    ct = write_phantom_ct(tmp_path / "ct.nrrd", 24)  # 96 mm cube; the default detector spans 155 mm there
    out = tmp_path / "out"
    argv = ["drr", str(ct), "--angles", "0", "30", "--secondary", "15", "--size", "48", "--step", "1"]
    assert main([*argv, "--imaging", "raw", "--photons", "0", "--out", str(out)]) == 0, capsys.readouterr().err
    for primary, stem in ((0.0, "view00_LAO0_CRAN15"), (30.0, "view01_LAO30_CRAN15")):
        view = sitk.ReadImage(str(out / f"{stem}.nrrd"))
        mask_file = sitk.ReadImage(str(out / f"{stem}_coverage.nrrd"))
        assert mask_file.GetPixelID() == sitk.sitkUInt8 and mask_file.GetSize() == view.GetSize() == (48, 48, 1)
        assert mask_file.GetOrigin() == view.GetOrigin() and mask_file.GetSpacing() == view.GetSpacing()
        assert mask_file.GetDirection() == view.GetDirection()
        mask = sitk.GetArrayFromImage(mask_file)[0]
        isocenter = tuple(float(c) for c in view.GetMetaData("ct2x_isocenter_lps_mm").split())
        carm = CArm(primary, 15.0, detector_shape=(48, 48), pixel_spacing=view.GetSpacing()[1::-1], isocenter=isocenter)
        expected = coverage(read_ct(ct), [carm])[0].numpy()
        np.testing.assert_array_equal(mask, expected.astype(np.uint8))
        assert 0 < mask.mean() < 1  # the cube's ends fall inside the field
        fraction = float(view.GetMetaData("ct2x_coverage_fraction"))
        assert fraction == pytest.approx(mask.mean(), abs=1e-6)
        assert float(mask_file.GetMetaData("ct2x_coverage_fraction")) == fraction
        png = np.asarray(Image.open(out / f"{stem}_coverage.png"))
        assert png.shape == (48, 48) and png.dtype == np.uint8
        np.testing.assert_array_equal(png, mask * 255)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ct2x.checkpoint import save_model
    from ct2x.config import CT2XConfig
    from ct2x.models import CT2XGAN

    config = CT2XConfig.preset("small", image_size=64, lpips_backbone="random")
    torch.manual_seed(0)
    weights = {k: v for k, v in CT2XGAN(config).state_dict().items() if not k.startswith("discriminator.")}
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_model(path, weights, {"config": config.to_dict(), "training": {"steps": 0}})
    return path


def test_ct2x_synthesize_writes_the_masks_and_a_dicom_overlay(small_model: Path, tmp_path: Path) -> None:
    ct = write_phantom_ct(tmp_path / "ct.nrrd", 16)
    out = tmp_path / "out"
    argv = ["synthesize", str(ct), "--model", str(small_model), "--drr-style", "--angles", "0", "--secondary", "20"]
    assert main([*argv, "--sdd", "1020", "--sid", "530", "--out", str(out)]) == 0
    stem = "view00_LAO0_CRAN20"
    view = sitk.ReadImage(str(out / f"{stem}.nrrd"))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{stem}_coverage.nrrd")))[0]
    assert mask.shape == view.GetSize()[1::-1] and 0 < mask.mean() < 1
    assert float(view.GetMetaData("ct2x_coverage_fraction")) == pytest.approx(mask.mean(), abs=1e-6)
    np.testing.assert_array_equal(np.asarray(Image.open(out / f"{stem}_coverage.png")), mask * 255)
    dicom = pydicom.dcmread(out / f"{stem}.dcm")
    assert dicom[0x60001500].value == "CT2X coverage" and dicom[0x60000040].value == "R"
    np.testing.assert_array_equal(dicom.overlay_array(0x6000), 1 - mask)  # the overlay marks the uncovered pixels
    assert sorted(p.name for p in out.glob("*.dcm")) == [f"{stem}.dcm"]  # one DX image per view

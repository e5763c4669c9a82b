"""ct2x.volume: reading CTs from every supported format, rejecting bad inputs, resampling in LPS."""

from __future__ import annotations

import gzip
import hashlib
import struct
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import body_phantom, shared_file, write_dicom_series

from ct2x.errors import CT2XError
from ct2x.volume import (
    OUTSIDE_HU,
    CTVolume,
    NotCTWarning,
    from_sitk,
    preprocess,
    read_ct,
    resample_isotropic,
    resample_to_grid,
    to_sitk,
)

# A proper rotation that is not axis-aligned (about the axis (1, 2, 3) by 30 degrees).
_AXIS = np.array([1.0, 2.0, 3.0]) / np.linalg.norm([1.0, 2.0, 3.0])
_CROSS = np.array([[0, -_AXIS[2], _AXIS[1]], [_AXIS[2], 0, -_AXIS[0]], [-_AXIS[1], _AXIS[0], 0]])
OBLIQUE = np.eye(3) + np.sin(np.radians(30)) * _CROSS + (1 - np.cos(np.radians(30))) * _CROSS @ _CROSS


def small_phantom() -> CTVolume:
    """body_phantom cropped to unequal sizes, with anisotropic spacing and an off-centre origin (LPS mm)."""
    base = body_phantom(size=32)
    return CTVolume(base.array[2:, 5:, 9:].copy(), np.array([2.0, 1.5, 2.5]), np.array([-30.0, 12.0, 55.0]), np.eye(3))


def reindexed(volume: CTVolume, perm: tuple[int, int, int], flips: tuple[bool, bool, bool]) -> CTVolume:
    """The same physical voxels stored with permuted and/or flipped index axes.

    New index axis ``a`` runs along old axis ``perm[a]``, backwards where ``flips[a]``.
    """
    ijk = volume.array.transpose(2, 1, 0).transpose(perm)
    ijk = np.flip(ijk, axis=[a for a in range(3) if flips[a]])
    old_size = np.array(volume.shape_ijk)
    first = np.zeros(3)
    for a in range(3):
        first[perm[a]] = old_size[perm[a]] - 1 if flips[a] else 0
    signs = np.where(flips, -1.0, 1.0)
    return CTVolume(
        np.ascontiguousarray(ijk.transpose(2, 1, 0)),
        np.asarray(volume.spacing)[list(perm)],
        (volume.ijk_to_lps @ np.append(first, 1.0))[:3],
        np.asarray(volume.direction)[:, list(perm)] * signs,
    )


def digest(path: Path) -> str:
    """SHA-256 of a file, or of every file under a folder (names included)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def assert_rejected(path: Path, *phrases: str, **kwargs: object) -> str:
    """read_ct(path) raises CT2XError with a one-line message holding every phrase, leaving the input as it was."""
    before = digest(path) if path.exists() else None
    with pytest.raises(CT2XError) as info:
        read_ct(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message and "sitk::" not in message
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in {message!r}"
    if before is not None:
        assert digest(path) == before
    return message


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd"])
def test_read_round_trip_keeps_hu_and_lps_placement(tmp_path: Path, suffix: str) -> None:
    phantom = small_phantom()
    stored = CTVolume(phantom.array, phantom.spacing, phantom.origin, OBLIQUE)
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(sitk.Cast(to_sitk(stored), sitk.sitkInt16), str(path))
    volume = read_ct(path)
    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, phantom.array)
    np.testing.assert_allclose(volume.spacing, stored.spacing, atol=1e-5)
    np.testing.assert_allclose(volume.origin, stored.origin, atol=1e-4)
    np.testing.assert_allclose(volume.direction, stored.direction, atol=1e-5)


def _nifti1(path: Path, raw: np.ndarray, sform_ras: np.ndarray, slope: float, intercept: float) -> None:
    """Write a NIfTI-1 file by hand (int16 ``raw[k, j, i]``, sform in RAS mm, scl_slope/scl_inter)."""
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, *raw.shape[::-1], 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, 4, 16)  # datatype int16, bitpix
    spacing = np.linalg.norm(sform_ras[:3, :3], axis=0)
    struct.pack_into("<8f", header, 76, 1.0, *spacing, 0, 0, 0, 0)
    struct.pack_into("<fff", header, 108, 352.0, slope, intercept)  # vox_offset, scl_slope, scl_inter
    struct.pack_into("<B", header, 123, 2)  # xyzt_units: mm
    struct.pack_into("<hh", header, 252, 0, 1)  # qform_code 0, sform_code 1 (scanner)
    struct.pack_into("<12f", header, 280, *sform_ras[:3].ravel())
    header[344:348] = b"n+1\0"
    path.write_bytes(bytes(header) + raw.astype("<i2").tobytes())


def test_nifti_in_ras_is_read_in_lps_with_scl_slope_applied(tmp_path: Path) -> None:
    # A hand-written NIfTI (not ITK's writer): i runs toward patient Right, j toward Anterior.
    hu = small_phantom().array
    slope, intercept = 2.0, -1024.0
    raw = ((hu - intercept) / slope).astype(np.int16)
    sform = np.diag([2.0, 1.5, 2.5, 1.0])
    sform[:3, 3] = [10.0, 20.0, 30.0]  # RAS mm of voxel (0, 0, 0)
    path = tmp_path / "ras.nii"
    _nifti1(path, raw, sform, slope, intercept)
    volume = read_ct(path)
    np.testing.assert_array_equal(volume.array, raw * slope + intercept)
    np.testing.assert_allclose(volume.direction, np.diag([-1.0, -1.0, 1.0]), atol=1e-6)
    np.testing.assert_allclose(volume.origin, [-10.0, -20.0, 30.0], atol=1e-5)
    np.testing.assert_allclose(volume.spacing, [2.0, 1.5, 2.5], atol=1e-6)


def test_dicom_series_round_trip_applies_rescale(tmp_path: Path) -> None:
    hu = np.round(small_phantom().array / 2) * 2  # even HU: exact with slope 2
    folder = tmp_path / "dicom"
    write_dicom_series(folder, hu, (0.7, 0.8, 2.5), (-10.0, -20.0, 30.0), "1.2.826.0.1.3680043.2.1125.1", "AXIAL")
    first = pydicom.dcmread(folder / "slice001.dcm")
    assert (float(first.RescaleSlope), float(first.RescaleIntercept)) == (2.0, -1024.0)
    assert not np.array_equal(first.pixel_array, hu[1])  # stored values are not HU ...
    volume = read_ct(folder)
    np.testing.assert_array_equal(volume.array, hu)  # ... read_ct's are
    np.testing.assert_allclose(volume.spacing, [0.7, 0.8, 2.5], atol=1e-5)
    np.testing.assert_allclose(volume.origin, [-10.0, -20.0, 30.0], atol=1e-5)
    np.testing.assert_allclose(volume.direction, np.eye(3), atol=1e-6)


def test_sitk_helpers_round_trip() -> None:
    stored = CTVolume(small_phantom().array, np.array([2.0, 1.5, 2.5]), np.array([1.0, -2.0, 3.0]), OBLIQUE)
    back = from_sitk(to_sitk(stored))
    np.testing.assert_array_equal(back.array, stored.array)
    for name in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(getattr(back, name), getattr(stored, name), atol=1e-12)
    point = to_sitk(stored).TransformIndexToPhysicalPoint((3, 4, 5))
    np.testing.assert_allclose(point, (stored.ijk_to_lps @ [3, 4, 5, 1])[:3], atol=1e-9)


# --------------------------------------------------------------------------- bad inputs


def test_missing_path(tmp_path: Path) -> None:
    assert_rejected(tmp_path / "nope.nii.gz", "no file or folder", "nope.nii.gz", "check the path")


def test_corrupt_files_are_reported_not_traced(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"this is not an image" * 20)
    assert_rejected(garbage, "cannot read", "garbage.nii.gz", "damaged")
    image = sitk.Cast(to_sitk(small_phantom()), sitk.sitkInt16)
    for suffix in (".nii", ".nii.gz", ".nrrd", ".mha"):
        whole = tmp_path / f"whole{suffix}"
        sitk.WriteImage(image, str(whole), suffix != ".nii")
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
        assert_rejected(cut, "cut" + suffix, "truncated")


def test_2d_images_are_rejected(tmp_path: Path) -> None:
    flat = tmp_path / "flat.mha"
    sitk.WriteImage(to_sitk(small_phantom())[:, :, 3], str(flat))
    assert_rejected(flat, "2D image", "3D volume")
    one_slice = tmp_path / "one_slice.nrrd"
    sitk.WriteImage(to_sitk(small_phantom())[:, :, 3:4], str(one_slice))
    assert_rejected(one_slice, "2D image", "1 voxels")


def test_4d_and_vector_images_are_rejected(tmp_path: Path) -> None:
    frame = to_sitk(small_phantom())
    series = tmp_path / "series.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([frame, frame]), str(series))
    assert_rejected(series, "4D image", "one 3D volume", "time point")
    vector = tmp_path / "vector.mha"
    sitk.WriteImage(sitk.Compose([frame, frame, frame]), str(vector))
    assert_rejected(vector, "3 values per voxel", "scalar")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected(tmp_path: Path, bad: float) -> None:
    phantom = small_phantom()
    array = phantom.array.copy()
    array[4, 5, 6] = bad
    path = tmp_path / "bad.nrrd"
    sitk.WriteImage(to_sitk(CTVolume(array, phantom.spacing, phantom.origin, phantom.direction)), str(path))
    assert_rejected(path, "1 NaN or infinite", "replace them")


@pytest.mark.parametrize("spacing", ["0 1.5 2.5", "2 -1.5 2.5"])
def test_zero_or_negative_spacing_is_rejected(tmp_path: Path, spacing: str) -> None:
    good = tmp_path / "good.mha"
    sitk.WriteImage(to_sitk(small_phantom()), str(good))
    bad = tmp_path / "bad.mha"
    bad.write_bytes(good.read_bytes().replace(b"ElementSpacing = 2 1.5 2.5", f"ElementSpacing = {spacing}".encode()))
    assert bad.read_bytes() != good.read_bytes()
    assert_rejected(bad, "spacing", spacing.split()[1 if "-" in spacing else 0], "must be positive")


def test_folder_with_two_dicom_series_names_them(tmp_path: Path) -> None:
    hu = np.round(small_phantom().array / 2) * 2
    folder = tmp_path / "study"
    uid_a, uid_b = "1.2.826.0.1.3680043.2.1125.7", "1.2.826.0.1.3680043.2.1125.8"
    write_dicom_series(folder / "a", hu, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), uid_a, "ARTERIAL")
    write_dicom_series(folder / "b", hu[:5] + 100, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), uid_b, "VENOUS")
    n_a = hu.shape[0]
    assert_rejected(
        folder, "2 DICOM series", uid_a, "'ARTERIAL'", f"{n_a} slices", uid_b, "'VENOUS'", "5 slices", "series_uid="
    )
    np.testing.assert_array_equal(read_ct(folder, series_uid=uid_b).array, hu[:5] + 100)
    np.testing.assert_array_equal(read_ct(folder / "a").array, hu)
    assert_rejected(folder, "no DICOM series 1.2.3", uid_a, uid_b, series_uid="1.2.3")


def test_series_uid_for_a_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "ct.mha"
    sitk.WriteImage(to_sitk(small_phantom()), str(path))
    assert_rejected(path, "series_uid is only for a DICOM folder", series_uid="1.2.3")


def test_folders_without_dicom_are_rejected(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_rejected(empty, "is empty", "DICOM series")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not a slice")
    assert_rejected(other, "holds no DICOM files")


def test_non_ct_image_warns_and_ct_does_not(tmp_path: Path) -> None:
    phantom = small_phantom()
    ct = tmp_path / "ct.mha"
    sitk.WriteImage(to_sitk(phantom), str(ct))
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotCTWarning)
        read_ct(ct)
    mri = tmp_path / "mri.mha"
    sitk.WriteImage(
        to_sitk(CTVolume(phantom.array + 1000, phantom.spacing, phantom.origin, phantom.direction)), str(mri)
    )
    with pytest.warns(NotCTWarning, match="does not look like a CT") as record:
        volume = read_ct(mri)
    assert issubclass(record[0].category, UserWarning)
    assert volume.array.min() == phantom.array.min() + 1000


# --------------------------------------------------------------------------- resampling


def test_resample_isotropic_covers_the_bounding_box() -> None:
    phantom = small_phantom()
    volume = CTVolume(phantom.array, phantom.spacing, phantom.origin, OBLIQUE)
    out = resample_isotropic(volume, 1.25)
    np.testing.assert_allclose(out.spacing, 1.25)
    np.testing.assert_array_equal(out.direction, np.eye(3))
    np.testing.assert_allclose(out.center_lps, volume.center_lps, atol=1e-9)
    low, high = volume.corners_lps.min(axis=0), volume.corners_lps.max(axis=0)
    out_low, out_high = out.corners_lps.min(axis=0), out.corners_lps.max(axis=0)
    assert np.all(out_low <= low + 1e-9) and np.all(out_high >= high - 1e-9)
    assert np.all((out_high - out_low) - (high - low) < 1.25)
    assert out.array.dtype == np.float32 and out.array.min() == OUTSIDE_HU  # corners of the box are outside


def test_resample_to_grid_fits_the_whole_ct_in_a_cube() -> None:
    volume = small_phantom()
    out = resample_to_grid(volume, 40)
    extent = np.ptp(volume.corners_lps, axis=0)
    assert out.array.shape == (40, 40, 40)
    np.testing.assert_allclose(out.spacing, extent.max() / 40)
    np.testing.assert_allclose(out.center_lps, volume.center_lps, atol=1e-9)
    np.testing.assert_array_equal(out.direction, np.eye(3))


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "1"])
def test_bad_resampling_spacing(bad: object) -> None:
    with pytest.raises(CT2XError, match="positive number of mm"):
        resample_isotropic(small_phantom(), bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_bad_grid_size(bad: object) -> None:
    with pytest.raises(CT2XError, match="positive whole number"):
        resample_to_grid(small_phantom(), bad)  # type: ignore[arg-type]


def test_marker_stays_at_its_lps_point_after_preprocess() -> None:
    phantom = small_phantom()
    array = np.zeros_like(phantom.array)  # water
    marker_ijk = (7, 11, 5)
    array[marker_ijk[::-1]] = 3000.0
    volume = CTVolume(array, phantom.spacing, np.array([-40.0, 25.0, 60.0]), OBLIQUE)
    marker_lps = (volume.ijk_to_lps @ np.append(marker_ijk, 1.0))[:3]
    out = preprocess(volume, 1.0, 64)
    inside = out.array > OUTSIDE_HU  # the cube corners are padding
    weights = np.where(inside, np.clip(out.array, 0, None), 0).astype(np.float64)
    k, j, i = np.indices(out.array.shape)
    ijk = np.stack([(w * weights).sum() / weights.sum() for w in (i, j, k)])
    centroid_lps = (out.ijk_to_lps @ np.append(ijk, 1.0))[:3]
    peak_ijk = np.unravel_index(np.argmax(out.array), out.array.shape)[::-1]
    peak_lps = (out.ijk_to_lps @ np.append(peak_ijk, 1.0))[:3]
    assert np.linalg.norm(centroid_lps - marker_lps) < 0.5  # a quarter of the input voxel
    assert np.linalg.norm(peak_lps - marker_lps) <= np.linalg.norm(out.spacing)  # within one output voxel


@pytest.mark.parametrize(
    ("perm", "flips"),
    [
        ((0, 1, 2), (True, True, False)),  # RAS storage, as NIfTI writers do
        ((0, 1, 2), (False, False, True)),
        ((2, 0, 1), (False, False, False)),
        ((1, 2, 0), (True, False, True)),
    ],
)
def test_flipped_or_permuted_storage_gives_the_same_preprocess(
    perm: tuple[int, int, int], flips: tuple[bool, bool, bool]
) -> None:
    reference = small_phantom()
    stored = reindexed(reference, perm, flips)
    assert not np.array_equal(stored.direction, reference.direction)
    np.testing.assert_allclose(stored.center_lps, reference.center_lps, atol=1e-9)
    expected, got = preprocess(reference, 1.0, 48), preprocess(stored, 1.0, 48)
    for name in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(getattr(got, name), getattr(expected, name), atol=1e-9)
    np.testing.assert_allclose(got.array, expected.array, atol=1e-2)


def _smooth_phantom(lps: np.ndarray) -> np.ndarray:
    """HU of an analytic, smooth, asymmetric body at LPS points (..., 3) mm: air plus three Gaussian blobs."""
    blobs = [((-15.0, 5.0, 0.0), 14.0, 1000.0), ((12.0, -10.0, 8.0), 10.0, 1500.0), ((0.0, 12.0, -15.0), 9.0, 800.0)]
    hu = np.full(lps.shape[:-1], -1000.0)
    for centre, sigma, amplitude in blobs:
        hu += amplitude * np.exp(-np.sum((lps - np.array(centre)) ** 2, axis=-1) / (2 * sigma**2))
    return hu


def _sampled(direction: np.ndarray, size: int, spacing: float) -> CTVolume:
    """``_smooth_phantom`` sampled on a ``size``^3 grid centred on the LPS origin with the given axes."""
    affine = direction * spacing
    origin = -affine @ np.full(3, (size - 1) / 2)
    k, j, i = np.indices((size,) * 3, dtype=np.float64)
    lps = np.stack([i, j, k], axis=-1) @ affine.T + origin
    return CTVolume(_smooth_phantom(lps).astype(np.float32), np.full(3, spacing), origin, direction)


def test_oblique_storage_gives_the_same_physical_values() -> None:
    # Both inputs sample the same analytic body; compare each preprocess output with the
    # body itself at the output voxel centres, well inside both inputs.
    outputs = {
        name: preprocess(_sampled(d, 40, 2.0), 1.0, 64) for name, d in (("axial", np.eye(3)), ("oblique", OBLIQUE))
    }
    axial, oblique = outputs["axial"], outputs["oblique"]
    assert oblique.spacing[0] > axial.spacing[0]  # the rotated box's bounding box is larger
    for out in outputs.values():
        np.testing.assert_array_equal(out.direction, np.eye(3))
        np.testing.assert_allclose(out.center_lps, 0.0, atol=1e-9)
        k, j, i = np.indices(out.array.shape, dtype=np.float64)
        lps = np.stack([i, j, k], axis=-1) @ out.ijk_to_lps[:3, :3].T + out.origin
        well_inside = np.all(np.abs(lps) < 30.0, axis=-1) & np.all(np.abs(lps @ OBLIQUE) < 30.0, axis=-1)
        error = np.abs(out.array - _smooth_phantom(lps))[well_inside]
        assert well_inside.sum() > 1000
        assert error.max() < 25.0 and error.mean() < 5.0  # HU, of blobs 800-1500 HU high


# --------------------------------------------------------------------------- real data


def test_real_ct_reads_in_hu_and_ras_storage_gives_the_same_preprocess(tmp_path: Path) -> None:
    path = shared_file("ct/totalseg_aorta_thorax_cropped.nii.gz")
    before = digest(path)
    volume = read_ct(path)
    assert digest(path) == before
    assert volume.array.dtype == np.float32 and volume.shape_ijk == (120, 126, 164)
    np.testing.assert_allclose(volume.spacing, 1.5, atol=1e-6)
    assert volume.array.min() == pytest.approx(-1024.0)  # air
    assert 1000.0 < volume.array.max() <= 3071.0  # bone / 12-bit ceiling
    assert -200.0 < float(np.median(volume.array[volume.array > -500])) < 200.0  # soft tissue dominates the body

    ras = reindexed(volume, (0, 1, 2), (True, True, False))
    stored = tmp_path / "ras.nii.gz"
    sitk.WriteImage(to_sitk(ras), str(stored))
    with gzip.open(stored) as f:  # the file really is stored with i toward R and j toward A
        srow = np.frombuffer(f.read(348)[280:328], dtype="<f4").reshape(3, 4)
    assert srow[0, 0] > 0 and srow[1, 1] > 0
    reread = read_ct(stored)
    np.testing.assert_allclose(reread.direction, np.diag([-1.0, -1.0, 1.0]), atol=1e-6)
    expected, got = preprocess(volume), preprocess(reread)
    assert got.array.shape == (128, 128, 128)
    np.testing.assert_allclose(got.origin, expected.origin, atol=1e-3)
    np.testing.assert_allclose(got.spacing, expected.spacing, atol=1e-9)
    np.testing.assert_allclose(got.array, expected.array, atol=0.5)

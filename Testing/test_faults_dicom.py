"""Damaged CT inputs: DICOM series with a missing, truncated or displaced slice, NaN voxels in every
format, ITK's own warnings, and two series told apart. Each is refused (or warned about) in one line
and the input is never changed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import one_line_error, write_dicom_series

from ct2x.errors import CT2XError
from ct2x.volume import read_ct

UID = "1.2.826.0.1.3680043.2.1125.7"
FAST = ["--size", "16", "--angles", "0", "--imaging", "raw", "--photons", "0", "--step", "0.5"]


def _series(folder: Path, slices: int = 10, uid: str = UID, description: str = "AXIAL", z0: float = 0.0) -> Path:
    """A 3 mm axial series of ``slices`` 8 x 8 slices, air with a bright rod, first slice at S = ``z0`` mm."""
    hu = np.full((slices, 8, 8), -1000, np.int16)
    hu[:, 3:5, 3:5] = 700
    write_dicom_series(folder, hu, (2.0, 2.0, 3.0), (0.0, 0.0, z0), uid, description)
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_missing_middle_slice_is_refused_naming_the_gap(tmp_path: Path, capsys) -> None:
    folder = _series(tmp_path / "gap")
    (folder / "slice004.dcm").unlink()  # slice at S = 12 mm
    before = _snapshot(folder)
    err = one_line_error(["drr", str(folder), *FAST, "--out", str(tmp_path / "o")], capsys)
    assert "slice003.dcm" in err and "slice005.dcm" in err, err  # the files either side of the gap
    assert "6 mm apart" in err and "3 mm" in err and "9 mm" in err and "15 mm" in err, err
    assert "refuses" in err
    assert _snapshot(folder) == before and not (tmp_path / "o").exists()


def test_truncated_slice_is_refused_naming_the_file(tmp_path: Path, capsys) -> None:
    folder = _series(tmp_path / "cut")
    damaged = folder / "slice006.dcm"
    damaged.write_bytes(damaged.read_bytes()[:-60])  # pixel data cut short: GDCM leaves the file out
    before = _snapshot(folder)
    err = one_line_error(["drr", str(folder), *FAST, "--out", str(tmp_path / "o")], capsys)
    assert "slice006.dcm" in err and "1 of its 10" in err, err
    assert _snapshot(folder) == before


def test_header_only_slice_is_refused(tmp_path: Path) -> None:
    folder = _series(tmp_path / "stub")
    stub = folder / "slice002.dcm"
    stub.write_bytes(stub.read_bytes()[:200])  # preamble and a few elements, no series UID
    with pytest.raises(CT2XError, match="slice002.dcm"):
        read_ct(folder)


def test_a_dicomdir_beside_the_series_is_not_a_damaged_slice(tmp_path: Path) -> None:
    folder = _series(tmp_path / "indexed")
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = "1.2.3"
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    index = pydicom.dataset.FileDataset(str(folder / "DICOMDIR"), {}, file_meta=meta, preamble=b"\0" * 128)
    index.save_as(folder / "DICOMDIR", enforce_file_format=True)
    assert read_ct(folder).array.shape == (10, 8, 8)


def test_complete_series_reads_with_its_spacing(tmp_path: Path) -> None:
    volume = read_ct(_series(tmp_path / "whole"))
    assert volume.array.shape == (10, 8, 8)
    np.testing.assert_allclose(volume.spacing, [2.0, 2.0, 3.0])


def _move_slice(path: Path, ds_mm: float) -> None:
    dataset = pydicom.dcmread(path)
    position = [float(v) for v in dataset.ImagePositionPatient]
    dataset.ImagePositionPatient = [position[0], position[1], position[2] + ds_mm]
    dataset.save_as(path)


def test_slightly_uneven_slices_read_with_itks_warning_reworded(tmp_path: Path, capfd) -> None:
    folder = _series(tmp_path / "jitter")
    _move_slice(folder / "slice005.dcm", 0.1)  # 3.3% of the 3 mm spacing: within the tolerance
    with pytest.warns(UserWarning, match=r"SimpleITK warns: Non uniform sampling") as caught:
        volume = read_ct(folder)
    assert volume.array.shape == (10, 8, 8)
    message = str(caught[0].message)
    assert "0x" not in message and ".hxx" not in message and "\n" not in message, message
    assert "WARNING: In" not in capfd.readouterr().err  # ITK's own text no longer reaches stderr


def test_displaced_slice_beyond_the_tolerance_is_refused(tmp_path: Path) -> None:
    folder = _series(tmp_path / "moved")
    _move_slice(folder / "slice005.dcm", 1.0)  # a third of the spacing
    with pytest.raises(CT2XError, match=r"uneven slice positions.*slice00[45]\.dcm"):
        read_ct(folder)


def test_two_series_with_one_description_are_told_apart_by_count_and_z_range(tmp_path: Path, capsys) -> None:
    _series(tmp_path / "both" / "a", slices=6, uid=UID + ".1", description="CHEST", z0=0.0)
    _series(tmp_path / "both" / "b", slices=4, uid=UID + ".2", description="CHEST", z0=-100.0)
    err = one_line_error(["drr", str(tmp_path / "both"), *FAST, "--out", str(tmp_path / "o")], capsys)
    assert "6 slices, z 0 to 15 mm" in err and "4 slices, z -100 to -91 mm" in err, err


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_voxels_are_refused_in_every_format(tmp_path: Path, capsys, suffix: str, bad: float) -> None:
    hu = np.full((6, 6, 6), -1000.0, np.float32)
    hu[3, 3, 3] = bad
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(hu), str(path))
    before = path.read_bytes()
    err = one_line_error(["drr", str(path), *FAST, "--out", str(tmp_path / "o")], capsys)
    assert "1 NaN or infinite" in err, err
    assert path.read_bytes() == before


def test_float64_nifti_nan_is_found_in_the_file(tmp_path: Path) -> None:
    hu = np.full((5, 6, 7), -1000.0, np.float64)
    hu[1, 2, 3] = np.nan
    path = tmp_path / "ct.nii"
    sitk.WriteImage(sitk.GetImageFromArray(hu), str(path))
    with pytest.raises(CT2XError, match="1 NaN"):
        read_ct(path)
    hu[1, 2, 3] = 40.0
    sitk.WriteImage(sitk.GetImageFromArray(hu), str(path))
    assert float(read_ct(path).array[1, 2, 3]) == 40.0
    assert os.path.getsize(path) == 352 + hu.size * 8

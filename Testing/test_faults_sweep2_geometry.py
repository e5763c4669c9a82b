"""Issue 23 item 5: geometry no C-arm has, from ``--like`` or from the CLI's flags, is named and refused.

``--like`` radiographs are written here with pydicom (DX files with one geometry tag set to a value no
device has, or written raw as text pydicom cannot convert: '-5', '0', 'NaN', 'abc'), plus a header cut
short and garbage after the 'DICM' preamble. A tag that is absent is "missing"; one that is present but
unusable names its value and why ("invalid" or out of range); a file that cannot be parsed is
"unreadable", not "an image without a Modality tag". The ranges live in ``ct2x.geometry``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import write_phantom_ct
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import ct2x.geometry as ranges  # SID_RANGE_MM, ..., check_detector: the limits under test
from ct2x.cli import main
from ct2x.errors import CT2XError
from ct2x.geometry import DEFAULT_DETECTOR_WIDTH_MM, DEFAULT_SDD_MM, DEFAULT_SID_MM, CArm
from ct2x.radiograph_geometry import read_radiograph_geometry

GOOD = {
    "DistanceSourceToDetector": "1100",
    "DistanceSourceToPatient": "700",
    "PositionerPrimaryAngle": "-25",
    "PositionerSecondaryAngle": "10",
    "ImagerPixelSpacing": ["0.2", "0.25"],
}


def _dx(path: Path, rows: int = 40, columns: int = 50, raw: dict[str, str] | None = None, **tags) -> Path:
    """A DX file with ``GOOD``'s tags updated by ``tags`` (None drops one); ``raw`` tags are written as the
    bytes given, unchecked (pydicom refuses to set a DS to 'abc')."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns = "DX", rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for keyword, value in {**GOOD, **tags}.items():
        if value is not None:
            setattr(ds, keyword, value)
    for keyword, text in (raw or {}).items():
        tag = Tag(tag_for_keyword(keyword))
        value = text.encode() + (b" " if len(text) % 2 else b"")
        ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, False, True)
    ds.PixelData = np.zeros((8, 8), np.uint16).tobytes()  # the header is what --like reads
    ds.save_as(path, enforce_file_format=True)
    return path


def _note(geometry, keyword: str) -> str:
    (note,) = [n for n in geometry.notes if n.startswith(keyword)]
    return note


# ------------------------------------------------------------------ ranges of real devices


def test_a_source_inside_the_patient_is_replaced_and_named(tmp_path: Path) -> None:
    geometry = read_radiograph_geometry(_dx(tmp_path / "x.dcm", DistanceSourceToPatient="0.001"))
    note = _note(geometry, "DistanceSourceToPatient")
    assert note.startswith("DistanceSourceToPatient = 0.001 mm is outside [100, 3000] mm"), note
    assert "in the patient" in note and f"using {DEFAULT_SID_MM * 1100 / DEFAULT_SDD_MM:g} mm" in note
    assert geometry.sid == pytest.approx(DEFAULT_SID_MM * 1100 / DEFAULT_SDD_MM)


@pytest.mark.parametrize("sdd", ["50", "150", "50000"])
def test_a_source_to_detector_distance_no_device_has_is_replaced(tmp_path: Path, sdd: str) -> None:
    geometry = read_radiograph_geometry(
        _dx(tmp_path / "x.dcm", DistanceSourceToDetector=sdd, DistanceSourceToPatient=None)
    )
    note = _note(geometry, "DistanceSourceToDetector")
    assert note == (
        f"DistanceSourceToDetector = {float(sdd):g} mm is outside [200, 3000] mm, the range of real C-arms and "
        f"radiography stands: using {DEFAULT_SDD_MM:g} mm"
    )
    assert (geometry.sdd, geometry.sid) == (DEFAULT_SDD_MM, DEFAULT_SID_MM)


def test_a_chest_stand_source_is_kept_when_the_detector_distance_is_missing(tmp_path: Path) -> None:
    """Before, the default 1020 mm SDD came first and a valid 1700 mm DistanceSourceToPatient was thrown away."""
    path = _dx(tmp_path / "x.dcm", DistanceSourceToDetector=None, DistanceSourceToPatient="1700")
    geometry = read_radiograph_geometry(path)
    assert geometry.sid == 1700.0 and geometry.sdd == pytest.approx(ranges.matched_chain(1700.0)[0])
    assert 1700.0 + 100 <= geometry.sdd <= 1700.0 + 200
    assert geometry.notes == (
        f"DistanceSourceToDetector is missing: using {geometry.sdd:g} mm (DistanceSourceToPatient 1700 mm + the air "
        "gap of ct2x.geometry.matched_chain)",
    )


def test_an_imager_pixel_spacing_no_detector_has_falls_back_with_its_value(tmp_path: Path) -> None:
    tiny = read_radiograph_geometry(
        _dx(tmp_path / "a.dcm", ImagerPixelSpacing=["1e-9", "1e-9"], PixelSpacing=["0.3", "0.3"])
    )
    assert _note(tiny, "ImagerPixelSpacing") == (
        "ImagerPixelSpacing = 1e-09 mm pixels, outside [0.01, 5] mm, the pixel spacing of real detectors: "
        "using PixelSpacing as the detector's pixel spacing"
    )
    assert tiny.pixel_spacing == (0.3, 0.3)
    alone = read_radiograph_geometry(_dx(tmp_path / "b.dcm", ImagerPixelSpacing=["1e-9", "1e-9"]))
    note = _note(alone, "ImagerPixelSpacing")
    assert (
        note.startswith("ImagerPixelSpacing = 1e-09 mm pixels, outside [0.01, 5] mm")
        and "PixelSpacing is missing" in note
    )
    low, high = ranges.PIXEL_SPACING_RANGE_MM
    assert all(low <= s <= high for s in alone.pixel_spacing)
    patient = read_radiograph_geometry(_dx(tmp_path / "c.dcm", ImagerPixelSpacing=None, PixelSpacing=["9", "9"]))
    assert "PixelSpacing gives 9 mm pixels, outside [0.01, 5] mm" in _note(patient, "ImagerPixelSpacing")


@pytest.mark.parametrize(("rows", "columns"), [(60000, 50), (4, 4)])
def test_rows_or_columns_no_detector_has_are_refused(tmp_path: Path, rows: int, columns: int) -> None:
    with pytest.raises(CT2XError, match=rf"x\.dcm: Rows x Columns = {rows} x {columns} is outside \[8, 16384\] pixels"):
        read_radiograph_geometry(_dx(tmp_path / "x.dcm", rows=rows, columns=columns))


def test_a_detector_wider_than_any_is_refused_with_its_tags(tmp_path: Path) -> None:
    path = _dx(tmp_path / "x.dcm", rows=16000, columns=3000, ImagerPixelSpacing=["0.1", "0.1"])
    with pytest.raises(CT2XError, match=r"16000 x 3000 pixels of 0.1 x 0.1 mm make a 1600 x 300 mm detector, outside "
                                        r"\[5, 1300\] mm a side"):  # fmt: skip
        read_radiograph_geometry(path)


def test_many_pixels_without_a_spacing_take_the_default_detector_not_a_3_m_one(tmp_path: Path) -> None:
    geometry = read_radiograph_geometry(_dx(tmp_path / "x.dcm", rows=2000, columns=2500, ImagerPixelSpacing=None))
    assert geometry.detector_size_mm[1] == pytest.approx(DEFAULT_DETECTOR_WIDTH_MM)
    assert "ImagerPixelSpacing and PixelSpacing are missing" in _note(geometry, "ImagerPixelSpacing")
    assert "the default 298 mm detector" in _note(geometry, "ImagerPixelSpacing")


# ----------------------------------------------------------- missing vs invalid vs unreadable


@pytest.mark.parametrize("text", ["-5", "0", "NaN", "abc"])
@pytest.mark.parametrize("keyword", ["DistanceSourceToDetector", "DistanceSourceToPatient"])
def test_an_invalid_distance_is_named_with_its_value_not_called_missing(
    tmp_path: Path, keyword: str, text: str
) -> None:
    geometry = read_radiograph_geometry(_dx(tmp_path / "x.dcm", raw={keyword: text}))
    note = _note(geometry, keyword)
    shown = f"{text} mm" if text != "abc" else "'abc'"
    assert note.startswith(f"{keyword} = {shown} is not a positive distance in mm: using "), note
    assert "missing" not in note


@pytest.mark.parametrize("text", ["abc", "NaN"])
def test_an_invalid_angle_is_named_with_its_value_not_called_missing(tmp_path: Path, text: str) -> None:
    geometry = read_radiograph_geometry(_dx(tmp_path / "x.dcm", raw={"PositionerPrimaryAngle": text}))
    assert geometry.notes == (f"PositionerPrimaryAngle = {text!r} is not a number of degrees: using 0 degrees (AP)",)
    with_view = read_radiograph_geometry(
        _dx(tmp_path / "v.dcm", raw={"PositionerPrimaryAngle": text}, ViewPosition="PA")
    )
    assert with_view.primary == 180.0
    assert with_view.notes[0].startswith(f"PositionerPrimaryAngle = {text!r} is not a number of degrees: using 180")


def test_an_invalid_pixel_spacing_is_named_with_its_value(tmp_path: Path) -> None:
    geometry = read_radiograph_geometry(_dx(tmp_path / "x.dcm", raw={"ImagerPixelSpacing": "abc\\0.2"}))
    assert _note(geometry, "ImagerPixelSpacing").startswith(
        "ImagerPixelSpacing = 'abc\\\\0.2' is not a positive spacing"
    )


@pytest.mark.parametrize("cut", [140, 300, 400])
def test_a_truncated_header_is_called_truncated_not_an_image_without_modality(tmp_path: Path, cut: int) -> None:
    whole = _dx(tmp_path / "whole.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(whole[:cut])
    with pytest.raises(CT2XError) as error:
        read_radiograph_geometry(path)
    message = str(error.value)
    assert message.startswith(f"{path} is not a readable DICOM file: it ends after {cut} bytes"), message
    assert "truncated" in message and "Modality tag" not in message


def test_garbage_after_the_preamble_is_called_damaged(tmp_path: Path) -> None:
    path = tmp_path / "garbage.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8)))
    with pytest.raises(CT2XError, match=r"garbage\.dcm is not a readable DICOM file: .* damaged or not DICOM") as error:
        read_radiograph_geometry(path)
    assert "Modality tag" not in str(error.value)


def test_a_header_whole_up_to_its_pixels_still_reads(tmp_path: Path) -> None:
    whole = _dx(tmp_path / "whole.dcm").read_bytes()
    path = tmp_path / "cut_in_pixels.dcm"
    path.write_bytes(whole[:-20])  # the image is cut, the geometry is all there
    assert read_radiograph_geometry(path).notes == ()


# -------------------------------------------------------------- the same ranges everywhere


def test_carm_refuses_distances_no_device_has_and_spots_metres() -> None:
    with pytest.raises(CT2XError, match=r"source-to-isocenter distance \(sid\) is 0.001 mm, outside \[100, 3000\] mm"):
        CArm(sid=0.001)
    with pytest.raises(CT2XError, match=r"source-to-detector distance \(sdd\) is 5000 mm, outside \[200, 3000\] mm"):
        CArm(sdd=5000.0)
    with pytest.raises(CT2XError, match=r"is 0.53 mm \(given in metres\? mm are expected\)"):
        CArm(sdd=1.02, sid=0.53)
    assert ranges.SID_RANGE_MM == (100.0, 3000.0) and ranges.SDD_RANGE_MM == (200.0, 3000.0)
    CArm(sid=ranges.SID_RANGE_MM[0], sdd=ranges.SDD_RANGE_MM[0])  # the ends are allowed
    CArm(sid=ranges.SID_RANGE_MM[1] - 1, sdd=ranges.SDD_RANGE_MM[1])


def test_check_detector_names_the_inputs() -> None:
    ranges.check_detector((256, 256), (1.164, 1.164), "x")
    with pytest.raises(CT2XError, match=r"^--size: a detector of 4 x 4 pixels is outside \[8, 16384\] pixels"):
        ranges.check_detector((4, 4), (8.0, 8.0), "--size")
    with pytest.raises(CT2XError, match=r"the detector would be 2.56e-07 x 2.56e-07 mm, outside \[5, 1300\] mm"):
        ranges.check_detector((256, 256), (1e-9, 1e-9), "--pixel")
    assert ranges.DETECTOR_PIXELS_RANGE == (8, 16384) and ranges.DETECTOR_SIDE_RANGE_MM == (5.0, 1300.0)


@pytest.fixture
def ct_file(tmp_path: Path) -> Path:
    return write_phantom_ct(tmp_path / "ct.nrrd", size=16)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--sid", "50"], r"source-to-isocenter distance \(sid\) is 50 mm, outside \[100, 3000\] mm"),
        (["--sdd", "9000"], r"source-to-detector distance \(sdd\) is 9000 mm, outside \[200, 3000\] mm"),
        (["--size", "4", "--pixel", "8"], r"--size 4 x 4 / --pixel 8 x 8 mm: a detector of 4 x 4 pixels"),
        (["--size", "16", "--pixel", "0.0001"], r"the detector would be 0.0016 x 0.0016 mm, outside \[5, 1300\] mm"),
    ],
)
def test_drr_refuses_a_chain_no_device_has(ct_file: Path, tmp_path: Path, capsys, flags, message) -> None:
    out = tmp_path / "out"
    argv = ["drr", str(ct_file), "--angles", "0", "--size", "16", "--step", "1", *flags]
    assert main([*argv, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ct2x: error: "), err
    assert re.search(message, err[0]), err[0]
    assert not out.exists()


def test_synthesize_like_warns_with_the_value_and_refuses_a_detector_no_device_has(tmp_path: Path, capsys) -> None:
    """The geometry is read before the model is loaded: the missing model is the next error."""
    argv = ["synthesize", str(tmp_path / "ct.nrrd"), "--model", str(tmp_path / "none.safetensors"), "--drr-style"]
    inside = _dx(tmp_path / "inside.dcm", DistanceSourceToPatient="0.001")
    with pytest.warns(UserWarning, match=r"^--like inside\.dcm: DistanceSourceToPatient = 0.001 mm is outside"):
        assert main([*argv, "--like", str(inside), "--out", str(tmp_path / "o1")]) == 1
    capsys.readouterr()
    huge = _dx(tmp_path / "huge.dcm", rows=60000)
    assert main([*argv, "--like", str(huge), "--out", str(tmp_path / "o2")]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("ct2x: error: ") and "Rows x Columns = 60000 x 50 is outside [8, 16384] pixels" in line

"""``--like XRAY.dcm``: the C-arm geometry read from a real radiograph's DICOM tags.

The radiographs are written here with pydicom (DX with and without each geometry tag; XA with
its positioner angles), plus our own DX output read back; a CT slice is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from conftest import body_phantom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ct2x.checkpoint import save_model
from ct2x.cli import main
from ct2x.config import CT2XConfig
from ct2x.errors import CT2XError
from ct2x.geometry import DEFAULT_PIXEL_MM, DEFAULT_SDD_MM, DEFAULT_SID_MM, CArm
from ct2x.models import CT2XGAN
from ct2x.radiograph_geometry import read_radiograph_geometry
from ct2x.view_files import write_view_dicom

SOP_CLASSES = {
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "XA": "1.2.840.10008.5.1.4.1.1.12.1",
    "CT": "1.2.840.10008.5.1.4.1.1.2",
}
DX_TAGS = {
    "DistanceSourceToDetector": "1100",
    "DistanceSourceToPatient": "700",
    "PositionerPrimaryAngle": "-25",
    "PositionerSecondaryAngle": "10",
    "ImagerPixelSpacing": ["0.2", "0.25"],
}


def _write(path: Path, modality: str, rows: int = 40, columns: int = 50, **tags) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASSES[modality]
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns = modality, rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.zeros((rows, columns), np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dx_with_every_geometry_tag(tmp_path: Path) -> None:
    geometry = read_radiograph_geometry(_write(tmp_path / "dx.dcm", "DX", **DX_TAGS))
    assert (geometry.primary, geometry.secondary, geometry.sdd, geometry.sid) == (-25.0, 10.0, 1100.0, 700.0)
    assert geometry.detector_shape == (40, 50) and geometry.pixel_spacing == (0.2, 0.25)
    assert geometry.detector_size_mm == pytest.approx((8.0, 12.5))
    assert geometry.modality == "DX" and geometry.notes == ()


@pytest.mark.parametrize(
    ("missing", "default"),
    [
        ("DistanceSourceToDetector", f"using {DEFAULT_SDD_MM:g} mm"),
        ("DistanceSourceToPatient", f"using {DEFAULT_SID_MM * 1100 / DEFAULT_SDD_MM:g} mm"),
        ("PositionerPrimaryAngle", "using 0 degrees (AP)"),
        ("PositionerSecondaryAngle", "using 0 degrees"),
        ("ImagerPixelSpacing", "using PixelSpacing as the detector's pixel spacing"),
    ],
)
def test_dx_without_one_tag_names_it_and_the_default(tmp_path: Path, missing: str, default: str) -> None:
    tags = {k: v for k, v in DX_TAGS.items() if k != missing}
    if missing == "ImagerPixelSpacing":
        tags["PixelSpacing"] = ["0.3", "0.3"]
    geometry = read_radiograph_geometry(_write(tmp_path / "dx.dcm", "DX", **tags))
    (note,) = geometry.notes
    assert note.startswith(f"{missing} is missing") and default in note
    expected = {
        "DistanceSourceToDetector": ("sdd", DEFAULT_SDD_MM),
        "DistanceSourceToPatient": ("sid", DEFAULT_SID_MM * 1100 / DEFAULT_SDD_MM),
        "PositionerPrimaryAngle": ("primary", 0.0),
        "PositionerSecondaryAngle": ("secondary", 0.0),
        "ImagerPixelSpacing": ("pixel_spacing", (0.3, 0.3)),
    }[missing]
    assert getattr(geometry, expected[0]) == pytest.approx(expected[1])


def test_pixel_spacing_at_the_patient_is_scaled_to_the_detector(tmp_path: Path) -> None:
    tags = {k: v for k, v in DX_TAGS.items() if k != "ImagerPixelSpacing"}
    magnified = _write(
        tmp_path / "m.dcm", "DX", PixelSpacing=["0.1", "0.1"], EstimatedRadiographicMagnificationFactor="1.5", **tags
    )
    assert read_radiograph_geometry(magnified).pixel_spacing == pytest.approx((0.15, 0.15))
    calibrated = _write(
        tmp_path / "g.dcm", "DX", PixelSpacing=["0.1", "0.1"], PixelSpacingCalibrationType="GEOMETRY", **tags
    )
    assert read_radiograph_geometry(calibrated).pixel_spacing == pytest.approx((0.1 * 1100 / 700,) * 2)
    bare = read_radiograph_geometry(_write(tmp_path / "bare.dcm", "CR"))
    assert bare.pixel_spacing == (DEFAULT_PIXEL_MM, DEFAULT_PIXEL_MM)
    assert len(bare.notes) == 5 and any("ImagerPixelSpacing and PixelSpacing are missing" in n for n in bare.notes)


def test_dx_view_position_gives_the_primary_angle(tmp_path: Path) -> None:
    tags = {k: v for k, v in DX_TAGS.items() if k != "PositionerPrimaryAngle"}
    pa = read_radiograph_geometry(_write(tmp_path / "pa.dcm", "DX", ViewPosition="PA", **tags))
    assert pa.primary == 180.0 and "ViewPosition PA" in pa.notes[0]
    lateral = read_radiograph_geometry(_write(tmp_path / "ll.dcm", "DX", ViewPosition="LL", **tags))
    assert lateral.primary == 90.0


def test_xa_positioner_angles(tmp_path: Path) -> None:
    xa = _write(
        tmp_path / "xa.dcm", "XA", rows=64, columns=64, PositionerPrimaryAngle="35", PositionerSecondaryAngle="-20",
        DistanceSourceToDetector="1200", DistanceSourceToPatient="785", ImagerPixelSpacing=["0.308", "0.308"],
    )  # fmt: skip
    geometry = read_radiograph_geometry(xa)
    assert (geometry.primary, geometry.secondary) == (35.0, -20.0)  # LAO 35, CAUD 20
    assert (geometry.sdd, geometry.sid, geometry.detector_shape) == (1200.0, 785.0, (64, 64))
    assert geometry.modality == "XA" and geometry.notes == ()
    no_angles = read_radiograph_geometry(
        _write(tmp_path / "xa2.dcm", "XA", DistanceSourceToDetector="1200", DistanceSourceToPatient="785")
    )
    assert [n.split()[0] for n in no_angles.notes] == ["PositionerPrimaryAngle", "PositionerSecondaryAngle",
                                                        "ImagerPixelSpacing"]  # fmt: skip


def test_our_own_dx_output_reads_back_to_the_same_geometry(tmp_path: Path) -> None:
    carm = CArm(primary=-40.0, secondary=15.0, sdd=1150.0, sid=610.0, detector_shape=(48, 64), pixel_spacing=(0.9, 1.1))
    path = tmp_path / "ours.dcm"
    write_view_dicom(path, np.random.default_rng(0).random((48, 64)), carm, "round trip")
    geometry = read_radiograph_geometry(path)
    assert geometry.notes == ()
    assert (geometry.primary, geometry.secondary) == (carm.primary, carm.secondary)
    assert (geometry.sdd, geometry.sid) == (carm.sdd, carm.sid)
    assert geometry.detector_shape == carm.detector_shape
    assert geometry.pixel_spacing == pytest.approx(carm.pixel_spacing)


def test_a_ct_slice_and_a_non_dicom_file_are_refused(tmp_path: Path) -> None:
    ct = _write(tmp_path / "ct.dcm", "CT", ImagePositionPatient=["0", "0", "0"], PixelSpacing=["0.7", "0.7"])
    with pytest.raises(CT2XError, match=r"is a CT image, not a projection radiograph: give a DX, CR, XA or RF"):
        read_radiograph_geometry(ct)
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    with pytest.raises(CT2XError, match="not a readable DICOM file"):
        read_radiograph_geometry(tmp_path / "x.png")
    with pytest.raises(CT2XError, match="does not exist"):
        read_radiograph_geometry(tmp_path / "missing.dcm")


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("like")
    config = CT2XConfig.preset("small", image_size=64, lpips_backbone="random")
    torch.manual_seed(2)
    weights = {k: v for k, v in CT2XGAN(config).state_dict().items() if not k.startswith("discriminator.")}
    save_model(root / "model.safetensors", weights, {"config": config.to_dict(), "training": {"steps": 0}})
    volume = body_phantom(size=20, spacing=5.0)
    image = sitk.GetImageFromArray(volume.array)
    image.SetSpacing(tuple(volume.spacing))
    sitk.WriteImage(image, str(root / "ct.nrrd"))
    return {"model": root / "model.safetensors", "ct": root / "ct.nrrd"}


def test_cli_synthesizes_like_a_radiograph(small_model: dict[str, Path], tmp_path: Path, capsys) -> None:
    like = _write(
        tmp_path / "xa.dcm", "XA", rows=60, columns=80, PositionerPrimaryAngle="35", PositionerSecondaryAngle="-20",
        DistanceSourceToDetector="1200", ImagerPixelSpacing=["0.4", "0.4"],
    )  # fmt: skip
    out = tmp_path / "out"
    argv = ["synthesize", str(small_model["ct"]), "--model", str(small_model["model"]), "--drr-style"]
    with pytest.warns(UserWarning, match=r"^--like xa.dcm: DistanceSourceToPatient is missing: using 623.5"):
        assert main([*argv, "--like", str(like), "--format", "dcm", "--out", str(out)]) == 0
    (written,) = out.glob("view00_*.dcm")
    assert written.name == "view00_LAO35_CAUD20.dcm"
    back = read_radiograph_geometry(written)  # the synthesized view carries the radiograph's geometry
    assert (back.primary, back.secondary, back.sdd) == (35.0, -20.0, 1200.0)
    assert back.sid == pytest.approx(DEFAULT_SID_MM * 1200 / DEFAULT_SDD_MM)
    assert back.detector_size_mm == pytest.approx((24.0, 32.0))  # 60 x 80 pixels of 0.4 mm, read out at 64 x 64
    # the flags override the radiograph's values
    with pytest.warns(UserWarning, match="DistanceSourceToPatient"):
        assert main([*argv, "--like", str(like), "--angles", "0", "--sdd", "1000", "--format", "dcm",
                     "--out", str(tmp_path / "o2")]) == 0  # fmt: skip
    (written,) = (tmp_path / "o2").glob("view00_*.dcm")
    again = read_radiograph_geometry(written)
    assert (again.primary, again.secondary, again.sdd) == (0.0, -20.0, 1000.0)
    ct_slice = _write(tmp_path / "ct.dcm", "CT")
    assert main([*argv, "--like", str(ct_slice), "--out", str(tmp_path / "o3")]) == 1
    assert (
        capsys.readouterr().err.strip().splitlines()[-1].startswith("ct2x: error: ") and not (tmp_path / "o3").exists()
    )

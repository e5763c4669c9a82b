"""The ``ct2x drr`` command: outputs a user can open, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import body_phantom, write_dicom_series
from PIL import Image

from ct2x.cli import main
from ct2x.geometry import CArm

TEXT = {"encoding": "utf-8", "errors": "replace"}  # progress bars draw with Unicode blocks
FAST = ["--size", "24", "--pixel", "8", "--step", "0.5"]  # the default --imaging: the C-arm's radiograph


def _write(path: Path, array: np.ndarray, spacing=(2.0, 2.0, 2.0)) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing[: image.GetDimension()])
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def ct_file(tmp_path: Path) -> Path:
    volume = body_phantom(size=32, spacing=4.0)
    image = sitk.GetImageFromArray(volume.array)
    image.SetSpacing(tuple(volume.spacing))
    image.SetOrigin(tuple(volume.origin))
    path = tmp_path / "phantom.nrrd"
    sitk.WriteImage(image, str(path))
    return path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_drr_writes_nrrd_png_and_contact_sheet(ct_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["drr", str(ct_file), "--angles", "-30", "0", "30", "--secondary", "10", *FAST, "--out", str(out)]
    code, err = _run(argv, capsys)
    assert code == 0, err
    nrrds = sorted(out.glob("*.nrrd"))
    stems = ["view00_RAO30_CRAN10", "view01_LAO0_CRAN10", "view02_LAO30_CRAN10"]
    assert [p.name for p in nrrds] == [f"{stem}{end}.nrrd" for stem in stems for end in ("", "_coverage")]
    assert len(list(out.glob("view*.png"))) == 6 and (out / "contact_sheet.png").is_file()  # views and masks
    nrrds = nrrds[::2]  # the views (test_coverage.py checks the masks)
    image = sitk.ReadImage(str(nrrds[2]))
    assert image.GetPixelID() == sitk.sitkFloat32 and image.GetSize() == (24, 24, 1)
    assert image.GetSpacing() == pytest.approx((8.0, 8.0, 1.0))
    assert image.GetMetaData("ct2x_primary_deg") == "30" and image.GetMetaData("ct2x_secondary_deg") == "10"
    # The NRRD lies on the detector plane: its centre pixel is the detector centre.
    carm = CArm(30, 10, detector_shape=(24, 24), pixel_spacing=(8, 8), isocenter=(0, 0, 0))
    centre = image.TransformContinuousIndexToPhysicalPoint((11.5, 11.5, 0.0))
    assert np.allclose(centre, carm.detector_center, atol=1e-3)
    pixels = sitk.GetArrayFromImage(image)[0]
    assert np.isfinite(pixels).all() and pixels.max() > 0.5  # the phantom attenuates (bright)
    assert image.GetMetaData("ct2x_imaging") == "mobile_carm_flat_panel"
    assert Image.open(out / "contact_sheet.png").size[0] > 3 * 24


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--imaging", "raw", "--spectrum", "70XX"], "spectrum"),
        (["--sdd", "-10"], "positive distance"),
        (["--sid", "1200"], "must be smaller"),
        (["--step", "0"], "step"),
        (["--photons", "-5"], "photons"),
        (["--size", "1", "2", "3"], "--size"),
    ],
)
def test_bad_options_are_one_line_errors(ct_file: Path, tmp_path: Path, capsys, extra, message) -> None:
    code, err = _run(["drr", str(ct_file), *FAST, *extra, "--out", str(tmp_path / "o")], capsys)
    assert code == 1
    assert err.startswith("ct2x: error:") and err.count("\n") == 1 and message in err


def _two_series(folder: Path) -> Path:
    hu = body_phantom(size=8, spacing=4.0).array
    write_dicom_series(folder / "a", hu, (4.0, 4.0, 4.0), (0.0, 0.0, 0.0), "1.2.826.0.1.3680043.2.1125.1", "ARTERIAL")
    write_dicom_series(folder / "b", hu, (4.0, 4.0, 4.0), (0.0, 0.0, 0.0), "1.2.826.0.1.3680043.2.1125.2", "VENOUS")
    return folder


def _four_d(path: Path) -> Path:
    frame = sitk.GetImageFromArray(np.zeros((4, 4, 4), np.float32))
    sitk.WriteImage(sitk.JoinSeries([frame, frame]), str(path))
    return path


def _zero_spacing(path: Path) -> Path:
    good = _write(path.with_name("good.mha"), np.full((4, 4, 4), -1000, np.float32), (1.0, 2.0, 1.0))
    path.write_bytes(good.read_bytes().replace(b"ElementSpacing = 1 2 1", b"ElementSpacing = 1 0 1"))
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.nii.gz", "missing.nii.gz"),
        (lambda d: _write(d / "flat.nrrd", np.zeros((16, 16), np.float32)), "2D"),
        (lambda d: _four_d(d / "movie.nii.gz"), "4D"),
        (lambda d: _write(d / "nan.nrrd", np.full((4, 4, 4), np.nan, np.float32)), "NaN"),
        (lambda d: _zero_spacing(d / "zero.mha"), "spacing"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "empty"),
        (lambda d: _two_series(d / "two"), "series"),
    ],
)
def test_bad_ct_is_a_one_line_error(tmp_path: Path, capsys, make, message) -> None:
    path = make(tmp_path)
    before = path.read_bytes() if path.is_file() else None
    code, err = _run(["drr", str(path), *FAST, "--out", str(tmp_path / "o")], capsys)
    assert code == 1, err
    assert err.startswith("ct2x: error:") and err.count("\n") == 1 and message.lower() in err.lower(), err
    if before is not None:
        assert path.read_bytes() == before


def test_two_series_error_names_both_and_says_how_to_choose(tmp_path: Path, capsys) -> None:
    code, err = _run(["drr", str(_two_series(tmp_path / "two")), *FAST, "--out", str(tmp_path / "o")], capsys)
    assert code == 1
    assert "1.2.826.0.1.3680043.2.1125.1" in err and "1.2.826.0.1.3680043.2.1125.2" in err and "--series" in err


def test_not_ct_warns_in_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "mri.nrrd", np.full((16, 16, 16), 300.0, np.float32))
    argv = ["drr", str(path), *FAST, "--angles", "0", "--out", str(tmp_path / "o")]
    result = subprocess.run([sys.executable, "-m", "ct2x", *argv], capture_output=True, **TEXT)
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if line.startswith("ct2x: warning:")]
    assert len(warning) == 1 and "below -500" in warning[0]


def test_angles_as_text_exit_nonzero_without_traceback(ct_file: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ct2x", "drr", str(ct_file), "--angles", "forty"], capture_output=True, **TEXT
    )
    assert result.returncode == 2
    assert "invalid float value: 'forty'" in result.stderr and "Traceback" not in result.stderr


def test_unwritable_output_is_a_clear_error(ct_file: Path, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, err = _run(["drr", str(ct_file), *FAST, "--out", str(blocker)], capsys)
    assert code == 1 and "not a folder" in err

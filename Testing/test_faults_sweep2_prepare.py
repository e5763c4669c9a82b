"""Faults of issue 23 around ``ct2x prepare`` and the CT readers (second sweep).

A CT too thin for the dataset's grid is skipped naming its thickness and the minimum (a thin slab is
warned about); a CT that cannot be opened (permission denied) is reported and skipped while the others
are prepared; every numeric prepare option is checked in one line before any work; a dataset of other
settings names each setting that differs; the memory advice of ``--random-views`` names prepare's
options; a NIfTI with a sheared sform reads like the same volume as NRRD; a radiograph or a CT slice
that its decoder cannot read is one line; ``ct2x evaluate --drr-step inf`` is refused up front.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import body_phantom, one_line_error, write_dicom_series, write_phantom_ct
from PIL import Image
from test_prepare import SMALL

from ct2x.cli import main
from ct2x.data.prepare import PrepareSettings, prepare_dataset
from ct2x.data.radiographs import find_radiographs
from ct2x.errors import CT2XError
from ct2x.evaluation.evaluate import EvaluationSettings
from ct2x.volume import read_ct

FAST = ["--angles", "0", "--size", "16", "--grid", "16", "--step", "0.5", "--photons", "0", "--workers", "1"]


def _slab(path: Path, slices: int) -> Path:
    """``slices`` middle slices (4 mm) of a 48 x 48 body phantom (4 mm voxels: 192 mm wide)."""
    volume = body_phantom(size=48, spacing=4.0)
    image = sitk.GetImageFromArray(volume.array[24 - slices // 2 : 24 - slices // 2 + slices])
    image.SetSpacing((4.0, 4.0, 4.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


# ---------------------------------------------------------------------------- item 6: thin CTs


def test_a_ct_too_thin_for_the_grid_is_skipped_naming_its_thickness_and_the_minimum(tmp_path: Path) -> None:
    root = tmp_path / "cts"
    write_phantom_ct(root / "a.nii.gz", 20)
    _slab(root / "thin.nii.gz", 2)  # 8 mm thick, 192 mm wide: the 16^3 grid has 12 mm voxels
    report = prepare_dataset(root, tmp_path / "data", SMALL, progress=False)
    assert [Path(p).name for p in report.done] == ["a.nii.gz"]
    assert [Path(p).name for p, _ in report.failed] == ["thin.nii.gz"]
    reason = report.failed[0][1]
    assert "too thin" in reason and "8 mm" in reason and "2 slices" in reason, reason
    assert "12 mm" in reason and "24 mm" in reason and "--grid" in reason, reason  # the voxel and the minimum
    assert "\n" not in reason


def test_a_thin_slab_is_prepared_with_one_warning_naming_its_thickness(tmp_path: Path) -> None:
    root = tmp_path / "cts"
    _slab(root / "slab.nii.gz", 7)  # 28 mm: 2.3 voxels of the 16^3 grid
    with pytest.warns(UserWarning, match=r"slab\.nii\.gz.* 28 mm \(7 slices of 4 mm\).* 2\.3 voxels.* 12 mm") as caught:
        report = prepare_dataset(root, tmp_path / "data", SMALL, progress=False)
    assert len(report.done) == 1
    assert all("\n" not in str(w.message) for w in caught)


def test_a_worker_warning_reaches_the_command_line_as_one_line(tmp_path: Path) -> None:
    """In a real process: pytest records the warnings of an in-process run before they are printed."""
    root = tmp_path / "cts"
    _slab(root / "slab.nii.gz", 7)
    argv = [sys.executable, "-m", "ct2x", "prepare", "--ct", str(root), "--out", str(tmp_path / "d"), *FAST]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    job = subprocess.run(argv, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=600)
    assert job.returncode == 0, job.stderr[-2000:]
    err = job.stderr.replace("\r", "\n")
    lines = [line for line in err.splitlines() if "slab.nii.gz" in line]
    assert len(lines) == 1 and "ct2x: warning:" in lines[0], err
    assert "volume = read_ct" not in err and "prepare.py:" not in err, err  # not Python's two-line format


# --------------------------------------------------------------------- item 8: unreadable CTs


def test_a_ct_that_cannot_be_opened_is_reported_and_the_others_prepared(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root chmod does not deny a read, so opening b.nii.gz raises PermissionError as it would for
    another user's file (the hashing runs in this process; the workers read only the CTs they get)."""
    root = tmp_path / "cts"
    write_phantom_ct(root / "a.nii.gz", 20)
    write_phantom_ct(root / "b.nii.gz", 16, shift_mm=30.0)
    real_builtin, real_io = builtins.open, io.open

    def denying(real):  # noqa: ANN001, ANN202
        def open_(file, *args, **kwargs):  # noqa: ANN001, ANN202
            if os.fspath(file).endswith("b.nii.gz") if isinstance(file, (str, os.PathLike)) else False:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(file))
            return real(file, *args, **kwargs)

        return open_

    monkeypatch.setattr(builtins, "open", denying(real_builtin))
    monkeypatch.setattr(io, "open", denying(real_io))
    assert main(["prepare", "--ct", str(root), "--out", str(tmp_path / "d"), *FAST]) == 1
    captured = capsys.readouterr()
    assert "prepared 1 CTs" in captured.out, captured
    errors = [line for line in captured.err.splitlines() if line.startswith("ct2x: error:")]
    assert len(errors) == 1 and "1 of 2 CTs could not be prepared" in errors[0], captured.err
    assert "b.nii.gz" in captured.err and "ermission denied" in captured.err, captured.err
    assert "Traceback" not in captured.err


# ------------------------------------------------------------------ item 9: numeric options


@pytest.mark.parametrize(
    ("option", "named"),
    [
        (["--size", "0"], "--size"),
        (["--size", "-3"], "--size"),
        (["--grid", "0"], "--grid"),
        (["--grid", "1"], "--grid"),
        (["--step", "0"], "--step"),
        (["--step", "nan"], "--step"),
        (["--step", "inf"], "--step"),
        (["--photons", "nan"], "--photons"),
        (["--photons", "inf"], "--photons"),
        (["--photons", "-1"], "--photons"),
        (["--random-views", "-1"], "--random-views"),
        (["--angles", "nan"], "--angles"),
        (["--angles", "0", "--secondary", "200"], "--secondary"),
        (["--angles", "0", "30", "--secondary", "1", "2", "3"], "--secondary"),
        (["--workers", "0"], "--workers"),
    ],
)
def test_every_numeric_prepare_option_is_checked_in_one_line_before_any_work(
    option: list[str], named: str, tmp_path: Path, capsys
) -> None:
    root = tmp_path / "cts"
    write_phantom_ct(root / "a.nii.gz", 16)
    out = tmp_path / "d"
    err = one_line_error(["prepare", "--ct", str(root), "--out", str(out), *FAST, *option], capsys)
    assert named in err, err
    assert not out.exists()  # refused before the dataset folder is made


def test_prepare_settings_refuse_bad_numbers_in_python_too() -> None:
    for bad in ({"grid_size": 0}, {"detector_size": 0}, {"step": float("inf")}, {"grid_spacing_mm": -1.0}):
        with pytest.raises(CT2XError, match=next(iter(bad))):
            PrepareSettings(**bad)
    with pytest.raises(CT2XError, match="sid_range"):
        PrepareSettings(random_views=4, sid_range=(900.0, 100.0))


def test_random_views_that_cannot_fit_are_refused_with_prepares_own_advice(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ct2x.memory.system_memory", lambda: (8 * 10**9, 4 * 10**9))
    root = tmp_path / "cts"
    write_phantom_ct(root / "a.nii.gz", 16)
    out = tmp_path / "d"
    argv = ["prepare", "--ct", str(root), "--out", str(out), "--random-views", "100000", "--size", "256"]
    err = one_line_error([*argv, "--workers", "1"], capsys)
    assert "100000 views" in err and "needs about" in err, err
    assert "--random-views" in err and "--size" in err and "ct2x drr" not in err, err
    assert not out.exists()


# ---------------------------------------------------------------- other settings, named


def test_a_dataset_of_other_settings_names_each_setting_that_differs(tmp_path: Path) -> None:
    root = tmp_path / "cts"
    write_phantom_ct(root / "a.nii.gz", 16)
    prepare_dataset(root, tmp_path / "data", SMALL, progress=False)
    other = PrepareSettings(angles=(0.0,), detector_size=24, pixel_mm=6.0, step=1.0, photons=0, grid_size=16)
    with pytest.raises(CT2XError, match="other settings") as error:
        prepare_dataset(root, tmp_path / "data", other, progress=False)
    message = str(error.value)
    assert "angles" in message and "[-60.0, 0.0, 60.0]" in message and "[0.0]" in message, message
    assert "step" in message and "0.5" in message and "1.0" in message, message
    assert "sid_range" not in message and "spectrum" not in message, message  # the settings that agree are not listed


# -------------------------------------------------------------------------- sheared NIfTI


def _sheared_volume() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(array, LPS direction with a sheared k axis (unit columns), spacing)."""
    array = body_phantom(size=20, spacing=4.0).array.astype(np.int16)
    direction = np.array([[1.0, 0.0, 0.3], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    direction /= np.linalg.norm(direction, axis=0)
    return array, direction, np.array([4.0, 4.0, 4.0])


def _write_sheared_nifti(path: Path, qform: bool) -> None:
    """The sheared volume as NIfTI-1: written by ITK unsheared, then its sform set to the sheared
    voxel-to-RAS matrix (sform_code 1); ``qform``: keep ITK's unsheared qform (code 1), else code 0."""
    array, direction, spacing = _sheared_volume()
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin((-40.0, -40.0, -40.0))
    plain = path.with_name("plain.nii")
    sitk.WriteImage(image, str(plain))
    data = bytearray(plain.read_bytes())
    plain.unlink()
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing
    lps[:3, 3] = (-40.0, -40.0, -40.0)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    assert struct.unpack("<i", data[:4])[0] == 348
    struct.pack_into("<hh", data, 252, 1 if qform else 0, 1)  # qform_code, sform_code
    struct.pack_into("<12f", data, 280, *ras[:3].ravel())  # srow_x, srow_y, srow_z
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("qform", [False, True], ids=["sform-only", "with-unsheared-qform"])
def test_a_sheared_nifti_reads_like_the_same_volume_as_nrrd(tmp_path: Path, qform: bool) -> None:
    array, direction, spacing = _sheared_volume()
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin((-40.0, -40.0, -40.0))
    image.SetDirection(direction.ravel().tolist())
    sitk.WriteImage(image, str(tmp_path / "ct.nrrd"))
    _write_sheared_nifti(tmp_path / "ct.nii", qform)
    before = (tmp_path / "ct.nii").read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ITK's own warning about the sform
        nrrd, nifti = read_ct(tmp_path / "ct.nrrd"), read_ct(tmp_path / "ct.nii")
    np.testing.assert_allclose(nrrd.ijk_to_lps, nifti.ijk_to_lps, atol=1e-4)
    np.testing.assert_array_equal(nrrd.array, nifti.array)
    assert (tmp_path / "ct.nii").read_bytes() == before


def test_a_sheared_nifti_is_rendered_like_the_nrrd(tmp_path: Path, capsys) -> None:
    _write_sheared_nifti(tmp_path / "ct.nii", qform=False)
    argv = ["drr", str(tmp_path / "ct.nii"), "--size", "16", "--angles", "0", "--imaging", "raw", "--photons", "0"]
    argv += ["--step", "0.5"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 0, capsys.readouterr().err
    assert "damaged" not in capsys.readouterr().err


# ----------------------------------------------------------------- decoder errors, one line


def test_a_radiograph_its_decoder_cannot_read_is_skipped_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "xray"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 251).astype(np.uint8)).save(folder / name)
    image = sitk.GetImageFromArray((np.arange(64 * 64).reshape(64, 64) * 7 % 4000).astype(np.uint16))
    image.SetMetaData("0008|0060", "DX")
    writer = sitk.ImageFileWriter()
    writer.UseCompressionOn()
    writer.SetCompressor("JPEG")  # GDCM: JPEG Lossless, Process 14
    writer.SetFileName(str(folder / "c.dcm"))
    writer.Execute(image)
    try:
        pixels = pydicom.dcmread(folder / "c.dcm").pixel_array
    except Exception as error:  # noqa: BLE001 (pydicom raises many types)
        assert "\n" in str(error)  # pydicom's own message lists its plugins on separate lines
    else:
        assert pixels.shape == (64, 64)
        pytest.skip("pydicom decodes JPEG Lossless here (pylibjpeg or gdcm installed)")
    with pytest.warns(UserWarning, match="c.dcm") as caught:
        assert len(find_radiographs(folder, size=32).paths) == 2
    assert all("\n" not in str(w.message) for w in caught), [str(w.message) for w in caught]


def test_a_ct_slice_its_jpeg_decoder_cannot_read_is_one_line(tmp_path: Path, capfd) -> None:
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLosslessSV1

    folder = tmp_path / "ct"
    hu = np.full((4, 8, 8), -1000, np.int16)
    hu[:, 3:5, 3:5] = 700
    write_dicom_series(folder, hu, (2.0, 2.0, 3.0), (0.0, 0.0, 0.0), "1.2.826.0.1.3680043.2.1125.23", "AX")
    for path in sorted(folder.iterdir()):
        dataset = pydicom.dcmread(path)
        dataset.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        dataset.PixelData = encapsulate([b"\xff\xd8\xff\xc3" + bytes(40) + b"\xff\xd9"])  # an empty JPEG stream
        dataset["PixelData"].VR = "OB"
        dataset.save_as(path, enforce_file_format=True)
    argv = ["drr", str(folder), "--size", "16", "--angles", "0", "--imaging", "raw", "--photons", "0"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 1
    err = capfd.readouterr().err
    assert err.startswith("ct2x: error:") and err.count("\n") == 1, err
    assert "JPEG" in err, err  # what the decoder said is kept, on the one line


# ------------------------------------------------------------------------ evaluate --drr-step


@pytest.mark.parametrize("option", ["--drr-step", "--scale-step"])
def test_evaluate_refuses_an_infinite_ray_step_up_front(option: str, tmp_path: Path, capsys) -> None:
    argv = ["evaluate", "--model", str(tmp_path / "m.safetensors"), "--data", str(tmp_path / "d")]
    err = one_line_error([*argv, "--xray", str(tmp_path / "x"), "--out", str(tmp_path / "o"), option, "inf"], capsys)
    assert option in err and "inf" in err, err
    with pytest.raises(CT2XError, match="drr_step"):
        EvaluationSettings(drr_step=float("inf"))

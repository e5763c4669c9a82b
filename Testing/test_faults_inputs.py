"""Damaged and unusual inputs outside the CT reader: devices the machine lacks, damaged model cards,
evaluate's inputs checked before any network is built, oversized ("decompression bomb") and misplaced
style references, radiograph folders of one image, renders that cannot fit in memory, empty DRRs, and
the DRR's Poisson noise as a per-pixel draw. Each refusal is one ``ct2x: error:`` line and leaves the
inputs and outputs untouched."""

from __future__ import annotations

import json
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import body_phantom, one_line_error
from PIL import Image

from ct2x.checkpoint import save_model
from ct2x.cli import main
from ct2x.config import CT2XConfig
from ct2x.data.prepare import PrepareSettings, prepare_dataset
from ct2x.data.radiographs import (
    MAX_PIXELS,
    NotRadiographWarning,
    find_radiographs,
    radiograph_from_array,
    read_radiograph,
)
from ct2x.device import torch_device
from ct2x.drr import render_drr
from ct2x.drr.noise import counter_uniforms, poisson_noise, poisson_quantile
from ct2x.errors import CT2XError
from ct2x.geometry import views
from ct2x.memory import MemoryNeedWarning
from ct2x.samples import bundled_model
from ct2x.volume import CTVolume

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")


@pytest.fixture
def ct_file(tmp_path: Path) -> Path:
    volume = body_phantom(size=24, spacing=5.0)
    image = sitk.GetImageFromArray(volume.array)
    image.SetSpacing(tuple(volume.spacing))
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(image, str(path))
    return path


def _gradient_png(path: Path, size: int = 40) -> Path:
    Image.fromarray(np.tile(np.linspace(0, 255, size), (size, 1)).astype(np.uint8)).save(path)
    return path


# ----------------------------------------------------------------------------------- devices


@pytest.mark.parametrize("device", ["tpu", "mps", "cuda", "cuda:7"])
def test_one_device_check_for_every_verb(device: str) -> None:
    if device.startswith("cuda") and torch.cuda.is_available() and device == "cuda":
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(CT2XError, match=f"device '{device}'|unknown device '{device}'"):
        torch_device(device)
    assert torch_device("cpu") == torch.device("cpu")
    assert torch_device(None) == torch_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("device", ["tpu", pytest.param("cuda", marks=NO_GPU)])
def test_synthesize_and_evaluate_refuse_a_missing_device_before_any_work(
    device: str, ct_file: Path, tmp_path: Path, capsys
) -> None:
    model = str(bundled_model())
    out = tmp_path / "out"
    err = one_line_error(
        ["synthesize", str(ct_file), "--model", model, "--drr-style", "--device", device, "--out", str(out)], capsys
    )
    assert f"'{device}'" in err and not out.exists()
    (tmp_path / "xray").mkdir()
    argv = ["evaluate", "--model", model, "--data", str(tmp_path), "--xray", str(tmp_path / "xray")]
    err = one_line_error([*argv, "--device", device, "--out", str(out)], capsys)
    assert f"'{device}'" in err and not out.exists()


# ------------------------------------------------------------------------------- model cards


def _model_copy(folder: Path, card) -> Path:  # noqa: ANN001 (any JSON value)
    folder.mkdir()
    path = folder / "m.safetensors"
    shutil.copyfile(bundled_model(), path)
    path.with_suffix(".json").write_text(json.dumps(card), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("card", "message"),
    [
        ([{"format": "ct2x-model", "version": 1}], "holds a JSON list"),
        ({"format": "ct2x-model", "version": 1, "training": {}}, "has no 'config'"),
        ({"format": "ct2x-model", "version": 1, "config": [1, 2]}, "'config' of the model card"),
        ({"format": "ct2x-model", "version": 1, "config": {"image_size": "big"}}, "'config' of the model card"),
    ],
)
def test_damaged_model_card_is_aone_line_error(card, message: str, ct_file: Path, tmp_path: Path, capsys) -> None:
    model = _model_copy(tmp_path / "model", card)
    before = model.with_suffix(".json").read_bytes()
    out = tmp_path / "out"
    argv = ["synthesize", str(ct_file), "--model", str(model), "--drr-style", "--device", "cpu", "--out", str(out)]
    err = one_line_error(argv, capsys)
    assert message in err and "m.json" in err, err
    assert model.with_suffix(".json").read_bytes() == before and not out.exists()


# ---------------------------------------------------------------- evaluate checks inputs first


@pytest.fixture
def no_networks(monkeypatch) -> None:
    """Building or loading any network fails the test: the inputs must be refused before."""

    def fail(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a network was loaded before the inputs were checked")

    monkeypatch.setattr("ct2x.evaluation.evaluate.load_model", fail)
    monkeypatch.setattr("ct2x.evaluation.evaluate.untrained_model", fail)
    monkeypatch.setattr("ct2x.evaluation.evaluate.InceptionFeatures", fail)


def _small_model(path: Path) -> Path:
    save_model(path, {}, {"config": CT2XConfig.preset("small", image_size=64).to_dict()})  # the card is all it reads
    return path


def test_evaluate_refuses_one_radiograph_before_any_network(tmp_path: Path, capsys, no_networks) -> None:
    (tmp_path / "xray").mkdir()
    _gradient_png(tmp_path / "xray" / "only.png")
    model = _small_model(tmp_path / "model.safetensors")
    argv = ["evaluate", "--model", str(model), "--data", str(tmp_path), "--xray", str(tmp_path / "xray")]
    err = one_line_error([*argv, "--out", str(tmp_path / "r")], capsys)
    assert "at least 2 real radiographs" in err and not (tmp_path / "r").exists()


def test_evaluate_refuses_one_held_out_ct_before_any_network(
    ct_file: Path, tmp_path: Path, capsys, no_networks
) -> None:
    (tmp_path / "cts").mkdir()
    shutil.copyfile(ct_file, tmp_path / "cts" / "ct.nrrd")
    settings = PrepareSettings(angles=(0.0,), detector_size=32, pixel_mm=8.0, step=1.0, photons=0, grid_size=16)
    prepare_dataset(tmp_path / "cts", tmp_path / "data", settings, workers=1, progress=False)
    (tmp_path / "xray").mkdir()
    for name in ("a.png", "b.png"):
        _gradient_png(tmp_path / "xray" / name)
    model = _small_model(tmp_path / "model.safetensors")
    argv = ["evaluate", "--model", str(model), "--data", str(tmp_path / "data"), "--xray", str(tmp_path / "xray")]
    err = one_line_error([*argv, "--out", str(tmp_path / "r")], capsys)
    assert "at least 2 held-out CTs" in err and not (tmp_path / "r").exists()


# ------------------------------------------------------------------------- style references


def _bomb_png(path: Path, width: int, height: int) -> Path:
    """A 1-bit grey PNG of ``width`` x ``height`` zeros: tens of kB on disk, ``width * height`` pixels
    decoded; written row block by row block, never held in memory whole."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row * min(1000, height - r)) for r in range(0, height, 1000)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [20000, 9000])  # 400 MP (Pillow refuses to open it), 81 MP (opens, over our limit)
def test_decompression_bomb_style_is_aone_line_error(side: int, ct_file: Path, tmp_path: Path, capsys) -> None:
    bomb = _bomb_png(tmp_path / "bomb.png", side, side)
    assert bomb.stat().st_size < 200_000 and side * side > MAX_PIXELS
    out = tmp_path / "out"
    argv = ["synthesize", str(ct_file), "--model", str(bundled_model()), "--style", str(bomb), "--device", "cpu"]
    err = one_line_error([*argv, "--out", str(out)], capsys)
    assert "bomb.png" in err and "megapixels" in err and "not decoded" in err, err
    assert not out.exists()


def test_synthesize_without_model_uses_the_bundled_one(ct_file: Path, tmp_path: Path, capsys) -> None:
    """--model may be left out: the bundled model is used (its stored styles are the ones listed)."""
    from ct2x.checkpoint import load_style_codes

    stored = ", ".join(sorted(load_style_codes(bundled_model())))
    argv = ["synthesize", str(ct_file), "--model-style", "no-such-style", "--device", "cpu"]
    err = one_line_error([*argv, "--out", str(tmp_path / "out")], capsys)
    assert f"{bundled_model().name} stores no style named 'no-such-style' (stored styles: {stored})" in err, err


def test_folder_scan_reports_and_skips_a_bomb(tmp_path: Path) -> None:
    _bomb_png(tmp_path / "bomb.png", 20000, 20000)
    for name in ("a.png", "b.png"):
        _gradient_png(tmp_path / name)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable file\(s\).*bomb\.png.*megapixels"):
        found = find_radiographs(tmp_path, size=8)
    assert [p.name for p in found.paths] == ["a.png", "b.png"]
    assert [p.name for p, _ in found.skipped] == ["bomb.png"]


def test_a_folder_as_style_says_it_is_a_folder(ct_file: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "xrays").mkdir()
    _gradient_png(tmp_path / "xrays" / "a.png")
    argv = ["synthesize", str(ct_file), "--model", str(bundled_model()), "--style", str(tmp_path / "xrays")]
    err = one_line_error([*argv, "--device", "cpu", "--out", str(tmp_path / "out")], capsys)
    assert "is a folder" in err and "does not exist" not in err, err


def _ct_slice_dicom(path: Path) -> Path:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "CT"
    pixels = (body_phantom(size=32, spacing=8.0).array[16] + 1024).astype(np.uint16)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_ct_slice_as_style_is_warned(tmp_path: Path) -> None:
    path = _ct_slice_dicom(tmp_path / "slice.dcm")
    with pytest.warns(NotRadiographWarning, match=r"slice\.dcm is a CT image \(DICOM modality CT\)"):
        assert read_radiograph(path, size=16).shape == (16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_radiograph(path, size=16, warn_colour=False)  # a folder scan (training radiographs) does not warn
    with pytest.warns(NotRadiographWarning, match="like air"):
        radiograph_from_array(body_phantom(size=16, spacing=8.0).array[8])  # a CT slice node in HU, from Slicer


def test_single_slice_volume_files_as_style(tmp_path: Path) -> None:
    ct_slice = body_phantom(size=32, spacing=8.0).array[16:17]  # (1, 32, 32) HU
    sitk.WriteImage(sitk.GetImageFromArray(ct_slice), str(tmp_path / "slice.nrrd"))
    with pytest.warns(NotRadiographWarning, match=r"slice\.nrrd holds values down to -1000, like air"):
        image = read_radiograph(tmp_path / "slice.nrrd", size=16)
    assert image.shape == (16, 16) and 0 <= image.min() < image.max() <= 1
    drr = np.tile(np.linspace(0.0, 3.0, 40, dtype=np.float32), (40, 1))[None]  # a DRR view: -log transmission
    sitk.WriteImage(sitk.GetImageFromArray(drr), str(tmp_path / "view.nrrd"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = read_radiograph(tmp_path / "view.nrrd", size=16)
    assert image[:, -1].mean() > image[:, 0].mean() + 0.5  # brighter where it attenuates more
    sitk.WriteImage(sitk.GetImageFromArray(body_phantom(size=8, spacing=8.0).array), str(tmp_path / "ct.nii.gz"))
    with pytest.raises(CT2XError, match=r"ct\.nii\.gz is a 8 x 8 x 8 volume \(a CT\?\), not a radiograph"):
        read_radiograph(tmp_path / "ct.nii.gz")


def test_a_radiograph_folder_of_one_image_is_warned(tmp_path: Path) -> None:
    _gradient_png(tmp_path / "only.png")
    with pytest.warns(UserWarning, match=r"single readable radiograph \(only\.png\)"):
        assert len(find_radiographs(tmp_path, size=8).paths) == 1
    _gradient_png(tmp_path / "second.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(find_radiographs(tmp_path, size=8).paths) == 2


# ------------------------------------------------------------------------------- DRR memory


def test_a_detector_that_cannot_fit_is_refused_before_allocating(ct_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    err = one_line_error(["drr", str(ct_file), "--size", "100000", "--out", str(out)], capsys)
    assert "100000 x 100000 pixels" in err and "needs about" in err and "GB" in err and "--size" in err, err
    assert not out.exists()


def test_a_render_above_the_free_memory_is_warned_with_the_estimate(ct_file: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("ct2x.memory.system_memory", lambda: (10**12, 10**4))  # 1 TB, of which 10 kB free
    argv = ["drr", str(ct_file), "--size", "16", "--angles", "0", "--step", "1"]
    with pytest.warns(MemoryNeedWarning, match=r"needs about [\d.,]+ GB of memory, more than the 0.0 GB free"):
        assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    monkeypatch.setattr("ct2x.memory.system_memory", lambda: (10**4, 10**4))
    with pytest.raises(CT2XError, match=r"24 x 24 x 24 CT needs about .* this machine has 0.0 GB"):
        render_drr(body_phantom(size=24, spacing=5.0), _view((0.0, 0.0, 0.0), 16), step=1.0)


def test_the_imaging_chain_counts_in_the_memory_estimate(ct_file: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """A machine that holds the march of a view but not the chain's images on top of it refuses ``ct2x drr``
    through the chain up front, naming the chain's whole need, and so does ``render_radiographs`` (the Slicer
    module's chain); the raw DRR of the same view still fits."""
    from ct2x.drr.render import check_render_memory, render_memory_bytes
    from ct2x.imaging import PRESETS
    from ct2x.imaging.render import chain_geometry, render_radiographs
    from ct2x.volume import read_ct

    ct = read_ct(ct_file)
    carms = views([0.0], [0.0], **chain_geometry("chest_dr_pa", detector_size=(512,)), isocenter=tuple(ct.center_lps))
    spectrum = PRESETS["chest_dr_pa"].parameters.spectrum
    march, chain = (render_memory_bytes(ct, carms, spectrum, imaging=imaging) for imaging in (False, True))
    assert chain > march * 1.5  # the chain more than doubles the 512^2 view's working memory
    monkeypatch.setattr("ct2x.memory.system_memory", lambda: ((march + chain) // 2, (march + chain) // 2))
    check_render_memory(ct, carms, spectrum=spectrum, backend="numba")  # the march alone fits
    out = tmp_path / "out"
    argv = ["drr", str(ct_file), "--imaging", "chest_dr_pa", "--size", "512", "--angles", "0", "--backend", "numba"]
    err = one_line_error([*argv, "--out", str(out)], capsys)
    assert "512 x 512 pixels" in err and f"needs about {chain / 1e9:.1f}" in err, err
    assert not out.exists()
    with pytest.raises(CT2XError, match=f"needs about {chain / 1e9:.1f} GB"):  # the Slicer module's path
        render_radiographs(ct, carms, "chest_dr_pa", step=1.0, backend="numba")


def test_ct2x_drr_counts_the_memory_of_the_one_view_it_renders_at_a_time(
    ct_file: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """``ct2x drr`` renders its views one after the other, so a machine that holds one view through the chain but
    not two at once still renders both (it was refused when every view's need was summed)."""
    from ct2x.drr.render import render_memory_bytes
    from ct2x.imaging import PRESETS
    from ct2x.imaging.render import chain_geometry
    from ct2x.volume import read_ct

    ct = read_ct(ct_file)
    carms = views([0.0, 30.0], [0.0], **chain_geometry("chest_dr_pa", detector_size=(256,)),
                  isocenter=tuple(ct.center_lps))  # fmt: skip
    spectrum = PRESETS["chest_dr_pa"].parameters.spectrum
    one, both = (render_memory_bytes(ct, carms[:n], spectrum, imaging=True) for n in (1, 2))
    monkeypatch.setattr("ct2x.memory.system_memory", lambda: ((one + both) // 2, (one + both) // 2))
    out = tmp_path / "out"
    argv = ["drr", str(ct_file), "--imaging", "chest_dr_pa", "--size", "256", "--angles", "0", "30"]
    assert main([*argv, "--backend", "numba", "--out", str(out)]) == 0, capsys.readouterr().err
    assert len(list(out.glob("view*_coverage.png"))) == 2


# --------------------------------------------------------------------------------- empty DRRs


def _view(isocenter: tuple[float, float, float], pixels: int = 32):  # noqa: ANN202
    return views([0.0], [0.0], detector_shape=(pixels, pixels), pixel_spacing=(1.5, 1.5), isocenter=isocenter)


@pytest.mark.parametrize(
    ("volume", "isocenter"),
    [
        (CTVolume(np.full((8, 8, 8), -1000.0, np.float32), np.full(3, 5.0), np.zeros(3), np.eye(3)), None),  # air
        (body_phantom(size=16, spacing=0.01), None),  # a CT of 0.16 mm: spacing in metres read as mm
        (body_phantom(size=16, spacing=4.0), (0.0, 0.0, 5000.0)),  # the isocenter 5 m from the CT
    ],
    ids=["all-air", "0.01-mm-spacing", "isocenter-outside"],
)
def test_an_empty_drr_is_warned(volume: CTVolume, isocenter) -> None:  # noqa: ANN001
    centre = tuple(volume.center_lps) if isocenter is None else isocenter
    with pytest.warns(UserWarning, match=r"a DRR is empty .*the isocenter is at"):
        image = render_drr(volume, _view(centre), step=0.5)
    assert float(image.max()) < 0.05  # at most the air's attenuation


def test_a_drr_of_the_body_is_not_empty() -> None:
    volume = body_phantom(size=16, spacing=4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        render_drr(volume, _view(tuple(volume.center_lps)), step=0.5, photons=1e5, seed=0)


# ------------------------------------------------------------------------------ Poisson noise


def _flipped(volume: CTVolume) -> CTVolume:
    """The same CT stored with its i and k axes reversed (direction columns negated, origin at the far corner)."""
    k, _, i = volume.array.shape
    direction = volume.direction * np.array([-1.0, 1.0, -1.0])
    origin = volume.ijk_to_lps[:3, :3] @ np.array([i - 1, 0, k - 1]) + volume.origin
    return CTVolume(volume.array[::-1, :, ::-1].copy(), volume.spacing, origin, direction)


def test_noise_is_a_function_of_seed_and_pixel_exact_poisson() -> None:
    def splitmix(x: int) -> int:  # the reference, in Python integers
        mask = (1 << 64) - 1
        z = (x + 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    key = splitmix(12345)
    expected = [((splitmix(n ^ key) >> 11) + 0.5) * 2.0**-53 for n in range(6)]
    assert counter_uniforms(12345, 6).tolist() == expected
    stats = pytest.importorskip("scipy.stats", reason="scipy (dev extra) is the exact Poisson reference")
    u = counter_uniforms(3, 4000)
    for rate in (0.0, 0.4, 7.0, 250.0, 1e6):
        counts = poisson_quantile(torch.full_like(u, rate), u)
        np.testing.assert_array_equal(counts.numpy(), stats.poisson.ppf(u.numpy(), rate))
    rates = torch.full((40000,), 50.0)
    draws = poisson_noise(rates, seed=1)
    assert abs(float(draws.mean()) - 50.0) < 0.2 and abs(float(draws.var()) - 50.0) < 2.0
    assert torch.equal(poisson_noise(rates, seed=1), draws) and not torch.equal(poisson_noise(rates, seed=2), draws)
    # pixel n's draw does not depend on the other pixels' rates
    changed = rates.clone()
    changed[:100] = 5.0
    assert torch.equal(poisson_noise(changed, seed=1)[100:], draws[100:])


def test_a_flipped_direction_matrix_keeps_the_noise_pattern() -> None:
    volume = body_phantom(size=32, spacing=4.0)
    flipped = _flipped(volume)
    carms = views([0.0, 30.0, 60.0], [0.0], detector_shape=(64, 64), pixel_spacing=(1.5, 1.5),
                  isocenter=tuple(volume.center_lps))  # fmt: skip
    # The numba kernel's noise-free renders are bit-identical across orientations.
    assert torch.equal(render_drr(volume, carms, step=0.25, backend="numba"), render_drr(flipped, carms, step=0.25))
    # The torch marcher's differ in their last digits; the noise must not follow those differences.
    clean = [render_drr(v, carms, step=0.25, backend="torch") for v in (volume, flipped)]
    assert not torch.equal(*clean) and float((clean[0] - clean[1]).abs().max()) < 1e-4
    noisy = [render_drr(v, carms, step=0.25, backend="torch", photons=1e6, seed=0) for v in (volume, flipped)]
    noise = [(n - c).flatten().numpy() for n, c in zip(noisy, clean, strict=True)]
    assert np.corrcoef(*noise)[0, 1] > 0.9999

"""``ct2x synthesize``: outputs carry their geometry; synthesis is deterministic; bad input is refused.

The model here is randomly initialised (saved as a real model file): these tests check the
plumbing, never the image quality.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from conftest import body_phantom
from PIL import Image

from ct2x.checkpoint import load_model, save_model
from ct2x.cli import main
from ct2x.config import CT2XConfig
from ct2x.errors import CT2XError
from ct2x.geometry import CArm
from ct2x.models import CT2XGAN
from ct2x.synthesize import model_views, synthesize, synthesize_styles
from ct2x.volume import CTVolume

CONFIG = CT2XConfig.preset("small", image_size=64, lpips_backbone="random")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth")
    torch.manual_seed(1)
    weights = {k: v for k, v in CT2XGAN(CONFIG).state_dict().items() if not k.startswith("discriminator.")}
    save_model(root / "model.safetensors", weights, {"config": CONFIG.to_dict(), "training": {"steps": 0}})
    volume = body_phantom(size=24, spacing=4.0)
    image = sitk.GetImageFromArray(volume.array)
    image.SetSpacing(tuple(volume.spacing))
    sitk.WriteImage(image, str(root / "ct.nrrd"))
    ramp = np.tile(np.linspace(20, 230, 50), (60, 1)).astype(np.uint8)
    Image.fromarray(ramp).save(root / "xray.png")
    return {"model": root / "model.safetensors", "ct": root / "ct.nrrd", "xray": root / "xray.png"}


def test_synthesis_is_deterministic_and_batched(files: dict[str, Path]) -> None:
    model, card = load_model(files["model"])
    ct = body_phantom(size=24, spacing=4.0)
    carms = model_views(model.config, card, ct, [-30, 0, 30])
    a = synthesize(model, ct, carms, style=files["xray"], batch_size=2)
    again = synthesize(model, ct, carms, style=files["xray"], batch_size=2)
    batched = synthesize(model, ct, carms, style=files["xray"], batch_size=3)
    assert [v.carm.primary for v in a] == [-30, 0, 30]
    for x, y, z in zip(a, again, batched, strict=True):
        assert x.image.shape == (64, 64) and x.image.dtype == np.float32
        assert 0 <= x.image.min() and x.image.max() <= 1
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_allclose(x.image, z.image, atol=1e-4)  # batching changes only float rounding
    drr_styled = synthesize(model, ct, carms[1:2], drr_style=True)
    assert drr_styled[0].image.shape == (64, 64)
    with pytest.raises(CT2XError, match="64 x 64"):
        synthesize(model, ct, [CArm(detector_shape=(32, 32))], drr_style=True)


def test_several_styles_at_once_match_one_style_at_a_time(files: dict[str, Path]) -> None:
    model, card = load_model(files["model"])
    ct = body_phantom(size=24, spacing=4.0)
    carms = model_views(model.config, card, ct, [-30, 0, 30])
    flipped = np.asarray(Image.open(files["xray"]))[:, ::-1].copy()  # a second style, as an array
    together = synthesize_styles(model, ct, carms, [files["xray"], flipped], batch_size=2)
    assert together.shape == (3, 2, 64, 64) and together.dtype == np.float32
    for r, style in enumerate([files["xray"], flipped]):
        alone = np.stack([v.image for v in synthesize(model, ct, carms, style=style, batch_size=2)])
        np.testing.assert_allclose(together[:, r], alone, atol=1e-5)
    assert np.abs(together[:, 0] - together[:, 1]).max() > 1e-4  # the two styles differ


def test_outputs_carry_the_geometry(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["synthesize", str(files["ct"]), "--model", str(files["model"]), "--style", str(files["xray"])]
    assert main([*argv, "--angles", "30", "--secondary", "-10", "--sdd", "1100", "--out", str(out)]) == 0
    stem = out / "view00_LAO30_CAUD10"
    ds = pydicom.dcmread(stem.with_suffix(".dcm"))
    assert ds.Modality == "DX" and (ds.Rows, ds.Columns) == (64, 64)
    assert float(ds.DistanceSourceToDetector) == 1100 and float(ds.DistanceSourceToPatient) == CONFIG.sid_mm
    assert float(ds.PositionerPrimaryAngle) == 30 and float(ds.PositionerSecondaryAngle) == -10
    pixel = CONFIG.detector_width_mm / 64
    assert [float(v) for v in ds.ImagerPixelSpacing] == pytest.approx([pixel, pixel], rel=1e-5)
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx([pixel * CONFIG.sid_mm / 1100] * 2, rel=1e-5)
    image = sitk.ReadImage(str(stem.with_suffix(".nrrd")))
    assert image.GetSpacing() == pytest.approx((pixel, pixel, 1.0)) and image.GetSize() == (64, 64, 1)
    assert image.GetMetaData("ct2x_sdd_mm") == "1100"
    style = f"style {files['xray'].name}"  # what made the image: the model, the film
    assert image.GetMetaData("ct2x_model") == files["model"].name and image.GetMetaData("ct2x_style") == style
    assert ds.SeriesDescription.endswith(style) and not image.HasMetaDataKey("ct2x_table_removed")
    assert (out / "strip.png").is_file() and (out / "views.png").is_file() and stem.with_suffix(".png").is_file()
    assert Image.open(out / "strip.png").size[0] >= 7 * 64


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_bad_input_is_refused(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    base = ["synthesize", str(files["ct"]), "--model", str(files["model"]), "--drr-style"]
    existing = tmp_path / "exists"
    existing.mkdir()
    code, err = _run([*base, "--out", str(existing)], capsys)
    assert code == 1 and "--overwrite" in err
    code, err = _run([*base, "--angles", "200", "--out", str(tmp_path / "a")], capsys)
    assert code == 1 and "[-180, 180]" in err
    pickle_model = tmp_path / "model.pth"
    pickle_model.write_bytes(b"\x80\x04K\x01.")
    argv = ["synthesize", str(files["ct"]), "--model", str(pickle_model), "--drr-style", "--out", "x"]
    code, err = _run(argv, capsys)
    assert code == 1 and "pickle" in err
    card = json.loads(files["model"].with_suffix(".json").read_text(encoding="utf-8"))
    other = tmp_path / "other.safetensors"
    other.write_bytes(files["model"].read_bytes())
    other.with_suffix(".json").write_text(json.dumps({**card, "version": 2}))
    code, err = _run(["synthesize", str(files["ct"]), "--model", str(other), "--drr-style", "--out", "y"], capsys)
    assert code == 1 and "version 2" in err
    empty = tmp_path / "empty.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8, 8), np.float32)), str(empty))
    code, err = _run(["synthesize", str(empty), "--model", str(files["model"]), "--drr-style", "--out", "z"], capsys)
    assert code == 1 and "empty" in err
    # a model without the physics anchor draws the whole image: only at its own size
    code, err = _run([*base, "--size", "96", "--out", str(tmp_path / "s")], capsys)
    assert code == 1 and "64 x 64" in err and "--size" in err and not (tmp_path / "s").exists()
    code, err = _run([*base, "--size", "0", "--out", str(tmp_path / "s")], capsys)
    assert code == 1 and "--size" in err


def test_colour_photograph_style_warns(files: dict[str, Path], tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 255, (50, 50, 3), dtype=np.uint8)).save(photo)
    model, card = load_model(files["model"])
    ct = CTVolume(body_phantom(16, 4.0).array, np.full(3, 4.0), np.zeros(3), np.eye(3))
    with pytest.warns(UserWarning, match="colour photograph"):
        synthesize(model, ct, model_views(model.config, card, ct, [0]), style=photo)


def test_coarse_mip_readout_matches_the_training_path() -> None:
    """Synthesis reads the PAM's MIP at 2 x pam_mip_size pixels; training at image_size. After
    the resize to pam_mip_size both must agree (a wrong detector width or centre would not)."""
    from ct2x.drr import mip
    from ct2x.models.inputs import mip_input
    from ct2x.synthesize import mip_views
    from ct2x.volume import preprocess

    config = CT2XConfig.preset("small", lpips_backbone="random")
    ct = body_phantom(size=48, spacing=3.0)
    grid = preprocess(ct, spacing_mm=config.voxel_spacing_mm, size=config.volume_size)
    carms = model_views(config, {}, ct, [-60.0, 0.0, 45.0], [0.0, 20.0, 0.0])
    training = mip_input(mip(grid, carms, step=config.drr_step), config)
    coarse = mip_views(carms, config)
    assert coarse[0].detector_shape == (2 * config.pam_mip_size,) * 2
    synthesis = mip_input(mip(grid, coarse, step=config.drr_step), config)
    difference = (synthesis - training).abs()
    assert float(difference.mean()) < 0.01 and float(difference.max()) < 0.1
    shifted = [dataclasses.replace(c, isocenter=tuple(np.add(c.isocenter, (30.0, 0.0, 0.0)))) for c in coarse]
    wrong = mip_input(mip(grid, shifted, step=config.drr_step), config)
    assert float((wrong - training).abs().mean()) > 5 * float(difference.mean())


def test_model_style_uses_the_stored_style_code(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    """A style stored with the model (``style_code.<name>``) styles like the radiograph it came from."""
    from safetensors.torch import load_file

    from ct2x.checkpoint import load_style_codes
    from ct2x.data.radiographs import read_radiograph
    from ct2x.models.inputs import xray_input

    model, card = load_model(files["model"])
    pixels = torch.from_numpy(read_radiograph(files["xray"], CONFIG.image_size))[None]
    with torch.no_grad():
        code = model.style_encoder.xray_style(xray_input(pixels, CONFIG)[None])[0]
    styled = tmp_path / "styled.safetensors"
    save_model(styled, {**load_file(str(files["model"])), "style_code.ramp-1": code}, card)
    assert list(load_style_codes(styled)) == ["ramp-1"]
    base = ["synthesize", str(files["ct"]), "--model", str(styled), "--angles", "0", "--format", "nrrd"]
    assert main([*base, "--model-style", "ramp-1", "--out", str(tmp_path / "stored")]) == 0
    assert main([*base, "--style", str(files["xray"]), "--out", str(tmp_path / "file")]) == 0
    stored, from_file = (
        sitk.GetArrayFromImage(sitk.ReadImage(str(next((tmp_path / d).glob("view*[0-9].nrrd")))))
        for d in ("stored", "file")
    )
    np.testing.assert_allclose(stored, from_file, atol=1e-5)
    code_, err = _run([*base, "--model-style", "bone", "--out", str(tmp_path / "bad")], capsys)
    assert code_ == 1 and "'bone'" in err and "ramp-1" in err and not (tmp_path / "bad").exists()

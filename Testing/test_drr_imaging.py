"""``ct2x drr`` through the imaging chain (``--imaging``), and the one render path it takes
(ct2x.imaging.render.render_radiographs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import body_phantom, one_line_error, write_phantom_ct

from ct2x.cli import build_parser, main
from ct2x.drr import area_densities, render_drr
from ct2x.errors import CT2XError
from ct2x.geometry import DEFAULT_PIXEL_MM, DEFAULT_SDD_MM, DEFAULT_SID_MM, CArm
from ct2x.imaging import PRESETS, ImagingParameters, radiograph, randomised
from ct2x.imaging.render import chain_geometry, render_radiographs
from ct2x.options import DEFAULT_IMAGING, IMAGING_MODES, IMAGING_PRESETS, DRROptions
from ct2x.volume import read_ct

FAST = ["--size", "48", "--step", "1", "--angles", "0", "30"]
STEMS = ("view00_LAO0_CRAN0", "view01_LAO30_CRAN0")


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom_ct(tmp_path_factory.mktemp("ct") / "phantom.nrrd", 24)


def _drr(ct: Path, out: Path, *extra: str) -> list[sitk.Image]:
    assert main(["drr", str(ct), *FAST, *extra, "--out", str(out)]) == 0
    return [sitk.ReadImage(str(out / f"{stem}.nrrd")) for stem in STEMS]


def _pixels(images: list[sitk.Image]) -> np.ndarray:
    return np.stack([sitk.GetArrayFromImage(image)[0] for image in images])


def _carm(image: sitk.Image) -> CArm:
    """The view an NRRD of ct2x drr was rendered at, from its header."""

    def numbers(key: str) -> list[float]:
        return [float(v) for v in image.GetMetaData(key).split()]

    size = image.GetSize()
    return CArm(
        numbers("ct2x_primary_deg")[0], numbers("ct2x_secondary_deg")[0], numbers("ct2x_sdd_mm")[0],
        numbers("ct2x_sid_mm")[0], (size[1], size[0]), image.GetSpacing()[1::-1],
        tuple(numbers("ct2x_isocenter_lps_mm")),
    )  # fmt: skip


def test_the_default_is_the_c_arm_preset_s_radiograph(ct_file: Path, tmp_path: Path) -> None:
    assert DRROptions(Path("c")).imaging == DEFAULT_IMAGING == "mobile_carm_flat_panel"
    chain = _drr(ct_file, tmp_path / "chain")
    images = _pixels(chain)
    assert images.dtype == np.float32 and images.shape == (2, 48, 48)
    assert images.min() >= 0 and images.max() <= 1 and images.std() > 0.05
    preset = PRESETS["mobile_carm_flat_panel"]
    header = chain[0]
    assert header.GetMetaData("ct2x_imaging") == "mobile_carm_flat_panel"
    assert float(header.GetMetaData("ct2x_sdd_mm")) == preset.sdd_mm
    assert float(header.GetMetaData("ct2x_sid_mm")) == preset.sid_mm
    assert header.GetSpacing()[:2] == pytest.approx((preset.field_mm[1] / 48, preset.field_mm[0] / 48))  # --size alone
    stored = json.loads(header.GetMetaData("ct2x_imaging_parameters"))
    assert ImagingParameters(**stored) == preset.parameters
    raw = _pixels(_drr(ct_file, tmp_path / "raw", "--imaging", "raw"))
    assert not np.allclose(images, raw, atol=0.05)  # not the -log DRR


def test_raw_is_the_physics_drr_exactly(ct_file: Path, tmp_path: Path) -> None:
    images = _drr(ct_file, tmp_path / "raw", "--imaging", "raw", "--pixel", "6", "--seed", "5")
    volume = read_ct(ct_file)
    for index, image in enumerate(images):
        carm = _carm(image)
        assert carm.sdd == DEFAULT_SDD_MM and carm.sid == DEFAULT_SID_MM and carm.pixel_spacing == (6.0, 6.0)
        expected = render_drr(volume, [carm], step=1.0, photons=1e6, seed=5 + index)[0].numpy()
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image)[0], expected)
        assert image.GetMetaData("ct2x_imaging") == "raw" and image.GetMetaData("ct2x_spectrum") == "60KV_AL35"
        assert image.GetMetaData("ct2x_photons") == "1e+06" and image.GetMetaData("ct2x_noise_seed") == str(5 + index)


def test_raw_keeps_the_old_default_geometry() -> None:
    """Without geometry options, raw renders the C-arm ct2x drr always had: DeepDRR's, 256 x 1.164 mm."""
    assert chain_geometry(None) == {
        "sdd": DEFAULT_SDD_MM, "sid": DEFAULT_SID_MM, "detector_shape": (256, 256),
        "pixel_spacing": (DEFAULT_PIXEL_MM, DEFAULT_PIXEL_MM),
    }  # fmt: skip
    options = DRROptions(Path("c"), imaging="raw")
    assert (options.raw_spectrum, options.raw_photons) == ("60KV_AL35", 1e6)


def test_a_preset_s_geometry_is_the_default_of_every_option_not_given(ct_file: Path, tmp_path: Path) -> None:
    chest = _drr(ct_file, tmp_path / "chest", "--imaging", "chest_dr_pa")[0]
    assert (chest.GetMetaData("ct2x_sdd_mm"), chest.GetMetaData("ct2x_sid_mm")) == ("1800", "1650")
    given = _drr(ct_file, tmp_path / "given", "--imaging", "chest_dr_pa", "--sdd", "1700", "--pixel", "5")[0]
    assert (given.GetMetaData("ct2x_sdd_mm"), given.GetMetaData("ct2x_sid_mm")) == ("1700", "1650")
    assert given.GetSpacing()[:2] == (5.0, 5.0)
    bedside = chain_geometry("bedside_cr_ap")
    assert bedside["detector_shape"] == (256, 208) and bedside["sdd"] == 1100.0  # 430 x 350 mm
    assert chain_geometry("bedside_cr_ap", pixel_mm=(5.0,))["detector_shape"] == (86, 70)  # the field is kept
    assert chain_geometry("bedside_cr_ap", detector_size=(43, 35))["pixel_spacing"] == pytest.approx((10.0, 10.0))
    assert chain_geometry("chest_dr_pa", detector_size=(8, 16), pixel_mm=(1, 2))["pixel_spacing"] == (1, 2)


def test_randomised_is_reproducible_from_its_seed(ct_file: Path, tmp_path: Path) -> None:
    first = _drr(ct_file, tmp_path / "a", "--imaging", "randomised", "--seed", "3")
    again = _drr(ct_file, tmp_path / "b", "--imaging", "randomised", "--seed", "3")
    other = _drr(ct_file, tmp_path / "c", "--imaging", "randomised", "--seed", "4")
    np.testing.assert_array_equal(_pixels(first), _pixels(again))
    assert not np.allclose(_pixels(first), _pixels(other), atol=0.01)
    header = first[1]
    assert header.GetMetaData("ct2x_imaging") == "randomised" and header.GetMetaData("ct2x_seed") == "3"
    stored = json.loads(header.GetMetaData("ct2x_imaging_parameters"))
    assert ImagingParameters(**stored) == randomised(3)  # the header alone reproduces the chain
    assert header.GetMetaData("ct2x_noise_seed") == "4"  # view 1's noise: seed + 1


def test_style_fits_the_chain_to_a_film(ct_file: Path, tmp_path: Path) -> None:
    """``--style FILM``: the chain's look fitted to a film (recorded in the header): a dark and a bright film give
    darker and brighter radiographs of the same anatomy; the fitted parameters reproduce the images."""
    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.linspace(0.0, 1.0, 64)[None, :] * np.ones((64, 1))
    for name, power in (("dark.png", 3.0), ("bright.png", 1 / 3)):
        film = np.clip(ramp**power + rng.normal(0, 0.03, ramp.shape), 0, 1)
        Image.fromarray((film * 255).astype(np.uint8)).save(tmp_path / name)
    dark = _drr(ct_file, tmp_path / "d", "--style", str(tmp_path / "dark.png"))
    bright = _drr(ct_file, tmp_path / "b", "--style", str(tmp_path / "bright.png"))
    plain = _drr(ct_file, tmp_path / "p")
    assert float(np.median(_pixels(dark))) + 0.15 < float(np.median(_pixels(bright)))
    edges = [np.abs(np.diff(_pixels(x)[1], axis=1)).mean(axis=0) for x in (dark, bright)]
    assert np.corrcoef(edges)[0, 1] > 0.5  # the same anatomy
    header = dark[1]
    assert header.GetMetaData("ct2x_style") == "dark.png"
    fitted = ImagingParameters(**json.loads(header.GetMetaData("ct2x_imaging_parameters")))
    assert fitted.tone_points and fitted != PRESETS[DEFAULT_IMAGING].parameters
    assert not np.allclose(_pixels(dark), _pixels(plain), atol=0.05)
    again = render_radiographs(read_ct(ct_file), [_carm(header)], fitted, step=1.0, seed=1)[0].numpy()
    np.testing.assert_allclose(again, _pixels(dark)[1], atol=1e-5)
    with pytest.raises(CT2XError, match="--imaging raw has no chain"):
        DRROptions(Path("c"), imaging="raw", style=tmp_path / "dark.png")


def test_devices_put_the_same_leads_and_lines_in_every_view_drawn_from_the_seed(
    ct_file: Path, tmp_path: Path, capsys
) -> None:
    plain = _pixels(_drr(ct_file, tmp_path / "p"))
    fitted = _drr(ct_file, tmp_path / "d", "--devices", "6")
    parameters = ImagingParameters(**json.loads(fitted[0].GetMetaData("ct2x_imaging_parameters")))
    assert (parameters.devices, parameters.devices_seed) == (6, 0)
    shadows = _pixels(fitted) - plain  # bright = attenuating
    assert all(float(view.max()) > 0.05 for view in shadows)  # both views show devices
    again = render_radiographs(read_ct(ct_file), [_carm(fitted[1])], parameters, step=1.0, seed=1)[0].numpy()
    np.testing.assert_allclose(again, _pixels(fitted)[1], atol=1e-5)
    other = _pixels(_drr(ct_file, tmp_path / "s", "--devices", "6", "--seed", "5"))
    assert not np.allclose(other, _pixels(fitted), atol=0.05)
    capsys.readouterr()  # the renders' progress bars
    err = one_line_error(["drr", str(ct_file), "--devices", "25", "--out", str(tmp_path / "o")], capsys)
    assert "--devices must be a whole number from 0 to 20, got 25" in err and not (tmp_path / "o").exists()


def test_a_bad_imaging_name_is_one_line_listing_the_choices(ct_file: Path, tmp_path: Path, capsys) -> None:
    err = one_line_error(["drr", str(ct_file), "--imaging", "fluoro", "--out", str(tmp_path / "o")], capsys)
    assert "--imaging" in err and "'fluoro'" in err and all(name in err for name in IMAGING_MODES)
    assert not (tmp_path / "o").exists()
    err = one_line_error(["drr", str(ct_file), "--photons", "1e5", "--out", str(tmp_path / "o")], capsys)
    assert "--photons" in err and "dose" in err and "--imaging raw" in err


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"imaging": "fluoro"}, "--imaging must be one of"),
        ({"imaging": "chest_dr_pa", "photons": 1e5}, "noise comes from the chain's dose"),
        ({"photons": 0.0}, "--photons sets the noise of --imaging raw only"),
        ({"spectrum": "70KV_AL30"}, "--spectrum sets the tube of --imaging raw only"),
        ({"imaging": "randomised", "backend": "deepdrr"}, "--backend deepdrr renders raw DRRs only"),
        ({"imaging": "raw", "photons": -1.0}, "--photons"),
        ({"detector_size": (0,)}, "--size"),
        ({"detector_size": (16.5, 16)}, "--size"),
        ({"pixel_mm": (1.0, -1.0)}, "--pixel"),
        ({"pixel_mm": (1.0, 1.0, 1.0)}, "--pixel"),
        ({"devices": -1}, "--devices must be a whole number from 0 to 20"),
        ({"devices": 2.5}, "--devices must be a whole number"),
        ({"imaging": "raw", "devices": 2}, "--devices puts support devices in the imaging chain's beam: --imaging raw"),
    ],
)
def test_the_options_refuse_bad_values(values: dict, message: str) -> None:
    with pytest.raises(CT2XError, match=message.replace("(", r"\(")) as error:
        DRROptions(Path("c"), **values)
    assert "\n" not in str(error.value)


def test_raw_takes_its_own_physics_options() -> None:
    options = DRROptions(Path("c"), imaging="raw", photons=0.0, spectrum="70KV_AL30", backend="deepdrr")
    assert (options.raw_photons, options.raw_spectrum) == (0.0, "70KV_AL30")


def test_help_lists_every_preset_with_its_distances(capsys) -> None:
    assert IMAGING_PRESETS == tuple(PRESETS)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["drr", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, preset in PRESETS.items():
        assert f"{name} " in text and f"SID {preset.sid_mm:g}, SDD {preset.sdd_mm:g} mm" in text, name
    assert "randomised" in text and "raw" in text and "--imaging chest_dr_pa renders at SDD 1800 mm" in text


def test_render_radiographs_is_one_march_then_the_chain() -> None:
    volume = body_phantom(size=20, spacing=5.0)
    carms = [PRESETS["chest_dr_pa"].view(48, primary=p) for p in (0.0, 45.0)]
    images = render_radiographs(volume, carms, "chest_dr_pa", step=1.0, device="cpu", seed=2)
    assert images.dtype == torch.float32 and images.device.type == "cpu" and images.shape == (2, 48, 48)
    assert images.min() >= 0 and images.max() <= 1
    expected = radiograph(area_densities(volume, carms, step=1.0), carms, "chest_dr_pa", seed=2)
    torch.testing.assert_close(images, expected, rtol=0, atol=0)
    one = render_radiographs(volume, carms[0], randomised(1), step=1.0, device="cpu", seed=2)
    assert one.shape == (1, 48, 48)
    with pytest.raises(CT2XError, match="DeepDRR renders raw DRRs only"):
        render_radiographs(volume, carms, "chest_dr_pa", step=1.0, backend="deepdrr")
    with pytest.raises(CT2XError, match="unknown imaging preset"):
        render_radiographs(volume, carms, "fluoro", step=1.0)

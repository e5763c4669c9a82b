"""CT2XTraining logic (no Qt): command lines, progress parsing, and the background runner
driving real child processes (small ``python -c`` programs standing in for ``ct2x train``)."""

from __future__ import annotations

import os
import shlex
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "CT2XTraining"))

from CT2XTrainingLib.commands import (  # noqa: E402
    PrepareOptions,
    TrainOptions,
    child_environment,
    prepare_command,
    train_command,
)
from CT2XTrainingLib.progress import (  # noqa: E402
    JobState,
    latest_model,
    parse_checkpoint,
    parse_progress,
    step_time,
)
from CT2XTrainingLib.runner import GRACE_STEPS, ProcessRunner, stop_grace_s  # noqa: E402

from ct2x.errors import CT2XError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def folders(tmp_path):
    (tmp_path / "ct").mkdir()
    (tmp_path / "xray dir").mkdir()
    (tmp_path / "my.yaml").write_text("steps: 3\n")
    return tmp_path


def test_prepare_command_line(folders):
    out = folders / "out"
    command = prepare_command("/S/PythonSlicer", PrepareOptions(folders / "ct", out, angles=(-60, 0, 30.5), workers=2))
    assert command == [
        "/S/PythonSlicer", "-m", "ct2x", "prepare", "--ct", str(folders / "ct"), "--out", str(out / "data"),
        "--angles", "-60", "0", "30.5", "--workers", "2",
    ]  # fmt: skip
    minimal = prepare_command("py", PrepareOptions(folders / "ct", out, device="cuda"))
    assert minimal[4:] == [
        "--ct", str(folders / "ct"), "--out", str(out / "data"), "--random-views", "64",
        "--device", "cuda",
    ]  # fmt: skip


def test_train_command_line(folders):
    out = folders / "out"
    options = TrainOptions(folders / "xray dir", out, config="paper", steps=500, resume=True, device="cpu")
    command = train_command("py", options)
    assert command == [
        "py", "-m", "ct2x", "train", "--data", str(out / "data"), "--xray", str(folders / "xray dir"),
        "--config", "paper", "--out", str(out / "run"), "--steps", "500", "--resume", "--device", "cpu",
    ]  # fmt: skip
    from_file = train_command("py", TrainOptions(folders / "xray dir", out, config=str(folders / "my.yaml")))
    assert from_file[from_file.index("--config") + 1] == str(folders / "my.yaml")
    assert "--resume" not in from_file and "--steps" not in from_file and "--device" not in from_file


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: PrepareOptions(d / "missing", d / "out"), "CT folder"),
        (lambda d: PrepareOptions(d / "ct", ""), "output folder"),
        (lambda d: PrepareOptions(d / "ct", d / "out", workers=0), "workers"),
        (lambda d: TrainOptions(d / "nope", d / "out"), "radiograph folder"),
        (lambda d: TrainOptions(d / "xray dir", d / "out", config=str(d / "none.yaml")), "config file"),
        (lambda d: TrainOptions(d / "xray dir", d / "out", steps=0), "steps"),
        (lambda d: TrainOptions(d / "xray dir", d / "out", device="tpu"), "device"),
    ],
)
def test_bad_options_are_reported(folders, make, message):
    options = make(folders)
    build = prepare_command if isinstance(options, PrepareOptions) else train_command
    with pytest.raises(CT2XError, match=message):
        build("py", options)


def test_child_environment_puts_the_core_first_and_unbuffers(tmp_path):
    env = child_environment({"PYTHONPATH": "a" + os.pathsep + "b", "HOME": "/h"}, tmp_path)
    assert env["PYTHONPATH"].split(os.pathsep) == [str(tmp_path), "a", "b"]
    assert env["PYTHONUNBUFFERED"] == "1" and env["HOME"] == "/h"


def test_parse_tqdm_bars():
    p = parse_progress(" 45%|####5     | 45/100 [00:10<00:12,  4.50it/s]")
    assert (p.step, p.total, p.remaining_s, p.fraction) == (45, 100, 12.0, 0.45)
    assert p.fields == {"rate": "4.50it/s"}
    p = parse_progress("prepare:   0%|          | 0/7 [00:00<?, ?CT/s]")
    assert (p.step, p.total, p.remaining_s) == (0, 7, None)
    p = parse_progress("train: 100%|##########| 10/10 [1:02:03<00:00, 2.7s/it]")
    assert (p.step, p.total, p.remaining_s, p.fraction) == (10, 10, 0.0, 1.0)
    assert parse_progress("loss went 45% down | nothing") is None


def test_parse_machine_lines():
    p = parse_progress("CT2X-PROGRESS step=45 total=100 loss_g=0.53 loss_d=1.25e-1 stage=train")
    assert (p.step, p.total, p.fraction) == (45, 100, 0.45)
    assert p.fields == {"loss_g": 0.53, "loss_d": 0.125, "stage": "train"}
    assert parse_progress("CT2X-PROGRESS stage=train") is None  # step and total are required
    assert parse_progress("CT2X-PROGRESSIVE step=1 total=2") is None
    path = "/runs/my run/checkpoint-000045.safetensors"
    c = parse_checkpoint(f"CT2X-CHECKPOINT step=45 path={shlex.quote(path)}")
    assert (c.path, c.step) == (path, 45)
    assert parse_checkpoint("CT2X-CHECKPOINT step=45") is None
    assert parse_checkpoint("CT2X-CHECKPOINT path='unterminated") is None
    # tqdm's bar (stderr, no newline) and a machine line (stdout) glued on one line of the shared pipe
    glued = parse_progress("train:  75%|#######5  | 3/4 [00:02<00:00, 1.2it/s]CT2X-PROGRESS step=3 total=4 loss_g=0.5")
    assert (glued.step, glued.total, glued.fields) == (3, 4, {"loss_g": 0.5})
    checkpoint = parse_checkpoint("train: 100%|##########| 4/4 [00:03]CT2X-CHECKPOINT step=4 path=/r/c.safetensors")
    assert (checkpoint.path, checkpoint.step) == ("/r/c.safetensors", 4)


def test_job_state_and_latest_model(tmp_path):
    state = JobState()
    for line in ["starting", " 10%|#         | 1/10 [00:01<00:09, 1.00it/s]", "CT2X-CHECKPOINT path=/r/a.json"]:
        state.update(line)
    assert state.progress.step == 1 and state.checkpoint.path == "/r/a.json"
    assert latest_model(tmp_path) is None
    (tmp_path / "model.safetensors").write_bytes(b"1")
    assert latest_model(tmp_path) is None  # a model without its card is not a model
    (tmp_path / "model.json").write_text("{}", encoding="utf-8")
    assert latest_model(tmp_path) == tmp_path / "model.safetensors"


def _drain(runner: ProcessRunner, timeout: float = 20.0) -> list[str]:
    """Poll like the module's QTimer does, until the job has ended and its output is read."""
    lines, deadline = [], time.monotonic() + timeout
    while not runner.finished:
        assert time.monotonic() < deadline, f"the job did not end; output so far: {lines}"
        lines += runner.poll()
        time.sleep(0.02)
    return lines + runner.poll()


def test_runner_streams_tqdm_style_progress_from_a_real_process():
    child = textwrap.dedent(
        r"""
        import sys
        for i in range(1, 4):
            sys.stdout.write(f"\r{i * 100 // 3:3d}%|###       | {i}/3 [00:0{i}<00:01, 1.00it/s]")
            sys.stdout.flush()
        print()
        print("CT2X-PROGRESS step=3 total=3 loss_g=0.5")
        print("oops", file=sys.stderr)
        sys.exit(3)
        """
    )
    runner = ProcessRunner([sys.executable, "-c", child], env=child_environment(os.environ, ROOT))
    runner.start()
    assert runner.poll() is not None  # never blocks
    lines = _drain(runner)
    state = JobState()
    for line in lines:
        state.update(line)
    assert [parse_progress(x).step for x in lines if parse_progress(x)] == [1, 2, 3, 3]
    assert state.progress.fields == {"loss_g": 0.5}
    assert "oops" in lines  # stderr is merged into the log
    assert runner.returncode == 3 and not runner.running


def test_stop_asks_the_job_to_checkpoint_and_exit():
    # the child installs its SIGINT handler like ct2x train does (a process started in the background
    # by a non-interactive shell inherits SIGINT ignored, and Python then installs none of its own)
    child = textwrap.dedent(
        """
        import signal, time
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("ready", flush=True)
        try:
            while True:
                time.sleep(0.05)
        except KeyboardInterrupt:
            print("CT2X-CHECKPOINT step=7 path=/run/checkpoint-7.safetensors", flush=True)
        """
    )
    runner = ProcessRunner([sys.executable, "-u", "-c", child], minimum_grace_s=10.0)
    runner.start()
    seen, deadline = [], time.monotonic() + 20
    while "ready" not in seen:
        assert time.monotonic() < deadline
        seen += runner.poll()
        time.sleep(0.02)
    runner.request_stop()
    lines = _drain(runner)
    assert runner.returncode == 0, "the job should have stopped gracefully"
    assert parse_checkpoint(lines[-1]).path == "/run/checkpoint-7.safetensors"


def test_stop_escalates_when_the_job_ignores_it():
    child = "\n".join(
        [
            "import signal, time",
            "signal.signal(signal.SIGINT, signal.SIG_IGN)",
            "print('ready', flush=True)",
            "time.sleep(60)",
        ]
    )
    runner = ProcessRunner([sys.executable, "-u", "-c", child], minimum_grace_s=0.3)
    runner.start()
    deadline = time.monotonic() + 20
    while "ready" not in runner.poll():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    runner.request_stop()
    _drain(runner)
    assert runner.returncode != 0


def test_the_step_time_the_job_reports():
    assert step_time(parse_progress("CT2X-PROGRESS step=1 total=9 step_s=85.2")) == 85.2
    assert step_time(parse_progress("train:  20%|##        | 2/10 [00:09<00:34, 4.35s/step]")) == 4.35
    assert step_time(parse_progress("train:  20%|##        | 2/10 [00:01<00:04, 2.50step/s]")) == pytest.approx(0.4)
    assert step_time(parse_progress("train:   0%|          | 0/10 [00:00<?, ?step/s]")) is None
    assert step_time(parse_progress("CT2X-PROGRESS step=1 total=9 loss_g=0.3")) is None
    state = JobState()
    for line in ["CT2X-PROGRESS step=1 total=9 step_s=12", "CT2X-PROGRESS step=2 total=9 loss_g=0.3"]:
        state.update(line)
    assert state.step_time_s == 12.0, "a report without a step time keeps the last one"
    assert stop_grace_s(None) == 30.0 and stop_grace_s(0.0, 5.0) == 5.0
    assert stop_grace_s(85.2) == pytest.approx(30.0 + GRACE_STEPS * 85.2)


def test_the_grace_period_before_terminate_follows_the_step_time():
    """A job that is slow to stop (its step takes long) is not terminated within the minimum grace
    period once it has reported its step time, but still is after the longer one."""
    child = "\n".join(
        ["import signal, time", "signal.signal(signal.SIGINT, signal.SIG_IGN)", "print('ready', flush=True)",
         "time.sleep(60)"]
    )  # fmt: skip
    runner = ProcessRunner([sys.executable, "-u", "-c", child], minimum_grace_s=0.2)
    runner.step_time_s = 0.4  # grace = 0.2 + 3 * 0.4 = 1.4 s
    assert runner.grace_s == pytest.approx(0.2 + GRACE_STEPS * 0.4)
    runner.start()
    deadline = time.monotonic() + 20
    while "ready" not in runner.poll():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    runner.request_stop()
    asked = time.monotonic()
    while time.monotonic() - asked < 0.9:  # well past the minimum: still running
        runner.poll()
        time.sleep(0.02)
    assert runner.running
    _drain(runner)
    assert runner.returncode != 0 and time.monotonic() - asked >= runner.grace_s

"""CT2XTraining's Stop through a launcher like PythonSlicer (issue 21).

Inside Slicer the jobs run as ``PythonSlicer -m ct2x ...``. PythonSlicer is CTK's AppLauncher: it
starts the real interpreter as a child of its own with ``QProcess::ForwardedChannels`` (the child
writes straight to the launcher's stdout and stderr, i.e. the runner's pipe), installs no signal
handler and forwards no signal, so SIGINT kills the launcher and leaves its child running. The
stand-in here does the same, and the real ``ct2x train`` and ``ct2x prepare`` run under it through
:class:`ProcessRunner`: Stop must reach them (checkpoint and model written, Resume goes on; prepare
ends, leaves only complete files, and a re-run completes), and the runner must say the job runs
until they have ended, not merely the launcher. Quick tests do the same with a small stand-in job
(graceful stop, an ignored stop terminated, kill); the ``ct2x`` ones are marked slow.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import write_phantom_ct
from test_train import TINY

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "CT2XTraining"))

from CT2XTrainingLib.commands import (  # noqa: E402
    PrepareOptions,
    TrainOptions,
    child_environment,
    data_dir,
    prepare_command,
    run_dir,
    train_command,
)
from CT2XTrainingLib.progress import JobState, latest_model, parse_checkpoint, parse_progress  # noqa: E402
from CT2XTrainingLib.runner import ProcessRunner  # noqa: E402

from ct2x.checkpoint import load_latest  # noqa: E402
from ct2x.data.prepare import MANIFEST, PrepareSettings, prepare_dataset, volume_file_problem  # noqa: E402

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the stand-in's pid checks are POSIX (Windows: CTRL_BREAK)")

ROOT = Path(__file__).resolve().parents[1]

#: What CTK's AppLauncher does to the jobs, in Python: the child inherits stdout and stderr
#: (``QProcess::ForwardedChannels``), no signal is forwarded, SIGINT kills the launcher (a Qt
#: application installs no handler: default action), and the launcher exits with the child's
#: status when the child ends first. It writes the child's pid to ``$LAUNCHER_CHILD_PID``.
LAUNCHER = textwrap.dedent(
    """
    import os, signal, subprocess, sys

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    child = subprocess.Popen([sys.executable, *sys.argv[1:]])
    with open(os.environ["LAUNCHER_CHILD_PID"], "w") as pid_file:
        pid_file.write(str(child.pid))
    code = child.wait()
    sys.exit(code if code >= 0 else 128 - code)
    """
)

#: Seconds a job gets to stop, and the most any test waits for one.
GRACE_S = 60.0
TIMEOUT_S = 120.0


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped by its new parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    return True


def _ends(pid: int | None, within_s: float = 2.0) -> bool:
    """Whether ``pid`` (``None``: never started) has ended or ends within ``within_s`` seconds: a
    process whose output has reached end of file has closed it on its way out and is about to end."""
    deadline = time.monotonic() + within_s
    while pid is not None and _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class Job:
    """One ``ct2x`` command line run through the launcher stand-in by a :class:`ProcessRunner`,
    polled the way the module's QTimer does."""

    def __init__(self, launcher: Path, command: list[str], tmp_path: Path, name: str) -> None:
        self.pid_file = tmp_path / f"{name}.pid"
        env = child_environment(os.environ, ROOT)
        env |= {"LAUNCHER_CHILD_PID": str(self.pid_file), "OMP_NUM_THREADS": "1"}
        # command = [PythonSlicer, "-m", "ct2x", ...]: the stand-in takes PythonSlicer's place
        self.runner = ProcessRunner([sys.executable, str(launcher), *command[1:]], env=env, minimum_grace_s=GRACE_S)
        self.lines: list[str] = []
        self.state = JobState()

    def start(self) -> Job:
        self.runner.start()
        return self

    @property
    def child_pid(self) -> int | None:
        text = self.pid_file.read_text() if self.pid_file.exists() else ""
        return int(text) if text.strip() else None

    def poll(self) -> None:
        for line in self.runner.poll():
            self.lines.append(line)
            self.state.update(line)
        time.sleep(0.05)

    def wait_for(self, condition, what: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not condition():
            assert not self.runner.finished, f"the job ended before {what}:\n" + "\n".join(self.lines[-30:])
            assert time.monotonic() < deadline, f"no {what} in {TIMEOUT_S} s:\n" + "\n".join(self.lines[-30:])
            self.poll()

    def wait_until_over(self) -> None:
        """Poll until the runner says the job is over; fail if it says so while the launcher's child
        (the real ``ct2x``) still runs, or if the job does not end in time."""
        deadline = time.monotonic() + TIMEOUT_S
        while self.runner.running:
            assert time.monotonic() < deadline, f"the job did not end in {TIMEOUT_S} s:\n" + "\n".join(self.lines[-30:])
            self.poll()
        assert _ends(self.child_pid), (
            "the runner says the job is over while the trainer (the launcher's child) still runs:\n"
            + "\n".join(self.lines[-30:])
        )
        while not self.runner.finished:  # the last lines
            assert time.monotonic() < deadline, "the job's last lines never came"
            self.poll()

    def stop_and_wait(self, answer: str) -> None:
        """Stop; the job must run until the launcher's child has ended, the child must have got the stop
        request (its output shows ``answer``), and the job must end within the grace period."""
        self.runner.request_stop()
        self.wait_until_over()
        assert answer in "\n".join(self.lines), "the job never got the stop request:\n" + "\n".join(self.lines[-30:])
        assert self.runner.stopped and not self.runner.forced, "the job should have stopped within the grace period"

    def kill_leftovers(self) -> None:
        """After a failed test: end whatever the launcher left behind (the original bug)."""
        self.runner.kill()
        pid = self.child_pid
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def launcher(tmp_path: Path) -> Path:
    path = tmp_path / "launcher.py"
    path.write_text(LAUNCHER, encoding="utf-8")
    return path


#: A job that answers SIGINT like ``ct2x train``: it takes a while (``STOP_S``) to write its
#: checkpoint, then exits 0; with ``IGNORE`` in its arguments it ignores SIGINT (a stuck job).
STOPPABLE = textwrap.dedent(
    """
    import signal, sys, time
    signal.signal(signal.SIGINT, signal.SIG_IGN if "IGNORE" in sys.argv else signal.default_int_handler)
    print("ready", flush=True)
    try:
        time.sleep(120)
    except KeyboardInterrupt:
        time.sleep(float(sys.argv[1]))
        print("CT2X-CHECKPOINT step=7 path=/run/step-7.json", flush=True)
    """
)
STOP_S = 1.5


def _job(launcher: Path, tmp_path: Path, *arguments: str, grace_s: float = GRACE_S) -> Job:
    job = Job(launcher, ["PythonSlicer", "-c", STOPPABLE, str(STOP_S), *arguments], tmp_path, "job")
    job.runner.minimum_grace_s = grace_s
    job.start().wait_for(lambda: "ready" in job.lines, "ready line")
    return job


def test_stop_reaches_the_launchers_child_and_the_job_runs_until_it_has_ended(launcher: Path, tmp_path: Path) -> None:
    job = _job(launcher, tmp_path)
    try:
        asked = time.monotonic()
        job.stop_and_wait("CT2X-CHECKPOINT")
    finally:
        job.kill_leftovers()
    assert time.monotonic() - asked >= STOP_S, "the job was said over before its child wrote the checkpoint"
    assert job.state.checkpoint.step == 7
    assert job.runner.returncode == -signal.SIGINT and job.runner.stopped and not job.runner.forced


def test_an_ignored_stop_terminates_the_whole_job(launcher: Path, tmp_path: Path) -> None:
    job = _job(launcher, tmp_path, "IGNORE", grace_s=0.5)
    try:
        job.runner.request_stop()
        job.wait_until_over()  # SIGINT killed the launcher only; terminate, sent to the group, ends the child
    finally:
        job.kill_leftovers()
    assert job.runner.stopped and job.runner.forced and job.state.checkpoint is None


def test_kill_ends_the_whole_job(launcher: Path, tmp_path: Path) -> None:
    job = _job(launcher, tmp_path, "IGNORE")
    try:
        job.runner.kill()  # Slicer closing
        assert _ends(job.child_pid), "the launcher's child survived kill()"
    finally:
        job.kill_leftovers()
    assert not job.runner.running and not job.runner.stop_requested


@pytest.fixture
def training_folders(tmp_path: Path) -> dict[str, Path]:
    """The module's output folder with a tiny prepared dataset in ``data``, radiographs, and the tiny config."""
    import numpy as np
    from PIL import Image

    for n, (size, shift) in enumerate([(24, 0.0), (20, 30.0)]):
        write_phantom_ct(tmp_path / "cts" / f"ct{n}.nii.gz", size, shift)
    output = tmp_path / "output"
    settings = PrepareSettings(
        angles=(-60.0, 0.0, 60.0), detector_size=64, pixel_mm=4.0, step=0.5, photons=0, grid_size=32
    )
    prepare_dataset(tmp_path / "cts", data_dir(output), settings, workers=1, progress=False)
    rng = np.random.default_rng(0)
    (tmp_path / "xray").mkdir()
    for n in range(4):
        pixels = (np.linspace(0, 255, 70)[None, :] + rng.normal(0, 20, (90, 70))).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / "xray" / f"{n}.png")
    config = tmp_path / "tiny.yaml"
    config.write_text("\n".join(f"{k}: {v}" for k, v in TINY.items()) + "\n")
    return {"output": output, "xray": tmp_path / "xray", "config": config}


#: Appended to the module's train command line: no data-loading processes, a loss line each step,
#: and no periodic checkpoint, so that the only checkpoint of the first run is the one Stop writes.
FAST_TRAIN = ["--workers", "0", "--log-every", "1", "--checkpoint-every", "1000", "--image-every", "1000"]


@pytest.mark.slow
def test_stop_through_the_launcher_checkpoints_the_trainer_and_resume_goes_on(
    launcher: Path, training_folders: dict[str, Path], tmp_path: Path
) -> None:
    output, total = training_folders["output"], 200
    options = TrainOptions(training_folders["xray"], output, config=str(training_folders["config"]), steps=total)
    job = Job(launcher, [*train_command("PythonSlicer", options), *FAST_TRAIN], tmp_path, "train").start()
    try:
        job.wait_for(lambda: job.state.progress is not None and job.state.progress.step >= 1, "training progress")
        assert job.child_pid is not None and _alive(job.child_pid)
        job.stop_and_wait("ct2x: SIGINT received")
    finally:
        job.kill_leftovers()
    run = run_dir(output)
    stopped_at = load_latest(run)[0]["step"]
    assert 1 <= stopped_at < total, "\n".join(job.lines[-30:])
    checkpoint = job.state.checkpoint  # the trainer said where it wrote it, and the panel shows it
    assert checkpoint is not None and checkpoint.step == stopped_at and Path(checkpoint.path).is_file()
    assert f"stopped at step {stopped_at} of {total}" in "\n".join(job.lines)
    assert latest_model(run) is not None
    card = json.loads((run / "model.json").read_text(encoding="utf-8"))
    assert card["training"]["steps"] == stopped_at
    assert job.runner.returncode == -signal.SIGINT  # the launcher died of SIGINT; the trainer's checkpoint says more

    resumed = dataclasses.replace(options, steps=stopped_at + 2, resume=True)
    again = Job(launcher, [*train_command("PythonSlicer", resumed), *FAST_TRAIN], tmp_path, "resume").start()
    try:
        again.wait_until_over()
    finally:
        again.kill_leftovers()
    assert again.runner.returncode == 0 and not again.runner.stopped, "\n".join(again.lines[-30:])
    steps = [parse_progress(line).step for line in again.lines if "CT2X-PROGRESS" in line]
    assert steps and steps[0] == stopped_at + 1, f"resumed at step {steps[:1]}, stopped at {stopped_at}"
    assert load_latest(run)[0]["step"] == stopped_at + 2
    assert parse_checkpoint([line for line in again.lines if "CT2X-CHECKPOINT" in line][-1]).step == stopped_at + 2


#: Appended to the module's prepare command line: tiny DRRs and grids, no noise.
FAST_PREPARE = ["--size", "64", "--grid", "32", "--step", "0.5", "--photons", "0"]


def _complete_dataset(out: Path) -> list[str]:
    """The CT file names the manifest lists. Each file it lists exists, every volume file is complete (a
    stopped prepare may leave complete ones it has not listed yet: the next run lists them), no temporary is left."""
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    listed = {v["file"] for v in manifest["volumes"]}
    files = {p.name for p in (out / "volumes").glob("*.safetensors")}
    assert listed <= files, f"volume files {sorted(files)} but the manifest lists {sorted(listed)}"
    for name in files:
        assert volume_file_problem(out / "volumes" / name, manifest["settings"]) is None
    leftovers = [p for p in out.rglob(".*") if p.name != ".ct2x.lock"]
    assert not leftovers, f"half-written files left: {leftovers}"
    return sorted(Path(v["source"]).name for v in manifest["volumes"])


@pytest.mark.slow
def test_stop_through_the_launcher_ends_prepare_and_a_rerun_completes(launcher: Path, tmp_path: Path) -> None:
    cts = [f"ct{n}.nii.gz" for n in range(12)]
    for n, name in enumerate(cts):
        write_phantom_ct(tmp_path / "cts" / name, 40, 5.0 * n)
    output = tmp_path / "output"
    options = PrepareOptions(tmp_path / "cts", output, angles=(-60, -30, 0, 30, 60), workers=1, device="cpu")
    command = [*prepare_command("PythonSlicer", options), *FAST_PREPARE]
    job = Job(launcher, command, tmp_path, "prepare").start()
    try:
        job.wait_for(lambda: job.state.progress is not None and job.state.progress.step >= 1, "a prepared CT")
        assert job.state.progress.step < len(cts), "prepare ended before Stop: make its CTs slower"
        job.stop_and_wait("ct2x: interrupted")
    finally:
        job.kill_leftovers()
    done = _complete_dataset(data_dir(output))
    assert 1 <= len(done) < len(cts)
    rendered = list((data_dir(output) / "volumes").glob("*.safetensors"))
    assert len(rendered) < len(cts), "prepare went on rendering the queued CTs after Stop"

    again = Job(launcher, command, tmp_path, "again").start()
    try:
        again.wait_until_over()
    finally:
        again.kill_leftovers()
    assert again.runner.returncode == 0, "\n".join(again.lines[-30:])
    assert _complete_dataset(data_dir(output)) == sorted(cts)

"""Run a long ``ct2x`` job in a child process without ever blocking the caller.

:class:`ProcessRunner` starts the command with ``subprocess`` in a process group of its own
(POSIX: a new session, ``start_new_session``; Windows: ``CREATE_NEW_PROCESS_GROUP``), a daemon
thread reads its merged stdout/stderr line by line into a queue, and the owner drains the queue
from time to time with :meth:`ProcessRunner.poll` (in Slicer: from a ``qt.QTimer``), so the GUI
thread only ever does non-blocking work.

The job is that whole group, not only the process started. Inside Slicer the command is
``PythonSlicer -m ct2x ...``, and PythonSlicer is CTK's AppLauncher: it starts the real interpreter
(``python-real``) as a child of its own that writes straight to the launcher's stdout/stderr (our
pipe), and it forwards no signal and installs no handler, so a signal sent to the launcher alone
kills the launcher and leaves the job running, orphaned. Hence:

* the job is :attr:`~ProcessRunner.running` until the process started has exited *and* its output
  pipe has reached end of file, i.e. until every process that holds the pipe (launcher, trainer,
  their workers) has ended; :attr:`~ProcessRunner.finished` once, in addition, :meth:`poll` has
  returned every line;
* every signal goes to the group: the launcher dies of it, the trainer answers it.

Stopping: :meth:`ProcessRunner.request_stop` asks the job to stop *gracefully* — SIGINT to the
group on Linux and macOS (``os.killpg``), CTRL_BREAK_EVENT to the group on Windows (Python sees it
as SIGBREAK). The core's trainer handles all of them (``ct2x.train.stop_signals``): it finishes the
step in progress, writes a resumable checkpoint and the model, and exits; ``ct2x prepare`` is
interrupted (its files are written atomically) and a re-run goes on. If the job is still running
:attr:`ProcessRunner.grace_s` seconds later, the next :meth:`~ProcessRunner.poll` terminates it
(SIGTERM to the group; Windows: ``taskkill /T /F``), and kills it after another ``grace_s`` (SIGKILL
to the group). The grace period follows the job's step time, as the job reports it
(:attr:`ProcessRunner.step_time_s`, seconds per step, set by the owner from the job's progress
lines; see :func:`stop_grace_s`), so that a slow step is not cut off before its checkpoint.
:meth:`ProcessRunner.kill` (Slicer closing) kills the group at once, without checkpoint.

Exit status: :attr:`~ProcessRunner.returncode` is the status of the process started, once the job
is over. Through a launcher stopped by SIGINT it is -2 (the launcher died of the signal) even when
the trainer exited 0 after its checkpoint, so a stopped job is told by :attr:`~ProcessRunner.stopped`
(and :attr:`~ProcessRunner.forced`: the stop needed terminate or kill), and whether a checkpoint was
written by the job's ``CT2X-CHECKPOINT`` lines (:mod:`CT2XTrainingLib.progress`).

Windows: ``taskkill /T`` finds the job's processes through the launcher, so once the launcher has
died (as it does on CTRL_BREAK) a trainer that ignores the stop request cannot be ended from here.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ct2x.errors import CT2XError

#: Steps' worth of time a stopping job gets on top of the minimum: the step in progress, then
#: writing the checkpoint and the model (about as much work as a step again, with margin).
GRACE_STEPS = 3

#: Seconds :meth:`ProcessRunner.kill` waits for the job's output to end after killing it.
KILL_WAIT_S = 5.0


def stop_grace_s(step_time_s: float | None, minimum_s: float = 30.0) -> float:
    """Seconds between a stop request and terminate: ``minimum_s`` plus :data:`GRACE_STEPS`
    times the job's reported seconds per step (just ``minimum_s`` while none is known)."""
    if step_time_s is None or not step_time_s > 0:
        return minimum_s
    return minimum_s + GRACE_STEPS * float(step_time_s)


class ProcessRunner:
    """One job (the child process, and every process of its group), its output lines, and its stop requests.

    ``minimum_grace_s``: the shortest wait, in seconds, between a stop request and terminate (and
    between terminate and kill); :attr:`step_time_s` (seconds per step, ``None`` = unknown) lengthens it.
    """

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        minimum_grace_s: float = 30.0,
    ) -> None:
        self.command = list(command)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.minimum_grace_s = minimum_grace_s
        self.step_time_s: float | None = None
        self._process: subprocess.Popen[str] | None = None
        self._lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._reader: threading.Thread | None = None
        self._stop_requested_at: float | None = None
        self._terminated_at: float | None = None
        self._killed = False

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the job in a process group of its own; returns at once."""
        if self.running:
            raise CT2XError("the job is already running: stop it first")
        if os.name == "nt":
            group: dict = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
        else:
            group = {"start_new_session": True}
        self._process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,  # universal newlines: each tqdm "\r" update becomes its own line
            encoding="utf-8",
            errors="replace",
            env=self.env,
            cwd=self.cwd,
            **group,
        )
        self._stop_requested_at = self._terminated_at = None
        self._killed = False
        self._reader = threading.Thread(target=self._read, args=(self._process,), daemon=True)
        self._reader.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:  # ends when every process holding the pipe has closed it
            self._lines.put(line.rstrip("\n"))
        process.stdout.close()

    @property
    def running(self) -> bool:
        """Whether the job is still on: the process started is alive, or some process of the job
        (e.g. the trainer under a launcher that has exited) still holds its output open."""
        if self._process is None:
            return False
        return self._process.poll() is None or (self._reader is not None and self._reader.is_alive())

    @property
    def returncode(self) -> int | None:
        """The exit status of the process started (the launcher, under PythonSlicer) once the job is
        over, else ``None``; negative = killed by that signal on POSIX (see :attr:`stopped`)."""
        return None if self._process is None or self.running else self._process.poll()

    @property
    def finished(self) -> bool:
        """The job is over and every line it printed has been read from the queue by :meth:`poll`."""
        return self._process is not None and not self.running and self._lines.empty()

    @property
    def stop_requested(self) -> bool:
        """:meth:`request_stop` was called for this job."""
        return self._stop_requested_at is not None

    @property
    def stopped(self) -> bool:
        """The job is over, and it ended after a stop request (whatever :attr:`returncode` says)."""
        return self.stop_requested and self._process is not None and not self.running

    @property
    def forced(self) -> bool:
        """The stop request was not enough: the job was terminated (and maybe killed)."""
        return self._terminated_at is not None

    # --------------------------------------------------------------- output
    def poll(self) -> list[str]:
        """Lines printed since the last call (never blocks); escalates an overdue stop request."""
        lines = []
        while True:
            try:
                lines.append(self._lines.get_nowait())
            except queue.Empty:
                break
        self._escalate_stop()
        return lines

    # ----------------------------------------------------------------- stop
    @property
    def grace_s(self) -> float:
        """The current grace period, seconds (:func:`stop_grace_s` of :attr:`step_time_s`)."""
        return stop_grace_s(self.step_time_s, self.minimum_grace_s)

    def request_stop(self) -> None:
        """Ask the job (its whole process group) to save a checkpoint and exit; escalation happens
        in :meth:`poll`."""
        if not self.running or self._stop_requested_at is not None:
            return
        if os.name == "nt":
            self._signal_group(signal.CTRL_BREAK_EVENT)
        else:
            self._signal_group(signal.SIGINT)
        self._stop_requested_at = time.monotonic()

    def _signal_group(self, sig: int) -> None:
        """Send ``sig`` to the job's process group, whose id is the pid of the process started (on
        Windows, CTRL_BREAK_EVENT only: ``os.kill`` hands it to GenerateConsoleCtrlEvent)."""
        assert self._process is not None
        try:
            if os.name == "nt":
                os.kill(self._process.pid, sig)
            else:
                os.killpg(self._process.pid, sig)
        except (ProcessLookupError, PermissionError):  # the group has no process left (macOS: only zombies)
            pass

    def _end_group(self, kill: bool) -> None:
        """Terminate (SIGTERM) or kill (SIGKILL) every process of the job; Windows: ``taskkill /T /F``
        of the process started and its descendants, while it is alive."""
        assert self._process is not None
        if os.name != "nt":
            self._signal_group(signal.SIGKILL if kill else signal.SIGTERM)
            return
        if self._process.poll() is None:
            subprocess.run(
                ["taskkill", "/T", "/F", "/PID", str(self._process.pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                creationflags=subprocess.CREATE_NO_WINDOW,
                check=False,
            )
            self._process.kill()

    def _escalate_stop(self) -> None:
        if self._stop_requested_at is None or self._killed or not self.running:
            return
        now = time.monotonic()
        if self._terminated_at is None and now - self._stop_requested_at >= self.grace_s:
            self._end_group(kill=False)
            self._terminated_at = now
        elif self._terminated_at is not None and now - self._terminated_at >= self.grace_s:
            self._end_group(kill=True)
            self._killed = True

    def kill(self) -> None:
        """End the job at once (no checkpoint): kill its whole process group; used when Slicer closes.
        Waits for the process started, and up to :data:`KILL_WAIT_S` seconds for the job's output to end."""
        if not self.running:
            return
        assert self._process is not None
        self._end_group(kill=True)
        self._killed = True
        self._process.wait()
        if self._reader is not None:
            self._reader.join(KILL_WAIT_S)

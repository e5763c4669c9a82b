"""Run a long ``ct2x`` job in a child process without ever blocking the caller.

:class:`ProcessRunner` starts the command with ``subprocess``, a daemon thread reads its
merged stdout/stderr line by line into a queue, and the owner drains the queue from time
to time with :meth:`ProcessRunner.poll` (in Slicer: from a ``qt.QTimer``), so the GUI
thread only ever does non-blocking work.

Stopping: :meth:`ProcessRunner.request_stop` asks the job to stop *gracefully* — SIGINT on
Linux and macOS, CTRL_BREAK_EVENT on Windows (the child runs in its own process group there;
Python sees it as SIGBREAK). The core's trainer handles all of them (``ct2x.train.stop_signals``):
it finishes the step in progress, writes a resumable checkpoint and the model, and exits. If the
job is still alive :attr:`ProcessRunner.grace_s` seconds later, the next
:meth:`~ProcessRunner.poll` terminates it, and kills it after another ``grace_s``. The grace
period follows the job's step time, as the job reports it (:attr:`ProcessRunner.step_time_s`,
set by the owner from the job's progress lines; see :func:`stop_grace_s`), so that a slow step
is not cut off before its checkpoint.
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


def stop_grace_s(step_time_s: float | None, minimum_s: float = 30.0) -> float:
    """Seconds between a stop request and terminate: ``minimum_s`` plus :data:`GRACE_STEPS`
    times the job's reported seconds per step (just ``minimum_s`` while none is known)."""
    if step_time_s is None or not step_time_s > 0:
        return minimum_s
    return minimum_s + GRACE_STEPS * float(step_time_s)


class ProcessRunner:
    """One child process, its output lines, and its stop requests.

    ``minimum_grace_s``: the shortest wait between a stop request and terminate (and between
    terminate and kill); :attr:`step_time_s` (seconds per step, ``None`` = unknown) lengthens it.
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

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the child; returns at once."""
        if self.running:
            raise CT2XError("the job is already running: stop it first")
        flags = subprocess.CREATE_NEW_PROCESS_GROUP if os.name == "nt" else 0
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
            creationflags=flags,
        )
        self._stop_requested_at = self._terminated_at = None
        self._reader = threading.Thread(target=self._read, args=(self._process,), daemon=True)
        self._reader.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self._lines.put(line.rstrip("\n"))
        process.stdout.close()

    @property
    def running(self) -> bool:
        """Whether the child is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The child's exit status once it has ended (negative = killed by that signal on POSIX)."""
        return None if self._process is None else self._process.poll()

    @property
    def finished(self) -> bool:
        """The child has ended and every line it printed has been read from the queue by :meth:`poll`."""
        return (
            self._process is not None
            and self._process.poll() is not None
            and (self._reader is None or not self._reader.is_alive())
            and self._lines.empty()
        )

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
        """Ask the child to save a checkpoint and exit; escalation happens in :meth:`poll`."""
        if not self.running or self._stop_requested_at is not None:
            return
        assert self._process is not None
        if os.name == "nt":
            self._process.send_signal(signal.CTRL_BREAK_EVENT)
        else:
            self._process.send_signal(signal.SIGINT)
        self._stop_requested_at = time.monotonic()

    def _escalate_stop(self) -> None:
        if self._stop_requested_at is None or not self.running:
            return
        assert self._process is not None
        now = time.monotonic()
        if self._terminated_at is None and now - self._stop_requested_at >= self.grace_s:
            self._process.terminate()
            self._terminated_at = now
        elif self._terminated_at is not None and now - self._terminated_at >= self.grace_s:
            self._process.kill()

    def kill(self) -> None:
        """End the child at once (no checkpoint); used when Slicer closes."""
        if self.running:
            assert self._process is not None
            self._process.kill()
            self._process.wait()

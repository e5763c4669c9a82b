"""One writer per output folder: an advisory lock on the file ``.ct2x.lock`` inside it.

``ct2x prepare`` waits for another prepare writing into the same dataset folder (then reads the
manifest that one wrote, so no CT is lost); ``ct2x train`` refuses a run folder that another
training process uses. The operating system releases the lock when its process ends, also on
``kill -9`` or a crash, so a stale lock never blocks a later run. The lock file holds the
process id of its holder, for the messages.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ct2x.errors import CT2XError

LOCK_FILE = ".ct2x.lock"

if os.name == "nt":
    import msvcrt

    def _try_lock(handle: IO[str]) -> bool:
        try:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(handle: IO[str]) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import errno
    import fcntl

    # POSIX record locks belong to the process: a forked child (a DataLoader worker) does not hold
    # them, so the lock goes the moment its process ends.
    def _try_lock(handle: IO[str]) -> bool:
        try:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise
        return True

    def _unlock(handle: IO[str]) -> None:
        fcntl.lockf(handle.fileno(), fcntl.LOCK_UN)


def _holder(path: Path) -> str:
    try:
        pid = path.read_text(encoding="utf-8").strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"


@contextmanager
def folder_lock(folder: Path, job: str, wait: bool) -> Iterator[None]:
    """Hold the lock of ``folder`` (which must exist) for the ``with`` body.

    ``job`` names the command in messages (e.g. ``"ct2x prepare"``). When another process holds
    the lock, ``wait`` prints one line on stderr and waits for it; otherwise a CT2XError says who
    holds it."""
    path = folder / LOCK_FILE
    try:
        handle = path.open("a+", encoding="utf-8")
    except OSError as error:
        raise CT2XError(f"cannot write the lock file {path}: {error.strerror or error}; choose another --out") from None
    try:
        if not _try_lock(handle):
            holder = _holder(path)
            if not wait:
                raise CT2XError(f"{holder} ({job}) is using {folder}: wait until it ends, or choose another --out")
            print(f"ct2x: waiting for {holder} ({job}) that writes into {folder}", file=sys.stderr, flush=True)
            while not _try_lock(handle):
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            _unlock(handle)
    finally:
        handle.close()

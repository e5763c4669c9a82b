"""One writer per output folder, one run per output folder, and nothing left by a refused run.

**The lock** (:func:`folder_lock`) is an advisory lock on the file ``.ct2x.lock`` inside the folder.
``ct2x prepare`` waits for another prepare writing into the same dataset folder (then reads the
manifest that one wrote, so no CT is lost). ``ct2x train`` refuses a run folder that another
process uses, and so do the one-shot output commands ``ct2x synthesize``, ``drr``, ``evaluate``
and ``demo`` (:func:`output_run`): their second run would replace the first one's files while
they are written, so it is refused at once, before its work, naming the process that holds the
folder, rather than queued behind it (an evaluation can take an hour). The operating system
releases the lock when its process ends, also on ``kill -9`` or a crash, so a stale lock never
blocks a later run. The lock file holds the process id and the command of its holder, for the
messages.

The holder removes the lock file when it releases the lock (a killed process leaves it; the next
holder removes it), and with it the folders it made (``create``, :meth:`HeldFolder.mkdir`) that
are still empty: a run refused for bad options or inputs leaves no lock file and no folder. A
process that waited on the removed file then holds a lock on a file no longer in the folder; it
sees that (the file at the path is not the one it locked) and starts over, so two processes never
both hold a folder.

**One run per folder** (:func:`output_run`): a run of an output command lists every file it
writes in ``.ct2x-outputs`` in the folder, each name before the file is written (so a killed
run's files are listed too). The first file a run writes first removes the files the previous
run listed (and their temporary files, and the subfolders that leaves empty); files ct2x did not
write, e.g. a user's notes, are never listed and never removed, whatever their names. A run
refused before it writes removes nothing. Files written by a ct2x older than this list are not
known to it and stay.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO

from ct2x.atomic import WriteError, check_output_folder, remove_temporaries
from ct2x.errors import CT2XError

LOCK_FILE = ".ct2x.lock"
OUTPUTS_FILE = ".ct2x-outputs"
_OUTPUTS_HEADER = "# ct2x: the files the last run wrote into this folder; the next run removes them"

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


def _holder(path: Path, job: str) -> str:
    """``process PID (COMMAND)`` of the lock file at ``path`` (``job`` when it names no command)."""
    try:
        pid, _, held_job = path.read_text(encoding="utf-8").strip().partition(" ")
    except OSError:
        pid, held_job = "", ""
    return f"process {pid} ({held_job or job})" if pid.isdigit() else f"another process ({job})"


def _same_file(handle: IO[str], path: Path) -> bool:
    """Whether ``path`` is still the file open as ``handle`` (its holder may have removed it)."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(handle.fileno())
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its parents that do not exist (absolute, deepest first)."""
    missing = []
    for path in (folder.absolute(), *folder.absolute().parents):
        if path.exists():
            break
        missing.append(path)
    return missing


def _make(folder: Path) -> tuple[list[Path], bool]:
    """Make ``folder`` with its parents when missing. Returns the folders made (absolute, deepest
    first) and whether ``folder`` itself was made here (not by another process meanwhile); a folder
    that cannot be made is left to :func:`ct2x.atomic.check_output_folder` to explain."""
    missing = _missing_folders(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir()
    except FileExistsError:
        return [p for p in missing if p != folder.absolute()], False
    except OSError:
        return [], False
    return missing, True


def _remove_empty(folders: list[Path]) -> None:
    """Remove each of ``folders`` that is empty, deepest first (the others stay)."""
    for path in sorted(set(folders), key=lambda p: len(p.absolute().parts), reverse=True):
        try:
            path.rmdir()
        except OSError:
            pass


class HeldFolder:
    """A folder whose lock this process holds (:func:`folder_lock`)."""

    def __init__(self, folder: Path, made: bool) -> None:
        self.folder = folder
        #: whether this process made the folder (it did not exist before)
        self.made = made
        self._subfolders: list[Path] = []

    def mkdir(self, name: str) -> Path:
        """Make the subfolder ``name`` (a relative path) when missing; one made here that is still
        empty when the lock is released is removed then."""
        path = self.folder / name
        missing = _missing_folders(path)
        path.mkdir(parents=True, exist_ok=True)
        self._subfolders.extend(missing)
        return path


def _acquire(folder: Path, job: str, wait: bool, create: bool, made: list[Path]) -> tuple[IO[str], bool]:
    """Open and lock ``folder``'s lock file (module docstring). With ``create``, a folder removed
    meanwhile is made again; ``made`` collects the folders made. Returns the locked file and
    whether ``folder`` was made again here."""
    path = folder / LOCK_FILE
    announced, remade = False, False
    while True:
        try:
            handle = path.open("a+", encoding="utf-8")
        except FileNotFoundError:
            if not create:
                raise CT2XError(
                    f"cannot write the lock file {path}: the folder {folder} does not exist; choose another --out"
                ) from None
            again, made_it = _make(folder)  # its holder made it and removed it, empty, on release
            made.extend(again)
            remade = remade or made_it
            if not again and not folder.is_dir():
                check_output_folder(folder)  # says why it cannot be made
            continue
        except OSError as error:
            raise CT2XError(
                f"cannot write the lock file {path}: {error.strerror or error}; choose another --out"
            ) from None
        try:
            if not _try_lock(handle):
                holder = _holder(path, job)
                if not wait:
                    raise CT2XError(f"{holder} is using {folder}: wait until it ends, or choose another --out")
                if not announced:
                    print(f"ct2x: waiting for {holder} that writes into {folder}", file=sys.stderr, flush=True)
                    announced = True
                while not _try_lock(handle):
                    time.sleep(0.2)
            if _same_file(handle, path):
                handle.seek(0)
                handle.truncate()
                handle.write(f"{os.getpid()} {job}\n")
                handle.flush()
                return handle, remade
            _unlock(handle)  # its holder removed that file: start over with the one at the path now
        except BaseException:
            handle.close()
            raise
        handle.close()


def _release(handle: IO[str], held: HeldFolder, made: list[Path]) -> None:
    """Remove the empty subfolders the holder made and the lock file, unlock, then remove the
    folders the holder made if they are empty. On Windows an open file cannot be removed: the
    lock file goes after it is closed, unless another process has opened it meanwhile."""
    path = held.folder / LOCK_FILE
    try:
        _remove_empty(held._subfolders)
        if os.name != "nt":
            path.unlink(missing_ok=True)  # still locked: whoever opens the path now gets a new file
        _unlock(handle)
    finally:
        handle.close()
    if os.name == "nt":
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass  # another process has it open: it stays theirs
    _remove_empty(made)


@contextmanager
def folder_lock(folder: Path, job: str, wait: bool, create: bool = False) -> Iterator[HeldFolder]:
    """Hold the lock of ``folder`` for the ``with`` body (see the module docstring).

    ``job`` names the command in messages (e.g. ``"ct2x prepare"``). When another process holds
    the lock, ``wait`` prints one line on stderr and waits for it; otherwise a CT2XError names the
    holder. ``folder`` must exist, unless ``create``: then it is checked and made like every
    ``--out`` (:func:`ct2x.atomic.check_output_folder`), and removed with the parents made for it
    when it is empty at the end (a refused run)."""
    folder = Path(folder)
    made: list[Path] = []
    made_here = False
    if create:
        made, made_here = _make(folder)
        check_output_folder(folder)
    try:
        handle, remade = _acquire(folder, job, wait, create, made)
    except BaseException:
        _remove_empty(made)
        raise
    held = HeldFolder(folder, made=made_here or remade)
    try:
        yield held
    finally:
        _release(handle, held, made)


def _listed_name(folder: Path, line: str) -> Path | None:
    """The file a line of the outputs list names, or None when it names none inside ``folder``
    (a name that leaves the folder, through ``..``, a drive or a linked folder, is never used)."""
    name = line.strip()
    if not name or name.startswith("#") or "\\" in name or PureWindowsPath(name).drive:
        return None
    parts = PurePosixPath(name).parts
    if PurePosixPath(name).is_absolute() or not parts or ".." in parts or parts[0] in (LOCK_FILE, OUTPUTS_FILE):
        return None
    path = folder.joinpath(*parts)
    root = folder.resolve()
    parent = path.parent.resolve()
    if parent != root and root not in parent.parents:
        return None
    return path


def _read_outputs(folder: Path) -> list[Path]:
    """The files the previous run listed in ``folder``'s outputs list (none without a list)."""
    path = folder / OUTPUTS_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as error:
        raise CT2XError(f"cannot read {path} ({error}): remove it, or choose another --out") from None
    if not lines or lines[0] != _OUTPUTS_HEADER:
        raise CT2XError(
            f"{path} is not ct2x's list of the files a run wrote (nothing was removed): remove it, "
            "or choose another --out"
        )
    listed = (_listed_name(folder, line) for line in lines[1:])
    return list(dict.fromkeys(p for p in listed if p is not None))


class OutputFiles:
    """The files one run of an output command writes into its locked folder (:func:`output_run`)."""

    def __init__(self, held: HeldFolder, previous: list[Path]) -> None:
        self.folder = held.folder
        self._previous = previous
        self._list: IO[str] | None = None
        self._names: set[str] = set()

    def path(self, name: str) -> Path:
        """Where to write the file ``name`` (a relative POSIX path, e.g. ``images/00-real/0000.png``;
        its folders are made). The name is listed first; the first call removes the previous run's files."""
        parts = PurePosixPath(name).parts
        if not parts or PurePosixPath(name).is_absolute() or ".." in parts or parts[0] in (LOCK_FILE, OUTPUTS_FILE):
            raise ValueError(f"not a file name inside an output folder: {name!r}")
        if self._list is None:
            self._start()
        if name not in self._names:
            self._names.add(name)
            self._append(f"{name}\n")
        target = self.folder.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def _start(self) -> None:
        for path in self._previous:
            try:
                if path.is_symlink() or path.is_file():
                    path.unlink()
                if path.parent.is_dir():
                    remove_temporaries(path.parent, path.name)
            except FileNotFoundError:
                pass
            except OSError as error:
                raise CT2XError(
                    f"cannot remove {path}, a file of the previous run: {error.strerror or error}; "
                    "remove it by hand, or choose another --out"
                ) from None
            _remove_empty([p for p in path.parents if self.folder in p.parents])
        path = self.folder / OUTPUTS_FILE
        try:
            self._list = path.open("w", encoding="utf-8")
        except OSError as error:
            raise WriteError(f"cannot write {path}: {error.strerror or error}") from None
        self._append(f"{_OUTPUTS_HEADER}\n")

    def _append(self, text: str) -> None:
        try:
            self._list.write(text)
            self._list.flush()  # on disk for the OS before the file it names is written
        except OSError as error:
            raise WriteError(f"cannot write {self.folder / OUTPUTS_FILE}: {error.strerror or error}") from None

    def close(self) -> None:
        """Flush the list to the disk and close it."""
        if self._list is not None:
            try:
                os.fsync(self._list.fileno())
            except OSError:
                pass  # every line is flushed; the files it names are on the disk already
            finally:
                self._list.close()
                self._list = None


@contextmanager
def output_run(folder: Path, job: str, overwrite: bool) -> Iterator[OutputFiles]:
    """Hold the ``--out`` folder of an output command (``job``, e.g. ``"ct2x synthesize"``) for one
    run: the lock (refused when another process holds it), the folder made when missing, and the
    files of the previous run removed when this one writes its first file (module docstring).

    A folder that existed is refused unless ``overwrite`` (checked again here, holding the lock,
    against another run that made it since the command's first check)."""
    folder = Path(folder)
    with folder_lock(folder, job, wait=False, create=True) as held:
        if not held.made and not overwrite:
            raise CT2XError(
                f"the output folder {folder} exists: add --overwrite to write into it, or choose another --out"
            )
        files = OutputFiles(held, _read_outputs(folder))
        try:
            yield files
        finally:
            files.close()

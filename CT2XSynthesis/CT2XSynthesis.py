"""CT2XSynthesis: C-arm X-ray views of a CT, placed on their detector planes in the 3D scene.

Thin Slicer module: the GUI (``Resources/UI/CT2XSynthesis.ui``, bound to a
``parameterNodeWrapper`` parameter node) and dialogs live here; all computation is in
``CT2XSynthesisLib`` (no Qt), which the pytest suite tests against a real MRML scene.

Synthesize uses the learned CT2X-GAN synthesis (the bundled model or a model file, in the
style of a radiograph or of DRRs), or, with model "None: DRR (physics)", DRRs with DeepDRR's
physics (``ct2x.drr``). The live preview always shows a coarse physics DRR.
"""

from __future__ import annotations

import logging
import typing
from pathlib import Path
from typing import Annotated

import ctk
import numpy as np
import qt
import slicer
import vtk
from CT2XSynthesisLib.dependencies import (
    TORCH_VERSION_REQUIREMENT,
    TORCHVISION_VERSION_REQUIREMENT,
    plan_dependencies,
    slicer_version_error,
)
from CT2XSynthesisLib.logic import (
    DRR_PHYSICS_MODE,
    LEARNED_MODE,
    SynthesisLogic,
    SynthesisParameters,
    bundled_model_path,
    learned_renderer,
    parse_angles,
    physics_drr_renderer,
    stored_style_names,
)
from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import (
    Choice,
    GuiConnector,
    WithinRange,
    parameterNodeGuiConnector,
    parameterNodeWrapper,
)
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from ct2x.geometry import DEFAULT_DETECTOR_PIXELS, DEFAULT_DETECTOR_WIDTH_MM, DEFAULT_SDD_MM, DEFAULT_SID_MM, CArm

#: Ray-marching step (voxels) of the live preview: coarser than the paper's 0.1 so it follows the sliders.
PREVIEW_STEP = 1.0
MODEL_SOURCES = ["Bundled model", "Model file", "None: DRR (physics)"]
STYLE_SOURCES = ["DRR style", "Loaded 2D volume", "Image file", "Style stored with the model"]


class CT2XSynthesis(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "CT2X Synthesis"
        self.parent.categories = ["Simulation"]
        self.parent.dependencies = []
        self.parent.contributors = ["CT2X maintainers"]
        self.parent.helpText = (
            "Synthesize C-arm X-ray views of a CT volume. Each view is a single-slice volume placed on the "
            "detector plane (RAS), named by its angles (LAO/RAO, CRAN/CAUD, degrees), with its geometry in the "
            "node's CT2X.* attributes. The views are synthesized by CT2X-GAN (the bundled model or a model file, "
            "in the style of a radiograph or of DRRs), or rendered as DRRs with DeepDRR's physics."
        )
        self.parent.acknowledgementText = (
            "Implements CT2X-GAN (ACM Multimedia 2024) on a pure-PyTorch core; DRR physics after DeepDRR."
        )


@parameterNodeWrapper
class CT2XSynthesisParameterNode:
    """GUI state. Angles in degrees, distances in mm; the angle list is text such as "-30, 0, 30/15"."""

    inputVolume: vtkMRMLScalarVolumeNode
    modelSource: Annotated[str, Choice(MODEL_SOURCES)] = MODEL_SOURCES[0]
    modelFile: Path
    styleSource: Annotated[str, Choice(STYLE_SOURCES)] = STYLE_SOURCES[0]
    styleVolume: vtkMRMLScalarVolumeNode
    styleFile: Path
    modelStyle: str = ""  # a style stored with the chosen model; the panel fills its combo box
    angles: str = "-60, -30, 0, 30, 60"
    primary: Annotated[float, WithinRange(-180.0, 180.0)] = 0.0
    secondary: Annotated[float, WithinRange(-90.0, 90.0)] = 0.0
    livePreview: bool = False
    sdd: Annotated[float, WithinRange(100.0, 3000.0)] = DEFAULT_SDD_MM
    sid: Annotated[float, WithinRange(50.0, 3000.0)] = DEFAULT_SID_MM
    detectorPixels: Annotated[int, WithinRange(8, 2048)] = DEFAULT_DETECTOR_PIXELS
    detectorWidth: Annotated[float, WithinRange(10.0, 1000.0)] = DEFAULT_DETECTOR_WIDTH_MM
    addMarkups: bool = False


@parameterNodeGuiConnector
class CtkComboBoxToTextConnector(GuiConnector):
    """Binds a ``str`` parameter to a ``ctkComboBox`` whose items the module fills itself: the
    parameter is the current item's text ("" when none is current).

    Slicer's own ``QComboBox`` connector needs a fixed ``Choice`` list, but the styles stored
    with a model are known only once the model is chosen.
    """

    @staticmethod
    def canRepresent(widget, datatype) -> bool:
        base = typing.get_args(datatype)[0] if typing.get_origin(datatype) is Annotated else datatype
        return type(widget) is ctk.ctkComboBox and base is str

    @staticmethod
    def create(widget, datatype):
        if CtkComboBoxToTextConnector.canRepresent(widget, datatype):
            return CtkComboBoxToTextConnector(widget)
        return None

    def __init__(self, widget) -> None:
        super().__init__()
        self._widget = widget

    def _connect(self) -> None:
        self._widget.currentIndexChanged.connect(self.changed)

    def _disconnect(self) -> None:
        self._widget.currentIndexChanged.disconnect(self.changed)

    def widget(self):
        return self._widget

    def read(self) -> str:
        return self._widget.currentText if self._widget.currentIndex >= 0 else ""

    def write(self, value: str) -> None:
        self._widget.currentIndex = self._widget.findText(value) if value else -1


def checkSlicerVersion(layout=None) -> bool:
    """Whether this Slicer is new enough for the CT2X modules.

    If it is not, shows an error dialog naming the required version and, given the module
    panel's ``layout``, leaves the same message in the panel.
    """
    message = slicer_version_error(slicer.app.majorVersion, slicer.app.minorVersion)
    if message is None:
        return True
    slicer.util.errorDisplay(message, windowTitle="CT2X")
    if layout is not None:
        label = qt.QLabel(message)
        label.wordWrap = True
        layout.addWidget(label)
    return False


def ensureDependencies() -> bool:
    """First use: make torch (PyTorch extension) and the core's other packages importable.

    Shows the dialogs; returns False if the user declined or the PyTorch extension is missing.
    """
    plan = plan_dependencies()
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
            + "\n\nSlicer's own numpy, vtk, SimpleITK and PyTorch's torch are not touched.",
            windowTitle="CT2X: install Python packages",
        ):
            return False
        import numpy

        with slicer.util.WaitCursor():  # pinning Slicer's numpy: pip picks versions that fit it (numba is picky)
            slicer.util.pip_install(" ".join(plan.pip_requirements) + f" numpy=={numpy.__version__}")
    return True


class CT2XSynthesisWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: parameters, live preview, Synthesize."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._previewTimer = None
        self._previewRenderer = physics_drr_renderer(step=PREVIEW_STEP)
        self._styleNamesKey = None  # (model path, file stamp) whose stored styles the combo box lists

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        if not checkSlicerVersion(self.layout):
            return  # too old a Slicer: the panel shows why, and nothing else is set up
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CT2XSynthesis.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.modeLabel.text = f"Renderer: {LEARNED_MODE} (preview: {DRR_PHYSICS_MODE})"

        self.logic = CT2XSynthesisLogic()
        self._previewTimer = qt.QTimer()
        self._previewTimer.setSingleShot(True)
        self._previewTimer.setInterval(250)
        self._previewTimer.timeout.connect(self.updatePreview)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.synthesizeButton.connect("clicked(bool)", self.onSynthesizeButton)
        self.ui.primarySliderWidget.connect("valueChanged(double)", self.schedulePreview)
        self.ui.secondarySliderWidget.connect("valueChanged(double)", self.schedulePreview)
        self.ui.livePreviewCheckBox.connect("toggled(bool)", self.onLivePreviewToggled)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._previewTimer is not None:
            self._previewTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        if self.logic is not None:  # None: setup stopped at the Slicer version check
            self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume:
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, inputParameterNode: CT2XSynthesisParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
            self._styleNamesKey = None
            self._updateButtons()

    def _updateButtons(self, caller=None, event=None) -> None:
        ready = bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.synthesizeButton.enabled = ready
        self.ui.synthesizeButton.toolTip = "Render the views" if ready else "Select a CT volume first"
        if self._parameterNode:
            self._updateModelStyles()

    def _chosenModelPath(self) -> Path | None:
        """The chosen model file (may be missing), or None for "None: DRR (physics)" or no file yet."""
        p = self._parameterNode
        if p.modelSource == MODEL_SOURCES[0]:
            return bundled_model_path()
        if p.modelSource == MODEL_SOURCES[1]:
            text = str(p.modelFile or "").strip()
            return Path(text) if text and text != "." else None
        return None

    def _updateModelStyles(self) -> None:
        """List the chosen model's stored styles in the combo box (when the model or its file
        changed), keep ``modelStyle`` one of them, and show the box only for that style source."""
        p = self._parameterNode
        path = self._chosenModelPath()
        try:
            stamp = path.stat() if path is not None else None
            key = (str(path), stamp.st_mtime_ns, stamp.st_size) if stamp else (str(path), None, None)
        except OSError:
            key = (str(path), None, None)
        combo = self.ui.modelStyleComboBox
        if key != self._styleNamesKey:
            self._styleNamesKey = key
            names = stored_style_names(path)
            wasBlocked = combo.blockSignals(True)
            try:
                combo.clear()
                combo.addItems(names)
                combo.currentIndex = combo.findText(p.modelStyle) if p.modelStyle else -1
            finally:
                combo.blockSignals(wasBlocked)
            combo.enabled = bool(names)
            combo.toolTip = (
                "A reference style stored with the chosen model (the X-ray style code of a training radiograph)"
                if names
                else "The chosen model stores no styles: choose another style reference"
            )
            if p.modelStyle not in names:
                p.modelStyle = names[0] if names else ""  # observers call back here; the key is unchanged by then
        stored = p.styleSource == STYLE_SOURCES[3]
        self.ui.modelLabel5.visible = stored
        combo.visible = stored

    def _chain(self, angles: tuple[tuple[float, float], ...]) -> SynthesisParameters:
        p = self._parameterNode
        return SynthesisParameters(
            angles=angles,
            sdd=p.sdd,
            sid=p.sid,
            detector_pixels=p.detectorPixels,
            detector_width_mm=p.detectorWidth,
            add_markups=p.addMarkups,
        )

    # ------------------------------------------------------------- preview
    def onLivePreviewToggled(self, enabled: bool) -> None:
        if enabled and not ensureDependencies():
            self.ui.livePreviewCheckBox.checked = False
            return
        self.schedulePreview()

    def schedulePreview(self, *_args) -> None:
        if self._parameterNode and self._parameterNode.livePreview and self._parameterNode.inputVolume:
            self._previewTimer.start()

    def updatePreview(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("CT2X could not render the preview.", waitCursor=True):
            chain = self._chain(((p.primary, p.secondary),))
            node = self.logic.update_preview(p.inputVolume, chain, renderer=self._previewRenderer)
            showInSliceView(node)

    # ---------------------------------------------------------- synthesize
    def onSynthesizeButton(self) -> None:
        if not ensureDependencies():
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("CT2X could not synthesize the views.", waitCursor=True):
            parameters = self._chain(parse_angles(p.angles, default_secondary=p.secondary))
            renderer, mode = self._renderer()  # before the progress dialog, which a bad choice would leave open
            dialog = slicer.util.createProgressDialog(
                windowTitle="CT2X Synthesis", labelText="Reading the CT", maximum=len(parameters.angles)
            )
            dialog.setCancelButton(None)

            def progress(done: int, total: int, text: str) -> None:
                dialog.labelText = text
                dialog.value = done
                slicer.app.processEvents()

            self.logic.renderer, self.logic.mode = renderer, mode
            try:
                result = self.logic.synthesize(p.inputVolume, parameters, progress)
            finally:
                dialog.close()
            showInSliceView(result.volumes[-1])

    def _renderer(self):
        """The renderer and its mode label for the chosen model and style reference."""
        p = self._parameterNode
        if p.modelSource == MODEL_SOURCES[2]:
            return physics_drr_renderer(), DRR_PHYSICS_MODE
        if p.modelSource == MODEL_SOURCES[1] and not str(p.modelFile or "").strip():
            raise ValueError("Choose a model file (.safetensors), or the bundled model")
        model = None if p.modelSource == MODEL_SOURCES[0] else p.modelFile
        if p.styleSource == STYLE_SOURCES[1]:
            if not p.styleVolume:
                raise ValueError("Choose the 2D volume to use as style reference")
            style = slicer.util.arrayFromVolume(p.styleVolume)
        elif p.styleSource == STYLE_SOURCES[2]:
            style = p.styleFile
        else:
            style = None
        if p.styleSource == STYLE_SOURCES[3]:
            chosen = self._chosenModelPath()
            if not p.modelStyle and chosen is not None and chosen.is_file():  # a missing file: the loader says so
                raise ValueError(f"The model {chosen.name} stores no styles: choose another style reference")
            return learned_renderer(model, model_style=p.modelStyle), LEARNED_MODE
        return learned_renderer(model, style), LEARNED_MODE


def showInSliceView(node: vtkMRMLScalarVolumeNode) -> None:
    """Show a view node in the red slice view, turned to the image's own plane."""
    slicer.util.setSliceViewerLayers(background=node, fit=False)
    sliceWidget = slicer.app.layoutManager().sliceWidget("Red")
    sliceWidget.mrmlSliceNode().RotateToVolumePlane(node)
    sliceWidget.sliceLogic().FitSliceToAll()


class CT2XSynthesisLogic(ScriptedLoadableModuleLogic, SynthesisLogic):
    """Slicer's logic class: the parameter node, plus :class:`SynthesisLogic` with the physics DRR."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        SynthesisLogic.__init__(self, physics_drr_renderer())

    def getParameterNode(self) -> CT2XSynthesisParameterNode:
        return CT2XSynthesisParameterNode(super().getParameterNode())


class CT2XSynthesisTest(ScriptedLoadableModuleTest):
    """Self-test run inside Slicer (ctest): logic on a synthetic CT, then the widget."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_views_lie_on_their_detector_planes()
        self.setUp()
        self.test_widget_binds_the_parameter_node()

    def test_views_lie_on_their_detector_planes(self) -> None:
        ct = slicer.util.addVolumeFromArray(
            np.full((20, 24, 28), -1000.0, np.float32), np.diag([-2.0, -2.0, 2.0, 1.0]), name="CT"
        )
        before = slicer.util.arrayFromVolume(ct).copy()

        def columnIndex(volume, views):
            h, w = views[0].detector_shape
            return np.broadcast_to(np.arange(w, dtype=np.float32), (len(views), h, w))

        angles = ((-30.0, 0.0), (0.0, 0.0), (30.0, 10.0))
        result = SynthesisLogic(columnIndex).synthesize(ct, SynthesisParameters(angles=angles, detector_pixels=32))
        self.assertEqual(len(result.volumes), 3)
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(ct), before))
        center = np.array([27.0, 23.0, 19.0])  # CT bounding-box centre, LPS (RAS (-27, -23, 19))
        for (primary, secondary), node in zip(angles, result.volumes, strict=True):
            view = CArm(primary, secondary, detector_shape=(32, 32),
                        pixel_spacing=(DEFAULT_DETECTOR_WIDTH_MM / 32,) * 2, isocenter=tuple(center))  # fmt: skip
            matrix = vtk.vtkMatrix4x4()
            node.GetIJKToRASMatrix(matrix)
            middle = matrix.MultiplyPoint([15.5, 15.5, 0.0, 1.0])[:3]
            expected = np.diag([-1.0, -1.0, 1.0]) @ view.detector_center
            self.assertTrue(np.allclose(middle, expected, atol=1e-6), f"{node.GetName()}: {middle} != {expected}")
            self.assertEqual(slicer.util.arrayFromVolume(node).dtype, np.float32)
        logging.info("CT2XSynthesis logic test passed")

    def test_widget_binds_the_parameter_node(self) -> None:
        slicer.util.selectModule("CT2XSynthesis")
        widget = slicer.util.getModuleWidget("CT2XSynthesis")
        parameters = widget.logic.getParameterNode()
        parameters.sdd = 1100.0
        self.assertAlmostEqual(widget.ui.sddSpinBox.value, 1100.0)
        parameters.angles = "10, 20"
        self.assertEqual(widget.ui.anglesLineEdit.text, "10, 20")
        # the stored-style combo box lists the chosen model's styles and follows modelStyle
        parameters.styleSource = STYLE_SOURCES[3]
        self.assertEqual(widget.ui.styleSourceComboBox.currentText, STYLE_SOURCES[3])
        combo = widget.ui.modelStyleComboBox
        names = [combo.itemText(i) for i in range(combo.count)]
        self.assertEqual(names, stored_style_names(bundled_model_path()))
        self.assertEqual(parameters.modelStyle, names[0] if names else "")
        if names:
            parameters.modelStyle = names[-1]
            self.assertEqual(combo.currentText, names[-1])
        parameters.modelSource = MODEL_SOURCES[2]
        self.assertEqual((combo.count, parameters.modelStyle), (0, ""))

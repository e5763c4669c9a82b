"""CT2XSynthesis: C-arm X-ray views of a CT, placed on their detector planes in the 3D scene.

Thin Slicer module: the GUI (``Resources/UI/CT2XSynthesis.ui``, bound to a
``parameterNodeWrapper`` parameter node) and dialogs live here; all computation is in
``CT2XSynthesisLib`` (no Qt), which the pytest suite tests against a real MRML scene.

Synthesize uses the learned CT2X-GAN synthesis (the bundled model or a model file, in the
style of a radiograph or of DRRs), or, with model "None: DRR (physics)", DeepDRR's physics
through the chosen imaging chain (``ct2x.imaging``, as ``ct2x drr --imaging``; fitted to the style
reference when one is given) or the raw DRR. It runs in a worker thread
(``CT2XSynthesisLib.background``): a ``qt.QTimer`` polls the job for the progress bar, Cancel stops
it between views, and only this (GUI) thread adds the finished views to the scene. The live preview
renders one coarse view in another worker thread (``CT2XSynthesisLib.preview``): without a model
with the synthesis's own renderer at a coarser ray step, with a model as a raw physics DRR.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import numpy as np
import qt
import slicer
import vtk
from CT2XSynthesisLib.dependencies import (
    SYNTHESIS_REQUIREMENTS,
    check_slicer_version,
    ensure_dependencies,
    plan_dependencies,
)
from CT2XSynthesisLib.display import VIEWS_LAYOUT_ID, show_views, slice_to_ras_for_view, slice_view_names
from CT2XSynthesisLib.logic import (
    CHAIN_DEVICES,
    DEFAULT_SEED,
    DEVICES,
    GEOMETRY_FILE,
    GEOMETRY_PANEL,
    GEOMETRY_SOURCES,
    GEOMETRY_VOLUME,
    MODEL_BUNDLED,
    MODEL_FILE,
    MODEL_NONE,
    MODEL_SOURCES,
    PREVIEW_NODE_NAME,
    PREVIEW_STEP_VOXELS,
    STYLE_DRR,
    STYLE_FILE,
    STYLE_SOURCES,
    STYLE_STORED,
    STYLE_VOLUME,
    RendererChoice,
    StyleArray,
    SynthesisLogic,
    SynthesisParameters,
    bundled_model_path,
    describe_geometry,
    describe_renderer,
    imaging_controls,
    isocenter_from_markups,
    like_parameters,
    parse_angles,
    physics_drr_renderer,
    place_preview,
    radiograph_file_of_node,
    stop_background_work,
    stored_style_names,
    style_reference,
    style_reference_key,
    view_from_attributes,
)
from CT2XSynthesisLib.preview import PreviewWorker
from CT2XSynthesisLib.reloading import forget_package
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from ct2x.errors import CT2XError
from ct2x.geometry import (
    DEFAULT_DETECTOR_PIXELS,
    DEFAULT_DETECTOR_WIDTH_MM,
    DEFAULT_SDD_MM,
    DEFAULT_SID_MM,
    SDD_RANGE_MM,
    SID_RANGE_MM,
    CArm,
)
from ct2x.options import (
    DEFAULT_ANGLES,
    DEFAULT_IMAGING,
    IMAGING_MODES,
    IMAGING_RAW,
    MAX_DEVICES,
    DRROptions,
    SynthesizeOptions,
    option_default,
)
from ct2x.radiograph_geometry import read_radiograph_geometry

#: How often the panel polls a running synthesis, ms.
JOB_POLL_MS = 100
#: How often the panel collects the live preview while its worker renders, ms.
PREVIEW_POLL_MS = 50
#: The longest the panel waits, on scene close or module cleanup, for the view in progress to end, s.
JOB_STOP_WAIT_S = 120.0


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
            "in the style of a radiograph or of DRRs), or rendered with DeepDRR's physics through an imaging chain "
            "(a device preset, randomised, or fitted to a style reference) or as raw DRRs. "
            'See more information in the <a href="https://github.com/ct2x/SlicerCT2X#readme">documentation</a>.'
        )
        self.parent.acknowledgementText = (
            "Implements CT2X-GAN (ACM Multimedia 2024) on a pure-PyTorch core; DRR physics after DeepDRR."
        )


@parameterNodeWrapper
class CT2XSynthesisParameterNode:
    """GUI state. Angles in degrees, distances in mm; the angle list is text such as "-30, 0, 30/15"."""

    inputVolume: vtkMRMLScalarVolumeNode
    removeTable: bool = option_default(DRROptions, "remove_table")  # ct2x drr --remove-table's default
    modelSource: Annotated[str, Choice(list(MODEL_SOURCES))] = MODEL_BUNDLED
    modelFile: Path
    styleSource: Annotated[str, Choice(list(STYLE_SOURCES))] = STYLE_DRR
    styleVolume: vtkMRMLScalarVolumeNode
    styleFile: Path
    # A style stored with the chosen model. Bound by hand (CT2XSynthesisWidget.onModelStyleChanged): its choices
    # change with the model, and from Slicer 5.8 on a ctkComboBox bound to a str needs a fixed Choice list.
    modelStyle: str = ""
    device: Annotated[str, Choice(list(DEVICES))] = SynthesizeOptions.device  # ct2x synthesize's default
    # Without a model: ct2x drr --imaging's choices and default, its --seed's default, and --devices (-1, shown
    # as "chain's own": not given, none in a preset, the randomised draw's).
    imaging: Annotated[str, Choice(list(IMAGING_MODES))] = DEFAULT_IMAGING
    seed: Annotated[int, WithinRange(0, 2**31 - 1)] = option_default(DRROptions, "seed")
    devices: Annotated[int, WithinRange(CHAIN_DEVICES, MAX_DEVICES)] = CHAIN_DEVICES
    angles: str = ", ".join(f"{angle:g}" for angle in DEFAULT_ANGLES)
    primary: Annotated[float, WithinRange(-180.0, 180.0)] = 0.0
    secondary: Annotated[float, WithinRange(-90.0, 90.0)] = 0.0
    livePreview: bool = False
    geometrySource: Annotated[str, Choice(list(GEOMETRY_SOURCES))] = GEOMETRY_PANEL
    likeVolume: vtkMRMLScalarVolumeNode
    likeFile: Path
    isocenterPoint: vtkMRMLMarkupsFiducialNode
    sdd: Annotated[float, WithinRange(*SDD_RANGE_MM)] = DEFAULT_SDD_MM
    sid: Annotated[float, WithinRange(*SID_RANGE_MM)] = DEFAULT_SID_MM
    detectorPixels: Annotated[int, WithinRange(8, 2048)] = DEFAULT_DETECTOR_PIXELS
    detectorWidth: Annotated[float, WithinRange(10.0, 1000.0)] = DEFAULT_DETECTOR_WIDTH_MM
    addMarkups: bool = False


class CT2XSynthesisWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: parameters, live preview, Synthesize in the background, Cancel."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._previewTimer = None
        self._jobTimer = None
        self._job = None  # the running SynthesisJob
        self._preview = PreviewWorker(physics_drr_renderer(step=PREVIEW_STEP_VOXELS))  # until a choice is made
        self._styleNamesKey = None  # (model path, file stamp) whose stored styles the combo box lists
        self._likeKey = None  # (geometry source, radiograph) whose geometry the panel shows

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        if not check_slicer_version(self.showMessageInPanel):
            return  # too old a Slicer: the panel shows why, and nothing else is set up
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CT2XSynthesis.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = CT2XSynthesisLogic()
        self._previewTimer = qt.QTimer()  # collects the preview worker's images while it works
        self._previewTimer.setInterval(PREVIEW_POLL_MS)
        self._previewTimer.timeout.connect(self.onPreviewPoll)
        self._jobTimer = qt.QTimer()
        self._jobTimer.setInterval(JOB_POLL_MS)
        self._jobTimer.timeout.connect(self.onJobPoll)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.synthesizeButton.connect("clicked(bool)", self.onSynthesizeButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.primarySliderWidget.connect("valueChanged(double)", self.schedulePreview)
        self.ui.secondarySliderWidget.connect("valueChanged(double)", self.schedulePreview)
        self.ui.livePreviewCheckBox.connect("toggled(bool)", self.onLivePreviewToggled)
        self.ui.modelStyleComboBox.connect("currentIndexChanged(int)", self.onModelStyleChanged)
        self.initializeParameterNode()

    def showMessageInPanel(self, message: str) -> None:
        label = qt.QLabel(message)
        label.wordWrap = True
        self.layout.addWidget(label)

    def onReload(self) -> None:
        """Developer mode's Reload: the Lib package and the ``ct2x`` core are reloaded from disk with the script."""
        self.cleanup()
        forget_package("CT2XSynthesisLib")
        forget_package("ct2x")
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self) -> None:
        for timer in (self._previewTimer, self._jobTimer):
            if timer is not None:
                timer.stop()
        self._stopWork()
        self._preview.close(timeout=JOB_STOP_WAIT_S)
        self.removeObservers()

    def _stopWork(self) -> None:
        """Cancel the synthesis and the preview, and wait for both threads to let go of the scene's data."""
        job, self._job = self._job, None
        if job is not None:
            self._jobTimer.stop()
            self.ui.synthesisProgressBar.visible = self.ui.cancelButton.visible = False
        with slicer.util.WaitCursor():
            if not stop_background_work(job, self._preview, JOB_STOP_WAIT_S):
                logging.warning("CT2X: the cancelled work is still rendering its last view; its result is ignored")

    def enter(self) -> None:
        if self.logic is not None:  # None: setup stopped at the Slicer version check
            self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self._stopWork()  # the scene is going away: nothing rendered for it will be placed
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        self._preview.release()
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
            self._styleNamesKey = self._likeKey = None
            self._updateButtons()

    def _updateButtons(self, caller=None, event=None) -> None:
        ready = bool(self._parameterNode and self._parameterNode.inputVolume) and self._job is None
        self.ui.synthesizeButton.enabled = ready
        self.ui.synthesizeButton.toolTip = (
            "Render the views in the background"
            if ready
            else ("A synthesis is running" if self._job is not None else "Select a CT volume first")
        )
        if self._parameterNode:
            self._updateModelStyles()
            self._updateLikeGeometry()
            self._updateImaging()

    def _rendererChoice(self) -> tuple[RendererChoice, StyleArray]:
        """The chosen renderer (compared by name) and, when a 2D volume is the style, what copies its voxels (the
        worker never reads the node; the copy is made only when the renderer is built, not per slider move)."""
        p = self._parameterNode
        styleArray, styleKey = None, ""
        if p.styleSource == STYLE_VOLUME and p.styleVolume:
            node = p.styleVolume
            styleArray, styleKey = (lambda: style_reference(node)[0]), style_reference_key(node)
        physics = p.modelSource == MODEL_NONE  # the imaging choice, seed and devices count only without a model
        choice = RendererChoice(
            model_source=p.modelSource,
            model_file=str(p.modelFile or "") if p.modelSource == MODEL_FILE else "",
            style_source=p.styleSource,
            style_file=str(p.styleFile or "") if p.styleSource == STYLE_FILE else "",
            style_key=styleKey,
            model_style=p.modelStyle if p.styleSource == STYLE_STORED else "",
            device=p.device,
            imaging=p.imaging if physics else DEFAULT_IMAGING,
            seed=p.seed if physics and p.imaging != IMAGING_RAW else DEFAULT_SEED,
            devices=p.devices if physics and p.imaging != IMAGING_RAW and p.devices != CHAIN_DEVICES else None,
        )
        return choice, styleArray

    def _updateImaging(self) -> None:
        """Show the imaging choice, its seed and support devices only where they count, and what Synthesize and the
        preview make."""
        choice, _ = self._rendererChoice()  # the style volume is not copied here
        showImaging, showSeed = imaging_controls(choice)
        for widget in (self.ui.imagingLabel, self.ui.imagingComboBox):
            widget.visible = showImaging
        for widget in (self.ui.seedLabel, self.ui.seedSpinBox, self.ui.devicesLabel, self.ui.devicesSpinBox):
            widget.visible = showSeed
        self.ui.modeLabel.text = describe_renderer(choice)

    def _updateModelStyles(self) -> None:
        """List the chosen model's stored styles in the combo box (when the model or its file
        changed), keep ``modelStyle`` one of them, and show the box only for that style source."""
        p = self._parameterNode
        path = RendererChoice(p.modelSource, model_file=str(p.modelFile or "")).model_path()
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
        wanted = combo.findText(p.modelStyle) if p.modelStyle else -1
        if combo.currentIndex != wanted:  # the parameter changed (script, scene load): the box follows
            wasBlocked = combo.blockSignals(True)
            combo.currentIndex = wanted
            combo.blockSignals(wasBlocked)
        stored = p.styleSource == STYLE_STORED
        self.ui.modelLabel5.visible = stored
        combo.visible = stored

    def _likeFile(self) -> Path:
        """The DICOM radiograph whose geometry is chosen, or a CT2XError saying what to choose."""
        p = self._parameterNode
        if p.geometrySource == GEOMETRY_VOLUME:
            if not p.likeVolume:
                raise CT2XError("choose the loaded DICOM radiograph whose geometry to use")
            return radiograph_file_of_node(p.likeVolume, getattr(slicer, "dicomDatabase", None))
        text = str(p.likeFile or "").strip()
        if not text or text == ".":
            raise CT2XError("choose the DICOM radiograph file whose geometry to use")
        return Path(text)

    def _updateLikeGeometry(self) -> None:
        """Show the chosen radiograph's geometry (and each missing tag) under the geometry choice."""
        p = self._parameterNode
        like = p.geometrySource != GEOMETRY_PANEL
        for widget in (self.ui.geometryLabel6, self.ui.likeVolumeSelector):
            widget.visible = p.geometrySource == GEOMETRY_VOLUME
        for widget in (self.ui.geometryLabel7, self.ui.likeFilePathLineEdit):
            widget.visible = p.geometrySource == GEOMETRY_FILE
        self.ui.likeGeometryLabel.visible = like
        for widget in (self.ui.sddSpinBox, self.ui.sidSpinBox, self.ui.detectorPixelsSpinBox,
                       self.ui.detectorWidthSpinBox, self.ui.anglesLineEdit):  # fmt: skip
            widget.enabled = not like
        key = (p.geometrySource, p.likeVolume.GetID() if p.likeVolume else None, str(p.likeFile or ""))
        if not like or key == self._likeKey:
            return
        self._likeKey = key
        try:
            self.ui.likeGeometryLabel.text = describe_geometry(read_radiograph_geometry(self._likeFile()))
        except CT2XError as error:
            self.ui.likeGeometryLabel.text = str(error)

    def _parameters(self, angles: tuple[tuple[float, float], ...] | None = None) -> SynthesisParameters:
        """The imaging chain: the panel's fields (``angles``: the angle list), or a radiograph's geometry."""
        p = self._parameterNode
        isocenter = isocenter_from_markups(p.isocenterPoint) if p.isocenterPoint else None
        if p.geometrySource != GEOMETRY_PANEL:
            geometry = read_radiograph_geometry(self._likeFile())
            parameters = like_parameters(geometry, isocenter, p.addMarkups)
            parameters = parameters if angles is None else replace(parameters, angles=angles)
            return replace(parameters, remove_table=p.removeTable)
        return SynthesisParameters(
            angles=angles if angles is not None else parse_angles(p.angles, default_secondary=p.secondary),
            sdd=p.sdd,
            sid=p.sid,
            detector_pixels=p.detectorPixels,
            detector_width_mm=p.detectorWidth,
            isocenter_ras=isocenter,
            add_markups=p.addMarkups,
            remove_table=p.removeTable,
        )

    def onModelStyleChanged(self, index: int) -> None:
        """The stored-style box, bound by hand: its current text is ``modelStyle`` ("" when none)."""
        if self._parameterNode is not None:
            self._parameterNode.modelStyle = self.ui.modelStyleComboBox.currentText if index >= 0 else ""

    # ------------------------------------------------------------- preview
    def onLivePreviewToggled(self, enabled: bool) -> None:
        if enabled and not ensure_dependencies(SYNTHESIS_REQUIREMENTS):
            self.ui.livePreviewCheckBox.checked = False
            return
        self.schedulePreview()

    def schedulePreview(self, *_args) -> None:
        """Slider moved (GUI thread): hand the view to the preview worker and return; the newest value wins.

        The angles and the check box are read from the widgets: this slot was connected before the parameter
        node's connectors, so Qt calls it before they have copied the new value into the node."""
        p = self._parameterNode
        if not (p and self.ui.livePreviewCheckBox.checked and p.inputVolume) or self._job is not None:
            return  # no preview while a synthesis runs
        angles = ((self.ui.primarySliderWidget.value, self.ui.secondarySliderWidget.value),)
        with slicer.util.tryWithErrorDisplay("CT2X could not render the preview."):
            self.logic.choose_preview_renderer(*self._rendererChoice())  # kept while the choice is unchanged
            request = self.logic.preview_request(p.inputVolume, self._parameters(angles))
            if self._preview.request(request):
                self._previewTimer.start()

    def onPreviewPoll(self) -> None:
        """Timer slot (GUI thread): place the newest finished preview; stop polling once the worker is idle."""
        result = self._preview.take_result()
        if not self._preview.busy:
            self._previewTimer.stop()
        if result is None or self._parameterNode is None or not self._parameterNode.inputVolume:
            return
        if result.details:
            logging.error("CT2X could not render the preview: %s\n%s", result.error, result.details)
        with slicer.util.tryWithErrorDisplay("CT2X could not render the preview."):
            node = place_preview(slicer.mrmlScene, result)
            showInSliceView(node)

    # ---------------------------------------------------------- synthesize
    def onSynthesizeButton(self) -> None:
        if self._job is not None or not ensure_dependencies(SYNTHESIS_REQUIREMENTS):
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("CT2X could not start the synthesis."):
            parameters = self._parameters()
            self.logic.choose_renderer(*self._rendererChoice())  # kept, with its model, while unchanged
            self._preview.hold()  # no preview while the synthesis runs; a render in progress is waited for
            try:
                self._job = self.logic.start_synthesis(p.inputVolume, parameters, wait_before=self._preview.wait_idle)
            finally:
                if self._job is None:
                    self._preview.release()
            self._setRunning(True)
            self._jobTimer.start()

    def onCancelButton(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self.ui.cancelButton.enabled = False

    def onJobPoll(self) -> None:
        """Timer slot (GUI thread): show the job's progress; once it has ended, place its views."""
        if self._job is None:
            self._jobTimer.stop()
            return
        status = self._job.status()
        self.ui.synthesisProgressBar.value = int(round(100 * status.fraction))
        self.ui.synthesisProgressBar.format = f"{status.text}: %p%"
        if not status.finished:
            return
        self._jobTimer.stop()
        job, self._job = self._job, None
        self._preview.release()
        self._setRunning(False)
        if status.details:
            logging.error("CT2X could not synthesize the views: %s\n%s", status.error, status.details)
        with slicer.util.tryWithErrorDisplay("CT2X could not synthesize the views."):
            result = self.logic.finish_synthesis(job)
            if result is not None:
                showViews(result.volumes)

    def _setRunning(self, running: bool) -> None:
        self.ui.synthesisProgressBar.visible = running
        self.ui.cancelButton.visible = running
        self.ui.cancelButton.enabled = running
        if running:
            self.ui.synthesisProgressBar.value = 0
        self._updateButtons()


def showInSliceView(node: vtkMRMLScalarVolumeNode) -> None:
    """Show the live preview in the red slice view, upright on its detector plane as a radiologist reads it."""
    slicer.util.setSliceViewerLayers(background=node, fit=False)
    sliceWidget = slicer.app.layoutManager().sliceWidget("Red")
    sliceNode = sliceWidget.mrmlSliceNode()
    sliceNode.GetSliceToRAS().DeepCopy(slicer.util.vtkMatrixFromArray(slice_to_ras_for_view(node)))
    sliceNode.UpdateMatrices()
    sliceWidget.sliceLogic().FitSliceToAll()


def showViews(volumes: list[vtkMRMLScalarVolumeNode]) -> None:
    """Show every synthesized view: a layout of one slice view per view beside the 3D view, where each view
    is also a textured plane at its detector's place (``CT2XSynthesisLib.display.show_views``)."""
    shown = show_views(slicer.mrmlScene, volumes)
    layoutManager = slicer.app.layoutManager()
    slicer.app.processEvents()  # the new slice widgets get their size before they are fitted
    for name in shown.layout_names:
        layoutManager.sliceWidget(name).sliceLogic().FitSliceToAll()
    layoutManager.threeDWidget(0).threeDView().resetFocalPoint()
    if shown.message:
        slicer.util.showStatusMessage(shown.message, 10000)


class CT2XSynthesisLogic(ScriptedLoadableModuleLogic, SynthesisLogic):
    """Slicer's logic class: the parameter node, plus :class:`SynthesisLogic` with the physics DRR."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        SynthesisLogic.__init__(self, physics_drr_renderer())

    def getParameterNode(self) -> CT2XSynthesisParameterNode:
        return CT2XSynthesisParameterNode(super().getParameterNode())


class CT2XSynthesisTest(ScriptedLoadableModuleTest):
    """Self-test run inside Slicer (``Slicer --testing``): the logic on a synthetic CT and the panel's binding,
    always; then, only when torch and the synthesis packages are already there, the whole Synthesize path and
    the live preview. It installs nothing: in testing mode the dependency check answers by itself, and a test
    must not change Slicer's Python (as SlicerTotalSegmentator and SlicerMONAIAuto3DSeg skip theirs)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_views_lie_on_their_detector_planes()
        self.setUp()
        self.test_widget_binds_the_parameter_node()
        plan = plan_dependencies(SYNTHESIS_REQUIREMENTS)
        if not plan.ready:
            logging.warning(
                "CT2XSynthesis self-test: the Synthesize and live-preview tests are skipped; they need "
                + ", ".join(plan.missing)
                + " (install the PyTorch extension and open the module once to install them)"
            )
            return
        self.setUp()
        self.test_synthesize_button_runs_the_whole_path()
        self.setUp()
        self.test_live_preview_renders_in_the_background()

    def _waitFor(self, done, what: str, timeout_s: float = 600.0) -> None:
        import time

        deadline = time.monotonic() + timeout_s
        while not done():
            self.assertLess(time.monotonic(), deadline, f"{what} did not finish in {timeout_s:g} s")
            slicer.app.processEvents()
            time.sleep(0.02)

    def _sampleCT(self) -> vtkMRMLScalarVolumeNode:
        """Slicer's CTChest sample when it can be downloaded, else a small generated chest-like phantom."""
        try:
            import SampleData

            return SampleData.downloadSample("CTChest")
        except Exception as error:  # noqa: BLE001 (no network on a build machine: any failure means the phantom)
            logging.warning(f"CT2XSynthesis self-test: CTChest could not be downloaded ({error}); using a phantom")
        k, j, i = np.mgrid[0:48, 0:64, 0:64].astype(np.float32)
        body = ((i - 31.5) / 28) ** 2 + ((j - 31.5) / 20) ** 2 < 1
        lungs = body & (((np.abs(i - 31.5) - 12) / 8) ** 2 + ((j - 31.5) / 12) ** 2 < 1)
        spine = (i - 31.5) ** 2 + (j - 46) ** 2 < 16
        hu = np.where(body, 40.0, -1000.0) + np.where(lungs, -820.0, 0.0) + np.where(spine, 900.0, 0.0)
        return slicer.util.addVolumeFromArray(hu.astype(np.float32), np.diag([-5.0, -5.0, 5.0, 1.0]), name="phantom")

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
        self.assertFalse(widget.ui.removeTableCheckBox.checked)  # ct2x drr's default: the CT as read
        widget.ui.removeTableCheckBox.checked = True
        self.assertTrue(parameters.removeTable and widget._parameters().remove_table)
        parameters.removeTable = False
        # the stored-style combo box lists the chosen model's styles and follows modelStyle
        parameters.styleSource = STYLE_STORED
        self.assertEqual(widget.ui.styleSourceComboBox.currentText, STYLE_STORED)
        combo = widget.ui.modelStyleComboBox
        names = [combo.itemText(i) for i in range(combo.count)]
        self.assertEqual(names, stored_style_names(bundled_model_path()))
        self.assertEqual(parameters.modelStyle, names[0] if names else "")
        if names:
            parameters.modelStyle = names[-1]
            self.assertEqual(combo.currentText, names[-1])
        parameters.modelSource = MODEL_NONE
        self.assertEqual((combo.count, parameters.modelStyle), (0, ""))
        # without a model: the imaging choice (ct2x drr --imaging's), its seed only for an imaging chain
        imaging = widget.ui.imagingComboBox
        self.assertEqual([imaging.itemText(i) for i in range(imaging.count)], list(IMAGING_MODES))
        self.assertEqual(imaging.currentText, parameters.imaging)
        self.assertFalse(imaging.isHidden() or widget.ui.seedSpinBox.isHidden() or widget.ui.devicesSpinBox.isHidden())
        parameters.devices = 3
        self.assertEqual(widget.ui.devicesSpinBox.value, 3)
        self.assertIn("3 support devices", widget.ui.modeLabel.text)
        parameters.imaging = IMAGING_RAW
        self.assertEqual(imaging.currentText, IMAGING_RAW)
        self.assertTrue(widget.ui.seedSpinBox.isHidden() and widget.ui.devicesSpinBox.isHidden())
        parameters.modelSource = MODEL_BUNDLED
        self.assertTrue(imaging.isHidden())

    def test_synthesize_button_runs_the_whole_path(self) -> None:
        """The default choices (bundled model, DRR style, five views), clicked as a user clicks them."""
        slicer.util.selectModule("CT2XSynthesis")
        widget = slicer.util.getModuleWidget("CT2XSynthesis")
        ct = self._sampleCT()
        parameters = widget.logic.getParameterNode()
        parameters.inputVolume, parameters.modelSource, parameters.styleSource = ct, MODEL_BUNDLED, STYLE_DRR
        parameters.geometrySource, parameters.angles = GEOMETRY_PANEL, "-60, -30, 0, 30, 60"
        before = np.array(slicer.util.arrayFromVolume(ct), copy=True)
        volumes = len(slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"))
        widget.ui.synthesizeButton.click()
        self.assertIsNotNone(widget._job, "Synthesize did not start a job")
        self.assertTrue(widget.ui.cancelButton.visible)
        self._waitFor(lambda: widget._job is None, "the synthesis")
        views = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")[volumes:]
        self.assertEqual(len(views), 5)
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(ct), before), "the CT was modified")
        for node in views:
            image = slicer.util.arrayFromVolume(node)
            self.assertEqual(image.shape[0], 1)
            self.assertTrue(np.isfinite(image).all() and image.std() > 0, f"{node.GetName()} is blank")
        layout = slicer.app.layoutManager()
        self.assertEqual(layout.layout, VIEWS_LAYOUT_ID)
        for index, node in enumerate(views):
            composite = layout.sliceWidget(slice_view_names(len(views))[index]).mrmlSliceCompositeNode()
            self.assertEqual(composite.GetBackgroundVolumeID(), node.GetID())

    def test_live_preview_renders_in_the_background(self) -> None:
        slicer.util.selectModule("CT2XSynthesis")
        widget = slicer.util.getModuleWidget("CT2XSynthesis")
        parameters = widget.logic.getParameterNode()
        parameters.inputVolume = self._sampleCT()
        parameters.geometrySource = GEOMETRY_PANEL
        widget.ui.livePreviewCheckBox.checked = True
        for angle in (10.0, 20.0, 30.0):
            widget.ui.primarySliderWidget.value = angle
        self._waitFor(lambda: not widget._preview.busy and not widget._previewTimer.isActive(), "the preview")
        node = slicer.mrmlScene.GetFirstNodeByName(PREVIEW_NODE_NAME)
        self.assertIsNotNone(node, "no preview was placed")
        self.assertEqual(view_from_attributes(node).primary, 30.0)
        widget.ui.livePreviewCheckBox.checked = False

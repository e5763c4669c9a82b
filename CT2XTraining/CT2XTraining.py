"""CT2XTraining: prepare a training set and train CT2X-GAN without freezing Slicer.

Thin Slicer module: ``Prepare`` and ``Train`` run ``PythonSlicer -m ct2x prepare|train``
in a child process (``CT2XTrainingLib.runner``); a ``qt.QTimer`` drains its output into
the log and the progress bar (``CT2XTrainingLib.progress``). ``Stop`` asks the job to write
a resumable checkpoint; ``Resume`` continues from it. The command lines are built by
``CT2XTrainingLib.commands``; everything here is GUI.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import qt
import slicer
from CT2XSynthesisLib.dependencies import TRAINING_REQUIREMENTS, check_slicer_version, ensure_dependencies
from CT2XSynthesisLib.reloading import forget_package
from CT2XTrainingLib.commands import (
    BUILTIN_CONFIGS,
    DEFAULT_CONFIG,
    DEVICES,
    PrepareOptions,
    TrainOptions,
    child_environment,
    prepare_command,
    python_slicer,
    run_dir,
    train_command,
)
from CT2XTrainingLib.progress import JobState, latest_model, parse_progress
from CT2XTrainingLib.runner import ProcessRunner
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

import ct2x
from ct2x.contracts import MODEL_FILE
from ct2x.errors import CT2XError
from ct2x.options import DEFAULT_DEVICE, default_prepare_workers

CONFIG_CHOICES = [*BUILTIN_CONFIGS, "file"]
POLL_INTERVAL_MS = 200


class CT2XTraining(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "CT2X Training"
        self.parent.categories = ["Simulation"]
        self.parent.dependencies = ["CT2XSynthesis"]
        self.parent.contributors = ["CT2X maintainers"]
        self.parent.helpText = (
            "Train CT2X-GAN on a folder of CT volumes and a folder of unpaired real radiographs. Prepare "
            "renders the training set into &lt;output&gt;/data; Train writes the run into &lt;output&gt;/run. "
            "Jobs run as separate PythonSlicer processes, so Slicer stays responsive; Stop leaves a checkpoint "
            "that Resume continues. "
            'See more information in the <a href="https://github.com/ct2x/SlicerCT2X#readme">documentation</a>.'
        )
        self.parent.acknowledgementText = "Implements CT2X-GAN (ACM Multimedia 2024) on a pure-PyTorch core."


@parameterNodeWrapper
class CT2XTrainingParameterNode:
    """GUI state; steps = 0 means the configuration's number of steps. The defaults are the core's
    (:mod:`ct2x.options`): preset, device and the workers of ``ct2x prepare``."""

    ctFolder: Path
    xrayFolder: Path
    outputFolder: Path
    config: Annotated[str, Choice(CONFIG_CHOICES)] = DEFAULT_CONFIG
    configFile: Path
    device: Annotated[str, Choice(list(DEVICES))] = DEFAULT_DEVICE
    steps: Annotated[int, WithinRange(0, 10_000_000)] = 0
    workers: Annotated[int, WithinRange(1, 64)] = default_prepare_workers()


def coreRoot() -> Path:
    """The folder that contains the ``ct2x`` package (this extension's scripted-modules folder)."""
    return Path(ct2x.__file__).resolve().parent.parent


class CT2XTrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: folders, configuration, Prepare/Train/Stop/Resume, log and progress."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._runner: ProcessRunner | None = None
        self._state = JobState()
        self._timer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        if not check_slicer_version(self.showMessageInPanel):
            return  # too old a Slicer: the panel shows why, and nothing else is set up
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CT2XTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = CT2XTrainingLogic()

        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.timeout.connect(self.onPoll)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.prepareButton.connect("clicked(bool)", self.onPrepareButton)
        self.ui.trainButton.connect("clicked()", lambda: self.onTrainButton(resume=False))
        self.ui.resumeButton.connect("clicked()", lambda: self.onTrainButton(resume=True))
        self.ui.stopButton.connect("clicked(bool)", self.onStopButton)
        self.ui.useModelButton.connect("clicked(bool)", self.onUseModelButton)
        self.initializeParameterNode()

    def showMessageInPanel(self, message: str) -> None:
        label = qt.QLabel(message)
        label.wordWrap = True
        self.layout.addWidget(label)

    def onReload(self) -> None:
        """Developer mode's Reload: the Lib package and the ``ct2x`` core are reloaded from disk with the script."""
        self.cleanup()
        forget_package("CT2XTrainingLib")
        forget_package("ct2x")
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        if self._runner is not None:
            self._runner.kill()  # the whole job: PythonSlicer, the ct2x process under it and its workers
        self.removeObservers()

    def enter(self) -> None:
        if self.logic is not None:  # None: setup stopped at the Slicer version check
            self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode: CT2XTrainingParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)

    # ------------------------------------------------------------- options
    def prepareOptions(self) -> PrepareOptions:
        p = self._parameterNode
        return PrepareOptions(p.ctFolder, p.outputFolder, workers=p.workers, device=p.device)

    def trainOptions(self, resume: bool) -> TrainOptions:
        p = self._parameterNode
        config = str(p.configFile) if p.config == "file" else p.config
        steps = p.steps if p.steps > 0 else None
        return TrainOptions(p.xrayFolder, p.outputFolder, config=config, steps=steps, resume=resume, device=p.device)

    # ---------------------------------------------------------------- jobs
    def onPrepareButton(self) -> None:
        with slicer.util.tryWithErrorDisplay("CT2X could not start data preparation."):
            self._start(prepare_command(python_slicer(), self.prepareOptions()))

    def onTrainButton(self, resume: bool) -> None:
        with slicer.util.tryWithErrorDisplay("CT2X could not start training."):
            self._start(train_command(python_slicer(), self.trainOptions(resume)))

    def _start(self, command: list[str]) -> None:
        if self._runner is not None and self._runner.running:
            raise CT2XError("a job is already running: stop it first")
        if not ensure_dependencies(TRAINING_REQUIREMENTS):
            return
        self._state = JobState()
        self._jobVerb = command[3] if len(command) > 3 else ""  # [PythonSlicer, -m, ct2x, prepare|train, ...]
        self._checkpointAtStop = None  # the job's last checkpoint when Stop was pressed
        self._runner = ProcessRunner(command, env=child_environment(os.environ, coreRoot()))
        self.ui.logTextEdit.appendPlainText("$ " + " ".join(command))
        self.ui.progressBar.value = 0
        self._runner.start()
        self._timer.start()
        self._setRunning(True)

    def onPoll(self) -> None:
        for line in self._runner.poll():
            self._state.update(line)
            if parse_progress(line) is None:  # tqdm bars redraw often: show them in the bar, not the log
                self.ui.logTextEdit.appendPlainText(line)
        self._runner.step_time_s = self._state.step_time_s  # Stop's grace period follows the step time
        if self._state.progress is not None:
            self.ui.progressBar.value = int(round(100 * self._state.progress.fraction))
        if not self._runner.finished:  # over only once the ct2x process under PythonSlicer has ended too
            return
        self._timer.stop()
        code, checkpoint = self._runner.returncode, self._state.checkpoint
        if not self._runner.stopped:
            message = "Job finished." if code == 0 else f"Job ended with exit status {code}."
        elif checkpoint is not None and checkpoint is not self._checkpointAtStop:
            # the exit status is PythonSlicer's, which Stop's signal kills: the job's own output tells
            at_step = f" at step {checkpoint.step}" if checkpoint.step is not None else ""
            message = f"Job stopped{at_step}: checkpoint written ({checkpoint.path}); Resume continues from it."
        elif self._jobVerb == "prepare":
            message = "Job stopped: the CTs prepared so far are kept; Prepare again goes on with the others."
        else:
            message = "Job stopped without writing a checkpoint: Resume continues from the last one, if any."
        if self._runner.forced:
            message += " It did not stop within the grace period and was terminated."
        self.ui.logTextEdit.appendPlainText(message)
        self._setRunning(False)

    def onStopButton(self) -> None:
        if self._runner is None or not self._runner.running:
            return
        if self._runner.stop_requested:
            self.ui.logTextEdit.appendPlainText("Stop already requested: waiting for the job to end.")
            return
        self._checkpointAtStop = self._state.checkpoint
        self._runner.request_stop()  # to PythonSlicer and the ct2x process under it (their process group)
        if self._jobVerb == "prepare":
            what = "preparation stops, keeping the CTs done"
        else:
            what = "training finishes its step, saves a checkpoint and the model, then exits"
        self.ui.logTextEdit.appendPlainText(
            f"Stop requested: {what} (it is terminated if still running in {self._runner.grace_s:.0f} s)."
        )

    def onUseModelButton(self) -> None:
        model = latest_model(run_dir(self._parameterNode.outputFolder))
        if model is None:
            slicer.util.errorDisplay("No trained model yet: train to the end, or Stop (both write the model).")
            return
        synthesis = slicer.util.getModuleLogic("CT2XSynthesis").getParameterNode()
        synthesis.modelSource = MODEL_FILE
        synthesis.modelFile = model
        slicer.util.selectModule("CT2XSynthesis")

    def _setRunning(self, running: bool) -> None:
        for button in (self.ui.prepareButton, self.ui.trainButton, self.ui.resumeButton):
            button.enabled = not running
        self.ui.stopButton.enabled = running
        self.ui.useModelButton.enabled = not running


class CT2XTrainingLogic(ScriptedLoadableModuleLogic):
    """Slicer's logic class; the job logic itself is in ``CT2XTrainingLib`` (no Qt)."""

    def getParameterNode(self) -> CT2XTrainingParameterNode:
        return CT2XTrainingParameterNode(super().getParameterNode())


class CT2XTrainingTest(ScriptedLoadableModuleTest):
    """Self-test run inside Slicer (ctest): a real PythonSlicer child, then the widget's command line."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_runner_reads_progress_from_python_slicer()
        self.setUp()
        self.test_widget_builds_the_train_command()

    def test_runner_reads_progress_from_python_slicer(self) -> None:
        import time

        child = "import ct2x; print('CT2X-PROGRESS step=2 total=4 loss_g=0.5', flush=True)"
        runner = ProcessRunner([python_slicer(), "-c", child], env=child_environment(os.environ, coreRoot()))
        runner.start()
        state, deadline = JobState(), time.monotonic() + 60
        while not runner.finished:
            self.assertLess(time.monotonic(), deadline, "PythonSlicer did not finish")
            for line in runner.poll():
                state.update(line)
            slicer.app.processEvents()
            time.sleep(0.05)
        for line in runner.poll():
            state.update(line)
        self.assertEqual(runner.returncode, 0)
        self.assertAlmostEqual(state.progress.fraction, 0.5)

    def test_widget_builds_the_train_command(self) -> None:
        slicer.util.selectModule("CT2XTraining")
        widget = slicer.util.getModuleWidget("CT2XTraining")
        folder = Path(tempfile.mkdtemp())
        parameters = widget._parameterNode
        parameters.xrayFolder = folder
        parameters.outputFolder = folder / "out"
        parameters.config = "paper"
        self.assertEqual(widget.ui.configComboBox.currentText, "paper")
        command = train_command("PythonSlicer", widget.trainOptions(resume=True))
        self.assertEqual(command[command.index("--config") + 1], "paper")
        self.assertIn("--resume", command)

"""CT2XSynthesis off the GUI thread, against a real MRML scene (PyPI ``slicer-core``, no Qt).

Synthesize starts a worker thread and returns at once; the GUI thread (here: the test) polls
the job, and only the GUI thread adds nodes to the scene. Cancel keeps exactly the views
finished before it; an error in the worker arrives as a one-line message. The renderer and its
loaded model are reused while the choice and the model file are unchanged, and the CT is
prepared once per Synthesize. Also: the isocenter from a markups point, the device choice, and
the C-arm geometry of a real DICOM radiograph.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the MRML library of PyPI's slicer-core (pip install slicer-core)")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "CT2XSynthesis"))

from CT2XSynthesisLib.logic import (  # noqa: E402
    DICOM_INSTANCE_UIDS,
    MODEL_BUNDLED,
    MODEL_FILE,
    MODEL_NONE,
    STYLE_DRR,
    STYLE_STORED,
    FunctionRenderer,
    PhysicsDRRRenderer,
    RendererChoice,
    SynthesisLogic,
    SynthesisParameters,
    bundled_model_path,
    describe_geometry,
    isocenter_from_markups,
    like_parameters,
    radiograph_file_of_node,
    resolve_device,
    style_reference,
    view_from_attributes,
)

from ct2x.errors import CT2XError  # noqa: E402
from ct2x.radiograph_geometry import RadiographGeometry  # noqa: E402

ANGLES = ((-30.0, 0.0), (0.0, 0.0), (30.0, 0.0))


@pytest.fixture
def ct_node(scene):
    k, j, i = np.mgrid[0:16, 0:18, 0:20].astype(np.float32)
    hu = np.where((i - 9.5) ** 2 + (j - 8.5) ** 2 < 49, 0.0, -1000.0).astype(np.float32)
    return slicer.util.addVolumeFromArray(hu, np.diag([-3.0, -3.0, 3.0, 1.0]), name="CT")


class CountingRenderer(FunctionRenderer):
    """Fills each view with its index; counts prepare/render calls; can wait or fail per view."""

    def __init__(self, delay_s: float = 0.0, block_view: int | None = None, fail_view: int | None = None) -> None:
        super().__init__(self._fill)
        self.delay_s, self.block_view, self.fail_view = delay_s, block_view, fail_view
        self.prepared, self.rendered = 0, 0
        self.release = threading.Event()

    def prepare(self, ct):
        self.prepared += 1
        return ct

    def _fill(self, ct, views):
        index = self.rendered
        self.rendered += 1
        if index == self.block_view:
            assert self.release.wait(20), "the test never released the renderer"
        if index == self.fail_view:
            raise ZeroDivisionError("division by zero")
        time.sleep(self.delay_s)
        h, w = views[0].detector_shape
        return np.full((1, h, w), float(index), np.float32)


def _wait(job, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    statuses = []
    while True:
        status = job.status()
        statuses.append(status)
        if status.finished:
            return statuses
        assert time.monotonic() < deadline, f"the job did not finish: {status}"
        time.sleep(0.01)


def _volumes(scene) -> int:
    return scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")


def test_synthesize_returns_at_once_and_progress_reaches_100_percent(ct_node, scene):
    renderer = CountingRenderer(delay_s=0.3)
    logic = SynthesisLogic(renderer)
    before = scene.GetNumberOfNodes()
    started = time.monotonic()
    job = logic.start_synthesis(ct_node, SynthesisParameters(angles=ANGLES, detector_pixels=16))
    assert time.monotonic() - started < 0.25, "start_synthesis must not wait for the views (3 x 0.3 s)"
    assert not job.status().finished
    statuses = _wait(job)
    assert scene.GetNumberOfNodes() == before, "the worker must not touch the scene"
    assert [s.done for s in statuses] == sorted(s.done for s in statuses)  # progress only goes up
    final = statuses[-1]
    assert (final.done, final.total, final.fraction, final.error, final.cancelled) == (3, 3, 1.0, None, False)
    assert any("Rendering CT2X LAO 0 CRAN 0 (2 of 3)" == s.text for s in statuses)
    result = logic.finish_synthesis(job)  # the GUI thread places the views
    assert [n.GetName() for n in result.volumes] == ["CT2X RAO 30 CRAN 0", "CT2X LAO 0 CRAN 0", "CT2X LAO 30 CRAN 0"]
    assert [float(slicer.util.arrayFromVolume(n).max()) for n in result.volumes] == [0.0, 1.0, 2.0]
    assert renderer.prepared == 1, "the CT is prepared once per Synthesize, not once per view"


def test_cancel_after_the_first_view_keeps_exactly_the_finished_views(ct_node, scene):
    renderer = CountingRenderer(block_view=1)
    logic = SynthesisLogic(renderer)
    job = logic.start_synthesis(ct_node, SynthesisParameters(angles=ANGLES, detector_pixels=16, add_markups=True))
    deadline = time.monotonic() + 20
    while job.status().done < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    job.cancel()  # while the second view is being rendered
    renderer.release.set()
    final = _wait(job)[-1]
    assert final.finished and final.cancelled and final.done == 1 and final.error is None
    assert renderer.rendered == 2, "no view starts after Cancel"
    volumes_before = _volumes(scene)
    result = logic.finish_synthesis(job)
    assert [n.GetName() for n in result.volumes] == ["CT2X RAO 30 CRAN 0"]
    assert _volumes(scene) == volumes_before + 1
    for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
        assert node.GetImageData() is not None, f"{node.GetName()} is half-written"
    assert result.markups.GetNumberOfControlPoints() == 2  # the isocenter and the one finished view's source


def test_views_finished_before_the_ct_was_removed_are_kept(ct_node, scene):
    renderer = CountingRenderer(block_view=1)
    logic = SynthesisLogic(renderer)
    job = logic.start_synthesis(ct_node, SynthesisParameters(angles=ANGLES, detector_pixels=16))
    deadline = time.monotonic() + 20
    while job.status().done < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    ct_id = ct_node.GetID()
    scene.RemoveNode(ct_node)  # the user deletes the CT while the second view renders
    renderer.release.set()
    assert _wait(job)[-1].done == 3
    result = logic.finish_synthesis(job)
    assert [n.GetScene() for n in result.volumes] == [scene] * 3
    assert [n.GetName() for n in result.volumes] == ["CT2X RAO 30 CRAN 0", "CT2X LAO 0 CRAN 0", "CT2X LAO 30 CRAN 0"]
    assert {n.GetAttribute("CT2X.inputVolume") for n in result.volumes} == {ct_id}
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    assert hierarchy.GetItemName(result.folder_item) == "CT2X views of CT"


def test_the_style_volume_reaches_the_worker_as_a_copy(scene):
    style = slicer.util.addVolumeFromArray(np.arange(12, dtype=np.float32).reshape(1, 3, 4), name="film")
    array, key = style_reference(style)
    slicer.util.arrayFromVolume(style)[0, 0, 0] = 99.0  # an edit of the node during a synthesis
    slicer.util.arrayFromVolumeModified(style)
    assert array[0, 0, 0] == 0.0, "the worker's style reference changed with the node"
    assert style_reference(style)[1] != key, "the key must tell the edited node"


def test_cancel_before_any_view_adds_nothing(ct_node, scene):
    renderer = CountingRenderer(block_view=0)
    logic = SynthesisLogic(renderer)
    job = logic.start_synthesis(ct_node, SynthesisParameters(angles=ANGLES, detector_pixels=16))
    job.cancel()
    renderer.release.set()
    _wait(job)
    count = scene.GetNumberOfNodes()
    assert logic.finish_synthesis(job) is None and scene.GetNumberOfNodes() == count


def test_an_error_in_the_worker_reaches_the_caller_as_a_message(ct_node, scene, capsys):
    logic = SynthesisLogic(CountingRenderer(fail_view=1))
    count = scene.GetNumberOfNodes()
    job = logic.start_synthesis(ct_node, SynthesisParameters(angles=ANGLES, detector_pixels=16))
    final = _wait(job)[-1]
    assert final.error == "ZeroDivisionError: division by zero" and final.text == "Failed"
    with pytest.raises(CT2XError, match="^ZeroDivisionError: division by zero$"):
        logic.finish_synthesis(job)
    assert scene.GetNumberOfNodes() == count, "a failed Synthesize leaves the scene as it was"
    assert "Traceback" not in capsys.readouterr().err

    def bad_shape(ct, views):
        return np.zeros((1, 3, 3), np.float32)

    job = SynthesisLogic(bad_shape).start_synthesis(ct_node, SynthesisParameters(angles=ANGLES, detector_pixels=16))
    assert "expected (1, 16, 16)" in _wait(job)[-1].error


def test_the_learned_renderer_and_its_model_are_reused_while_the_choice_is_unchanged(
    ct_node, scene, tmp_path, monkeypatch
):
    import ct2x.checkpoint
    import ct2x.synthesize

    loads, resamples = [], []
    real_load, real_preprocess = ct2x.checkpoint.load_model, ct2x.synthesize.preprocess
    monkeypatch.setattr(ct2x.checkpoint, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    monkeypatch.setattr(ct2x.synthesize, "preprocess", lambda *a, **k: resamples.append(a) or real_preprocess(*a, **k))
    logic = SynthesisLogic()
    choice = RendererChoice(MODEL_BUNDLED, style_source=STYLE_DRR, device="cpu")
    renderer = logic.choose_renderer(choice)
    parameters = SynthesisParameters(angles=ANGLES, detector_pixels=32)
    first = logic.synthesize(ct_node, parameters)
    assert logic.choose_renderer(RendererChoice(MODEL_BUNDLED, style_source=STYLE_DRR, device="cpu")) is renderer
    second = logic.synthesize(ct_node, parameters)
    assert len(loads) == 1, "the model is loaded once while the choice and the file are unchanged"
    assert len(resamples) == 2, "the CT is resampled once per Synthesize (3 views each)"
    np.testing.assert_array_equal(
        slicer.util.arrayFromVolume(first.volumes[1]), slicer.util.arrayFromVolume(second.volumes[1])
    )
    assert first.volumes[0].GetAttribute("CT2X.mode") == "CT2X-GAN"

    stored = logic.choose_renderer(RendererChoice(MODEL_BUNDLED, style_source=STYLE_STORED, model_style="chest-1"))
    assert stored is not renderer
    copy = tmp_path / "model.safetensors"
    shutil.copy2(bundled_model_path(), copy)
    shutil.copy2(bundled_model_path().with_suffix(".json"), copy.with_suffix(".json"))
    from_file = logic.choose_renderer(RendererChoice(MODEL_FILE, model_file=str(copy)))
    assert logic.choose_renderer(RendererChoice(MODEL_FILE, model_file=str(copy))) is from_file
    os.utime(copy, ns=(copy.stat().st_atime_ns, copy.stat().st_mtime_ns + 10**9))  # the file was retrained
    assert logic.choose_renderer(RendererChoice(MODEL_FILE, model_file=str(copy))) is not from_file
    assert isinstance(logic.choose_renderer(RendererChoice(MODEL_NONE, imaging="raw")), PhysicsDRRRenderer)
    assert logic.mode == "DRR (physics)"
    with pytest.raises(CT2XError, match="choose a model file"):
        logic.choose_renderer(RendererChoice(MODEL_FILE))
    with pytest.raises(CT2XError, match="unknown model choice"):
        logic.choose_renderer(RendererChoice("Bundled"))


def test_the_isocenter_from_a_markups_point_under_a_transform(ct_node, scene):
    point = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "iso")
    with pytest.raises(CT2XError, match="has no point"):
        isocenter_from_markups(point)
    point.AddControlPoint([10.0, -20.0, 5.0])
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[:3, 3] = (1.0, 2.0, 3.0)
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(shift))
    point.SetAndObserveTransformNodeID(transform.GetID())
    assert isocenter_from_markups(point) == (11.0, -18.0, 8.0)  # world RAS
    params = SynthesisParameters(angles=((0.0, 0.0),), detector_pixels=16, isocenter_ras=isocenter_from_markups(point))
    (out,) = SynthesisLogic(CountingRenderer()).synthesize(ct_node, params).volumes
    assert view_from_attributes(out).isocenter == (-11.0, 18.0, 8.0)  # LPS


def test_device_choice():
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(CT2XError, match="must be one of auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(CT2XError, match="sees no CUDA GPU"):
            resolve_device("cuda")


def test_synthesize_like_a_real_radiograph(ct_node, scene, tmp_path):
    from ct2x.view_files import write_view_dicom

    geometry = RadiographGeometry(
        35.0, -20.0, 1200.0, 785.0, (48, 64), (0.5, 0.4), "XA", ("DistanceSourceToPatient x",)
    )
    params = like_parameters(geometry)
    (out,) = SynthesisLogic(CountingRenderer()).synthesize(ct_node, params).volumes
    view = view_from_attributes(out)
    assert (view.primary, view.secondary, view.sdd, view.sid) == (35.0, -20.0, 1200.0, 785.0)
    assert view.detector_shape == (48, 64) and view.pixel_spacing == pytest.approx((0.5, 0.4))
    assert slicer.util.arrayFromVolume(out).shape == (1, 48, 64)
    text = describe_geometry(geometry)
    assert text.startswith("XA: LAO 35 CAUD 20, SDD 1200 mm, SID 785 mm, detector 64 x 48 px, 25.6 x 24.0 mm.")
    assert text.endswith("\nDistanceSourceToPatient x.")

    # a loaded DICOM radiograph: its file through Slicer's DICOM database
    dicom = tmp_path / "xa.dcm"
    write_view_dicom(dicom, np.zeros((48, 64)), view, "test")
    loaded = slicer.util.addVolumeFromArray(np.zeros((1, 48, 64), np.float32), name="XA")
    with pytest.raises(CT2XError, match="was not loaded from DICOM"):
        radiograph_file_of_node(loaded, None)
    loaded.SetAttribute(DICOM_INSTANCE_UIDS, "1.2.3 1.2.4")

    class Database:
        def fileForInstance(self, uid):
            return str(dicom) if uid == "1.2.3" else ""

    assert radiograph_file_of_node(loaded, Database()) == dicom
    with pytest.raises(CT2XError, match="not in Slicer's DICOM database"):
        radiograph_file_of_node(loaded, None)

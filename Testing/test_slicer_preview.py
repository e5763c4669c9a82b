"""The live preview never blocks the GUI: slider moves only hand a request to the preview worker.

A real MRML scene (PyPI ``slicer-core``) holds the CT node; the renderer is a stand-in whose
render waits on a gate, so a "slow render" lasts exactly as long as the test wants. The GUI
thread's work per slider move is what the panel's ``schedulePreview`` does:
``SynthesisLogic.preview_request`` then ``PreviewWorker.request``.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the MRML library of PyPI's slicer-core (pip install slicer-core)")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "CT2XSynthesis"))

from CT2XSynthesisLib.background import SynthesisJob  # noqa: E402
from CT2XSynthesisLib.logic import Renderer, SynthesisLogic, SynthesisParameters, stop_background_work  # noqa: E402
from CT2XSynthesisLib.preview import PreviewWorker  # noqa: E402

#: The GUI-thread budget per slider move.
MOVE_BUDGET_S = 0.050


class GatedRenderer(Renderer):
    """Counts ``prepare`` calls, records each rendered primary angle, tracks how many renders overlap,
    and holds every render until ``gate`` is set."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()
        self.prepared: list[int] = []
        self.rendered: list[float] = []
        self._lock = threading.Lock()
        self._running = 0
        self.most_at_once = 0

    def prepare(self, ct):
        self.prepared.append(id(ct))
        return ct

    def render(self, prepared, views):
        with self._lock:
            self._running += 1
            self.most_at_once = max(self.most_at_once, self._running)
        self.started.set()
        try:
            assert self.gate.wait(30), "the test never opened the gate"
            self.rendered.extend(v.primary for v in views)
            return np.zeros((len(views), *views[0].detector_shape), np.float32)
        finally:
            with self._lock:
                self._running -= 1


@pytest.fixture
def ct_node(scene):
    voxels = np.full((40, 48, 56), -1000.0, np.float32)
    voxels[10:30, 12:36, 14:42] = 0.0
    return slicer.util.addVolumeFromArray(voxels, np.diag([-1.5, -1.5, 2.0, 1.0]), name="CT")


def _view(primary: float) -> SynthesisParameters:
    return SynthesisParameters(angles=((primary, 0.0),), detector_pixels=256)


def test_slider_moves_during_a_slow_render_stay_cheap_and_only_the_last_value_is_rendered(ct_node):
    logic, renderer = SynthesisLogic(), GatedRenderer()
    worker = PreviewWorker(renderer)
    logic.imaged_ct(ct_node)  # the CT copy is made once per CT change (here: before the first move)
    assert worker.request(logic.preview_request(ct_node, _view(0.0)))
    assert renderer.started.wait(10), "the first preview did not start"
    per_move = []
    for primary in range(1, 31):  # the user drags the slider while the first render runs
        start = time.perf_counter()
        accepted = worker.request(logic.preview_request(ct_node, _view(float(primary))))
        per_move.append(time.perf_counter() - start)
        assert accepted
    renderer.gate.set()
    assert worker.wait_idle(30)
    worker.close(10)
    assert max(per_move) < MOVE_BUDGET_S, f"GUI-thread work per move up to {max(per_move) * 1e3:.1f} ms"
    assert renderer.rendered == [0.0, 30.0], "only the render in progress and the newest value may be rendered"
    assert renderer.most_at_once == 1
    assert len(renderer.prepared) == 1, "the CT is prepared once while it is unchanged"


def test_the_ct_is_prepared_again_only_when_it_changes(ct_node):
    logic, renderer = SynthesisLogic(), GatedRenderer()
    renderer.gate.set()
    worker = PreviewWorker(renderer)
    for primary in (0.0, 10.0):
        worker.request(logic.preview_request(ct_node, _view(primary)))
        assert worker.wait_idle(30)
    assert len(renderer.prepared) == 1
    voxels = slicer.util.arrayFromVolume(ct_node)
    voxels[0, 0, 0] = 500.0
    slicer.util.arrayFromVolumeModified(ct_node)  # the user edited the CT: its voxels' modification time moves
    worker.request(logic.preview_request(ct_node, _view(20.0)))
    assert worker.wait_idle(30)
    worker.close(10)
    assert len(renderer.prepared) == 2
    assert renderer.rendered == [0.0, 10.0, 20.0]


def test_no_preview_runs_beside_a_synthesis(ct_node):
    """Synthesize holds the preview (requests refused) and its job waits for the render in progress."""
    logic, renderer = SynthesisLogic(), GatedRenderer()
    logic.renderer = renderer  # one renderer for both, so overlaps are counted
    worker = PreviewWorker(renderer)
    assert worker.request(logic.preview_request(ct_node, _view(5.0)))
    assert renderer.started.wait(10)
    worker.hold()
    job = logic.start_synthesis(
        ct_node,
        SynthesisParameters(angles=((-30.0, 0.0), (30.0, 0.0)), detector_pixels=32),
        wait_before=worker.wait_idle,
    )
    assert not worker.request(logic.preview_request(ct_node, _view(99.0))), "a preview was accepted during a synthesis"
    time.sleep(0.2)
    assert job.status().text == "Waiting for the live preview"
    renderer.gate.set()
    assert job.wait(30)
    worker.release()
    worker.close(10)
    assert renderer.rendered == [5.0, -30.0, 30.0]
    assert renderer.most_at_once == 1


def test_a_failing_preview_gives_its_message_and_traceback(ct_node):
    class Broken(Renderer):
        def render(self, prepared, views):
            raise ValueError("the detector is on fire")

    worker = PreviewWorker(Broken())
    worker.request(SynthesisLogic().preview_request(ct_node, _view(0.0)))
    assert worker.wait_idle(30)
    result = worker.take_result()
    worker.close(10)
    assert result.image is None and result.error == "ValueError: the detector is on fire"
    assert "Traceback" in result.details and "the detector is on fire" in result.details
    assert worker.take_result() is None


def test_a_failing_synthesis_keeps_its_traceback(ct_node):
    class Broken(Renderer):
        def render(self, prepared, views):
            raise RuntimeError("out of film")

    ct = SynthesisLogic().imaged_ct(ct_node)
    job = SynthesisJob(ct, _view(0.0).views(ct.placement), Broken(), ["LAO 0"])
    job.run()
    status = job.status()
    assert status.error == "RuntimeError: out of film"
    assert "Traceback" in status.details and "out of film" in status.details


def test_closing_the_scene_cancels_the_synthesis_and_waits_for_it(ct_node, scene):
    """What the panel does on the scene's StartCloseEvent: when Clear returns, no worker is rendering."""
    logic, renderer = SynthesisLogic(), GatedRenderer()
    logic.renderer = renderer
    worker = PreviewWorker(renderer)
    job = logic.start_synthesis(ct_node, SynthesisParameters(angles=((-30.0, 0.0), (30.0, 0.0)), detector_pixels=16))
    assert renderer.started.wait(10)
    stopped = []

    def on_close(caller, event):
        threading.Timer(0.3, renderer.gate.set).start()  # the view in progress takes a while to end
        stopped.append(stop_background_work(job, worker, 30.0))

    tag = scene.AddObserver(scene.StartCloseEvent, on_close)
    scene.Clear(0)
    scene.RemoveObserver(tag)
    assert stopped == [True] and job.status().finished, "the scene closed while its synthesis still ran"
    assert renderer.rendered == [-30.0], "a view was started after the scene began to close"
    assert logic.finish_synthesis(job) is None, "a view rendered before Cancel would land in the new scene"
    assert not worker.request(logic.preview_request(slicer.util.addVolumeFromArray(np.zeros((4, 4, 4))), _view(0)))
    worker.close(10)


def test_a_request_s_own_renderer_is_used_and_prepares_the_ct_again(ct_node):
    """The panel's choice travels with the request (``SynthesisLogic.choose_preview_renderer``): the worker renders
    with it and prepares the CT once per CT and renderer; a request without one uses the worker's."""
    logic, own, chosen = SynthesisLogic(), GatedRenderer(), GatedRenderer()
    own.gate.set()
    chosen.gate.set()
    worker = PreviewWorker(own)
    logic.preview_renderer, logic.preview_mode = chosen, "Chosen"
    for primary in (0.0, 10.0):
        request = logic.preview_request(ct_node, _view(primary))
        assert request.renderer is chosen and request.mode == "Chosen"
        assert worker.request(request) and worker.wait_idle(30)
    logic.preview_renderer = logic.preview_mode = None
    worker.request(logic.preview_request(ct_node, _view(20.0)))
    assert worker.wait_idle(30)
    worker.close(10)
    assert (chosen.rendered, own.rendered) == ([0.0, 10.0], [20.0])
    assert (len(chosen.prepared), len(own.prepared)) == (1, 1)

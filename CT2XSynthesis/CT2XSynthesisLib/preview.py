"""The live preview, rendered off the GUI thread: the newest slider value wins, never two renders at once.

While the panel's angle sliders move, the GUI thread only *asks* (:meth:`PreviewWorker.request`:
it stores the request and wakes the worker, a few microseconds) and, from a timer, *collects*
the newest finished image (:meth:`PreviewWorker.take_result`) to place it in the scene. One
daemon thread does the work:

* it prepares the CT once per CT key and renderer (removing its couch first when asked,
  :class:`~CT2XSynthesisLib.background.ImagedCT`; for the physics renderers: Hounsfield units to
  material densities of the whole CT, the costly part) and keeps the prepared CT while the key, which
  names the node and its modification times, and the renderer are unchanged; a request may carry its
  own renderer (the panel's choice, ``SynthesisLogic.choose_preview_renderer``), else the worker's is used;
* it renders the newest request; requests that arrive meanwhile replace each other, so after a
  render ends only the last of them is rendered;
* :meth:`PreviewWorker.hold` (a synthesis starts) drops the waiting request and refuses new ones
  until :meth:`PreviewWorker.release`; :meth:`PreviewWorker.wait_idle` lets the synthesis wait
  for a render in progress, so the preview never runs beside a synthesis.

An error in the worker becomes the result's one-line message plus its full traceback text; it
never escapes the thread. No Qt and no ``slicer`` here: the tests drive it with plain threads.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from ct2x.geometry import CArm
from CT2XSynthesisLib.background import ImagedCT, error_message, render_one


@dataclass(frozen=True)
class PreviewRequest:
    """One preview to render: the CT (LPS, HU; its ``key`` names the node, its modification times and whether the
    couch is removed), the view; the renderer to use (None: the worker's) and the mode label its image is placed
    with (None: the default)."""

    key: Hashable
    ct: ImagedCT
    view: CArm
    label: str
    renderer: object = None
    mode: str | None = None


@dataclass(frozen=True)
class PreviewResult:
    """A finished preview: the request, its float32 ``(H, W)`` image, or the error's message and traceback."""

    request: PreviewRequest
    image: np.ndarray | None
    error: str | None = None
    details: str | None = None


class PreviewWorker:
    """Renders :class:`PreviewRequest` s with ``renderer`` (``prepare(ct)``, ``render(prepared, views)``)."""

    def __init__(self, renderer) -> None:  # noqa: ANN001 (a logic.Renderer)
        self.renderer = renderer
        self._condition = threading.Condition()
        self._pending: PreviewRequest | None = None
        self._result: PreviewResult | None = None
        self._busy = False
        self._held = False
        self._closed = False
        self._prepared: tuple[Hashable, object, object] | None = None
        self._thread: threading.Thread | None = None

    # --------------------------------------------------------- GUI thread
    def request(self, request: PreviewRequest) -> bool:
        """Ask for ``request`` to be rendered (replacing any request still waiting); False while held or closed."""
        with self._condition:
            if self._held or self._closed:
                return False
            self._pending = request
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="CT2X preview", daemon=True)
                self._thread.start()
            self._condition.notify_all()
            return True

    def take_result(self) -> PreviewResult | None:
        """The newest finished preview not yet taken, else None."""
        with self._condition:
            result, self._result = self._result, None
            return result

    def hold(self) -> None:
        """Drop the waiting request and refuse new ones (a synthesis is starting); a render in progress ends."""
        with self._condition:
            self._held = True
            self._pending = None

    def release(self) -> None:
        """Accept requests again."""
        with self._condition:
            self._held = False

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no render is in progress or waiting (any thread but the worker's); True if idle."""
        with self._condition:
            return self._condition.wait_for(lambda: not self._busy and self._pending is None, timeout)

    @property
    def busy(self) -> bool:
        """A render is in progress or waiting."""
        with self._condition:
            return self._busy or self._pending is not None

    def close(self, timeout: float | None = None) -> None:
        """Stop the worker after the render in progress, and forget the prepared CT."""
        with self._condition:
            self._closed = True
            self._pending = None
            self._condition.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        self._prepared = None

    # ------------------------------------------------------- worker thread
    def _prepare(self, request: PreviewRequest, renderer) -> object:  # noqa: ANN001 (a logic.Renderer)
        if self._prepared is None or self._prepared[0] != request.key or self._prepared[1] is not renderer:
            self._prepared = None  # free the old CT's materials before preparing the new one
            self._prepared = (request.key, renderer, renderer.prepare(request.ct.volume()))
        return self._prepared[2]

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._closed or self._pending is not None)
                if self._closed:
                    return
                request, self._pending, self._busy = self._pending, None, True
            try:
                renderer = request.renderer if request.renderer is not None else self.renderer
                image = render_one(renderer, self._prepare(request, renderer), request.view, request.label)
                result = PreviewResult(request, image)
            except Exception as error:  # noqa: BLE001 (every error becomes the result's message)
                result = PreviewResult(request, None, error_message(error), traceback.format_exc())
            with self._condition:
                self._result = result
                self._busy = False
                self._condition.notify_all()

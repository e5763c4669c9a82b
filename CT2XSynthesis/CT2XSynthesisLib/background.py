"""Synthesize in a worker thread while Slicer's GUI thread stays free.

:class:`SynthesisJob` renders the views of one *Synthesize* click in a daemon thread: it removes the
CT's couch when asked (:class:`ImagedCT`: up to a second or two), the renderer prepares the CT once (the
learned model resamples it to its grid), then it renders one view at a time. The GUI thread starts
the job, then polls :meth:`SynthesisJob.status` (in Slicer from a ``qt.QTimer``) for the progress bar,
and, once the job has finished, places the finished images in the scene itself
(``SynthesisLogic.finish_synthesis``): the worker never touches the MRML scene, which is not
thread-safe.

*Cancel* (:meth:`SynthesisJob.cancel`) takes effect between views: the view in progress when
it arrives is dropped, and the views finished before it are kept. An error in the worker is
kept as a one-line message (:attr:`JobStatus.error`) with its full traceback text
(:attr:`JobStatus.details`, for the GUI thread to log); it never escapes the thread. A job can
first wait for something else to finish (``wait_before``: the live preview's render in
progress), so the two never run at once. Torch releases the interpreter lock while it computes, so the GUI thread keeps
running during a view.

No Qt and no ``slicer`` here: the tests drive jobs with plain threads.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ct2x.body import without_table
from ct2x.errors import CT2XError
from ct2x.geometry import CArm
from ct2x.volume import CTVolume


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of a job.

    Attributes:
        done: views finished (kept).
        total: views requested.
        text: what the job is doing, for the progress label.
        finished: the worker has ended (done, cancelled or failed).
        cancelled: Cancel was requested.
        error: the message of the error that ended the job, else None.
        details: the traceback of that error, else None.
    """

    done: int
    total: int
    text: str
    finished: bool
    cancelled: bool
    error: str | None
    details: str | None = None

    @property
    def fraction(self) -> float:
        """Finished fraction in [0, 1]."""
        return self.done / self.total if self.total else 1.0


class ImagedCT:
    """The CT a synthesis or a live preview images (LPS, HU): the copy of the CT node, or, with
    ``remove_table``, that copy with everything outside the patient's body made air
    (``ct2x.body.without_table``, up to a second or two on a full CT). The couch is removed by the first
    worker thread that asks for :meth:`volume`, never by the thread that made this object (Slicer's GUI
    thread), and once: later calls, from any thread, get the same volume.

    :attr:`placement` places the views (its bounding box centres them): removing the couch changes
    voxels, not where they lie, so the copy serves before the couch is gone.
    """

    def __init__(self, copy: CTVolume, remove_table: bool) -> None:
        self.placement = copy
        self._lock = threading.Lock()
        self._volume = None if remove_table else copy

    @property
    def ready(self) -> bool:
        """No couch is left to remove (read without waiting for a removal under way)."""
        return self._volume is not None

    def volume(self) -> CTVolume:
        """The CT to image (waits while another thread removes the couch)."""
        with self._lock:
            if self._volume is None:
                self._volume = without_table(self.placement)
                self.placement = self._volume  # the same placement; the copy with its couch is let go
            return self._volume


def error_message(error: BaseException) -> str:
    """One line for the user: a CT2XError's own message, else the exception's type and text."""
    if isinstance(error, CT2XError):
        return str(error)
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def render_one(renderer, prepared: object, view: CArm, label: str, index: int = 0) -> np.ndarray:  # noqa: ANN001
    """View ``index`` of a synthesis as one float32 ``(H, W)`` image, checked against the detector:
    ``renderer.render_views(prepared, [view], index)`` (a ``logic.Renderer``), else ``renderer.render(prepared,
    [view])``."""
    render_views = getattr(renderer, "render_views", None)
    rendered = render_views(prepared, [view], index) if render_views is not None else renderer.render(prepared, [view])
    result = np.asarray(rendered, dtype=np.float32)
    if result.shape != (1, *view.detector_shape):
        raise CT2XError(
            f"the renderer returned an image of shape {result.shape} for {label}, "
            f"expected (1, {view.detector_shape[0]}, {view.detector_shape[1]})"
        )
    return result[0]


class SynthesisJob:
    """Render ``views`` of ``ct`` (its :meth:`ImagedCT.volume`, taken in the job's thread) with ``renderer`` (see
    the module docstring).

    ``labels`` name the views in the progress text. ``progress(done, total, text)``, if given,
    is called from the thread that runs the job; so is ``wait_before()``, before anything else, and
    ``annotate(index, view)`` after each view: the text fields recorded with it
    (:meth:`finished_annotations`; an error there ends the job like a render error).
    """

    def __init__(
        self,
        ct: ImagedCT,
        views: Sequence[CArm],
        renderer,  # noqa: ANN001 (a logic.Renderer: prepare(ct), render(prepared, views))
        labels: Sequence[str],
        progress: Callable[[int, int, str], None] | None = None,
        wait_before: Callable[[], object] | None = None,
        annotate: Callable[[int, CArm], dict[str, str]] | None = None,
    ) -> None:
        self.ct = ct
        self.views = list(views)
        self.labels = list(labels)
        self.renderer = renderer
        self._progress = progress
        self._wait_before = wait_before
        self._annotate = annotate
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._images: list[np.ndarray] = []
        self._annotations: list[dict[str, str]] = []
        self._text = "Waiting to start"
        self._finished = threading.Event()
        self._error: str | None = None
        self._details: str | None = None
        self._thread: threading.Thread | None = None
        #: The starter's own data (``SynthesisLogic`` keeps the CT node, parameters and mode here).
        self.context: dict = {}

    # ------------------------------------------------------------ control
    def start(self) -> None:
        """Run the job in a daemon thread; returns at once."""
        if self._thread is not None:
            raise CT2XError("this synthesis job has already been started")
        self._thread = threading.Thread(target=self.run, name="CT2X synthesis", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        """Stop before the next view; the view in progress is dropped."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished (tests, scripts); True if it has."""
        return self._finished.wait(timeout)

    # ------------------------------------------------------------- state
    def status(self) -> JobStatus:
        with self._lock:
            return JobStatus(
                done=len(self._images),
                total=len(self.views),
                text=self._text,
                finished=self._finished.is_set(),
                cancelled=self._cancel.is_set(),
                error=self._error,
                details=self._details,
            )

    def finished_views(self) -> list[tuple[CArm, np.ndarray]]:
        """The views finished so far with their images, in request order."""
        with self._lock:
            return list(zip(self.views, self._images, strict=False))

    def finished_annotations(self) -> list[dict[str, str]]:
        """The ``annotate`` fields of each finished view (empty without ``annotate``), in request order."""
        with self._lock:
            return [dict(fields) for fields in self._annotations]

    def _report(self, text: str) -> None:
        with self._lock:
            self._text = text
            done = len(self._images)
        if self._progress is not None:
            self._progress(done, len(self.views), text)

    # -------------------------------------------------------------- work
    def run(self) -> None:
        """The work itself (in the worker thread, or in the caller's for a blocking synthesis)."""
        try:
            if self._wait_before is not None:
                self._report("Waiting for the live preview")
                self._wait_before()
            if not self.ct.ready:
                self._report("Removing the CT couch")
            volume = self.ct.volume()
            self._report("Preparing the CT")
            prepared = self.renderer.prepare(volume)
            for index, (view, label) in enumerate(zip(self.views, self.labels, strict=True)):
                if self._cancel.is_set():
                    break
                self._report(f"Rendering {label} ({index + 1} of {len(self.views)})")
                image = render_one(self.renderer, prepared, view, label, index)
                fields = self._annotate(index, view) if self._annotate is not None else {}
                if self._cancel.is_set():
                    break  # finished after Cancel: dropped, as Cancel promises
                with self._lock:
                    self._images.append(image)
                    self._annotations.append(fields)
            done = len(self._images)
            self._report("Cancelled" if self._cancel.is_set() else f"Rendered {done} views")
        except Exception as error:  # noqa: BLE001 (every error becomes the job's message)
            with self._lock:
                self._error = error_message(error)
                self._details = traceback.format_exc()
                self._text = "Failed"
        finally:
            self._finished.set()

"""GUI-free logic of the CT2XSynthesis module: CT volume node in, placed X-ray views out.

This file imports ``slicer`` (the MRML library) but neither ``qt`` nor
``slicer.ScriptedLoadableModule``, so it runs in Slicer and in plain Python with PyPI's
``slicer-core`` (which the tests use).

Frames and units:

* Slicer's scene is in **RAS** millimetres; ``ct2x`` (and ITK, DICOM) work in **LPS**
  millimetres. The two differ by ``diag(-1, -1, 1)``. This file is the only place where
  the extension converts between them: :func:`ct_volume_from_node` turns a volume node's
  IJKToRAS into a :class:`ct2x.volume.CTVolume` in LPS, and :func:`image_ijk_to_ras`
  turns :attr:`ct2x.geometry.CArm.image_ijk_to_lps` back into an IJKToRAS.
* Angles are in degrees (primary: LAO +, RAO -; secondary: CRAN +, CAUD -), distances in
  millimetres, as everywhere in ``ct2x`` (see ``ct2x.geometry``).

Each view becomes a single-slice float32 ``vtkMRMLScalarVolumeNode``: array shape
``(1, H, W)``, column ``i`` = image right, row ``j`` = image down, so that the image lies
on the detector plane where the C-arm would have recorded it, with its slice normal
pointing toward the X-ray source.

Renderers (:func:`build_renderer` picks one from the panel's :class:`RendererChoice`): the learned
CT2X-GAN (:class:`LearnedRenderer`) with a model; without one, the imaging chain on DeepDRR's physics
(:class:`ChainRenderer`, ``ct2x.imaging.render.render_radiographs``, the path of ``ct2x drr --imaging``),
optionally fitted to a style reference, or the raw physics DRR (:class:`PhysicsDRRRenderer`,
``ct2x drr --imaging raw``). Each view node also records the fraction of its pixels whose rays cross the
whole CT (``CT2X.coverageFraction``, ``ct2x.drr.coverage``).

Every problem the user can fix is raised as :class:`ct2x.errors.CT2XError` (the one error type
of the Lib); choices of the panel are compared by name (:data:`MODEL_SOURCES`,
:data:`STYLE_SOURCES`, :data:`DEVICES`, :data:`GEOMETRY_SOURCES`, :data:`IMAGING_CHOICES`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import slicer
import vtk

from ct2x.body import TABLE_REMOVED
from ct2x.contracts import DEVICE_CHOICES as DEVICES
from ct2x.contracts import MODEL_BUNDLED, MODEL_FILE, MODEL_NONE, MODEL_SOURCES, STYLE_CODE_PREFIX
from ct2x.errors import CT2XError
from ct2x.geometry import (
    DEFAULT_DETECTOR_PIXELS,
    DEFAULT_DETECTOR_WIDTH_MM,
    DEFAULT_SDD_MM,
    DEFAULT_SID_MM,
    FIT_PIXELS,
    CArm,
    fit_view,
)
from ct2x.options import (
    DEFAULT_DEVICE,
    DEFAULT_IMAGING,
    DEFAULT_SPECTRUM,
    DEFAULT_STEP_VOXELS,
    IMAGING_MODES,
    IMAGING_PRESETS,
    IMAGING_RANDOMISED,
    IMAGING_RAW,
    MAX_DEVICES,
    DRROptions,
    is_whole,
    option_default,
)
from ct2x.radiograph_geometry import RadiographGeometry
from ct2x.volume import CTVolume, check_finite
from CT2XSynthesisLib.background import ImagedCT, SynthesisJob
from CT2XSynthesisLib.preview import PreviewRequest, PreviewResult, PreviewWorker

# The model choices (MODEL_SOURCES), the device choices (DEVICES) and STYLE_CODE_PREFIX are defined once in
# ct2x.contracts (shared with CT2XTraining and the core, importable without torch) and used from here.

#: LPS <-> RAS: negate the first two axes (the same matrix both ways).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: The panel's style-reference choices.
STYLE_DRR, STYLE_VOLUME, STYLE_FILE, STYLE_STORED = (
    "DRR style",
    "Loaded 2D volume",
    "Image file",
    "Style stored with the model",
)
STYLE_SOURCES = (STYLE_DRR, STYLE_VOLUME, STYLE_FILE, STYLE_STORED)

#: Where the C-arm geometry comes from: the panel's fields, or a real radiograph ("like this").
GEOMETRY_PANEL, GEOMETRY_VOLUME, GEOMETRY_FILE = (
    "C-arm geometry below",
    "Like a loaded DICOM radiograph",
    "Like a DICOM radiograph file",
)
GEOMETRY_SOURCES = (GEOMETRY_PANEL, GEOMETRY_VOLUME, GEOMETRY_FILE)

#: Called as ``progress(done, total, text)`` while views are rendered.
ProgressCallback = Callable[[int, int, str], None]

#: Label of the physics renderer: DeepDRR-physics DRRs, not the GAN.
DRR_PHYSICS_MODE = "DRR (physics)"

#: Label of the learned renderer: CT2X-GAN synthesis with a trained model.
LEARNED_MODE = "CT2X-GAN"

#: The panel's imaging choices without a model (``ct2x drr --imaging``, read from ``ct2x.options``): the
#: chain's presets, ``randomised`` (every chain parameter drawn from its range with the seed) and ``raw``
#: (the physics DRR alone, :data:`DRR_PHYSICS_MODE`); the default is ``ct2x drr``'s.
IMAGING_CHOICES = IMAGING_MODES
#: The seed of the chain's noise (view n of a synthesis draws from seed + n) and of ``randomised``: ``ct2x drr``'s.
DEFAULT_SEED = option_default(DRROptions, "seed")

#: The panel's support-device count that gives none of its own (``ct2x drr`` without ``--devices``): the chain's
#: (none in a preset, the randomised draw's); shown as "chain's own".
CHAIN_DEVICES = -1

#: Ray-marching step (voxels) of the live preview: coarser than the synthesis's so it follows the sliders.
PREVIEW_STEP_VOXELS = 1.0
#: Prefix of the node attributes that store a view's geometry.
ATTRIBUTE_PREFIX = "CT2X."

PREVIEW_NODE_NAME = "CT2X preview"


# ---------------------------------------------------------------- parameters
@dataclass(frozen=True)
class SynthesisParameters:
    """The imaging chain shared by all views.

    Attributes:
        angles: ``(primary, secondary)`` pairs in degrees, one per view.
        sdd: source-to-detector distance, mm.
        sid: source-to-isocenter distance, mm.
        detector_pixels: detector columns (and rows, unless ``detector_rows`` is given).
        detector_width_mm: physical width of the detector (and height, unless
            ``detector_height_mm`` is given), mm.
        detector_rows: detector rows; ``None`` = square (``detector_pixels``).
        detector_height_mm: physical height of the detector, mm; ``None`` = its width.
        isocenter_ras: the point the C-arm turns about, RAS mm; ``None`` = centre of the
            CT's bounding box.
        add_markups: also add a fiducial markups node with the sources and the isocenter.
        remove_table: make everything outside the patient's body air first: the CT's couch
            (``ct2x.body.without_table``, ``ct2x drr --remove-table``).
    """

    angles: tuple[tuple[float, float], ...]
    sdd: float = DEFAULT_SDD_MM
    sid: float = DEFAULT_SID_MM
    detector_pixels: int = DEFAULT_DETECTOR_PIXELS
    detector_width_mm: float = DEFAULT_DETECTOR_WIDTH_MM
    isocenter_ras: tuple[float, float, float] | None = None
    add_markups: bool = False
    detector_rows: int | None = None
    detector_height_mm: float | None = None
    remove_table: bool = False

    def views(self, ct: CTVolume) -> list[CArm]:
        """One :class:`CArm` per angle pair, in LPS, around the isocenter (default: CT centre)."""
        if not self.angles:
            raise CT2XError("give at least one view angle")
        rows_given = self.detector_rows if self.detector_rows is not None else self.detector_pixels
        height_mm = self.detector_height_mm if self.detector_height_mm is not None else self.detector_width_mm
        for value in (self.detector_pixels, rows_given):
            if int(value) < 1 or int(value) != value:
                raise CT2XError(f"the detector size must be a whole number of pixels, got {value!r}")
        for value in (self.detector_width_mm, height_mm):
            if not (math.isfinite(value) and value > 0):
                raise CT2XError(f"the detector size must be a positive length in mm, got {value!r}")
        if self.isocenter_ras is None:
            isocenter = tuple(float(c) for c in ct.center_lps)
        else:
            isocenter = tuple(float(c) for c in (LPS_TO_RAS[:3, :3] @ np.asarray(self.isocenter_ras, dtype=float)))
        columns, rows = int(self.detector_pixels), int(rows_given)
        return [
            CArm(
                primary=p,
                secondary=s,
                sdd=self.sdd,
                sid=self.sid,
                detector_shape=(rows, columns),
                pixel_spacing=(height_mm / rows, self.detector_width_mm / columns),
                isocenter=isocenter,
            )
            for p, s in self.angles
        ]


_ANGLE_ITEM = re.compile(r"^\s*([-+]?\d+(?:\.\d*)?)\s*(?:/\s*([-+]?\d+(?:\.\d*)?)\s*)?$")


def parse_angles(text: str, default_secondary: float = 0.0) -> tuple[tuple[float, float], ...]:
    """Parse a view list such as ``"-30, 0, 30/15"`` into ``((-30, 0), (0, 0), (30, 15))``.

    Items are separated by commas or semicolons; each is ``primary`` or
    ``primary/secondary`` in degrees (LAO/CRAN positive). Items without a secondary
    angle take ``default_secondary``.
    """
    items = [item for item in re.split(r"[,;]", text) if item.strip()]
    if not items:
        raise CT2XError("give at least one view angle, e.g. '-30, 0, 30' or '30/15' for LAO 30 CRAN 15")
    angles = []
    for item in items:
        match = _ANGLE_ITEM.match(item)
        if not match:
            raise CT2XError(
                f"cannot read the view {item.strip()!r}: "
                "write 'primary' or 'primary/secondary' in degrees, e.g. '30/15'"
            )
        primary = float(match.group(1))
        secondary = float(match.group(2)) if match.group(2) is not None else float(default_secondary)
        angles.append((primary, secondary))
    return tuple(angles)


def view_name(primary: float, secondary: float) -> str:
    """Node name of a view, e.g. ``"CT2X LAO 30 CRAN 0"`` or ``"CT2X RAO 45 CAUD 10"``."""
    side = "LAO" if primary >= 0 else "RAO"
    tilt = "CRAN" if secondary >= 0 else "CAUD"
    return f"CT2X {side} {abs(primary):g} {tilt} {abs(secondary):g}"


# ------------------------------------------------------------- frame edges
def _matrix_to_array(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def node_ijk_to_world_ras(node: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    """4x4 from the node's voxel index (i, j, k) to world RAS mm, through any linear parent transform."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = _matrix_to_array(matrix)
    transform = node.GetParentTransformNode()
    if transform is not None:
        if not transform.IsTransformToWorldLinear():
            raise CT2XError(
                f"the CT '{node.GetName()}' is under a non-linear transform: harden the transform first "
                "(Data module, right-click the transform) so the views can be placed"
            )
        to_world = vtk.vtkMatrix4x4()
        transform.GetMatrixTransformToWorld(to_world)
        ijk_to_ras = _matrix_to_array(to_world) @ ijk_to_ras
    return ijk_to_ras


def ct_volume_from_node(node: slicer.vtkMRMLScalarVolumeNode) -> CTVolume:
    """A :class:`CTVolume` (HU, LPS placement) copied from a scalar volume node in RAS.

    The voxels are copied to float32, so nothing done to the result reaches the node. A label map
    (segment labels, not HU) and voxels that are NaN or infinite are refused
    (:func:`ct2x.volume.check_finite`, the check of every CT reader).
    """
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode") or node.GetImageData() is None:
        raise CT2XError("select a CT volume (a scalar volume with image data) as the input")
    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise CT2XError(
            f"the input '{node.GetName()}' is a label map (segment labels, not Hounsfield units): select the CT "
            "volume itself"
        )
    voxels = slicer.util.arrayFromVolume(node)
    if voxels.ndim != 3 or min(voxels.shape) < 2:
        raise CT2XError(
            f"the input '{node.GetName()}' is not a 3D CT volume (its voxel grid is {voxels.shape[::-1]}): "
            "select a CT with at least 2 voxels along each axis"
        )
    array = np.array(voxels, dtype=np.float32, copy=True)
    check_finite(array, f"the input '{node.GetName()}'")
    ijk_to_lps = LPS_TO_RAS @ node_ijk_to_world_ras(node)
    linear = ijk_to_lps[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    return CTVolume(
        array=array,
        spacing=spacing,
        origin=ijk_to_lps[:3, 3].copy(),
        direction=linear / spacing,
    )


def image_ijk_to_ras(view: CArm) -> np.ndarray:
    """IJKToRAS of a view's single-slice image: ``diag(-1, -1, 1, 1) @ view.image_ijk_to_lps``.

    Column i runs toward image right, row j toward image down (both scaled by the pixel
    spacing, mm) and k along the detector normal toward the source (1 mm); the origin is
    pixel (0, 0)'s centre on the detector plane.
    """
    return LPS_TO_RAS @ view.image_ijk_to_lps


def lps_to_ras_point(point_lps: Sequence[float]) -> np.ndarray:
    """A point's RAS coordinates (mm) from its LPS coordinates (mm)."""
    return LPS_TO_RAS[:3, :3] @ np.asarray(point_lps, dtype=np.float64)


def _format_numbers(values: Sequence[float] | np.ndarray) -> str:
    """Space-separated shortest round-trip decimals (reading them back gives the same floats)."""
    return " ".join(repr(float(v)) for v in np.ravel(values))


def view_attributes(view: CArm, mode: str) -> dict[str, str]:
    """Node attributes recording a view's geometry (attribute names start with ``CT2X.``).

    Angles in degrees; distances in mm; positions in **LPS** mm (suffix ``LPS``, the frame
    of ``ct2x``) and RAS mm (suffix ``RAS``); ``pose`` is the 25-number pose of
    ``ct2x.geometry`` (translation in metres).
    """
    values = {
        "primary": f"{view.primary:g}",
        "secondary": f"{view.secondary:g}",
        "sdd": _format_numbers([view.sdd]),
        "sid": _format_numbers([view.sid]),
        "detectorShape": _format_numbers(view.detector_shape),
        "pixelSpacing": _format_numbers(view.pixel_spacing),
        "isocenterLPS": _format_numbers(view.isocenter),
        "isocenterRAS": _format_numbers(lps_to_ras_point(view.isocenter)),
        "sourceLPS": _format_numbers(view.source),
        "sourceRAS": _format_numbers(lps_to_ras_point(view.source)),
        "pose": _format_numbers(view.pose),
        "mode": mode,
    }
    return {ATTRIBUTE_PREFIX + key: value for key, value in values.items()}


def view_from_attributes(node: slicer.vtkMRMLNode) -> CArm:
    """Rebuild the :class:`CArm` stored on a view node by :func:`view_attributes`."""

    def numbers(key: str) -> list[float]:
        text = node.GetAttribute(ATTRIBUTE_PREFIX + key)
        if text is None:
            raise CT2XError(f"'{node.GetName()}' is not a CT2X view: it has no {ATTRIBUTE_PREFIX + key} attribute")
        return [float(v) for v in text.split()]

    rows, cols = (int(v) for v in numbers("detectorShape"))
    return CArm(
        primary=numbers("primary")[0],
        secondary=numbers("secondary")[0],
        sdd=numbers("sdd")[0],
        sid=numbers("sid")[0],
        detector_shape=(rows, cols),
        pixel_spacing=tuple(numbers("pixelSpacing")),
        isocenter=tuple(numbers("isocenterLPS")),
    )


# --------------------------------------------------------------- renderers
def resolve_device(choice: str) -> str:
    """The torch device for a device choice (:data:`DEVICES`): ``auto`` = ``cuda`` when torch sees a
    CUDA GPU, else ``cpu``; ``cuda`` without one is refused."""
    if choice not in DEVICES:
        raise CT2XError(f"the device must be one of {', '.join(DEVICES)}, got {choice!r}")
    from ct2x.device import torch_device

    return str(torch_device(choice))


class Renderer:
    """Renders views of a CT (LPS) as one ``(V, H, W)`` float array per call.

    :meth:`prepare` runs once per *Synthesize* (the learned model resamples the CT to its grid
    there), :meth:`render_views` once per view (with the view's index in the synthesis; by default
    :meth:`render`); neither touches the scene, so both can run in a worker thread
    (``CT2XSynthesisLib.background``). Calling the renderer does both. :meth:`view_attributes` says
    what made a view (node attributes besides its geometry).
    """

    def prepare(self, ct: CTVolume) -> object:
        return ct

    def render(self, prepared: object, views: list[CArm]) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement render(prepared, views)")

    def render_views(self, prepared: object, views: list[CArm], first_index: int = 0) -> np.ndarray:
        """``views`` as views ``first_index, first_index + 1, ...`` of one synthesis (a renderer with seeded noise
        draws each view's noise from its index, as ``ct2x drr`` does); by default :meth:`render`."""
        return self.render(prepared, views)

    def view_attributes(self, ct: CTVolume, view: CArm, index: int) -> dict[str, str]:
        """Node attributes (``CT2X.`` + key) recording what made view ``index`` of ``ct``; none by default."""
        return {}

    def __call__(self, ct: CTVolume, views: list[CArm]) -> np.ndarray:
        return self.render(self.prepare(ct), views)


class FunctionRenderer(Renderer):
    """A renderer made of a function ``(CTVolume, list[CArm]) -> (V, H, W)`` (tests, custom renderers)."""

    def __init__(self, function: Callable[[CTVolume, list[CArm]], np.ndarray]) -> None:
        self.function = function

    def render(self, prepared: object, views: list[CArm]) -> np.ndarray:
        return self.function(prepared, views)


def as_renderer(renderer: Renderer | Callable[[CTVolume, list[CArm]], np.ndarray]) -> Renderer:
    """``renderer`` itself, or a plain function wrapped as a :class:`FunctionRenderer`."""
    return renderer if isinstance(renderer, Renderer) else FunctionRenderer(renderer)


class PhysicsDRRRenderer(Renderer):
    """The "DRR (physics)" renderer: ``ct2x.drr.render_drr`` with DeepDRR's physics, not the GAN
    (``ct2x drr --imaging raw``: ``-log`` of the transmitted fraction, no imaging chain).

    ``drr_options`` go to ``render_drr`` (``step``, ``spectrum``, ``photons``, ``seed``; the step and
    spectrum default to ``ct2x drr``'s, :data:`DEFAULT_STEP_VOXELS` and :data:`DEFAULT_SPECTRUM`, no noise);
    ``device`` is a :data:`DEVICES` choice. ``ct2x.drr`` (and torch) are imported on first use.
    """

    def __init__(self, device: str = DEFAULT_DEVICE, **drr_options: object) -> None:
        self.device = device
        self.drr_options = {"step": DEFAULT_STEP_VOXELS, "spectrum": DEFAULT_SPECTRUM, **drr_options}

    @property
    def mode(self) -> str:
        return DRR_PHYSICS_MODE

    def prepare(self, ct: CTVolume) -> object:
        from ct2x.drr import materials

        return materials(ct, device=resolve_device(self.device))  # HU -> materials once per Synthesize

    def render(self, prepared: object, views: list[CArm]) -> np.ndarray:
        return self.render_views(prepared, views)

    def render_views(self, prepared: object, views: list[CArm], first_index: int = 0) -> np.ndarray:
        """Views ``first_index, ...`` of a synthesis: with a noise ``seed``, view n draws from seed + n."""
        from ct2x.drr import render_drr

        options = dict(self.drr_options)
        if options.get("seed") is not None:
            options["seed"] = options["seed"] + first_index
        images = render_drr(prepared, views, device=resolve_device(self.device), **options)
        return images.detach().cpu().numpy()

    def at_step(self, step: float) -> PhysicsDRRRenderer:
        """The same renderer marching its rays at ``step`` voxels (the live preview's coarser step)."""
        return PhysicsDRRRenderer(self.device, **{**self.drr_options, "step": step})

    def view_attributes(self, ct: CTVolume, view: CArm, index: int) -> dict[str, str]:
        """What made view ``index`` (``CT2X.`` + key), as ``ct2x drr --imaging raw`` records it in its NRRD header."""
        options = self.drr_options
        fields = {
            "imaging": IMAGING_RAW,
            "stepVoxels": f"{options['step']:g}",
            "spectrum": str(options["spectrum"]),
            "photons": f"{options.get('photons') or 0:g}",
        }
        if options.get("seed") is not None:
            fields |= {"seed": str(options["seed"]), "noiseSeed": str(options["seed"] + index)}
        return fields


def physics_drr_renderer(device: str = DEFAULT_DEVICE, **drr_options: object) -> PhysicsDRRRenderer:
    """:class:`PhysicsDRRRenderer` (mode :data:`DRR_PHYSICS_MODE`)."""
    return PhysicsDRRRenderer(device, **drr_options)


def chain_mode(imaging: str, fitted: bool = False, devices: int = 0) -> str:
    """The mode label of the imaging chain ``imaging`` (a preset or ``randomised``), e.g.
    ``"Radiograph (imaging chain: chest_dr_pa)"``; ``fitted``: its look fitted to a style reference;
    ``devices``: support devices put in the beam."""
    extras = (", fitted to the style reference" if fitted else "") + (f", {devices} support devices" if devices else "")
    return f"Radiograph (imaging chain: {imaging}{extras})"


class _Fits:
    """Chain parameters fitted to one style reference, by CT (its :class:`CTVolume` object, the volume of the
    logic's kept :class:`ImagedCT`) and fitting view; shared by a :class:`ChainRenderer` and its coarser copies, so the
    synthesis and the live preview fit once. The CTs are held weakly; the last few fits are kept."""

    KEPT = 4

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[tuple[weakref.ref, tuple, object]] = []

    def find(self, ct: CTVolume, key: tuple) -> object | None:
        with self._lock:
            return self._find(ct, key)

    def _find(self, ct: CTVolume, key: tuple) -> object | None:
        for ref, stored, parameters in self._entries:
            if ref() is ct and stored == key:
                return parameters
        return None

    def get(self, ct: CTVolume, key: tuple, fit: Callable[[], object]) -> object:
        """The parameters stored for ``(ct, key)``, else ``fit()`` (once: the lock is held while it runs)."""
        with self._lock:
            found = self._find(ct, key)
            if found is None:
                found = fit()
                live = [entry for entry in self._entries if entry[0]() is not None]
                self._entries = [*live[-(self.KEPT - 1) :], (weakref.ref(ct), key, found)]
            return found


class ChainRenderer(Renderer):
    """Radiographs through the imaging chain on DeepDRR's physics: ``ct2x.imaging.render.render_radiographs``,
    the one path of ``ct2x drr --imaging`` (beam, scatter and grid, focal-spot and detector blur, noise from the
    dose, the detector's log, the console's processing): display values in [0, 1], bright = attenuating.

    ``imaging``: a preset of ``ct2x.imaging.PRESETS`` (:data:`ct2x.options.IMAGING_PRESETS`) or
    ``randomised`` (every parameter drawn from its published range with ``seed``). ``seed``: view n of a
    synthesis draws its noise from ``seed + n``, as ``ct2x drr`` does, so the same seed gives the same images
    (``None``: fresh noise; ``randomised`` needs a seed). ``step``: ray step, voxels. The detector is the
    views': their distances and pixel spacing count (dose, blur, scatter), as in ``ct2x drr --sdd --sid
    --size --pixel``. ``devices``: support devices in the beam (ECG leads, central lines, feeding tubes;
    ``ct2x drr --devices``), drawn with the seed (0 with fresh noise), the same in every view; ``None``: the
    chain's own (none in a preset, the randomised draw's).

    ``style``: a reference radiograph (an array such as a 2D volume's voxels, or an image file). The chain's
    look (tone curve, band gains, dose and detector MTF) is then fitted to it (``ct2x.synthesize.fitted_look``)
    once per CT and detector geometry, at ``ct2x.geometry.fit_view``, starting from the preset's parameters;
    every view is rendered with the fitted parameters. ``style_label`` names the reference in the view nodes'
    attributes; ``fit_pixels`` (default ``ct2x.geometry.FIT_PIXELS``) the fitting view's side. ``ct2x`` (and
    torch) are imported on first use.
    """

    def __init__(
        self,
        imaging: str = DEFAULT_IMAGING,
        *,
        device: str = DEFAULT_DEVICE,
        step: float = DEFAULT_STEP_VOXELS,
        seed: int | None = DEFAULT_SEED,
        style: str | Path | np.ndarray | None = None,
        style_label: str = "",
        fit_pixels: int | None = None,
        backend: str = "auto",
        devices: int | None = None,
    ) -> None:
        chains = (*IMAGING_PRESETS, IMAGING_RANDOMISED)
        if imaging == IMAGING_RAW:
            raise CT2XError(f"{IMAGING_RAW!r} is the physics DRR without an imaging chain: use PhysicsDRRRenderer")
        if imaging not in chains:
            raise CT2XError(f"unknown imaging preset {imaging!r}: use one of {', '.join(chains)}")
        if seed is not None and (not is_whole(seed) or seed < 0):
            raise CT2XError(f"the seed must be a whole number >= 0, got {seed!r}")
        if imaging == IMAGING_RANDOMISED and seed is None:  # checked here, before ct2x (and torch) are imported
            raise CT2XError("the randomised imaging chain draws its parameters from the seed: give one")
        fit_pixels = FIT_PIXELS if fit_pixels is None else fit_pixels
        if not is_whole(fit_pixels) or fit_pixels < 32:
            raise CT2XError(f"the chain is fitted at 32 pixels a side or more, got {fit_pixels!r}")
        if devices is not None and (not is_whole(devices) or not 0 <= devices <= MAX_DEVICES):
            raise CT2XError(f"the support devices must be a whole number from 0 to {MAX_DEVICES}, got {devices!r}")
        self.imaging = imaging
        self.devices = devices
        self.device = device
        self.step = step
        self.seed = seed
        self.style = style
        self.style_label = style_label
        self.fit_pixels = int(fit_pixels)
        self.backend = backend
        self._base = None
        self._fits = _Fits()

    @property
    def mode(self) -> str:
        return chain_mode(self.imaging, fitted=self.style is not None, devices=self.devices or 0)

    @property
    def base_parameters(self):  # noqa: ANN201 (ct2x.imaging.ImagingParameters; torch is imported lazily)
        """The chain's parameters before any fit: the preset's, or those ``randomised`` draws from the seed; with
        ``devices``, that many drawn with the seed."""
        if self._base is None:
            from ct2x.imaging.parameters import chosen

            self._base = chosen(self.imaging, self.seed, self.devices)
        return self._base

    def prepare(self, ct: CTVolume) -> object:
        from ct2x.drr import materials

        return materials(ct, device=resolve_device(self.device), backend=self.backend)  # HU -> materials once

    def parameters_for(self, ct: object, view: CArm):  # noqa: ANN201 (ct2x.imaging.ImagingParameters)
        """The chain's parameters for ``view`` of ``ct`` (a :class:`CTVolume` or its prepared materials): the base
        parameters, or, with a style reference, those fitted to it (fitted on the first call per CT and
        :func:`fit_view`, then kept)."""
        if self.style is None:
            return self.base_parameters
        volume = getattr(ct, "volume", ct)  # ct2x.drr.Materials keep their CT
        at = fit_view(view, self.fit_pixels)
        key = (at.sdd, at.sid, at.detector_shape, at.pixel_spacing, at.isocenter)
        return self._fits.get(volume, key, lambda: self._fit(ct, view))

    def _fit(self, ct: object, view: CArm):  # noqa: ANN202
        from ct2x.synthesize import fitted_look

        device = getattr(ct, "density", None)
        device = device.device if device is not None else resolve_device(self.device)
        return fitted_look(ct, view, self.style, self.base_parameters, pixels=self.fit_pixels, device=device,
                           backend=self.backend)  # fmt: skip

    def render(self, prepared: object, views: list[CArm]) -> np.ndarray:
        """``render_radiographs(prepared, views, parameters, step=step, seed=seed)``: one noise draw for all views."""
        return self.render_views(prepared, views)

    def render_views(self, prepared: object, views: list[CArm], first_index: int = 0) -> np.ndarray:
        """Views ``first_index, ...`` of a synthesis, their noise drawn from ``seed + first_index``."""
        from ct2x.imaging.render import render_radiographs

        parameters = self.parameters_for(prepared, views[0])
        seed = None if self.seed is None else self.seed + first_index
        return render_radiographs(prepared, views, parameters, step=self.step, backend=self.backend, seed=seed).numpy()

    def at_step(self, step: float) -> ChainRenderer:
        """The same chain (and the same fits) marching its rays at ``step`` voxels (the live preview's step)."""
        coarse = copy.copy(self)
        coarse.step = step
        return coarse

    def view_attributes(self, ct: CTVolume, view: CArm, index: int) -> dict[str, str]:
        """What made view ``index`` (``CT2X.`` + key), as ``ct2x drr`` records it in its NRRD header: the imaging
        choice, the chain's parameters (JSON of ``ImagingParameters``, fitted ones with a style reference), the
        ray step and the seeds."""
        parameters = self.parameters_for(ct, view)  # fitted when the first view was rendered: kept
        fields = {
            "imaging": self.imaging,
            "imagingParameters": json.dumps(dataclasses.asdict(parameters)),
            "stepVoxels": f"{self.step:g}",
        }
        if self.seed is not None:
            fields |= {"seed": str(self.seed), "noiseSeed": str(self.seed + index)}
        if self.style is not None:
            fields["imagingFittedTo"] = self.style_label or "the style reference"
        return fields


def bundled_model_path() -> Path:
    """Where the bundled model is expected (``ct2x.samples.BUNDLED_MODEL``); it may be missing."""
    from ct2x.samples import BUNDLED_MODEL

    return BUNDLED_MODEL


def stored_style_names(model_path: str | Path | None) -> list[str]:
    """Names of the reference styles stored with a model file (its ``style_code.<name>`` tensors), sorted.

    ``None`` (no model: the "DRR (physics)" renderer), a missing or unreadable file, or a model
    without stored styles give ``[]``; this never raises, so the panel can call it whenever the
    model choice changes. Only the file's safetensors header is read (no torch needed, fast).
    """
    if model_path is None or not str(model_path).strip():
        return []
    try:
        with open(model_path, "rb") as file:
            length = int.from_bytes(file.read(8), "little")
            if not 0 < length <= 100_000_000:
                return []
            header = json.loads(file.read(length).decode("utf-8"))
    except (OSError, ValueError):  # missing, a folder, not safetensors (json errors are ValueErrors)
        return []
    if not isinstance(header, dict):
        return []
    return sorted(key[len(STYLE_CODE_PREFIX) :] for key in header if key.startswith(STYLE_CODE_PREFIX))


class LearnedRenderer(Renderer):
    """The learned CT2X-GAN synthesis (``ct2x.synthesize``), mode :data:`LEARNED_MODE`.

    ``model_path``: a trained model (``.safetensors`` with its card); ``None`` = the bundled
    model. The style reference is one of: ``style``, a radiograph (a file, or an array such as a
    2D volume's voxels); ``model_style``, the name of a style stored with the model (see
    :func:`stored_style_names`; as ``ct2x synthesize --model-style``); neither = the DRR style.
    A model with the physics anchor (the bundled one) renders at the detector's own pixels: the physics (and,
    anchored on the imaging chain, the chain's noise, blur and processing) at those pixels, its learned
    correction resized to them (``ct2x.synthesize``). Another model makes ``S x S`` images (its
    ``image_size``) over the requested physical detector; they are resized (bilinear) to the detector's pixel
    count, so they lie exactly where the view's detector is. The model (and a stored style) is loaded once,
    on first use, and kept while this renderer lives; a style the model does not store is refused then,
    naming the stored ones.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        style: str | Path | np.ndarray | None = None,
        device: str = DEFAULT_DEVICE,
        model_style: str | None = None,
    ) -> None:
        if style is not None and model_style is not None:
            raise CT2XError("give one style reference: a radiograph or a style stored with the model, not both")
        self.model_path = model_path
        self.style = style
        self.device = device
        self.model_style = model_style
        self._loaded: tuple | None = None
        self._lock = threading.Lock()

    def model(self):  # noqa: ANN201 (torch is imported lazily)
        """``(model, stored style code or None)``, loaded on the first call."""
        with self._lock:
            if self._loaded is None:
                from ct2x.checkpoint import load_model, load_style_codes
                from ct2x.samples import bundled_model

                path = Path(self.model_path) if self.model_path is not None else bundled_model()
                model = load_model(path, resolve_device(self.device))[0]
                code = None
                if self.model_style is not None:
                    codes = load_style_codes(path)
                    if self.model_style not in codes:
                        stored = ", ".join(sorted(codes)) if codes else "none"
                        raise CT2XError(
                            f"the model {path.name} stores no style named {self.model_style!r} "
                            f"(stored styles: {stored})"
                        )
                    code = codes[self.model_style]
                self._loaded = (model, code)
            return self._loaded

    def prepare(self, ct: CTVolume) -> object:
        from ct2x.synthesize import prepare_ct

        return prepare_ct(self.model()[0], ct)

    def render(self, prepared: object, views: list[CArm]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        from ct2x.synthesize import synthesize

        model, code = self.model()
        drr_style = self.style is None and code is None
        if model.tone_curve is not None:  # the physics anchor: any detector size
            results = synthesize(model, prepared, views, style=self.style, style_code=code, drr_style=drr_style)
            return np.stack([r.image for r in results])
        size = model.config.image_size
        at_model_size = [
            replace(v, detector_shape=(size, size), pixel_spacing=tuple(mm / size for mm in v.detector_size_mm))
            for v in views
        ]
        results = synthesize(model, prepared, at_model_size, style=self.style, style_code=code, drr_style=drr_style)
        images = torch.from_numpy(np.stack([r.image for r in results]))[:, None]
        resized = F.interpolate(images, size=views[0].detector_shape, mode="bilinear", align_corners=False)
        return resized[:, 0].numpy()


def learned_renderer(
    model_path: str | Path | None = None,
    style: str | Path | np.ndarray | None = None,
    device: str = DEFAULT_DEVICE,
    model_style: str | None = None,
) -> LearnedRenderer:
    """:class:`LearnedRenderer` (mode :data:`LEARNED_MODE`)."""
    return LearnedRenderer(model_path, style, device, model_style)


@dataclass(frozen=True)
class RendererChoice:
    """The panel's choice of renderer: everything that changes what it renders.

    ``model_source`` is one of :data:`MODEL_SOURCES` and ``style_source`` one of
    :data:`STYLE_SOURCES` (compared by name); ``style_key`` identifies a style volume's voxels
    (its node ID and modified time), whose array is passed beside the choice. Without a model
    (:data:`MODEL_NONE`), ``imaging`` (one of :data:`IMAGING_CHOICES`), ``seed`` and ``devices`` (support
    devices in the beam, 0-:data:`MAX_DEVICES`, or ``None``: the chain's own, as ``ct2x drr`` without
    ``--devices``) choose the imaging chain (:class:`ChainRenderer`) or the raw physics DRR; with one they are not used.
    """

    model_source: str = MODEL_BUNDLED
    model_file: str = ""
    style_source: str = STYLE_DRR
    style_file: str = ""
    style_key: str = ""
    model_style: str = ""
    device: str = DEFAULT_DEVICE
    imaging: str = DEFAULT_IMAGING
    seed: int = DEFAULT_SEED
    devices: int | None = None

    def model_path(self) -> Path | None:
        """The chosen model file (it may be missing), or None for the physics renderer or no file yet."""
        if self.model_source == MODEL_BUNDLED:
            return bundled_model_path()
        if self.model_source == MODEL_FILE:
            text = self.model_file.strip()
            return Path(text) if text and text != "." else None
        return None


def _file_stamp(path: str | Path | None) -> tuple:
    """What tells a changed file: its path, modification time and size (None when unreadable)."""
    if path is None or not str(path).strip():
        return (None,)
    try:
        stat = os.stat(path)
    except OSError:
        return (str(path), None, None)
    return (str(path), stat.st_mtime_ns, stat.st_size)


def _check_choice(choice: RendererChoice) -> None:
    for value, allowed, what in (
        (choice.model_source, MODEL_SOURCES, "model"),
        (choice.style_source, STYLE_SOURCES, "style reference"),
    ):
        if value not in allowed:
            raise CT2XError(f"unknown {what} choice {value!r}: use one of {', '.join(allowed)}")
    if choice.model_source == MODEL_NONE and choice.imaging not in IMAGING_CHOICES:
        raise CT2XError(f"unknown imaging preset {choice.imaging!r}: use one of {', '.join(IMAGING_CHOICES)}")


#: A style volume's voxels beside a :class:`RendererChoice`: the array, or a function that copies it (called only
#: when a renderer is built, so a choice that is kept never copies the volume again), or None.
StyleArray = np.ndarray | Callable[[], np.ndarray] | None


def build_renderer(choice: RendererChoice, style_array: StyleArray = None) -> tuple[Renderer, str]:
    """The renderer and its mode label for a :class:`RendererChoice`, or a CT2XError saying what is missing."""
    _check_choice(choice)
    if callable(style_array):
        style_array = style_array()
    if choice.model_source == MODEL_NONE:
        return _physics_renderer(choice, style_array)
    model = choice.model_path()
    if model is None:
        raise CT2XError("choose a model file (.safetensors), or the bundled model")
    model_arg = None if choice.model_source == MODEL_BUNDLED else model
    if choice.style_source == STYLE_VOLUME:
        if style_array is None:
            raise CT2XError("choose the 2D volume to use as style reference")
        return LearnedRenderer(model_arg, style=style_array, device=choice.device), LEARNED_MODE
    if choice.style_source == STYLE_FILE:
        return LearnedRenderer(model_arg, style=_style_file(choice), device=choice.device), LEARNED_MODE
    if choice.style_source == STYLE_STORED:
        if not choice.model_style:
            raise CT2XError(f"the model {model.name} stores no styles: choose another style reference")
        return LearnedRenderer(model_arg, model_style=choice.model_style, device=choice.device), LEARNED_MODE
    return LearnedRenderer(model_arg, device=choice.device), LEARNED_MODE


def _style_file(choice: RendererChoice) -> Path:
    if not choice.style_file.strip() or choice.style_file.strip() == ".":
        raise CT2XError("choose the radiograph image file to use as style reference")
    return Path(choice.style_file)


def _physics_renderer(choice: RendererChoice, style_array: np.ndarray | None) -> tuple[Renderer, str]:
    """Without a model: the imaging chain of ``choice.imaging`` (fitted to the style reference, if one is
    chosen), or the raw physics DRR (which takes no style reference)."""
    if choice.style_source == STYLE_STORED:
        raise CT2XError(
            "a style stored with a model needs that model: choose the model, or, for the imaging chain, a 2D "
            "volume or an image file to fit it to (or the DRR style: the preset's own look)"
        )
    style, label = None, ""
    if choice.style_source == STYLE_VOLUME:
        if style_array is None:
            raise CT2XError("choose the 2D volume whose look the imaging chain is fitted to")
        style, label = style_array, "2D volume " + (choice.style_key.split(":")[0] or "(style volume)")
    elif choice.style_source == STYLE_FILE:
        style = _style_file(choice)
        label = str(style)
    if choice.imaging == IMAGING_RAW:
        if style is not None:
            raise CT2XError(
                f"the raw physics DRR ({IMAGING_RAW}) takes no style reference: choose an imaging chain preset, "
                "whose look is then fitted to the reference, or the DRR style"
            )
        return PhysicsDRRRenderer(choice.device), DRR_PHYSICS_MODE
    renderer = ChainRenderer(choice.imaging, device=choice.device, seed=choice.seed, style=style, style_label=label,
                             devices=choice.devices)  # fmt: skip
    return renderer, renderer.mode


def renderer_mode(choice: RendererChoice) -> str:
    """The mode label :func:`build_renderer` gives ``choice``, without building anything (the panel's label);
    an unknown choice gives its error message."""
    try:
        _check_choice(choice)
    except CT2XError as error:
        return str(error)
    if choice.model_source != MODEL_NONE:
        return LEARNED_MODE
    if choice.imaging == IMAGING_RAW:
        return DRR_PHYSICS_MODE
    fitted = choice.style_source in (STYLE_VOLUME, STYLE_FILE)
    return chain_mode(choice.imaging, fitted=fitted, devices=choice.devices or 0)


def imaging_controls(choice: RendererChoice) -> tuple[bool, bool]:
    """Whether the panel shows the imaging choice (without a model), and the seed and support devices (without
    a model, for an imaging chain: the raw DRR is noise-free and has no devices)."""
    physics = choice.model_source == MODEL_NONE
    return physics, physics and choice.imaging != IMAGING_RAW


def describe_renderer(choice: RendererChoice) -> str:
    """The panel's renderer line: what *Synthesize* makes, and what the live preview shows."""
    mode = renderer_mode(choice)
    if choice.model_source != MODEL_NONE:
        return f"Renderer: {mode} (preview: {DRR_PHYSICS_MODE})"
    return f"Renderer: {mode} (preview: the same at a coarser ray step)"


# ------------------------------------------------------- isocenter, radiograph
def isocenter_from_markups(node: slicer.vtkMRMLMarkupsNode) -> tuple[float, float, float]:
    """The world RAS position (mm, through any parent transform) of a markups node's first point."""
    if node is None or node.GetNumberOfControlPoints() < 1:
        name = node.GetName() if node is not None else "The isocenter markups"
        raise CT2XError(f"{name} has no point: place one point at the isocenter, or clear the isocenter choice")
    position = [0.0, 0.0, 0.0]
    node.GetNthControlPointPositionWorld(0, position)
    return (float(position[0]), float(position[1]), float(position[2]))


#: Node attribute that Slicer's DICOM plugins set on a loaded volume: its instance UIDs.
DICOM_INSTANCE_UIDS = "DICOM.instanceUIDs"


def radiograph_file_of_node(node: slicer.vtkMRMLVolumeNode, database) -> Path:  # noqa: ANN001 (ctkDICOMDatabase)
    """The DICOM file a loaded volume came from, through Slicer's DICOM database (``slicer.dicomDatabase``)."""
    uids = (node.GetAttribute(DICOM_INSTANCE_UIDS) or "").split() if node is not None else []
    if not uids:
        name = node.GetName() if node is not None else "The volume"
        raise CT2XError(
            f"'{name}' was not loaded from DICOM: load the radiograph with the DICOM module, or choose its file"
        )
    path = database.fileForInstance(uids[0]) if database is not None else ""
    if not path or not Path(path).is_file():
        raise CT2XError(f"the DICOM file of '{node.GetName()}' is not in Slicer's DICOM database: choose its file")
    return Path(path)


def like_parameters(
    geometry: RadiographGeometry,
    isocenter_ras: tuple[float, float, float] | None = None,
    add_markups: bool = False,
) -> SynthesisParameters:
    """One view with a real radiograph's geometry (``ct2x.radiograph_geometry``): its angles,
    distances and detector (rows x columns of its pixel spacing)."""
    rows, columns = geometry.detector_shape
    height, width = geometry.detector_size_mm
    return SynthesisParameters(
        angles=((geometry.primary, geometry.secondary),),
        sdd=geometry.sdd,
        sid=geometry.sid,
        detector_pixels=columns,
        detector_width_mm=width,
        detector_rows=rows,
        detector_height_mm=height,
        isocenter_ras=isocenter_ras,
        add_markups=add_markups,
    )


def describe_geometry(geometry: RadiographGeometry) -> str:
    """One paragraph for the panel: the geometry read, then each missing tag and its default."""
    rows, columns = geometry.detector_shape
    height, width = geometry.detector_size_mm
    text = (
        f"{geometry.modality}: {view_name(geometry.primary, geometry.secondary)[5:]}, SDD {geometry.sdd:g} mm, "
        f"SID {geometry.sid:g} mm, detector {columns} x {rows} px, {width:.1f} x {height:.1f} mm."
    )
    return text + "".join(f"\n{note}." for note in geometry.notes)


# --------------------------------------------------------------- the scene
def _place_image(node: slicer.vtkMRMLScalarVolumeNode, image: np.ndarray, view: CArm, mode: str) -> None:
    """Store ``image`` (H, W) in ``node`` as a (1, H, W) float32 volume on the view's detector plane."""
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(image, dtype=np.float32)[np.newaxis])
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(image_ijk_to_ras(view)))
    for key, value in view_attributes(view, mode).items():
        node.SetAttribute(key, value)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()


def _put_in_folder(hierarchy: slicer.vtkMRMLSubjectHierarchyNode, node: slicer.vtkMRMLNode, folder: int) -> None:
    """Move ``node``'s subject-hierarchy item under ``folder``, creating the item if the scene
    has none yet (Slicer's subject-hierarchy logic creates one per node; plain MRML does not)."""
    item = hierarchy.GetItemByDataNode(node)
    if item == hierarchy.GetInvalidItemID():
        hierarchy.CreateItem(folder, node)
    else:
        hierarchy.SetItemParent(item, folder)


def stop_background_work(job: SynthesisJob | None, preview: PreviewWorker, timeout_s: float) -> bool:
    """Cancel the synthesis ``job`` (if any), hold the live ``preview`` and drop its result, then wait up to
    ``timeout_s`` for each thread to end what it renders; True when both have. The panel calls it when the
    scene closes (nothing rendered for the old scene is placed in the new one) and when the module is
    cleaned up; after a scene close it releases the preview again."""
    preview.hold()
    stopped = True
    if job is not None:
        job.cancel()
        stopped = job.wait(timeout_s)
    stopped = preview.wait_idle(timeout_s) and stopped
    preview.take_result()
    return stopped


def ct_key(ct_node: slicer.vtkMRMLScalarVolumeNode) -> tuple[str, int, int, int]:
    """What tells a changed CT: the node's ID and the modification times of the node, its voxels and its transform."""
    transform = ct_node.GetParentTransformNode()
    image = ct_node.GetImageData()
    return (
        ct_node.GetID(),
        ct_node.GetMTime(),
        image.GetMTime() if image is not None else 0,
        transform.GetMTime() if transform is not None else 0,
    )


def imaged_ct_key(ct_node: slicer.vtkMRMLScalarVolumeNode, remove_table: bool) -> tuple:
    """What tells a changed CT as it is imaged: :func:`ct_key` and whether its couch is made air."""
    return ct_key(ct_node), remove_table


def style_reference(node: slicer.vtkMRMLScalarVolumeNode) -> tuple[np.ndarray, str]:
    """A 2D volume's voxels as a style reference: a **copy** (an edit of the node during a synthesis
    cannot reach the worker) and the key that tells a changed node (:func:`style_reference_key`)."""
    return np.array(slicer.util.arrayFromVolume(node), copy=True), style_reference_key(node)


def style_reference_key(node: slicer.vtkMRMLScalarVolumeNode) -> str:
    """What tells a changed style volume, without copying it: its ID and its voxels' modification time."""
    image = node.GetImageData()
    return f"{node.GetID()}:{image.GetMTime() if image is not None else 0}"


@dataclass(frozen=True)
class SynthesisResult:
    """What :meth:`SynthesisLogic.synthesize` added to the scene."""

    volumes: list[slicer.vtkMRMLScalarVolumeNode]
    folder_item: int
    markups: slicer.vtkMRMLMarkupsFiducialNode | None


class SynthesisLogic:
    """Synthesize C-arm views of a CT volume node into the node's MRML scene.

    ``renderer`` is a :class:`Renderer` or any callable ``(CTVolume, list[CArm]) -> (V, H, W)``
    array; the default is :func:`physics_drr_renderer` (mode :data:`DRR_PHYSICS_MODE`).
    :meth:`choose_renderer` sets it from the panel's choice and keeps it, with its loaded model,
    while the choice and the model file are unchanged. The input CT node is only read.

    Synthesis in the background: :meth:`start_synthesis` (GUI thread: copies the CT, starts a
    :class:`~CT2XSynthesisLib.background.SynthesisJob`), then, once the job has finished,
    :meth:`finish_synthesis` (GUI thread: adds the finished views to the scene). :meth:`synthesize`
    does both in the caller's thread.
    """

    def __init__(self, renderer: Renderer | Callable | None = None, mode: str = DRR_PHYSICS_MODE) -> None:
        self.renderer = as_renderer(renderer) if renderer is not None else physics_drr_renderer()
        self.mode = mode
        #: The live preview's renderer and mode (:meth:`choose_preview_renderer`); None: the preview worker's own.
        self.preview_renderer: Renderer | None = None
        self.preview_mode: str | None = None
        self._ct_cache: tuple[tuple, ImagedCT] | None = None
        self._renderer_key: tuple | None = None
        self._preview_key: tuple | None = None

    def choose_renderer(self, choice: RendererChoice, style_array: StyleArray = None) -> Renderer:
        """Use the renderer of ``choice`` (:func:`build_renderer`); the current one is kept (with
        its loaded model, or its fit to a style reference) when the choice, the model file and the
        style file are unchanged."""
        key = (choice, _file_stamp(choice.model_path()), _file_stamp(choice.style_file or None))
        if key != self._renderer_key:
            self.renderer, self.mode = build_renderer(choice, style_array)
            self._renderer_key = key
        return self.renderer

    def choose_preview_renderer(self, choice: RendererChoice, style_array: StyleArray = None) -> Renderer:
        """Use, for the live preview, the renderer of ``choice`` at :data:`PREVIEW_STEP_VOXELS`: without a model,
        the synthesis's own (:meth:`choose_renderer`: the same imaging chain, seed and fit to the style
        reference, or the raw DRR) marching coarser rays; with a model (too slow to follow the sliders), the raw
        physics DRR. Kept while the choice is unchanged; :meth:`preview_request` hands it to the worker."""
        if choice.model_source != MODEL_NONE:
            _check_choice(choice)
            key = ("model", choice.device)
            if key != self._preview_key:
                self.preview_renderer = PhysicsDRRRenderer(choice.device, step=PREVIEW_STEP_VOXELS)
                self.preview_mode, self._preview_key = DRR_PHYSICS_MODE, key
            return self.preview_renderer
        renderer = self.choose_renderer(choice, style_array)
        if self._preview_key is None or self._preview_key[0] is not renderer:
            self.preview_renderer = renderer.at_step(PREVIEW_STEP_VOXELS)
            self.preview_mode, self._preview_key = self.mode, (renderer,)
        return self.preview_renderer

    def imaged_ct(self, ct_node: slicer.vtkMRMLScalarVolumeNode, remove_table: bool = False) -> ImagedCT:
        """The CT to image: :func:`ct_volume_from_node` (copied here, in the GUI thread: the scene is read only
        there), its couch to be made air in the worker's thread with ``remove_table`` (:class:`ImagedCT`); kept
        while :func:`ct_key` and ``remove_table`` are unchanged, so the couch is removed once for the preview and
        the syntheses."""
        if ct_node is None:
            raise CT2XError("select a CT volume as the input")
        key = imaged_ct_key(ct_node, remove_table)
        if self._ct_cache is None or self._ct_cache[0] != key:
            self._ct_cache = (key, ImagedCT(ct_volume_from_node(ct_node), remove_table))
        return self._ct_cache[1]

    def start_synthesis(
        self,
        ct_node: slicer.vtkMRMLScalarVolumeNode,
        parameters: SynthesisParameters,
        progress: ProgressCallback | None = None,
        background: bool = True,
        wait_before: Callable[[], object] | None = None,
    ) -> SynthesisJob:
        """Start rendering (GUI thread): returns at once with the running job (``background``),
        or after running it in this thread. The scene is not touched. The job reads only copies:
        the CT's voxels, frozen parameters, and the renderer's own style copy. ``wait_before`` runs
        first in the job's thread (the panel passes the live preview's ``wait_idle``)."""
        ct = self.imaged_ct(ct_node, parameters.remove_table)
        views = parameters.views(ct.placement)
        labels = [view_name(v.primary, v.secondary) for v in views]
        annotate = _view_annotations(self.renderer, ct)
        job = SynthesisJob(ct, views, self.renderer, labels, progress, wait_before, annotate=annotate)
        job.context.update(
            scene=ct_node.GetScene(),
            ct_id=ct_node.GetID(),
            ct_name=ct_node.GetName(),
            parameters=parameters,
            mode=self.mode,
        )
        if background:
            job.start()
        else:
            job.run()
        return job

    def finish_synthesis(self, job: SynthesisJob) -> SynthesisResult | None:
        """Add the job's finished views to the scene (GUI thread, once the job has finished), in a
        subject-hierarchy folder: all of them, or those finished before Cancel; none after an error
        (a CT2XError with its message). Returns None when no view was finished. The views go to the
        scene the CT was in when the job started, even if the CT has been removed since."""
        status = job.status()
        if not status.finished:
            raise CT2XError("the synthesis is still running: finish it only once it has ended")
        if status.error is not None:
            raise CT2XError(status.error)
        finished = job.finished_views()
        if not finished:
            return None
        scene, ct_id, ct_name, parameters, mode = (
            job.context[k] for k in ("scene", "ct_id", "ct_name", "parameters", "mode")
        )
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        folder = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), f"CT2X views of {ct_name}")
        hierarchy.SetItemAttribute(folder, ATTRIBUTE_PREFIX + "inputVolume", ct_id)
        hierarchy.SetItemAttribute(folder, ATTRIBUTE_PREFIX + "mode", mode)
        volumes = []
        for (view, image), fields in zip(finished, job.finished_annotations(), strict=True):
            node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", view_name(view.primary, view.secondary))
            _place_image(node, image, view, mode)
            node.SetAttribute(ATTRIBUTE_PREFIX + "inputVolume", ct_id)
            if parameters.remove_table:
                node.SetAttribute(ATTRIBUTE_PREFIX + "tableRemoved", TABLE_REMOVED)
            for key, value in fields.items():
                node.SetAttribute(ATTRIBUTE_PREFIX + key, value)
            _put_in_folder(hierarchy, node, folder)
            volumes.append(node)

        markups = None
        if parameters.add_markups:
            markups = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "CT2X C-arm")
            markups.AddControlPoint(list(lps_to_ras_point(finished[0][0].isocenter)), "isocenter")
            for view, _ in finished:
                markups.AddControlPoint(
                    list(lps_to_ras_point(view.source)), "source " + view_name(view.primary, view.secondary)[5:]
                )
            _put_in_folder(hierarchy, markups, folder)
        return SynthesisResult(volumes, folder, markups)

    def synthesize(
        self,
        ct_node: slicer.vtkMRMLScalarVolumeNode,
        parameters: SynthesisParameters,
        progress: ProgressCallback | None = None,
    ) -> SynthesisResult:
        """Render every view in this thread, then add them to the scene, grouped in a
        subject-hierarchy folder. All images are rendered before the first node is added, so a
        failure (a CT2XError with the renderer's message) leaves the scene as it was."""
        job = self.start_synthesis(ct_node, parameters, progress, background=False)
        if progress is not None and job.status().error is None:
            progress(len(job.views), len(job.views), "Placing the views in the scene")
        return self.finish_synthesis(job)

    def preview_request(
        self,
        ct_node: slicer.vtkMRMLScalarVolumeNode,
        parameters: SynthesisParameters,
        preview_pixels: int = 128,
    ) -> PreviewRequest:
        """The live preview of the first view of ``parameters`` (GUI thread; cheap once the CT is cached).

        The preview keeps the physical detector (same size in mm) with at most ``preview_pixels``
        a side. Render it with a :class:`~CT2XSynthesisLib.preview.PreviewWorker`, then place the
        result with :func:`place_preview`.
        """
        rows = parameters.detector_rows or parameters.detector_pixels
        scale = min(1.0, preview_pixels / max(rows, parameters.detector_pixels))
        coarse = replace(
            parameters,
            angles=parameters.angles[:1],
            detector_pixels=max(1, round(parameters.detector_pixels * scale)),
            detector_rows=max(1, round(rows * scale)) if parameters.detector_rows else None,
        )
        ct = self.imaged_ct(ct_node, parameters.remove_table)
        view = coarse.views(ct.placement)[0]
        label = view_name(view.primary, view.secondary)
        key = imaged_ct_key(ct_node, parameters.remove_table)
        return PreviewRequest(key, ct, view, label, self.preview_renderer, self.preview_mode)


def _view_annotations(renderer: Renderer, ct: ImagedCT) -> Callable[[int, CArm], dict[str, str]]:
    """What the synthesis job records per finished view (in its thread, of the CT it imaged): the fraction of the
    view's pixels whose rays cross the whole CT (``coverageFraction``, :func:`coverage_fraction`) and what made
    the view (:meth:`Renderer.view_attributes`; a plain callable renderer records nothing)."""
    describe = getattr(renderer, "view_attributes", None)

    def annotate(index: int, view: CArm) -> dict[str, str]:
        volume = ct.volume()
        fields = {"coverageFraction": f"{coverage_fraction(volume, view):.6g}"}
        return fields | (describe(volume, view, index) if describe is not None else {})

    return annotate


def coverage_fraction(ct: CTVolume, view: CArm) -> float:
    """The fraction of ``view``'s pixels whose rays cross the whole CT, without leaving through its first or
    last slice (``ct2x.drr.coverage``; ``ct2x drr`` writes it as ``ct2x_coverage_fraction``)."""
    from ct2x.drr import coverage

    return float(coverage(ct, [view]).float().mean())


def place_preview(scene: slicer.vtkMRMLScene, result: PreviewResult, mode: str | None = None):  # noqa: ANN201
    """Put a finished preview in the scene's node named :data:`PREVIEW_NODE_NAME` (reused, else added)
    on its detector plane; a failed one raises its CT2XError. ``mode``: the ``CT2X.mode`` attribute (default:
    the request's, else :data:`DRR_PHYSICS_MODE`). Returns the node."""
    if result.error is not None:
        raise CT2XError(result.error)
    node = scene.GetFirstNodeByName(PREVIEW_NODE_NAME)
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode"):
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", PREVIEW_NODE_NAME)
    _place_image(node, result.image, result.request.view, mode or result.request.mode or DRR_PHYSICS_MODE)
    return node

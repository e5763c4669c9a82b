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
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import slicer
import vtk

from ct2x.errors import CT2XError
from ct2x.geometry import (
    DEFAULT_DETECTOR_PIXELS,
    DEFAULT_DETECTOR_WIDTH_MM,
    DEFAULT_SDD_MM,
    DEFAULT_SID_MM,
    CArm,
)
from ct2x.volume import CTVolume

#: LPS <-> RAS: negate the first two axes (the same matrix both ways).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: A renderer takes a CT (LPS) and views and returns one image per view, shape (V, H, W).
Renderer = Callable[[CTVolume, list[CArm]], np.ndarray]

#: Called as ``progress(done, total, text)`` while views are rendered.
ProgressCallback = Callable[[int, int, str], None]

#: Label of the physics renderer: DeepDRR-physics DRRs, not the GAN.
DRR_PHYSICS_MODE = "DRR (physics)"

#: Label of the learned renderer: CT2X-GAN synthesis with a trained model.
LEARNED_MODE = "CT2X-GAN"

#: Prefix of the node attributes that store a view's geometry.
ATTRIBUTE_PREFIX = "CT2X."

PREVIEW_NODE_NAME = "CT2X preview"

#: Name prefix of the reference style codes stored in a model file (``ct2x.checkpoint.STYLE_CODE_PREFIX``;
#: repeated here so that listing a model's styles needs neither torch nor safetensors).
STYLE_CODE_PREFIX = "style_code."


# ---------------------------------------------------------------- parameters
@dataclass(frozen=True)
class SynthesisParameters:
    """The imaging chain shared by all views.

    Attributes:
        angles: ``(primary, secondary)`` pairs in degrees, one per view.
        sdd: source-to-detector distance, mm.
        sid: source-to-isocenter distance, mm.
        detector_pixels: the detector is square, this many pixels a side.
        detector_width_mm: physical width (= height) of the detector, mm.
        isocenter_ras: the point the C-arm turns about, RAS mm; ``None`` = centre of the
            CT's bounding box (DESIGN.md default).
        add_markups: also add a fiducial markups node with the sources and the isocenter.
    """

    angles: tuple[tuple[float, float], ...]
    sdd: float = DEFAULT_SDD_MM
    sid: float = DEFAULT_SID_MM
    detector_pixels: int = DEFAULT_DETECTOR_PIXELS
    detector_width_mm: float = DEFAULT_DETECTOR_WIDTH_MM
    isocenter_ras: tuple[float, float, float] | None = None
    add_markups: bool = False

    def views(self, ct: CTVolume) -> list[CArm]:
        """One :class:`CArm` per angle pair, in LPS, around the isocenter (default: CT centre)."""
        if not self.angles:
            raise CT2XError("give at least one view angle")
        pixels = int(self.detector_pixels)
        if pixels < 1 or pixels != self.detector_pixels:
            raise CT2XError(f"the detector size must be a whole number of pixels, got {self.detector_pixels!r}")
        if not (math.isfinite(self.detector_width_mm) and self.detector_width_mm > 0):
            raise CT2XError(f"the detector width must be a positive length in mm, got {self.detector_width_mm!r}")
        if self.isocenter_ras is None:
            isocenter = tuple(float(c) for c in ct.center_lps)
        else:
            isocenter = tuple(float(c) for c in (LPS_TO_RAS[:3, :3] @ np.asarray(self.isocenter_ras, dtype=float)))
        spacing = self.detector_width_mm / pixels
        return [
            CArm(
                primary=p,
                secondary=s,
                sdd=self.sdd,
                sid=self.sid,
                detector_shape=(pixels, pixels),
                pixel_spacing=(spacing, spacing),
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

    The voxels are copied to float32, so nothing done to the result reaches the node.
    """
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode") or node.GetImageData() is None:
        raise CT2XError("select a CT volume (a scalar volume with image data) as the input")
    voxels = slicer.util.arrayFromVolume(node)
    if voxels.ndim != 3 or min(voxels.shape) < 2:
        raise CT2XError(
            f"the input '{node.GetName()}' is not a 3D CT volume (its voxel grid is {voxels.shape[::-1]}): "
            "select a CT with at least 2 voxels along each axis"
        )
    ijk_to_lps = LPS_TO_RAS @ node_ijk_to_world_ras(node)
    linear = ijk_to_lps[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    return CTVolume(
        array=np.array(voxels, dtype=np.float32, copy=True),
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
def physics_drr_renderer(device: str = "cpu", **drr_options: object) -> Renderer:
    """The "DRR (physics)" renderer: ``ct2x.drr.render_drr`` with DeepDRR's physics.

    These are digitally reconstructed radiographs, not the learned CT2X-GAN synthesis;
    ``drr_options`` go to ``render_drr`` (``step``, ``spectrum``, ``photons``,
    ``seed``). ``ct2x.drr`` (and torch) are imported when the renderer first runs.
    """

    def render(ct: CTVolume, views: list[CArm]) -> np.ndarray:
        from ct2x.drr import render_drr

        images = render_drr(ct, views, device=device, **drr_options)
        return images.detach().cpu().numpy()

    return render


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


def learned_renderer(
    model_path: str | Path | None = None,
    style: str | Path | np.ndarray | None = None,
    device: str = "cpu",
    model_style: str | None = None,
) -> Renderer:
    """The learned CT2X-GAN synthesis (``ct2x.synthesize``), mode :data:`LEARNED_MODE`.

    ``model_path``: a trained model (``.safetensors`` with its card); ``None`` = the bundled
    model. The style reference is one of: ``style``, a radiograph (a file, or an array such as a
    2D volume's voxels); ``model_style``, the name of a style stored with the model (see
    :func:`stored_style_names`; as ``ct2x synthesize --model-style``); neither = the DRR style.
    The model makes ``S x S`` images (its ``image_size``) over the requested physical detector;
    they are resized (bilinear) to the detector's pixel count, so they lie exactly where the
    view's detector is. The model (and a stored style) is loaded on first use: a name the model
    does not store raises ``ValueError`` then, naming the stored ones.
    """
    if style is not None and model_style is not None:
        raise ValueError("give one style reference: a radiograph or a style stored with the model, not both")
    loaded: list = []

    def render(ct: CTVolume, views: list[CArm]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        from ct2x.checkpoint import load_model, load_style_codes
        from ct2x.samples import bundled_model
        from ct2x.synthesize import synthesize

        if not loaded:
            path = Path(model_path) if model_path is not None else bundled_model()
            model = load_model(path, device)[0]
            code = None
            if model_style is not None:
                codes = load_style_codes(path)
                if model_style not in codes:
                    stored = ", ".join(sorted(codes)) if codes else "none"
                    raise ValueError(
                        f"the model {path.name} stores no style named {model_style!r} (stored styles: {stored})"
                    )
                code = codes[model_style]
            loaded.append((model, code))
        model, code = loaded[0]
        size = model.config.image_size
        at_model_size = [
            replace(v, detector_shape=(size, size), pixel_spacing=tuple(mm / size for mm in v.detector_size_mm))
            for v in views
        ]
        results = synthesize(
            model, ct, at_model_size, style=style, style_code=code, drr_style=style is None and code is None
        )
        images = torch.from_numpy(np.stack([r.image for r in results]))[:, None]
        resized = F.interpolate(images, size=views[0].detector_shape, mode="bilinear", align_corners=False)
        return resized[:, 0].numpy()

    return render


def render_views(
    ct: CTVolume,
    views: Sequence[CArm],
    renderer: Renderer,
    progress: ProgressCallback | None = None,
) -> list[np.ndarray]:
    """Render each view separately (so ``progress`` can report each), as float32 (H, W) images."""
    images = []
    for index, view in enumerate(views):
        label = view_name(view.primary, view.secondary)
        if progress is not None:
            progress(index, len(views), f"Rendering {label} ({index + 1} of {len(views)})")
        result = np.asarray(renderer(ct, [view]), dtype=np.float32)
        if result.shape != (1, *view.detector_shape):
            raise CT2XError(
                f"the renderer returned an image of shape {result.shape} for {label}, "
                f"expected (1, {view.detector_shape[0]}, {view.detector_shape[1]})"
            )
        images.append(result[0])
    if progress is not None:
        progress(len(views), len(views), "Placing the views in the scene")
    return images


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


@dataclass(frozen=True)
class SynthesisResult:
    """What :meth:`SynthesisLogic.synthesize` added to the scene."""

    volumes: list[slicer.vtkMRMLScalarVolumeNode]
    folder_item: int
    markups: slicer.vtkMRMLMarkupsFiducialNode | None


class SynthesisLogic:
    """Synthesize C-arm views of a CT volume node into the node's MRML scene.

    ``renderer`` is any callable ``(CTVolume, list[CArm]) -> (V, H, W)`` array; the default
    is :func:`physics_drr_renderer` (mode :data:`DRR_PHYSICS_MODE`). The input CT node is
    only read, never modified.
    """

    def __init__(self, renderer: Renderer | None = None, mode: str = DRR_PHYSICS_MODE) -> None:
        self.renderer = renderer if renderer is not None else physics_drr_renderer()
        self.mode = mode
        self._ct_cache: tuple[tuple[str, int, int, int], CTVolume] | None = None

    def ct_volume(self, ct_node: slicer.vtkMRMLScalarVolumeNode) -> CTVolume:
        """:func:`ct_volume_from_node`, cached while the node, its voxels and its transform are unchanged."""
        if ct_node is None:
            raise CT2XError("select a CT volume as the input")
        transform = ct_node.GetParentTransformNode()
        image = ct_node.GetImageData()
        key = (
            ct_node.GetID(),
            ct_node.GetMTime(),
            image.GetMTime() if image is not None else 0,
            transform.GetMTime() if transform is not None else 0,
        )
        if self._ct_cache is None or self._ct_cache[0] != key:
            self._ct_cache = (key, ct_volume_from_node(ct_node))
        return self._ct_cache[1]

    def synthesize(
        self,
        ct_node: slicer.vtkMRMLScalarVolumeNode,
        parameters: SynthesisParameters,
        progress: ProgressCallback | None = None,
    ) -> SynthesisResult:
        """Render every view and add it to the scene, grouped in a subject-hierarchy folder.

        All images are rendered before the first node is added, so a failure leaves the
        scene as it was.
        """
        ct = self.ct_volume(ct_node)
        views = parameters.views(ct)
        images = render_views(ct, views, self.renderer, progress)

        scene = ct_node.GetScene()
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        folder = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), f"CT2X views of {ct_node.GetName()}")
        hierarchy.SetItemAttribute(folder, ATTRIBUTE_PREFIX + "inputVolume", ct_node.GetID())
        hierarchy.SetItemAttribute(folder, ATTRIBUTE_PREFIX + "mode", self.mode)
        volumes = []
        for view, image in zip(views, images, strict=True):
            node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", view_name(view.primary, view.secondary))
            _place_image(node, image, view, self.mode)
            node.SetAttribute(ATTRIBUTE_PREFIX + "inputVolume", ct_node.GetID())
            _put_in_folder(hierarchy, node, folder)
            volumes.append(node)

        markups = None
        if parameters.add_markups:
            markups = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "CT2X C-arm")
            markups.AddControlPoint(list(lps_to_ras_point(views[0].isocenter)), "isocenter")
            for view in views:
                markups.AddControlPoint(
                    list(lps_to_ras_point(view.source)), "source " + view_name(view.primary, view.secondary)[5:]
                )
            _put_in_folder(hierarchy, markups, folder)
        return SynthesisResult(volumes, folder, markups)

    def update_preview(
        self,
        ct_node: slicer.vtkMRMLScalarVolumeNode,
        parameters: SynthesisParameters,
        preview_pixels: int = 128,
        renderer: Renderer | None = None,
    ) -> slicer.vtkMRMLScalarVolumeNode:
        """Render the first view of ``parameters`` at a coarse resolution into the preview node.

        The preview keeps the physical detector (same width in mm) with ``preview_pixels``
        a side, and reuses the scene's node named :data:`PREVIEW_NODE_NAME` if present.
        ``renderer`` (default: this logic's) lets a faster, coarser renderer share the cached CT.
        """
        coarse = replace(
            parameters,
            angles=parameters.angles[:1],
            detector_pixels=min(preview_pixels, parameters.detector_pixels),
        )
        ct = self.ct_volume(ct_node)
        view = coarse.views(ct)[0]
        image = render_views(ct, [view], renderer if renderer is not None else self.renderer)[0]
        scene = ct_node.GetScene()
        node = scene.GetFirstNodeByName(PREVIEW_NODE_NAME)
        if node is None or not node.IsA("vtkMRMLScalarVolumeNode"):
            node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", PREVIEW_NODE_NAME)
        _place_image(node, image, view, self.mode)
        return node

"""Every synthesized view on screen: slice views side by side, textured detector planes in 3D.

GUI-free: this file imports ``slicer`` (the MRML library), ``vtk``, ``numpy``, the standard library,
``ct2x.errors`` and ``CT2XSynthesisLib.logic`` only (no ``qt``, no ``slicer.app``), so it runs in Slicer
and in plain Python with PyPI's ``slicer-core``. Problems are raised as ``CT2XError`` (the GUI's
``tryWithErrorDisplay`` shows them).

What :func:`show_views` puts in the scene for the views of one *Synthesize* (single-slice
``vtkMRMLScalarVolumeNode`` s placed on their detector planes by ``CT2XSynthesisLib.logic``):

* one slice view per view, named ``CT2X1`` .. ``CT2XN`` (a ``vtkMRMLSliceNode`` and its
  ``vtkMRMLSliceCompositeNode``, matched by layout name as Slicer matches them), its SliceToRAS
  from :func:`slice_to_ras_for_view`: the image upright, unflipped, centred, read as a radiologist
  reads it; its background layer the view, with volume propagation off so that loading or
  selecting another volume does not replace the X-ray;
* a layout (:data:`VIEWS_LAYOUT_ID`, :func:`views_layout_xml`) with the 3D view on the left and
  the slice views in a grid on the right, registered on the scene's ``vtkMRMLLayoutNode`` and
  made current; the layout manager of the application builds the widgets from it;
* in the 3D view, each image as a textured plane model of exactly its detector, at its
  detector's place (:func:`add_detector_model`, as SlicerRT's DRR module shows its image), also
  for the views beyond the grid; the CT2X slice views are not "visible in 3D" (a slice view's own
  plane covers its whole field of view and moves when the 2D view is panned or zoomed), so each
  view has exactly one plane in 3D. Detector models of views not shown are hidden; a model is
  removed from the scene with its view (:func:`add_detector_model`);
* a window/level that fits an X-ray (:func:`xray_window`: the image's 1st-99th percentiles), grey.

Radiological convention: ``ct2x.geometry`` stores every image as a radiologist reads it (column
``i`` = image right, row ``j`` = image down; in the AP view, primary = secondary = 0, image right
is the patient's left), so showing column ``i`` toward screen right and row ``j`` toward screen
down already puts the patient's right on the screen's left: no flip is needed, and none is made
(``Testing/test_slicer_display.py`` checks it on the nodes' geometry).

Slicer sources read (tag v5.10.0) are cited where they decide what is done here.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import slicer
import vtk
from vtk.util.numpy_support import vtk_to_numpy

from ct2x.errors import CT2XError
from CT2XSynthesisLib.logic import node_ijk_to_world_ras

#: Id of the CT2X views layout. Slicer's own layouts are below 100 (vtkMRMLLayoutNode.h,
#: ``SlicerLayoutUserView = 100``); the script repository (Docs/developer_guide/script_repository/
#: gui.md, "Customize view layout") says to choose any large number for a custom layout.
VIEWS_LAYOUT_ID = 8501

#: Layout names of the views' slice nodes: ``CT2X1``, ``CT2X2``, ...
SLICE_VIEW_PREFIX = "CT2X"

#: Most slice views the layout holds (a 3 x 3 grid); further views are shown in 3D only.
MAX_LAYOUT_VIEWS = 9

#: Layout colour of the CT2X slice views (the bar above each view).
VIEW_COLOR = "#8C8C8C"

#: Name of the slice-orientation preset that each CT2X slice node gets for its view, made its
#: default orientation, so that Slicer's "reset orientation" returns to the detector's plane.
DETECTOR_ORIENTATION = "Detector"

#: Window/level of an X-ray: from these percentiles of the image's values.
WINDOW_PERCENTILES = (1.0, 99.0)

#: Node reference from a view volume to its textured detector model (:func:`add_detector_model`).
DETECTOR_MODEL_REFERENCE = "CT2X.detectorModel"

#: Attribute of a detector model: the ID of the view volume it shows.
DETECTOR_OF_ATTRIBUTE = "CT2X.detectorOf"

_SLICE_VIEW_NAME = re.compile(rf"^{SLICE_VIEW_PREFIX}(\d+)$")

#: Observer tags on each view volume whose detector model's texture follows it, by the volume's
#: VTK address (``__this__``): one set per volume however often it is shown, removed when the
#: volume leaves its scene (:func:`_on_node_removed`); the entry goes when the volume is deleted.
_FOLLOWED_VIEWS: dict[str, list[int]] = {}

#: Observer tags on each scene that removes detector models with their views, by the scene's VTK
#: address; the entry goes when the scene is deleted.
_WATCHED_SCENES: dict[str, list[int]] = {}


# ---------------------------------------------------------------- layout
def slice_view_names(count: int) -> list[str]:
    """Layout names of the first ``count`` CT2X slice views: ``["CT2X1", ..., "CT2X<count>"]``."""
    return [f"{SLICE_VIEW_PREFIX}{index + 1}" for index in range(int(count))]


def layout_grid(count: int) -> tuple[int, int]:
    """``(rows, columns)`` of the grid of ``count`` slice views: as square as possible, rows filled first."""
    if count < 1:
        raise CT2XError(f"a layout needs at least one slice view, got {count}")
    columns = math.ceil(math.sqrt(count))
    return math.ceil(count / columns), columns


def views_layout_xml(slice_view_names: Sequence[str], columns: int | None = None) -> str:
    """A Slicer layout description: the 3D view on the left, the slice views in a grid on the right.

    The format is the one of ``vtkMRMLLayoutNode`` layouts (Libs/MRML/Logic/vtkMRMLLayoutLogic.cxx,
    e.g. ``threeByThreeSliceView``; Docs/developer_guide/advanced_topics.md, "View layout
    definition"): nested ``horizontal``/``vertical`` layouts of items, each item a ``view`` of a
    view-node class with the view's layout name as ``singletontag``. The 3D view is the main one
    (``singletontag="1"``). Grid rows are filled left to right; a last, shorter row stretches.

    The properties are ``action="default"`` ones: vtkMRMLLayoutLogic::CreateMissingViews applies
    them only to view nodes that the layout itself creates, never to the nodes
    :func:`show_views` made, and there is no ``orientation`` property, so that laying out never
    turns a CT2X slice view away from its detector plane.
    """
    names = [str(name) for name in slice_view_names]
    if not names:
        raise CT2XError("a CT2X views layout needs at least one slice view name")
    if len(set(names)) != len(names) or not all(name.strip() for name in names):
        raise CT2XError(f"the slice view names must be distinct and non-empty, got {names}")
    if columns is None:
        _, columns = layout_grid(len(names))
    columns = max(1, min(int(columns), len(names)))
    rows = [names[start : start + columns] for start in range(0, len(names), columns)]

    def slice_view(name: str, indent: str) -> str:
        label = name[len(SLICE_VIEW_PREFIX) :] if _SLICE_VIEW_NAME.match(name) else name
        return (
            f'{indent}<view class="vtkMRMLSliceNode" singletontag={quoteattr(name)}>\n'
            f'{indent} <property name="viewlabel" action="default">{escape(label)}</property>\n'
            f'{indent} <property name="viewcolor" action="default">{VIEW_COLOR}</property>\n'
            f"{indent}</view>\n"
        )

    lines = [
        '<layout type="horizontal" split="true">\n',
        ' <item splitSize="500">\n',
        '  <view class="vtkMRMLViewNode" singletontag="1">\n',
        '   <property name="viewlabel" action="default">1</property>\n',
        "  </view>\n",
        " </item>\n",
        ' <item splitSize="500">\n',
        '  <layout type="vertical">\n',
    ]
    for row in rows:
        lines.append("   <item>\n")
        lines.append('    <layout type="horizontal">\n')
        for name in row:
            lines.append("     <item>\n")
            lines.append(slice_view(name, "      "))
            lines.append("     </item>\n")
        lines.append("    </layout>\n")
        lines.append("   </item>\n")
    lines += ["  </layout>\n", " </item>\n", "</layout>\n"]
    return "".join(lines)


def set_views_layout(
    layout_node: slicer.vtkMRMLLayoutNode,
    slice_view_names: Sequence[str],
    layout_id: int = VIEWS_LAYOUT_ID,
    activate: bool = True,
) -> str:
    """Register (or update) the CT2X layout on ``layout_node`` and, if ``activate``, make it current.

    Does what the script repository's "Customize view layout" does through the layout manager
    (``layoutLogic().GetLayoutNode().AddLayoutDescription(id, xml)``, ``setLayout(id)``), on the
    layout node itself: ``AddLayoutDescription`` for a new id, ``SetLayoutDescription`` for a
    known one (vtkMRMLLayoutNode.cxx: it refuses to add an id twice, and updates the current
    layout when the changed id is the current one), then ``RemoveAllMaximizedViewNodes`` and
    ``SetViewArrangement`` as qMRMLLayoutManager::setLayout does. In Slicer the layout manager
    observes the node and builds the views. Returns the layout description.
    """
    description = views_layout_xml(slice_view_names)
    if layout_node.IsLayoutDescription(layout_id):
        layout_node.SetLayoutDescription(layout_id, description)
    else:
        layout_node.AddLayoutDescription(layout_id, description)
    if activate:
        layout_node.RemoveAllMaximizedViewNodes()
        layout_node.SetViewArrangement(layout_id)
    return description


def scene_layout_node(scene: slicer.vtkMRMLScene) -> slicer.vtkMRMLLayoutNode | None:
    """The scene's layout node (singleton tag ``vtkMRMLLayoutNode``, as vtkMRMLLayoutLogic makes it), or None."""
    node = scene.GetSingletonNode("vtkMRMLLayoutNode", "vtkMRMLLayoutNode")
    if node is None:
        node = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    return node


# ---------------------------------------------------------------- geometry
def _image_dimensions(volume_node: slicer.vtkMRMLVolumeNode) -> tuple[int, int, int]:
    image = volume_node.GetImageData() if volume_node is not None else None
    if image is None:
        name = volume_node.GetName() if volume_node is not None else "The view"
        raise CT2XError(f"'{name}' has no image: show only synthesized views")
    dims = tuple(int(n) for n in image.GetDimensions())
    if dims[2] != 1:
        raise CT2XError(f"'{volume_node.GetName()}' is not a single-slice X-ray view (its grid is {dims})")
    return dims


def slice_to_ras_for_view(volume_node: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    """The SliceToRAS (4x4, world RAS mm) that shows a view's image as it lies on its detector.

    Slice x (screen right) = the image's column direction (image right), slice y (screen up) =
    minus its row direction (image up), slice z = the detector normal toward the X-ray source
    (the volume's k axis, ``CT2XSynthesisLib.logic.image_ijk_to_ras``); origin = the image centre,
    pixel ``((W - 1) / 2, (H - 1) / 2)``, on the detector plane.

    vtkMRMLSliceNode::UpdateMatrices (Libs/MRML/Core/vtkMRMLSliceNode.cxx) maps slice-view pixel
    (x right, y up) through XYToSlice (centred on the field of view) and SliceToRAS, so this
    matrix puts column i to the right and row j downward on screen: the image is neither mirrored
    nor upside down. Because ``ct2x.geometry`` images are seen from the detector side (its camera
    frame is left-handed), this SliceToRAS has determinant -1, like Slicer's own Axial preset
    (vtkMRMLSliceNode::GetAxialSliceToRASMatrix: x = L, y = A, z = S); Slicer's slice pipeline and
    vtkMRMLSliceNode::RotateToAxes keep such a left-handed frame as it is.
    """
    width, height, _ = _image_dimensions(volume_node)
    ijk_to_world = node_ijk_to_world_ras(volume_node)
    column, row, normal = (ijk_to_world[:3, axis] for axis in range(3))
    lengths = [float(np.linalg.norm(v)) for v in (column, row, normal)]
    if min(lengths) <= 0:
        raise CT2XError(f"the view '{volume_node.GetName()}' has a degenerate IJKToRAS")
    x_axis, down = column / lengths[0], row / lengths[1]
    if abs(float(np.dot(x_axis, down))) > 1e-6:
        raise CT2XError(f"the view '{volume_node.GetName()}' has sheared image axes: it cannot be shown unsheared")
    y_axis = -down
    z_axis = np.cross(x_axis, y_axis)
    if float(np.dot(z_axis, normal)) < 0:  # toward the source, whichever the handedness of the image
        z_axis = -z_axis
    center = ijk_to_world @ np.array([(width - 1) / 2.0, (height - 1) / 2.0, 0.0, 1.0])
    slice_to_ras = np.eye(4)
    slice_to_ras[:3, 0], slice_to_ras[:3, 1], slice_to_ras[:3, 2] = x_axis, y_axis, z_axis
    slice_to_ras[:3, 3] = center[:3]
    return slice_to_ras


def detector_size_mm(volume_node: slicer.vtkMRMLVolumeNode) -> tuple[float, float]:
    """``(width, height)`` of the view's image in mm: columns x column spacing, rows x row spacing."""
    width, height, _ = _image_dimensions(volume_node)
    ijk_to_world = node_ijk_to_world_ras(volume_node)
    return (
        width * float(np.linalg.norm(ijk_to_world[:3, 0])),
        height * float(np.linalg.norm(ijk_to_world[:3, 1])),
    )


def fit_field_of_view(slice_node: slicer.vtkMRMLSliceNode, width_mm: float, height_mm: float) -> None:
    """Field of view that shows a ``width_mm`` x ``height_mm`` image whole, with square screen pixels.

    Same rule as vtkMRMLSliceLogic::FitSliceToVolumes (Libs/MRML/Logic/vtkMRMLSliceLogic.cxx): the
    image fills the view's limiting dimension and the other follows the view's aspect, from the
    node's current pixel ``Dimensions`` (256 x 256 until a slice widget resizes it; then
    vtkMRMLSliceLogic::ResizeSliceNode keeps the field-of-view height, so the GUI fits again once
    the widgets have their size: ``sliceLogic().FitSliceToAll()``).
    """
    columns, rows, _ = slice_node.GetDimensions()
    columns, rows = max(int(columns), 1), max(int(rows), 1)
    pixel = max(width_mm / columns, height_mm / rows)
    slice_node.SetFieldOfView(pixel * columns, pixel * rows, slice_node.GetFieldOfView()[2])


# ---------------------------------------------------------------- window/level
def xray_window(image: np.ndarray, percentiles: tuple[float, float] = WINDOW_PERCENTILES) -> tuple[float, float]:
    """``(low, high)`` display range of an X-ray: the given percentiles of its finite values.

    A flat image gets a unit-wide range around its value, so that the window is never zero.
    """
    values = np.asarray(image, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(values, percentiles))
    if not high > low:
        low, high = float(values.min()), float(values.max())
    if not high > low:
        low, high = low - 0.5, low + 0.5
    return low, high


def set_xray_window_level(
    volume_node: slicer.vtkMRMLScalarVolumeNode, percentiles: tuple[float, float] = WINDOW_PERCENTILES
) -> tuple[float, float]:
    """Give a view a fixed grey window/level from :func:`xray_window` (auto window/level off); returns the range."""
    volume_node.CreateDefaultDisplayNodes()
    display = volume_node.GetScalarVolumeDisplayNode()
    low, high = xray_window(slicer.util.arrayFromVolume(volume_node), percentiles)
    was_modifying = display.StartModify()
    display.SetDefaultColorMap()  # vtkMRMLColorTableNodeGrey (vtkMRMLScalarVolumeDisplayNode.cxx)
    display.SetAutoWindowLevel(0)
    display.SetWindowLevelMinMax(low, high)
    display.EndModify(was_modifying)
    return low, high


# ---------------------------------------------------------------- slice views
def slice_view_nodes(
    scene: slicer.vtkMRMLScene, layout_name: str
) -> tuple[slicer.vtkMRMLSliceNode, slicer.vtkMRMLSliceCompositeNode]:
    """The slice node and slice composite node of a slice view, created if the scene lacks them.

    As Slicer makes them: vtkMRMLSliceLogic::AddSliceNode creates the slice node by class, names
    it with its layout name and sets ``SetLayoutName`` (= ``SetSingletonTag``,
    vtkMRMLAbstractViewNode.h); vtkMRMLLayoutLogic::GetViewsFromAttributes finds a layout's view by
    class and singleton tag, so the layout uses these nodes instead of making new ones; and
    vtkMRMLSliceLogic::UpdateSliceCompositeNode finds the composite node by the same layout name.
    In Slicer, adding the slice node makes the layout manager create its slice widget and slice
    logic at once (qMRMLLayoutManager onNodeAddedEvent, qMRMLLayoutViewFactory::onViewNodeAdded).
    """
    slice_node = scene.GetSingletonNode(layout_name, "vtkMRMLSliceNode")
    if slice_node is None:
        slice_node = scene.CreateNodeByClass("vtkMRMLSliceNode")  # the scene's default slice node, with its presets
        slice_node.UnRegister(None)  # Python owns it (Applications/SlicerApp/Testing/Python/MRMLCreateNodeByClass...)
        slice_node.SetName(layout_name)
        slice_node.SetLayoutName(layout_name)
        match = _SLICE_VIEW_NAME.match(layout_name)
        slice_node.SetLayoutLabel(match.group(1) if match else layout_name)
        slice_node.SetLayoutColor(*(int(VIEW_COLOR[i : i + 2], 16) / 255.0 for i in (1, 3, 5)))
        slice_node = scene.AddNode(slice_node)
    composite = scene.GetSingletonNode(layout_name, "vtkMRMLSliceCompositeNode")
    if composite is None:
        composite = scene.CreateNodeByClass("vtkMRMLSliceCompositeNode")
        composite.UnRegister(None)
        composite.SetLayoutName(layout_name)
        composite = scene.AddNode(composite)
    return slice_node, composite


def show_view_in_slice(
    slice_node: slicer.vtkMRMLSliceNode,
    composite_node: slicer.vtkMRMLSliceCompositeNode,
    volume_node: slicer.vtkMRMLScalarVolumeNode,
) -> None:
    """Show one view in one slice view: background layer, detector orientation, centre, field of view.

    The orientation is also stored as the node's :data:`DETECTOR_ORIENTATION` preset and default
    orientation, so that vtkMRMLSliceNode::SetOrientationToDefault (called by Slicer's "reset
    views", vtkMRMLApplicationLogic::FitSliceToAll) comes back to it. Volume propagation is
    turned off for the view (vtkMRMLApplicationLogic::PropagateVolumeSelection skips composite
    nodes with ``DoPropagateVolumeSelection`` off), so that showing another volume in "all slice
    views" leaves the X-ray in place.

    The slice view is not "visible in 3D" (``SliceVisible`` 0): its plane in 3D
    (vtkMRMLSliceLogic::CreateSliceModel, corners at XYToRAS of the view's corners,
    ProcessMRMLLogicsEvents) would cover the view's whole field of view and follow its panning and
    zooming; the view is shown in 3D by its detector model (:func:`add_detector_model`) instead.
    """
    slice_to_ras = slice_to_ras_for_view(volume_node)
    orientation = vtk.vtkMatrix3x3()
    for r in range(3):
        for c in range(3):
            orientation.SetElement(r, c, float(slice_to_ras[r, c]))
    width_mm, height_mm = detector_size_mm(volume_node)

    was_modifying = slice_node.StartModify()
    slice_node.AddSliceOrientationPreset(DETECTOR_ORIENTATION, orientation)  # adds or updates
    slice_node.SetDefaultOrientation(DETECTOR_ORIENTATION)
    slice_node.GetSliceToRAS().DeepCopy(slicer.util.vtkMatrixFromArray(slice_to_ras))
    slice_node.SetSliceOrigin(0.0, 0.0, 0.0)
    fit_field_of_view(slice_node, width_mm, height_mm)
    slice_node.SetSliceVisible(0)
    slice_node.UpdateMatrices()
    slice_node.EndModify(was_modifying)

    was_modifying = composite_node.StartModify()
    composite_node.SetDoPropagateVolumeSelection(False)
    composite_node.SetBackgroundVolumeID(volume_node.GetID())
    composite_node.SetForegroundVolumeID(None)
    composite_node.SetLabelVolumeID(None)
    composite_node.EndModify(was_modifying)


# ---------------------------------------------------------------- detector models
def _detector_corners(volume_node: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    """(3, 3) RAS (in the volume's own frame, before its parent transform) of the image's outer
    corners: pixel (-0.5, -0.5), (W - 0.5, -0.5) and (-0.5, H - 0.5), i.e. the top-left corner, the
    top-right and the bottom-left as displayed."""
    width, height, _ = _image_dimensions(volume_node)
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = slicer.util.arrayFromVTKMatrix(matrix)
    corners = np.array([[-0.5, -0.5, 0.0, 1.0], [width - 0.5, -0.5, 0.0, 1.0], [-0.5, height - 0.5, 0.0, 1.0]])
    return (corners @ ijk_to_ras.T)[:, :3]


def _follow_view(volume_node: slicer.vtkMRMLScalarVolumeNode, *_: object) -> None:
    """Observer of a view volume: its detector model's texture takes the volume's window/level and image.

    Holds nothing: it reaches the texture filter through the volume's :data:`DETECTOR_MODEL_REFERENCE`
    (which the scene clears when the model is removed), so it never calls into a removed node.
    """
    model = volume_node.GetNodeReference(DETECTOR_MODEL_REFERENCE)
    display = model.GetDisplayNode() if model is not None else None
    connection = display.GetTextureImageDataConnection() if display is not None else None
    texture = connection.GetProducer() if connection is not None else None
    if not isinstance(texture, vtk.vtkImageMapToWindowLevelColors):
        return
    volume_display = volume_node.GetScalarVolumeDisplayNode()
    if volume_display is not None:
        texture.SetWindow(volume_display.GetWindow())
        texture.SetLevel(volume_display.GetLevel())
    texture.SetInputConnection(volume_node.GetImageDataConnection())


@vtk.calldata_type(vtk.VTK_OBJECT)
def _on_node_removed(scene: slicer.vtkMRMLScene, _event: object, node: slicer.vtkMRMLNode | None) -> None:
    """Scene observer: a view volume that leaves the scene loses its observers and its detector model.

    The model (and its display node) is removed, not hidden: it is made from the view and shows
    nothing else. While the scene is closing (``Clear``) only the observers are removed, as the
    scene removes every node itself.
    """
    if node is None:
        return
    tags = _FOLLOWED_VIEWS.pop(node.__this__, None)
    if tags is None:
        return
    for tag in tags:
        node.RemoveObserver(tag)
    if scene.IsClosing():
        return
    model_id = node.GetNodeReferenceID(DETECTOR_MODEL_REFERENCE)  # kept by a removed node
    model = scene.GetNodeByID(model_id) if model_id else None
    if model is None or model.GetAttribute(DETECTOR_OF_ATTRIBUTE) != node.GetID():
        return
    displays = [model.GetNthDisplayNode(n) for n in range(model.GetNumberOfDisplayNodes())]
    scene.RemoveNode(model)
    for display in displays:
        if display is not None and scene.IsNodePresent(display):
            scene.RemoveNode(display)


def _forget(registry: dict[str, list[int]], key: str, *_: object) -> None:
    """DeleteEvent observer: the deleted object's entry leaves ``registry`` (bound by ``functools.partial``,
    so that it holds the registry even while Python shuts down)."""
    registry.pop(key, None)


def _watch(scene: slicer.vtkMRMLScene, volume_node: slicer.vtkMRMLScalarVolumeNode) -> None:
    """Make the detector model's texture follow ``volume_node``, once per volume; and, once per
    scene, remove a view's observers and model when the view leaves the scene."""
    scene_key = scene.__this__
    if scene_key not in _WATCHED_SCENES:
        _WATCHED_SCENES[scene_key] = [
            scene.AddObserver(slicer.vtkMRMLScene.NodeRemovedEvent, _on_node_removed),
            scene.AddObserver(vtk.vtkCommand.DeleteEvent, functools.partial(_forget, _WATCHED_SCENES, scene_key)),
        ]
    volume_key = volume_node.__this__
    if volume_key not in _FOLLOWED_VIEWS:
        _FOLLOWED_VIEWS[volume_key] = [
            volume_node.AddObserver(slicer.vtkMRMLDisplayableNode.DisplayModifiedEvent, _follow_view),
            volume_node.AddObserver(slicer.vtkMRMLVolumeNode.ImageDataModifiedEvent, _follow_view),
            volume_node.AddObserver(
                vtk.vtkCommand.DeleteEvent, functools.partial(_forget, _FOLLOWED_VIEWS, volume_key)
            ),
        ]


def add_detector_model(volume_node: slicer.vtkMRMLScalarVolumeNode) -> slicer.vtkMRMLModelNode:
    """A plane model exactly over the view's detector, textured with its window/levelled image.

    As SlicerRT shows a DRR in 3D (PlanarImage/Logic/vtkSlicerPlanarImageModuleLogic.cxx,
    CreateModelForPlanarImage / ComputeImagePlaneCorners / SetTextureForPlanarImage, called from
    DrrImageComputation/Logic/vtkSlicerDrrImageComputationLogic.cxx SetupGeometry): a plane through
    the image's corners, under the volume's parent transform, whose display node's texture is the
    image through vtkImageMapToWindowLevelColors (luminance) with the volume's window/level. Here
    the corners are the pixels' outer edges (SlicerRT takes index 0 and dims, half a pixel off):
    texture (s, t) = (0, 0) is the outer corner of pixel (0, 0), s runs along the columns and t
    along the rows.

    The model is the volume's :data:`DETECTOR_MODEL_REFERENCE`: a second call reuses it (and
    makes it visible again). The texture follows the volume's window/level and image through
    observers on the volume (:func:`_follow_view`), installed once per volume and holding no
    node; when the volume is removed from the scene, its observers go and the model with its
    display node is removed too (:func:`_on_node_removed`; removed rather than hidden, as it shows
    nothing but the view). A model removed alone just leaves the volume without one: the scene
    clears the volume's reference, the observers then find no model, and the next call makes another.
    """
    scene = volume_node.GetScene()
    if scene is None:
        raise CT2XError(f"the view '{volume_node.GetName()}' is not in a scene")
    _image_dimensions(volume_node)
    model = volume_node.GetNodeReference(DETECTOR_MODEL_REFERENCE)
    if model is None:
        model = scene.AddNewNodeByClass("vtkMRMLModelNode", f"{volume_node.GetName()} detector")
        volume_node.SetNodeReferenceID(DETECTOR_MODEL_REFERENCE, model.GetID())
    model.SetAttribute(DETECTOR_OF_ATTRIBUTE, volume_node.GetID())
    plane = vtk.vtkPlaneSource()
    origin, point1, point2 = _detector_corners(volume_node)
    plane.SetOrigin(*origin)
    plane.SetPoint1(*point1)
    plane.SetPoint2(*point2)
    plane.Update()
    model.SetAndObservePolyData(plane.GetOutput())
    model.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())

    volume_node.CreateDefaultDisplayNodes()
    texture = vtk.vtkImageMapToWindowLevelColors()  # held by the model's display node
    texture.SetOutputFormatToLuminance()
    display = model.GetDisplayNode()
    if display is None:
        model.CreateDefaultDisplayNodes()
        display = model.GetDisplayNode()
    was_modifying = display.StartModify()
    display.SetTextureImageDataConnection(texture.GetOutputPort())
    display.SetScalarVisibility(0)
    display.SetColor(1.0, 1.0, 1.0)
    display.SetAmbient(1.0)  # lit like Slicer's slice planes (vtkMRMLSliceLogic::CreateSliceModel)
    display.SetDiffuse(0.0)
    display.SetBackfaceCulling(0)
    display.SetVisibility2D(False)
    display.SetVisibility(True)
    display.EndModify(was_modifying)
    _follow_view(volume_node)
    _watch(scene, volume_node)
    return model


def detector_texture(model: slicer.vtkMRMLModelNode) -> np.ndarray:
    """The texture a detector model shows, as a (H, W) uint8 array (row 0 = image row 0)."""
    connection = model.GetDisplayNode().GetTextureImageDataConnection()
    producer = connection.GetProducer()
    producer.Update()
    image = producer.GetOutputDataObject(0)
    width, height, _ = image.GetDimensions()
    return vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width)


# ---------------------------------------------------------------- all views
@dataclass
class ViewsDisplay:
    """What :func:`show_views` set up; the GUI lays it out and fits it (see its docstring)."""

    slice_nodes: list[slicer.vtkMRMLSliceNode]
    composite_nodes: list[slicer.vtkMRMLSliceCompositeNode]
    layout_names: list[str]
    layout_id: int
    layout_xml: str
    layout_set: bool
    models: list[slicer.vtkMRMLModelNode]
    only_in_3d: list[slicer.vtkMRMLScalarVolumeNode] = field(default_factory=list)
    message: str = ""


def hide_unused_views(
    scene: slicer.vtkMRMLScene, used_names: Sequence[str], used_models: Sequence[slicer.vtkMRMLModelNode]
) -> None:
    """Turn off what an earlier synthesis left: the CT2X slice views not in ``used_names`` (no
    background, not in 3D) and the detector models not in ``used_models`` (hidden, not removed:
    their views are still in the scene)."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLSliceNode")
        name = node.GetLayoutName() or ""
        if _SLICE_VIEW_NAME.match(name) and name not in used_names:
            node.SetSliceVisible(0)
            composite = scene.GetSingletonNode(name, "vtkMRMLSliceCompositeNode")
            if composite is not None:
                composite.SetBackgroundVolumeID(None)
    used_ids = {model.GetID() for model in used_models}
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLModelNode")):
        model = scene.GetNthNodeByClass(index, "vtkMRMLModelNode")
        if model.GetAttribute(DETECTOR_OF_ATTRIBUTE) is not None and model.GetID() not in used_ids:
            model.SetDisplayVisibility(0)


def show_views(
    scene: slicer.vtkMRMLScene,
    volumes: Sequence[slicer.vtkMRMLScalarVolumeNode],
    layout_node: slicer.vtkMRMLLayoutNode | None = None,
    max_slice_views: int = MAX_LAYOUT_VIEWS,
    percentiles: tuple[float, float] = WINDOW_PERCENTILES,
    set_layout: bool = True,
) -> ViewsDisplay:
    """Show every view: a slice view each (up to ``max_slice_views``), its textured detector in 3D.

    For view ``n`` (from 1): an X-ray window/level (:func:`set_xray_window_level`), slice view
    ``CT2X<n>`` (:func:`slice_view_nodes`, :func:`show_view_in_slice`; not visible in 3D), and in
    3D a textured plane model of exactly its detector (:func:`add_detector_model`; shown again,
    a view keeps its model). Views beyond ``max_slice_views`` get no slice view, only their
    detector model, and :attr:`ViewsDisplay.message` says so. What an earlier synthesis left is
    turned off (:func:`hide_unused_views`): 3D shows the detectors of these views only.

    Returns a :class:`ViewsDisplay`: ``slice_nodes``, ``composite_nodes`` and ``layout_names`` of
    the slice views; ``layout_id`` and ``layout_xml`` of the layout; ``layout_set``; ``models``,
    the detector model of every view, in the order of ``volumes``; ``only_in_3d``, the views
    without a slice view; ``message``, empty unless some views are only in 3D.

    The layout (:func:`views_layout_xml` of the slice views) is registered and made current on
    ``layout_node`` (default: the scene's layout node) when ``set_layout``; in Slicer the layout
    manager observes that node and shows the views. What the GUI still does, once the widgets
    exist and have their size: fit each slice view (``sliceWidget(name).sliceLogic().FitSliceToAll()``)
    and the 3D view (``threeDWidget(0).threeDView().resetFocalPoint()``).
    """
    volumes = list(volumes)
    if not volumes:
        raise CT2XError("there is no view to show")
    for volume in volumes:
        _image_dimensions(volume)
    count = min(len(volumes), max(int(max_slice_views), 1))
    names = slice_view_names(count)

    slice_nodes, composites, models = [], [], []
    for index, volume in enumerate(volumes):
        set_xray_window_level(volume, percentiles)
        if index < count:
            slice_node, composite = slice_view_nodes(scene, names[index])
            show_view_in_slice(slice_node, composite, volume)
            slice_nodes.append(slice_node)
            composites.append(composite)
        models.append(add_detector_model(volume))
    hide_unused_views(scene, names, models)
    only_in_3d = volumes[count:]

    message = ""
    if only_in_3d:
        if len(only_in_3d) == 1:
            extra = f"view {count + 1} is shown only as a plane"
        else:
            extra = f"views {count + 1} to {len(volumes)} are shown only as planes"
        message = (
            f"{len(volumes)} views: the first {count} are in slice views, {extra} in the 3D view; "
            "select one in a slice view's volume menu to see it in 2D"
        )

    xml = views_layout_xml(names)
    layout_set = False
    if set_layout:
        layout_node = layout_node if layout_node is not None else scene_layout_node(scene)
        if layout_node is not None:
            set_views_layout(layout_node, names)
            layout_set = True
    return ViewsDisplay(slice_nodes, composites, names, VIEWS_LAYOUT_ID, xml, layout_set, models, only_in_3d, message)

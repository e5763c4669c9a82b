"""CT2XSynthesisLib.display on a real MRML scene (PyPI ``slicer-core``: no Qt, no layout manager).

The views are made by the real logic (``SynthesisLogic.synthesize``, real ``CArm`` geometry) with
an injected renderer: pixel (row v, column u) holds ``u + 1000 v`` and the pixel where
``CArm.project`` sends the CT's brightest voxel holds :data:`MARK`. Slicer's own MRML logic
classes then stand in for the application: ``vtkMRMLLayoutLogic`` builds the views of the layout
description, ``vtkMRMLSliceLogic`` reslices each slice view (what its widget would draw) and makes
its own plane in 3D (kept hidden: each view is in 3D as its detector model),
``vtkMRMLApplicationLogic`` resets views and propagates volumes.

Screen coordinates: slice-view pixel (x right, y up), ``XYToRAS`` of vtkMRMLSliceNode.
"""

from __future__ import annotations

import math
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the MRML library of PyPI's slicer-core (pip install slicer-core)")

import vtk  # noqa: E402  (installed with slicer-core)
from vtk.util.numpy_support import vtk_to_numpy  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "CT2XSynthesis"))

from CT2XSynthesisLib import display  # noqa: E402
from CT2XSynthesisLib.logic import SynthesisLogic, SynthesisParameters, node_ijk_to_world_ras  # noqa: E402

from ct2x.errors import CT2XError  # noqa: E402
from ct2x.geometry import CArm  # noqa: E402

RAS = np.diag([-1.0, -1.0, 1.0])  # LPS <-> RAS, written out independently of the Lib
MARK = -1.0
COLUMNS, ROWS = 16, 12  # a wide detector: rows and columns cannot be swapped unnoticed
WIDTH_MM, HEIGHT_MM = 160.0, 132.0  # column spacing 10 mm, row spacing 11 mm
SCREEN = (64, 48)  # slice-view pixels given to the slice nodes, as a slice widget would


def _matrix(m: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def _ijk_to_ras(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return _matrix(m)


def _renderer(ct, views):
    """``u + 1000 v`` per pixel, :data:`MARK` where the brightest voxel projects."""
    k, j, i = np.unravel_index(int(np.argmax(ct.array)), ct.array.shape)
    landmark_lps = (ct.ijk_to_lps @ np.array([i, j, k, 1.0]))[:3]
    images = []
    for view in views:
        h, w = view.detector_shape
        image = np.arange(w, dtype=np.float32)[None, :] + 1000.0 * np.arange(h, dtype=np.float32)[:, None]
        u, v = view.project(landmark_lps)[0]
        if 0 <= round(u) < w and 0 <= round(v) < h:
            image[int(round(v)), int(round(u))] = MARK
        images.append(image)
    return np.stack(images)


@pytest.fixture
def scene():
    slicer.mrmlScene = slicer.vtkMRMLScene()
    # as Slicer's application does: slice nodes made by class get Axial/Sagittal/Coronal presets
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(slicer.mrmlScene)
    yield slicer.mrmlScene
    slicer.mrmlScene.Clear(1)


def _ct_node(landmark_ras=(30.0, 20.0, 25.0)):
    """An axis-aligned 30^3 CT (4 mm voxels, centred on the RAS origin) with one bright voxel at
    ``landmark_ras`` (default: the patient's right, anterior, superior)."""
    n, spacing = 30, 4.0
    hu = np.full((n, n, n), -1000.0, np.float32)
    ijk_to_ras = np.diag([spacing, spacing, spacing, 1.0])
    ijk_to_ras[:3, 3] = -spacing * (n - 1) / 2
    i, j, k = np.rint((np.asarray(landmark_ras) - ijk_to_ras[:3, 3]) / spacing).astype(int)
    hu[k, j, i] = 3000.0
    return slicer.util.addVolumeFromArray(hu, ijk_to_ras, name="CT")


def _synthesize(angles, landmark_ras=(30.0, 20.0, 25.0)):
    parameters = SynthesisParameters(
        angles=tuple(angles),
        detector_pixels=COLUMNS,
        detector_rows=ROWS,
        detector_width_mm=WIDTH_MM,
        detector_height_mm=HEIGHT_MM,
    )
    return SynthesisLogic(_renderer).synthesize(_ct_node(landmark_ras), parameters).volumes


def _carm(volume) -> CArm:
    """The view's C-arm rebuilt from the numbers of this file (isocenter: the CT's centre, RAS 0)."""
    primary = float(volume.GetAttribute("CT2X.primary"))
    secondary = float(volume.GetAttribute("CT2X.secondary"))
    iso_lps = RAS @ np.array([float(v) for v in volume.GetAttribute("CT2X.isocenterRAS").split()])
    return CArm(
        primary, secondary, detector_shape=(ROWS, COLUMNS),
        pixel_spacing=(HEIGHT_MM / ROWS, WIDTH_MM / COLUMNS), isocenter=tuple(iso_lps),
    )  # fmt: skip


def _screen_xy(slice_node, ras) -> np.ndarray:
    """Slice-view pixel (x right, y up, z off the plane) of a RAS point."""
    ras_to_xy = np.linalg.inv(_matrix(slice_node.GetXYToRAS()))
    return (ras_to_xy @ np.array([*ras, 1.0]))[:3]


def _screen_direction(slice_node, ras_vector) -> np.ndarray:
    """Screen (x, y, z) components of a RAS direction, in slice coordinates (mm)."""
    return np.linalg.inv(_matrix(slice_node.GetSliceToRAS())[:3, :3]) @ np.asarray(ras_vector, dtype=float)


def _slice_logics(scene, slice_nodes):
    """What Slicer's slice widgets own: one vtkMRMLSliceLogic per slice node, sized SCREEN."""
    app = slicer.vtkMRMLApplicationLogic()
    app.SetMRMLScene(scene)
    collection = vtk.vtkCollection()
    logics = []
    for node in slice_nodes:
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLApplicationLogic(app)
        logic.SetSliceNode(node)  # before the scene, as qMRMLLayoutSliceViewFactory::createViewFromNode
        logic.SetMRMLScene(scene)
        collection.AddItem(logic)
        logics.append(logic)
    app.SetSliceLogics(collection)
    return app, logics


def _resize_and_fit(logic):
    """A widget of SCREEN pixels (vtkMRMLSliceLogic::ResizeSliceNode), then Fit (FitSliceToAll)."""
    logic.ResizeSliceNode(*SCREEN)
    logic.FitSliceToAll()


def _resliced(logic) -> np.ndarray:
    """The background layer of a slice view as its widget draws it: (rows = screen y from the
    bottom, columns = screen x), values of the view before window/level."""
    reslice = logic.GetBackgroundLayer().GetReslice()
    reslice.Update()
    image = reslice.GetOutput()
    w, h, _ = image.GetDimensions()
    return vtk_to_numpy(image.GetPointData().GetScalars()).reshape(h, w)


# ---------------------------------------------------------------- layout
@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 9])
def test_layout_xml_has_the_3d_view_and_one_slice_view_per_view(count):
    names = display.slice_view_names(count)
    root = ET.fromstring(display.views_layout_xml(names))
    views = root.findall(".//view")
    three_d = [v for v in views if v.get("class") == "vtkMRMLViewNode"]
    slices = [v for v in views if v.get("class") == "vtkMRMLSliceNode"]
    assert len(views) == count + 1
    assert [v.get("singletontag") for v in three_d] == ["1"]
    assert [v.get("singletontag") for v in slices] == names == [f"CT2X{n}" for n in range(1, count + 1)]
    assert not root.findall(".//property[@name='orientation']"), "a layout orientation would undo the detector's"
    # 3D view left, the slice views in a grid of rows on the right
    assert root.get("type") == "horizontal" and root[0].find("view").get("class") == "vtkMRMLViewNode"
    grid_rows = root[1].find("layout").findall("item")
    rows, columns = display.layout_grid(count)
    assert len(grid_rows) == rows and rows * columns >= count and columns >= rows
    assert [len(r.findall(".//view")) for r in grid_rows][:-1] == [columns] * (rows - 1)


def test_vtk_layout_logic_builds_the_views_of_the_layout(scene):
    layout_node = scene.AddNode(slicer.vtkMRMLLayoutNode())
    layout_logic = slicer.vtkMRMLLayoutLogic()
    layout_logic.SetMRMLScene(scene)
    assert layout_logic.GetLayoutNode() is layout_node
    names = display.slice_view_names(4)
    display.set_views_layout(layout_node, names)

    assert layout_node.GetViewArrangement() == display.VIEWS_LAYOUT_ID
    views = layout_logic.GetViewNodes()
    built = [views.GetItemAsObject(i) for i in range(views.GetNumberOfItems())]
    assert [(v.GetClassName(), v.GetLayoutName()) for v in built] == [("vtkMRMLViewNode", "1")] + [
        ("vtkMRMLSliceNode", name) for name in names
    ]
    # a second, smaller synthesis updates the registered description in place
    display.set_views_layout(layout_node, names[:2])
    views = layout_logic.GetViewNodes()
    assert [views.GetItemAsObject(i).GetLayoutName() for i in range(views.GetNumberOfItems())] == ["1", *names[:2]]


def test_the_layout_shows_the_slice_nodes_that_show_views_made(scene):
    volumes = _synthesize([(0, 0), (30, 15)])
    layout_node = scene.AddNode(slicer.vtkMRMLLayoutNode())
    layout_logic = slicer.vtkMRMLLayoutLogic()
    layout_logic.SetMRMLScene(scene)
    shown = display.show_views(scene, volumes)  # finds the scene's layout node itself

    assert shown.layout_set and layout_node.GetViewArrangement() == display.VIEWS_LAYOUT_ID
    views = layout_logic.GetViewNodes()
    laid_out = [views.GetItemAsObject(i) for i in range(views.GetNumberOfItems())]
    assert laid_out[1:] == shown.slice_nodes, "the layout made new slice nodes instead of using CT2X1, CT2X2"
    assert scene.GetNumberOfNodesByClass("vtkMRMLSliceNode") == 2 + 3  # CT2X1, CT2X2 + the default Red/Green/Yellow
    for node, volume in zip(shown.slice_nodes, volumes, strict=True):
        np.testing.assert_allclose(_matrix(node.GetSliceToRAS()), display.slice_to_ras_for_view(volume), atol=1e-9)


# ---------------------------------------------------------------- geometry
ANGLES = [(0, 0), (90, 0), (-90, 0), (30, 15), (-45, -20), (120, 40)]


@pytest.mark.parametrize("angles", ANGLES)
def test_slice_plane_is_the_detector_plane_centred_on_the_image(scene, angles):
    (volume,) = _synthesize([angles])
    view = _carm(volume)
    slice_to_ras = display.slice_to_ras_for_view(volume)
    m = _ijk_to_ras(volume)

    rotation = slice_to_ras[:3, :3]
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-12)
    k_axis = m[:3, 2] / np.linalg.norm(m[:3, 2])
    np.testing.assert_allclose(rotation[:, 2], k_axis, atol=1e-12)  # normal parallel (and equal) to k
    source_ras = RAS @ view.source
    assert np.dot(source_ras - slice_to_ras[:3, 3], rotation[:, 2]) == pytest.approx(view.sdd)  # toward the source
    np.testing.assert_allclose(slice_to_ras[:3, 3], RAS @ view.detector_center, atol=1e-9)
    np.testing.assert_allclose(slice_to_ras[:3, 3], (m @ [(COLUMNS - 1) / 2, (ROWS - 1) / 2, 0, 1])[:3], atol=1e-9)
    np.testing.assert_allclose(rotation[:, 0], m[:3, 0] / np.linalg.norm(m[:3, 0]), atol=1e-12)  # x = image right
    np.testing.assert_allclose(rotation[:, 1], -m[:3, 1] / np.linalg.norm(m[:3, 1]), atol=1e-12)  # y = image up


@pytest.mark.parametrize("angles", ANGLES)
def test_pixels_go_right_with_the_column_and_down_with_the_row_on_screen(scene, angles):
    (volume,) = _synthesize([angles])
    shown = display.show_views(scene, [volume], set_layout=False)
    node = shown.slice_nodes[0]
    m = _ijk_to_ras(volume)

    def xy(col, row):
        return _screen_xy(node, (m @ [col, row, 0, 1])[:3])

    centre = xy((COLUMNS - 1) / 2, (ROWS - 1) / 2)
    dims = node.GetDimensions()
    np.testing.assert_allclose(centre, [dims[0] / 2, dims[1] / 2, 0.0], atol=1e-9)  # image centred on screen
    # the field of view fits the detector: its wider side (160 mm against 132 mm) fills the view's width
    top_left, bottom_right = xy(-0.5, -0.5), xy(COLUMNS - 0.5, ROWS - 0.5)
    np.testing.assert_allclose([top_left[0], bottom_right[0]], [0.0, dims[0]], atol=1e-9)
    assert 0.0 < bottom_right[1] < top_left[1] < dims[1]
    for col, row in [(0, 0), (5, 3), (COLUMNS - 1, ROWS - 1)]:
        here, right, below = xy(col, row), xy(col + 1, row), xy(col, row + 1)
        assert here[2] == pytest.approx(0.0, abs=1e-9)  # on the slice plane
        dx, dy = right - here, below - here
        assert dx[0] > 0 and dx[1] == pytest.approx(0.0, abs=1e-9), "screen x must grow with the column only"
        assert dy[1] < 0 and dy[0] == pytest.approx(0.0, abs=1e-9), "screen y must fall as the row grows"
        assert dy[1] / dx[0] == pytest.approx(-(HEIGHT_MM / ROWS) / (WIDTH_MM / COLUMNS))  # square screen pixels


def test_ap_view_puts_the_patients_right_on_the_screens_left(scene):
    (volume,) = _synthesize([(0, 0)], landmark_ras=(30.0, 20.0, 25.0))  # right, anterior, superior
    node = display.show_views(scene, [volume], set_layout=False).slice_nodes[0]

    right, superior = _screen_direction(node, [1, 0, 0]), _screen_direction(node, [0, 0, 1])
    np.testing.assert_allclose(right, [-1, 0, 0], atol=1e-12)  # RAS +x (patient's right) = screen left
    np.testing.assert_allclose(superior, [0, 1, 0], atol=1e-12)  # head up
    # the same on the image content: the mark of a right-sided landmark is left of the image centre
    image = slicer.util.arrayFromVolume(volume)[0]
    row, col = np.argwhere(image == MARK)[0]
    mark = _screen_xy(node, (_ijk_to_ras(volume) @ [col, row, 0, 1])[:3])
    assert mark[0] < node.GetDimensions()[0] / 2 and mark[1] > node.GetDimensions()[1] / 2


@pytest.mark.parametrize(
    ("primary", "anterior_on_screen"),
    [(90.0, -1.0), (-90.0, +1.0)],  # LAO 90: detector at the patient's left; RAO 90: at the right
)
def test_lateral_views_are_seen_from_the_detector_side(scene, primary, anterior_on_screen):
    """Like a lateral radiograph: seen from the detector's side, so a left lateral (LAO 90, detector
    on the patient's left) has the patient facing the screen's left, and the head is up."""
    (volume,) = _synthesize([(primary, 0.0)])
    node = display.show_views(scene, [volume], set_layout=False).slice_nodes[0]
    np.testing.assert_allclose(_screen_direction(node, [0, 1, 0]), [anterior_on_screen, 0, 0], atol=1e-12)
    np.testing.assert_allclose(_screen_direction(node, [0, 0, 1]), [0, 1, 0], atol=1e-12)
    # the viewer looks from the detector: the source lies behind the screen (+z toward the source)
    source = np.array([float(v) for v in volume.GetAttribute("CT2X.sourceRAS").split()])
    assert _screen_xy(node, source)[2] > 0
    detector_side = -np.sign(primary) * np.array([1.0, 0.0, 0.0])  # RAS: LAO 90 -> patient's left (-x)
    np.testing.assert_allclose(_screen_direction(node, detector_side), [0, 0, -1], atol=1e-12)


@pytest.mark.parametrize("angles", [(0, 0), (90, 0), (30, 15)])
def test_slice_logic_draws_the_image_upright_and_unflipped(scene, angles):
    """Slicer's own reslice of the slice view (vtkMRMLSliceLogic, as the widget draws it)."""
    (volume,) = _synthesize([angles])
    shown = display.show_views(scene, [volume], set_layout=False)
    _, (logic,) = _slice_logics(scene, shown.slice_nodes)
    _resize_and_fit(logic)
    drawn = _resliced(logic)  # drawn[y, x], y up

    h, w = drawn.shape
    # screen pixel (w / 2, h / 2) is the slice origin: the image centre, u + 1000 v with u = 7.5, v = 5.5
    centre = drawn[h // 2, w // 2]
    assert centre == pytest.approx((COLUMNS - 1) / 2 + 1000 * (ROWS - 1) / 2, rel=1e-3)
    row = drawn[h // 2, w // 4 : 3 * w // 4]
    column = drawn[h // 4 : 3 * h // 4, w // 2]
    assert np.all(np.diff(row) > 0), "image columns must run to the screen's right"
    assert np.all(np.diff(column) < 0), "image rows must run down the screen"
    # Fit (vtkMRMLSliceLogic::FitSliceToAll) kept the detector orientation and centre
    np.testing.assert_allclose(
        _matrix(shown.slice_nodes[0].GetSliceToRAS()), display.slice_to_ras_for_view(volume), atol=1e-9
    )


def test_ap_mark_of_a_right_sided_landmark_is_drawn_on_the_left(scene):
    (volume,) = _synthesize([(0, 0)], landmark_ras=(30.0, 0.0, 0.0))  # patient's right, mid-height
    shown = display.show_views(scene, [volume], set_layout=False)
    _, (logic,) = _slice_logics(scene, shown.slice_nodes)
    _resize_and_fit(logic)
    volume.GetScalarVolumeDisplayNode().SetInterpolate(0)  # nearest: the mark stays one value
    drawn = _resliced(logic)
    y, x = np.argwhere(drawn == MARK)[0]
    assert x < drawn.shape[1] / 2, "the patient's right must be on the screen's left in an AP view"


def _texture_corners(model) -> dict[tuple[float, float], np.ndarray]:
    """RAS of the model's points by their texture coordinates (s, t)."""
    plane = model.GetPolyData()
    points = vtk_to_numpy(plane.GetPoints().GetData()).astype(float)
    tcoords = np.round(vtk_to_numpy(plane.GetPointData().GetTCoords()), 9) + 0.0
    return {tuple(t): p for t, p in zip(tcoords, points, strict=True)}


def _window_levelled(volume) -> np.ndarray:
    """The view's image through its display node's window/level, 0..255 (row 0 = image row 0)."""
    image = slicer.util.arrayFromVolume(volume)[0].astype(float)
    volume_display = volume.GetScalarVolumeDisplayNode()
    low, high = volume_display.GetWindowLevelMin(), volume_display.GetWindowLevelMax()
    return np.clip((image - low) / (high - low) * 255.0, 0, 255)


@pytest.mark.parametrize("angles", ANGLES)
def test_plane_in_3d_is_the_detector_textured_upright(scene, angles):
    """The view's plane in 3D: corners on the detector's corners, texture (0, 0) on pixel (0, 0)'s
    outer corner (top left as read), s along the columns, t along the rows, the texture the image."""
    volumes = _synthesize([angles, (0, 0)])
    shown = display.show_views(scene, volumes, set_layout=False)
    assert len(shown.models) == 2
    for model, volume in zip(shown.models, volumes, strict=True):
        view = _carm(volume)
        assert model.GetDisplayNode().GetVisibility() == 1 and model.GetDisplayNode().GetScalarVisibility() == 0
        assert volume.GetNodeReference(display.DETECTOR_MODEL_REFERENCE) is model
        corners = _texture_corners(model)
        assert len(corners) == 4
        top_left, top_right, bottom_right, bottom_left = (RAS @ c for c in view.detector_corners)
        np.testing.assert_allclose(corners[(0.0, 0.0)], top_left, atol=1e-6)
        np.testing.assert_allclose(corners[(1.0, 0.0)], top_right, atol=1e-6)
        np.testing.assert_allclose(corners[(0.0, 1.0)], bottom_left, atol=1e-6)
        np.testing.assert_allclose(corners[(1.0, 1.0)], bottom_right, atol=1e-6)
        # on the detector plane, and so is the rendered plane's normal
        points = np.array(list(corners.values()))
        normal = RAS @ view.detector_normal
        np.testing.assert_allclose((points - RAS @ view.detector_center) @ normal, 0.0, atol=1e-4)  # float32
        model_normal = vtk_to_numpy(model.GetPolyData().GetPointData().GetNormals())[0]
        assert abs(float(np.dot(model_normal, normal))) == pytest.approx(1.0, abs=1e-6)
        # the texture is the window/levelled image, not transposed or flipped (u + 1000 v is asymmetric)
        texture = display.detector_texture(model)
        assert texture.shape == (ROWS, COLUMNS) and texture.dtype == np.uint8
        assert np.max(np.abs(texture.astype(float) - _window_levelled(volume))) <= 1.01
        # a window over the first row's values (u = 0 .. 15) resolves the columns too
        volume.GetScalarVolumeDisplayNode().SetWindowLevelMinMax(0.0, COLUMNS - 1.0)
        expected = _window_levelled(volume)
        assert np.ptp(expected[0]) > 200 and np.ptp(expected[:, 0]) > 200
        np.testing.assert_allclose(display.detector_texture(model), expected, atol=1.01)


def test_one_plane_per_view_in_3d(scene):
    """The slice views are not visible in 3D: their own planes (made by Slicer's slice logic) stay
    hidden, so the textured planes in 3D are exactly the detector models, one per view."""
    volumes = _synthesize([(0, 0), (30, 15), (-45, -20)])
    shown = display.show_views(scene, volumes, set_layout=False)
    _, logics = _slice_logics(scene, shown.slice_nodes)
    for logic in logics:
        _resize_and_fit(logic)
        assert logic.GetSliceNode().GetSliceVisible() == 0
        slice_model = logic.GetSliceModelNode()
        assert slice_model is not None and slice_model.GetDisplayNode().GetVisibility() == 0
    visible = []
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLModelNode")):
        model = scene.GetNthNodeByClass(index, "vtkMRMLModelNode")
        model_display = model.GetDisplayNode()
        if model_display is not None and model_display.GetVisibility() and model_display.GetVisibility3D():
            visible.append(model)
    assert visible == shown.models and len(visible) == len(volumes)


# ---------------------------------------------------------------- window/level
def test_window_level_fits_the_xray_and_ignores_outliers(scene):
    (volume,) = _synthesize([(0, 0)])
    image = slicer.util.arrayFromVolume(volume)
    image[0, 0, 0] = 1e6  # a hot pixel
    slicer.util.arrayFromVolumeModified(volume)
    display.show_views(scene, [volume], set_layout=False)
    node = volume.GetScalarVolumeDisplayNode()

    assert node.GetAutoWindowLevel() == 0
    assert node.GetColorNodeID() == "vtkMRMLColorTableNodeGrey"
    low, high = node.GetWindowLevelMin(), node.GetWindowLevelMax()
    expected = np.percentile(image, display.WINDOW_PERCENTILES)
    np.testing.assert_allclose([low, high], expected, rtol=1e-6)
    assert image.min() <= low < high < 1e6, "the window must cover the image, not its hot pixel"
    inside = np.mean((image >= low) & (image <= high))
    assert inside >= 0.97


def test_window_of_a_flat_image_is_not_empty():
    low, high = display.xray_window(np.full((4, 5), 7.0))
    assert low < 7.0 < high
    assert display.xray_window(np.array([0.0, 1.0, np.nan, 2.0]), (0, 100)) == (0.0, 2.0)


# ---------------------------------------------------------------- detector models, many views
def _assert_texture_follows(volume, model):
    """Window/level the view to one grey step just above its lowest value: the texture turns white."""
    volume_display = volume.GetScalarVolumeDisplayNode()
    low = float(slicer.util.arrayFromVolume(volume).min())
    volume_display.SetWindowLevelMinMax(low - 1e5, low - 1e5 + 1.0)
    assert display.detector_texture(model).min() == 255


def test_detector_texture_follows_the_window_level_and_the_image(scene):
    (volume,) = _synthesize([(30, 15)])
    shown = display.show_views(scene, [volume], set_layout=False)
    (model,) = shown.models
    texture = display.detector_texture(model)
    np.testing.assert_allclose(texture, _window_levelled(volume), atol=1.01)
    volume_display = volume.GetScalarVolumeDisplayNode()
    low = volume_display.GetWindowLevelMin()
    # the texture follows the window/level
    volume_display.SetWindowLevelMinMax(low, low + 1.0)
    assert display.detector_texture(model)[-1, -1] == 255 and display.detector_texture(model).mean() > texture.mean()
    # ... and the image, changed in place or replaced
    image = slicer.util.arrayFromVolume(volume)
    image[:] = image[0, ::-1, ::-1]  # turned upside down
    slicer.util.arrayFromVolumeModified(volume)
    np.testing.assert_allclose(display.detector_texture(model), _window_levelled(volume), atol=1.01)
    original = volume.GetImageData()
    replaced = vtk.vtkImageData()
    replaced.DeepCopy(original)
    vtk_to_numpy(replaced.GetPointData().GetScalars())[:] = 0.0
    volume.SetAndObserveImageData(replaced)
    assert display.detector_texture(model).max() == 0
    volume.SetAndObserveImageData(original)
    image[:] = image[0, ::-1, ::-1]
    slicer.util.arrayFromVolumeModified(volume)

    # a second show reuses the model, resets the window/level and follows with one set of observers
    first_tags = list(display._FOLLOWED_VIEWS[volume.__this__])
    again = display.show_views(scene, [volume], set_layout=False)
    assert again.models == [model] and scene.GetNumberOfNodesByClass("vtkMRMLModelNode") == 1
    assert volume.GetNodeReference(display.DETECTOR_MODEL_REFERENCE) is model
    np.testing.assert_array_equal(display.detector_texture(model), texture)
    assert list(display._FOLLOWED_VIEWS) == [volume.__this__]  # none left from the other tests' scenes
    tags = display._FOLLOWED_VIEWS[volume.__this__]  # display, image data and delete events
    assert len(tags) == 3 and all(volume.GetCommand(tag) is not None for tag in tags)
    assert all(tag in tags or volume.GetCommand(tag) is None for tag in first_tags), "observers stacked"
    _assert_texture_follows(volume, model)


def test_removing_a_view_removes_its_detector_model_and_observers(scene, capfd):
    """Decided: a view's detector model goes with the view (it shows nothing else), and so do the
    observers that keep its texture in step; nothing is left to call into a removed node."""
    first, second = _synthesize([(0, 0), (30, 15)])
    shown = display.show_views(scene, [first, second], set_layout=False)
    model, model_display = shown.models[0], shown.models[0].GetDisplayNode()
    first_display = first.GetScalarVolumeDisplayNode()
    tags = list(display._FOLLOWED_VIEWS[first.__this__])
    assert tags and all(first.GetCommand(tag) is not None for tag in tags)

    scene.RemoveNode(first)
    assert not scene.IsNodePresent(model) and not scene.IsNodePresent(model_display)
    assert all(first.GetCommand(tag) is None for tag in tags), "observers left on the removed view"
    assert first.__this__ not in display._FOLLOWED_VIEWS
    assert scene.IsNodePresent(shown.models[1]) and shown.models[1].GetDisplayVisibility() == 1
    # the removed view, still alive in Python, changes: nothing follows it, nothing fails
    texture = model_display.GetTextureImageDataConnection().GetProducer()
    changed = texture.GetMTime()
    first_display.SetWindowLevelMinMax(-1e6, -1e6 + 1.0)
    slicer.util.arrayFromVolume(first)[:] = 0.0
    slicer.util.arrayFromVolumeModified(first)
    assert texture.GetMTime() == changed
    # the remaining view and a new one still follow their window/level
    (third,) = _synthesize([(90, 0)])
    again = display.show_views(scene, [second, third], set_layout=False)
    assert again.models[0] is shown.models[1] and scene.GetNumberOfNodesByClass("vtkMRMLModelNode") == 2
    for volume, detector in zip([second, third], again.models, strict=True):
        _assert_texture_follows(volume, detector)
    assert "Traceback" not in capfd.readouterr().err


def test_a_removed_detector_model_is_made_again(scene, capfd):
    (volume,) = _synthesize([(30, 15)])
    (model,) = display.show_views(scene, [volume], set_layout=False).models
    scene.RemoveNode(model)
    assert volume.GetNodeReference(display.DETECTOR_MODEL_REFERENCE) is None  # the scene cleared the reference
    volume.GetScalarVolumeDisplayNode().SetWindowLevelMinMax(0.0, 1.0)  # the view's observers find no model
    (again,) = display.show_views(scene, [volume], set_layout=False).models
    assert again is not model and scene.IsNodePresent(again) and not scene.IsNodePresent(model)
    assert scene.GetNumberOfNodesByClass("vtkMRMLModelNode") == 1
    _assert_texture_follows(volume, again)
    assert "Traceback" not in capfd.readouterr().err


def test_views_beyond_the_grid_are_shown_in_3d_and_said_so(scene):
    angles = [(a, 0) for a in range(-50, 60, 10)]  # 11 views
    volumes = _synthesize(angles)
    layout_node = scene.AddNode(slicer.vtkMRMLLayoutNode())
    shown = display.show_views(scene, volumes, layout_node=layout_node)

    assert len(shown.slice_nodes) == display.MAX_LAYOUT_VIEWS == 9
    assert shown.layout_names == display.slice_view_names(9)
    assert shown.only_in_3d == volumes[9:]
    assert len(shown.models) == 11 and all(m.GetDisplayVisibility() == 1 for m in shown.models)
    assert [m.GetAttribute(display.DETECTOR_OF_ATTRIBUTE) for m in shown.models] == [v.GetID() for v in volumes]
    assert "views 10 to 11" in shown.message and "only as planes in the 3D view" in shown.message
    root = ET.fromstring(layout_node.GetLayoutDescription(display.VIEWS_LAYOUT_ID))
    assert len(root.findall(".//view[@class='vtkMRMLSliceNode']")) == 9
    for node, volume in zip(shown.slice_nodes, volumes[:9], strict=True):
        composite = scene.GetSingletonNode(node.GetLayoutName(), "vtkMRMLSliceCompositeNode")
        assert composite.GetBackgroundVolumeID() == volume.GetID()

    # a later synthesis of two views turns the other CT2X views off (no stale planes in 3D)
    fewer = display.show_views(scene, volumes[:2], layout_node=layout_node)
    assert fewer.message == "" and len(fewer.slice_nodes) == 2 and fewer.models == shown.models[:2]
    for name in display.slice_view_names(9)[2:]:
        node = scene.GetSingletonNode(name, "vtkMRMLSliceNode")
        assert node.GetSliceVisible() == 0
        assert scene.GetSingletonNode(name, "vtkMRMLSliceCompositeNode").GetBackgroundVolumeID() is None
    assert [m.GetDisplayVisibility() for m in shown.models] == [1, 1] + [0] * 9
    root = ET.fromstring(layout_node.GetLayoutDescription(display.VIEWS_LAYOUT_ID))
    assert [v.get("singletontag") for v in root.findall(".//view[@class='vtkMRMLSliceNode']")] == ["CT2X1", "CT2X2"]
    # one view beyond the grid is said in the singular
    ten = display.show_views(scene, volumes[:10], layout_node=layout_node)
    assert "10 views" in ten.message and "view 10 is shown only as a plane in the 3D view" in ten.message
    assert [m.GetDisplayVisibility() for m in shown.models] == [1] * 10 + [0]


def test_reset_views_and_volume_propagation_leave_the_xrays_in_place(scene):
    volumes = _synthesize([(0, 0), (30, 15)])
    shown = display.show_views(scene, volumes, set_layout=False)
    app, logics = _slice_logics(scene, shown.slice_nodes)
    for logic in logics:
        _resize_and_fit(logic)
    before = [_matrix(n.GetSliceToRAS()) for n in shown.slice_nodes]

    # Slicer's "reset views": default orientation, snap to the volume axes, fit
    for node in shown.slice_nodes:
        node.SetOrientation("Axial")
    app.FitSliceToAll()
    for node, matrix in zip(shown.slice_nodes, before, strict=True):
        assert node.GetOrientation() == display.DETECTOR_ORIENTATION
        np.testing.assert_allclose(_matrix(node.GetSliceToRAS()), matrix, atol=1e-6)
    # showing the CT "in all slice views" does not replace the X-rays
    ct = scene.GetFirstNodeByName("CT")
    app.GetSelectionNode().SetActiveVolumeID(ct.GetID())
    app.PropagateVolumeSelection(0)
    assert [c.GetBackgroundVolumeID() for c in shown.composite_nodes] == [v.GetID() for v in volumes]


def test_refuses_what_it_cannot_show(scene):
    ct = _ct_node()
    with pytest.raises(CT2XError, match="single-slice"):
        display.show_views(scene, [ct])
    with pytest.raises(CT2XError, match="no view"):
        display.show_views(scene, [])
    with pytest.raises(CT2XError, match="distinct"):
        display.views_layout_xml(["CT2X1", "CT2X1"])


def test_transformed_view_is_shown_where_its_transform_puts_it(scene):
    (volume,) = _synthesize([(30, 15)])
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[:3, :3] = np.array(
        [[math.cos(0.3), -math.sin(0.3), 0], [math.sin(0.3), math.cos(0.3), 0], [0, 0, 1]]
    )  # fmt: skip
    shift[:3, 3] = [10.0, -20.0, 5.0]
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(shift))
    untransformed = display.slice_to_ras_for_view(volume)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(display.slice_to_ras_for_view(volume), shift @ untransformed, atol=1e-9)
    # the detector model lies under the same transform, so in world it is where the view is
    (model,) = display.show_views(scene, [volume], set_layout=False).models
    assert model.GetParentTransformNode() is transform
    corners = _texture_corners(model)
    ijk_to_world = node_ijk_to_world_ras(volume)
    for (s, t), ras in corners.items():
        world = shift @ np.array([*ras, 1.0])
        expected = ijk_to_world @ np.array([s * COLUMNS - 0.5, t * ROWS - 0.5, 0.0, 1.0])
        np.testing.assert_allclose(world, expected, atol=1e-6)

"""Render the README's picture of CT2XSynthesis views as the module shows them in a real MRML scene.

What it does, step by step:

1. builds a real MRML scene with PyPI's ``slicer-core`` (``slicer.mrmlScene = slicer.vtkMRMLScene()``,
   with Slicer's default colour tables, ``vtkMRMLColorLogic``, and a layout node, as the
   application makes them) and reads the CT with Slicer's own ``vtkMRMLVolumeArchetypeStorageNode``,
   so the volume node has the IJKToRAS that Slicer gives it when you drag the file in;
2. runs the CT2XSynthesis module logic (``SynthesisLogic.synthesize``) with the renderer the
   panel would choose: by default the learned CT2X-GAN synthesis with the bundled model in a
   style stored with it (``--model``, ``--model-style``; ``--model physics`` renders DRRs with
   DeepDRR's physics instead); it adds one single-slice volume node per view;
3. shows the views as the panel does, with ``CT2XSynthesisLib.display.show_views``: an X-ray
   window/level per view, slice views ``CT2X1`` .. ``CT2XN`` on the detector planes, a textured
   detector model per view, and the CT2X layout (3D view left, slice views in a grid right),
   made current on the scene's layout node;
4. draws that layout into one picture:

   * the 3D view, offscreen with VTK: the CT's body outline and bones (iso-surfaces on a
     downsampled copy), each view's detector model (its polydata, textured by its display node's
     texture connection), the sources, the isocenter and the rays from each source to its
     detector's corners. Every position comes from the scene: the detector corners from the
     models, the source and the isocenter from the ``CT2X.sourceRAS`` / ``CT2X.isocenterRAS``
     attributes the module wrote; nothing is recomputed from the angles;
   * each slice view as Slicer's own ``vtkMRMLSliceLogic`` draws it (what the slice widget
     shows: the blended, window/levelled reslice of the view), sized to its cell of the layout
     and fitted (``FitSliceToAll``) as the panel fits it, with the view's name and the patient
     directions at its edges, read from the slice node's SliceToRAS.

Run from the repository root (needs ``slicer-core``, the ``[dev]`` extra, and an OpenGL
context; EGL or OSMesa builds of VTK render without a display)::

    .venv/bin/python docs/render_slicer_scene.py /path/to/ct.nii.gz --out docs/slicer_scene.png
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import slicer
import vtk
from PIL import Image, ImageDraw, ImageFont
from vtk.util import numpy_support

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "CT2XSynthesis"))

from CT2XSynthesisLib import display  # noqa: E402
from CT2XSynthesisLib.logic import (  # noqa: E402
    MODEL_BUNDLED,
    MODEL_FILE,
    STYLE_STORED,
    RendererChoice,
    SynthesisLogic,
    SynthesisParameters,
    parse_angles,
    physics_drr_renderer,
)

DEFAULT_CT = ROOT.parent / "shared" / "data" / "ct" / "tcia_pancreas_ct_cb_001_abdomen_lumbar.nii.gz"

SKIN_HU = -300.0
BONE_HU = 250.0
VIEW_COLORS = [(0.85, 0.33, 0.10), (0.00, 0.45, 0.74), (0.47, 0.67, 0.19), (0.49, 0.18, 0.56), (0.93, 0.69, 0.13)]

BAR_HEIGHT = 24  # the bar above each view of the layout (Slicer's view controller bar)
CAPTION_LINE = 19  # caption line height, px
PATIENT_DIRECTIONS = ("R", "L", "A", "P", "S", "I")  # +x, -x, +y, -y, +z, -z of RAS


# ------------------------------------------------------------------- the scene
def new_scene() -> tuple[slicer.vtkMRMLScene, slicer.vtkMRMLColorLogic]:
    """An empty scene as Slicer's application starts one: default colour tables, a layout node.

    Returns the colour logic too: keep it, as it removes its colour tables when deleted.
    """
    slicer.mrmlScene = slicer.vtkMRMLScene()
    colors = slicer.vtkMRMLColorLogic()  # adds vtkMRMLColorTableNodeGrey, which the X-ray window uses
    colors.SetMRMLScene(slicer.mrmlScene)
    slicer.mrmlScene.AddNode(slicer.vtkMRMLLayoutNode())
    return slicer.mrmlScene, colors


def load_ct(path: Path) -> slicer.vtkMRMLScalarVolumeNode:
    """Read a CT file into a scalar volume node the way Slicer does (archetype storage node, RAS)."""
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", path.name.split(".")[0])
    storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise SystemExit(f"could not read {path}")
    node.SetAndObserveStorageNodeID(storage.GetID())
    return node


def ijk_to_ras(node: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def attribute_point(node: slicer.vtkMRMLNode, key: str) -> np.ndarray:
    return np.array([float(v) for v in node.GetAttribute(key).split()])


def layout_rows(description: str) -> list[list[str]]:
    """The slice views of a CT2X layout description, row by row (``display.views_layout_xml``)."""
    root = ET.fromstring(description)
    grid = root.findall("item")[1].find("layout")
    return [[view.get("singletontag") for view in row.iter("view")] for row in grid.findall("item")]


# ------------------------------------------------------------------ the 3D view
def iso_surface(ct_node: slicer.vtkMRMLScalarVolumeNode, level: float, shrink: int) -> vtk.vtkPolyData:
    """Iso-surface of the CT at ``level`` HU on a copy downsampled by ``shrink``, in RAS mm."""
    reduce = vtk.vtkImageShrink3D()
    reduce.SetInputData(ct_node.GetImageData())  # voxel grid only: origin 0, spacing 1 (IJK)
    reduce.SetShrinkFactors(shrink, shrink, shrink)
    reduce.AveragingOn()
    smooth = vtk.vtkImageGaussianSmooth()
    smooth.SetInputConnection(reduce.GetOutputPort())
    smooth.SetStandardDeviations(1.0, 1.0, 1.0)
    surface = vtk.vtkFlyingEdges3D()
    surface.SetInputConnection(smooth.GetOutputPort())
    surface.SetValue(0, level)
    surface.ComputeNormalsOff()
    largest = vtk.vtkPolyDataConnectivityFilter()
    largest.SetInputConnection(surface.GetOutputPort())
    largest.SetExtractionModeToLargestRegion()
    transform = vtk.vtkTransform()
    transform.SetMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras(ct_node)))
    to_ras = vtk.vtkTransformPolyDataFilter()
    to_ras.SetInputConnection(largest.GetOutputPort())
    to_ras.SetTransform(transform)
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputConnection(to_ras.GetOutputPort())
    normals.SplittingOff()
    normals.ConsistencyOn()
    normals.AutoOrientNormalsOn()
    normals.Update()
    return normals.GetOutput()


def surface_actor(polydata: vtk.vtkPolyData, color, opacity: float) -> vtk.vtkActor:
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputData(polydata)
    mapper.ScalarVisibilityOff()
    actor = vtk.vtkActor()
    actor.SetMapper(mapper)
    actor.GetProperty().SetColor(*color)
    actor.GetProperty().SetOpacity(opacity)
    actor.GetProperty().SetSpecular(0.15)
    return actor


def model_in_world(model: slicer.vtkMRMLModelNode) -> vtk.vtkPolyData:
    """The model's polydata in world RAS (through its parent transform, if any)."""
    if model.GetParentTransformNode() is None:
        return model.GetPolyData()
    transform = vtk.vtkGeneralTransform()
    model.GetParentTransformNode().GetTransformToWorld(transform)
    to_world = vtk.vtkTransformPolyDataFilter()
    to_world.SetInputData(model.GetPolyData())
    to_world.SetTransform(transform)
    to_world.Update()
    return to_world.GetOutput()


def detector_corners(model: slicer.vtkMRMLModelNode) -> np.ndarray:
    """(4, 3) RAS of a detector model's corners in texture order: (s, t) = (0, 0), (1, 0), (1, 1), (0, 1),
    i.e. the image's top-left, top-right, bottom-right and bottom-left as read."""
    plane = model_in_world(model)
    points = numpy_support.vtk_to_numpy(plane.GetPoints().GetData()).astype(float)
    tcoords = np.rint(numpy_support.vtk_to_numpy(plane.GetPointData().GetTCoords())).astype(int)
    by_tcoord = {tuple(t): p for t, p in zip(tcoords, points, strict=True)}
    return np.array([by_tcoord[st] for st in [(0, 0), (1, 0), (1, 1), (0, 1)]])


def detector_actor(model: slicer.vtkMRMLModelNode) -> vtk.vtkActor:
    """The detector model as Slicer's 3D view draws it: its polydata, the texture of its display node
    (the view through its window/level), the display node's colour and lighting."""
    display_node = model.GetDisplayNode()
    texture = vtk.vtkTexture()
    texture.SetInputConnection(display_node.GetTextureImageDataConnection())
    texture.SetInterpolate(display_node.GetInterpolateTexture())
    texture.SetColorModeToDirectScalars()
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputData(model_in_world(model))
    mapper.ScalarVisibilityOff()
    actor = vtk.vtkActor()
    actor.SetMapper(mapper)
    actor.SetTexture(texture)
    prop = actor.GetProperty()
    prop.SetColor(*display_node.GetColor())
    prop.SetOpacity(display_node.GetOpacity())
    prop.SetAmbient(display_node.GetAmbient())
    prop.SetDiffuse(display_node.GetDiffuse())
    prop.SetSpecular(display_node.GetSpecular())
    prop.SetBackfaceCulling(display_node.GetBackfaceCulling())
    return actor


def lines_actor(points: np.ndarray, cells: list[list[int]], color, width: float, opacity: float = 1.0) -> vtk.vtkActor:
    """Unlit polylines through ``points`` (RAS mm); each cell lists point indices."""
    poly = vtk.vtkPolyData()
    vtk_points = vtk.vtkPoints()
    for p in points:
        vtk_points.InsertNextPoint(*p)
    lines = vtk.vtkCellArray()
    for cell in cells:
        lines.InsertNextCell(len(cell), cell)
    poly.SetPoints(vtk_points)
    poly.SetLines(lines)
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputData(poly)
    actor = vtk.vtkActor()
    actor.SetMapper(mapper)
    actor.GetProperty().SetColor(*color)
    actor.GetProperty().SetOpacity(opacity)
    actor.GetProperty().SetLineWidth(width)
    actor.GetProperty().LightingOff()
    return actor


def frame_actor(corners: np.ndarray, color, width: float) -> vtk.vtkActor:
    """The closed outline of a detector."""
    return lines_actor(corners, [[*range(len(corners)), 0]], color, width)


def rays_actor(source: np.ndarray, corners: np.ndarray, color) -> vtk.vtkActor:
    """Thin lines from a source to each detector corner."""
    points = np.vstack([source, corners])
    return lines_actor(points, [[0, index] for index in range(1, len(points))], color, 1.0, opacity=0.6)


def sphere_actor(center: np.ndarray, radius: float, color) -> vtk.vtkActor:
    sphere = vtk.vtkSphereSource()
    sphere.SetCenter(*center)
    sphere.SetRadius(radius)
    sphere.SetThetaResolution(24)
    sphere.SetPhiResolution(24)
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputConnection(sphere.GetOutputPort())
    actor = vtk.vtkActor()
    actor.SetMapper(mapper)
    actor.GetProperty().SetColor(*color)
    return actor


def to_display(renderer: vtk.vtkRenderer, point: np.ndarray) -> np.ndarray:
    renderer.SetWorldPoint(*point, 1.0)
    renderer.WorldToDisplay()
    return np.array(renderer.GetDisplayPoint()[:2])


def label_actor(renderer, text: str, points: np.ndarray, color, size: int, above: bool) -> vtk.vtkTextActor:
    """A 2D label centred above (or below) the screen footprint of ``points`` (RAS mm), so no plane hides it."""
    screen = np.array([to_display(renderer, p) for p in np.atleast_2d(points)])
    width, height = renderer.GetRenderWindow().GetSize()
    x = np.clip(screen[:, 0].mean(), 6 * len(text), width - 6 * len(text))
    y = min(screen[:, 1].max() + 8, height - size - 4) if above else max(screen[:, 1].min() - 8, size + 4)
    label = vtk.vtkTextActor()
    label.SetInput(text)
    label.SetDisplayPosition(int(round(x)), int(round(y)))
    prop = label.GetTextProperty()
    prop.SetFontSize(size)
    prop.SetColor(*color)
    prop.BoldOn()
    prop.SetJustificationToCentered()
    if above:
        prop.SetVerticalJustificationToBottom()
    else:
        prop.SetVerticalJustificationToTop()
    return label


def render_3d(
    ct_node, view_nodes, models, size: tuple[int, int], shrink: int, camera_offset, view_up, zoom: float
) -> np.ndarray:
    """The 3D view, offscreen: (H, W, 3) uint8, row 0 at the top."""
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(1.0, 1.0, 1.0)
    renderer.SetUseDepthPeeling(1)
    renderer.SetMaximumNumberOfPeels(8)

    renderer.AddActor(surface_actor(iso_surface(ct_node, BONE_HU, shrink), (0.95, 0.92, 0.84), 1.0))
    renderer.AddActor(surface_actor(iso_surface(ct_node, SKIN_HU, shrink), (0.87, 0.62, 0.52), 0.25))

    isocenter = attribute_point(view_nodes[0], "CT2X.isocenterRAS")
    renderer.AddActor(sphere_actor(isocenter, 8.0, (0.1, 0.1, 0.1)))
    labels = [("isocenter", isocenter, (0.1, 0.1, 0.1), 14, False)]
    for index, (node, model) in enumerate(zip(view_nodes, models, strict=True)):
        if not (model.GetDisplayNode().GetVisibility() and model.GetDisplayNode().GetVisibility3D()):
            continue
        color = VIEW_COLORS[index % len(VIEW_COLORS)]
        corners = detector_corners(model)
        source = attribute_point(node, "CT2X.sourceRAS")
        renderer.AddActor(detector_actor(model))
        renderer.AddActor(frame_actor(corners, color, 4.0))
        renderer.AddActor(rays_actor(source, corners, color))
        renderer.AddActor(sphere_actor(source, 12.0, color))
        name = node.GetName().removeprefix("CT2X ")
        labels.append((f"{index + 1}: {name}", corners, color, 16, True))
        labels.append((f"source {name.split(' CRAN')[0]}", source, color, 14, False))

    # Camera: the patient lies supine, anterior up (the AP source is under the table); we look
    # from beside the patient's right foot, a little from above, at the isocenter.
    camera = renderer.GetActiveCamera()
    camera.SetFocalPoint(*isocenter)
    camera.SetPosition(*(isocenter + np.array(camera_offset)))
    camera.SetViewUp(*view_up)
    renderer.ResetCamera()  # keeps the direction, centres the whole scene
    camera.Zoom(zoom)
    renderer.ResetCameraClippingRange()

    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetAlphaBitPlanes(1)
    window.SetMultiSamples(0)
    window.AddRenderer(renderer)
    window.SetSize(*size)  # labels are placed in display coordinates of this size
    for text_, points, color, font, above in labels:
        renderer.AddViewProp(label_actor(renderer, text_, points, color, font, above))

    # A small R/A/S triad in the lower right corner, turned with the main camera.
    triad = vtk.vtkRenderer()
    triad.SetViewport(0.80, 0.0, 1.0, 0.24)
    triad.SetBackground(1.0, 1.0, 1.0)
    triad.InteractiveOff()
    axes = vtk.vtkAxesActor()
    axes.SetXAxisLabelText("R")
    axes.SetYAxisLabelText("A")
    axes.SetZAxisLabelText("S")
    axes.SetShaftTypeToCylinder()
    axes.SetTotalLength(1.0, 1.0, 1.0)
    for caption_actor in (axes.GetXAxisCaptionActor2D(), axes.GetYAxisCaptionActor2D(), axes.GetZAxisCaptionActor2D()):
        caption_actor.GetCaptionTextProperty().SetColor(0.1, 0.1, 0.1)
        caption_actor.GetCaptionTextProperty().ShadowOff()
        caption_actor.GetCaptionTextProperty().SetFontSize(18)
        caption_actor.GetTextActor().SetTextScaleModeToNone()
    triad.AddViewProp(axes)
    direction = np.array(camera.GetDirectionOfProjection())
    triad_camera = triad.GetActiveCamera()
    triad_camera.SetFocalPoint(0.0, 0.0, 0.0)
    triad_camera.SetPosition(*(-5.0 * direction))
    triad_camera.SetViewUp(*camera.GetViewUp())
    triad.ResetCamera()
    triad_camera.Zoom(0.9)

    window.AddRenderer(triad)
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.SetInputBufferTypeToRGB()
    grab.ReadFrontBufferOff()
    grab.Update()
    image = grab.GetOutput()
    width, height, _ = image.GetDimensions()
    pixels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, 3)
    return np.ascontiguousarray(pixels[::-1])  # VTK's row 0 is the bottom


# ------------------------------------------------------------------ the slice views
def slice_logics(scene: slicer.vtkMRMLScene, slice_nodes) -> tuple[slicer.vtkMRMLApplicationLogic, list]:
    """What Slicer's slice widgets own: one vtkMRMLSliceLogic per slice node, under one application
    logic (returned too: keep it while the slice logics are used)."""
    application = slicer.vtkMRMLApplicationLogic()
    application.SetMRMLScene(scene)
    collection = vtk.vtkCollection()
    logics = []
    for node in slice_nodes:
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLApplicationLogic(application)
        logic.SetSliceNode(node)  # before the scene, as qMRMLLayoutSliceViewFactory::createViewFromNode
        logic.SetMRMLScene(scene)
        collection.AddItem(logic)
        logics.append(logic)
    application.SetSliceLogics(collection)
    return application, logics


def slice_view_image(logic: slicer.vtkMRMLSliceLogic, width: int, height: int) -> np.ndarray:
    """What a slice widget of ``width`` x ``height`` pixels shows: (H, W, 3) uint8, row 0 at the top.

    The widget's size goes to the slice node (vtkMRMLSliceLogic::ResizeSliceNode), then the view
    is fitted as the panel fits it (``FitSliceToAll``); the picture is the logic's blended output
    (the window/levelled layers), on Slicer's black slice-view background.
    """
    logic.ResizeSliceNode(width, height)
    logic.FitSliceToAll()
    connection = logic.GetImageDataConnection()
    producer = connection.GetProducer()
    producer.Update()
    image = producer.GetOutputDataObject(connection.GetIndex())
    columns, rows, _ = image.GetDimensions()
    rgba = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(rows, columns, -1)
    rgb = rgba[..., :3].astype(np.float32) * (rgba[..., 3:4] / 255.0) if rgba.shape[2] == 4 else rgba[..., :3]
    return np.ascontiguousarray(rgb[::-1].astype(np.uint8))  # VTK's row 0 is the bottom of the view


def patient_direction(ras_direction: np.ndarray) -> str:
    """Patient-direction letters of a RAS direction, strongest first (as on a radiograph: "R", "LP", "SA")."""
    letters = []
    for axis in np.argsort(-np.abs(ras_direction)):
        if abs(ras_direction[axis]) >= 0.3:
            letters.append(PATIENT_DIRECTIONS[2 * axis + (0 if ras_direction[axis] > 0 else 1)])
    return "".join(letters)


def screen_directions(slice_node: slicer.vtkMRMLSliceNode) -> dict[str, str]:
    """The patient directions at the slice view's left, right, top and bottom edges (from SliceToRAS)."""
    m = slicer.util.arrayFromVTKMatrix(slice_node.GetSliceToRAS())
    right, up = m[:3, 0], m[:3, 1]
    return {
        "left": patient_direction(-right),
        "right": patient_direction(right),
        "top": patient_direction(up),
        "bottom": patient_direction(-up),
    }


# ------------------------------------------------------------------ the picture
def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def draw_bar(draw: ImageDraw.ImageDraw, box, label: str, text: str, swatch=None) -> None:
    """A view's controller bar, as in Slicer's layout: the view label in the view colour, then the view's text."""
    x0, y0, x1, y1 = box
    draw.rectangle(box, fill=(236, 236, 236))
    draw.line([(x0, y1), (x1, y1)], fill=(190, 190, 190))
    x = x0 + 4
    if label:
        draw.rectangle((x, y0 + 3, x + 20, y1 - 3), fill=display.VIEW_COLOR)
        draw.text((x + 10, (y0 + y1) / 2), label, fill="white", font=font(14), anchor="mm")
        x += 26
    if swatch is not None:
        draw.rectangle((x, y0 + 7, x + 10, y1 - 7), fill=tuple(int(255 * c) for c in swatch))
        x += 16
    draw.text((x, (y0 + y1) / 2), text, fill=(30, 30, 30), font=font(14), anchor="lm")


def draw_directions(draw: ImageDraw.ImageDraw, box, directions: dict[str, str]) -> None:
    """Patient-direction letters at the middle of each edge of a slice view (yellow, outlined)."""
    x0, y0, x1, y1 = box
    places = {
        "left": ((x0 + 6, (y0 + y1) / 2), "lm"),
        "right": ((x1 - 6, (y0 + y1) / 2), "rm"),
        "top": (((x0 + x1) / 2, y0 + 5), "mt"),
        "bottom": (((x0 + x1) / 2, y1 - 5), "mb"),
    }
    for edge, (xy, anchor) in places.items():
        draw.text(
            xy, directions[edge], fill=(255, 220, 60), font=font(17), anchor=anchor, stroke_width=2, stroke_fill="black"
        )


def compose(
    ct_node, result_volumes, shown: display.ViewsDisplay, rows: list[list[str]], size, caption: str, **view_3d
) -> Image.Image:
    """The CT2X layout in one picture: the 3D view left, the slice views in their grid right, the caption below."""
    width, height = size
    caption_height = CAPTION_LINE * (caption.count("\n") + 1) + 12
    panes_height = height - caption_height
    left_width = width // 2  # the layout's splitSize 500 / 500
    picture = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(picture)

    view_3d_pixels = render_3d(
        ct_node, result_volumes, shown.models, (left_width, panes_height - BAR_HEIGHT), **view_3d
    )
    picture.paste(Image.fromarray(view_3d_pixels), (0, BAR_HEIGHT))
    draw_bar(draw, (0, 0, left_width - 1, BAR_HEIGHT - 1), "", "3D view: detector models, CT surfaces, sources")

    nodes = {node.GetLayoutName(): node for node in shown.slice_nodes}
    application, logics = slice_logics(slicer.mrmlScene, shown.slice_nodes)  # application: kept while they draw
    logics = dict(zip(shown.layout_names, logics, strict=True))
    volumes = dict(zip(shown.layout_names, result_volumes, strict=False))
    row_height = panes_height // len(rows)
    for r, row in enumerate(rows):
        cell_width = (width - left_width) // len(row)
        for c, name in enumerate(row):
            x0, y0 = left_width + c * cell_width, r * row_height
            x1 = width if c == len(row) - 1 else x0 + cell_width
            y1 = panes_height if r == len(rows) - 1 else y0 + row_height
            index = shown.layout_names.index(name)
            image = slice_view_image(logics[name], x1 - x0 - 1, y1 - y0 - BAR_HEIGHT)
            picture.paste(Image.fromarray(image), (x0 + 1, y0 + BAR_HEIGHT))
            bar = (x0 + 1, y0, x1 - 1, y0 + BAR_HEIGHT - 1)
            color = VIEW_COLORS[index % len(VIEW_COLORS)]
            draw_bar(draw, bar, nodes[name].GetLayoutLabel(), volumes[name].GetName(), color)
            draw_directions(draw, (x0 + 1, y0 + BAR_HEIGHT, x1 - 1, y1 - 1), screen_directions(nodes[name]))
            draw.line([(x0, y0), (x0, y1)], fill="white")
    draw.multiline_text((14, panes_height + 7), caption, fill=(40, 40, 40), font=font(15), spacing=4)
    return picture


def shrink_png(png: bytes, max_bytes: int = 450_000) -> bytes:
    """Re-encode with a 256-colour palette (Pillow) when the PNG is larger than ``max_bytes``."""
    if len(png) <= max_bytes:
        return png
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ct", nargs="?", type=Path, default=DEFAULT_CT, help="CT file (NIfTI, NRRD...)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "slicer_scene.png")
    parser.add_argument("--angles", default="-60, 0, 60", help="views as in the module, e.g. '-60, 0, 60' or '0, 90'")
    parser.add_argument(
        "--model", default="bundled", help="bundled (default), a model file, or physics (DeepDRR-physics DRRs)"
    )
    parser.add_argument("--model-style", default="chest-1", help="a style stored with the model (default: chest-1)")
    parser.add_argument("--step", type=float, default=0.5, help="with --model physics: ray step, voxels (module: 0.1)")
    parser.add_argument("--pixels", type=int, default=256, help="detector pixels a side (module: 256)")
    parser.add_argument("--shrink", type=int, default=2, help="CT downsampling for the surfaces")
    parser.add_argument("--camera", default="1100, 1100, -1500", help="camera position from the isocenter, RAS mm")
    parser.add_argument("--view-up", default="0, 1, 0", help="camera view-up direction, RAS (default: anterior)")
    parser.add_argument("--zoom", type=float, default=1.25, help="3D camera zoom after fitting the whole scene")
    parser.add_argument("--size", default="1400x800", help="picture size, WIDTHxHEIGHT")
    args = parser.parse_args(argv)

    scene, _colors = new_scene()  # _colors: kept until the picture is drawn
    ct_node = load_ct(args.ct)
    parameters = SynthesisParameters(angles=parse_angles(args.angles), detector_pixels=args.pixels)
    if args.model == "physics":
        logic = SynthesisLogic(physics_drr_renderer(step=args.step))
        how = f"ray step {args.step:g} voxel"
    else:
        logic = SynthesisLogic()
        source, model_file = (MODEL_BUNDLED, "") if args.model == "bundled" else (MODEL_FILE, args.model)
        choice = RendererChoice(source, model_file, style_source=STYLE_STORED, model_style=args.model_style)
        logic.choose_renderer(choice)
        how = f"{'bundled model' if args.model == 'bundled' else Path(args.model).name}, style {args.model_style}"
    started = time.perf_counter()
    result = logic.synthesize(ct_node, parameters, lambda done, total, text: print(text, flush=True))
    print(f"{len(result.volumes)} views in {time.perf_counter() - started:.1f} s")
    for node in result.volumes:
        print(f"  {node.GetName()}: source RAS {node.GetAttribute('CT2X.sourceRAS')}")

    shown = display.show_views(scene, result.volumes)  # as the panel does after Synthesize
    if shown.message:
        print(shown.message)
    layout_node = display.scene_layout_node(scene)
    rows = layout_rows(layout_node.GetCurrentLayoutDescription())

    view = result.volumes[0]
    sdd, sid = float(view.GetAttribute("CT2X.sdd")), float(view.GetAttribute("CT2X.sid"))
    width = view.GetImageData().GetDimensions()[0] * view.GetSpacing()[0]
    caption = (
        f"{args.ct.name} in a slicer-core MRML scene: CT2XSynthesis logic, then its display "
        f"(show_views: layout {layout_node.GetViewArrangement()}, slice views drawn by vtkMRMLSliceLogic)\n"
        f"renderer {logic.mode} ({how}); views {args.angles} (primary, deg), SDD {sdd:g} mm, SID {sid:g} mm, "
        f"detector {args.pixels} px over {width:.0f} mm\n"
        f"3D: body at {SKIN_HU:g} HU, bone at {BONE_HU:g} HU; slice views: X-ray window/level, "
        "patient directions at the edges"
    )
    picture = compose(
        ct_node,
        result.volumes,
        shown,
        rows,
        tuple(int(v) for v in args.size.split("x")),
        caption,
        shrink=args.shrink,
        camera_offset=[float(v) for v in args.camera.split(",")],
        view_up=[float(v) for v in args.view_up.split(",")],
        zoom=args.zoom,
    )
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(shrink_png(buffer.getvalue()))
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()

"""Render the README's picture of CT2XSynthesis views placed in a real MRML scene.

What it does, step by step:

1. builds a real MRML scene with PyPI's ``slicer-core`` (``slicer.mrmlScene = slicer.vtkMRMLScene()``)
   and reads the CT with Slicer's own ``vtkMRMLVolumeArchetypeStorageNode``, so the volume
   node has the IJKToRAS that Slicer gives it when you drag the file in;
2. runs the CT2XSynthesis module logic (``SynthesisLogic.synthesize``) with the renderer the
   panel would choose: by default the learned CT2X-GAN synthesis with the bundled model in a
   style stored with it (``--model``, ``--model-style``; ``--model physics`` renders DRRs with
   DeepDRR's physics instead); it adds one single-slice volume node per view;
3. draws, offscreen with VTK, the CT's body outline (iso-surface on a downsampled copy),
   its bones, each view's image as a textured rectangle, the sources, the isocenter and
   the rays from each source to its detector corners. Every position comes from the
   scene: the image corners from each view node's IJKToRAS, the source and the isocenter
   from the ``CT2X.sourceRAS`` / ``CT2X.isocenterRAS`` attributes the module wrote;
   nothing is recomputed from the angles.

Run from the repository root (needs ``slicer-core``, the ``[dev]`` extra, and an OpenGL
context; EGL or OSMesa builds of VTK render without a display)::

    .venv/bin/python docs/render_slicer_scene.py /path/to/ct.nii.gz --out docs/slicer_scene.png
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "CT2XSynthesis"))

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


# ------------------------------------------------------------------- the scene
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


# ------------------------------------------------------------------ the actors
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


def view_corners_ras(view_node: slicer.vtkMRMLScalarVolumeNode) -> np.ndarray:
    """(4, 3) outer corners of the image as placed in the scene: index (-0.5, -0.5), (W-0.5, -0.5), ..."""
    width, height, _ = view_node.GetImageData().GetDimensions()
    m = ijk_to_ras(view_node)
    ijk = [(-0.5, -0.5), (width - 0.5, -0.5), (width - 0.5, height - 0.5), (-0.5, height - 0.5)]
    return np.array([(m @ np.array([i, j, 0.0, 1.0]))[:3] for i, j in ijk])


def image_actor(view_node: slicer.vtkMRMLScalarVolumeNode) -> vtk.vtkActor:
    """The view's image as a textured rectangle: texture (s, t) = (column, row), plane from the node's IJKToRAS."""
    image = slicer.util.arrayFromVolume(view_node)[0]  # (H, W): row j, column i
    low, high = np.percentile(image, [1.0, 99.5])
    gray = np.clip((image - low) / max(high - low, 1e-6), 0.0, 1.0)
    gray = (255.0 * gray**0.8).astype(np.uint8)  # -log(I): bone bright, as a radiograph is shown
    texture_image = vtk.vtkImageData()
    texture_image.SetDimensions(gray.shape[1], gray.shape[0], 1)
    texture_image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(gray.ravel(), deep=True))
    texture = vtk.vtkTexture()
    texture.SetInputData(texture_image)
    texture.InterpolateOn()
    texture.SetColorModeToDirectScalars()

    corners = view_corners_ras(view_node)
    plane = vtk.vtkPlaneSource()
    plane.SetOrigin(*corners[0])  # texture (0, 0) = pixel (0, 0)'s outer corner
    plane.SetPoint1(*corners[1])  # s runs along the image columns (i)
    plane.SetPoint2(*corners[3])  # t runs along the image rows (j)
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputConnection(plane.GetOutputPort())
    actor = vtk.vtkActor()
    actor.SetMapper(mapper)
    actor.SetTexture(texture)
    actor.GetProperty().LightingOff()
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
    return surface_actor_from(sphere, color)


def surface_actor_from(source: vtk.vtkAlgorithm, color) -> vtk.vtkActor:
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputConnection(source.GetOutputPort())
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
    height = renderer.GetRenderWindow().GetSize()[1]
    x = screen[:, 0].mean()
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


# ------------------------------------------------------------------- rendering
def render(
    ct_node, view_nodes, out: Path, size: tuple[int, int], caption: str, shrink: int, camera_offset, view_up
) -> None:
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(1.0, 1.0, 1.0)
    renderer.SetUseDepthPeeling(1)
    renderer.SetMaximumNumberOfPeels(8)

    renderer.AddActor(surface_actor(iso_surface(ct_node, BONE_HU, shrink), (0.95, 0.92, 0.84), 1.0))
    renderer.AddActor(surface_actor(iso_surface(ct_node, SKIN_HU, shrink), (0.87, 0.62, 0.52), 0.25))

    isocenter = attribute_point(view_nodes[0], "CT2X.isocenterRAS")
    renderer.AddActor(sphere_actor(isocenter, 8.0, (0.1, 0.1, 0.1)))
    labels = [("isocenter", isocenter, (0.1, 0.1, 0.1), 15, False)]
    for index, node in enumerate(view_nodes):
        color = VIEW_COLORS[index % len(VIEW_COLORS)]
        corners = view_corners_ras(node)
        source = attribute_point(node, "CT2X.sourceRAS")
        renderer.AddActor(image_actor(node))
        renderer.AddActor(frame_actor(corners, color, 4.0))
        renderer.AddActor(rays_actor(source, corners, color))
        renderer.AddActor(sphere_actor(source, 12.0, color))
        name = node.GetName().removeprefix("CT2X ")
        labels.append((name, corners, color, 18, True))
        labels.append((f"source {name.split(' CRAN')[0]}", source, color, 15, False))

    text = vtk.vtkTextActor()
    text.SetInput(caption)
    text.GetTextProperty().SetFontSize(17)
    text.GetTextProperty().SetColor(0.15, 0.15, 0.15)
    text.SetDisplayPosition(14, 12)
    renderer.AddViewProp(text)

    # Camera: the patient lies supine, anterior up (the AP source is under the table); we look
    # from beside the patient's right foot, a little from above, at the isocenter.
    camera = renderer.GetActiveCamera()
    camera.SetFocalPoint(*isocenter)
    camera.SetPosition(*(isocenter + np.array(camera_offset)))
    camera.SetViewUp(*view_up)
    renderer.ResetCamera()  # keeps the direction, centres the whole scene
    camera.Zoom(1.25)
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
    triad.SetViewport(0.84, 0.08, 1.0, 0.36)
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
        caption_actor.GetCaptionTextProperty().SetFontSize(20)
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
    grab.ReadFrontBufferOff()
    grab.Update()
    writer = vtk.vtkPNGWriter()
    writer.SetInputConnection(grab.GetOutputPort())
    writer.WriteToMemoryOn()
    writer.Write()
    png = bytes(numpy_support.vtk_to_numpy(writer.GetResult()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(shrink_png(png))


def shrink_png(png: bytes, max_bytes: int = 450_000) -> bytes:
    """Re-encode with a 256-colour palette (Pillow) when the PNG is larger than ``max_bytes``."""
    if len(png) <= max_bytes:
        return png
    from PIL import Image

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
    parser.add_argument("--size", default="1200x800", help="picture size, WIDTHxHEIGHT")
    args = parser.parse_args(argv)

    slicer.mrmlScene = slicer.vtkMRMLScene()
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

    view = result.volumes[0]
    sdd, sid = float(view.GetAttribute("CT2X.sdd")), float(view.GetAttribute("CT2X.sid"))
    width = view.GetImageData().GetDimensions()[0] * view.GetSpacing()[0]
    caption = (
        f"{args.ct.name} in a slicer-core MRML scene, CT2XSynthesis logic\n"
        f"renderer {logic.mode} ({how})\n"
        f"views {args.angles} (primary, deg), SDD {sdd:g} mm, SID {sid:g} mm, detector {args.pixels} px over "
        f"{width:.0f} mm; body at {SKIN_HU:g} HU, bone at {BONE_HU:g} HU"
    )
    render(
        ct_node,
        result.volumes,
        args.out,
        tuple(int(v) for v in args.size.split("x")),
        caption,
        args.shrink,
        [float(v) for v in args.camera.split(",")],
        [float(v) for v in args.view_up.split(",")],
    )
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()

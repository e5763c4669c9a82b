"""CT2XSynthesis logic against a real MRML scene (PyPI ``slicer-core``, no Qt, no Slicer GUI).

The renderer is mostly injected: a cheap fake that encodes the geometry (each pixel holds its
own index, and the pixel where ``CArm.project`` sends a landmark voxel is marked), so those
tests check orientation, not physics (each view's covered fraction, ``ct2x.drr.coverage``, is
recorded whatever the renderer). The tests named ``*chain*`` run the panel's physics choices
for real: the imaging chain (``ct2x.imaging.render.render_radiographs``, as ``ct2x drr``), its
fit to a style reference, and the raw DRR.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the MRML library of PyPI's slicer-core (pip install slicer-core)")

import vtk  # noqa: E402  (installed with slicer-core)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "CT2XSynthesis"))

from CT2XSynthesisLib.dependencies import MINIMUM_SLICER_VERSION, slicer_version_error  # noqa: E402
from CT2XSynthesisLib.logic import (  # noqa: E402
    DEFAULT_SEED,
    DRR_PHYSICS_MODE,
    IMAGING_CHOICES,
    LEARNED_MODE,
    MODEL_BUNDLED,
    MODEL_NONE,
    PREVIEW_NODE_NAME,
    PREVIEW_STEP_VOXELS,
    STYLE_CODE_PREFIX,
    STYLE_FILE,
    STYLE_STORED,
    STYLE_VOLUME,
    ChainRenderer,
    LearnedRenderer,
    PhysicsDRRRenderer,
    RendererChoice,
    SynthesisLogic,
    SynthesisParameters,
    as_renderer,
    build_renderer,
    chain_mode,
    ct_volume_from_node,
    describe_renderer,
    fit_view,
    imaging_controls,
    learned_renderer,
    parse_angles,
    physics_drr_renderer,
    place_preview,
    stored_style_names,
    style_reference,
    style_reference_key,
    view_from_attributes,
    view_name,
)
from CT2XSynthesisLib.preview import PreviewWorker  # noqa: E402

from ct2x.drr import coverage  # noqa: E402
from ct2x.errors import CT2XError  # noqa: E402
from ct2x.geometry import DEFAULT_DETECTOR_WIDTH_MM, CArm  # noqa: E402
from ct2x.volume import CTVolume  # noqa: E402

RAS = np.diag([-1.0, -1.0, 1.0])  # LPS <-> RAS, written out independently of the Lib
MARK = -1.0  # value of the pixel the landmark projects to
ANGLES = ((-30.0, 0.0), (0.0, 0.0), (30.0, 15.0))
PIXELS = 64


def _rotation_z(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _ct_lps() -> tuple[CTVolume, tuple[int, int, int]]:
    """A small oblique, anisotropic CT in LPS with one very bright landmark voxel (i, j, k)."""
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1000, 200, size=(18, 22, 26)).astype(np.float32)  # (K, J, I)
    landmark = (20, 5, 12)  # (i, j, k): toward +i (patient left, before the oblique turn)
    hu[landmark[2], landmark[1], landmark[0]] = 3000.0
    direction = _rotation_z(20.0)
    return CTVolume(hu, np.array([1.5, 2.0, 2.5]), np.array([-30.0, -10.0, 40.0]), direction), landmark


def _add_ct_node(ct: CTVolume) -> slicer.vtkMRMLScalarVolumeNode:
    """Add the LPS CT to the scene the way Slicer stores it: voxels (K, J, I) with an IJKToRAS."""
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :] = RAS @ ct.ijk_to_lps[:3, :]
    return slicer.util.addVolumeFromArray(ct.array.copy(), ijk_to_ras, name="CT")


def _geometry_renderer(ct: CTVolume, views: list[CArm]) -> np.ndarray:
    """Pixel (row v, column u) holds ``u + 1000 v``; the landmark's projection holds :data:`MARK`."""
    k, j, i = np.unravel_index(int(np.argmax(ct.array)), ct.array.shape)
    landmark_lps = ct.ijk_to_lps @ np.array([i, j, k, 1.0])
    images = []
    for view in views:
        h, w = view.detector_shape
        image = np.arange(w, dtype=np.float32)[None, :] + 1000.0 * np.arange(h, dtype=np.float32)[:, None]
        u, v = view.project(landmark_lps[:3])[0]
        image[int(round(v)), int(round(u))] = MARK
        images.append(image)
    return np.stack(images)


def _ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


@pytest.fixture
def ct_and_node(scene):
    ct, landmark = _ct_lps()
    return ct, landmark, _add_ct_node(ct)


def _params(**kw) -> SynthesisParameters:
    return SynthesisParameters(angles=ANGLES, detector_pixels=PIXELS, **kw)


def test_three_views_are_single_slice_float32_volumes_on_their_detector_planes(ct_and_node, scene):
    ct, landmark, node = ct_and_node
    voxels_before = slicer.util.arrayFromVolume(node).copy()
    result = SynthesisLogic(_geometry_renderer).synthesize(node, _params())

    assert len(result.volumes) == 3
    assert np.array_equal(slicer.util.arrayFromVolume(node), voxels_before), "the input CT was modified"
    isocenter_lps = ct.center_lps  # the CT's bounding-box centre, the default isocenter
    pixel_mm = DEFAULT_DETECTOR_WIDTH_MM / PIXELS
    landmark_ras = _ijk_to_ras(node) @ np.array([*landmark, 1.0])

    for (primary, secondary), out in zip(ANGLES, result.volumes, strict=True):
        assert out.IsA("vtkMRMLScalarVolumeNode")
        assert out.GetName() == view_name(primary, secondary)
        assert out.GetImageData().GetDimensions() == (PIXELS, PIXELS, 1)
        assert out.GetImageData().GetScalarTypeAsString() == "float"
        image = slicer.util.arrayFromVolume(out)
        assert image.shape == (1, PIXELS, PIXELS) and image.dtype == np.float32

        expected = CArm(
            primary, secondary, detector_shape=(PIXELS, PIXELS), pixel_spacing=(pixel_mm, pixel_mm),
            isocenter=tuple(isocenter_lps),
        )  # fmt: skip
        m = _ijk_to_ras(out)
        centre_ras = m @ np.array([(PIXELS - 1) / 2, (PIXELS - 1) / 2, 0.0, 1.0])
        np.testing.assert_allclose(centre_ras[:3], RAS @ expected.detector_center, atol=1e-6)
        source_ras = RAS @ expected.source
        normal = m[:3, 2] / np.linalg.norm(m[:3, 2])
        np.testing.assert_allclose(normal, RAS @ expected.detector_normal, atol=1e-9)
        assert np.dot(source_ras - centre_ras[:3], normal) == pytest.approx(expected.sdd), "normal must face the source"
        np.testing.assert_allclose(out.GetSpacing(), (pixel_mm, pixel_mm, 1.0), rtol=1e-9)

        # pixel values are stored as rendered (no flip), except the landmark's mark
        rows, cols = np.mgrid[0:PIXELS, 0:PIXELS]
        unmarked = image[0] != MARK
        np.testing.assert_array_equal(image[0][unmarked], (cols + 1000 * rows)[unmarked])
        (v,), (u,) = np.nonzero(image[0] == MARK)
        # the marked pixel lies on the ray from the source through the landmark (both in RAS)
        pixel_ras = (m @ np.array([u, v, 0.0, 1.0]))[:3]
        ray = (landmark_ras[:3] - source_ras) / np.linalg.norm(landmark_ras[:3] - source_ras)
        off_ray = (pixel_ras - source_ras) - np.dot(pixel_ras - source_ras, ray) * ray
        assert np.linalg.norm(off_ray) < pixel_mm, "the image is not where the geometry says"

        stored = view_from_attributes(out)
        assert stored == expected
        assert out.GetAttribute("CT2X.mode") == DRR_PHYSICS_MODE
        covered = float(out.GetAttribute("CT2X.coverageFraction"))  # whatever the renderer: ct2x.drr.coverage
        assert covered == pytest.approx(float(coverage(ct, [expected]).float().mean()), abs=1e-6)
        np.testing.assert_allclose([float(x) for x in out.GetAttribute("CT2X.pose").split()], expected.pose)
        np.testing.assert_allclose([float(x) for x in out.GetAttribute("CT2X.sourceRAS").split()], source_ras)

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    parents = {hierarchy.GetItemParent(hierarchy.GetItemByDataNode(n)) for n in result.volumes}
    assert parents == {result.folder_item}
    assert hierarchy.GetItemName(result.folder_item) == "CT2X views of CT"
    assert result.markups is None


def test_ap_view_shows_patient_left_on_image_right_and_head_up(ct_and_node):
    _, _, node = ct_and_node
    (out,) = SynthesisLogic(_geometry_renderer).synthesize(node, SynthesisParameters(angles=((0.0, 0.0),))).volumes
    m = _ijk_to_ras(out)
    column, row = m[:3, 0] / np.linalg.norm(m[:3, 0]), m[:3, 1] / np.linalg.norm(m[:3, 1])
    np.testing.assert_allclose(column, [-1.0, 0.0, 0.0], atol=1e-12)  # image right = patient Left = -R
    np.testing.assert_allclose(row, [0.0, 0.0, -1.0], atol=1e-12)  # image down = Inferior
    np.testing.assert_allclose(m[:3, 2], [0.0, -1.0, 0.0], atol=1e-12)  # normal toward the posterior source


def test_markups_hold_the_isocenter_and_each_source(ct_and_node):
    ct, _, node = ct_and_node
    result = SynthesisLogic(_geometry_renderer).synthesize(node, _params(add_markups=True))
    markups = result.markups
    assert markups.GetNumberOfControlPoints() == 1 + len(ANGLES)
    position = [0.0, 0.0, 0.0]
    markups.GetNthControlPointPosition(0, position)
    np.testing.assert_allclose(position, RAS @ ct.center_lps, atol=1e-9)
    for index, (primary, secondary) in enumerate(ANGLES, start=1):
        markups.GetNthControlPointPosition(index, position)
        view = CArm(primary, secondary, isocenter=tuple(ct.center_lps))
        np.testing.assert_allclose(position, RAS @ view.source, atol=1e-9)
        assert markups.GetNthControlPointLabel(index) == "source " + view_name(primary, secondary)[5:]


def test_isocenter_given_in_ras_and_ct_under_a_transform(ct_and_node, scene):
    ct, _, node = ct_and_node
    logic = SynthesisLogic(_geometry_renderer)
    (out,) = logic.synthesize(node, SynthesisParameters(angles=((0.0, 0.0),), isocenter_ras=(5.0, -7.0, 9.0))).volumes
    assert view_from_attributes(out).isocenter == (-5.0, 7.0, 9.0)

    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[:3, 3] = (12.0, 0.0, -4.0)  # RAS mm
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(shift))
    node.SetAndObserveTransformNodeID(transform.GetID())
    (moved,) = logic.synthesize(node, SynthesisParameters(angles=((0.0, 0.0),))).volumes
    np.testing.assert_allclose(view_from_attributes(moved).isocenter, ct.center_lps + [-12.0, 0.0, -4.0], atol=1e-9)


def test_ct_volume_from_node_copies_voxels_and_converts_to_lps(ct_and_node):
    ct, _, node = ct_and_node
    copy = ct_volume_from_node(node)
    np.testing.assert_allclose(copy.ijk_to_lps, ct.ijk_to_lps, atol=1e-9)
    np.testing.assert_array_equal(copy.array, ct.array)
    copy.array[:] = 0
    assert slicer.util.arrayFromVolume(node).max() == 3000.0


def test_a_failing_renderer_leaves_the_scene_unchanged(ct_and_node, scene):
    _, _, node = ct_and_node

    def broken(ct, views):
        if views[0].primary > 0:
            raise RuntimeError("out of memory")
        return _geometry_renderer(ct, views)

    count = scene.GetNumberOfNodes()
    with pytest.raises(CT2XError, match="^RuntimeError: out of memory$"):
        SynthesisLogic(broken).synthesize(node, _params())
    assert scene.GetNumberOfNodes() == count

    with pytest.raises(CT2XError, match="expected"):
        SynthesisLogic(lambda ct, views: np.zeros((1, 3, 3))).synthesize(node, _params())
    assert scene.GetNumberOfNodes() == count


def test_preview_reuses_one_coarse_node_with_the_same_physical_detector(ct_and_node, scene):
    _, _, node = ct_and_node
    logic = SynthesisLogic(lambda ct, views: pytest.fail("the preview must use the worker's renderer"))
    worker = PreviewWorker(as_renderer(_geometry_renderer))

    def preview(parameters):
        assert worker.request(logic.preview_request(node, parameters))
        assert worker.wait_idle(30)
        return place_preview(scene, worker.take_result())

    first = preview(SynthesisParameters(angles=((10.0, 0.0), (20.0, 0.0))))
    second = preview(SynthesisParameters(angles=((-40.0, 5.0),)))
    worker.close()
    assert first is second and first.GetName() == PREVIEW_NODE_NAME
    assert len(slicer.util.getNodes(PREVIEW_NODE_NAME + "*")) == 1
    assert first.GetImageData().GetDimensions() == (128, 128, 1)
    view = view_from_attributes(first)
    assert (view.primary, view.secondary) == (-40.0, 5.0)
    assert view.detector_size_mm == pytest.approx((DEFAULT_DETECTOR_WIDTH_MM, DEFAULT_DETECTOR_WIDTH_MM))


def test_parse_angles_and_view_names():
    assert parse_angles("-30, 0; 30/15", default_secondary=5) == ((-30.0, 5.0), (0.0, 5.0), (30.0, 15.0))
    assert parse_angles(" 12.5 / -10 ") == ((12.5, -10.0),)
    for bad in ("", " , ", "LAO 30", "30/", "30/15/2"):
        with pytest.raises(CT2XError):
            parse_angles(bad)
    assert view_name(30, 0) == "CT2X LAO 30 CRAN 0"
    assert view_name(-45, -10.5) == "CT2X RAO 45 CAUD 10.5"


def test_bad_input_is_reported_as_a_ct2x_error(scene):
    flat = slicer.util.addVolumeFromArray(np.zeros((1, 8, 8), np.float32), name="flat")
    with pytest.raises(CT2XError, match="not a 3D CT"):
        ct_volume_from_node(flat)
    with pytest.raises(CT2XError, match="select a CT"):
        SynthesisLogic(_geometry_renderer).synthesize(None, _params())


def test_physics_drr_renderer_puts_the_bone_on_the_image_right_in_ap(scene):
    """Through the real DRR (skipped until ``ct2x.drr`` lands): a bone rod on the patient's
    left must appear on the right half of the AP image, and the image must be brighter there."""
    pytest.importorskip("ct2x.drr", reason="ct2x.drr (the physics DRR) is not in this checkout yet")
    size, spacing = 24, 4.0
    k, j, i = np.meshgrid(*(np.arange(size, dtype=np.float32),) * 3, indexing="ij")
    c = (size - 1) / 2
    x, y = (i - c) * spacing, (j - c) * spacing  # LPS mm: x = Left, y = Posterior
    hu = np.full((size, size, size), -1000.0, np.float32)
    hu[x**2 + y**2 <= (0.4 * size * spacing) ** 2] = 0.0
    hu[(x - 20) ** 2 + y**2 <= 36] = 1500.0  # bone rod 20 mm to the patient's left
    node = _add_ct_node(CTVolume(hu, np.full(3, spacing), np.full(3, -c * spacing), np.eye(3)))
    params = SynthesisParameters(angles=((0.0, 0.0),), detector_pixels=32)
    (out,) = SynthesisLogic(physics_drr_renderer(step=0.5)).synthesize(node, params).volumes
    image = slicer.util.arrayFromVolume(out)[0]
    middle = image[12:20]
    assert middle[:, 17:].max() > middle[:, :15].max()


def test_learned_renderer_places_bundled_model_views_on_the_detector(scene):
    """The learned synthesis (bundled model) through the module's logic: one single-slice float32
    node per view at the requested detector size (rendered at those pixels: the physics anchor), on the same
    plane as any view, mode recorded; a style reference given as a 2D array (a Slicer 2D volume)
    changes the image. The model's image quality is not judged here."""
    node = _add_ct_node(_ct_lps()[0])
    params = SynthesisParameters(angles=((0.0, 0.0), (40.0, 0.0)), detector_pixels=48)
    logic = SynthesisLogic(learned_renderer(), mode=LEARNED_MODE)
    volumes = logic.synthesize(node, params).volumes
    for out in volumes:
        image = slicer.util.arrayFromVolume(out)
        assert image.shape == (1, 48, 48) and image.dtype == np.float32
        assert 0 <= image.min() and image.max() <= 1 and image.std() > 0.01
        assert out.GetAttribute("CT2X.mode") == LEARNED_MODE
        expected = params.views(logic.imaged_ct(node).volume())[volumes.index(out)]
        np.testing.assert_allclose(view_from_attributes(out).detector_center, expected.detector_center)
    ramp = np.tile(np.linspace(0.0, 4000.0, 40), (1, 30, 1))  # a one-slice "2D volume", any intensity range
    styled = SynthesisLogic(learned_renderer(style=ramp), mode=LEARNED_MODE).synthesize(node, params).volumes
    assert not np.allclose(slicer.util.arrayFromVolume(styled[0]), slicer.util.arrayFromVolume(volumes[0]))


@pytest.fixture(scope="module")
def styled_model(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small random model file storing two styles: "ramp-1", the style code of a ramp radiograph
    (saved beside it), and "noise-2", a random code; and the same model without styles."""
    import torch
    from PIL import Image

    from ct2x.checkpoint import save_model
    from ct2x.config import CT2XConfig
    from ct2x.data.radiographs import read_radiograph
    from ct2x.models import CT2XGAN
    from ct2x.models.inputs import xray_input

    root = tmp_path_factory.mktemp("styled_model")
    config = CT2XConfig.preset("small", image_size=64, lpips_backbone="random")
    torch.manual_seed(3)
    model = CT2XGAN(config).eval()
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith("discriminator.")}
    card = {"config": config.to_dict(), "training": {"steps": 0}}
    save_model(root / "plain.safetensors", weights, card)
    xray = root / "ramp.png"
    Image.fromarray(np.tile(np.linspace(20, 230, 50), (60, 1)).astype(np.uint8)).save(xray)
    pixels = torch.from_numpy(read_radiograph(xray, config.image_size))[None]
    with torch.no_grad():
        code = model.style_encoder.xray_style(xray_input(pixels, config)[None])[0]
    codes = {"style_code.ramp-1": code, "style_code.noise-2": torch.randn_like(code)}
    styles = [{"name": "ramp-1", "radiograph": xray.name}, {"name": "noise-2", "radiograph": "random"}]
    save_model(root / "styled.safetensors", {**weights, **codes}, {**card, "style_codes": styles})
    return {"styled": root / "styled.safetensors", "plain": root / "plain.safetensors", "xray": xray}


def test_stored_style_names_lists_the_styles_of_a_model_file(styled_model, tmp_path):
    from ct2x.checkpoint import STYLE_CODE_PREFIX as CORE_PREFIX
    from ct2x.checkpoint import load_style_codes

    assert STYLE_CODE_PREFIX == CORE_PREFIX
    assert stored_style_names(styled_model["styled"]) == ["noise-2", "ramp-1"]
    assert stored_style_names(str(styled_model["styled"])) == sorted(load_style_codes(styled_model["styled"]))
    assert stored_style_names(styled_model["plain"]) == []
    assert stored_style_names(None) == []  # no model: the DRR (physics) renderer
    assert stored_style_names("") == []
    assert stored_style_names(tmp_path / "missing.safetensors") == []
    assert stored_style_names(tmp_path) == []  # a folder
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    assert stored_style_names(tmp_path / "junk.safetensors") == []
    assert stored_style_names(styled_model["xray"]) == []  # not a safetensors file


def test_a_stored_style_synthesizes_like_the_radiograph_it_came_from(styled_model, scene):
    node = _add_ct_node(_ct_lps()[0])
    params = SynthesisParameters(angles=((20.0, 0.0),), detector_pixels=48)

    def image(renderer) -> np.ndarray:
        (out,) = SynthesisLogic(renderer, mode=LEARNED_MODE).synthesize(node, params).volumes
        return slicer.util.arrayFromVolume(out)

    stored = image(learned_renderer(styled_model["styled"], model_style="ramp-1"))
    from_file = image(learned_renderer(styled_model["styled"], style=styled_model["xray"]))
    assert stored.shape == (1, 48, 48)
    np.testing.assert_allclose(stored, from_file, atol=1e-5)
    other = image(learned_renderer(styled_model["styled"], model_style="noise-2"))
    assert not np.allclose(other, stored, atol=1e-3), "another stored style must change the image"


def test_a_style_the_model_does_not_store_is_refused_naming_the_stored_ones(styled_model, scene):
    node = _add_ct_node(_ct_lps()[0])
    params = SynthesisParameters(angles=((0.0, 0.0),), detector_pixels=16)
    count = scene.GetNumberOfNodes()
    with pytest.raises(CT2XError, match=r"'bone'.*noise-2, ramp-1"):
        SynthesisLogic(learned_renderer(styled_model["styled"], model_style="bone")).synthesize(node, params)
    with pytest.raises(CT2XError, match=r"'ramp-1'.*stored styles: none"):
        SynthesisLogic(learned_renderer(styled_model["plain"], model_style="ramp-1")).synthesize(node, params)
    assert scene.GetNumberOfNodes() == count
    with pytest.raises(CT2XError, match="not both"):
        learned_renderer(styled_model["styled"], style=styled_model["xray"], model_style="ramp-1")


@pytest.mark.parametrize(("major", "minor"), [(5, 4), (5, 6), (5, 10), (6, 0)])
def test_slicer_5_4_and_later_are_accepted(major, minor):
    assert MINIMUM_SLICER_VERSION == (5, 4)
    assert slicer_version_error(major, minor) is None


@pytest.mark.parametrize(("major", "minor"), [(5, 3), (5, 2), (5, 0), (4, 13), (4, 11)])
def test_older_slicer_gets_a_message_naming_the_required_version(major, minor):
    message = slicer_version_error(major, minor)
    assert message is not None
    assert "Slicer 5.4 or later" in message and f"this is Slicer {major}.{minor}" in message


def test_one_inference_path_for_synthesize_evaluate_and_the_slicer_module(scene, tmp_path):
    """The same CT, views and style reference through ``ct2x synthesize`` (the command line, NRRD
    files), ``ct2x evaluate``'s synthesis and the Slicer module's learned renderer give the same
    images: a random ``projected`` model (physics anchor, projection path) at 64^2, plumbing only."""
    import SimpleITK as sitk
    import torch
    from conftest import body_phantom
    from PIL import Image

    from ct2x.checkpoint import load_model, save_model
    from ct2x.cli import main
    from ct2x.config import CT2XConfig
    from ct2x.evaluation.methods import synthesized_images
    from ct2x.models import CT2XGAN, is_discriminator_key
    from ct2x.synthesize import model_views

    config = CT2XConfig.preset("projected", image_size=64, lpips_backbone="random", xray_d_channels=8)
    torch.manual_seed(5)
    weights = {k: v for k, v in CT2XGAN(config).state_dict().items() if not is_discriminator_key(k)}
    path = tmp_path / "projected.safetensors"
    save_model(path, weights, {"config": config.to_dict(), "training": {"steps": 0}})
    style = tmp_path / "style.png"
    Image.fromarray(np.tile(np.linspace(30, 220, 70), (80, 1)).astype(np.uint8)).save(style)
    ct = body_phantom(size=24, spacing=4.0)
    image = sitk.GetImageFromArray(ct.array)
    image.SetSpacing(tuple(float(s) for s in ct.spacing))
    image.SetOrigin(tuple(float(o) for o in ct.origin))
    image.SetDirection(tuple(float(d) for d in np.asarray(ct.direction).ravel()))
    sitk.WriteImage(image, str(tmp_path / "ct.nrrd"))
    angles = [0.0, 40.0]

    out = tmp_path / "cli"
    argv = ["synthesize", str(tmp_path / "ct.nrrd"), "--model", str(path), "--style", str(style), "--format", "nrrd"]
    assert main([*argv, "--angles", *map(str, angles), "--out", str(out)]) == 0
    cli = np.stack(
        [sitk.GetArrayFromImage(sitk.ReadImage(str(f)))[0] for f in sorted(out.glob("view*[0-9].nrrd"))]
    )  # not the masks

    model, card = load_model(path)
    views = model_views(model.config, card, ct, angles)
    evaluated = synthesized_images(model, [ct], [views], [views[:1]], [style]).images[0][:, 0]

    node = _add_ct_node(ct)
    params = SynthesisParameters(angles=tuple((a, 0.0) for a in angles), detector_pixels=64)
    logic = SynthesisLogic(learned_renderer(model_path=path, style=style), mode=LEARNED_MODE)
    module = np.stack([slicer.util.arrayFromVolume(v)[0] for v in logic.synthesize(node, params).volumes])

    assert cli.shape == evaluated.shape == module.shape == (2, 64, 64)
    assert cli.std() > 0.01 and np.abs(cli[0] - cli[1]).max() > 0.05  # two different views
    np.testing.assert_allclose(evaluated, cli, atol=1e-5)
    np.testing.assert_allclose(module, cli, atol=1e-5)


# ------------------------------------------------------------------ the imaging chain (no model)
CHAIN_PIXELS = 32


def _chain_scene(tmp_path: Path) -> tuple[Path, slicer.vtkMRMLScalarVolumeNode]:
    """The body phantom (24^3 voxels of 4 mm) as a file, as ``ct2x drr`` reads it, and as a node read from it."""
    from conftest import write_phantom_ct

    from ct2x.volume import read_ct

    path = write_phantom_ct(tmp_path / "phantom.nrrd", 24)
    return path, _add_ct_node(read_ct(path))


def _chain_parameters() -> SynthesisParameters:
    return SynthesisParameters(angles=((0.0, 0.0), (40.0, 0.0)), detector_pixels=CHAIN_PIXELS)


def _images(volumes) -> np.ndarray:
    return np.stack([slicer.util.arrayFromVolume(v)[0] for v in volumes])


def test_the_no_model_choice_builds_a_chain_renderer_of_the_chosen_imaging():
    """The imaging choices and defaults are ct2x drr --imaging's; each preset and ``randomised`` build a
    ChainRenderer with the preset's (or the seed's) parameters, ``raw`` today's physics DRR renderer."""
    from dataclasses import replace

    from ct2x.imaging import PRESETS, randomised
    from ct2x.options import (
        DEFAULT_IMAGING,
        DEFAULT_STEP_VOXELS,
        IMAGING_MODES,
        IMAGING_PRESETS,
        IMAGING_RAW,
        DRROptions,
        option_default,
    )

    assert IMAGING_CHOICES == IMAGING_MODES
    assert RendererChoice().imaging == DEFAULT_IMAGING and RendererChoice().seed == DEFAULT_SEED
    assert DEFAULT_SEED == option_default(DRROptions, "seed")
    renderer, mode = build_renderer(RendererChoice(MODEL_NONE))
    assert isinstance(renderer, ChainRenderer) and renderer.imaging == DEFAULT_IMAGING
    assert mode == renderer.mode == f"Radiograph (imaging chain: {DEFAULT_IMAGING})" == chain_mode(DEFAULT_IMAGING)
    assert (renderer.step, renderer.seed, renderer.style) == (DEFAULT_STEP_VOXELS, DEFAULT_SEED, None)
    for name in IMAGING_PRESETS:
        chain, _ = build_renderer(RendererChoice(MODEL_NONE, imaging=name, device="cpu"))
        assert chain.base_parameters == PRESETS[name].parameters and chain.device == "cpu"
    drawn, _ = build_renderer(RendererChoice(MODEL_NONE, imaging="randomised", seed=7))
    assert drawn.base_parameters == randomised(7) != randomised(8)
    raw, raw_mode = build_renderer(RendererChoice(MODEL_NONE, imaging=IMAGING_RAW))
    assert type(raw) is PhysicsDRRRenderer and raw_mode == DRR_PHYSICS_MODE
    # a model ignores the imaging choice; the panel's line and rows say what is used
    assert isinstance(build_renderer(RendererChoice(MODEL_BUNDLED, imaging="nonsense"))[0], LearnedRenderer)
    assert describe_renderer(RendererChoice(MODEL_BUNDLED)) == f"Renderer: {LEARNED_MODE} (preview: {DRR_PHYSICS_MODE})"
    fitted = RendererChoice(MODEL_NONE, imaging="chest_dr_pa", style_source=STYLE_FILE)
    assert describe_renderer(fitted).startswith("Renderer: Radiograph (imaging chain: chest_dr_pa, fitted to the style")
    assert DRR_PHYSICS_MODE in describe_renderer(RendererChoice(MODEL_NONE, imaging=IMAGING_RAW))
    # support devices (ct2x drr --devices): drawn with the seed, in the base the fit starts from, named in the mode
    assert RendererChoice().devices is None
    assert build_renderer(RendererChoice(MODEL_NONE))[0].base_parameters.devices == 0
    wired, wired_mode = build_renderer(RendererChoice(MODEL_NONE, imaging="chest_dr_pa", seed=4, devices=3))
    assert (wired.base_parameters.devices, wired.base_parameters.devices_seed) == (3, 4)
    assert wired.base_parameters == replace(PRESETS["chest_dr_pa"].parameters, devices=3, devices_seed=4)
    assert wired_mode == chain_mode("chest_dr_pa", devices=3)
    assert wired_mode == "Radiograph (imaging chain: chest_dr_pa, 3 support devices)"
    assert "3 support devices" in describe_renderer(RendererChoice(MODEL_NONE, devices=3))
    assert build_renderer(RendererChoice(MODEL_NONE, imaging="randomised", seed=7, devices=0))[0].base_parameters == (
        replace(randomised(7), devices=0, devices_seed=7)
    )
    assert imaging_controls(RendererChoice(MODEL_NONE)) == (True, True)
    assert imaging_controls(RendererChoice(MODEL_NONE, imaging=IMAGING_RAW)) == (True, False)
    assert imaging_controls(RendererChoice(MODEL_BUNDLED)) == (False, False)


def test_a_bad_chain_choice_is_a_ct2x_error(scene):
    logic = SynthesisLogic()
    before = logic.renderer
    with pytest.raises(CT2XError, match=r"unknown imaging preset 'chest_xr': use one of mobile_carm_flat_panel"):
        logic.choose_renderer(RendererChoice(MODEL_NONE, imaging="chest_xr"))
    assert logic.renderer is before
    assert "unknown imaging preset 'chest_xr'" in describe_renderer(RendererChoice(MODEL_NONE, imaging="chest_xr"))
    for kwargs, message in [
        ({"imaging": "chest_xr"}, "unknown imaging preset 'chest_xr'"),
        ({"imaging": "raw"}, "the physics DRR without an imaging chain"),
        ({"seed": -1}, "the seed must be a whole number >= 0"),
        ({"imaging": "randomised", "seed": None}, "draws its parameters from the seed"),
        ({"fit_pixels": 8}, "32 pixels a side or more"),
        ({"devices": 21}, "support devices must be a whole number from 0 to 20"),
        ({"devices": 1.5}, "support devices must be a whole number"),
    ]:
        with pytest.raises(CT2XError, match=message):
            ChainRenderer(**kwargs)
    for choice, message in [
        (RendererChoice(MODEL_NONE, style_source=STYLE_STORED), "a style stored with a model needs that model"),
        (RendererChoice(MODEL_NONE, imaging="raw", style_source=STYLE_FILE, style_file="film.png"),
         "the raw physics DRR \\(raw\\) takes no style reference"),
        (RendererChoice(MODEL_NONE, style_source=STYLE_VOLUME), "choose the 2D volume"),
        (RendererChoice(MODEL_NONE, style_source=STYLE_FILE), "choose the radiograph image file"),
    ]:  # fmt: skip
        with pytest.raises(CT2XError, match=message):
            build_renderer(choice)


def test_chain_views_are_ct2x_drr_s_radiographs_and_record_the_chain(scene, tmp_path):
    """One path: the chain renderer is render_radiographs (one call for all views with the seed; a synthesis
    renders view n with seed + n), so the panel's views equal the NRRDs of ``ct2x drr`` at the same geometry;
    each node records the imaging, its parameters (JSON, read back into the same ImagingParameters), the ray
    step, the seeds and the covered fraction, as ``ct2x drr``'s header does."""
    import SimpleITK as sitk

    from ct2x.cli import main
    from ct2x.imaging import PRESETS, ImagingParameters
    from ct2x.imaging.render import render_radiographs
    from ct2x.options import DEFAULT_STEP_VOXELS

    preset, seed = "bedside_cr_ap", 5
    path, node = _chain_scene(tmp_path)
    logic = SynthesisLogic()
    renderer = logic.choose_renderer(RendererChoice(MODEL_NONE, imaging=preset, seed=seed, device="cpu"))
    assert isinstance(renderer, ChainRenderer) and logic.mode == chain_mode(preset)
    result = logic.synthesize(node, _chain_parameters())
    ct = logic.imaged_ct(node).volume()
    views = _chain_parameters().views(ct)
    parameters = PRESETS[preset].parameters
    module = _images(result.volumes)

    def chain(carms, noise_seed):
        return render_radiographs(ct, carms, parameters, step=DEFAULT_STEP_VOXELS, device="cpu", seed=noise_seed)

    expected = np.stack([chain([view], seed + n)[0].numpy() for n, view in enumerate(views)])
    np.testing.assert_array_equal(module, expected)
    np.testing.assert_array_equal(renderer(ct, views), chain(views, seed).numpy())
    assert module.shape == (2, CHAIN_PIXELS, CHAIN_PIXELS) and 0 <= module.min() < module.max() <= 1
    assert np.abs(module[0] - module[1]).max() > 0.1  # two views

    out = tmp_path / "drr"
    geometry = ["--sdd", repr(views[0].sdd), "--sid", repr(views[0].sid), "--size", str(CHAIN_PIXELS),
                "--pixel", repr(views[0].pixel_spacing[0])]  # fmt: skip
    argv = [
        "drr",
        str(path),
        "--imaging",
        preset,
        "--angles",
        "0",
        "40",
        *geometry,
        "--seed",
        str(seed),
        "--device",
        "cpu",
    ]
    assert main([*argv, "--out", str(out)]) == 0
    files = [sitk.ReadImage(str(f)) for f in sorted(out.glob("view*[0-9].nrrd"))]  # not the coverage masks
    np.testing.assert_allclose(np.stack([sitk.GetArrayFromImage(f)[0] for f in files]), module, atol=1e-4)

    for index, (volume, header) in enumerate(zip(result.volumes, files, strict=True)):
        attributes = {name: volume.GetAttribute(name) for name in volume.GetAttributeNames()}
        assert attributes["CT2X.mode"] == f"Radiograph (imaging chain: {preset})"
        assert attributes["CT2X.imaging"] == header.GetMetaData("ct2x_imaging") == preset
        recorded = attributes["CT2X.imagingParameters"]
        assert recorded == header.GetMetaData("ct2x_imaging_parameters")
        assert ImagingParameters(**json.loads(recorded)) == parameters
        assert attributes["CT2X.stepVoxels"] == header.GetMetaData("ct2x_step_voxels") == "0.1"
        assert attributes["CT2X.seed"] == header.GetMetaData("ct2x_seed") == str(seed)
        assert attributes["CT2X.noiseSeed"] == header.GetMetaData("ct2x_noise_seed") == str(seed + index)
        covered = float(attributes["CT2X.coverageFraction"])
        assert covered == pytest.approx(float(header.GetMetaData("ct2x_coverage_fraction")), abs=1e-5)
        assert covered == pytest.approx(float(coverage(ct, [views[index]]).float().mean())) and 0 < covered < 1
        assert "CT2X.imagingFittedTo" not in attributes


def test_the_raw_choice_is_today_s_physics_drr_not_the_chain(scene, tmp_path):
    from ct2x.drr import render_drr

    _, node = _chain_scene(tmp_path)
    logic = SynthesisLogic()
    raw = logic.choose_renderer(RendererChoice(MODEL_NONE, imaging="raw", device="cpu"))
    assert type(raw) is PhysicsDRRRenderer and logic.mode == DRR_PHYSICS_MODE
    volumes = logic.synthesize(node, _chain_parameters()).volumes
    views = _chain_parameters().views(logic.imaged_ct(node).volume())
    today = render_drr(logic.imaged_ct(node).volume(), views, device="cpu").numpy()  # render_drr's defaults, no noise
    np.testing.assert_array_equal(_images(volumes), today)
    before = SynthesisLogic(physics_drr_renderer("cpu")).synthesize(node, _chain_parameters()).volumes
    np.testing.assert_array_equal(_images(before), today)
    fields = {name: volumes[1].GetAttribute(name) for name in volumes[1].GetAttributeNames()}
    assert fields["CT2X.mode"] == DRR_PHYSICS_MODE and fields["CT2X.imaging"] == "raw"
    assert (fields["CT2X.stepVoxels"], fields["CT2X.spectrum"], fields["CT2X.photons"]) == ("0.1", "60KV_AL35", "0")
    assert "CT2X.imagingParameters" not in fields and "CT2X.coverageFraction" in fields


def test_the_preview_renders_the_chain_of_the_choice_at_its_coarser_step(scene, tmp_path):
    """Without a model the preview is the synthesis's chain (same preset and seed) at the preview's ray step; with
    a model, the raw physics DRR (no model is loaded for it)."""
    from ct2x.imaging.render import render_radiographs

    _, node = _chain_scene(tmp_path)
    logic = SynthesisLogic()
    choice = RendererChoice(MODEL_NONE, imaging="chest_dr_pa", seed=2, device="cpu")
    preview = logic.choose_preview_renderer(choice)
    assert isinstance(preview, ChainRenderer) and preview is not logic.renderer
    assert (preview.imaging, preview.seed, preview.step) == ("chest_dr_pa", 2, PREVIEW_STEP_VOXELS)
    assert logic.renderer.step == 0.1 and logic.preview_mode == logic.mode == chain_mode("chest_dr_pa")
    assert logic.choose_preview_renderer(choice) is preview
    worker = PreviewWorker(as_renderer(lambda ct, views: pytest.fail("the request's renderer must be used")))
    request = logic.preview_request(node, SynthesisParameters(angles=((20.0, 0.0),), detector_pixels=CHAIN_PIXELS))
    assert request.renderer is preview and request.mode == chain_mode("chest_dr_pa")
    assert worker.request(request) and worker.wait_idle(60)
    placed = place_preview(scene, worker.take_result())
    worker.close(10)
    assert placed.GetAttribute("CT2X.mode") == chain_mode("chest_dr_pa")
    expected = render_radiographs(request.ct.volume(), [request.view], "chest_dr_pa", step=PREVIEW_STEP_VOXELS, seed=2)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(placed)[0], expected[0].numpy())

    drr = logic.choose_preview_renderer(RendererChoice(MODEL_BUNDLED, device="cpu"))
    assert type(drr) is PhysicsDRRRenderer and drr.drr_options["step"] == PREVIEW_STEP_VOXELS
    assert logic.preview_mode == DRR_PHYSICS_MODE


def test_the_chain_is_fitted_to_the_style_reference_once_per_ct_and_style(scene, tmp_path, monkeypatch):
    """A 2D volume as style reference (any intensity range): the chain's look is fitted to it once per CT (two
    syntheses and a preview share the fit), every view is render_radiographs with the fitted parameters, and the
    nodes record them; an edited CT is fitted again."""
    import CT2XSynthesisLib.logic as logic_module

    import ct2x.imaging.style
    from ct2x.imaging import ImagingParameters
    from ct2x.imaging.render import render_radiographs

    monkeypatch.setattr(logic_module, "FIT_PIXELS", 64)  # the default 256 fits a full detector; 64 keeps this fast
    fits = []
    real_fit = ct2x.imaging.style.fit_style
    monkeypatch.setattr(ct2x.imaging.style, "fit_style", lambda *a, **k: fits.append(a) or real_fit(*a, **k))
    _, node = _chain_scene(tmp_path)
    logic = SynthesisLogic()
    ct = logic.imaged_ct(node).volume()
    at = fit_view(_chain_parameters().views(ct)[0], 64)
    assert (at.primary, at.secondary, at.detector_shape) == (0.0, 0.0, (64, 64))
    # the reference: this CT as a bedside CR film shows it, loaded as a 2D volume (0-4000)
    film = render_radiographs(ct, [at], "bedside_cr_ap", step=0.5, seed=1)[0].numpy()
    style_node = slicer.util.addVolumeFromArray((film * 4000.0)[None].astype(np.float32), name="film")
    copies = []

    def style():  # what the panel passes: the copy is made only when a renderer is built
        copies.append(1)
        return style_reference(style_node)[0]

    choice = RendererChoice(MODEL_NONE, style_source=STYLE_VOLUME, style_key=style_reference_key(style_node), seed=4)
    renderer = logic.choose_renderer(choice, style)
    assert renderer.mode == logic.mode == chain_mode("mobile_carm_flat_panel", fitted=True)
    first = logic.synthesize(node, _chain_parameters()).volumes
    second = logic.synthesize(node, _chain_parameters()).volumes
    assert logic.choose_renderer(choice, style) is renderer
    worker = PreviewWorker(as_renderer(lambda ct, views: pytest.fail("the request's renderer must be used")))
    logic.choose_preview_renderer(choice, style)
    assert worker.request(logic.preview_request(node, _chain_parameters())) and worker.wait_idle(60)
    assert worker.take_result().error is None
    worker.close(10)
    assert len(copies) == 1, "the style volume is copied once, when the renderer is built"
    assert len(fits) == 1, "the synthesis and the preview fit once per CT and style"

    fitted = renderer.parameters_for(ct, at)
    assert fitted != renderer.base_parameters and fitted.tone_points
    np.testing.assert_array_equal(_images(first), _images(second))
    for index, (volume, view) in enumerate(zip(first, _chain_parameters().views(ct), strict=True)):
        expected = render_radiographs(ct, [view], fitted, step=0.1, device="cpu", seed=4 + index)[0].numpy()
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume)[0], expected)
        assert ImagingParameters(**json.loads(volume.GetAttribute("CT2X.imagingParameters"))) == fitted
        assert volume.GetAttribute("CT2X.imagingFittedTo") == f"2D volume {style_node.GetID()}"
        assert volume.GetAttribute("CT2X.mode") == chain_mode("mobile_carm_flat_panel", fitted=True)
    plain = render_radiographs(ct, [_chain_parameters().views(ct)[0]], renderer.base_parameters, step=0.1, seed=4)
    assert not np.allclose(_images(first)[0], plain[0].numpy(), atol=0.02), "the fit must change the look"

    voxels = slicer.util.arrayFromVolume(node)
    voxels[0, 0, 0] += 10.0
    slicer.util.arrayFromVolumeModified(node)  # the CT was edited: a new copy, fitted again
    logic.synthesize(node, SynthesisParameters(angles=((0.0, 0.0),), detector_pixels=CHAIN_PIXELS))
    assert len(fits) == 2


def test_remove_table_images_the_ct_without_its_couch_and_leaves_the_node_as_it_was(scene):
    """The panel's *Remove CT couch* (``SynthesisParameters.remove_table``): the synthesis and the preview image
    the CT with its couch made air (``ct2x.body.without_table``), as ``ct2x drr --remove-table`` does; the CT
    node is only read."""
    from dataclasses import replace

    from test_body import _chest

    with_couch, bare = _add_ct_node(_chest()[0]), _add_ct_node(_chest(couch=False)[0])
    before = slicer.util.arrayFromVolume(with_couch).copy()
    renderer = physics_drr_renderer(device="cpu", step=1.0)
    lateral = SynthesisParameters(angles=((90.0, 0.0),), detector_pixels=32)
    removed = SynthesisLogic(renderer).synthesize(with_couch, replace(lateral, remove_table=True)).volumes
    expected = SynthesisLogic(renderer).synthesize(bare, lateral).volumes
    np.testing.assert_array_equal(_images(removed), _images(expected))
    kept = SynthesisLogic(renderer).synthesize(with_couch, lateral).volumes
    assert np.abs(_images(kept) - _images(removed)).max() > 0.1  # the couch's shadow
    assert removed[0].GetAttribute("CT2X.tableRemoved").startswith("outside the body")
    assert kept[0].GetAttribute("CT2X.tableRemoved") is None
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(with_couch), before)
    logic = SynthesisLogic(renderer)
    as_read = logic.preview_request(with_couch, lateral)
    request = logic.preview_request(with_couch, replace(lateral, remove_table=True))
    assert request.key != as_read.key  # the preview worker prepares the couch-free CT anew
    np.testing.assert_array_equal(request.ct.volume().array, logic.imaged_ct(bare).volume().array)


def test_the_couch_is_removed_once_in_a_worker_thread_never_in_the_gui_thread(scene, monkeypatch):
    """Removing the couch takes a second or two on a full CT (1.8 s at 512 x 512 x 133): ``preview_request`` and
    ``start_synthesis``, called in Slicer's GUI thread, return while it runs in the synthesis job's thread, whose
    progress says so; the preview that comes next images the same couch-free CT without removing it again."""
    import threading
    import time
    from dataclasses import replace

    import CT2XSynthesisLib.background as background
    from test_body import _chest

    real, gate, threads = background.without_table, threading.Event(), []

    def slow_removal(volume: CTVolume) -> CTVolume:
        threads.append(threading.current_thread())
        assert gate.wait(30), "the test never let the removal finish"
        return real(volume)

    monkeypatch.setattr(background, "without_table", slow_removal)
    with_couch, bare = _add_ct_node(_chest()[0]), _add_ct_node(_chest(couch=False)[0])
    renderer = physics_drr_renderer(device="cpu", step=1.0)
    lateral = SynthesisParameters(angles=((90.0, 0.0),), detector_pixels=32, remove_table=True)
    logic = SynthesisLogic(renderer)
    request = logic.preview_request(with_couch, lateral)
    job = logic.start_synthesis(with_couch, lateral)
    for _ in range(300):
        if job.status().text == "Removing the CT couch":
            break
        time.sleep(0.01)
    assert job.status().text == "Removing the CT couch" and not job.status().finished
    gate.set()
    assert job.wait(60) and job.status().error is None
    assert len(threads) == 1 and threads[0] is not threading.main_thread()
    expected = SynthesisLogic(renderer).synthesize(bare, replace(lateral, remove_table=False)).volumes
    np.testing.assert_array_equal(_images(logic.finish_synthesis(job).volumes), _images(expected))
    worker = PreviewWorker(renderer)
    assert worker.request(request) and worker.wait_idle(60)
    result = worker.take_result()
    worker.close(10)
    assert result.error is None and len(threads) == 1  # the preview took the job's couch-free CT
    np.testing.assert_array_equal(request.ct.volume().array, logic.imaged_ct(bare).volume().array)


def test_removing_the_couch_of_a_ct_with_no_body_ends_the_job_with_one_line_and_adds_nothing(scene):
    """The removal runs in the job's thread now: its refusal (``ct2x.body``: no body in the CT) comes back as the
    job's one-line error, ``finish_synthesis`` raises it, the scene gets no node and the preview reports it too."""
    from dataclasses import replace

    empty = _add_ct_node(CTVolume(np.full((8, 16, 16), -1000.0, np.float32), np.ones(3), np.zeros(3), np.eye(3)))
    parameters = replace(SynthesisParameters(angles=((0.0, 0.0),), detector_pixels=16), remove_table=True)
    logic = SynthesisLogic(physics_drr_renderer(device="cpu", step=1.0))
    count = scene.GetNumberOfNodes()
    job = logic.start_synthesis(empty, parameters)
    assert job.wait(60) and job.status().error.startswith("no body found in the CT")
    with pytest.raises(CT2XError, match="no body found.*--remove-table"):
        logic.finish_synthesis(job)
    assert scene.GetNumberOfNodes() == count
    worker = PreviewWorker(logic.renderer)
    assert worker.request(logic.preview_request(empty, parameters)) and worker.wait_idle(60)
    result = worker.take_result()
    worker.close(10)
    assert result.image is None and result.error.startswith("no body found in the CT")

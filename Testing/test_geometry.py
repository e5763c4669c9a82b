"""C-arm geometry: angles, distances, projection, pose, detector placement (all LPS mm)."""

from __future__ import annotations

import numpy as np
import pytest

from ct2x.errors import CT2XError
from ct2x.geometry import DEFAULT_PIXEL_MM, CArm, views

ISO = (12.0, -40.0, 250.0)
ANGLES = [(0, 0), (30, 0), (-60, 15), (90, -20), (-135, 40), (180, 0)]


@pytest.mark.parametrize(("primary", "secondary"), ANGLES)
def test_isocenter_projects_to_detector_centre(primary: float, secondary: float) -> None:
    carm = CArm(primary, secondary, detector_shape=(200, 300), isocenter=ISO)
    u, v = carm.project(np.array([ISO]))[0]
    assert u == pytest.approx((300 - 1) / 2, abs=1e-9)
    assert v == pytest.approx((200 - 1) / 2, abs=1e-9)


@pytest.mark.parametrize(("primary", "secondary"), ANGLES)
def test_magnification_is_sdd_over_distance_to_source(primary: float, secondary: float) -> None:
    carm = CArm(primary, secondary, isocenter=ISO)
    offset_mm = 20.0
    right = carm.rotation[:, 0]
    centre_u = carm.project(np.array([ISO]))[0, 0]
    for toward_source_mm in (0.0, 100.0, 300.0):
        base = np.asarray(ISO) - toward_source_mm * carm.viewing_direction
        u = carm.project(base + offset_mm * right)[0, 0]
        distance_to_source = carm.sid - toward_source_mm
        expected_mm = offset_mm * carm.sdd / distance_to_source
        assert (u - centre_u) * carm.pixel_spacing[1] == pytest.approx(expected_mm, rel=1e-9)


def test_ap_view_patient_left_is_image_right_and_head_is_up() -> None:
    carm = CArm(0.0, 0.0, isocenter=ISO)
    centre = np.asarray(ISO)
    left, right = carm.project(centre + [50.0, 0, 0])[0], carm.project(centre - [50.0, 0, 0])[0]
    head, feet = carm.project(centre + [0, 0, 50.0])[0], carm.project(centre - [0, 0, 50.0])[0]
    assert left[0] > right[0]  # patient's left lands on the image's right (larger column)
    assert head[1] < feet[1]  # head at the top (smaller row)
    # AP: the source is posterior (+y in LPS), the detector anterior.
    assert carm.source[1] > ISO[1] and carm.detector_center[1] < ISO[1]


def test_lao_moves_detector_to_patient_left_and_cran_toward_head() -> None:
    iso = np.asarray(ISO)
    lao = CArm(90.0, 0.0, isocenter=ISO)
    assert np.allclose(lao.detector_center - iso, [lao.sdd - lao.sid, 0, 0])
    cran = CArm(0.0, 30.0, isocenter=ISO)
    assert (cran.detector_center - iso)[2] > 0
    rao = CArm(-45.0, 0.0, isocenter=ISO)
    assert (rao.detector_center - iso)[0] < 0


@pytest.mark.parametrize(("primary", "secondary"), ANGLES)
def test_distances_and_frame(primary: float, secondary: float) -> None:
    carm = CArm(primary, secondary, sdd=1100, sid=600, isocenter=ISO)
    assert np.linalg.norm(carm.source - np.asarray(ISO)) == pytest.approx(600)
    assert np.linalg.norm(carm.detector_center - carm.source) == pytest.approx(1100)
    r = carm.rotation
    assert np.allclose(r.T @ r, np.eye(3))
    # The normal points from the detector toward the source.
    assert np.dot(carm.source - carm.detector_center, carm.detector_normal) == pytest.approx(1100)


@pytest.mark.parametrize(("primary", "secondary"), ANGLES)
def test_pose_round_trips(primary: float, secondary: float) -> None:
    chain = {"sdd": 980, "sid": 610, "detector_shape": (128, 160), "pixel_spacing": (1.5, 1.2), "isocenter": ISO}
    carm = CArm(primary, secondary, **chain)
    pose = carm.pose
    assert pose.shape == (25,)
    assert np.linalg.norm(pose[[3, 7, 11]]) == pytest.approx(0.610)  # metres
    assert pose[16] == pytest.approx(980 / (160 * 1.2)) and pose[18] == 0.5 and pose[21] == 0.5
    assert pose[20] == pytest.approx(980 / (128 * 1.5))
    back = CArm.from_pose(pose, detector_shape=(128, 160), pixel_spacing=(1.5, 1.2), isocenter=ISO)
    assert back.sdd == pytest.approx(980) and back.sid == pytest.approx(610)
    assert np.allclose(back.source, carm.source) and np.allclose(back.projection_matrix, carm.projection_matrix)
    if abs(secondary) < 90 and abs(primary) < 180:
        assert back.primary == pytest.approx(primary) and back.secondary == pytest.approx(secondary)


@pytest.mark.parametrize(("primary", "secondary"), ANGLES)
def test_projection_matrix_agrees_with_pixel_rays(primary: float, secondary: float) -> None:
    """Every point on the ray from the source to a pixel centre projects onto that pixel."""
    carm = CArm(primary, secondary, detector_shape=(40, 50), isocenter=ISO)
    centres = carm.pixel_centers()
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 40, 25), rng.integers(0, 50, 25)
    for t in (0.3, 0.52, 0.9, 1.0):
        points = carm.source + t * (centres[rows, cols] - carm.source)
        uv = carm.project(points)
        assert np.allclose(uv[:, 0], cols, atol=1e-6) and np.allclose(uv[:, 1], rows, atol=1e-6)


def test_detector_placement_matches_image_affine() -> None:
    carm = CArm(30.0, -10.0, detector_shape=(64, 96), pixel_spacing=(1.0, 2.0), isocenter=ISO)
    affine = carm.image_ijk_to_lps
    centre_index = np.array([(96 - 1) / 2, (64 - 1) / 2, 0.0, 1.0])
    assert np.allclose((affine @ centre_index)[:3], carm.detector_center)
    assert np.allclose(np.linalg.norm(affine[:3, :3], axis=0), [2.0, 1.0, 1.0])
    corners = carm.detector_corners
    assert np.linalg.norm(corners[1] - corners[0]) == pytest.approx(96 * 2.0)
    assert np.linalg.norm(corners[3] - corners[0]) == pytest.approx(64 * 1.0)
    assert np.allclose(corners.mean(axis=0), carm.detector_center)
    assert np.allclose((corners - carm.detector_center) @ carm.detector_normal, 0)
    # Top-left corner projects to the top-left edge of pixel (0, 0).
    assert np.allclose(carm.project(corners[0]), [-0.5, -0.5])


def test_default_detector_is_deepdrr_mobile_carm() -> None:
    carm = CArm()
    assert carm.sdd == 1020 and carm.sid == 530 and carm.detector_shape == (256, 256)
    assert DEFAULT_PIXEL_MM == pytest.approx(1536 * 0.194 / 256)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sdd": -5}, "positive distance"),
        ({"sid": 0}, "positive distance"),
        ({"sid": 1020, "sdd": 1020}, "must be smaller"),
        ({"primary": "forty"}, "number in degrees"),
        ({"secondary": 200}, "[-180, 180]"),
        ({"detector_shape": (0, 10)}, "detector size"),
        ({"pixel_spacing": (0.0, 1.0)}, "pixel spacing"),
        ({"isocenter": (0, float("nan"), 0)}, "isocenter"),
    ],
)
def test_bad_geometry_is_a_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(CT2XError, match=message.replace("[", r"\[").replace("]", r"\]")):
        CArm(**kwargs)


def test_views_broadcasts_secondary_and_rejects_mismatch() -> None:
    vs = views([-30, 0, 30], [10], sdd=1000)
    assert [v.secondary for v in vs] == [10, 10, 10] and all(v.sdd == 1000 for v in vs)
    with pytest.raises(CT2XError, match="secondary"):
        views([-30, 0, 30], [1, 2])

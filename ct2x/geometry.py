"""The C-arm: gantry angles, distances, detector, and everything derived from them.

Frames and units (one convention for the whole project):

* **World** is the CT's physical LPS space (x = patient Left, y = Posterior, z = Superior),
  in millimetres.
* **Angles** are in degrees. ``primary`` (LAO +, RAO -) turns the C-arm about the patient's
  superior axis; ``secondary`` (CRAN +, CAUD -) about the patient's left axis. At
  ``primary = secondary = 0`` (the AP view) the source is posterior and the detector
  anterior; in LAO the detector moves toward the patient's left, in CRAN toward the head.
  The unit vector from the isocenter toward the detector is
  ``(sin(p) cos(s), -cos(p) cos(s), sin(s))``.
* **Image** axes follow OpenCV: pixel ``(row v, column u)``, ``u`` to the right, ``v`` down,
  pixel centres at integer coordinates, so the detector centre is at
  ``((W - 1) / 2, (H - 1) / 2)``. Images are shown as a radiologist reads an AP radiograph:
  in the AP view the patient's right is on the image's left and the head is at the top.
* **Camera** axes (columns of :attr:`CArm.rotation`): ``x`` = image right, ``y`` = image
  down, ``z`` = from the source toward the detector. Because the image is displayed as seen
  from the patient's front while the camera looks from the source, this frame is
  left-handed (``det = -1``) for every view; it is still orthonormal, so
  world-to-camera is its transpose.

The 25-number pose (paper eq. 1, EG3D convention) is the camera-to-world 4x4 matrix,
row-major, with the translation being the source position relative to the isocenter in
**metres**, followed by the 3x3 intrinsics normalised by the detector size
(``fx = SDD / (W * pixel_w)``, ``fy = SDD / (H * pixel_h)``, ``cx = cy = 0.5``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from ct2x.errors import CT2XError, positive_finite

#: DeepDRR's mobile C-arm: 1536 x 0.194 mm sensor (298 mm), read out at 256 x 256.
DEFAULT_SDD_MM = 1020.0
DEFAULT_SID_MM = 530.0
DEFAULT_DETECTOR_PIXELS = 256
DEFAULT_DETECTOR_WIDTH_MM = 1536 * 0.194
DEFAULT_PIXEL_MM = DEFAULT_DETECTOR_WIDTH_MM / DEFAULT_DETECTOR_PIXELS

POSE_SIZE = 25

# Physical ranges of real imaging chains, in one place: ``CArm`` refuses distances outside them (every caller:
# the CLI's --sdd / --sid, the Slicer panel, training views), ``ct2x drr`` checks its --size / --pixel detector
# with :func:`check_detector`, and ``ct2x.radiograph_geometry`` replaces or refuses a ``--like`` radiograph's tags
# outside them. docs/input-checks.md lists them.

#: Source-to-isocenter distance (SID), mm. Low end: no fluoroscope may bring its source closer than 10 cm to the
#: patient's skin (21 CFR 1020.32(g): 38 cm stationary, 30 cm mobile, 20 cm surgical, 10 cm for mini C-arms), so a
#: source nearer the isocenter than 100 mm lies in the patient. High end: chest stands work at 1800 mm,
#: teleradiography and long-length stands at up to about 3000 mm.
SID_RANGE_MM = (100.0, 3000.0)
#: Source-to-detector distance (SDD), mm: the source at least :data:`SID_RANGE_MM`'s 100 mm from the patient and
#: the patient (an extremity at least) in front of the detector; mini C-arms have 350-450 mm, mobile C-arms about
#: 1000 mm, angiography C-arms 900-1300 mm, chest and long-length stands 1800-3000 mm.
SDD_RANGE_MM = (200.0, 3000.0)
#: Side of a detector's image, mm: from intra-oral sensors (about 20 x 30 mm; 5 mm leaves room for an image
#: cropped to a region of interest) and mini C-arm image intensifiers (100-150 mm) to single-exposure long-length
#: panels (430 x 1245 mm, 17 x 49 in). Wider images are stitched from several exposures, not one projection.
DETECTOR_SIDE_RANGE_MM = (5.0, 1300.0)
#: Rows or columns of a detector (or of a DRR's readout), pixels: 8 (the coarsest readout the Slicer panel offers)
#: to 16384 (flat panels have at most about 4300 a side at 0.1 mm, long-length panels about 8300 rows at 0.15 mm).
DETECTOR_PIXELS_RANGE = (8, 16384)
#: Pixel spacing of a real detector's image, mm: flat panels 0.07-0.2 mm, mammography 0.05-0.1, dental CMOS
#: sensors from 0.02, image-intensifier chains 0.2-0.6, up to 5 mm for binned or downsampled exports. A DRR's
#: readout (``ct2x drr --pixel``, a model's ``image_size``) is binned freely: only its detector side is checked.
PIXEL_SPACING_RANGE_MM = (0.01, 5.0)

#: The two ends of the imaging chains users meet, as (SID, SDD, detector width), mm: DeepDRR's
#: mobile C-arm (source 530 mm from the isocenter, 298 mm detector 1020 mm away) and a chest
#: radiograph (source 1800 mm from the isocenter, 430 mm cassette 1900 mm away).
MOBILE_CARM_CHAIN = (DEFAULT_SID_MM, DEFAULT_SDD_MM, DEFAULT_DETECTOR_WIDTH_MM)
CHEST_FILM_CHAIN = (1800.0, 1900.0, 430.0)
#: The field a real radiograph is taken to cover at the patient, mm, when it is matched to a view's detector
#: (films carry no calibrated pixel size; a chest film covers about 400 mm).
FILM_FIELD_MM = 400.0
#: An imaging chain's look is fitted to a film at views of this many pixels a side (:func:`fit_views`).
FIT_PIXELS = 256
#: Primary angles (degrees) of the views a chain's look is fitted over (:func:`fit_views`): AP, the obliques
#: and the laterals, so that one look suits every view of the geometry. Fitted at AP alone, a film's fine grain
#: was put down to the detector's structure noise up to its bound on some CTs, burying their anatomy
#: (docs/evaluation.md, "The chain row as users get it").
FIT_PRIMARIES_DEG = (0.0, 45.0, -45.0, 90.0, -90.0)

# Camera axes in the AP view, as columns (image right = patient left, image down =
# inferior, viewing direction = anterior).
_AP_AXES = np.array(
    [
        [1.0, 0.0, 0.0],
        [0.0, 0.0, -1.0],
        [0.0, -1.0, 0.0],
    ]
).T


def _rotation_about(axis: int, angle_rad: float) -> np.ndarray:
    """Right-handed rotation by ``angle_rad`` about world axis ``axis`` (0 = L, 2 = S)."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def gantry_rotation(primary_deg: float, secondary_deg: float) -> np.ndarray:
    """The 3x3 rotation that carries the AP C-arm to ``(primary, secondary)``, in LPS.

    Secondary (CRAN +) tilts first, about the patient's left axis, so that the detector
    moves toward the head; primary (LAO +) then turns about the superior axis, so that
    the detector moves toward the patient's left.
    """
    tilt = _rotation_about(0, -math.radians(secondary_deg))
    turn = _rotation_about(2, math.radians(primary_deg))
    return turn @ tilt


_REAL_CHAINS = "the range of real C-arms and radiography stands"


def _in_range(name: str, value: float, limits: tuple[float, float], why: str) -> float:
    """``value`` (mm) when within ``limits``, else a CT2XError naming it, the range and ``why``."""
    low, high = limits
    if not low <= value <= high:
        metres = " (given in metres? mm are expected)" if low <= value * 1000 <= high else ""
        raise CT2XError(f"{name} is {value:g} mm{metres}, outside [{low:g}, {high:g}] mm, {why}: give a value in it")
    return value


def check_detector(detector_shape: tuple[int, int], pixel_spacing: tuple[float, float], what: str) -> None:
    """Refuse a detector no device has: rows or columns (pixels) outside :data:`DETECTOR_PIXELS_RANGE`, or a side
    (pixels x ``pixel_spacing`` mm) outside :data:`DETECTOR_SIDE_RANGE_MM`. ``what`` names the inputs in the
    message (e.g. ``"--size 256 x 256 / --pixel 1.16 x 1.16 mm"``). The pixel spacing alone is not checked: a
    DRR's readout is binned freely (:data:`PIXEL_SPACING_RANGE_MM` is for a real radiograph's pixels)."""
    (rows, columns), (row_mm, column_mm) = detector_shape, pixel_spacing
    low, high = DETECTOR_PIXELS_RANGE
    if not (low <= rows <= high and low <= columns <= high):
        raise CT2XError(
            f"{what}: a detector of {rows} x {columns} pixels is outside [{low}, {high}] pixels a side, "
            "the range of real detectors: give a size in it"
        )
    height, width = rows * row_mm, columns * column_mm
    low_mm, high_mm = DETECTOR_SIDE_RANGE_MM
    if not (low_mm <= height <= high_mm and low_mm <= width <= high_mm):
        raise CT2XError(
            f"{what}: the detector would be {height:g} x {width:g} mm, outside [{low_mm:g}, {high_mm:g}] mm a side, "
            "the range of real detectors (intra-oral sensors to long-length panels): give a size and pixel spacing "
            "whose product lies in it"
        )


@dataclass(frozen=True)
class CArm:
    """One C-arm view: the gantry angles and the imaging chain, in LPS millimetres.

    Attributes:
        primary: LAO (+) / RAO (-) angle in degrees, about the patient's superior axis.
        secondary: CRAN (+) / CAUD (-) angle in degrees, about the patient's left axis.
        sdd: source-to-detector distance, mm, within :data:`SDD_RANGE_MM`.
        sid: source-to-isocenter distance, mm, within :data:`SID_RANGE_MM` and smaller than ``sdd``.
        detector_shape: ``(rows H, columns W)`` in pixels.
        pixel_spacing: ``(row spacing, column spacing)`` in mm on the detector.
        isocenter: the point the C-arm turns about, LPS mm.
    """

    primary: float = 0.0
    secondary: float = 0.0
    sdd: float = DEFAULT_SDD_MM
    sid: float = DEFAULT_SID_MM
    detector_shape: tuple[int, int] = (DEFAULT_DETECTOR_PIXELS, DEFAULT_DETECTOR_PIXELS)
    pixel_spacing: tuple[float, float] = (DEFAULT_PIXEL_MM, DEFAULT_PIXEL_MM)
    isocenter: tuple[float, float, float] = (0.0, 0.0, 0.0)
    _rotation: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("primary", "secondary"):
            value = getattr(self, name)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise CT2XError(f"the {name} angle must be a number in degrees, got {value!r}") from None
            if not math.isfinite(value) or abs(value) > 180:
                raise CT2XError(f"the {name} angle must lie in [-180, 180] degrees, got {value:g}")
            object.__setattr__(self, name, value)
        sdd = positive_finite("the source-to-detector distance (sdd)", self.sdd, "mm", quantity="distance in")
        sid = positive_finite("the source-to-isocenter distance (sid)", self.sid, "mm", quantity="distance in")
        inside = " (a nearer source is in the patient)" if sid < SID_RANGE_MM[0] else ""
        _in_range("the source-to-isocenter distance (sid)", sid, SID_RANGE_MM, _REAL_CHAINS + inside)
        _in_range("the source-to-detector distance (sdd)", sdd, SDD_RANGE_MM, _REAL_CHAINS)
        if sid >= sdd:
            raise CT2XError(
                f"the source-to-isocenter distance ({sid:g} mm) must be smaller than the "
                f"source-to-detector distance ({sdd:g} mm): the patient lies between source and detector"
            )
        try:
            shape = tuple(int(n) for n in self.detector_shape)
        except (TypeError, ValueError):
            shape = ()
        if len(shape) != 2 or min(shape) < 1 or shape != tuple(self.detector_shape):
            raise CT2XError(
                f"the detector size must be two positive whole numbers of pixels, got {self.detector_shape!r}"
            )
        spacing = tuple(
            positive_finite("the detector pixel spacing", s, "mm", quantity="distance in") for s in self.pixel_spacing
        )
        if len(spacing) != 2:
            raise CT2XError(f"the detector pixel spacing must be (row, column) in mm, got {self.pixel_spacing!r}")
        iso = tuple(float(c) for c in self.isocenter)
        if len(iso) != 3 or not all(math.isfinite(c) for c in iso):
            raise CT2XError(f"the isocenter must be three finite LPS coordinates in mm, got {self.isocenter!r}")
        object.__setattr__(self, "sdd", sdd)
        object.__setattr__(self, "sid", sid)
        object.__setattr__(self, "detector_shape", shape)
        object.__setattr__(self, "pixel_spacing", spacing)
        object.__setattr__(self, "isocenter", iso)
        object.__setattr__(self, "_rotation", gantry_rotation(self.primary, self.secondary) @ _AP_AXES)

    # ----------------------------------------------------------------- frames
    @property
    def rotation(self) -> np.ndarray:
        """3x3 camera-to-world rotation; columns = image right, image down, source→detector (LPS)."""
        return self._rotation.copy()

    @property
    def viewing_direction(self) -> np.ndarray:
        """Unit vector from the source toward the detector, LPS."""
        return self._rotation[:, 2].copy()

    @property
    def source(self) -> np.ndarray:
        """X-ray source position, LPS mm."""
        return np.asarray(self.isocenter) - self.sid * self._rotation[:, 2]

    @property
    def detector_center(self) -> np.ndarray:
        """Centre of the detector's sensitive area, LPS mm."""
        return self.source + self.sdd * self._rotation[:, 2]

    @property
    def detector_normal(self) -> np.ndarray:
        """Unit normal of the detector plane, pointing from the detector toward the source (LPS)."""
        return -self.viewing_direction

    @property
    def detector_size_mm(self) -> tuple[float, float]:
        """Physical ``(height, width)`` of the detector, mm."""
        (h, w), (sv, su) = self.detector_shape, self.pixel_spacing
        return h * sv, w * su

    @property
    def detector_corners(self) -> np.ndarray:
        """(4, 3) outer corners of the detector, LPS mm: top-left, top-right, bottom-right, bottom-left as displayed."""
        height, width = self.detector_size_mm
        right, down = self._rotation[:, 0], self._rotation[:, 1]
        c = self.detector_center
        return np.stack(
            [
                c - 0.5 * width * right - 0.5 * height * down,
                c + 0.5 * width * right - 0.5 * height * down,
                c + 0.5 * width * right + 0.5 * height * down,
                c - 0.5 * width * right + 0.5 * height * down,
            ]
        )

    @property
    def image_ijk_to_lps(self) -> np.ndarray:
        """4x4 affine from image index ``(column i, row j, 0)`` to the pixel centre in LPS mm.

        The third axis is the detector normal (toward the source) with unit spacing, so the
        image can be stored as a single-slice volume that lies on the detector plane.
        """
        (h, w), (sv, su) = self.detector_shape, self.pixel_spacing
        right, down = self._rotation[:, 0], self._rotation[:, 1]
        origin = self.detector_center - 0.5 * (w - 1) * su * right - 0.5 * (h - 1) * sv * down
        affine = np.eye(4)
        affine[:3, 0] = right * su
        affine[:3, 1] = down * sv
        affine[:3, 2] = self.detector_normal
        affine[:3, 3] = origin
        return affine

    def pixel_centers(self) -> np.ndarray:
        """(H, W, 3) LPS positions of every detector pixel centre, mm."""
        h, w = self.detector_shape
        jj, ii = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
        affine = self.image_ijk_to_lps
        return ii[..., None] * affine[:3, 0] + jj[..., None] * affine[:3, 1] + affine[:3, 3]

    # ------------------------------------------------------------ projection
    @property
    def intrinsics(self) -> np.ndarray:
        """3x3 pixel intrinsics K (focal lengths in pixels, principal point at the detector centre)."""
        (h, w), (sv, su) = self.detector_shape, self.pixel_spacing
        return np.array([[self.sdd / su, 0.0, (w - 1) / 2], [0.0, self.sdd / sv, (h - 1) / 2], [0.0, 0.0, 1.0]])

    @property
    def projection_matrix(self) -> np.ndarray:
        """3x4 matrix taking homogeneous LPS mm to homogeneous pixel coordinates ``(u, v, 1)``."""
        r_t = self._rotation.T
        return self.intrinsics @ np.hstack([r_t, (-r_t @ self.source)[:, None]])

    def project(self, points_lps: np.ndarray) -> np.ndarray:
        """Project (N, 3) LPS points (mm) to (N, 2) pixel coordinates ``(u = column, v = row)``."""
        points = np.atleast_2d(np.asarray(points_lps, dtype=np.float64))
        homogeneous = np.hstack([points, np.ones((len(points), 1))]) @ self.projection_matrix.T
        return homogeneous[:, :2] / homogeneous[:, 2:3]

    # ------------------------------------------------------------------ pose
    @property
    def pose(self) -> np.ndarray:
        """The 25-number pose of paper eq. 1 (float64); see the module docstring."""
        cam_to_world = np.eye(4)
        cam_to_world[:3, :3] = self._rotation
        cam_to_world[:3, 3] = (self.source - np.asarray(self.isocenter)) / 1000.0
        (h, w), (sv, su) = self.detector_shape, self.pixel_spacing
        normalised = np.array([[self.sdd / (w * su), 0.0, 0.5], [0.0, self.sdd / (h * sv), 0.5], [0.0, 0.0, 1.0]])
        return np.concatenate([cam_to_world.ravel(), normalised.ravel()])

    @classmethod
    def from_pose(
        cls,
        pose: np.ndarray,
        detector_shape: tuple[int, int] = (DEFAULT_DETECTOR_PIXELS, DEFAULT_DETECTOR_PIXELS),
        pixel_spacing: tuple[float, float] = (DEFAULT_PIXEL_MM, DEFAULT_PIXEL_MM),
        isocenter: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ) -> CArm:
        """Rebuild a view from its 25-number pose.

        The pose carries the angles, the source-to-isocenter distance and the focal length
        relative to the detector size; the detector's pixel count and spacing and the
        isocenter are not in it and are passed here (``sdd = fx * W * pixel_w``).
        """
        p = np.asarray(pose, dtype=np.float64).ravel()
        if p.shape != (POSE_SIZE,) or not np.all(np.isfinite(p)):
            raise CT2XError(f"a pose has {POSE_SIZE} finite numbers, got shape {np.asarray(pose).shape}")
        cam_to_world = p[:16].reshape(4, 4)
        k = p[16:].reshape(3, 3)
        rotation = cam_to_world[:3, :3]
        if not np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-6):
            raise CT2XError("the pose's rotation block is not orthonormal")
        z = rotation[:, 2]
        secondary = math.degrees(math.asin(max(-1.0, min(1.0, z[2]))))
        primary = math.degrees(math.atan2(z[0], -z[1]))
        sid = float(np.linalg.norm(cam_to_world[:3, 3])) * 1000.0
        (h, w), (sv, su) = detector_shape, pixel_spacing
        sdd = float(k[0, 0]) * w * su
        if not math.isclose(sdd, float(k[1, 1]) * h * sv, rel_tol=1e-6):
            raise CT2XError("the pose's focal lengths disagree with the detector size and pixel spacing given")
        return cls(primary, secondary, sdd, sid, (h, w), pixel_spacing, isocenter)

    def with_angles(self, primary: float, secondary: float = 0.0) -> CArm:
        """The same imaging chain at other gantry angles (degrees)."""
        return replace(self, primary=primary, secondary=secondary)


def pose_field_of_view_mm(pose: np.ndarray) -> float:
    """The width in mm, at the isocenter, of the field a 25-number pose's detector sees:
    ``SID / fx`` (the pose stores the source's offset from the isocenter in metres and
    ``fx = SDD / detector width``)."""
    p = np.asarray(pose, dtype=np.float64).ravel()
    sid_mm = float(np.linalg.norm(p[[3, 7, 11]])) * 1000.0
    return sid_mm / float(p[16])


def fit_view(view: CArm, pixels: int = FIT_PIXELS) -> CArm:
    """The view an imaging chain's look is fitted at for ``view`` (``ct2x.synthesize.fitted_look``): AP (primary
    and secondary 0) about its isocenter, at its distances, over the central square of its detector (the shorter
    side, mm) read out at ``pixels`` a side. Every view of one geometry has the same fitting view, whatever its
    angles."""
    side = min(view.detector_size_mm)
    return CArm(0.0, 0.0, view.sdd, view.sid, (pixels, pixels), (side / pixels, side / pixels), view.isocenter)


def fit_views(view: CArm, pixels: int = FIT_PIXELS) -> list[CArm]:
    """The views an imaging chain's look is fitted over for ``view`` (``ct2x.synthesize.fitted_look``):
    :func:`fit_view` turned to each primary angle of :data:`FIT_PRIMARIES_DEG` about its isocenter, AP first."""
    at = fit_view(view, pixels)
    return [replace(at, primary=angle) for angle in FIT_PRIMARIES_DEG]


def matched_chain(sid_mm: float) -> tuple[float, float]:
    """The (SDD, detector width) in mm of an imaging chain with its source ``sid_mm`` from the
    isocenter, interpolated linearly between :data:`MOBILE_CARM_CHAIN` and
    :data:`CHEST_FILM_CHAIN` (and held at their values outside them): the short C-arm has a
    490 mm air gap and a small detector, the chest radiograph a 100 mm gap and a cassette.
    The field of view at the isocenter grows from 143 mm (SID 450) to 407 mm (SID 1800)."""
    (s0, d0, w0), (s1, d1, w1) = MOBILE_CARM_CHAIN, CHEST_FILM_CHAIN
    t = min(1.0, max(0.0, (float(sid_mm) - s0) / (s1 - s0)))
    gap = (d0 - s0) + t * ((d1 - s1) - (d0 - s0))
    return float(sid_mm) + gap, w0 + t * (w1 - w0)


def views(
    primaries: list[float] | tuple[float, ...],
    secondaries: list[float] | tuple[float, ...] | None = None,
    **chain: object,
) -> list[CArm]:
    """One :class:`CArm` per primary angle; ``secondaries`` is one value for all or one per view."""
    primaries = list(primaries)
    if not primaries:
        raise CT2XError("give at least one gantry angle")
    secondaries = [0.0] if secondaries is None or len(secondaries) == 0 else list(secondaries)
    if len(secondaries) == 1:
        secondaries = secondaries * len(primaries)
    if len(secondaries) != len(primaries):
        raise CT2XError(
            f"got {len(primaries)} primary angles but {len(secondaries)} secondary angles: "
            "give one secondary angle for all views or one per view"
        )
    return [CArm(primary=p, secondary=s, **chain) for p, s in zip(primaries, secondaries, strict=True)]

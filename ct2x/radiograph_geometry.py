"""The C-arm geometry of a real DICOM radiograph, to synthesize views "like" it.

Read from the file's tags (DICOM PS3.3 DX, CR, XA and RF image modules), in ``ct2x``'s
conventions (``ct2x.geometry``: degrees, millimetres):

* ``primary`` = PositionerPrimaryAngle (0018,1510) and ``secondary`` = PositionerSecondaryAngle
  (0018,1511). For XA and RF the standard defines them by the image intensifier's (detector's)
  position about the patient, RAO -> LAO positive and CAU -> CRA positive, which is exactly
  ``ct2x``'s LAO + / CRAN +; ``ct2x.view_files.write_view_dicom`` writes its DX files with the
  same convention, and DX / CR files are read with it too. A DX or CR file without a primary
  angle but with ViewPosition (0018,5101) AP, PA, LL or RL takes 0, 180, 90 or -90 degrees
  (detector anterior, posterior, on the patient's left, on the right). Multi-frame XA cine
  files: the angles of the first frame.
* ``sdd`` = DistanceSourceToDetector (0018,1110); ``sid`` = DistanceSourceToPatient (0018,1111),
  which the standard measures to the isocenter (XA) or to the patient's surface (DX): it is used
  as the source-to-isocenter distance either way. Without a usable SDD, a source farther than the
  default SDD (a chest or long-length stand) keeps its distance and the SDD adds the air gap of
  ``ct2x.geometry.matched_chain`` (100 mm at 1800 mm), instead of the mobile C-arm's 1020 mm.
* the detector: Rows x Columns pixels of ImagerPixelSpacing (0018,1164), the spacing on the
  detector's front plane. Without it, PixelSpacing (0028,0030) is used: multiplied by
  EstimatedRadiographicMagnificationFactor (0018,1114) when given, else by SDD / SID when its
  calibration type says it was corrected to the isocenter plane (GEOMETRY), else as it is.

Each tag is checked against the ranges of real devices (``ct2x.geometry``: SID 100-3000 mm, SDD
200-3000 mm and larger than the SID, pixel spacing 0.01-5 mm, angles within +-180 degrees). A tag
that is missing, invalid (present but negative, zero, NaN or not a number) or out of range is
replaced by a default and reported in :attr:`RadiographGeometry.notes` (one line each, which the
CLI prints as warnings), naming the tag, the value found and why, and the default used instead
(``ct2x.geometry``'s DeepDRR mobile C-arm; without a pixel spacing, 1.164 mm pixels, or the default
298 mm detector when those would make it wider than 1300 mm). Refused with a
:class:`ct2x.errors.CT2XError` naming the file: a file that is not DICOM, damaged (no DICOM header
after the 'DICM' preamble) or truncated (it ends before its Modality, Rows, Columns and image); a
file that is not a projection radiograph (a CT slice, an MR image...); Rows or Columns outside
8-16384 or a detector side outside 5-1300 mm (no device has one, and a default would hide it).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from ct2x.errors import CT2XError
from ct2x.geometry import (
    DEFAULT_DETECTOR_WIDTH_MM,
    DEFAULT_PIXEL_MM,
    DEFAULT_SDD_MM,
    DEFAULT_SID_MM,
    DETECTOR_PIXELS_RANGE,
    DETECTOR_SIDE_RANGE_MM,
    PIXEL_SPACING_RANGE_MM,
    SDD_RANGE_MM,
    SID_RANGE_MM,
    matched_chain,
)

#: Modalities of projection radiographs: digital X-ray, computed radiography, angiography, fluoroscopy.
RADIOGRAPH_MODALITIES = ("DX", "CR", "XA", "RF")

_REAL_CHAINS = "the range of real C-arms and radiography stands"

#: DX / CR ViewPosition -> primary angle (degrees, LAO +): where the detector is.
VIEW_POSITION_PRIMARY = {"AP": 0.0, "PA": 180.0, "LL": 90.0, "RL": -90.0}


@dataclass(frozen=True)
class RadiographGeometry:
    """The imaging chain of one radiograph (angles in degrees, distances and spacing in mm).

    Attributes:
        primary: LAO (+) / RAO (-).
        secondary: CRAN (+) / CAUD (-).
        sdd: source-to-detector distance.
        sid: source-to-isocenter distance.
        detector_shape: ``(rows, columns)`` in pixels.
        pixel_spacing: ``(row spacing, column spacing)`` on the detector.
        modality: the file's Modality (DX, CR, XA or RF).
        notes: one line per tag that was missing or unusable, naming the default used instead.
    """

    primary: float
    secondary: float
    sdd: float
    sid: float
    detector_shape: tuple[int, int]
    pixel_spacing: tuple[float, float]
    modality: str
    notes: tuple[str, ...] = ()

    @property
    def detector_size_mm(self) -> tuple[float, float]:
        """Physical ``(height, width)`` of the detector, mm."""
        return (self.detector_shape[0] * self.pixel_spacing[0], self.detector_shape[1] * self.pixel_spacing[1])


def _tag(dataset, keyword: str, index: int = 0) -> tuple[float | None, str | None]:
    """``(number, text)`` of value ``index`` of a numeric tag: ``(None, None)`` when the tag is absent or empty,
    ``(None, text)`` when it is present but not a finite number (``text`` as written, for the message),
    else the number and its text."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's "Invalid value for VR DS": the note names the value instead
        try:
            value = dataset.get(keyword)
        except Exception:  # noqa: BLE001 (pydicom in strict reading mode raises on a value it cannot convert)
            value = getattr(dataset.get_item(keyword), "value", None)
    if isinstance(value, bytes):  # a raw value pydicom could not convert
        value = value.decode("ascii", "replace").strip(" \x00").split("\\")
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = value[index] if len(value) > index else None
    if value is None or str(value).strip() == "":
        return None, None
    text = str(value).strip()
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None, text
    return (number, text) if math.isfinite(number) else (None, text)


def _number(dataset, keyword: str) -> float | None:
    """The first value of a numeric tag, or None when absent, empty or not a finite number."""
    return _tag(dataset, keyword)[0]


def _shown(text: str, unit: str) -> str:
    """A tag's value as written in the file, with ``unit`` when it is a number, quoted when it is not."""
    try:
        float(text)
    except ValueError:
        return repr(text)
    return f"{text}{unit}"


def _spacing(dataset, keyword: str) -> tuple[tuple[float, float] | None, str]:
    """A two-valued spacing tag (row, column) in mm, or None and why not ("is missing", "= ... is not ...")."""
    (row, row_text), (column, column_text) = _tag(dataset, keyword, 0), _tag(dataset, keyword, 1)
    if row_text is None:
        return None, "is missing"
    if column_text is None:
        column, column_text = row, row_text
    if row is None or column is None or row <= 0 or column <= 0:
        written = row_text if column_text == row_text else f"{row_text}\\{column_text}"
        return None, f"= {_shown(written, ' mm')} is not a positive spacing in mm"
    return (row, column), ""


def _refused_spacing(spacing: tuple[float, float], found: str) -> str:
    """Why a pixel spacing (row, column; mm) is refused, after ``found`` ("=", "gives"): "" when it is within
    :data:`PIXEL_SPACING_RANGE_MM`."""
    low, high = PIXEL_SPACING_RANGE_MM
    if all(low <= s <= high for s in spacing):
        return ""
    shown = f"{spacing[0]:g}" if spacing[0] == spacing[1] else f"{spacing[0]:g} x {spacing[1]:g}"
    return f"{found} {shown} mm pixels, outside [{low:g}, {high:g}] mm, the pixel spacing of real detectors"


def read_dicom_header(path: str | os.PathLike[str]):  # noqa: ANN201 (pydicom is imported lazily)
    """The DICOM header of ``path`` (no pixel data), or a CT2XError naming the file: one that does not exist,
    is not DICOM, holds no DICOM header after its 'DICM' preamble (damaged) or ends before its Modality,
    Rows, Columns and image (truncated)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    file = Path(path)
    if not file.is_file():
        raise CT2XError(f"the radiograph {file} does not exist or is not a file")
    give = "give a DICOM radiograph (DX, CR, XA, RF)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings on a damaged file's values: the error below says it
        try:
            with file.open("rb") as stream:
                dataset = pydicom.dcmread(stream, stop_before_pixels=True)
                at_end = stream.tell() >= file.stat().st_size  # no Pixel Data before the end of the file
            elements = [e for e in dataset if e.tag.group != 0x0002]
        except OSError as error:
            raise CT2XError(f"the radiograph {file} cannot be read ({error}): check that it is readable") from None
        except InvalidDicomError as error:  # no 'DICM' preamble
            raise CT2XError(f"{file} is not a readable DICOM file ({error}): {give}") from None
        except Exception as error:  # noqa: BLE001 (pydicom raises many kinds on a damaged header: unknown VRs...)
            raise CT2XError(
                f"{file} is not a readable DICOM file ({error}): the file is damaged or not DICOM; {give}"
            ) from None
    if "Modality" not in dataset and len(getattr(dataset, "file_meta", None) or ()) == 0:
        raise CT2XError(
            f"{file} is not a readable DICOM file: what follows its 'DICM' preamble is not a DICOM header "
            f"(no file meta information, no Modality): the file is damaged or not DICOM; {give}"
        )
    lacking = [k for k in ("Modality", "Rows", "Columns") if k not in dataset]
    if at_end and lacking:
        last = elements[-1] if elements else None
        where = "in its file meta information" if last is None else f"after {last.keyword or last.tag}"
        raise CT2XError(
            f"{file} is not a readable DICOM file: it ends after {file.stat().st_size} bytes, {where}, before its "
            f"{', '.join(lacking)} and its image (no Pixel Data): the file is truncated or damaged; copy it again "
            f"or {give}"
        )
    return dataset


def radiograph_geometry(dataset, name: str = "the radiograph") -> RadiographGeometry:
    """The :class:`RadiographGeometry` of a pydicom dataset (see the module docstring): tags that are missing,
    invalid or outside the ranges of real devices are replaced by defaults and named in ``notes``; a file that
    is not a radiograph, or whose detector no device has, is refused with a CT2XError naming ``name``."""
    modality = _radiograph_modality(dataset, name)
    notes: list[str] = []
    primary, secondary = _angles(dataset, modality, notes)
    sdd, sid = _distances(dataset, notes)
    shape = _detector_shape(dataset, name)
    spacing = _pixel_spacing(dataset, shape, sdd, sid, notes)
    _check_detector_side(name, shape, spacing)
    return RadiographGeometry(
        primary=float(primary),
        secondary=float(secondary),
        sdd=float(sdd),
        sid=float(sid),
        detector_shape=shape,
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
        modality=modality,
        notes=tuple(notes),
    )


def _radiograph_modality(dataset, name: str) -> str:
    """The dataset's Modality, upper case, refused with a CT2XError naming ``name`` unless it is one of
    :data:`RADIOGRAPH_MODALITIES`."""
    modality = str(dataset.get("Modality", "")).strip().upper()
    if modality not in RADIOGRAPH_MODALITIES:
        kind = f"a {modality} image" if modality else "an image without a Modality tag"
        raise CT2XError(
            f"{name} is {kind}, not a projection radiograph: give a DX, CR, XA or RF DICOM file "
            "(a CT slice has no C-arm geometry)"
        )
    return modality


def _angle(dataset, keyword: str, modality: str) -> tuple[float | None, str]:
    """An angle tag in degrees, or None and why not (an XA or RF file without it: the first frame's, in the
    per-frame groups of an enhanced file)."""
    value, text = _tag(dataset, keyword)
    if text is None and modality in ("XA", "RF"):
        frames = dataset.get("PerFrameFunctionalGroupsSequence")  # enhanced XA/XRF: first frame
        if frames:
            for group in frames[0].get("PositionerPositionSequence", []) or []:
                value, text = _tag(group, keyword)
    if text is None:
        return None, "is missing"
    if value is None:
        return None, f"= {text!r} is not a number of degrees"
    if abs(value) > 180:
        return None, f"= {value:g} is outside [-180, 180] degrees"
    return value, ""


def _angles(dataset, modality: str, notes: list[str]) -> tuple[float, float]:
    """``(primary, secondary)`` in degrees. Without a usable primary angle: the angle of the ViewPosition (AP,
    PA, LL, RL: :data:`VIEW_POSITION_PRIMARY`), else 0 (AP); without a usable secondary angle: 0. Each
    replacement is added to ``notes``."""
    view = str(dataset.get("ViewPosition", "")).strip().upper()
    primary, why = _angle(dataset, "PositionerPrimaryAngle", modality)
    if primary is None and view in VIEW_POSITION_PRIMARY:
        primary = VIEW_POSITION_PRIMARY[view]
        notes.append(f"PositionerPrimaryAngle {why}: using {primary:g} degrees from ViewPosition {view}")
    elif primary is None:
        primary = 0.0
        notes.append(f"PositionerPrimaryAngle {why}: using 0 degrees (AP)")
    secondary, why = _angle(dataset, "PositionerSecondaryAngle", modality)
    if secondary is None:
        secondary = 0.0
        notes.append(f"PositionerSecondaryAngle {why}: using 0 degrees")
    return primary, secondary


def _distance(dataset, keyword: str, limits: tuple[float, float], below: str = "") -> tuple[float | None, str]:
    """A distance tag in mm within ``limits`` (mm), or None and why not (``below``: what a value under the
    range means)."""
    value, text = _tag(dataset, keyword)
    if text is None:
        return None, "is missing"
    if value is None or value <= 0:
        return None, f"= {_shown(text, ' mm')} is not a positive distance in mm"
    if not limits[0] <= value <= limits[1]:
        why = f"= {value:g} mm is outside [{limits[0]:g}, {limits[1]:g}] mm, {_REAL_CHAINS}"
        return None, why + (below if value < limits[0] else "")
    return value, ""


def _distances(dataset, notes: list[str]) -> tuple[float, float]:
    """``(sdd, sid)`` in mm. Without a usable SDD: a source at least the default SDD away keeps its distance
    and the SDD adds ``ct2x.geometry.matched_chain``'s air gap, else the default SDD. Without a usable SID, or
    one not smaller than the SDD: the default SID scaled by SDD / default SDD. Each replacement is added to
    ``notes``."""
    sdd, why = _distance(dataset, "DistanceSourceToDetector", SDD_RANGE_MM)
    sid, sid_why = _distance(dataset, "DistanceSourceToPatient", SID_RANGE_MM, " (a nearer source is in the patient)")
    if sdd is None and sid is not None and sid >= DEFAULT_SDD_MM:  # a far source: keep it, not the C-arm's SDD
        sdd = min(matched_chain(sid)[0], SDD_RANGE_MM[1])
        notes.append(
            f"DistanceSourceToDetector {why}: using {sdd:g} mm (DistanceSourceToPatient {sid:g} mm + the air gap "
            "of ct2x.geometry.matched_chain)"
        )
    elif sdd is None:
        notes.append(f"DistanceSourceToDetector {why}: using {DEFAULT_SDD_MM:g} mm")
        sdd = DEFAULT_SDD_MM
    if sid is not None and sid >= sdd:
        sid_why = f"= {sid:g} mm is not smaller than the SDD ({sdd:g} mm): the patient lies between source and detector"
        sid = None
    if sid is None:
        sid = DEFAULT_SID_MM * sdd / DEFAULT_SDD_MM
        notes.append(
            f"DistanceSourceToPatient {sid_why}: using {sid:g} mm (SDD x {DEFAULT_SID_MM:g} / {DEFAULT_SDD_MM:g})"
        )
    return sdd, sid


def _detector_shape(dataset, name: str) -> tuple[int, int]:
    """``(Rows, Columns)`` in pixels, refused with a CT2XError naming ``name`` when absent or outside
    :data:`ct2x.geometry.DETECTOR_PIXELS_RANGE`."""
    rows, columns = _number(dataset, "Rows"), _number(dataset, "Columns")
    if not rows or not columns or rows < 1 or columns < 1:
        raise CT2XError(f"{name} has no Rows / Columns: it holds no image")
    shape = (int(rows), int(columns))
    low, high = DETECTOR_PIXELS_RANGE
    if not (low <= shape[0] <= high and low <= shape[1] <= high):
        raise CT2XError(
            f"{name}: Rows x Columns = {shape[0]} x {shape[1]} is outside [{low}, {high}] pixels a side, the range "
            "of real detectors: give another radiograph, or set the geometry by hand"
        )
    return shape


def _pixel_spacing(dataset, shape: tuple[int, int], sdd: float, sid: float, notes: list[str]) -> tuple[float, float]:
    """The detector's ``(row, column)`` pixel spacing in mm: ImagerPixelSpacing, else PixelSpacing
    (:func:`_spacing_from_pixel_spacing`; ``sdd``, ``sid`` in mm), else a default
    (:func:`_default_pixel_spacing` of the ``shape`` in pixels). A replacement is added to ``notes``."""
    spacing, why = _spacing(dataset, "ImagerPixelSpacing")
    if spacing is not None and _refused_spacing(spacing, "="):
        spacing, why = None, _refused_spacing(spacing, "=")
    if spacing is not None:
        return spacing
    spacing, how = _spacing_from_pixel_spacing(dataset, sdd, sid)
    if spacing is not None:
        notes.append(f"ImagerPixelSpacing {why}: using {how}")
        return spacing
    spacing, default = _default_pixel_spacing(shape)
    if why == how == "is missing":
        notes.append(f"ImagerPixelSpacing and PixelSpacing are missing: using {default}")
    else:
        notes.append(f"ImagerPixelSpacing {why}; PixelSpacing {how}: using {default}")
    return spacing


def _spacing_from_pixel_spacing(dataset, sdd: float, sid: float) -> tuple[tuple[float, float] | None, str]:
    """The detector's pixel spacing (mm) from PixelSpacing and how it was derived (multiplied by
    EstimatedRadiographicMagnificationFactor, or by ``sdd`` / ``sid`` for a GEOMETRY calibration, or as it
    is), or None and why not."""
    spacing, how = _spacing(dataset, "PixelSpacing")
    magnification = _number(dataset, "EstimatedRadiographicMagnificationFactor")
    calibration = str(dataset.get("PixelSpacingCalibrationType", "")).strip().upper()
    if spacing is None:
        return None, how
    if magnification is not None and magnification >= 1:
        spacing = (spacing[0] * magnification, spacing[1] * magnification)
        how = f"PixelSpacing x EstimatedRadiographicMagnificationFactor ({magnification:g})"
    elif calibration == "GEOMETRY":
        spacing = (spacing[0] * sdd / sid, spacing[1] * sdd / sid)
        how = "PixelSpacing (GEOMETRY calibration) x SDD / SID"
    else:
        how = "PixelSpacing as the detector's pixel spacing"
    refused = _refused_spacing(spacing, "gives")
    return (None, refused) if refused else (spacing, how)


def _default_pixel_spacing(shape: tuple[int, int]) -> tuple[tuple[float, float], str]:
    """The default pixel spacing (mm) of a detector of ``shape`` pixels and its description: DEFAULT_PIXEL_MM,
    or the default detector's width over the longer side when that would make the detector wider than
    :data:`ct2x.geometry.DETECTOR_SIDE_RANGE_MM` allows."""
    if max(shape) * DEFAULT_PIXEL_MM > DETECTOR_SIDE_RANGE_MM[1]:  # many pixels: the default detector's width
        spacing = DEFAULT_DETECTOR_WIDTH_MM / max(shape)
        return (spacing, spacing), f"{spacing:.4g} mm pixels (the default {DEFAULT_DETECTOR_WIDTH_MM:.0f} mm detector)"
    return (DEFAULT_PIXEL_MM, DEFAULT_PIXEL_MM), f"{DEFAULT_PIXEL_MM:.4g} mm pixels"


def _check_detector_side(name: str, shape: tuple[int, int], spacing: tuple[float, float]) -> None:
    """Refuse, with a CT2XError naming ``name``, a detector (``shape`` pixels of ``spacing`` mm) whose height
    or width is outside :data:`ct2x.geometry.DETECTOR_SIDE_RANGE_MM`."""
    height, width = shape[0] * spacing[0], shape[1] * spacing[1]
    low_mm, high_mm = DETECTOR_SIDE_RANGE_MM
    if not (low_mm <= height <= high_mm and low_mm <= width <= high_mm):
        raise CT2XError(
            f"{name}: Rows x Columns = {shape[0]} x {shape[1]} pixels of {spacing[0]:g} x {spacing[1]:g} mm make a "
            f"{height:g} x {width:g} mm detector, outside [{low_mm:g}, {high_mm:g}] mm a side, the range of real "
            "detectors (a wider image is stitched from several exposures): give another radiograph, or set the "
            "geometry by hand"
        )


def read_radiograph_geometry(path: str | os.PathLike[str]) -> RadiographGeometry:
    """:func:`radiograph_geometry` of a DICOM file (header only)."""
    return radiograph_geometry(read_dicom_header(path), name=str(path))

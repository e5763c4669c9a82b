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
  as the source-to-isocenter distance either way.
* the detector: Rows x Columns pixels of ImagerPixelSpacing (0018,1164), the spacing on the
  detector's front plane. Without it, PixelSpacing (0028,0030) is used: multiplied by
  EstimatedRadiographicMagnificationFactor (0018,1114) when given, else by SDD / SID when its
  calibration type says it was corrected to the isocenter plane (GEOMETRY), else as it is.

Every tag that is missing (or unreadable) is reported in :attr:`RadiographGeometry.notes`,
naming the tag and the default used instead (``ct2x.geometry``'s DeepDRR mobile C-arm). A
file that is not a projection radiograph (a CT slice, an MR image...) is refused with a
:class:`ct2x.errors.CT2XError`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from ct2x.errors import CT2XError
from ct2x.geometry import DEFAULT_PIXEL_MM, DEFAULT_SDD_MM, DEFAULT_SID_MM

#: Modalities of projection radiographs: digital X-ray, computed radiography, angiography, fluoroscopy.
RADIOGRAPH_MODALITIES = ("DX", "CR", "XA", "RF")

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


def _number(dataset, keyword: str) -> float | None:
    """The first value of a numeric tag, or None when absent, empty or not a finite number."""
    value = dataset.get(keyword)
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        if len(value) == 0:
            return None
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _pair(dataset, keyword: str) -> tuple[float, float] | None:
    """A two-valued positive spacing tag (row, column), or None."""
    value = dataset.get(keyword)
    try:
        numbers = [float(v) for v in value] if value is not None else []
    except (TypeError, ValueError):
        return None
    if len(numbers) == 1:
        numbers = numbers * 2
    if len(numbers) != 2 or not all(math.isfinite(n) and n > 0 for n in numbers):
        return None
    return numbers[0], numbers[1]


def read_dicom_header(path: str | os.PathLike[str]):  # noqa: ANN201 (pydicom is imported lazily)
    """The DICOM header of ``path`` (no pixel data), or a CT2XError naming the file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    file = Path(path)
    if not file.is_file():
        raise CT2XError(f"the radiograph {file} does not exist or is not a file")
    try:
        return pydicom.dcmread(file, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError) as error:
        raise CT2XError(
            f"{file} is not a readable DICOM file ({error}): give a DICOM radiograph (DX, CR, XA, RF)"
        ) from None


def radiograph_geometry(dataset, name: str = "the radiograph") -> RadiographGeometry:
    """The :class:`RadiographGeometry` of a pydicom dataset (see the module docstring)."""
    modality = str(dataset.get("Modality", "")).strip().upper()
    if modality not in RADIOGRAPH_MODALITIES:
        kind = f"a {modality} image" if modality else "an image without a Modality tag"
        raise CT2XError(
            f"{name} is {kind}, not a projection radiograph: give a DX, CR, XA or RF DICOM file "
            "(a CT slice has no C-arm geometry)"
        )
    notes: list[str] = []

    def angle(keyword: str, fallback: float, fallback_text: str) -> float:
        value = _number(dataset, keyword)
        if value is None and modality in ("XA", "RF"):
            frames = dataset.get("PerFrameFunctionalGroupsSequence")  # enhanced XA/XRF: first frame
            if frames:
                for group in frames[0].get("PositionerPositionSequence", []) or []:
                    value = _number(group, keyword)
        if value is None:
            notes.append(f"{keyword} is missing: using {fallback_text}")
            return fallback
        if abs(value) > 180:
            notes.append(f"{keyword} = {value:g} is outside [-180, 180] degrees: using {fallback_text}")
            return fallback
        return value

    view = str(dataset.get("ViewPosition", "")).strip().upper()
    if _number(dataset, "PositionerPrimaryAngle") is None and view in VIEW_POSITION_PRIMARY:
        primary = VIEW_POSITION_PRIMARY[view]
        notes.append(f"PositionerPrimaryAngle is missing: using {primary:g} degrees from ViewPosition {view}")
    else:
        primary = angle("PositionerPrimaryAngle", 0.0, "0 degrees (AP)")
    secondary = angle("PositionerSecondaryAngle", 0.0, "0 degrees")

    sdd = _number(dataset, "DistanceSourceToDetector")
    if sdd is None or sdd <= 0:
        notes.append(f"DistanceSourceToDetector is missing: using {DEFAULT_SDD_MM:g} mm")
        sdd = DEFAULT_SDD_MM
    sid = _number(dataset, "DistanceSourceToPatient")
    if sid is None or not 0 < sid < sdd:
        default = DEFAULT_SID_MM * sdd / DEFAULT_SDD_MM
        reason = "is missing" if sid is None else f"= {sid:g} mm is not between 0 and the SDD"
        notes.append(
            f"DistanceSourceToPatient {reason}: using {default:g} mm (SDD x {DEFAULT_SID_MM:g} / {DEFAULT_SDD_MM:g})"
        )
        sid = default

    rows, columns = _number(dataset, "Rows"), _number(dataset, "Columns")
    if not rows or not columns or rows < 1 or columns < 1:
        raise CT2XError(f"{name} has no Rows / Columns: it holds no image")
    shape = (int(rows), int(columns))

    spacing = _pair(dataset, "ImagerPixelSpacing")
    if spacing is None:
        at_patient = _pair(dataset, "PixelSpacing")
        magnification = _number(dataset, "EstimatedRadiographicMagnificationFactor")
        calibration = str(dataset.get("PixelSpacingCalibrationType", "")).strip().upper()
        if at_patient is None:
            spacing = (DEFAULT_PIXEL_MM, DEFAULT_PIXEL_MM)
            notes.append(f"ImagerPixelSpacing and PixelSpacing are missing: using {DEFAULT_PIXEL_MM:.4g} mm pixels")
        elif magnification is not None and magnification >= 1:
            spacing = (at_patient[0] * magnification, at_patient[1] * magnification)
            notes.append(
                f"ImagerPixelSpacing is missing: using PixelSpacing x EstimatedRadiographicMagnificationFactor "
                f"({magnification:g})"
            )
        elif calibration == "GEOMETRY":
            spacing = (at_patient[0] * sdd / sid, at_patient[1] * sdd / sid)
            notes.append("ImagerPixelSpacing is missing: using PixelSpacing (GEOMETRY calibration) x SDD / SID")
        else:
            spacing = at_patient
            notes.append("ImagerPixelSpacing is missing: using PixelSpacing as the detector's pixel spacing")
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


def read_radiograph_geometry(path: str | os.PathLike[str]) -> RadiographGeometry:
    """:func:`radiograph_geometry` of a DICOM file (header only)."""
    return radiograph_geometry(read_dicom_header(path), name=str(path))

"""Files for rendered or synthesized 2D views: NRRD with geometry, PNG previews, contact sheets.

A view image is a float32 array ``(H, W)`` laid out as displayed (row 0 at the top,
column 0 on the left; see ``ct2x.geometry``). Its NRRD is a single-slice 3D image whose
origin, spacing and direction put every pixel at its place on the detector plane in LPS
millimetres, so opening it in 3D Slicer (or any ITK reader) shows it where the detector
was. The C-arm parameters are kept as ``ct2x_*`` header fields.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
from PIL import Image, ImageDraw

from ct2x.atomic import atomic_path
from ct2x.geometry import CArm


def view_label(carm: CArm) -> str:
    """Human name of a view's angles, e.g. ``LAO 30 CRAN 10`` (degrees)."""

    def side(angle: float, positive: str, negative: str) -> str:
        return f"{positive if angle >= 0 else negative} {abs(angle):g}"

    return f"{side(carm.primary, 'LAO', 'RAO')} {side(carm.secondary, 'CRAN', 'CAUD')}"


def view_stem(carm: CArm, index: int) -> str:
    """File stem for a view: its index and angles, e.g. ``view00_LAO30_CRAN0``."""
    primary, primary_deg, secondary, secondary_deg = view_label(carm).replace(".", "p").split()
    return f"view{index:02d}_{primary}{primary_deg}_{secondary}{secondary_deg}"


def geometry_fields(carm: CArm) -> dict[str, str]:
    """The C-arm parameters as text fields (angles in degrees, distances in mm, LPS)."""
    return {
        "ct2x_primary_deg": f"{carm.primary:.6g}",
        "ct2x_secondary_deg": f"{carm.secondary:.6g}",
        "ct2x_sdd_mm": f"{carm.sdd:.6g}",
        "ct2x_sid_mm": f"{carm.sid:.6g}",
        "ct2x_isocenter_lps_mm": " ".join(f"{c:.6g}" for c in carm.isocenter),
        "ct2x_source_lps_mm": " ".join(f"{c:.6g}" for c in carm.source),
        "ct2x_pose25": " ".join(f"{c:.9g}" for c in carm.pose),
    }


def write_view_nrrd(path: str | os.PathLike[str], image: np.ndarray, carm: CArm) -> None:
    """Write ``image`` (H, W) as a float32 single-slice NRRD placed on ``carm``'s detector (LPS)."""
    data = np.asarray(image, dtype=np.float32)
    if data.shape != carm.detector_shape:
        raise ValueError(f"image shape {data.shape} does not match the detector {carm.detector_shape}")
    out = sitk.GetImageFromArray(data[None])
    affine = carm.image_ijk_to_lps
    out.SetOrigin(tuple(affine[:3, 3]))
    out.SetSpacing((carm.pixel_spacing[1], carm.pixel_spacing[0], 1.0))
    out.SetDirection(tuple((affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)).ravel()))
    for key, value in geometry_fields(carm).items():
        out.SetMetaData(key, value)
    with atomic_path(path) as tmp:
        sitk.WriteImage(out, str(tmp), useCompression=True)


def write_view_dicom(path: str | os.PathLike[str], image: np.ndarray, carm: CArm, description: str) -> None:
    """Write ``image`` (H, W) in [0, 1] as a DICOM DX (for presentation) image with its C-arm geometry.

    Pixels are 12-bit MONOCHROME2. Tags: DistanceSourceToDetector / ToPatient (mm),
    PositionerPrimaryAngle / SecondaryAngle (degrees, LAO and CRAN positive, as DICOM
    defines them), ImagerPixelSpacing (detector, mm) and PixelSpacing at the isocenter
    (``ImagerPixelSpacing * SID / SDD``, calibration type GEOMETRY). UIDs derive from the
    pixels and the geometry, so the same synthesis gives the same file content.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    data = np.asarray(image, dtype=np.float64)
    pixels = np.round(np.clip(data, 0, 1) * 4095).astype(np.uint16)
    seed = [hashlib.sha256(pixels.tobytes()).hexdigest(), repr(sorted(geometry_fields(carm).items()))]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[*seed, "instance"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[*seed, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[*seed, "series"])
    ds.Modality, ds.ImageType = "DX", ["DERIVED", "SECONDARY"]
    ds.PatientName, ds.PatientID = "CT2X^Synthetic", "CT2X"
    ds.SeriesDescription = description[:64]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.DistanceSourceToDetector = f"{carm.sdd:.6g}"
    ds.DistanceSourceToPatient = f"{carm.sid:.6g}"
    ds.EstimatedRadiographicMagnificationFactor = f"{carm.sdd / carm.sid:.6g}"
    ds.PositionerPrimaryAngle = f"{carm.primary:.6g}"
    ds.PositionerSecondaryAngle = f"{carm.secondary:.6g}"
    ds.ImagerPixelSpacing = [f"{s:.6g}" for s in carm.pixel_spacing]
    ds.PixelSpacing = [f"{s * carm.sid / carm.sdd:.6g}" for s in carm.pixel_spacing]
    ds.PixelSpacingCalibrationType = "GEOMETRY"
    ds.PixelData = pixels.tobytes()
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def to_uint8(image: np.ndarray, low_percentile: float = 0.5, high_percentile: float = 99.5) -> np.ndarray:
    """Window a float image to 8 bits between two percentiles (brighter = more attenuation)."""
    data = np.asarray(image, dtype=np.float64)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.zeros(data.shape, dtype=np.uint8)
    low, high = np.percentile(finite, [low_percentile, high_percentile])
    scaled = (np.nan_to_num(data, nan=low) - low) / max(high - low, 1e-12)
    return (np.clip(scaled, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write an 8-bit grey PNG preview of a float view."""
    with atomic_path(path) as tmp:
        Image.fromarray(to_uint8(image)).save(tmp, format="PNG")


def contact_sheet(
    images: Sequence[np.ndarray],
    labels: Sequence[str],
    columns: int | None = None,
    window: tuple[float, float] | None = None,
) -> Image.Image:
    """Tile previews of ``images`` in a grid with a label under each; returns a grey image.

    Each image is windowed to its own percentiles (:func:`to_uint8`), or, with ``window``
    ``(low, high)``, all to the same range: use that where intensities are compared (style grids).
    """
    if not images:
        raise ValueError("a contact sheet needs at least one image")
    columns = columns or min(len(images), 7)
    rows = -(-len(images) // columns)
    h, w = (max(im.shape[i] for im in images) for i in (0, 1))
    caption, gap = 18, 4
    sheet = Image.new("L", (columns * (w + gap) + gap, rows * (h + caption + gap) + gap), color=0)
    draw = ImageDraw.Draw(sheet)
    for n, (image, label) in enumerate(zip(images, labels, strict=True)):
        x, y = gap + (n % columns) * (w + gap), gap + (n // columns) * (h + caption + gap)
        if window is None:
            pixels = to_uint8(image)
        else:
            scaled = (np.asarray(image, dtype=np.float64) - window[0]) / (window[1] - window[0])
            pixels = (np.clip(np.nan_to_num(scaled), 0, 1) * 255 + 0.5).astype(np.uint8)
        sheet.paste(Image.fromarray(pixels), (x, y))
        draw.text((x + 2, y + h + 3), label, fill=255)
    return sheet


def write_contact_sheet(
    path: str | os.PathLike[str],
    images: Sequence[np.ndarray],
    labels: Sequence[str],
    columns: int | None = None,
    window: tuple[float, float] | None = None,
) -> None:
    """Write :func:`contact_sheet` as a PNG, atomically."""
    with atomic_path(path) as tmp:
        contact_sheet(images, labels, columns, window).save(tmp, format="PNG")

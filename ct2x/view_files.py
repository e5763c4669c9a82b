"""Files for rendered or synthesized 2D views: NRRD with geometry, PNG previews, contact sheets.

A view image is a float32 array ``(H, W)`` laid out as displayed (row 0 at the top,
column 0 on the left; see ``ct2x.geometry``). Its NRRD is a single-slice 3D image whose
origin, spacing and direction put every pixel at its place on the detector plane in LPS
millimetres, so opening it in 3D Slicer (or any ITK reader) shows it where the detector
was. The C-arm parameters are kept as ``ct2x_*`` header fields, with whatever else the writer
adds (``ct2x drr``: how the image was made, its CT coverage). A view's CT coverage mask
(:func:`ct2x.drr.coverage`) is written beside it as ``<view>_coverage.nrrd`` (uint8, 1 = covered,
on the same detector-plane placement) and ``<view>_coverage.png`` (white = covered).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence

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


#: Suffix of a view's coverage mask files (``<view stem>_coverage.nrrd`` / ``.png``).
COVERAGE_SUFFIX = "_coverage"


def coverage_fields(mask: np.ndarray) -> dict[str, str]:
    """The header field of a view with coverage mask ``mask`` (H, W) bool: ``ct2x_coverage_fraction``, the
    fraction of its pixels whose rays cross the whole CT (:func:`ct2x.drr.coverage`)."""
    return {"ct2x_coverage_fraction": f"{float(np.mean(np.asarray(mask, dtype=bool))):.6g}"}


def write_view_nrrd(
    path: str | os.PathLike[str],
    image: np.ndarray,
    carm: CArm,
    fields: Mapping[str, str] | None = None,
    dtype: type = np.float32,
) -> None:
    """Write ``image`` (H, W) as a single-slice NRRD placed on ``carm``'s detector (LPS), float32 unless
    ``dtype`` says otherwise (e.g. ``np.uint8`` for a mask); ``fields``: header fields besides the C-arm's
    (one-line text values)."""
    data = np.asarray(image, dtype=dtype)
    if data.shape != carm.detector_shape:
        raise ValueError(f"image shape {data.shape} does not match the detector {carm.detector_shape}")
    out = sitk.GetImageFromArray(data[None])
    affine = carm.image_ijk_to_lps
    out.SetOrigin(tuple(affine[:3, 3]))
    out.SetSpacing((carm.pixel_spacing[1], carm.pixel_spacing[0], 1.0))
    out.SetDirection(tuple((affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)).ravel()))
    for key, value in {**geometry_fields(carm), **(fields or {})}.items():
        out.SetMetaData(key, value)
    with atomic_path(path) as tmp:
        sitk.WriteImage(out, str(tmp), useCompression=True)


def coverage_name(stem: str, suffix: str) -> str:
    """The file name of a view's coverage mask: ``<stem>_coverage<suffix>``, e.g. ``view00_LAO0_CRAN0_coverage.png``."""
    return f"{stem}{COVERAGE_SUFFIX}{suffix}"


def write_coverage(
    nrrd: str | os.PathLike[str] | None, png: str | os.PathLike[str] | None, mask: np.ndarray, carm: CArm
) -> None:
    """Write a view's coverage mask (H, W) bool (:func:`ct2x.drr.coverage`) as an NRRD (uint8, 1 = covered,
    placed like the view, with ``ct2x_coverage_fraction``) and a PNG (white = covered); ``None`` skips one."""
    covered = np.asarray(mask, dtype=bool)
    if nrrd is not None:
        write_view_nrrd(nrrd, covered, carm, coverage_fields(covered), dtype=np.uint8)
    if png is not None:
        with atomic_path(png) as tmp:
            Image.fromarray(covered.astype(np.uint8) * 255).save(tmp, format="PNG")


def write_view_dicom(
    path: str | os.PathLike[str],
    image: np.ndarray,
    carm: CArm,
    description: str,
    coverage: np.ndarray | None = None,
) -> None:
    """Write ``image`` (H, W) in [0, 1] as a DICOM DX (for presentation) image with its C-arm geometry.

    Pixels are 12-bit MONOCHROME2. Tags: DistanceSourceToDetector / ToPatient (mm),
    PositionerPrimaryAngle / SecondaryAngle (degrees, LAO and CRAN positive, as DICOM
    defines them), ImagerPixelSpacing (detector, mm) and PixelSpacing at the isocenter
    (``ImagerPixelSpacing * SID / SDD``, calibration type GEOMETRY). UIDs derive from the
    pixels and the geometry, so the same synthesis gives the same file content.

    With ``coverage`` (H, W) bool (:func:`ct2x.drr.coverage`, True = covered), the pixels whose rays
    are *not* covered are a region-of-interest overlay plane (group 6000, label ``CT2X coverage``): a
    viewer draws it over the image, and the image stays one DX image (a mask as a second DX image would
    read as a radiograph).
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
    if coverage is not None:
        _coverage_overlay(ds, np.asarray(coverage, dtype=bool))
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def _coverage_overlay(ds: object, covered: np.ndarray) -> None:
    """Add the uncovered pixels of ``covered`` (H, W) bool as overlay plane 6000 (ROI) to the dataset ``ds``."""
    from pydicom.pixels import pack_bits

    if covered.shape != (ds.Rows, ds.Columns):
        raise ValueError(f"coverage mask shape {covered.shape} does not match the image {(ds.Rows, ds.Columns)}")
    group = 0x6000 << 16
    ds.add_new(group | 0x0010, "US", covered.shape[0])  # Overlay Rows
    ds.add_new(group | 0x0011, "US", covered.shape[1])  # Overlay Columns
    ds.add_new(group | 0x0022, "LO", "pixels whose rays leave the CT through its first or last slice")
    ds.add_new(group | 0x0040, "CS", "R")  # Overlay Type: region of interest
    ds.add_new(group | 0x0045, "LO", "AUTOMATED")  # Overlay Subtype
    ds.add_new(group | 0x0050, "SS", [1, 1])  # Overlay Origin (row, column), 1-based
    ds.add_new(group | 0x0100, "US", 1)  # Overlay Bits Allocated
    ds.add_new(group | 0x0102, "US", 0)  # Overlay Bit Position
    ds.add_new(group | 0x1500, "LO", "CT2X coverage")  # Overlay Label
    ds.add_new(group | 0x3000, "OW", pack_bits((~covered).astype(np.uint8).ravel()))  # Overlay Data


def to_uint8(image: np.ndarray, low_percentile: float = 0.5, high_percentile: float = 99.5) -> np.ndarray:
    """Window a float image to 8 bits between two percentiles (brighter = more attenuation)."""
    data = np.asarray(image, dtype=np.float64)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.zeros(data.shape, dtype=np.uint8)
    low, high = np.percentile(finite, [low_percentile, high_percentile])
    scaled = (np.nan_to_num(data, nan=low) - low) / max(high - low, 1e-12)
    return (np.clip(scaled, 0, 1) * 255 + 0.5).astype(np.uint8)


def windowed_uint8(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Map a float image to 8 bits with the fixed ``window`` (low, high) as black and white (NaN: black)."""
    scaled = (np.asarray(image, dtype=np.float64) - window[0]) / (window[1] - window[0])
    return (np.clip(np.nan_to_num(scaled), 0, 1) * 255 + 0.5).astype(np.uint8)


def write_png(path: str | os.PathLike[str], image: np.ndarray, window: tuple[float, float] | None = None) -> None:
    """Write an 8-bit grey PNG preview of a float view: windowed to its own percentiles (:func:`to_uint8`), or
    with ``window`` (low, high) fixed, e.g. ``(0, 1)`` for a display image (a radiograph of the imaging chain)."""
    pixels = to_uint8(image) if window is None else windowed_uint8(image, window)
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


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
        pixels = to_uint8(image) if window is None else windowed_uint8(image, window)
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

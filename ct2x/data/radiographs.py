"""Real radiographs: the unpaired X-ray style references of CT2X-GAN.

Accepted: PNG and JPEG (8- or 16-bit, grey, grey+alpha, RGB or palette), TIFF, and DICOM
CR/DX/DR files (``.dcm`` or no extension); given as one file (a style reference), also a
single-slice NRRD, NIfTI or MetaImage image such as a view ``ct2x drr`` wrote. Every image
becomes a float32 ``(S, S)`` array in ``[0, 1]`` where brighter means more attenuation (bone
white), the usual display of a radiograph: DICOM ``MONOCHROME1`` is inverted, the DICOM VOI LUT / window is applied when
present. The image is resized so its shorter side is ``S`` (area-averaging), then
centre-cropped to a square. Pixel spacing is not used: these are style references, not
geometry.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from ct2x.errors import CT2XError
from ct2x.volume import NOT_CT_MIN_HU

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
#: Single-slice volume files accepted as one image (a style reference), never searched in folders.
VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd", ".nii", ".nii.gz")
DICOM_SUFFIXES = {".dcm", ".dicom", ""}


#: The most pixels a radiograph may have (a 43 x 43 cm detector at 0.05 mm is 74 MP; below Pillow's own
#: warning limit): larger images are refused before they are decoded, e.g. a small "decompression bomb"
#: file that unpacks to gigabytes.
MAX_PIXELS = 80_000_000

#: DICOM modalities of cross-sectional images: a slice of a volume, not a radiograph.
SLICE_MODALITIES = {"CT": "CT", "MR": "MR", "PT": "PET", "NM": "nuclear medicine", "US": "ultrasound"}


class ColourImageWarning(UserWarning):
    """A style reference has clearly coloured pixels: it is probably a photograph, not a radiograph."""


class NotRadiographWarning(UserWarning):
    """A style reference looks like a slice of a CT (or another cross-sectional image), not a radiograph."""


def _check_pixel_count(path: Path, width: int, height: int, frames: int = 1) -> None:
    """Refuse an image of more than :data:`MAX_PIXELS` pixels before its pixels are decoded."""
    pixels = int(width) * int(height) * max(int(frames), 1)
    if pixels > MAX_PIXELS:
        raise _too_large(path, f"{width} x {height} pixels{f' x {frames} frames' if frames > 1 else ''}", pixels)


def _too_large(path: Path, size: str, pixels: int) -> CT2XError:
    """The error for an image of ``pixels`` pixels (``size``: its dimensions in words, or '')."""
    return CT2XError(
        f"the image {path} is {size + ' (' if size else ''}{pixels / 1e6:.0f} megapixels{')' if size else ''}, "
        f"more than the {MAX_PIXELS / 1e6:.0f} "
        "megapixels of any radiograph (a damaged file or a decompression bomb): it was not decoded; "
        "use a radiograph of normal size"
    )


def _read_dicom(path: Path, warn: bool) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_voi_lut

    try:
        dataset = pydicom.dcmread(path)
    except Exception as error:  # pydicom raises many types for bad files
        raise CT2XError(f"cannot read the DICOM radiograph {path}: {error}") from None
    _check_pixel_count(
        path, dataset.get("Columns", 0) or 0, dataset.get("Rows", 0) or 0, dataset.get("NumberOfFrames", 1) or 1
    )
    try:
        pixels = dataset.pixel_array.astype(np.float64)
    except Exception as error:  # pydicom raises many types for bad files
        raise CT2XError(f"cannot read the DICOM radiograph {path}: {error}") from None
    modality = str(dataset.get("Modality", "")).upper()
    if warn and modality in SLICE_MODALITIES:
        warnings.warn(
            NotRadiographWarning(
                f"{path.name} is a {SLICE_MODALITIES[modality]} image (DICOM modality {modality}), one slice of a "
                "volume, not a radiograph: the X-ray style taken from it will not look like an X-ray; give a "
                "radiograph (CR, DX) as the style reference"
            ),
            stacklevel=3,
        )
    if pixels.ndim != 2:
        raise CT2XError(f"the DICOM file {path} holds {pixels.ndim}D pixels; a radiograph is one 2D frame")
    if "WindowCenter" in dataset or "VOILUTSequence" in dataset:
        pixels = apply_voi_lut(pixels, dataset).astype(np.float64)
    low, high = float(pixels.min()), float(pixels.max())
    pixels = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
        pixels = 1.0 - pixels
    return pixels


def _read_picture(path: Path, warn_colour: bool) -> np.ndarray:
    try:
        with Image.open(path) as image:
            _check_pixel_count(path, *image.size)
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                pixels = np.asarray(image, dtype=np.float64)
                bits_max = 65535.0 if pixels.max() > 255 else 255.0
                return np.clip(pixels / bits_max, 0, 1)
            if image.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LA", "PA"):
                rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
                if warn_colour and np.abs(rgb - rgb.mean(axis=2, keepdims=True)).mean() > 0.02:
                    warnings.warn(
                        f"{path.name} looks like a colour photograph, not a radiograph; it was converted to grey",
                        ColourImageWarning,
                        stacklevel=3,
                    )
                return np.asarray(image.convert("L"), dtype=np.float64) / 255.0
            return np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    except Image.DecompressionBombError as error:  # Image.open refuses twice its MAX_IMAGE_PIXELS itself
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        count = int(pixels.group(1)) if pixels else 2 * (Image.MAX_IMAGE_PIXELS or MAX_PIXELS)
        raise _too_large(path, "", count) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise CT2XError(f"cannot read the image {path}: {error}") from None


def square_resize(
    pixels: np.ndarray, size: int, crop: float = 1.0, shift: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """Resize so the shorter side is ``size`` (area-averaging), then centre-crop to ``size x size``.

    ``crop`` < 1 first keeps only a square of ``crop`` times the shorter side (a smaller field of
    view, e.g. to compare a chest film with a C-arm detector's), centred, or moved by ``shift``
    (rows, columns) in units of the room left on each side (-1 .. 1: to the edge).
    """
    if not 0 < crop <= 1:
        raise CT2XError(f"the radiograph crop must be a fraction in (0, 1] of the shorter side, got {crop:g}")
    if crop < 1:
        side = max(2, round(crop * min(pixels.shape)))
        top, left = ((n - side) // 2 for n in pixels.shape)
        top, left = round(top * (1 + shift[0])), round(left * (1 + shift[1]))
        pixels = pixels[top : top + side, left : left + side]
    height, width = pixels.shape
    scale = size / min(height, width)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    resized = Image.fromarray(pixels.astype(np.float32)).resize((new_w, new_h), Image.Resampling.BOX)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.array(resized, dtype=np.float32)[top : top + size, left : left + size].copy()


def read_radiograph(
    path: str | Path,
    size: int = 256,
    warn_colour: bool = True,
    crop: float = 1.0,
    shift: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Read one radiograph as float32 ``(size, size)`` in [0, 1] (bright = attenuating); ``crop``:
    the fraction of the shorter side kept, ``shift`` where (:func:`square_resize`).

    ``warn_colour``: warn (as a style reference) when the image looks like a colour photograph
    (:class:`ColourImageWarning`) or is a DICOM CT/MR/... slice (:class:`NotRadiographWarning`).
    Images of more than :data:`MAX_PIXELS` pixels are refused before they are decoded.
    """
    path = Path(path)
    if path.is_dir():
        raise CT2XError(
            f"{path} is a folder, not a radiograph: give one image file (PNG, JPEG, TIFF or DICOM), e.g. one in it"
        )
    if not path.is_file():
        raise CT2XError(f"radiograph {path} does not exist")
    if size < 8:
        raise CT2XError(f"the radiograph size must be at least 8 pixels, got {size}")
    is_dicom = path.suffix.lower() in DICOM_SUFFIXES and _looks_like_dicom(path)
    if path.name.lower().endswith(VOLUME_SUFFIXES):
        pixels = _read_volume_slice(path, warn_colour)
    else:
        pixels = _read_dicom(path, warn_colour) if is_dicom else _read_picture(path, warn_colour)
    if min(pixels.shape) < 2:
        raise CT2XError(f"the image {path} is too small ({pixels.shape[1]} x {pixels.shape[0]} pixels)")
    return square_resize(pixels, size, crop, shift)


def radiograph_from_array(pixels: np.ndarray, size: int = 256) -> np.ndarray:
    """A radiograph given as an array (any intensity range; ``(H, W)`` or one-slice ``(1, H, W)``),
    min-max scaled to [0, 1] and squared like :func:`read_radiograph` (bright = attenuating)."""
    image = np.squeeze(np.asarray(pixels, dtype=np.float64))
    if image.ndim != 2 or min(image.shape) < 2:
        raise CT2XError(f"a style reference must be one 2D image, got an array of shape {np.shape(pixels)}")
    return square_resize(_min_max(image, "the style reference", warn=True), size)


def _min_max(image: np.ndarray, what: str, warn: bool) -> np.ndarray:
    """A 2D array of any intensity range scaled to [0, 1] (NaN: the minimum); with ``warn``, a
    :class:`NotRadiographWarning` when it holds values below -500, like the air of a CT slice in HU."""
    finite = image[np.isfinite(image)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if warn and low < NOT_CT_MIN_HU:
        warnings.warn(
            NotRadiographWarning(
                f"{what} holds values down to {low:g}, like air (-1000 HU) in a CT slice, not a radiograph's: "
                "the X-ray style taken from it will not look like an X-ray; choose a radiograph"
            ),
            stacklevel=4,
        )
    return (np.nan_to_num(image, nan=low) - low) / (high - low) if high > low else np.zeros_like(image)


def _read_volume_slice(path: Path, warn: bool) -> np.ndarray:
    """A single-slice NRRD, NIfTI or MetaImage file (e.g. a view written by ``ct2x drr``) as one 2D
    image scaled to [0, 1]; a volume of several slices (a CT) is refused."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        size = reader.GetSize()
        _check_pixel_count(path, size[0], size[1] if len(size) > 1 else 1, math.prod(size[2:]))
        if len(size) > 3 or (len(size) == 3 and min(size) > 1) or reader.GetNumberOfComponents() != 1:
            raise CT2XError(
                f"{path} is a {' x '.join(map(str, size))} volume (a CT?), not a radiograph: give one 2D image "
                "(PNG, JPEG, TIFF, DICOM, or a single-slice NRRD such as a view written by ct2x drr)"
            )
        pixels = sitk.GetArrayFromImage(reader.Execute()).astype(np.float64)
    except RuntimeError as error:
        raise CT2XError(f"cannot read the image {path}: {str(error).strip().splitlines()[-1]}") from None
    return _min_max(np.squeeze(pixels), path.name, warn)


def _looks_like_dicom(path: Path) -> bool:
    with path.open("rb") as handle:
        header = handle.read(132)
    return len(header) == 132 and header[128:132] == b"DICM"


@dataclass
class RadiographFolder:
    """The radiographs found under a folder, and the files that were skipped with the reason."""

    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def read_radiographs(paths: Sequence[Path], size: int, crop: float = 1.0) -> torch.Tensor:
    """Radiographs as ``(N, 1, size, size)`` float32 in [0, 1] (:func:`read_radiograph`, no colour warning)."""
    import torch

    images = [read_radiograph(p, size=size, warn_colour=False, crop=crop) for p in paths]
    return torch.stack([torch.from_numpy(image)[None] for image in images])


def evenly_spread(paths: Sequence[Path], count: int) -> list[Path]:
    """Up to ``count`` of ``paths`` at evenly spaced positions (first and last included), in order:
    the style references of the evaluation and the reference styles stored with a model."""
    number = min(count, len(paths))
    picks = sorted({round(i * (len(paths) - 1) / max(number - 1, 1)) for i in range(number)})
    return [paths[i] for i in picks]


def find_radiographs(folder: str | Path, size: int = 256, warn_single: bool = True) -> RadiographFolder:
    """List every readable radiograph under ``folder`` (recursively, sorted), checking each opens.

    Unreadable files (damaged, too large: :data:`MAX_PIXELS`) are listed in ``skipped``, reported
    in one warning, and never stop the scan. A folder with no readable radiograph is a CT2XError;
    one with a single radiograph gets a warning (``warn_single``; turned off by callers that
    refuse fewer than two themselves).
    """
    root = Path(folder)
    if not root.is_dir():
        raise CT2XError(f"radiograph folder {root} does not exist or is not a folder")
    found = RadiographFolder(paths=[])
    candidates = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    for path in candidates:
        suffix = path.suffix.lower()
        if suffix not in IMAGE_SUFFIXES and not (suffix in DICOM_SUFFIXES and _looks_like_dicom(path)):
            continue
        try:
            read_radiograph(path, size=8, warn_colour=False)
        except CT2XError as error:
            found.skipped.append((path, str(error)))
            continue
        found.paths.append(path)
    if not found.paths:
        why = f" ({len(found.skipped)} unreadable)" if found.skipped else ""
        raise CT2XError(
            f"no readable radiograph (PNG, JPEG, TIFF or DICOM) in {root}{why}: "
            "point --xray at a folder of X-ray images"
        )
    if found.skipped:
        shown = "; ".join(f"{p.name}: {reason}" for p, reason in found.skipped[:3])
        more = f"; and {len(found.skipped) - 3} more" if len(found.skipped) > 3 else ""
        # stacklevel 1: one location, so a folder scanned twice (evaluate, then its dataset) warns once
        warnings.warn(f"skipped {len(found.skipped)} unreadable file(s) in {root}: {shown}{more}", stacklevel=1)
    if warn_single and len(found.paths) == 1:
        warnings.warn(
            f"the radiograph folder {root} holds a single readable radiograph ({found.paths[0].name}): every X-ray "
            "style will be learned from that one image; give tens to thousands of radiographs",
            stacklevel=1,
        )
    return found

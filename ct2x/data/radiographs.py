"""Real radiographs: the unpaired X-ray style references of CT2X-GAN.

Accepted: PNG and JPEG (8- or 16-bit, grey, grey+alpha, RGB or palette), TIFF, and DICOM
CR/DX/DR files (``.dcm`` or no extension). Every image becomes a float32 ``(S, S)`` array
in ``[0, 1]`` where brighter means more attenuation (bone white), the usual display of a
radiograph: DICOM ``MONOCHROME1`` is inverted, the DICOM VOI LUT / window is applied when
present. The image is resized so its shorter side is ``S`` (area-averaging), then
centre-cropped to a square. Pixel spacing is not used: these are style references, not
geometry.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from ct2x.errors import CT2XError

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
DICOM_SUFFIXES = {".dcm", ".dicom", ""}


class ColourImageWarning(UserWarning):
    """A style reference has clearly coloured pixels: it is probably a photograph, not a radiograph."""


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_voi_lut

    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array.astype(np.float64)
    except Exception as error:  # pydicom raises many types for bad files
        raise CT2XError(f"cannot read the DICOM radiograph {path}: {error}") from None
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
    the fraction of the shorter side kept, ``shift`` where (:func:`square_resize`)."""
    path = Path(path)
    if not path.is_file():
        raise CT2XError(f"radiograph {path} does not exist")
    if size < 8:
        raise CT2XError(f"the radiograph size must be at least 8 pixels, got {size}")
    is_dicom = path.suffix.lower() in DICOM_SUFFIXES and _looks_like_dicom(path)
    pixels = _read_dicom(path) if is_dicom else _read_picture(path, warn_colour)
    if min(pixels.shape) < 2:
        raise CT2XError(f"the image {path} is too small ({pixels.shape[1]} x {pixels.shape[0]} pixels)")
    return square_resize(pixels, size, crop, shift)


def radiograph_from_array(pixels: np.ndarray, size: int = 256) -> np.ndarray:
    """A radiograph given as an array (any intensity range; ``(H, W)`` or one-slice ``(1, H, W)``),
    min-max scaled to [0, 1] and squared like :func:`read_radiograph` (bright = attenuating)."""
    image = np.squeeze(np.asarray(pixels, dtype=np.float64))
    if image.ndim != 2 or min(image.shape) < 2:
        raise CT2XError(f"a style reference must be one 2D image, got an array of shape {np.shape(pixels)}")
    finite = image[np.isfinite(image)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    scaled = (np.nan_to_num(image, nan=low) - low) / (high - low) if high > low else np.zeros_like(image)
    return square_resize(scaled, size)


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


def find_radiographs(folder: str | Path, size: int = 256) -> RadiographFolder:
    """List every readable radiograph under ``folder`` (recursively, sorted), checking each opens.

    Unreadable files are reported in ``skipped`` and never stop the scan. A folder with no
    readable radiograph is a CT2XError.
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
    return found

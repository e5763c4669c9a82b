"""Real radiographs: the unpaired X-ray style references of CT2X-GAN.

One reader (:func:`read_radiograph`) serves ``--style`` of synthesize and the ``--xray`` folders of
train and evaluate (:func:`find_radiographs`). Accepted: PNG, JPEG, TIFF and BMP (8- or 16-bit
integer or 32-bit float; grey, grey+alpha, RGB or palette; any Pillow format given as one file) and
DICOM CR/DX/DR files (``.dcm`` or no extension); given as one file (a style reference), also a
single-slice NRRD, NIfTI or MetaImage image such as a view ``ct2x drr`` wrote. Every image becomes a
float32 ``(S, S)`` array in ``[0, 1]`` where brighter means more attenuation (bone white), the usual
display of a radiograph. Values are scaled so that the same film in every encoding reads alike:

* 8-bit images (and colour ones, converted to grey): divided by 255.
* Integer images of more than 8 bits (16-bit PNG/TIFF, which often hold 10-, 12- or 14-bit detector
  values): divided by ``2**b - 1``, ``b`` the smallest of :data:`BIT_DEPTHS` (8, 10, 12, 14, 16) that
  holds the image's largest value (a 16-bit PNG whose maximum is 4095 is 12-bit; one whose maximum is
  4096 is 14-bit). Negative values or values above 65535 (32-bit integer TIFFs): min-max.
* Float images (32-bit float TIFF): kept when every value lies in [0, 1], otherwise min-max (lowest
  black, highest white); NaN reads as the lowest value.
* DICOM: the modality LUT (RescaleSlope/Intercept), then the VOI LUT or window when present, then
  min-max; ``MONOCHROME1`` is inverted. A window that is not numeric, has a width below 1 (0 below
  for ``LINEAR_EXACT``) or leaves every pixel one value is ignored with an
  :class:`InvalidWindowWarning` (as a style reference; a folder scan names such files in one warning).

The EXIF/TIFF orientation tag is applied (a phone's JPEG reads upright). A file of several frames (an
animated GIF or PNG, a multi-page TIFF, a multi-frame DICOM) is refused: save the frame meant as its
own file; only an MPO JPEG (a camera's picture with its previews) is read as its first, primary image.
Images with a side below :data:`MIN_SIDE` pixels are refused. The image is resized so its shorter
side is ``S`` (area-averaging), then centre-cropped to a square. Pixel spacing is not used: these are
style references, not geometry.
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
from PIL import Image, ImageOps

from ct2x.errors import CT2XError
from ct2x.geometry import FILM_FIELD_MM, CArm, pose_field_of_view_mm
from ct2x.volume import NOT_CT_MIN_HU

if TYPE_CHECKING:
    import torch
    from pydicom import Dataset

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
#: Single-slice volume files accepted as one image (a style reference), never searched in folders.
VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd", ".nii", ".nii.gz")
DICOM_SUFFIXES = {".dcm", ".dicom", ""}


#: The most pixels a radiograph may have (a 43 x 43 cm detector at 0.05 mm is 74 MP; below Pillow's own
#: warning limit): larger images are refused before they are decoded, e.g. a small "decompression bomb"
#: file that unpacks to gigabytes.
MAX_PIXELS = 80_000_000

#: The smallest side of a radiograph, in pixels: an image below it (an icon, a thumbnail, a 4 x 4 test
#: pattern) carries no X-ray style and is refused. A film has hundreds to thousands of pixels a side, the
#: model reads 128 or 256; 16 keeps the small synthetic films of the tests.
MIN_SIDE = 16

#: The bit depths an integer image of more than 8 bits may hold (see the module docstring): its values
#: are divided by ``2**b - 1`` for the smallest ``b`` here that holds its largest value.
BIT_DEPTHS = (8, 10, 12, 14, 16)

#: DICOM modalities of cross-sectional images: a slice of a volume, not a radiograph.
SLICE_MODALITIES = {"CT": "CT", "MR": "MR", "PT": "PET", "NM": "nuclear medicine", "US": "ultrasound"}


class ColourImageWarning(UserWarning):
    """A style reference has clearly coloured pixels: it is probably a photograph, not a radiograph."""


class NotRadiographWarning(UserWarning):
    """A style reference looks like a slice of a CT (or another cross-sectional image), not a radiograph."""


class InvalidWindowWarning(UserWarning):
    """A DICOM radiograph's window (or VOI LUT, or rescale) cannot be used: it was ignored and the image
    scaled by its own values."""


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


def _read_dicom(path: Path, warn: bool, notes: list[str]) -> np.ndarray:
    """A DICOM radiograph in [0, 1] (module docstring); a window that cannot be used is described in ``notes``."""
    import pydicom

    try:
        dataset = pydicom.dcmread(path)
    except Exception as error:  # pydicom raises many types for bad files
        raise CT2XError(f"cannot read the DICOM radiograph {path}: {error}") from None
    try:
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        _check_pixel_count(path, int(dataset.get("Columns", 0) or 0), int(dataset.get("Rows", 0) or 0), frames)
    except (TypeError, ValueError) as error:
        raise CT2XError(f"cannot read the DICOM radiograph {path}: its image size is not a number ({error})") from None
    if frames > 1:
        raise CT2XError(_several_frames(path, frames))
    try:
        pixels = dataset.pixel_array.astype(np.float64)
    except Exception as error:  # pydicom raises many types for bad files; a missing decoder lists its plugins by line
        reason = "; ".join(line.strip() for line in str(error).splitlines() if line.strip()).replace(":;", ":")
        raise CT2XError(f"cannot read the DICOM radiograph {path}: {reason}") from None
    modality = str(dataset.get("Modality", "")).upper()
    if warn and modality in SLICE_MODALITIES:
        warnings.warn(
            NotRadiographWarning(
                f"{path.name} is a {SLICE_MODALITIES[modality]} image (DICOM modality {modality}), one slice of a "
                "volume, not a radiograph: the X-ray style taken from it will not look like an X-ray; give a "
                "radiograph (CR, DX) as the style reference"
            ),
            stacklevel=4,
        )
    if pixels.ndim != 2:
        raise CT2XError(
            f"the DICOM file {path} holds pixels of shape {' x '.join(map(str, pixels.shape))} (colour?); "
            "a radiograph is one grey 2D frame"
        )
    pixels = _apply_dicom_luts(dataset, pixels, notes)
    low, high = float(pixels.min()), float(pixels.max())
    pixels = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
        pixels = 1.0 - pixels
    return pixels


def _first_number(value: object) -> float | None:
    """The first value of a DICOM number tag (one value or several), or None if missing or not a finite number."""
    from pydicom.multival import MultiValue

    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0] if len(value) else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _apply_dicom_luts(dataset: Dataset, pixels: np.ndarray, notes: list[str]) -> np.ndarray:
    """The modality LUT (rescale), then the VOI LUT or window, as pydicom applies them; a step that cannot
    be applied (non-numeric values, a window width below 1, a window leaving every pixel one value) is
    skipped and described in ``notes``."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    get = dataset.get
    if "RescaleSlope" in dataset or "RescaleIntercept" in dataset or "ModalityLUTSequence" in dataset:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom's own warnings about the values: described below
                pixels = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)
        except Exception as error:  # pydicom raises many types for bad values
            slope, intercept = get("RescaleSlope", "none"), get("RescaleIntercept", "none")
            notes.append(f"the DICOM rescale (RescaleSlope {slope}, RescaleIntercept {intercept}) is invalid ({error})")
    has_lut = "VOILUTSequence" in dataset
    if not has_lut and "WindowCenter" not in dataset and "WindowWidth" not in dataset:
        return pixels
    center_value, width_value = get("WindowCenter", "none"), get("WindowWidth", "none")
    window = f"the DICOM window (WindowCenter {center_value}, WindowWidth {width_value})"
    if not has_lut:  # pydicom uses a VOI LUT sequence before a window
        center, width = _first_number(center_value), _first_number(width_value)
        function = str(get("VOILUTFunction", "LINEAR")).upper()
        if center is None or width is None:
            notes.append(f"{window} is not a pair of numbers")
            return pixels
        if width < 1 if function == "LINEAR" else width <= 0:
            least = "at least 1" if function == "LINEAR" else f"above 0 (VOILUTFunction {function})"
            notes.append(f"{window} has a width of {width:g}; it must be {least}")
            return pixels
    else:
        window = "the DICOM VOI LUT"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            windowed = np.asarray(apply_voi_lut(pixels, dataset), dtype=np.float64)
    except Exception as error:  # pydicom raises many types for bad values
        notes.append(f"{window} cannot be applied ({error})")
        return pixels
    if windowed.shape != pixels.shape or not np.isfinite(windowed).all():
        notes.append(f"{window} gives no usable image")
        return pixels
    if windowed.max() <= windowed.min() and pixels.max() > pixels.min():
        values = f"{pixels.min():g} to {pixels.max():g}"
        notes.append(f"{window} leaves every pixel one value (the image holds {values})")
        return pixels
    return windowed


def _several_frames(path: Path, frames: int) -> str:
    return (
        f"the image {path} holds {frames} frames (an animation, a multi-page or multi-frame file) where a radiograph "
        "is one image: save the frame you mean as its own PNG, TIFF or DICOM file"
    )


def _read_picture(path: Path, warn_colour: bool) -> np.ndarray:
    """A Pillow image in [0, 1] (module docstring), upright by its EXIF/TIFF orientation."""
    try:
        with Image.open(path) as opened:
            _check_pixel_count(path, *opened.size)
            frames = int(getattr(opened, "n_frames", 1) or 1)
            if frames > 1 and opened.format != "MPO":  # an MPO's first image is its primary picture
                raise CT2XError(_several_frames(path, frames))
            opened.load()
            image = ImageOps.exif_transpose(opened)
            if image.mode == "F" or image.mode.startswith("I"):
                return _scale_values(np.asarray(image, dtype=np.float64), floating=image.mode == "F")
            if image.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LA", "PA"):
                rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
                if warn_colour and np.abs(rgb - rgb.mean(axis=2, keepdims=True)).mean() > 0.02:
                    warnings.warn(
                        f"{path.name} looks like a colour photograph, not a radiograph; it was converted to grey",
                        ColourImageWarning,
                        stacklevel=4,
                    )
            return np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    except CT2XError:
        raise
    except Image.DecompressionBombError as error:  # Image.open refuses twice its MAX_IMAGE_PIXELS itself
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        count = int(pixels.group(1)) if pixels else 2 * (Image.MAX_IMAGE_PIXELS or MAX_PIXELS)
        raise _too_large(path, "", count) from None
    except Exception as error:  # Pillow raises many types (OSError, SyntaxError, struct.error, ...) for bad files
        raise CT2XError(f"cannot read the image {path}: {error}") from None


def _scale_values(values: np.ndarray, floating: bool) -> np.ndarray:
    """Integer images of more than 8 bits, or float images, to [0, 1] by the rule of the module docstring."""
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    values = np.nan_to_num(values, nan=low, posinf=high, neginf=low)
    if floating and 0.0 <= low and high <= 1.0:
        return values
    if not floating and 0.0 <= low and high <= 65535.0:
        bits = next(b for b in BIT_DEPTHS if high <= 2**b - 1)
        return values / (2**bits - 1)
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


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
    """Read one radiograph as float32 ``(size, size)`` in [0, 1] (bright = attenuating; values scaled
    as the module docstring says); ``crop``: the fraction of the shorter side kept, ``shift`` where
    (:func:`square_resize`).

    ``warn_colour``: warn as a style reference, when the image looks like a colour photograph
    (:class:`ColourImageWarning`), is a DICOM CT/MR/... slice (:class:`NotRadiographWarning`) or has a
    DICOM window that was ignored (:class:`InvalidWindowWarning`); the reads of a scanned folder's
    files pass False (:func:`find_radiographs` reports their windows once). Refused with a
    :class:`CT2XError`: images of more than :data:`MAX_PIXELS` pixels (before they are decoded), with
    a side below :data:`MIN_SIDE` pixels, of several frames, and damaged files.
    """
    if size < 8:
        raise CT2XError(f"the radiograph size must be at least 8 pixels, got {size}")
    notes: list[str] = []
    pixels = _image_pixels(Path(path), warn_colour, notes)
    if warn_colour:
        for note in notes:
            warnings.warn(InvalidWindowWarning(_window_warning(Path(path).name, note)), stacklevel=2)
    return square_resize(pixels, size, crop, shift)


def _window_warning(name: str, note: str) -> str:
    return f"{name}: {note}: it was ignored and the image scaled by its own values (lowest black, highest white)"


def _image_pixels(path: Path, warn_colour: bool, notes: list[str]) -> np.ndarray:
    """The image of ``path`` at its own size in [0, 1] (float64), checked (see :func:`read_radiograph`);
    DICOM windows that were ignored are described in ``notes``."""
    if path.is_dir():
        raise CT2XError(
            f"{path} is a folder, not a radiograph: give one image file (PNG, JPEG, TIFF or DICOM), e.g. one in it"
        )
    if not path.is_file():
        raise CT2XError(f"radiograph {path} does not exist")
    is_dicom = path.suffix.lower() in DICOM_SUFFIXES and _looks_like_dicom(path)
    if path.name.lower().endswith(VOLUME_SUFFIXES):
        pixels = _read_volume_slice(path, warn_colour)
    else:
        pixels = _read_dicom(path, warn_colour, notes) if is_dicom else _read_picture(path, warn_colour)
    if min(pixels.shape) < MIN_SIDE:
        raise CT2XError(
            f"the image {path} is {pixels.shape[1]} x {pixels.shape[0]} pixels, too small for a radiograph: a side "
            f"must be at least {MIN_SIDE} pixels (an icon or a thumbnail holds no X-ray style); use the full-size film"
        )
    return pixels


def film_on_detector(film: str | Path | np.ndarray, view: CArm, field_mm: float = FILM_FIELD_MM) -> np.ndarray:
    """A reference film (a file, :func:`read_radiograph`, or an array of any range, :func:`radiograph_from_array`)
    on ``view``'s detector pixels ``(H, W)`` float32 in [0, 1]: the film taken to cover ``field_mm`` at the
    patient, cropped to the field ``view``'s detector sees at the isocenter (centred) and resized (area) to
    its pixels. What the imaging chain's look is fitted to (``ct2x.imaging.styled``)."""
    height, width = view.detector_shape
    crop = min(1.0, pose_field_of_view_mm(view.pose) / field_mm)
    side = max(height, width)
    if isinstance(film, np.ndarray):
        square = square_resize(radiograph_from_array(film, size=min(np.squeeze(film).shape)), side, crop)
    else:
        square = read_radiograph(film, size=side, crop=crop)
    if (height, width) == (side, side):
        return square
    image = Image.fromarray(square).resize((width, height), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.float32)


def radiograph_from_array(pixels: np.ndarray, size: int = 256) -> np.ndarray:
    """A radiograph given as an array (any intensity range; ``(H, W)`` or one-slice ``(1, H, W)``, sides of
    at least :data:`MIN_SIDE` pixels), min-max scaled to [0, 1] and squared like :func:`read_radiograph`
    (bright = attenuating)."""
    image = np.squeeze(np.asarray(pixels, dtype=np.float64))
    if image.ndim != 2 or min(image.shape) < MIN_SIDE:
        raise CT2XError(
            f"a style reference must be one 2D image of at least {MIN_SIDE} pixels a side, got an array of shape "
            f"{np.shape(pixels)}"
        )
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

    Every file :func:`read_radiograph` refuses (damaged, too large: :data:`MAX_PIXELS`, too small:
    :data:`MIN_SIDE`, several frames) is listed in ``skipped`` with the reason, named in one warning,
    and never stops the scan; DICOM files whose window was ignored are kept and named in one
    :class:`InvalidWindowWarning`. ``size`` is not used (kept for callers). A folder with no readable
    radiograph is a CT2XError; one with a single radiograph gets a warning (``warn_single``; turned
    off by callers that refuse fewer than two themselves).
    """
    root = Path(folder)
    if not root.is_dir():
        raise CT2XError(f"radiograph folder {root} does not exist or is not a folder")
    found = RadiographFolder(paths=[])
    windows: list[tuple[Path, str]] = []
    candidates = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    for path in candidates:
        suffix = path.suffix.lower()
        if suffix not in IMAGE_SUFFIXES and not (suffix in DICOM_SUFFIXES and _looks_like_dicom(path)):
            continue
        notes: list[str] = []
        try:
            _image_pixels(path, False, notes)
        except CT2XError as error:
            found.skipped.append((path, str(error)))
            continue
        found.paths.append(path)
        windows += [(path, note) for note in notes]
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
    if windows:
        shown = "; ".join(f"{p.name}: {note}" for p, note in windows[:3])
        more = f"; and {len(windows) - 3} more" if len(windows) > 3 else ""
        warnings.warn(
            InvalidWindowWarning(
                f"ignored the DICOM window of {len(windows)} file(s) in {root}, each scaled by its own values "
                f"(lowest black, highest white): {shown}{more}"
            ),
            stacklevel=1,
        )
    if warn_single and len(found.paths) == 1:
        warnings.warn(
            f"the radiograph folder {root} holds a single readable radiograph ({found.paths[0].name}): every X-ray "
            "style will be learned from that one image; give tens to thousands of radiographs",
            stacklevel=1,
        )
    return found

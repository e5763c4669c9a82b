"""CT volumes in Hounsfield units with their physical placement in LPS.

A :class:`CTVolume` holds the voxels as SimpleITK lays them out, ``array[k, j, i]``
(slice, row, column), together with the voxel spacing (mm along i, j, k), the LPS
position of voxel ``(0, 0, 0)``'s centre, and the direction matrix whose columns are the
unit LPS directions of the i, j and k axes. ``ijk_to_lps`` maps a voxel index to its
centre in LPS millimetres; every resampled output keeps this so it can be put back into
the patient's space.

Reading (:func:`read_ct`) goes through SimpleITK, whose physical space is LPS: NIfTI files
(stored in RAS by convention) are converted to LPS by ITK's NIfTI reader, DICOM rescale
slope/intercept and NIfTI ``scl_slope``/``scl_inter`` are applied, so values are HU. What ITK
would read with wrong geometry or values is refused instead: a DICOM series whose slice positions
do not step evenly (a missing or displaced slice) or with a damaged slice file, and NaN or
infinite voxels in any format (:func:`check_finite`). ITK's own warnings become Python warnings
(:func:`itk_warnings`). A NIfTI with a sheared sform is placed by that sform, like the same volume
in NRRD (ITK alone refuses it, or reads its qform's rigid approximation).

Resampling (:func:`resample_isotropic`, :func:`resample_to_grid`, :func:`preprocess`) always
produces an axis-aligned LPS grid (identity direction) placed from the input's physical
bounding box, so the output depends only on where the voxels are in the patient, not on
how the input file ordered or oriented its axes.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ct2x.errors import CT2XError, positive_finite

#: HU given to output voxels that fall outside the input volume (air).
OUTSIDE_HU = -1024.0

#: A CT holds air (about -1000 HU); an image with no value below this is probably not a CT in HU.
NOT_CT_MIN_HU = -500.0

_FORMATS = ".nii/.nii.gz, .nrrd/.nhdr, .mha/.mhd or a DICOM series folder"


class NotCTWarning(UserWarning):
    """The image read does not look like a CT in Hounsfield units (no air below -500 HU)."""


@dataclass(frozen=True)
class CTVolume:
    """A CT in HU with its voxel-to-LPS placement.

    Attributes:
        array: float32 HU, shape ``(K, J, I)`` = (slices, rows, columns).
        spacing: (3,) voxel size in mm along i, j, k.
        origin: (3,) LPS position (mm) of the centre of voxel ``(i, j, k) = (0, 0, 0)``.
        direction: (3, 3) columns = unit LPS directions of the i, j and k axes.
    """

    array: np.ndarray
    spacing: np.ndarray
    origin: np.ndarray
    direction: np.ndarray

    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        """Voxel counts along (i, j, k)."""
        k, j, i = self.array.shape
        return i, j, k

    @property
    def ijk_to_lps(self) -> np.ndarray:
        """4x4 affine from voxel index ``(i, j, k, 1)`` to its centre in LPS mm."""
        affine = np.eye(4)
        affine[:3, :3] = np.asarray(self.direction, dtype=np.float64) * np.asarray(self.spacing, dtype=np.float64)
        affine[:3, 3] = self.origin
        return affine

    @property
    def lps_to_ijk(self) -> np.ndarray:
        """4x4 affine from LPS mm to continuous voxel index ``(i, j, k)``."""
        return np.linalg.inv(self.ijk_to_lps)

    @property
    def corners_lps(self) -> np.ndarray:
        """(8, 3) LPS positions of the outer corners of the voxel grid (voxel edges, not centres), mm."""
        size = np.asarray(self.shape_ijk, dtype=np.float64)
        unit = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=np.float64)
        ijk = unit * size - 0.5
        return ijk @ self.ijk_to_lps[:3, :3].T + self.ijk_to_lps[:3, 3]

    @property
    def long_axis(self) -> int:
        """The voxel axis (0 = i, 1 = j, 2 = k) nearest the patient's superior axis (LPS z)."""
        return int(np.argmax(np.abs(np.asarray(self.direction, dtype=np.float64)[2, :])))

    @property
    def center_lps(self) -> np.ndarray:
        """Centre of the volume's bounding box, LPS mm (the default isocenter)."""
        return self.corners_lps.mean(axis=0)


# --------------------------------------------------------------------------- SimpleITK


def to_sitk(volume: CTVolume) -> sitk.Image:
    """The volume as a float32 SimpleITK image with the same LPS placement (origin, spacing, direction)."""
    image = sitk.GetImageFromArray(np.asarray(volume.array, dtype=np.float32))
    image.SetSpacing([float(s) for s in volume.spacing])
    image.SetOrigin([float(o) for o in volume.origin])
    image.SetDirection([float(d) for d in np.asarray(volume.direction, dtype=np.float64).ravel()])
    return image


def from_sitk(image: sitk.Image) -> CTVolume:
    """A 3D scalar SimpleITK image (LPS physical space) as a :class:`CTVolume`, values cast to float32."""
    return CTVolume(
        array=sitk.GetArrayFromImage(image).astype(np.float32, copy=False),
        spacing=np.array(image.GetSpacing(), dtype=np.float64),
        origin=np.array(image.GetOrigin(), dtype=np.float64),
        direction=np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3),
    )


# --------------------------------------------------------------------------- reading


def read_ct(path: str | os.PathLike[str], series_uid: str | None = None) -> CTVolume:
    """Read a CT volume in HU with its LPS placement.

    Args:
        path: a NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``) or MetaImage
            (``.mha``, ``.mhd``) file, or a folder holding a DICOM series (searched
            recursively).
        series_uid: the Series Instance UID to read when the folder holds several DICOM
            series; leave ``None`` when it holds one.

    Returns:
        float32 HU (rescale slope/intercept applied), origin/spacing/direction in LPS mm
        exactly as SimpleITK reports them (NIfTI's RAS is converted to LPS by ITK).

    Raises:
        CT2XError: the path is missing or unreadable, the image is not a single 3D scalar
            volume, its spacing is not positive, it holds NaN or infinite values (checked on
            the file's bytes for NIfTI, whose ITK reader reads NaN as 0), or the DICOM folder
            holds no series, several series without ``series_uid``, or not the series asked
            for, or the series has a damaged or truncated slice file or unevenly stepping slice
            positions (a missing slice: refused, not resampled).

    Warns:
        NotCTWarning: no voxel is below -500 HU, so the image is probably not a CT in HU.
        UserWarning: ITK printed a warning while reading (:func:`itk_warnings`).

    The input is only read, never written.
    """
    path = Path(path)
    if not path.exists():
        raise CT2XError(f"no file or folder at '{path}': check the path (a CT is a {_FORMATS})")
    if not os.access(path, os.R_OK):
        raise CT2XError(f"cannot read '{path}': permission denied; make it readable for your user")
    if path.is_dir():
        image = _read_dicom_folder(path, series_uid)
    elif series_uid is not None:
        raise CT2XError(f"series_uid is only for a DICOM folder, but '{path}' is a file: drop series_uid")
    else:
        image = _read_image_file(path)
    volume = from_sitk(image)
    check_finite(volume.array, f"'{path}'")
    lowest = float(volume.array.min())
    if lowest >= NOT_CT_MIN_HU:
        warnings.warn(
            NotCTWarning(
                f"'{path}' does not look like a CT in HU: no value below {NOT_CT_MIN_HU:g} (lowest {lowest:g}), "
                "but a CT holds air near -1000 HU; check the modality and the rescale slope/intercept"
            ),
            stacklevel=2,
        )
    return volume


def check_finite(array: np.ndarray, source: str, bad: int | None = None) -> None:
    """Raise CT2XError if ``array`` holds NaN or infinite values (``bad``: their count, when already known).

    The one check of every CT reader (files, DICOM, Slicer nodes); ``source`` names the input in
    the message, already quoted (e.g. ``"'ct.nii.gz'"``).
    """
    if bad is None:
        bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise CT2XError(
            f"{source} holds {bad} NaN or infinite voxel values: replace them with valid HU "
            f"(e.g. {OUTSIDE_HU:g} for air) and save the volume again"
        )


#: Held by the thread whose ITK calls' stderr is being captured (:func:`itk_warnings`).
_STDERR_CAPTURE = threading.Lock()


@contextmanager
def itk_warnings(source: str, drop: tuple[str, ...] = ()) -> Iterator[None]:
    """Catch the warnings ITK's C++ code prints on stderr while the block runs, and re-issue each as
    one Python warning ``"<source>: SimpleITK warns: <message>"`` (without ITK's source file, line
    and object address), so that the command line shows it as one ``ct2x: warning:`` line; those
    holding one of the ``drop`` texts (handled by the caller) are left out.

    When the block raises, its error is the message and ITK's warnings are dropped. Other text
    written to the process's stderr meanwhile (an image decoder's own lines, e.g. libjpeg's "Empty
    JPEG image" once per slice) is summed up in one line (:func:`_printed`): appended to the
    block's CT2XError, else one warning; it is passed through unchanged when the block raises
    another error. Only one thread captures at a time; a read in another thread meanwhile leaves
    ITK's text as it is.
    """
    if not _STDERR_CAPTURE.acquire(blocking=False):
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to redirect (e.g. a GUI process without one)
        _STDERR_CAPTURE.release()
        yield
        return
    messages: list[str] = []
    refused: CT2XError | None = None
    finished = False
    if sys.stderr is not None:
        sys.stderr.flush()  # what Python wrote before the block stays before it
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
            finished = True
        except CT2XError as error:
            refused = error
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            _STDERR_CAPTURE.release()
            captured.seek(0)
            messages, other = _itk_warning_messages(captured.read().decode("utf-8", "replace"))
            if other and not finished and refused is None:
                os.write(2, other.encode("utf-8"))
    if refused is not None:
        raise CT2XError(f"{refused} ({_printed(other)})" if other.strip() else str(refused)) from None
    if other.strip():
        warnings.warn(f"{source}: {_printed(other)}", stacklevel=3)
    for message in messages:
        if not any(text in message for text in drop):
            warnings.warn(f"{source}: SimpleITK warns: {message}", stacklevel=3)


def _printed(text: str) -> str:
    """What a library printed, in one line: its distinct lines, each with its count, the first three."""
    counts: dict[str, int] = {}
    for line in (" ".join(raw.split()) for raw in text.splitlines()):
        if line:
            counts[line] = counts.get(line, 0) + 1
    shown = [f"{line} ({n} times)" if n > 1 else line for line, n in list(counts.items())[:3]]
    more = f"; and {len(counts) - 3} other lines" if len(counts) > 3 else ""
    return f"the image libraries printed: {'; '.join(shown)}{more}"


@contextmanager
def _stderr_dropped() -> Iterator[None]:
    """Drop what C code prints on stderr while the block runs: GDCM's series scan decodes pixels, and
    a decoder prints each problem once per slice; the series read itself reports them
    (:func:`itk_warnings`). Only while no other thread captures stderr."""
    if not _STDERR_CAPTURE.acquire(blocking=False):
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        _STDERR_CAPTURE.release()
        yield
        return
    if sys.stderr is not None:
        sys.stderr.flush()
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        _STDERR_CAPTURE.release()


def _itk_warning_messages(text: str) -> tuple[list[str], str]:
    """(ITK warning messages, the remaining text) of what ITK printed on stderr.

    ITK prints ``WARNING: In <file>, line <n>`` followed by ``<Class> (0x...): <message>`` and a
    blank line.
    """
    messages, other = [], []
    blocks = re.split(r"\n\s*\n", text)
    for block in blocks:
        match = re.match(r"\s*WARNING: In [^\n]*, line \d+\n(.*)", block, re.S)
        if match:
            message = re.sub(r"^\w+ \(0x[0-9a-fA-F]+\):\s*", "", match.group(1).strip())
            messages.append(" ".join(message.split()))
        elif block.strip():
            other.append(block + "\n")
    return messages, "".join(other)


def _itk_reason(error: RuntimeError) -> str:
    """The first ITK/SimpleITK error line of ``error``, without the C++ location and object address."""
    for line in str(error).splitlines():
        if "ERROR:" in line:
            reason = line.split("ERROR:", 1)[1].strip()
            return re.sub(r"^\w+\(0x[0-9a-fA-F]+\):\s*", "", reason)
    return str(error).strip().splitlines()[-1] if str(error).strip() else "unknown reason"


def _check_geometry(source: str, size: tuple[int, ...], components: int, spacing: tuple[float, ...]) -> None:
    """Raise CT2XError unless the image is one 3D scalar volume with positive finite spacing (mm).

    ``source`` names the input in messages, already quoted (e.g. ``"'ct.nii.gz'"``).
    """
    dims = len(size)
    shape = " x ".join(str(n) for n in size)
    if dims == 2 or (dims == 3 and min(size) < 2):
        raise CT2XError(
            f"{source} is a 2D image ({shape} voxels) but a CT must be a 3D volume: pass the whole "
            "volume (for DICOM, the folder holding all slices of the series)"
        )
    if dims != 3:
        raise CT2XError(
            f"{source} is a {dims}D image ({shape} voxels) but a CT must be one 3D volume: extract the "
            "3D volume you want (e.g. one time point) and save it on its own"
        )
    if components != 1:
        raise CT2XError(
            f"{source} has {components} values per voxel (vector or color pixels) but a CT has one HU "
            "value per voxel: save a single-component (scalar) volume"
        )
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise CT2XError(
            f"{source} has voxel spacing ({', '.join(f'{s:g}' for s in spacing)}) mm, but every spacing "
            "must be positive: fix the spacing in the file's header and save it again"
        )


def _read_image_file(path: Path) -> sitk.Image:
    """Read one image file after checking its header; ITK errors become CT2XError, its warnings one line each.

    A NIfTI whose sform is sheared (non-orthogonal axes, e.g. a gantry-tilted series) is placed by its
    sform, as NRRD and MetaImage keep such a direction matrix: ITK refuses it (``ITK only supports
    orthonormal direction cosines``) or, beside a qform, reads the qform's rigid approximation, so its
    voxels are read in ITK's permissive sform mode and placed here (:func:`_nifti_sheared_sform`).
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    nifti = path.name.lower().endswith((".nii", ".nii.gz"))
    sheared = _nifti_sheared_sform(path) if nifti else None

    def unreadable(error: RuntimeError) -> CT2XError:
        reason = _itk_reason(error)
        if "orthonormal" in reason:
            return CT2XError(
                f"cannot read '{path}': its orientation is sheared (the axes of its voxel grid are not orthogonal, "
                f"e.g. a gantry-tilted series) and this SimpleITK {sitk.Version.VersionString()} refuses it "
                f"(SimpleITK: {reason}): save it as NRRD (.nrrd), which keeps a sheared orientation, or resample it "
                "onto an orthogonal grid"
            )
        return CT2XError(
            f"cannot read '{path}': it is damaged, truncated or not a {_FORMATS} (SimpleITK: {reason}); export it again"
        )

    with itk_warnings(f"'{path}'", drop=("non-orthogonal sform",)), _nifti_sform_permissive(sheared is not None):
        try:
            reader.ReadImageInformation()
        except RuntimeError as error:
            raise unreadable(error) from None
        _check_geometry(f"'{path}'", reader.GetSize(), reader.GetNumberOfComponents(), reader.GetSpacing())
        if nifti:
            _check_nifti_data(path)
        try:
            image = reader.Execute()
        except RuntimeError as error:
            raise unreadable(error) from None
    if sheared is not None:
        spacing = np.linalg.norm(sheared[:3, :3], axis=0)
        image.SetSpacing([float(s) for s in spacing])
        image.SetDirection([float(d) for d in (sheared[:3, :3] / spacing).ravel()])
        image.SetOrigin([float(o) for o in sheared[:3, 3]])
    return image


#: Largest deviation of a NIfTI sform's unit axes from orthogonality (|D^T D - I|) read as orthogonal
#: (float32 rounding of a rotation); a larger one is a shear, placed by the sform itself.
SFORM_SHEAR_TOLERANCE = 1e-6

#: Held while the environment variable of ITK's permissive sform mode is set (:func:`_nifti_sform_permissive`).
_ENVIRONMENT = threading.Lock()


@contextmanager
def _nifti_sform_permissive(on: bool) -> Iterator[None]:
    """ITK's NIfTI reader accepts a non-orthogonal sform while the block runs (``on``): it reads the
    voxels and an orthogonalised placement, which :func:`_read_image_file` replaces by the sform."""
    if not on:
        yield
        return
    with _ENVIRONMENT:
        before = os.environ.get("ITK_NIFTI_SFORM_PERMISSIVE")
        os.environ["ITK_NIFTI_SFORM_PERMISSIVE"] = "1"
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("ITK_NIFTI_SFORM_PERMISSIVE", None)
            else:
                os.environ["ITK_NIFTI_SFORM_PERMISSIVE"] = before


def _nifti_sheared_sform(path: Path) -> np.ndarray | None:
    """The 4x4 voxel-index-to-LPS affine of a single-file NIfTI-1/-2 whose sform (``sform_code`` > 0)
    is sheared (:data:`SFORM_SHEAR_TOLERANCE`), else None (also for a header it cannot parse: ITK's
    reader then decides). NIfTI's sform maps to RAS; LPS negates its first two rows."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            header = stream.read(540)
    except (OSError, EOFError):
        return None
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348 and header[344:347] == b"n+1":
            code = struct.unpack(endian + "h", header[254:256])[0]
            rows = struct.unpack(endian + "12f", header[280:328])
            break
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540 and header[4:7] == b"n+2":
            code = struct.unpack(endian + "i", header[348:352])[0]
            rows = struct.unpack(endian + "12d", header[400:496])
            break
    else:
        return None
    affine = np.eye(4)
    affine[:3] = np.diag([-1.0, -1.0, 1.0]) @ np.array(rows, dtype=np.float64).reshape(3, 4)
    norms = np.linalg.norm(affine[:3, :3], axis=0)
    if code <= 0 or not np.all(np.isfinite(affine)) or not np.all(norms > 0):
        return None
    unit = affine[:3, :3] / norms
    if np.abs(unit.T @ unit - np.eye(3)).max() <= SFORM_SHEAR_TOLERANCE:
        return None
    return affine


def _check_nifti_data(path: Path) -> None:
    """Raise CT2XError if a single-file NIfTI holds fewer bytes than its header announces, or NaN /
    infinite floating-point voxels (:func:`check_finite`).

    ITK's NIfTI reader silently fills the missing part of a truncated file with zeros, and reads NaN
    voxels as 0, so both are checked on the file's own bytes.
    """
    truncated = f"'{path}' is truncated or damaged: it holds less image data than its header announces; copy it again"
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            header = stream.read(540)
            layout = _nifti_layout(header)
            if layout is None:
                return
            offset, voxel_bytes, dtype = layout
            total, bad, pending = len(header), 0, header[offset:]
            if offset > len(header):  # header extensions before the voxels
                total += len(stream.read(offset - len(header)))
            while chunk := stream.read(1 << 22):
                total += len(chunk)
                pending += chunk
                if dtype is not None:
                    whole = len(pending) - len(pending) % dtype.itemsize
                    values = np.frombuffer(pending[:whole], dtype=dtype)
                    bad += int(np.count_nonzero(~np.isfinite(values)))
                    pending = pending[whole:]
            if dtype is not None and len(pending) >= dtype.itemsize:
                values = np.frombuffer(pending[: len(pending) - len(pending) % dtype.itemsize], dtype=dtype)
                bad += int(np.count_nonzero(~np.isfinite(values)))
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise CT2XError(f"{truncated} ({error})") from None
    if total < offset + voxel_bytes:
        raise CT2XError(truncated)
    check_finite(np.empty(0), f"'{path}'", bad=bad)


#: NIfTI datatype codes of floating-point voxels (the only ones that can hold NaN): float32, float64.
_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def _nifti_layout(header: bytes) -> tuple[int, int, np.dtype | None] | None:
    """(data offset, voxel data bytes, float dtype or None) of a single-file NIfTI-1/-2, or None if not recognised."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348 and header[344:347] == b"n+1":
            datatype = struct.unpack(endian + "h", header[70:72])[0]
            dims = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            offset = int(struct.unpack(endian + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540 and header[4:7] == b"n+2":
            datatype = struct.unpack(endian + "h", header[12:14])[0]
            bitpix = struct.unpack(endian + "h", header[14:16])[0]
            dims = struct.unpack(endian + "8q", header[16:80])
            offset = struct.unpack(endian + "q", header[168:176])[0]
            break
    else:
        return None
    if not 1 <= dims[0] <= 7:
        return None
    dtype = np.dtype(endian + _NIFTI_FLOATS[datatype]) if datatype in _NIFTI_FLOATS else None
    return offset, math.prod(max(n, 1) for n in dims[1 : dims[0] + 1]) * bitpix // 8, dtype


def _dicom_series(folder: Path) -> dict[str, list[str]]:
    """Series Instance UID -> its files sorted along the slice normal, for every series under ``folder``."""
    uids: list[str] = []
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM warns on stderr for every folder without DICOM
    try:
        with _stderr_dropped():
            for directory, _, files in sorted(os.walk(folder)):
                if files:
                    uids.extend(u for u in sitk.ImageSeriesReader.GetGDCMSeriesIDs(directory) if u not in uids)
            return {
                uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid, False, True)) for uid in uids
            }
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _series_summary(files: list[str]) -> str:
    """What tells one series from another: its Series Description (0008,103E), slice count and the
    range of its slices' S coordinate (LPS z of Image Position (Patient), mm), e.g.
    ``"'ARTERIAL' (40 slices, z -100 to 17 mm"``; the caller closes the parenthesis."""
    reader = sitk.ImageFileReader()
    values = {}
    for name in (files[0], files[-1]):
        reader.SetFileName(name)
        with _stderr_dropped():  # GDCM decodes the slice; the series read reports its problems
            reader.ReadImageInformation()
        values[name] = {
            k: reader.GetMetaData(k).strip() for k in ("0008|103e", "0020|0032") if reader.HasMetaDataKey(k)
        }
    description = values[files[0]].get("0008|103e", "")
    try:
        low, high = sorted(float(values[name]["0020|0032"].split("\\")[2]) for name in (files[0], files[-1]))
        z_range = f", z {low:g} to {high:g} mm"
    except (KeyError, IndexError, ValueError):
        z_range = ""
    return f"'{description}' ({len(files)} slices{z_range}"


#: Media Storage SOP Class UID of a DICOMDIR (an index of a DICOM folder, not a slice).
_DICOMDIR = "1.2.840.10008.1.3.10"


def _damaged_slices(series: dict[str, list[str]], series_uid: str) -> list[str]:
    """Files beside the series' slices (same folders) that GDCM left out of every series because it
    could not read them, and that are this series' or unreadable: damaged or truncated slices."""
    import pydicom

    listed = {os.path.abspath(f) for files in series.values() for f in files}
    folders = sorted({os.path.dirname(os.path.abspath(f)) for f in series[series_uid]})
    damaged = []
    for folder in folders:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if not entry.is_file() or entry.name.startswith(".") or os.path.abspath(entry.path) in listed:
                continue
            with open(entry.path, "rb") as stream:
                preamble = stream.read(132)
            if preamble[128:132] != b"DICM" and not entry.name.lower().endswith(".dcm"):
                continue
            try:
                header = pydicom.dcmread(entry.path, stop_before_pixels=True)
                sop_class = str(getattr(header.get("file_meta", None), "MediaStorageSOPClassUID", ""))
                uid = str(header.get("SeriesInstanceUID", series_uid))  # cut before its UID: counted as this series'
            except Exception:  # pydicom raises many types for damaged files
                sop_class, uid = "", series_uid
            if uid == series_uid and sop_class != _DICOMDIR:
                damaged.append(entry.path)
    return damaged


#: Largest deviation of one slice-to-slice distance from the series' median, as a fraction of it, read as
#: evenly spaced; a larger one (a missing slice, an overlap) is refused.
SLICE_SPACING_TOLERANCE = 0.1


def _check_slice_positions(source: str, files: list[str], reader: sitk.ImageSeriesReader) -> None:
    """Raise CT2XError unless the slices' Image Position (Patient), projected on the slice normal
    (the cross product of the Image Orientation (Patient) row and column directions), steps evenly.

    ITK places slice ``k`` at ``first + k * spacing``; a missing slice or an overlap would move the
    slices beyond it. ``reader`` has read the series with its per-slice metadata.
    """
    if len(files) < 3:
        return
    try:
        orientation = np.array([float(v) for v in reader.GetMetaData(0, "0020|0037").split("\\")])
        positions = np.array(
            [[float(v) for v in reader.GetMetaData(k, "0020|0032").split("\\")] for k in range(len(files))]
        )
    except (RuntimeError, ValueError):  # a slice without position or orientation: ITK's own spacing is all there is
        return
    if orientation.shape != (6,) or positions.shape != (len(files), 3):
        return
    normal = np.cross(orientation[:3], orientation[3:])
    along = positions @ (normal / np.linalg.norm(normal))
    steps = np.abs(np.diff(along))
    spacing = float(np.median(steps))
    worst = int(np.argmax(np.abs(steps - spacing)))
    if spacing > 0 and abs(steps[worst] - spacing) <= SLICE_SPACING_TOLERANCE * spacing:
        return
    what = "overlap or repeat" if steps[worst] < spacing else "are missing"
    raise CT2XError(
        f"{source} has uneven slice positions: slices {worst + 1} and {worst + 2} of {len(files)} "
        f"('{os.path.basename(files[worst])}' at {along[worst]:g} mm and '{os.path.basename(files[worst + 1])}' "
        f"at {along[worst + 1]:g} mm along the slice normal) are {steps[worst]:g} mm apart where the others are "
        f"{spacing:g} mm, so slices {what}; ct2x refuses the series rather than misplace the slices beyond the gap: "
        "export the complete series again"
    )


def _read_dicom_folder(folder: Path, series_uid: str | None) -> sitk.Image:
    """Read the (chosen) DICOM series under ``folder``; rescale slope/intercept are applied by GDCM.

    The series is refused when a file beside its slices is one of its slices but unreadable
    (damaged or truncated: GDCM leaves it out) and when its slice positions do not step evenly
    (:func:`_check_slice_positions`); ITK would read both with wrong geometry.
    """
    series = _dicom_series(folder)
    if not series:
        what = "is empty" if not any(folder.iterdir()) else "holds no DICOM files"
        raise CT2XError(
            f"folder '{folder}' {what}: pass the folder holding the CT's DICOM series, or its "
            ".nii/.nii.gz, .nrrd/.nhdr or .mha/.mhd file"
        )

    def listing() -> str:
        return "; ".join(
            f"{uid} {_series_summary(files)}, in '{os.path.commonpath([os.path.dirname(f) for f in files])}')"
            for uid, files in series.items()
        )

    if series_uid is None:
        if len(series) > 1:
            raise CT2XError(
                f"folder '{folder}' holds {len(series)} DICOM series: {listing()}; choose one by passing "
                "that series' folder, or its UID (ct2x --series UID; read_ct(path, series_uid=...) in Python)"
            )
        series_uid = next(iter(series))
    elif series_uid not in series:
        raise CT2XError(f"folder '{folder}' holds no DICOM series {series_uid}; it holds: {listing()}")
    files = series[series_uid]
    source = f"series {series_uid} in '{folder}'"
    damaged = _damaged_slices(series, series_uid)
    if damaged:
        names = ", ".join(f"'{os.path.basename(f)}'" for f in damaged[:5]) + (" ..." if len(damaged) > 5 else "")
        raise CT2XError(
            f"{source}: {len(damaged)} of its {len(files) + len(damaged)} slice files cannot be read (damaged or "
            f"truncated: {names}), and reading the rest would misplace the slices beyond them: "
            "export the series again"
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    with itk_warnings(source):  # ITK warns of uneven slices; the check below says which, or lets it pass
        try:
            image = reader.Execute()
        except RuntimeError as error:
            raise CT2XError(
                f"cannot read {source}: a slice is damaged or not an image (SimpleITK: {_itk_reason(error)}); "
                "export the series again"
            ) from None
        _check_geometry(source, image.GetSize(), image.GetNumberOfComponentsPerPixel(), image.GetSpacing())
        _check_slice_positions(source, files, reader)
    return image


# --------------------------------------------------------------------------- resampling


def _resample(volume: CTVolume, origin: np.ndarray, spacing_mm: float, size: np.ndarray) -> CTVolume:
    """Linear resampling onto the axis-aligned LPS grid (origin = first voxel centre, mm); outside = OUTSIDE_HU."""
    resampler = sitk.ResampleImageFilter()
    resampler.SetOutputOrigin([float(o) for o in origin])
    resampler.SetOutputSpacing([float(spacing_mm)] * 3)
    resampler.SetOutputDirection([float(d) for d in np.eye(3).ravel()])
    resampler.SetSize([int(n) for n in size])
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetDefaultPixelValue(OUTSIDE_HU)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    return from_sitk(resampler.Execute(to_sitk(volume)))


def _bounding_box(volume: CTVolume) -> tuple[np.ndarray, np.ndarray]:
    """(centre, extent) of the axis-aligned LPS box around the voxel grid's outer corners, mm."""
    corners = volume.corners_lps
    low, high = corners.min(axis=0), corners.max(axis=0)
    return (low + high) / 2, high - low


def resample_isotropic(volume: CTVolume, spacing_mm: float = 1.0) -> CTVolume:
    """Resample onto an axis-aligned LPS grid with isotropic ``spacing_mm`` (mm), linear interpolation.

    The grid (identity direction) is centred on the centre of the volume's physical bounding
    box (the axis-aligned LPS box around the outer voxel corners) and has the fewest voxels
    per axis that cover it, ``ceil(extent / spacing_mm)``; voxels outside the input are
    ``OUTSIDE_HU``. Flipping or permuting the input's axes does not change the result.
    """
    spacing_mm = positive_finite("the resampling spacing", spacing_mm, "mm", quantity="number of")
    centre, extent = _bounding_box(volume)
    size = np.maximum(1, np.ceil(extent / spacing_mm - 1e-6)).astype(int)
    return _resample(volume, centre - (size - 1) / 2 * spacing_mm, spacing_mm, size)


def resample_to_grid(volume: CTVolume, size: int = 128) -> CTVolume:
    """Resample into a ``size``^3 cube on an axis-aligned LPS grid that holds the whole volume.

    The cube (identity direction) is centred on the centre of the volume's physical bounding
    box; its isotropic spacing is the box's largest extent / ``size`` (mm), so the longest
    axis fits exactly and the others are padded with ``OUTSIDE_HU``. Linear interpolation.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise CT2XError(f"the grid size must be a positive whole number of voxels, got {size!r}")
    centre, extent = _bounding_box(volume)
    spacing_mm = float(extent.max()) / int(size)
    return _resample(volume, centre - (size - 1) / 2 * spacing_mm, spacing_mm, np.full(3, int(size)))


def preprocess(volume: CTVolume, spacing_mm: float = 1.0, size: int = 128) -> CTVolume:
    """The paper's CT preprocessing: resample to ``spacing_mm`` isotropic (1 mm), then into a ``size``^3 cube (128).

    Both steps are linear and axis-aligned in LPS and keep the bounding-box centre, so the
    output is a ``size``^3 float32 HU volume with identity direction, spacing
    ``ceil(largest extent / spacing_mm) * spacing_mm / size`` mm and centre at the input's
    :attr:`CTVolume.center_lps`; its ``ijk_to_lps`` puts it back into patient space.
    HU are not clipped or scaled here.
    """
    return resample_to_grid(resample_isotropic(volume, spacing_mm), size)

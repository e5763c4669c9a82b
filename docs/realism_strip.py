"""Draw docs/realism_strip.png from a ``ct2x evaluate`` report folder: one held-out CT at one view, side by
side at one scale: the style reference film (cropped like the real set), the physics DRR, the histogram-matched
DRR, the imaging chain with the style fitted to that film, and the model in that film's style.

Usage: python docs/realism_strip.py REPORT [--ct N] [--view N] [--style N] [--out docs/realism_strip.png]
(N counts from 0: the report's CTs, evaluation views and style references in its order).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image, ImageDraw

from ct2x.data.radiographs import read_radiographs

COLUMNS = (
    ("Real film", None),
    ("DRR (physics)", "DRR (physics)"),
    ("Histogram-matched DRR", "Styled DRR (histogram-matched)"),
    ("Imaging chain, fitted", "Imaging chain (fitted style)"),
    ("CT2X-GAN (bundled)", None),  # the model under test's row
)
LABEL_HEIGHT = 18


def main() -> None:
    """Read the report's index and metrics, pick the tiles, write the strip."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--ct", type=int, default=1)
    parser.add_argument("--view", type=int, default=2)
    parser.add_argument("--style", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("realism_strip.png"))
    args = parser.parse_args()
    metrics = json.loads((args.report / "metrics.json").read_text(encoding="utf-8"))
    index = json.loads((args.report / "images" / "index.json").read_text(encoding="utf-8"))["methods"]
    views, styles = len(metrics["views"]), len(metrics["style_references"])
    film = Path(metrics["radiographs"]["folder"]) / metrics["style_references"][args.style]
    crop = read_radiographs([film], 256, crop=metrics["radiographs"]["crop"])[0, 0].numpy()
    tiles = [Image.fromarray((crop * 255).round().astype("uint8"))]
    for _, row in COLUMNS[1:]:
        name = row or metrics["model_under_test"]
        per_view = 1 if len(index[name]) == len(metrics["data"]["volumes"]) * views else styles
        number = (args.ct * views + args.view) * per_view + (args.style if per_view > 1 else 0)
        tiles.append(Image.open(args.report / index[name][number]).convert("L"))
    strip = Image.new("L", (256 * len(tiles), 256 + LABEL_HEIGHT), 255)
    draw = ImageDraw.Draw(strip)
    for n, (tile, (label, _)) in enumerate(zip(tiles, COLUMNS, strict=True)):
        strip.paste(tile.resize((256, 256)), (256 * n, LABEL_HEIGHT))
        draw.text((256 * n + 4, 3), label, fill=0)
    strip.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

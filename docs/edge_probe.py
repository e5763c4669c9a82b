"""What the edge agreement of a row measures: the saved images of rows of a ``ct2x evaluate`` report against the
physics DRR of the same CT and view (the report's ``DRR (physics)`` row), as the report's blurred edge NCC
(both images blurred by 1.5 px before the Sobel maps), with more blur, and untoned (the image's grey levels first
mapped onto the DRR's histogram: a monotone map, no edge moves, only the style's tone curve goes), as the
report's untoned column but on the saved 8-bit images.

Usage: python docs/edge_probe.py REPORT [--row NAME ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ct2x.evaluation.measures import blurred_edge_ncc, untoned_edge_ncc
from ct2x.evaluation.methods import CHAIN_ROW, DRR_ROW, STYLED_ROW
from ct2x.evaluation.study import read_index

ROWS = (STYLED_ROW, CHAIN_ROW)  # and the report's model under test
BLURS_PX = (1.5, 3.0, 5.0)


def _read(report: Path, path: str) -> np.ndarray:
    return np.asarray(Image.open(report / path), np.float64) / 255.0


def main() -> None:
    """Print one table row per report row: mean blurred edge NCC over its images at each blur, then with the
    untoned (1.5 px)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    default = f"{', '.join(ROWS)} and the model under test"
    parser.add_argument("--row", action="append", help=f"a row of the report (default: {default})")
    args = parser.parse_args()
    index = read_index(args.report)[1]
    model = json.loads((args.report / "metrics.json").read_text(encoding="utf-8"))["model_under_test"]
    drrs = [_read(args.report, p) for p in index[DRR_ROW]]
    blurs = " | ".join(f"{b:g} px" for b in BLURS_PX)
    print(f"| row | {blurs} | untoned, 1.5 px | images |\n|---|{'---|' * len(BLURS_PX)}---|---|")
    for row in args.row or [*ROWS, model]:
        images = [_read(args.report, p) for p in index[row]]
        styles = len(images) // len(drrs)  # images are stored by CT, view, then style
        pairs = [(image, drrs[n // styles]) for n, image in enumerate(images)]
        scores = [np.mean([blurred_edge_ncc(a, b, blur) for a, b in pairs]) for blur in BLURS_PX]
        undone = np.mean([untoned_edge_ncc(a, b) for a, b in pairs])
        print(f"| {row} | {' | '.join(f'{s:.3f}' for s in scores)} | {undone:.3f} | {len(images)} |", flush=True)


if __name__ == "__main__":
    main()

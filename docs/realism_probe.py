"""What moves a row's realism: the saved images of one row of a ``ct2x evaluate`` report, post-processed in a
few ways (blur, sharpening, more grain, detail and coarse contrast) and split by view, scored like the report
(FID, KID, C2ST of InceptionV3 features on the scored region, against the report's real set read the same way);
then, as saved, against the real set cropped to other shares of the films' shorter side (the field a film is
taken to show at the isocenter), beside the first floor row's films cropped the same way; then every row and
every floor row with the films read at fewer pixels than the report's (:data:`READ_SIZES`; a film whose crop is
smaller than the report's pixel count is upsampled to it, the synthetic images are not), the synthetic images
area-averaged to the same count.

Usage: python docs/realism_probe.py REPORT [--row "Imaging chain (fitted style)"]
(run from where the report's real-set folder is found, as ``ct2x evaluate`` was).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ct2x.data.radiographs import find_radiographs, read_radiographs, square_resize
from ct2x.evaluation.inception import InceptionFeatures
from ct2x.evaluation.methods import CHAIN_ROW, REAL_SIZE, RealismMetrics, inception_features
from ct2x.evaluation.study import read_index
from ct2x.imaging.filters import gaussian_blur

#: Seed of the added grain.
SEED = 0
#: Shares of a film's shorter side tried as the detector's field (the report's is ``radiographs.crop``).
FILM_CROPS = (0.3, 0.4, 0.5, 0.6)
#: Pixels a side the films and images are read at in the last table (a 640 x 524 film's 0.4 crop is 210 pixels).
READ_SIZES = (210,)


def variants(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The row's images ``(N, 1, H, W)`` in [0, 1] and the post-processed versions tried."""
    coarse = gaussian_blur(images, (3.0, 3.0))
    grain = torch.randn(images.shape, generator=torch.Generator().manual_seed(SEED))
    return {
        "as saved": images,
        "blurred (Gaussian 0.7 px)": gaussian_blur(images, (0.7, 0.7)),
        "sharpened (x + (x - G_1.5 x))": 2 * images - gaussian_blur(images, (1.5, 1.5)),
        "more grain (+ white noise, sd 0.015)": images + 0.015 * grain,
        "details x 1.5 (below 3 px)": coarse + 1.5 * (images - coarse),
        "coarse contrast halved (above 3 px)": images - 0.5 * (coarse - coarse.mean((-2, -1), keepdim=True)),
    }


@dataclass(frozen=True)
class ReportScoring:
    """A ``ct2x evaluate`` report's realism scoring, to score other images the way the report scored its rows:
    its ``metrics`` (metrics.json), the scored region of the synthetic images (``rows``, ``columns``) and of the
    real films (``real_region``), the InceptionV3 ``network`` and ``scores`` against the report's real set."""

    metrics: dict
    rows: slice
    columns: slice
    real_region: tuple[slice, slice]
    network: InceptionFeatures
    scores: RealismMetrics

    def score(self, images: torch.Tensor):  # noqa: ANN201 (ct2x.evaluation.methods.RealismScores)
        """FID, KID and C2ST of ``images`` ``(N, 1, H, W)`` in [0, 1] on the scored region."""
        return self.scores.score(inception_features(self.network, images.clamp(0, 1)[..., self.rows, self.columns]))


def films_at(folder: str, size: int, crop: float, region: tuple[slice, slice]) -> torch.Tensor:
    """The films of ``folder`` read as the report reads its real set, at ``size`` pixels a side (cropped to
    ``crop`` of the shorter side), the scored ``region`` (rows, columns)."""
    return read_radiographs(find_radiographs(folder).paths, size, crop=crop)[..., region[0], region[1]]


def saved_images(report: Path, paths: list[str], size: int) -> torch.Tensor:
    """A row's saved images ``(N, 1, size, size)`` in [0, 1], area-averaged to ``size`` pixels a side
    (``ct2x.data.radiographs.square_resize``; unchanged at their own size)."""
    saved = [np.asarray(Image.open(report / p).convert("L"), np.float32) / 255 for p in paths]
    return torch.stack([torch.from_numpy(square_resize(image, size))[None] for image in saved])


def report_scoring(report: Path) -> ReportScoring:
    """Read ``report``'s metrics.json and its real set (run from where its folders are found)."""
    metrics = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
    region = metrics["scored_region"]
    crop = region["crop"]
    real_region = slice(*region["real_crop"]["rows"]), slice(*region["real_crop"]["columns"])
    real = films_at(metrics["radiographs"]["folder"], REAL_SIZE, metrics["radiographs"]["crop"], real_region)
    network = InceptionFeatures()
    scores = RealismMetrics(inception_features(network, real), None, seed=0)
    rows, columns = slice(crop["top"], crop["bottom"]), slice(crop["left"], crop["right"])
    return ReportScoring(metrics, rows, columns, real_region, network, scores)


def main() -> None:
    """Score the variants and the view subsets; print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--row", default=CHAIN_ROW)
    args = parser.parse_args()
    scoring = report_scoring(args.report)
    metrics, network = scoring.metrics, scoring.network
    paths = read_index(args.report)[1][args.row]
    images = saved_images(args.report, paths, REAL_SIZE)
    views, styles = len(metrics["views"]), len(metrics["style_references"])
    per_view = images.reshape(-1, views, styles, *images.shape[1:])
    names = [view["label"] for view in metrics["views"]]
    frontal = [k for k, name in enumerate(names) if any(t in name for t in ("LAO 0", "RAO 30", "LAO 30"))]
    tried = {**variants(images), **{
        f"views {', '.join(names[k] for k in frontal)} only": per_view[:, frontal].reshape(-1, *images.shape[1:]),
        "the other views only": per_view[:, [k for k in range(views) if k not in frontal]].reshape(
            -1, *images.shape[1:]),
    }}  # fmt: skip
    print(f"| {args.row} | FID | KID | C2ST AUC | images |\n|---|---|---|---|---|")
    for name, tried_images in tried.items():
        scored = scoring.score(tried_images)
        print(f"| {name} | {scored.fid:.1f} | {scored.kid:.3f} | {scored.c2st_auc:.3f} | {scored.images} |", flush=True)
    row = inception_features(network, images[..., scoring.rows, scoring.columns])
    film_field(metrics, network, row, scoring.real_region)
    read_size(args.report, scoring)


def film_field(metrics: dict, network: InceptionFeatures, row: torch.Tensor, region: tuple[slice, slice]) -> None:
    """Score the row's features ``row`` against the real set, and the first floor row's films against it, with
    both sets of films cropped to each share of :data:`FILM_CROPS`; print one table."""
    if not metrics.get("floor"):
        print("\nno film-crop table: the report scored no floor row (ct2x evaluate --floor)")
        return
    floor = next(iter(metrics["floor"].values()))["folder"]
    print(f"\n| film crop (share of the shorter side) | row: FID | KID | C2ST AUC | floor ({floor}): FID |")
    print("|---|---|---|---|---|")
    folders = metrics["radiographs"]["folder"], floor
    for crop in FILM_CROPS:
        real, other = (films_at(folder, REAL_SIZE, crop, region) for folder in folders)
        scores = RealismMetrics(inception_features(network, real), None, seed=0)
        scored, floor_fid = scores.score(row), scores.score(inception_features(network, other)).fid
        print(f"| {crop} | {scored.fid:.1f} | {scored.kid:.3f} | {scored.c2st_auc:.3f} | {floor_fid:.1f} |", flush=True)


def read_size(report: Path, scoring: ReportScoring) -> None:
    """Score every row of ``report`` and its floor rows with the films read at each of :data:`READ_SIZES` pixels a
    side (the scored rows scaled alike) and the saved images area-averaged to it; print one table."""
    metrics, crop = scoring.metrics, scoring.metrics["radiographs"]["crop"]
    floor = {name: entry["folder"] for name, entry in metrics.get("floor", {}).items()}
    methods = read_index(report)[1]
    for size in READ_SIZES:
        rows = slice(*(round(edge * size / REAL_SIZE) for edge in (scoring.rows.start, scoring.rows.stop)))
        region = rows, slice(None)
        real = films_at(metrics["radiographs"]["folder"], size, crop, region)
        scores = RealismMetrics(inception_features(scoring.network, real), None, seed=0)
        print(f"\n| read at {size} px (rows {rows.start}-{rows.stop}) | FID | KID | C2ST AUC |\n|---|---|---|---|")
        films = {name: films_at(folder, size, crop, region) for name, folder in floor.items()}
        synthetic = {name: saved_images(report, paths, size)[..., rows, :] for name, paths in methods.items()}
        rows_scored = {**films, **synthetic}
        for name, images in rows_scored.items():
            scored = scores.score(inception_features(scoring.network, images.clamp(0, 1)))
            print(f"| {name} | {scored.fid:.1f} | {scored.kid:.3f} | {scored.c2st_auc:.3f} |", flush=True)


if __name__ == "__main__":
    main()

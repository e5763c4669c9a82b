"""Where a chain-anchored model's residual puts its energy: the power spectrum of the model's saved images less the
imaging chain's of the same CT, view and style reference (the rows ``Imaging chain (fitted style)`` and the model
under test of a ``ct2x evaluate`` report), each difference under a Hann window, summed over the images, on the two
frequency axes (vertical frequencies: horizontal stripes; horizontal frequencies: vertical stripes). Each period's
power is given relative to the median power of its frequency row (or column) of the spectrum, so that a peak
standing out of the residual's grain shows as a large ratio. The longest periods hold the difference of the two
rows' tone curves (the model's T), not the residual.

Usage: python docs/residual_spectrum.py REPORT [--peaks 4]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ct2x.evaluation.methods import CHAIN_ROW
from ct2x.evaluation.study import read_index


def _read(report: Path, path: str) -> np.ndarray:
    return np.asarray(Image.open(report / path), np.float64) / 255.0


def residual_power(report: Path) -> np.ndarray:
    """The summed power spectrum ``(S, S)`` (zero frequency at the centre) of the model's images less the chain's,
    each difference less its mean and under a Hann window (without it the image's borders, where the FFT wraps
    round, put power on both axes at every frequency)."""
    index = read_index(report)[1]
    model = json.loads((report / "metrics.json").read_text(encoding="utf-8"))["model_under_test"]
    power = 0.0
    for ours, chain in zip(index[model], index[CHAIN_ROW], strict=True):
        difference = _read(report, ours) - _read(report, chain)
        window = np.outer(np.hanning(difference.shape[0]), np.hanning(difference.shape[1]))
        power = power + np.abs(np.fft.fft2((difference - difference.mean()) * window)) ** 2
    return np.fft.fftshift(power)


def axis_peaks(power: np.ndarray, peaks: int) -> dict[str, list[tuple[float, float]]]:
    """The ``peaks`` strongest non-zero frequencies on each axis as ``(period px, power / median of that row or
    column)``, one per +/- pair."""
    size = power.shape[0]
    centre = size // 2
    found = {}
    for name, line, median in (
        ("vertical frequencies (horizontal stripes)", power[:, centre], np.median(power, axis=1)),
        ("horizontal frequencies (vertical stripes)", power[centre, :], np.median(power, axis=0)),
    ):
        ratio = line / median
        half = [(size / (f - centre), ratio[f]) for f in range(centre + 1, size)]
        found[name] = sorted(half, key=lambda p: -p[1])[:peaks]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--peaks", type=int, default=4)
    args = parser.parse_args()
    print("| axis | strongest periods, px (power / median power at that frequency) |\n|---|---|")
    for name, found in axis_peaks(residual_power(args.report), args.peaks).items():
        print(f"| {name} | {', '.join(f'{period:.1f} ({ratio:.0f}x)' for period, ratio in found)} |")


if __name__ == "__main__":
    main()

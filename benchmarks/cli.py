"""What a user waits for: one ``ct2x drr`` command of one 512-pixel view, start to finish, as a new process.

Three commands on the first chest CT of ../shared/data/ct (a 128^3 body phantom when absent, written to a
temporary NRRD): the raw physics DRR (``--imaging raw``), the imaging chain (its default preset) and the chain
with its look fitted to a film (``--style``, the first chest film of ../shared/data/xray, else a synthetic
one). Each runs with SpekPy's answers not on the disk (a new, empty ``$XDG_CACHE_HOME`` each run: the first
command on a machine) and on it (one shared folder, filled by a warm-up run: every later command). Wall times,
medians of ``--runs`` runs, the commands in turn so that a slow spell of the machine touches every row.

    python benchmarks/cli.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "Testing"))
from conftest import body_phantom  # noqa: E402
from machine import cpu_name  # noqa: E402

from ct2x.volume import to_sitk  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def inputs(folder: Path) -> tuple[str, Path, Path]:
    """(name, CT file, film file): the shared data's first chest CT and film, else a phantom and a noise film."""
    cts = sorted((SHARED / "ct").glob("*chest*.nii.gz")) if SHARED.exists() else []
    films = sorted((SHARED / "xray" / "chest").glob("*.png")) if SHARED.exists() else []
    if cts and films:
        return cts[0].name.replace(".nii.gz", ""), cts[0], films[0]
    sitk.WriteImage(to_sitk(body_phantom(size=128, spacing=2.0)), str(folder / "phantom.nrrd"))
    film = np.random.default_rng(0).normal(128, 30, (512, 512)).clip(0, 255).astype(np.uint8)
    Image.fromarray(film).save(folder / "film.png")
    return "phantom 128^3", folder / "phantom.nrrd", folder / "film.png"


def seconds(ct: Path, extra: list[str], out: Path, cache: Path) -> float:
    """Wall time of one ``ct2x drr`` process writing one 512-pixel LAO 0 view into ``out``."""
    argv = [sys.executable, "-m", "ct2x", "drr", str(ct), "--angles", "0", "--size", "512", *extra, "--out", str(out)]
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env={**os.environ, "XDG_CACHE_HOME": str(cache)})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        name, ct, film = inputs(folder)
        commands = {
            "raw DRR": ["--imaging", "raw"],
            "imaging chain": [],
            "chain, style fitted to a film": ["--style", str(film)],
        }
        shared = folder / "cache"
        seconds(ct, commands["chain, style fitted to a film"], folder / "warm-up", shared)
        times: dict[tuple[str, str], list[float]] = {}
        for run in range(args.runs):
            for label, extra in commands.items():
                for kept in ("not on disk", "on disk"):
                    cache = shared if kept == "on disk" else folder / f"empty-{label}-{run}"
                    out = folder / f"out-{label}-{kept}-{run}".replace(" ", "_").replace(",", "")
                    times.setdefault((label, kept), []).append(seconds(ct, extra, out, cache))
    print(f"*CPU: {cpu_name()} ({os.cpu_count()} cores); CT: {name}; one 512-pixel view; median of {args.runs}*")
    print("| command | SpekPy's answers | wall s |")
    print("|---|---|---|")
    for (label, kept), values in times.items():
        print(f"| ct2x drr, {label} | {kept} | {statistics.median(values):.2f} |")


if __name__ == "__main__":
    main()

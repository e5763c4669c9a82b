"""Synthesis speed: 5 views from a 128^3 CT with the model loaded, and model load time.

For each model: the bundled one (``projected`` preset at 256^2: the times include the area
densities and the MIP the projection path marches through the full CT per view) and a paper-size CT2X-GAN
(256^2 output, 128^3 CT code; randomly initialised and saved as a model file: the timing is
the same as a trained one's, the images mean nothing). The CT is a 128^3 phantom at 2 mm.
Times are medians of ``--runs`` runs after one warm-up. Each model runs in its own process;
peak memory is that process's peak resident set (CPU: Python, torch, the CT, the model and
the synthesis together) or ``torch.cuda.max_memory_allocated`` (GPU).

    python benchmarks/synthesize.py [--runs 3] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Testing"))
from conftest import body_phantom  # noqa: E402
from machine import cpu_name  # noqa: E402

from ct2x.checkpoint import load_model, save_model  # noqa: E402
from ct2x.config import CT2XConfig  # noqa: E402
from ct2x.models import CT2XGAN  # noqa: E402
from ct2x.samples import BUNDLED_MODEL  # noqa: E402
from ct2x.synthesize import model_views, synthesize  # noqa: E402

ANGLES = [-60.0, -30.0, 0.0, 30.0, 60.0]


def _paper_model(folder: Path) -> Path:
    config = CT2XConfig.preset("paper", lpips_backbone="random")
    weights = {k: v for k, v in CT2XGAN(config).state_dict().items() if not k.startswith("discriminator.")}
    path = folder / "paper.safetensors"
    save_model(path, weights, {"config": config.to_dict(), "training": {"steps": 0}})
    return path


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(label: str, runs: int, device: torch.device) -> None:
    """Time one model in this process and print its table row."""
    ct = body_phantom(size=128, spacing=2.0)
    with tempfile.TemporaryDirectory() as tmp:
        style = Path(tmp) / "style.png"
        Image.fromarray(np.tile(np.linspace(0, 255, 300).astype(np.uint8), (400, 1))).save(style)
        path = BUNDLED_MODEL if label == "bundled" else _paper_model(Path(tmp))
        started = time.perf_counter()
        model, card = load_model(path, device)
        load_s = time.perf_counter() - started
        views = model_views(model.config, card, ct, ANGLES)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(runs + 1):
            started = time.perf_counter()
            synthesize(model, ct, views, style=style)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - started)
    total = statistics.median(times[1:])
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _peak_rss_mib()
    size = model.config.image_size
    print(f"{MODELS[label]:14} {size:>5}² {load_s:>7.2f} {total:>10.2f} {total / 5:>9.2f} {peak:>9.0f}", flush=True)


MODELS = {"bundled": "bundled", "paper": "paper size"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", choices=sorted(MODELS), help=argparse.SUPPRESS)  # one model, in a child process
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.only:
        _measure(args.only, args.runs, device)
        return
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"device: {args.device} ({name}) | torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'model':14} {'image':>6} {'load s':>7} {'5 views s':>10} {'s / view':>9} {'peak MiB':>9}", flush=True)
    for label in MODELS:
        argv = [sys.executable, __file__, "--only", label, "--runs", str(args.runs), "--device", args.device]
        subprocess.run(argv, check=True)


if __name__ == "__main__":
    main()

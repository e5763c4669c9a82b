"""Synthesis speed: 5 views from a 128^3 CT with the model loaded, and model load time; and 5 views at 512^2
with the bundled model beside their physics DRRs and the imaging chain alone.

For each model: the bundled one (``projected`` preset at 256^2: the times include the area
densities and the MIP the projection path marches through the full CT per view) and a paper-size CT2X-GAN
(256^2 output, 128^3 CT code; randomly initialised and saved as a model file: the timing is
the same as a trained one's, the images mean nothing). The CT is a 128^3 phantom at 2 mm.
Times are medians of ``--runs`` runs after one warm-up. Each model runs in its own process;
peak memory is that process's peak resident set (CPU: Python, torch, the CT, the model and
the synthesis together) or ``torch.cuda.max_memory_allocated`` (GPU).

The second table (``--detector 512``) renders the same 5 views of a real CT (the pancreas CT of
../shared/data/ct, else the phantom) with the detector read out at 512 pixels: the physics DRRs
(``ct2x.drr.render_drr``, the polyenergetic DRR at the model's ray step), the imaging chain alone in a
reference film's look (``ct2x.imaging.styled``: one march, the fit, the chain) and the bundled model in that
film's style (``ct2x.synthesize.synthesize``: the march at 512^2, the networks at 256^2, the chain or physics
base at 512^2), each a median of ``--runs`` runs after one warm-up, in one process; the ratio is to the
physics DRRs.

    python benchmarks/synthesize.py [--runs 3] [--device cpu|cuda] [--detector 512]
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
PANCREAS_CT = ROOT.parent / "shared" / "data" / "ct" / "tcia_pancreas_ct_cb_001_abdomen_lumbar.nii.gz"


def _median_seconds(run, runs: int) -> float:  # noqa: ANN001 (a callable)
    times = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def _full_resolution(pixels: int, runs: int, device: torch.device) -> None:
    """The second table: 5 views at ``pixels``^2, model beside the physics DRRs and the chain alone."""
    from ct2x.data.radiographs import film_on_detector
    from ct2x.drr import area_densities, render_drr
    from ct2x.imaging import styled
    from ct2x.volume import read_ct

    name, ct = ("pancreas CT", read_ct(PANCREAS_CT)) if PANCREAS_CT.exists() else ("phantom", body_phantom(128, 2.0))
    model, card = load_model(BUNDLED_MODEL, device)
    views = model_views(model.config, card, ct, ANGLES, detector_pixels=(pixels, pixels))
    step = model.config.drr_step
    with tempfile.TemporaryDirectory() as tmp:
        style = Path(tmp) / "style.png"
        Image.fromarray(np.tile(np.linspace(0, 255, 300).astype(np.uint8), (400, 1))).save(style)
        film = film_on_detector(style, views[0])
        rows = {
            "physics DRRs": lambda: render_drr(ct, views, step=step, device=device),
            "imaging chain, fitted": lambda: styled(
                area_densities(ct, views, step=step, device=device), views, film, model.config.chain_preset, seed=0
            ),
            "bundled model": lambda: synthesize(model, ct, views, style=style),
        }
        times = {label: _median_seconds(run, runs) for label, run in rows.items()}
    print(f"\n5 views at {pixels}² of the {name} (step {step:g} voxels)")
    print(f"{'renderer':22} {'5 views s':>10} {'s / view':>9} {'x physics':>10}")
    for label, seconds in times.items():
        print(f"{label:22} {seconds:>10.2f} {seconds / 5:>9.2f} {seconds / times['physics DRRs']:>10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--detector", type=int, default=512, help="pixels a side of the second table's views")
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
    _full_resolution(args.detector, args.runs, device)


if __name__ == "__main__":
    main()

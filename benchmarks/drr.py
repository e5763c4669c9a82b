"""Speed and memory of ct2x.drr's torch backend against DiffDRR, one 256 x 256 view.

Prints a table: median seconds per view (of ``--runs`` runs after one warm-up) and peak
resident-memory growth for our polyenergetic DRR (``render_drr``, 60KV_AL35) at step 0.1
and 0.5 voxel, and DiffDRR's Siddon line integral on the CPU at the same geometry and
image size (DiffDRR has no step: Siddon visits every voxel boundary). Each measurement
runs in its own process, so its memory is ``ru_maxrss`` after rendering minus before.
GPU rows are added when CUDA is available (peak = ``torch.cuda.max_memory_allocated``).

CTs: a synthetic 128^3 phantom (2 mm voxels) and the largest CT of ../shared/data/ct.

    .venv/bin/python benchmarks/drr.py [--runs 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_name  # noqa: E402

from ct2x.drr.materials import hu_to_density  # noqa: E402
from ct2x.drr.peer import diffdrr_projector  # noqa: E402
from ct2x.geometry import CArm  # noqa: E402
from ct2x.volume import CTVolume, read_ct  # noqa: E402

SHARED_CT = ROOT.parent / "shared" / "data" / "ct"


def phantom128() -> CTVolume:
    """128^3, 2 mm: water cylinder along S, a bone rod and air around (HU)."""
    size, spacing = 128, 2.0
    k, j, i = np.meshgrid(*(np.arange(size, dtype=np.float32),) * 3, indexing="ij")
    c = (size - 1) / 2
    x, y = (i - c) * spacing, (j - c) * spacing
    hu = np.full((size,) * 3, -1000.0, dtype=np.float32)
    hu[x**2 + y**2 <= (0.4 * size * spacing) ** 2] = 0.0
    hu[(x - 40) ** 2 + y**2 <= 15**2] = 1000.0
    return CTVolume(hu, np.full(3, spacing), np.full(3, -c * spacing), np.eye(3))


def largest_ct() -> Path | None:
    files = sorted(SHARED_CT.glob("*.nii.gz"), key=lambda p: p.stat().st_size) if SHARED_CT.exists() else []
    return files[-1] if files else None


def load(name: str) -> CTVolume:
    return phantom128() if name == "phantom128" else read_ct(name)


def worker(ct: str, renderer: str, step: float, device: str, runs: int) -> dict:
    """Time one configuration in this process; returns seconds per view and memory growth in MiB."""
    from ct2x.drr import render_drr

    volume = load(ct)
    view = CArm(primary=20.0, isocenter=tuple(volume.center_lps))
    if renderer == "diffdrr":
        density = hu_to_density(torch.from_numpy(volume.array)).numpy()
        drr, pose = diffdrr_projector(volume, density, view, device)

        def run() -> None:
            with torch.no_grad():
                drr(pose)
    else:

        def run() -> None:
            render_drr(volume, view, step=step, device=device)

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run()  # warm-up: caches the spectrum and attenuation tables
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device == "cuda"
        else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    )
    return {"seconds": statistics.median(times), "peak_mib": peak, "shape": list(volume.array.shape)}


def measure(ct: str, renderer: str, step: float, device: str, runs: int, threads: int) -> dict:
    command = [sys.executable, __file__, "--worker", ct, renderer, str(step), device, str(runs), str(threads)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        ct, renderer, step, device, runs, threads = args.worker
        torch.set_num_threads(int(threads))
        print(json.dumps(worker(ct, renderer, float(step), device, int(runs))))
        return

    cts = ["phantom128"] + ([str(p)] if (p := largest_ct()) else [])
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    cpu = cpu_name()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"# CPU: {cpu}, torch {torch.__version__}, {args.threads} torch threads, median of {args.runs} runs")
    if torch.cuda.is_available():
        print(f"# GPU: {torch.cuda.get_device_name()}")
    print("# one 256x256 view, LAO 20; ours = render_drr (3 materials, 60KV_AL35); DiffDRR = Siddon line integral")
    header = f"{'CT':<34} {'device':<6} {'step':>5} {'ours s/view':>11} {'DiffDRR s/view':>14} {'ours/DiffDRR':>12}"
    print(header + f" {'ours peak MiB':>13} {'DiffDRR peak MiB':>16}")
    for ct in cts:
        for device in devices:
            theirs = measure(ct, "diffdrr", 0.0, device, args.runs, args.threads)
            for step in (0.1, 0.5):
                ours = measure(ct, "ours", step, device, args.runs, args.threads)
                label = f"{Path(ct).name.replace('.nii.gz', '')[:24]} {'x'.join(map(str, ours['shape'][::-1]))}"
                ratio = ours["seconds"] / theirs["seconds"]
                print(
                    f"{label:<34} {device:<6} {step:>5} {ours['seconds']:>11.2f} {theirs['seconds']:>14.2f} "
                    f"{ratio:>12.2f} {ours['peak_mib']:>13.0f} {theirs['peak_mib']:>16.0f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()

"""Speed of the imaging chain (ct2x.imaging) beside the physics DRR of the same view, on the CPU.

One 512-pixel view per preset (each preset's own geometry, at the CT's centre) of a real CT of
../shared/data/ct (the first chest CT; a 128^3 body phantom when absent). Times are medians of
``--runs`` runs after one warm-up, per view, for

* the area densities (``ct2x.drr.area_densities``: ray marching, the numba kernel);
* the physics DRR from them (``ct2x.drr.drr_from_area``: the polyenergetic Beer-Lambert sum);
* the radiograph from them (``ct2x.imaging.radiograph``, which includes that same sum as its primary);
* what the chain adds: the radiograph minus the DRR from the area densities (median of the paired
  differences, each run timing both);

and the chain's stages (primary, water thickness, beam and field, scatter, detector, log, console; and the
primary with six support devices in the beam, ``--devices 6``, which no preset has by default). The first
call of a preset also asks SpekPy for the heel effect (``first call``; SpekPy's answers are kept on disk,
``ct2x.drr.tube``, so it builds its tube model only when they are not there yet). GPU rows are added when
CUDA is available. A first line times the CT's couch made air (``ct2x.body.without_table``,
``--remove-table``), done once per CT before any view.

    .venv/bin/python benchmarks/imaging.py [--runs 5] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "Testing"))
from conftest import body_phantom  # noqa: E402
from machine import cpu_name  # noqa: E402

from ct2x.body import without_table  # noqa: E402
from ct2x.drr import area_densities, drr_from_area  # noqa: E402
from ct2x.imaging import PRESETS, console, radiograph  # noqa: E402
from ct2x.imaging.beam import beam_profile, field_mask, primary, quanta_per_pixel  # noqa: E402
from ct2x.imaging.detector import detect, flat_field, log_image  # noqa: E402
from ct2x.imaging.scatter import scatter, through_grid, water_equivalent_thickness  # noqa: E402
from ct2x.volume import CTVolume, read_ct  # noqa: E402

SHARED_CT = ROOT.parent / "shared" / "data" / "ct"


def load_ct() -> tuple[str, CTVolume]:
    """The first chest CT of ../shared/data/ct (by name), else a 128^3 body phantom at 2 mm."""
    chests = sorted(SHARED_CT.glob("*chest*.nii.gz")) if SHARED_CT.exists() else []
    if chests:
        return chests[0].name.replace(".nii.gz", ""), read_ct(chests[0])
    return "phantom 128^3", body_phantom(size=128, spacing=2.0)


def seconds(run: Callable[[], object], device: str) -> float:
    """Wall time of one call of ``run``."""
    start = time.perf_counter()
    run()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def median_seconds(run: Callable[[], object], runs: int, device: str) -> float:
    """Median wall time of ``run`` over ``runs`` calls after one warm-up."""
    run()
    return statistics.median(seconds(run, device) for _ in range(runs))


def stage_times(area: torch.Tensor, view, name: str, runs: int, device: str) -> dict[str, float]:  # noqa: ANN001 (CArm)
    """Median seconds of each stage of the chain, run one after the other as ``ct2x.imaging.simulate`` does."""
    p = PRESETS[name].parameters
    views = [view]
    transmitted = primary(area, views, p)
    thickness = water_equivalent_thickness(transmitted, p.spectrum)
    beam = beam_profile(views, p, device)
    incident = transmitted * beam * field_mask(views, p, device)
    scattered = scatter(incident, views, thickness, p.scatter_scale)
    level = torch.tensor([quanta_per_pixel(view, p)], device=device)
    expected = level[:, None, None] * through_grid(incident, scattered, p)
    generator = torch.Generator(device=device).manual_seed(0)
    signal = detect(expected, views, p, generator)
    log = log_image(signal, flat_field(beam, views, p, level * p.grid_primary_transmission))
    stages = {
        "primary": lambda: primary(area, views, p),
        "primary with 6 support devices": lambda: primary(area, views, dataclasses.replace(p, devices=6)),
        "thickness": lambda: water_equivalent_thickness(transmitted, p.spectrum),
        "beam+field": lambda: (beam_profile(views, p, device), field_mask(views, p, device)),
        "scatter": lambda: scatter(incident, views, thickness, p.scatter_scale),
        "detector": lambda: detect(expected, views, p, generator),
        "log": lambda: log_image(signal, flat_field(beam, views, p, level)),
        "console": lambda: console(log, views, p),
    }
    return {stage: median_seconds(run, runs, device) for stage, run in stages.items()}


def row(volume: CTVolume, name: str, view, device: str, threads: int, runs: int) -> tuple[str, torch.Tensor]:  # noqa: ANN001
    """One table row for preset ``name`` at ``view`` (a CArm), and the view's area densities."""
    torch.set_num_threads(threads)
    spectrum = PRESETS[name].parameters.spectrum
    start = time.perf_counter()
    area = area_densities(volume, [view], device=device)
    radiograph(area, [view], name, seed=0)
    first = time.perf_counter() - start
    march = median_seconds(lambda: area_densities(volume, [view], device=device), runs, device)
    pairs = [(seconds(lambda: drr_from_area(area, spectrum=spectrum), device),
              seconds(lambda: radiograph(area, [view], name, seed=0), device)) for _ in range(runs)]  # fmt: skip
    drr, chain = (statistics.median(times) for times in zip(*pairs, strict=True))
    added = statistics.median(b - a for a, b in pairs)  # paired: each run's radiograph minus its DRR
    shape = "x".join(map(str, view.detector_shape))
    cells = [name, shape, device, threads, f"{march:.3f}", f"{drr:.3f}", f"{chain:.3f}", f"{added:.3f}"]
    return "| " + " | ".join(map(str, cells)) + f" | {first:.2f} |", area


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--pixels", type=int, default=512)
    args = parser.parse_args()
    label, volume = load_ct()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"# CPU: {cpu_name()} ({os.cpu_count()} cores), torch {torch.__version__}, median of {args.runs} runs")
    if torch.cuda.is_available():
        print(f"# GPU: {torch.cuda.get_device_name()}")
    print(f"# CT: {label} {'x'.join(map(str, volume.array.shape[::-1]))}; one {args.pixels}-pixel view per preset")
    table = median_seconds(lambda: without_table(volume), args.runs, "cpu")
    print(f"# the couch made air (--remove-table), once per CT: {table:.2f} s")
    print("| preset | view | device | threads | area densities s | DRR from area s | radiograph from area s "
          "| chain adds s | first call s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    breakdown = []
    for name, preset in PRESETS.items():
        view = preset.view(args.pixels, isocenter=tuple(volume.center_lps))
        for device in devices:
            for threads in args.threads if device == "cpu" else [torch.get_num_threads()]:
                line, area = row(volume, name, view, device, threads, args.runs)
                print(line, flush=True)
                if threads == min(args.threads) or device == "cuda":
                    stages = stage_times(area, view, name, args.runs, device)
                    times = ", ".join(f"{stage} {seconds * 1000:.0f} ms" for stage, seconds in stages.items())
                    breakdown.append(f"# {name} ({device}, {threads} thread(s)): {times}")
    print("\n".join(breakdown))


if __name__ == "__main__":
    main()

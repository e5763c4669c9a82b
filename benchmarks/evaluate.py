"""Evaluation time: ``ct2x evaluate`` of a model on the first ``--cts`` CTs of a held-out dataset.

Runs the whole evaluation as ``ct2x evaluate`` does (baselines, untrained control, the model;
every measure; report, figures and images) on a dataset made of the first ``--cts`` prepared
CTs of ``--data`` (a manifest listing them, the volume files linked), in ``--styles`` styles,
against the radiographs of ``--xray``; prints the wall time, the time per stage (from the
report's ``metrics.json``), the CPU time of the process (all threads) and the image counts.

    python benchmarks/evaluate.py --data HELDOUT --xray REAL_XRAY [--model MODEL] [--cts 2] [--styles 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import cpu_name  # noqa: E402

from ct2x.data.dataset import load_manifest  # noqa: E402
from ct2x.data.prepare import MANIFEST  # noqa: E402
from ct2x.evaluation.evaluate import EvaluationSettings, evaluate_models  # noqa: E402
from ct2x.samples import BUNDLED_MODEL  # noqa: E402


def subset(data: Path, count: int, out: Path) -> Path:
    """A dataset folder holding the first ``count`` CTs of ``data`` (volume files linked, not copied)."""
    manifest = load_manifest(data)
    manifest["volumes"] = manifest["volumes"][:count]
    (out / "volumes").mkdir(parents=True)
    for entry in manifest["volumes"]:
        (out / "volumes" / entry["file"]).symlink_to((data / "volumes" / entry["file"]).resolve())
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="held-out dataset (ct2x prepare)")
    parser.add_argument("--xray", type=Path, required=True, help="real radiographs")
    parser.add_argument("--model", type=Path, default=BUNDLED_MODEL, help="model (default: the bundled one)")
    parser.add_argument("--cts", type=int, default=2, help="CTs of the dataset evaluated (default: 2)")
    parser.add_argument("--styles", type=int, default=5, help="style references (default: 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = subset(args.data, args.cts, Path(tmp) / "data")
        started, cpu = time.perf_counter(), time.process_time()
        evaluate_models(
            {"CT2X-GAN": args.model}, data, args.xray, Path(tmp) / "report", EvaluationSettings(args.styles)
        )
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        metrics = json.loads((Path(tmp) / "report" / "metrics.json").read_text(encoding="utf-8"))
    views = len(metrics["views"])
    images = metrics["images"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; load average {load:.1f}")
    print(f"{args.cts} CTs x {views} views x {args.styles} styles; images per method: {images}")
    print(
        "| CTs | views | styles | real radiographs | wall s | CPU s | "
        + " | ".join(metrics["seconds_per_stage"])
        + " |"
    )
    print("|---|---|---|---|---|---|" + "---|" * len(metrics["seconds_per_stage"]))
    stages = " | ".join(f"{s:.0f}" for s in metrics["seconds_per_stage"].values())
    real = metrics["radiographs"]["count"]
    print(f"| {args.cts} | {views} | {args.styles} | {real} | {seconds:.0f} | {cpu:.0f} | {stages} |")


if __name__ == "__main__":
    main()

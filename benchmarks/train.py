"""Training throughput: samples per second and time waiting for data, per config, at batch 16.

Builds a phantom dataset (2 CTs x 5 poses, prepared like ``ct2x prepare`` at each config's
image size) and phantom radiographs in a temporary folder, runs ``ct2x.train.train`` for a
few steps, and reads the per-step times it logs (the first step, which includes warm-up, is
dropped). LPIPS uses a random backbone here (its cost equals the real one's; no pretrained
weights offline). Prints a table naming the machine and device.

    python benchmarks/train.py [--configs small paper] [--steps 4] [--batch 16] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing"))
from conftest import body_phantom  # noqa: E402
from machine import cpu_name  # noqa: E402

from ct2x.config import CT2XConfig  # noqa: E402
from ct2x.data.prepare import PrepareSettings, prepare_dataset  # noqa: E402
from ct2x.train import TrainOptions, train  # noqa: E402


def _inputs(root: Path, image_size: int) -> tuple[Path, Path]:
    for n, size in enumerate((48, 40)):
        volume = body_phantom(size=size, spacing=3.0)
        image = sitk.GetImageFromArray(volume.array)
        image.SetSpacing(tuple(volume.spacing))
        image.SetOrigin(tuple(volume.origin))
        (root / "cts").mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(root / "cts" / f"ct{n}.nii.gz"))
    settings = PrepareSettings(detector_size=image_size, pixel_mm=298.0 / image_size, step=0.5, photons=0)
    prepare_dataset(root / "cts", root / "data", settings, workers=1, progress=False)
    rng = np.random.default_rng(0)
    (root / "xray").mkdir()
    for n in range(8):
        Image.fromarray(rng.integers(0, 255, (300, 240), dtype=np.uint8)).save(root / "xray" / f"{n}.png")
    return root / "data", root / "xray"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["small", "paper"])
    parser.add_argument("--steps", type=int, default=4, help="steps per config (the first is dropped)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="data-loading processes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(
        f"machine: {platform.node()} | device: {args.device} ({name}) | torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads | batch {args.batch} | {args.workers} loader workers"
    )
    print(f"{'config':8} {'image':>6} {'step s (median)':>16} {'samples/s':>10} {'data wait s':>12} {'wait/step':>10}")
    for preset in args.configs:
        config = CT2XConfig.preset(preset, batch_size=args.batch, lpips_backbone="random")
        with tempfile.TemporaryDirectory() as tmp:
            data, xray = _inputs(Path(tmp), config.image_size)
            options = TrainOptions(
                data=data,
                xray=xray,
                out=Path(tmp) / "run",
                steps=args.steps,
                device=args.device,
                checkpoint_every=10**9,
                log_every=1,
                image_every=10**9,
                workers=args.workers,
                progress=False,
            )
            with contextlib.redirect_stdout(io.StringIO()):  # the trainer's progress lines
                train(config, options)
            rows = [
                json.loads(line)
                for line in (Path(tmp) / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
            ]
        timed = rows[1:] or rows
        step_s = statistics.median(r["time/step_s"] for r in timed)
        wait_s = statistics.median(r["time/data_wait_s"] for r in timed)
        print(
            f"{preset:8} {config.image_size:>5}² {step_s:>16.2f} {args.batch / step_s:>10.2f} "
            f"{wait_s:>12.3f} {wait_s / step_s:>9.1%}"
        )


if __name__ == "__main__":
    main()

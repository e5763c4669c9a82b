"""Parameter counts and forward / forward+backward time of each CT2X-GAN network.

For the ``paper`` and ``small`` presets of :class:`ct2x.config.CT2XConfig`, prints one row
per module: E_CT, the PAM, E_sty (content + both style branches on one image), G, D, and
the whole Fig. 2 training forward (:class:`ct2x.models.CT2XGAN`, without D). Times are the
median of ``--runs`` runs after one warm-up, in milliseconds, at ``--batch`` samples;
"fwd+bwd" back-propagates the sum of the outputs to every parameter. CPU rows always, CUDA
rows when a GPU is present (synchronised around each run). The machine is named in the header.

    .venv/bin/python benchmarks/model.py [--configs paper small] [--batch 1] [--runs 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_name  # noqa: E402

from ct2x.config import CT2XConfig  # noqa: E402
from ct2x.geometry import views  # noqa: E402
from ct2x.models import CT2XGAN  # noqa: E402


def timed(fn: Callable[[], None], device: torch.device, runs: int) -> float:
    """Median wall time of ``fn`` in ms over ``runs`` runs, after one warm-up."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def inputs(config: CT2XConfig, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    d, s = config.volume_size, config.image_size
    angles = list(np.linspace(-60, 60, batch)) if batch > 1 else [0.0]
    pose = torch.tensor(np.stack([v.pose for v in views(angles)]), dtype=torch.float32)
    x = {
        "volume": torch.rand(batch, 1, d, d, d, generator=g) * 2 - 1,
        "pose": pose,
        "mip": torch.rand(batch, 1, s, s, generator=g) * 2 - 1,
        "drr": torch.rand(batch, 1, s, s, generator=g) * 2 - 1,
        "xray": torch.rand(batch, 1, s, s, generator=g) * 2 - 1,
    }
    return {k: v.to(device) for k, v in x.items()}


def output_sum(result: object) -> torch.Tensor:
    """Sum of every tensor a module returned (a tensor, a tuple of them, or CT2XOutputs)."""
    if isinstance(result, torch.Tensor):
        return result.sum()
    values = result if isinstance(result, tuple) else vars(result).values()
    return sum(v.sum() for v in values if isinstance(v, torch.Tensor))


def bench(config_name: str, device: torch.device, batch: int, runs: int) -> list[tuple[str, int, float, float]]:
    torch.manual_seed(0)
    config = CT2XConfig.preset(config_name)
    model = CT2XGAN(config).to(device)
    x = inputs(config, batch, device)
    with torch.no_grad():
        f_c_ct = model.ct_encoder(x["volume"])
        f_c_wplus = model.pose_module(f_c_ct, x["pose"], x["mip"])
        f_sty = model.style_encoder.xray_style(x["xray"])
    cases: list[tuple[str, torch.nn.Module, Callable[[], object]]] = [
        ("E_CT", model.ct_encoder, lambda: model.ct_encoder(x["volume"])),
        ("PAM", model.pose_module, lambda: model.pose_module(f_c_ct, x["pose"], x["mip"])),
        ("E_sty", model.style_encoder, lambda: model.style_encoder(x["xray"])),
        ("G", model.generator, lambda: model.generator(f_c_wplus, f_sty)),
        ("D", model.discriminator, lambda: model.discriminator(x["drr"], x["pose"])),
        ("CT2XGAN fwd (Fig. 2, no D)", model, lambda: model(x["volume"], x["pose"], x["mip"], x["drr"], x["xray"])),
    ]
    rows = []
    for name, module, fn in cases:
        params = sum(p.numel() for p in module.parameters())
        if module is model:
            params -= sum(p.numel() for p in model.discriminator.parameters())

        def forward(fn: Callable[[], object] = fn) -> None:
            with torch.no_grad():
                fn()

        def forward_backward(fn: Callable[[], object] = fn, module: torch.nn.Module = module) -> None:
            module.zero_grad(set_to_none=True)
            output_sum(fn()).backward()

        rows.append((name, params, timed(forward, device, runs), timed(forward_backward, device, runs)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["paper", "small"], choices=["paper", "small"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"CT2X-GAN, batch {args.batch}, median of {args.runs} runs after 1 warm-up, torch {torch.__version__}")
    for device in devices:
        if device.type == "cpu":
            machine = f"CPU: {cpu_name()}, {torch.get_num_threads()} threads"
        else:
            machine = f"GPU: {torch.cuda.get_device_name(device)}"
        print(f"\n{machine}")
        print(f"{'config':<7} {'module':<28} {'params':>12} {'fwd ms':>10} {'fwd+bwd ms':>11}")
        for name in args.configs:
            for module, params, fwd, fwd_bwd in bench(name, device, args.batch, args.runs):
                print(f"{name:<7} {module:<28} {params:>12,} {fwd:>10.1f} {fwd_bwd:>11.1f}")


if __name__ == "__main__":
    main()

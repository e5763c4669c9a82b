"""Report of a training run: loss curves and held-out DRR reconstruction before and after.

    python docs/training_report.py RUN HELDOUT_DATASET XRAY_DIR [--out docs/]

* ``RUN``: a run folder of ``ct2x train`` (``metrics.jsonl``, ``model.safetensors``);
* ``HELDOUT_DATASET``: ``ct2x prepare`` output of CTs the run never saw;
* ``XRAY_DIR``: radiographs (style references for the synthesized row of the figure).

Writes ``training_curves.png`` (losses against steps) and ``training_heldout.png`` (rows:
true DRR, reconstruction by the initial model, by the trained model, synthesized X-ray; one
column per pose) and prints a Markdown table of PSNR / SSIM (paper Table 3's measures). The
untrained model is a fresh random initialisation with the run's seed (from the card), as
``ct2x train`` draws it; a run started with ``--init`` started from its init model instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ct2x.checkpoint import load_model  # noqa: E402
from ct2x.config import CT2XConfig  # noqa: E402
from ct2x.data.dataset import CTViewDataset  # noqa: E402
from ct2x.evaluation.methods import drr_reconstruction  # noqa: E402
from ct2x.models import CT2XGAN  # noqa: E402

CURVES = [
    ("g/total", "G total (eq. 18)"),
    ("g/mae", "L_mae (eq. 8)"),
    ("g/adv", "L_adv^gan (eq. 16)"),
    ("g/consis", "L_consis (eq. 9)"),
    ("g/zero", "L_0 (eq. 12)"),
    ("d/total", "D total (eq. 19)"),
]


def _curves(run: Path, out: Path) -> None:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    steps = np.array([r["step"] for r in rows])
    fig, axes = plt.subplots(2, 3, figsize=(12, 6), sharex=True)
    for ax, (key, title) in zip(axes.ravel(), CURVES, strict=True):
        values = np.array([r[key] for r in rows])
        ax.plot(steps, values, lw=0.6, alpha=0.4, color="C0")
        window = max(1, len(values) // 30)
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, lw=1.5, color="C1")
        ax.set_title(title, fontsize=10)
    for ax in axes[1]:
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out / "training_curves.png", dpi=90)


def _reconstructions(model: CT2XGAN, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        out = model(batch["volume"], batch["pose"], batch["mip"], batch["drr"], batch["xray"])
    return out.drr_hat, out.xray_hat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("heldout", type=Path)
    parser.add_argument("xray", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()

    trained, card = load_model(args.run / "model.safetensors")
    config = CT2XConfig.from_dict(card["config"])
    torch.manual_seed(card["training"]["seed"])
    initial = CT2XGAN(config).eval()
    heldout = CTViewDataset(args.heldout, args.xray, config)
    before, after = drr_reconstruction(initial, heldout), drr_reconstruction(trained, heldout)
    print(f"held-out DRR reconstruction over {after.samples} (CT, pose) pairs, {card['training']['steps']} steps:")
    print("| model | PSNR (dB) | SSIM |\n|---|---|---|")
    print(f"| untrained (random initialisation) | {before.psnr:.2f} | {before.ssim:.3f} |")
    print(f"| trained | {after.psnr:.2f} | {after.ssim:.3f} |")

    _curves(args.run, args.out)
    samples = [heldout[i] for i in heldout.views_of(0)]
    batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
    batch["xray"] = batch["xray"][:1].expand_as(batch["xray"])
    rows = [batch["drr"], _reconstructions(initial, batch)[0], *_reconstructions(trained, batch)]
    labels = ["true DRR", "untrained G", "trained G", "synthesized X-ray"]
    angles = heldout.manifest["settings"]["angles"]
    fig, axes = plt.subplots(len(rows), len(angles), figsize=(2 * len(angles), 2 * len(rows)))
    for r, (row, label) in enumerate(zip(rows, labels, strict=True)):
        for c, angle in enumerate(angles):
            axes[r, c].imshow(row[c, 0].clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(f"{angle:+g}°", fontsize=9)
            if c == 0:
                axes[r, c].set_ylabel(label, fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out / "training_heldout.png", dpi=80)


if __name__ == "__main__":
    main()

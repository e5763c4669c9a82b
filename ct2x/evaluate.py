"""Evaluation of a CT2X-GAN model (paper sect. 4.2-4.3).

DRR reconstruction (paper Table 3): for every (CT, pose) of a prepared dataset, the model
reconstructs the DRR from the CT's content code at the pose and the DRR style code of the
true DRR, ``Î_DRR = G(f_c^{w+}(V, p), E_sty^sDRR(I_DRR))`` (eq. 7), and is scored against
``I_DRR`` by PSNR (dB) and SSIM on images scaled to [0, 1] (torchmetrics).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from ct2x.data.dataset import CTViewDataset
from ct2x.models import CT2XGAN


@dataclass(frozen=True)
class ReconstructionScores:
    """Mean PSNR (dB) and SSIM of reconstructed DRRs over ``samples`` (CT, pose) pairs."""

    psnr: float
    ssim: float
    samples: int


@torch.no_grad()
def drr_reconstruction(model: CT2XGAN, dataset: CTViewDataset, batch_size: int = 8) -> ReconstructionScores:
    """Score eq. 7's reconstructions of every DRR in ``dataset`` (see the module docstring)."""
    device = next(model.parameters()).device
    psnr = PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3)).to(device)
    ssim = StructuralSimilarityIndexMeasure(data_range=1.0).to(device)
    model.eval()
    for batch in DataLoader(dataset, batch_size=batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        content = model.content_code(batch["volume"], batch["pose"], batch["mip"])
        predicted = (model.generator(content, model.drr_style_code(batch["drr"])).clamp(-1, 1) + 1) / 2
        truth = (batch["drr"] + 1) / 2
        psnr.update(predicted, truth)
        ssim.update(predicted, truth)
    return ReconstructionScores(float(psnr.compute()), float(ssim.compute()), len(dataset))

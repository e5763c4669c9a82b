"""Evaluation of a CT2X-GAN model on held-out data (paper sect. 4.1-4.3, Tables 1-3).

Inputs: a prepared dataset of held-out CTs (``ct2x prepare``: the CT grid, the pose, MIP and
DRR of every view) and a folder of real radiographs.

* **Realism** (Tables 1 and 2): every (CT, pose) of the dataset is synthesized in the style of
  each of ``styles`` reference radiographs spread evenly over the sorted folder
  (:func:`ct2x.data.radiographs.evenly_spread`). FID and KID compare those images with *all*
  the real radiographs through torchmetrics with the offline InceptionV3 of
  :mod:`ct2x.inception`; LPIPS (the ``lpips`` package, AlexNet backbone) is the mean distance
  between each synthesized image and its style reference. Images are grey, in [0, 1]; real
  radiographs are read like training ones (``read_radiograph``: square, 8-bit to [0, 1]).
  The plain DRRs of the same views are scored the same way, as the physics-only reference.
* **DRR style reconstruction** (Table 3): eq. 7's reconstruction of every DRR from the CT's
  content code and the DRR's own style code, scored against the DRR by PSNR (dB) and SSIM on
  images scaled to [0, 1] (torchmetrics).

FID and KID from a few dozen images are biased upward and noisy: compare only numbers
computed on the same sets.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from ct2x.data.dataset import CTViewDataset, xray_input
from ct2x.models import CT2XGAN
from ct2x.volume import CTVolume


@dataclass(frozen=True)
class ReconstructionScores:
    """Mean PSNR (dB) and SSIM of reconstructed DRRs over ``samples`` (CT, pose) pairs."""

    psnr: float
    ssim: float
    samples: int


@dataclass(frozen=True)
class RealismScores:
    """FID, KID (mean and standard deviation over subsets) and mean LPIPS (``None`` when not
    computed) of ``images`` images against ``real`` real radiographs."""

    fid: float
    kid: float
    kid_std: float
    lpips: float | None
    images: int
    real: int


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


@torch.no_grad()
def synthesized_xrays(
    model: CT2XGAN, dataset: CTViewDataset, references: torch.Tensor, batch_size: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (CT, pose) of ``dataset`` in the style of each reference radiograph.

    Args:
        references: ``(R, 1, S, S)`` in [0, 1]. A model without the style encoder (ablation)
            makes one image per sample, repeated for each reference.

    Returns:
        images ``(N * R, 1, S, S)`` in [0, 1] (sample-major) and the reference index of each.
    """
    device = next(model.parameters()).device
    config = model.config
    refs = xray_input(references[:, 0], config)[:, None].to(device)
    codes = None if model.style_encoder is None else model.style_encoder.xray_style(refs)
    images = []
    for batch in DataLoader(dataset, batch_size=batch_size):
        content = model.content_code(batch["volume"].to(device), batch["pose"].to(device), batch["mip"].to(device))
        for r in range(len(refs)):
            style = (
                model.constant_style.expand(len(content), -1, -1)
                if codes is None
                else codes[r : r + 1].expand(len(content), -1, -1)
            )
            images.append(((model.generator(content, style).clamp(-1, 1) + 1) / 2).float().cpu())
    # images were appended batch by batch, reference by reference: reorder to sample-major
    per_batch = [torch.stack(images[i : i + len(refs)], dim=1) for i in range(0, len(images), len(refs))]
    stacked = torch.cat(per_batch).flatten(0, 1)
    return stacked, torch.arange(len(refs)).repeat(len(dataset))


def true_drrs(dataset: CTViewDataset) -> torch.Tensor:
    """The dataset's DRRs ``(N, 1, S, S)`` scaled to [0, 1] as the model sees them."""
    return torch.cat([(batch["drr"] + 1) / 2 for batch in DataLoader(dataset, batch_size=16)])


class RealismMetrics:
    """FID, KID and LPIPS of image sets against one set of real radiographs, whose Inception
    features are computed once.

    Args:
        real: ``(N, 1, S, S)`` real radiographs in [0, 1].
        features: the Inception feature extractor (``ct2x.inception.InceptionFeatures``).
        lpips: LPIPS distance of two ``(B, 1, S, S)`` batches in [-1, 1] (``ct2x.losses.LPIPSLoss``),
            or ``None`` to skip LPIPS.
        seed: seeds KID's random subsets.
    """

    def __init__(
        self,
        real: torch.Tensor,
        features: torch.nn.Module,
        lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
        seed: int = 0,
        batch_size: int = 16,
    ) -> None:
        self.real_count, self.lpips, self.seed, self.batch_size = len(real), lpips, seed, batch_size
        self.fid = FrechetInceptionDistance(feature=features, reset_real_features=False)
        with warnings.catch_warnings():  # KID keeps every feature vector: a few hundred here
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            self.kid = KernelInceptionDistance(feature=features, reset_real_features=False, subset_size=2)
        for start in range(0, len(real), batch_size):
            chunk = real[start : start + batch_size]
            self.fid.update(chunk, real=True)
            self.kid.update(chunk, real=True)

    @torch.no_grad()
    def score(
        self, images: torch.Tensor, references: torch.Tensor | None = None, pairs: torch.Tensor | None = None
    ) -> RealismScores:
        """Scores of ``images`` ``(M, 1, S, S)`` in [0, 1]; LPIPS against ``references[pairs[m]]``
        (both at the images' size) when given and an LPIPS network is set."""
        self.fid.reset()
        self.kid.reset()
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            self.fid.update(chunk, real=False)
            self.kid.update(chunk, real=False)
        self.kid.subset_size = min(50, self.real_count, len(images))
        torch.manual_seed(self.seed)
        kid, kid_std = self.kid.compute()
        lpips = None
        if self.lpips is not None and references is not None and pairs is not None:
            distances = [
                self.lpips(images[s : s + 16] * 2 - 1, references[pairs[s : s + 16]] * 2 - 1)
                for s in range(0, len(images), 16)
            ]
            lpips = float(torch.cat(distances).mean())
        return RealismScores(float(self.fid.compute()), float(kid), float(kid_std), lpips, len(images), self.real_count)


def prepared_volume(path: Path) -> CTVolume:
    """The CT grid stored in a prepared dataset file (HU, placed in LPS as prepared)."""
    with safe_open(str(path), framework="pt") as stored:
        array = stored.get_tensor("ct").float().numpy()
        affine = stored.get_tensor("ct_ijk_to_lps").double().numpy()
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    return CTVolume(array, spacing, affine[:3, 3].copy(), affine[:3, :3] / spacing)

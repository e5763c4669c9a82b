"""D_X, the radiograph discriminator of the ``projected`` preset: realism learned from real radiographs.

In eq. 16-17 the pose-aware D compares syntheses with DRRs, so nothing in the paper's loss ever
shows the networks a real radiograph except through E_sty's style code, and L_0 + L_sc are
satisfied by an X-ray style that changes little: "X-ray style" drifts toward DRR style. D_X
closes that gap. Its reals are real radiographs, cropped to the physical field of view of the
synthesized detector at the isocenter (``radiograph_field_mm``; see
:class:`ct2x.data.dataset.CTViewDataset`); its fakes are Î_X = G(f_c^{w+}, f_sty^X) (without
E_sty, G's only output). Its non-saturating logistic loss joins eq. 18 with weight
``lambda_xray_adv``, and D_X is trained like D (eq. 17: softplus loss, lazy R1 on its reals).

It judges patches, not whole images: a stack of strided 3x3 convolutions (receptive field about
47 pixels) gives a map of logits, at ``xray_d_scales`` image scales (full, half, ...), so that
texture, noise, edges and the tone of local anatomy are judged, while the layout of the image is
left to the projection path. It takes no pose: real radiographs come without one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ct2x.config import CT2XConfig
from ct2x.models.layers import EqualConv, check_shape, leaky


class PatchDiscriminator(nn.Module):
    """One scale: ``(B, 1, s, s)`` -> logits ``(B, 1, s/8, s/8)``; widths c, 2c, 4c, 4c."""

    def __init__(self, channels: int):
        super().__init__()
        c = channels
        self.convs = nn.ModuleList(
            [
                EqualConv(2, 1, c, 3, stride=2),
                EqualConv(2, c, 2 * c, 3, stride=2),
                EqualConv(2, 2 * c, 4 * c, 3, stride=2),
                EqualConv(2, 4 * c, 4 * c, 3),
            ]
        )
        self.out = EqualConv(2, 4 * c, 1, 3)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image
        for conv in self.convs:
            x = leaky(conv(x))
        return self.out(x)


class XRayDiscriminator(nn.Module):
    """D_X(x): patch logits of image x at several scales.

    Forward input: ``(B, 1, S, S)`` in [-1, 1], ``S = config.image_size``.
    Output: ``(B,)`` float32, each image's mean patch logit over every scale (higher = more real),
    so the usual losses and the R1 penalty of D apply unchanged.
    """

    def __init__(self, config: CT2XConfig):
        super().__init__()
        self.image_size = config.image_size
        self.scales = nn.ModuleList(PatchDiscriminator(config.xray_d_channels) for _ in range(config.xray_d_scales))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        check_shape("an image given to D_X", image, (None, 1, self.image_size, self.image_size))
        scores = []
        for level, scale in enumerate(self.scales):
            x = F.avg_pool2d(image, 2**level) if level else image
            scores.append(scale(x).flatten(1).mean(dim=1))
        return torch.stack(scores).mean(dim=0)

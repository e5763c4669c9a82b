"""The style decoupling encoder E_sty (paper sect. 3.3, eq. 2-3 and 5-6).

Three independent branches read a radiograph ``(B, 1, S, S)`` in [-1, 1]:

* the content branch E_sty^c -> content code f_c ``(B, content_channels[-1], S/8, S/8)``;
* the X-ray style branch E_sty^sX -> f_sty^X ``(B, num_style_layers, w_dim)`` in [-1, 1];
* the DRR style branch E_sty^sDRR -> f_sty^DRR, same shape.

The branches share no weights, so each loss reaches exactly the branches that appear in
its equation (for example, L_rec of eq. 8 never reaches E_sty^sX).
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from ct2x.config import CT2XConfig
from ct2x.models.layers import LEAKY_SLOPE, EqualConv, check_shape


class StyleBranch(nn.Module):
    """One domain style branch: seven Conv2D layers (sect. 4.1).

    A 7x7 convolution, five stride-2 4x4 convolutions (LeakyReLU 0.2 after each, no
    normalisation, so intensity statistics survive), adaptive average pooling to 1x1, and a
    final 1x1 convolution activated by tanh. The output is one ``w_dim`` vector per style
    layer of G (layers 9..num_ws).

    Input ``(B, 1, S, S)`` in [-1, 1]; output ``(B, num_style_layers, w_dim)`` in [-1, 1].
    """

    def __init__(self, config: CT2XConfig):
        super().__init__()
        c = config.style_channels
        layers: list[nn.Module] = [EqualConv(2, 1, c[0], 7), nn.LeakyReLU(LEAKY_SLOPE)]
        for a, b in pairwise(c):
            layers += [EqualConv(2, a, b, 4, stride=2), nn.LeakyReLU(LEAKY_SLOPE)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_ws, self.w_dim = config.num_style_layers, config.w_dim
        self.final = EqualConv(2, c[-1], self.num_ws * self.w_dim, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.final(self.pool(self.features(image))))
        return x.view(image.shape[0], self.num_ws, self.w_dim)


class ContentBranch(nn.Module):
    """The content branch E_sty^c: seven Conv2D layers keeping a spatial map.

    A 7x7 convolution, three stride-2 4x4 convolutions and three 3x3 convolutions, each
    but the last followed by InstanceNorm and LeakyReLU 0.2 (instance normalisation strips
    the per-image intensity statistics, i.e. the style, as in MUNIT's content encoder). The
    paper does not detail this branch; the design is ours.

    Input ``(B, 1, S, S)`` in [-1, 1]; output ``(B, content_channels[-1], S/8, S/8)``, unbounded.
    """

    def __init__(self, config: CT2XConfig):
        super().__init__()
        c = config.content_channels
        convs = [EqualConv(2, 1, c[0], 7)]
        convs += [EqualConv(2, a, b, 4, stride=2) for a, b in pairwise(c)]
        convs += [EqualConv(2, c[-1], c[-1], 3) for _ in range(3)]
        layers: list[nn.Module] = []
        for conv in convs[:-1]:
            layers += [conv, nn.InstanceNorm2d(conv.weight.shape[0]), nn.LeakyReLU(LEAKY_SLOPE)]
        self.layers = nn.Sequential(*layers, convs[-1])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image)


class StyleDecouplingEncoder(nn.Module):
    """E_sty: a content branch and two domain style branches (X-ray, DRR).

    Attributes:
        content_branch: E_sty^c (eq. 3, 6).
        xray_style_branch: E_sty^sX (eq. 2).
        drr_style_branch: E_sty^sDRR (eq. 5).
    """

    def __init__(self, config: CT2XConfig):
        super().__init__()
        self.image_size = config.image_size
        self.content_branch = ContentBranch(config)
        self.xray_style_branch = StyleBranch(config)
        self.drr_style_branch = StyleBranch(config)

    def content(self, image: torch.Tensor) -> torch.Tensor:
        """f_c = E_sty^c(I) (eq. 3, 6): ``(B, 1, S, S)`` -> ``(B, C, S/8, S/8)``."""
        self._check(image)
        return self.content_branch(image)

    def xray_style(self, image: torch.Tensor) -> torch.Tensor:
        """f_sty^X = E_sty^sX(I) (eq. 2): ``(B, 1, S, S)`` -> ``(B, num_style_layers, w_dim)`` in [-1, 1]."""
        self._check(image)
        return self.xray_style_branch(image)

    def drr_style(self, image: torch.Tensor) -> torch.Tensor:
        """f_sty^DRR = E_sty^sDRR(I) (eq. 5): ``(B, 1, S, S)`` -> ``(B, num_style_layers, w_dim)`` in [-1, 1]."""
        self._check(image)
        return self.drr_style_branch(image)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All three codes of one image: ``(f_c, f_sty^X, f_sty^DRR)``."""
        return self.content(image), self.xray_style(image), self.drr_style(image)

    def _check(self, image: torch.Tensor) -> None:
        check_shape("an image given to E_sty", image, (None, 1, self.image_size, self.image_size))

"""The CT encoder E_CT (paper sect. 3.2 and 4.1): CT volume -> CT content code f_c^CT."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from ct2x.config import CT2XConfig
from ct2x.models.layers import EqualLinear, check_shape, conv_block_3d


class CTEncoder(nn.Module):
    """E_CT: an input layer, three downsampling layers and a latent layer, then a transformation layer.

    Each of the five layers is two (Conv3D, BatchNorm, LeakyReLU 0.2) units (sect. 4.1);
    the downsampling layers halve the grid with a stride-2 first convolution. The
    transformation layer flattens the latent feature map and maps it to one ``w_dim``
    vector per content layer of G, a W+ code (the paper's "1D vector"; its split into
    ``num_content_layers`` vectors is ours, as in pSp-style encoders).

    Input: ``volume`` ``(B, 1, D, D, D)`` with ``D = config.volume_size``, HU clipped and
    scaled to [-1, 1] (:func:`ct2x.models.inputs.normalize_hu`).
    Output: f_c^CT ``(B, num_content_layers, w_dim)``, float32, unbounded.
    """

    def __init__(self, config: CT2XConfig):
        super().__init__()
        c = config.ct_channels
        self.volume_size = config.volume_size
        self.input_layer = conv_block_3d(1, c[0], stride=1)
        self.down = nn.Sequential(*(conv_block_3d(a, b, stride=2) for a, b in pairwise(c)))
        self.latent_layer = conv_block_3d(c[-1], config.ct_latent_channels, stride=1)
        flat = config.ct_latent_channels * (config.volume_size // 8) ** 3
        self.num_ws, self.w_dim = config.num_content_layers, config.w_dim
        self.transform = nn.Sequential(
            nn.Flatten(),
            EqualLinear(flat, config.w_dim, activation=True),
            EqualLinear(config.w_dim, self.num_ws * config.w_dim),
        )

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        check_shape("the CT volume given to E_CT", volume, (None, 1) + (self.volume_size,) * 3)
        x = self.latent_layer(self.down(self.input_layer(volume)))
        return self.transform(x).view(volume.shape[0], self.num_ws, self.w_dim)

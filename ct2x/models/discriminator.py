"""The pose-conditioned discriminator D (paper sect. 3.6, eq. 16-17).

A StyleGAN2 residual discriminator whose score is conditioned on the pose p the way EG3D's
is: a mapping MLP embeds p into ``cmap`` and the image features are projected onto it
(a projection discriminator), ``D(x, p) = <phi(x), cmap(p)> / sqrt(d_cmap_dim)``. Real
samples are DRRs at pose p, fakes the syntheses at p. Minibatch-std is left out so that
each sample's score depends on that sample alone. Downsampling is 2x2 average pooling. Every
LeakyReLU carries StyleGAN2's sqrt(2) gain (:func:`ct2x.models.layers.leaky`), as in the rest of
the networks, so that the equalised learning rate sees unit-variance activations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ct2x.config import CT2XConfig
from ct2x.geometry import POSE_SIZE
from ct2x.models.generator import channels_at
from ct2x.models.layers import EqualConv, EqualLinear, check_shape, leaky, mlp


class DiscriminatorBlock(nn.Module):
    """Residual block halving the resolution: ``(B, in, r, r) -> (B, out, r/2, r/2)``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualConv(2, in_channels, in_channels, 3)
        self.conv1 = EqualConv(2, in_channels, out_channels, 3)
        self.skip = EqualConv(2, in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(F.avg_pool2d(x, 2))
        x = leaky(self.conv0(x))
        x = F.avg_pool2d(leaky(self.conv1(x)), 2)
        return (x + skip) / math.sqrt(2.0)


class Discriminator(nn.Module):
    """D(x, p): a realism score of image x at pose p.

    Forward inputs:
        image: ``(B, 1, S, S)`` in [-1, 1], ``S = config.image_size``.
        pose: ``(B, 25)`` float32 pose p (:attr:`ct2x.geometry.CArm.pose`).

    Output: ``(B,)`` float32 logits (higher = more real).
    """

    def __init__(self, config: CT2XConfig):
        super().__init__()
        self.image_size = config.image_size

        def width(resolution: int) -> int:
            return channels_at(resolution, config.d_channel_base, config.d_channel_max)

        self.from_image = EqualConv(2, 1, width(config.image_size), 1)
        blocks = []
        res = config.image_size
        while res > 4:
            blocks.append(DiscriminatorBlock(width(res), width(res // 2)))
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        c4 = width(4)
        self.final_conv = EqualConv(2, c4, c4, 3)
        self.final_fc = EqualLinear(c4 * 16, c4, activation=True)
        self.out = EqualLinear(c4, config.d_cmap_dim)
        self.pose_mapping = mlp([POSE_SIZE, config.d_cmap_dim, config.d_cmap_dim])
        self.cmap_scale = 1.0 / math.sqrt(config.d_cmap_dim)

    def forward(self, image: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        check_shape("an image given to D", image, (None, 1, self.image_size, self.image_size))
        check_shape("the pose given to D", pose, (image.shape[0], POSE_SIZE))
        x = leaky(self.from_image(image))
        x = leaky(self.final_conv(self.blocks(x)))
        features = self.out(self.final_fc(x.flatten(1)))
        return (features * self.pose_mapping(pose)).sum(dim=1) * self.cmap_scale

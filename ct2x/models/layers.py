"""Building blocks shared by the CT2X-GAN networks.

Weights use StyleGAN's *equalised learning rate*: they are stored as N(0, 1) samples and
scaled by ``1 / sqrt(fan_in)`` at every call, so that Adam at the paper's learning rate
(0.0025, a StyleGAN2 value) moves every layer at the same relative speed.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from ct2x.errors import CT2XError

#: LeakyReLU slope used everywhere (sect. 4.1: "LeakyReLU with a slope of 0.2").
LEAKY_SLOPE = 0.2


def leaky(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU(0.2) scaled by sqrt(2), which keeps the activations' variance (StyleGAN2's gain)."""
    return F.leaky_relu(x, LEAKY_SLOPE) * math.sqrt(2.0)


class EqualLinear(nn.Module):
    """Fully connected layer with equalised learning rate: ``(..., in) -> (..., out)``.

    Args:
        in_features / out_features: sizes of the last axis.
        bias_init: initial value of every bias entry.
        activation: apply LeakyReLU(0.2) after the layer (scaled by sqrt(2) to keep the variance).
    """

    def __init__(self, in_features: int, out_features: int, *, bias_init: float = 0.0, activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.scale = 1.0 / math.sqrt(in_features)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.scale, self.bias)
        return leaky(x) if self.activation else x


class EqualConv(nn.Module):
    """2D or 3D convolution with equalised learning rate and 'same'-style padding.

    Input ``(B, in, *spatial)``; output ``(B, out, *spatial / stride)`` (``spatial`` must be
    divisible by ``stride``).
    """

    def __init__(
        self, dims: int, in_channels: int, out_channels: int, kernel: int, *, stride: int = 1, bias: bool = True
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *(kernel,) * dims))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1.0 / math.sqrt(in_channels * kernel**dims)
        self.stride = stride
        self.padding = (kernel - 1) // 2 if stride == 1 else (kernel - stride + 1) // 2
        self.conv = F.conv2d if dims == 2 else F.conv3d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class AdaIN(nn.Module):
    """Adaptive instance normalisation (Huang & Belongie 2017, the paper's ref. [17]).

    ``AdaIN(x, w) = (1 + gamma(w)) * (x - mean(x)) / std(x) + beta(w)``, with statistics per
    sample and channel over the spatial axes and ``(gamma, beta)`` an affine map of the
    latent vector ``w``.

    Args:
        channels: C of the feature map ``x`` of shape ``(B, C, H, W)``.
        w_dim: size of the latent vector ``w`` of shape ``(B, w_dim)``.
    """

    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        self.affine = EqualLinear(w_dim, 2 * channels)
        self.norm = nn.InstanceNorm2d(channels, affine=False, eps=1e-5)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.affine(w)[:, :, None, None].chunk(2, dim=1)
        return self.norm(x) * (1.0 + gamma) + beta


def conv_block_3d(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Two ``(Conv3D, BatchNorm, LeakyReLU 0.2)`` units, the first with ``stride`` (sect. 4.1's E_CT layer)."""
    return nn.Sequential(
        EqualConv(3, in_channels, out_channels, 3, stride=stride, bias=False),
        nn.BatchNorm3d(out_channels),
        nn.LeakyReLU(LEAKY_SLOPE),
        EqualConv(3, out_channels, out_channels, 3, bias=False),
        nn.BatchNorm3d(out_channels),
        nn.LeakyReLU(LEAKY_SLOPE),
    )


def mlp(sizes: list[int]) -> nn.Sequential:
    """Equalised-lr MLP ``sizes[0] -> ... -> sizes[-1]``, LeakyReLU(0.2) between layers, linear output."""
    layers = [EqualLinear(a, b, activation=i < len(sizes) - 2) for i, (a, b) in enumerate(pairwise(sizes))]
    return nn.Sequential(*layers)


def check_shape(what: str, tensor: torch.Tensor, expected: tuple[int | None, ...]) -> None:
    """Raise :class:`CT2XError` unless ``tensor`` has ``expected`` shape (``None`` = any size, e.g. the batch)."""
    shape = tuple(tensor.shape)
    if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, shape, strict=False)):
        wanted = ", ".join("B" if e is None else str(e) for e in expected)
        raise CT2XError(f"{what} must have shape ({wanted}), got {shape}")

"""The generator G (paper eq. 4 and 7, sect. 4.1): content code + style code -> image.

A StyleGAN-like synthesis network built from AdaIN layers (the paper's ref. [17]). At an
output of ``S x S`` it has ``num_ws = 2 log2(S) - 2`` synthesis layers (14 at 256^2, 12 at
128^2), numbered by increasing resolution like StyleGAN2's W+ slots:

* layer 1 at 4^2 on a learned constant; then two layers per resolution 8^2 .. S^2, the
  first of each pair upsampling by 2 (bilinear) before its 3x3 convolution;
* the last layer maps the S^2 features to the one-channel image (1x1 convolution after
  AdaIN), like StyleGAN2's final toRGB, which also consumes a W+ vector.

Layers 1..num_content_layers (1-8) take the content code f_c^{w+}, the rest (9-14 at 256^2)
the style code f_sty. With the projection path (``projection_inputs``, the ``projected``
preset; :mod:`ct2x.models.projection`) every layer also adds a 1x1 projection of the projection
features at its resolution to its convolution's output (at 4^2, to the learned constant).
Plain PyTorch: no noise inputs (the synthesis is deterministic), no
custom CUDA ops, no FIR filters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ct2x.config import CT2XConfig
from ct2x.errors import CT2XError
from ct2x.models.layers import LEAKY_SLOPE, AdaIN, EqualConv, check_shape


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    """StyleGAN2's width rule: ``min(channel_base // resolution, channel_max)`` (at least 1)."""
    return max(1, min(channel_base // resolution, channel_max))


class SynthesisLayer(nn.Module):
    """``[upsample x2] -> Conv3x3 [+ Conv1x1(projection features)] -> LeakyReLU(0.2) -> AdaIN(w)``:
    ``(B, in, r, r) -> (B, out, r', r')``; ``skip_channels`` > 0 adds the projection features."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, *, upsample: bool, skip_channels: int = 0):
        super().__init__()
        self.upsample = upsample
        self.conv = EqualConv(2, in_channels, out_channels, 3)
        self.skip = EqualConv(2, skip_channels, out_channels, 1, bias=False) if skip_channels else None
        self.adain = AdaIN(out_channels, w_dim)

    def forward(self, x: torch.Tensor, w: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = self.conv(x)
        if self.skip is not None:
            x = x + self.skip(features)
        return self.adain(F.leaky_relu(x, LEAKY_SLOPE), w)


class ToImage(nn.Module):
    """The last synthesis layer: ``AdaIN(w) -> Conv1x1`` to one channel, ``(B, C, S, S) -> (B, 1, S, S)``."""

    def __init__(self, in_channels: int, w_dim: int):
        super().__init__()
        self.adain = AdaIN(in_channels, w_dim)
        self.conv = EqualConv(2, in_channels, 1, 1)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(self.adain(x, w))


class Generator(nn.Module):
    """G(f_c^{w+}, f_sty) -> image (eq. 4: Î_X with the X-ray style; eq. 7: Î_DRR with the DRR style).

    Forward inputs:
        content: f_c^{w+} ``(B, num_content_layers, w_dim)`` for layers 1..num_content_layers.
        style: f_sty ``(B, num_style_layers, w_dim)`` for the remaining layers.
        features: with ``projection_inputs``, the projection features ``{r: (B, C_r, r, r)}``
            (:class:`ct2x.models.projection.ProjectionEncoder`); otherwise ``None``.

    Output: ``(B, 1, S, S)`` float32 with ``S = config.image_size``, trained toward [-1, 1]
    (not clamped).
    """

    def __init__(self, config: CT2XConfig):
        super().__init__()
        self.image_size, self.w_dim = config.image_size, config.w_dim
        self.num_content, self.num_style = config.num_content_layers, config.num_style_layers

        def width(resolution: int) -> int:
            return channels_at(resolution, config.g_channel_base, config.g_channel_max)

        def skip(resolution: int) -> int:
            return width(resolution) if config.projection_inputs else 0

        self.projected = config.projection_inputs
        self.const = nn.Parameter(torch.randn(1, width(4), 4, 4))
        layers: list[nn.Module] = [
            SynthesisLayer(width(4), width(4), config.w_dim, upsample=False, skip_channels=skip(4))
        ]
        resolutions = [4]
        for log_res in range(3, int(math.log2(config.image_size)) + 1):
            res = 2**log_res
            layers += [
                SynthesisLayer(width(res // 2), width(res), config.w_dim, upsample=True, skip_channels=skip(res)),
                SynthesisLayer(width(res), width(res), config.w_dim, upsample=False, skip_channels=skip(res)),
            ]
            resolutions += [res, res]
        layers.append(ToImage(width(config.image_size), config.w_dim))
        resolutions.append(config.image_size)
        self.layers = nn.ModuleList(layers)
        #: Output resolution of each synthesis layer, layer 1 first.
        self.layer_resolutions: list[int] = resolutions

    @property
    def num_ws(self) -> int:
        """Number of synthesis layers (= W+ vectors consumed)."""
        return len(self.layers)

    def forward(
        self, content: torch.Tensor, style: torch.Tensor, features: dict[int, torch.Tensor] | None = None
    ) -> torch.Tensor:
        check_shape("the content code given to G", content, (None, self.num_content, self.w_dim))
        check_shape("the style code given to G", style, (content.shape[0], self.num_style, self.w_dim))
        if self.projected != (features is not None):
            raise CT2XError(
                "this generator takes projection images of the CT (the 'projected' preset)"
                if self.projected
                else "this generator takes no projection images (it is not of the 'projected' preset)"
            )
        ws = torch.cat([content, style], dim=1)
        x = self.const.expand(content.shape[0], -1, -1, -1)
        for i, layer in enumerate(self.layers):
            if isinstance(layer, SynthesisLayer):
                x = layer(x, ws[:, i], features[self.layer_resolutions[i]] if features is not None else None)
            else:
                x = layer(x, ws[:, i])
        return x

"""The projection path of the ``projected`` preset: G sees the CT at the exact geometry of the view.

Why. In the paper's G (eq. 4, 7) the CT reaches the image only through vectors: E_CT's code
and the PAM's attention over a pooled MIP become AdaIN parameters of a generator that starts
from a learned 4 x 4 constant. Nothing in it is laid out on the detector, so where a rib or a
vertebra falls in the image must be re-learned, from a few CTs, for every pose and distance; with
little data G regresses to the mean image and draws the same blob for every CT. Yet the
physics of the image is known: the DRR is a per-pixel function of the area densities of the
materials along each ray (``ct2x.drr.render_drr``). So this path hands G, as images on the
target detector, the quantities the physics DRR is made of:

* the per-material area densities (air, soft tissue, bone; g/cm^2, ``ct2x.drr.area_densities``)
  of the CT along the rays of the view, scaled by ``projection_scale_g_cm2``, and
* the MIP of the CT at the view (eq. 15's MIP, here at the detector's resolution), scaled like
  the CT volume (:func:`ct2x.models.inputs.normalize_hu`).

What each part does, in the paper's terms.

* :class:`ProjectionEncoder` turns these four channels into a feature pyramid, one map per
  synthesis resolution of G (S^2 down to 4^2, G's widths), by 3x3 convolutions and 2x average
  pooling.
* Every synthesis layer of G (:class:`ct2x.models.generator.Generator`) adds a 1x1 projection
  of the pyramid level at its resolution to its convolution's output, before its AdaIN; at 4^2
  the level is added to G's learned constant. So the anatomy is in place at every scale, down
  to single pixels, and survives to the image.
* The AdaIN split is the paper's: f_c^{w+} (E_CT + PAM, eq. 13-15) drives layers 1 to
  ``num_content_layers`` and decides how the projected anatomy is rendered coarse-to-fine
  (the PAM keeps its role of reading the pose and the MIP); f_sty (E_sty, eq. 2 and 5) drives
  the rest, the fine contrast, texture and tone of the X-ray or DRR domain.

Because the projections are made at the view's own C-arm geometry (pose, source distance,
detector), magnification and the pose are exact by construction rather than learned.

With ``physics_anchor`` (the ``projected`` preset) G's output is moreover a residual on the
style-toned physics DRR computed from the same area densities (:mod:`ct2x.models.physics_anchor`):
the projection path then shapes what G adds to the physics, not the anatomy itself.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ct2x.config import CT2XConfig
from ct2x.models.layers import EqualConv, check_shape, leaky

#: Channels of the projection images: three area densities and the MIP.
PROJECTION_INPUTS = 4


class ProjectionEncoder(nn.Module):
    """Projection images ``(B, 4, S, S)`` -> ``{r: (B, C_r, r, r)}`` for r = S, S/2, ..., 4.

    ``C_r`` is G's width at resolution r (StyleGAN2's rule with ``g_channel_base`` /
    ``g_channel_max``). Inputs: :func:`ct2x.models.inputs.projection_input`.
    """

    def __init__(self, config: CT2XConfig):
        super().__init__()
        from ct2x.models.generator import channels_at

        self.image_size = config.image_size

        def width(resolution: int) -> int:
            return channels_at(resolution, config.g_channel_base, config.g_channel_max)

        self.resolutions = [2**k for k in range(int(math.log2(config.image_size)), 1, -1)]
        self.stem = EqualConv(2, PROJECTION_INPUTS, width(config.image_size), 3)
        self.refine = EqualConv(2, width(config.image_size), width(config.image_size), 3)
        self.down = nn.ModuleList(EqualConv(2, width(2 * r), width(r), 3) for r in self.resolutions[1:])

    def forward(self, projections: torch.Tensor) -> dict[int, torch.Tensor]:
        check_shape(
            "the projection images given to G", projections, (None, PROJECTION_INPUTS, self.image_size, self.image_size)
        )
        x = leaky(self.refine(leaky(self.stem(projections))))
        features = {self.image_size: x}
        for resolution, conv in zip(self.resolutions[1:], self.down, strict=True):
            x = leaky(conv(F.avg_pool2d(x, 2)))
            features[resolution] = x
        return features

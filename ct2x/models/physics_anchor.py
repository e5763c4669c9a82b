"""The physics anchor of the ``projected`` preset: G draws a correction to the physics image.

Why. The DRR domain is known physics: the DRR of a view is a per-pixel function of the
area densities of the materials along its rays (``ct2x.drr.drr_from_area``), which the
projection path already hands G. A generator that must re-learn that function from ten CTs
learns it approximately (27 dB on held-out CTs after 90 CPU minutes) and, pushed by the
radiograph discriminator D_X, trades the CT's edges for film texture. So with
``physics_anchor`` G's output is a residual on top of the physics:

    Î = T(B; f_sty) + G(f_c^{w+}, f_sty, P)

* B, the **base**: the noise-free polyenergetic DRR of the view computed from the projection
  images' area densities with the dataset's spectrum (``physics_spectrum``), min-max scaled to
  [-1, 1] like the training target I_DRR. Geometry (pose, magnification, distances) is exact
  by construction, from the same rays the physics DRR uses.
* T, the **tone curve** (:class:`ToneCurve`): a monotone piecewise-linear map of B's
  intensities whose slopes come from the style code f_sty (eq. 2, 5). It carries the global
  part of a style, the film's grey-level response, without moving an edge. It starts as the
  identity.
* G (paper eq. 4, 7, with the projection path of :mod:`ct2x.models.projection`) adds what
  the physics lacks: in the X-ray style, the local contrast, blur and texture of a real
  film; in the DRR style, the detector noise of the target (about nothing).

What each learns therefore differs from the paper: the content code and the PAM shape G's
residual, not the anatomy itself, and eq. 7's reconstruction mostly checks that G adds
nothing in the DRR style. What training must still show is the X-ray style: realism
(D_X, eq. 16-17) that follows the reference (the histogram term) and keeps the anatomy
(the edge term), see :mod:`ct2x.losses`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ct2x.config import CT2XConfig
from ct2x.drr import drr_from_area
from ct2x.imaging.filters import fourier_filter
from ct2x.models.inputs import projection_densities, scale_drr

#: Pieces of the tone curve on [-1, 1].
TONE_PIECES = 8


def physics_base(projections: torch.Tensor, config: CT2XConfig) -> torch.Tensor:
    """B: projection inputs ``(B, 4, S, S)`` (:func:`ct2x.models.inputs.projection_input`) -> the
    noise-free DRR of each view ``(B, 1, S, S)`` float32 (:func:`area_base` of the area densities of
    :func:`ct2x.models.inputs.projection_densities`)."""
    return area_base(projection_densities(projections, config), config)


def area_base(area: torch.Tensor, config: CT2XConfig) -> torch.Tensor:
    """B from area densities ``(B, 3, H, W)`` g/cm^2 at any detector size: the noise-free DRR of each view
    ``(B, 1, H, W)`` float32 (``physics_spectrum``), min-max scaled to [-1, 1]
    (:func:`ct2x.models.inputs.scale_drr`, the scale of I_DRR)."""
    return scale_drr(drr_from_area(area.float(), spectrum=config.physics_spectrum))[:, None]


def detail_of(residual: torch.Tensor, period_px: float) -> torch.Tensor:
    """The detail of G's residual ``(B, 1, S, S)``: every spatial period of ``period_px`` pixels or longer removed,
    those of half that or shorter kept whole, a raised cosine of the radial frequency in between (in the Fourier
    domain, edges replicated by one period so that nothing wraps round). A Gaussian high-pass would leak: a wide
    blob survives it in proportion to its amplitude. An ideal high-pass at ``period_px`` does not leak, but G,
    denied the coarse content it wants, put its energy at the nearest period let through, the cutoff itself, and
    drew stripes of that period as training went on (docs/training.md); the ramp gives it nothing there."""
    cutoff = 1.0 / period_px  # cycles per pixel

    def ramp(frequency: torch.Tensor) -> torch.Tensor:  # 0 up to the cutoff, 1 from an octave above
        rise = ((frequency - cutoff) / cutoff).clamp(0.0, 1.0)
        return 0.5 - 0.5 * torch.cos(math.pi * rise)

    return fourier_filter(residual, (1.0, 1.0), ramp, math.ceil(period_px))


class ToneCurve(nn.Module):
    """T(B; f_sty): ``(B, 1, S, S)`` in [-1, 1] and a style code ``(B, num_style_layers, w_dim)`` ->
    ``(B, 1, S, S)``, monotone non-decreasing in B, the identity at initialisation.

    The curve has :data:`TONE_PIECES` pieces of equal width on [-1, 1]; the slope of each is
    the softplus of an affine map of the style code's mean over its layers.
    """

    def __init__(self, config: CT2XConfig):
        super().__init__()
        self.slopes = nn.Linear(config.w_dim, TONE_PIECES)
        nn.init.zeros_(self.slopes.weight)
        nn.init.constant_(self.slopes.bias, math.log(math.expm1(1.0)))  # softplus = 1: the identity
        self.register_buffer("starts", torch.arange(TONE_PIECES, dtype=torch.float32).view(1, -1, 1, 1), False)

    def forward(self, base: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        slopes = F.softplus(self.slopes(style.mean(dim=1)))[:, :, None, None]  # (B, K, 1, 1)
        position = (base + 1.0) * (TONE_PIECES / 2.0)  # in [0, K]
        covered = (position - self.starts).clamp(0.0, 1.0)  # (B, K, S, S): how much of each piece lies below
        return (covered * slopes).sum(dim=1, keepdim=True) * (2.0 / TONE_PIECES) - 1.0

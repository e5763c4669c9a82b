"""CT2X-GAN as one module: the forward pass of the paper's Fig. 2.

    f_c^CT  = E_CT(V)                                  (sect. 3.2)
    f_c^{w+} = PAM(f_c^CT, p, MIP)                     (eq. 13-15)
    f_sty^X  = E_sty^sX(I_X),   f_sty^DRR = E_sty^sDRR(I_DRR)   (eq. 2, 5)
    Î_X     = G(f_c^{w+}, f_sty^X)                     (eq. 4)
    Î_DRR   = G(f_c^{w+}, f_sty^DRR)                   (eq. 7)

plus the codes the losses of eq. 10-12 compare. The discriminator D is held here too, so one
state dict carries the whole model, but :meth:`CT2XGAN.forward` does not call it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ct2x.config import CT2XConfig
from ct2x.errors import CT2XError
from ct2x.models.ct_encoder import CTEncoder
from ct2x.models.discriminator import Discriminator
from ct2x.models.generator import Generator
from ct2x.models.pose_attention import PoseAttentionModule, PoseQuery
from ct2x.models.style_encoder import StyleDecouplingEncoder


def normalize_hu(hu: torch.Tensor, config: CT2XConfig) -> torch.Tensor:
    """Clip Hounsfield units to ``[hu_min, hu_max]`` and map them linearly to [-1, 1].

    Used for the CT volume fed to E_CT and for a MIP given in HU.
    """
    lo, hi = config.hu_min, config.hu_max
    return (hu.clamp(lo, hi) - lo) * (2.0 / (hi - lo)) - 1.0


@dataclass
class CT2XOutputs:
    """Everything one forward pass of Fig. 2 produces (B = batch, S = image size).

    Codes are ``(B, num_content_layers, w_dim)`` (content) or ``(B, num_style_layers, w_dim)``
    (style, in [-1, 1]); E_sty content maps are ``(B, C, S/8, S/8)``; images ``(B, 1, S, S)``.
    Fields are ``None`` when the configuration skips them: without E_sty there is no X-ray
    synthesis and no style or consistency code; without L_consis no consistency code.
    """

    f_c_ct: torch.Tensor  #: E_CT(V)
    f_c_wplus: torch.Tensor  #: the modified content code (PAM, or the pose query without PAM)
    f_sty_drr: torch.Tensor  #: f_sty^DRR = E_sty^sDRR(I_DRR) (eq. 5), or the learned constant without E_sty
    drr_hat: torch.Tensor  #: Î_DRR = G(f_c^{w+}, f_sty^DRR) (eq. 7)
    f_sty_x: torch.Tensor | None = None  #: f_sty^X = E_sty^sX(I_X) (eq. 2)
    xray_hat: torch.Tensor | None = None  #: Î_X = G(f_c^{w+}, f_sty^X) (eq. 4)
    f_sty_x_of_drr: torch.Tensor | None = None  #: E_sty^sX(I_DRR), first term of L_0 (eq. 12)
    f_sty_drr_of_xray: torch.Tensor | None = None  #: E_sty^sDRR(I_X), second term of L_0 (eq. 12)
    f_c_xray_hat: torch.Tensor | None = None  #: E_sty^c(Î_X) (eq. 10)
    f_c_drr_hat: torch.Tensor | None = None  #: E_sty^c(Î_DRR) (eq. 10)
    f_sty_x_hat: torch.Tensor | None = None  #: E_sty^sX(Î_X) (eq. 11)
    f_sty_drr_hat: torch.Tensor | None = None  #: E_sty^sDRR(Î_DRR) (eq. 11)

    @property
    def fake(self) -> torch.Tensor:
        """What D judges as fake in eq. 16-17: Î_X, or Î_DRR without E_sty (G's only output then)."""
        return self.xray_hat if self.xray_hat is not None else self.drr_hat


class CT2XGAN(nn.Module):
    """E_CT, E_sty, the PAM, G and D of CT2X-GAN, built from one :class:`CT2XConfig`.

    Attributes:
        ct_encoder: E_CT (:class:`CTEncoder`).
        pose_module: the PAM (:class:`PoseAttentionModule`), or, with ``use_pam=False``, only
            its pose-conditioned query (:class:`PoseQuery`, eq. 14).
        style_encoder: E_sty (:class:`StyleDecouplingEncoder`), ``None`` with
            ``use_style_encoder=False``.
        constant_style: with ``use_style_encoder=False``, the learned style code
            ``(1, num_style_layers, w_dim)`` that replaces f_sty^DRR (G then synthesises DRRs
            only); otherwise ``None``.
        generator: G (:class:`Generator`).
        discriminator: D (:class:`Discriminator`).
    """

    def __init__(self, config: CT2XConfig):
        super().__init__()
        self.config = config
        self.ct_encoder = CTEncoder(config)
        self.pose_module: nn.Module = PoseAttentionModule(config) if config.use_pam else PoseQuery(config)
        self.style_encoder = StyleDecouplingEncoder(config) if config.use_style_encoder else None
        self.constant_style = (
            None if config.use_style_encoder else nn.Parameter(torch.zeros(1, config.num_style_layers, config.w_dim))
        )
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)

    def generator_parameters(self) -> list[nn.Parameter]:
        """Parameters trained by L_total^gan (eq. 18): everything but D."""
        skip = {id(p) for p in self.discriminator.parameters()}
        return [p for p in self.parameters() if id(p) not in skip]

    def content_code(self, volume: torch.Tensor, pose: torch.Tensor, mip: torch.Tensor) -> torch.Tensor:
        """f_c^{w+}: ``(B,1,D,D,D)``, ``(B,25)``, ``(B,1,h,w)`` -> ``(B, num_content_layers, w_dim)``."""
        return self._content(self.ct_encoder(volume), pose, mip)

    def _content(self, f_c_ct: torch.Tensor, pose: torch.Tensor, mip: torch.Tensor) -> torch.Tensor:
        if self.config.use_pam:
            return self.pose_module(f_c_ct, pose, mip)
        return self.pose_module(f_c_ct, pose)

    def drr_style_code(self, drr: torch.Tensor) -> torch.Tensor:
        """f_sty^DRR = E_sty^sDRR(I_DRR) (eq. 5) for DRRs ``(B, 1, S, S)``, or, without E_sty
        (ablation), the learned constant style code; ``(B, num_style_layers, w_dim)``."""
        if self.style_encoder is None:
            return self.constant_style.expand(drr.shape[0], -1, -1)
        return self.style_encoder.drr_style(drr)

    def synthesize(
        self, volume: torch.Tensor, pose: torch.Tensor, mip: torch.Tensor, style_image: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Eq. 1 / 4: the X-ray at pose p, styled by the radiograph ``style_image`` ``(B, 1, S, S)``.

        Without E_sty (ablation) ``style_image`` must be ``None`` and the result is G's DRR-like
        synthesis. Returns ``(B, 1, S, S)``.
        """
        content = self.content_code(volume, pose, mip)
        if self.style_encoder is None:
            if style_image is not None:
                raise CT2XError("this model was trained without the style encoder: it takes no style image")
            return self.generator(content, self.constant_style.expand(content.shape[0], -1, -1))
        if style_image is None:
            raise CT2XError("give a style reference X-ray image to synthesise an X-ray")
        return self.generator(content, self.style_encoder.xray_style(style_image))

    def forward(
        self,
        volume: torch.Tensor,
        pose: torch.Tensor,
        mip: torch.Tensor,
        drr: torch.Tensor,
        xray: torch.Tensor | None = None,
    ) -> CT2XOutputs:
        """The training forward pass of Fig. 2.

        Args:
            volume: V ``(B, 1, D, D, D)``, ``D = volume_size``, scaled by :func:`normalize_hu`.
            pose: p ``(B, 25)`` float32 (:attr:`ct2x.geometry.CArm.pose`).
            mip: the MIP of V at p ``(B, 1, h, w)``, scaled like V (used by the PAM only).
            drr: I_DRR, the ground-truth DRR of V at p, ``(B, 1, S, S)`` in [-1, 1].
            xray: I_X, an unpaired real radiograph ``(B, 1, S, S)`` in [-1, 1]; required with
                E_sty, ignored without it.

        Returns:
            :class:`CT2XOutputs`.
        """
        f_c_ct = self.ct_encoder(volume)
        f_c_wplus = self._content(f_c_ct, pose, mip)
        f_sty_drr = self.drr_style_code(drr)
        if self.style_encoder is None:
            return CT2XOutputs(f_c_ct, f_c_wplus, f_sty_drr, self.generator(f_c_wplus, f_sty_drr))
        if xray is None:
            raise CT2XError("CT2X-GAN with the style encoder needs a real X-ray image for every sample")
        enc = self.style_encoder
        f_sty_x = enc.xray_style(xray)
        out = CT2XOutputs(
            f_c_ct=f_c_ct,
            f_c_wplus=f_c_wplus,
            f_sty_drr=f_sty_drr,
            drr_hat=self.generator(f_c_wplus, f_sty_drr),
            f_sty_x=f_sty_x,
            xray_hat=self.generator(f_c_wplus, f_sty_x),
            f_sty_x_of_drr=enc.xray_style(drr),
            f_sty_drr_of_xray=enc.drr_style(xray),
        )
        if self.config.use_consistency:
            out.f_c_xray_hat = enc.content(out.xray_hat)
            out.f_c_drr_hat = enc.content(out.drr_hat)
            out.f_sty_x_hat = enc.xray_style(out.xray_hat)
            out.f_sty_drr_hat = enc.drr_style(out.drr_hat)
        return out

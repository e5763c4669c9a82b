"""CT2X-GAN as one module: the forward pass of the paper's Fig. 2.

    f_c^CT  = E_CT(V)                                  (sect. 3.2)
    f_c^{w+} = PAM(f_c^CT, p, MIP)                     (eq. 13-15)
    f_sty^X  = E_sty^sX(I_X),   f_sty^DRR = E_sty^sDRR(I_DRR)   (eq. 2, 5)
    Î_X     = G(f_c^{w+}, f_sty^X)                     (eq. 4)
    Î_DRR   = G(f_c^{w+}, f_sty^DRR)                   (eq. 7)

plus the codes the losses of eq. 10-12 compare. With the projection path (``projected``
preset, :mod:`ct2x.models.projection`) G also takes the projection features P(view) of the CT's
area densities and MIP at the view: Î = G(f_c^{w+}, f_sty, P); with the physics anchor
(:mod:`ct2x.models.physics_anchor`) the image is a residual on the toned physics DRR B of the
view: Î = T(B; f_sty) + G(f_c^{w+}, f_sty, P); with the chain anchor the X-ray path's base is the
imaging chain's radiograph C of the view in the reference's look (:func:`ct2x.imaging.styled`):
Î_X = T(C; f_sty^X) + G(f_c^{w+}, f_sty^X, P). The discriminators (D, and D_X
of :mod:`ct2x.models.xray_discriminator` when configured) are held here too, so one state dict
carries the whole model, but :meth:`CT2XGAN.forward` does not call them.

Inference has one path: :meth:`CT2XGAN.view_content` (what the CT gives G at a view) then
:meth:`CT2XGAN.render` (G with a style code); synthesis, evaluation, the training previews and
the Slicer module all go through these two.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ct2x.config import CT2XConfig
from ct2x.errors import CT2XError
from ct2x.models.ct_encoder import CTEncoder
from ct2x.models.discriminator import Discriminator
from ct2x.models.generator import Generator
from ct2x.models.physics_anchor import ToneCurve, detail_of, physics_base
from ct2x.models.pose_attention import PoseAttentionModule, PoseQuery
from ct2x.models.projection import ProjectionEncoder
from ct2x.models.style_encoder import StyleDecouplingEncoder
from ct2x.models.xray_discriminator import XRayDiscriminator

#: Names of the discriminators among a model's children: trained, checkpointed, never in a model file.
DISCRIMINATORS = ("discriminator", "xray_discriminator")


def is_discriminator_key(name: str) -> bool:
    """Whether a state-dict key belongs to a discriminator (D or D_X)."""
    return name.split(".", 1)[0] in DISCRIMINATORS


@dataclass
class ViewContent:
    """What the CT gives G at a batch of views: f_c^{w+} ``(B, num_content_layers, w_dim)``,
    with the projection path the projection features ``{r: (B, C_r, r, r)}``, and with the
    physics anchor the base image B ``(B, 1, S, S)`` (:func:`ct2x.models.physics_anchor.physics_base`);
    ``None`` where the configuration has no such part."""

    code: torch.Tensor
    features: dict[int, torch.Tensor] | None = None
    base: torch.Tensor | None = None


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
    base: torch.Tensor | None = None  #: the physics anchor's base image B (``physics_anchor``)
    xray_base: torch.Tensor | None = None  #: the X-ray path's base: B, or the chain's image (``chain_anchor``)

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
        projection_encoder: the projection path (:class:`ProjectionEncoder`), ``None``
            without ``projection_inputs``.
        generator: G (:class:`Generator`).
        discriminator: D (:class:`Discriminator`).
        xray_discriminator: D_X (:class:`XRayDiscriminator`), ``None`` without
            ``use_xray_discriminator``.
        tone_curve: the physics anchor's tone curve (:class:`ToneCurve`), ``None`` without
            ``physics_anchor``.
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
        self.projection_encoder = ProjectionEncoder(config) if config.projection_inputs else None
        self.generator = Generator(config)
        self.tone_curve = ToneCurve(config) if config.physics_anchor else None
        self.discriminator = Discriminator(config)
        self.xray_discriminator = XRayDiscriminator(config) if config.use_xray_discriminator else None

    def generator_parameters(self) -> list[nn.Parameter]:
        """Parameters trained by L_total^gan (eq. 18): everything but the discriminators."""
        return [p for name, p in self.named_parameters() if not is_discriminator_key(name)]

    def view_content(
        self,
        volume: torch.Tensor,
        pose: torch.Tensor,
        mip: torch.Tensor,
        projections: torch.Tensor | None = None,
        base: torch.Tensor | None = None,
    ) -> ViewContent:
        """What the CT gives G at each view: V ``(B,1,D,D,D)``, p ``(B,25)``, the PAM's MIP
        ``(B,1,h,w)`` and, with the projection path, the projection images ``(B,4,S,S)``
        (:func:`ct2x.models.inputs.projection_input`). With the physics anchor, ``base`` is B made by the
        caller (``(B, 1, H, W)``, e.g. at the output's pixels); left out, B is made from the projections."""
        return self._view_content(self.ct_encoder(volume), pose, mip, projections, base)

    def _view_content(
        self,
        f_c_ct: torch.Tensor,
        pose: torch.Tensor,
        mip: torch.Tensor,
        projections: torch.Tensor | None,
        base: torch.Tensor | None = None,
    ) -> ViewContent:
        if base is None and self.tone_curve is not None:
            base = physics_base(projections, self.config)
        return ViewContent(self._content(f_c_ct, pose, mip), self._projection_features(projections), base)

    def render(self, content: ViewContent, style: torch.Tensor) -> torch.Tensor:
        """G(f_c^{w+}, f_sty[, P]) (+ T(B; f_sty) with the physics anchor): the image
        ``(B, 1, S, S)`` (about [-1, 1]; :func:`ct2x.models.inputs.output_image` shows it on [0, 1]) of each
        view in the style code ``(B, num_style_layers, w_dim)``.

        With the physics anchor the base B may be read out at any detector size ``(H, W)`` (the output's
        pixels): G's residual, made at ``S x S``, is then resized to it (bilinear) and the image is
        ``(B, 1, H, W)``: the base's detail, noise and processing stay at the output's resolution."""
        image = self.generator(content.code, style, content.features)
        if self.config.residual_detail_px > 0:
            image = detail_of(image, self.config.residual_detail_px)
        if self.tone_curve is not None:
            if image.shape[-2:] != content.base.shape[-2:]:
                image = F.interpolate(image, size=tuple(content.base.shape[-2:]), mode="bilinear", align_corners=False)
            image = image + self.tone_curve(content.base, style)
        return image

    def _projection_features(self, projections: torch.Tensor | None) -> dict[int, torch.Tensor] | None:
        if self.projection_encoder is None:
            if projections is not None:
                raise CT2XError("this model takes no projection images (it is not of the 'projected' preset)")
            return None
        if projections is None:
            raise CT2XError("this model of the 'projected' preset needs the projection images of every view")
        return self.projection_encoder(projections)

    def _content(self, f_c_ct: torch.Tensor, pose: torch.Tensor, mip: torch.Tensor) -> torch.Tensor:
        if self.config.use_pam:
            return self.pose_module(f_c_ct, pose, mip)
        return self.pose_module(f_c_ct, pose)

    def _xray_content(self, content: ViewContent, chain: torch.Tensor | None) -> ViewContent:
        """The X-ray path's view content: ``content``, with ``chain_anchor`` its base replaced by ``chain``."""
        if not self.config.chain_anchor:
            return content
        if chain is None:
            raise CT2XError("this model's X-ray path is anchored on the imaging chain: give each view's chain image")
        return dataclasses.replace(content, base=chain.to(content.code.dtype))

    def drr_style_code(self, drr: torch.Tensor) -> torch.Tensor:
        """f_sty^DRR = E_sty^sDRR(I_DRR) (eq. 5) for DRRs ``(B, 1, S, S)``, or, without E_sty
        (ablation), the learned constant style code; ``(B, num_style_layers, w_dim)``."""
        if self.style_encoder is None:
            return self.constant_style.expand(drr.shape[0], -1, -1)
        return self.style_encoder.drr_style(drr)

    def forward(
        self,
        volume: torch.Tensor,
        pose: torch.Tensor,
        mip: torch.Tensor,
        drr: torch.Tensor,
        xray: torch.Tensor | None = None,
        projections: torch.Tensor | None = None,
        chain: torch.Tensor | None = None,
    ) -> CT2XOutputs:
        """The training forward pass of Fig. 2.

        Args:
            volume: V ``(B, 1, D, D, D)``, ``D = volume_size``, in [-1, 1]
                (:func:`ct2x.models.inputs.volume_input`).
            pose: p ``(B, 25)`` float32 (:attr:`ct2x.geometry.CArm.pose`).
            mip: the MIP of V at p ``(B, 1, h, w)``, scaled like V (:func:`ct2x.models.inputs.mip_input`;
                used by the PAM only).
            drr: I_DRR, the ground-truth DRR of V at p, ``(B, 1, S, S)`` in [-1, 1]
                (:func:`ct2x.models.inputs.drr_input`).
            xray: I_X, an unpaired real radiograph ``(B, 1, S, S)`` in [-1, 1]
                (:func:`ct2x.models.inputs.xray_input`); required with E_sty, ignored without it.
            projections: with the projection path, the projection images ``(B, 4, S, S)``
                (:func:`ct2x.models.inputs.projection_input`).
            chain: with ``chain_anchor``, the X-ray path's base ``(B, 1, S, S)`` in [-1, 1]: the imaging
                chain's radiograph of each view in its style reference's look (the dataset's ``chain``).

        Returns:
            :class:`CT2XOutputs`.
        """
        f_c_ct = self.ct_encoder(volume)
        content = self._view_content(f_c_ct, pose, mip, projections)
        f_c_wplus = content.code
        f_sty_drr = self.drr_style_code(drr)
        if self.style_encoder is None:
            return CT2XOutputs(f_c_ct, f_c_wplus, f_sty_drr, self.render(content, f_sty_drr), base=content.base)
        if xray is None:
            raise CT2XError("CT2X-GAN with the style encoder needs a real X-ray image for every sample")
        enc = self.style_encoder
        f_sty_x = enc.xray_style(xray)
        xray_content = self._xray_content(content, chain)
        out = CT2XOutputs(
            f_c_ct=f_c_ct,
            f_c_wplus=f_c_wplus,
            f_sty_drr=f_sty_drr,
            drr_hat=self.render(content, f_sty_drr),
            f_sty_x=f_sty_x,
            xray_hat=self.render(xray_content, f_sty_x),
            f_sty_x_of_drr=enc.xray_style(drr),
            f_sty_drr_of_xray=enc.drr_style(xray),
            base=content.base,
            xray_base=xray_content.base,
        )
        if self.config.use_consistency:
            out.f_c_xray_hat = enc.content(out.xray_hat)
            out.f_c_drr_hat = enc.content(out.drr_hat)
            out.f_sty_x_hat = enc.xray_style(out.xray_hat)
            out.f_sty_drr_hat = enc.drr_style(out.drr_hat)
        return out

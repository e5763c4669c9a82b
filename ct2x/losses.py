"""The losses of CT2X-GAN, one function per equation of the paper (sect. 3.3-3.6).

=============================  ===========================================================
eq. 8   L_rec                  :func:`reconstruction_loss` (L_mae :func:`mae_loss` + LPIPS)
eq. 9   L_consis               :func:`consistency_loss`
eq. 10  L_cc                   :func:`content_consistency_loss`
eq. 11  L_sc                   :func:`style_consistency_loss`
eq. 12  L_0                    :func:`zero_loss`
eq. 16  L_adv^gan              :func:`generator_adversarial_loss`
eq. 17  L_adv^dis (with R1)    :func:`discriminator_adversarial_loss`, :func:`r1_penalty`
eq. 18  L_total^gan            :meth:`CT2XLoss.generator_loss`
eq. 19  L_total^dis            :meth:`CT2XLoss.discriminator_loss`
D_X     (``projected``)        :meth:`CT2XLoss.xray_discriminator_loss`; its G term in eq. 18
=============================  ===========================================================

D_X (:mod:`ct2x.models.xray_discriminator`) is not in the paper: with ``use_xray_discriminator``
eq. 18 gains ``lambda_xray_adv * L_adv^X`` (``L_adv^X = E[softplus(-D_X(Î_X))]``, or
``-D_X(Î_X)`` with ``adv_loss="linear"``), and D_X is trained like D by eq. 17 with real
radiographs as its reals, with the same R1 weight.

The physics anchor's terms (``projected``; not in the paper, see :mod:`ct2x.models.physics_anchor`):
with ``lambda_edge`` eq. 18 gains ``lambda_edge * L_edge`` (:func:`edge_loss`, Î_X against the
X-ray path's base, the physics image B or with ``chain_anchor`` the chain's image: the anatomy stays in
the X-ray style), with ``lambda_hist``
``lambda_hist * L_hist`` (:func:`histogram_loss`, Î_X against its style reference cropped to the
view's field: the X-ray style follows the reference).

Norms. ``||a - b||_2`` (eq. 10-11) is computed per sample as the root mean square of the
difference (the Euclidean norm divided by sqrt(n)), and ``||a||_1`` (eq. 12) as the mean
absolute value, so that the weights do not depend on the codes' sizes; both are then
averaged over the batch. The loss weights are not given in the paper; see
:mod:`ct2x.config` for the defaults and their reasons.

Images are ``(B, 1, S, S)`` in [-1, 1]; style codes ``(B, num_style_layers, w_dim)``;
content maps ``(B, C, S/8, S/8)``; discriminator scores ``(B,)``. Every loss returns a
0-dim float tensor.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ct2x.config import CT2XConfig
from ct2x.errors import CT2XError
from ct2x.models.ct2xgan import CT2XOutputs

# ----------------------------------------------------------------------------- norms


def _rms(x: torch.Tensor) -> torch.Tensor:
    """Per-sample ``||x||_2 / sqrt(n)`` averaged over the batch (0 exactly when x is 0)."""
    flat = x.flatten(1)
    return (torch.linalg.vector_norm(flat, dim=1) / math.sqrt(flat.shape[1])).mean()


def _mean_abs(x: torch.Tensor) -> torch.Tensor:
    """Per-sample ``||x||_1 / n`` averaged over the batch."""
    return x.abs().flatten(1).mean(dim=1).mean()


# ----------------------------------------------------------------------------- LPIPS

#: torchvision weight files LPIPS's backbones were trained on (torch hub cache names).
_BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
}
_BACKBONE_URL = "https://download.pytorch.org/models/"


class LPIPSLoss(nn.Module):
    """LPIPS distance (Zhang et al. 2018, the paper's [49]) through the ``lpips`` package, frozen.

    Args:
        backbone: ``"alex"`` or ``"vgg"`` (ImageNet backbone weights from ``weights`` or the
            torch hub cache ``torch.hub.get_dir()/checkpoints``), or ``"random"``: an AlexNet
            with random weights, **for tests of the plumbing only** (its numbers mean nothing).
        weights: path to torchvision's backbone state dict (``.pth``/``.pt`` read with
            ``torch.load(weights_only=True)``, or ``.safetensors``); ``None`` = the hub cache.

    The learned linear layers of LPIPS v0.1 ship inside the ``lpips`` wheel. Missing backbone
    weights raise :class:`CT2XError` naming where they were looked for. Nothing is downloaded.

    Forward: two ``(B, 1, S, S)`` images in [-1, 1] (repeated to 3 channels) -> ``(B,)`` distances.
    """

    def __init__(self, backbone: str = "alex", weights: str | Path | None = None):
        super().__init__()
        import lpips

        if backbone not in ("alex", "vgg", "random"):
            raise CT2XError(f"unknown LPIPS backbone {backbone!r} (choose alex, vgg or random)")
        state = None if backbone == "random" else _read_backbone(backbone, weights)
        with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=False`
            warnings.simplefilter("ignore", UserWarning)
            self.lpips = lpips.LPIPS(
                net="alex" if state is None else backbone, pretrained=True, pnet_rand=True, verbose=False
            )
        if state is not None:
            self.lpips.net.load_state_dict(_rename_backbone(backbone, state, self.lpips.net.state_dict()))
        self.lpips.requires_grad_(False)
        self.lpips.eval()

    def train(self, mode: bool = True) -> LPIPSLoss:
        """LPIPS stays in eval mode (no dropout) whatever the surrounding module does."""
        super().train(mode)
        self.lpips.eval()
        return self

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.lpips(a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1)).flatten()


def _read_backbone(backbone: str, weights: str | Path | None) -> dict[str, torch.Tensor]:
    """Read torchvision's state dict of the backbone from ``weights`` or the torch hub cache."""
    name = _BACKBONE_FILES[backbone]
    if weights is None:
        path = Path(torch.hub.get_dir()) / "checkpoints" / name
        if not path.is_file():
            raise CT2XError(
                f"LPIPS needs torchvision's ImageNet {backbone} weights: {path} is missing. "
                f"Copy {_BACKBONE_URL}{name} there, or set the config key lpips_weights to the file"
            )
    else:
        path = Path(weights)
        if not path.is_file():
            raise CT2XError(f"the LPIPS backbone weights file {path} (config key lpips_weights) does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt or foreign files fail in many ways; report them in one line
        raise CT2XError(f"cannot read LPIPS backbone weights {path}: {' '.join(str(error).split())}") from None
    if not isinstance(state, dict) or "features.0.weight" not in state:
        raise CT2XError(f"{path} does not hold torchvision {backbone} weights (no 'features.0.weight')")
    return state


def _rename_backbone(backbone: str, state: dict[str, torch.Tensor], expected: dict) -> dict[str, torch.Tensor]:
    """torchvision's ``features.<i>.*`` keys -> lpips's ``slice<k>.<i>.*`` keys."""
    renamed = {}
    for key in expected:  # e.g. slice2.3.weight <- features.3.weight
        source = "features." + key.split(".", 1)[1]
        if source not in state:
            raise CT2XError(f"the LPIPS weights do not hold torchvision {backbone} weights (no {source!r})")
        renamed[key] = state[source]
    return renamed


# ----------------------------------------------------------------------------- eq. 8-12


def mae_loss(target: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """L_mae of eq. 8: mean absolute error over all pixels."""
    return F.l1_loss(prediction, target)


def reconstruction_loss(
    drr: torch.Tensor,
    drr_hat: torch.Tensor,
    lpips: LPIPSLoss | None,
    lambda_mae: float = 1.0,
    lambda_lpips: float = 1.0,
) -> torch.Tensor:
    """Eq. 8: ``L_rec = lambda_mae L_mae(I_DRR, Î_DRR) + lambda_lpips L_lpips(I_DRR, Î_DRR)``.

    ``lpips`` may be ``None`` only when ``lambda_lpips`` is 0.
    """
    loss = lambda_mae * mae_loss(drr, drr_hat)
    if lambda_lpips > 0:
        if lpips is None:
            raise CT2XError("L_rec with lambda_lpips > 0 needs an LPIPS network")
        loss = loss + lambda_lpips * lpips(drr, drr_hat).mean()
    return loss


def content_consistency_loss(f_c_xray_hat: torch.Tensor, f_c_drr_hat: torch.Tensor) -> torch.Tensor:
    """Eq. 10: ``L_cc = || E_sty^c(Î_X) - E_sty^c(Î_DRR) ||_2``."""
    return _rms(f_c_xray_hat - f_c_drr_hat)


def style_consistency_loss(
    f_sty_x: torch.Tensor, f_sty_x_hat: torch.Tensor, f_sty_drr: torch.Tensor, f_sty_drr_hat: torch.Tensor
) -> torch.Tensor:
    """Eq. 11: ``L_sc = ||E_sty^sX(I_X) - E_sty^sX(Î_X)||_2 + ||E_sty^sDRR(I_DRR) - E_sty^sDRR(Î_DRR)||_2``."""
    return _rms(f_sty_x - f_sty_x_hat) + _rms(f_sty_drr - f_sty_drr_hat)


def consistency_loss(l_cc: torch.Tensor, l_sc: torch.Tensor, lambda_cc: float, lambda_sc: float) -> torch.Tensor:
    """Eq. 9: ``L_consis = lambda_cc L_cc + lambda_sc L_sc``."""
    return lambda_cc * l_cc + lambda_sc * l_sc


def zero_loss(f_sty_x_of_drr: torch.Tensor, f_sty_drr_of_xray: torch.Tensor) -> torch.Tensor:
    """Eq. 12: ``L_0 = ||E_sty^sX(I_DRR)||_1 + ||E_sty^sDRR(I_X)||_1`` (Benaim et al. 2019).

    Zero exactly when each style branch outputs zeros for the other domain's images.
    """
    return _mean_abs(f_sty_x_of_drr) + _mean_abs(f_sty_drr_of_xray)


# ----------------------------------------------------------------------------- the anchor's terms

_SOBEL = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]) / 4.0


def _standardise(images: torch.Tensor) -> torch.Tensor:
    flat = images.flatten(1)
    mean, std = flat.mean(dim=1), flat.std(dim=1, correction=0).clamp_min(1e-6)
    return (images - mean[:, None, None, None]) / std[:, None, None, None]


def edge_maps(images: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of each standardised image ``(B, 1, S, S)`` -> ``(B, 1, S, S)``
    (edge-replicated border; the magnitude of :func:`ct2x.evaluation.measures.edge_map`)."""
    kernel = _SOBEL.to(images)
    kernels = torch.stack([kernel, kernel.T])[:, None]  # (2, 1, 3, 3): d/dx, d/dy
    gradients = F.conv2d(F.pad(_standardise(images), (1, 1, 1, 1), mode="replicate"), kernels)
    return torch.sqrt((gradients**2).mean(dim=1, keepdim=True) + 1e-8)


def edge_loss(image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``L_edge = 1 - NCC(edges(Î), edges(B))``, averaged over the batch; 0 when the edge maps agree
    up to a positive scale, 1 when they are unrelated."""
    a, b = (_standardise(edge_maps(x)).flatten(1) for x in (image, reference))
    return 1.0 - (a * b).mean(dim=1).mean()


def histogram_loss(image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``L_hist``: the 1-D Wasserstein distance between the intensities of each image and of its
    reference (both ``(B, 1, S, S)`` in [-1, 1]): the mean absolute difference of their sorted pixels."""
    return (torch.sort(image.flatten(1), dim=1).values - torch.sort(reference.flatten(1), dim=1).values).abs().mean()


# ----------------------------------------------------------------------------- eq. 16-17


def generator_adversarial_loss(fake_scores: torch.Tensor, kind: str = "softplus") -> torch.Tensor:
    """Eq. 16: ``L_adv^gan = E[-D(G(v, x, phi))]``, with softplus(-D) for ``kind="softplus"``."""
    return F.softplus(-fake_scores).mean() if kind == "softplus" else (-fake_scores).mean()


def r1_penalty(real_scores: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """The R1 term of eq. 17 (Mescheder et al. 2018): ``E_x |grad_x D(x)|^2`` over real DRRs.

    ``real_scores`` ``(B,)`` must come from ``real_images`` ``(B, 1, S, S)`` with
    ``requires_grad=True``; the graph is kept so that the penalty trains D. Samples must be
    scored independently (our D has no batch statistics), so the gradient of the summed
    scores is each sample's own gradient.
    """
    (grad,) = torch.autograd.grad(real_scores.sum(), real_images, create_graph=True)
    return grad.square().flatten(1).sum(dim=1).mean()


def discriminator_adversarial_loss(
    fake_scores: torch.Tensor,
    real_scores: torch.Tensor,
    r1: torch.Tensor,
    lambda_r1: float,
    kind: str = "softplus",
) -> torch.Tensor:
    """Eq. 17: ``L_adv^dis = E[D(G(v, x, phi))] + E_{x ~ I_DRR}[-D(x) + lambda_R1 |grad D(x)|^2]``.

    ``kind="softplus"`` reads ``D(fake)`` and ``-D(real)`` as ``softplus(D(fake))`` and
    ``softplus(-D(real))`` (StyleGAN2 / EG3D); ``"linear"`` takes them literally.
    """
    if kind == "softplus":
        adv = F.softplus(fake_scores).mean() + F.softplus(-real_scores).mean()
    else:
        adv = fake_scores.mean() - real_scores.mean()
    return adv + lambda_r1 * r1


# ----------------------------------------------------------------------------- eq. 18-19


class _LossTerms:
    """A dataclass of loss terms, each a 0-dim tensor."""

    def as_floats(self) -> dict[str, float]:
        """The terms as Python floats, by field name, for logging."""
        return {f.name: float(getattr(self, f.name).detach()) for f in fields(self)}


@dataclass
class GeneratorLosses(_LossTerms):
    """The terms of eq. 18 (0-dim tensors; a skipped term is 0). ``total`` is what to back-propagate."""

    total: torch.Tensor  #: L_total^gan (eq. 18)
    rec: torch.Tensor  #: L_rec (eq. 8)
    mae: torch.Tensor  #: L_mae (eq. 8, unweighted)
    lpips: torch.Tensor  #: L_lpips (eq. 8, unweighted)
    consis: torch.Tensor  #: L_consis (eq. 9)
    cc: torch.Tensor  #: L_cc (eq. 10, unweighted)
    sc: torch.Tensor  #: L_sc (eq. 11, unweighted)
    zero: torch.Tensor  #: L_0 (eq. 12, unweighted)
    adv: torch.Tensor  #: L_adv^gan (eq. 16, unweighted)
    xray_adv: torch.Tensor  #: L_adv^X, D_X's term (unweighted; 0 without D_X)
    edge: torch.Tensor  #: L_edge (unweighted; 0 without lambda_edge)
    hist: torch.Tensor  #: L_hist (unweighted; 0 without lambda_hist)


@dataclass
class DiscriminatorLosses(_LossTerms):
    """The terms of eq. 19 (0-dim tensors). ``total`` is what to back-propagate."""

    total: torch.Tensor  #: L_total^dis = lambda_adv L_adv^dis (eq. 19), or lambda_xray_adv times D_X's
    adv: torch.Tensor  #: L_adv^dis including the R1 term (eq. 17)
    r1: torch.Tensor  #: E |grad_x D(x)|^2 on the reals (eq. 17, unweighted)
    real_score: torch.Tensor  #: mean D(x) over the reals (DRRs for D, radiographs for D_X)
    fake_score: torch.Tensor  #: mean D over the fakes


class CT2XLoss(nn.Module):
    """The total losses of eq. 18-19 with the weights of a :class:`CT2XConfig`.

    Holds the frozen LPIPS network (built from ``lpips_backbone`` / ``lpips_weights`` unless
    ``lambda_lpips`` is 0 or an ``lpips`` module is given). Honours the ablation switches:
    without E_sty, L_consis and L_0 are 0; with ``use_consistency=False``, L_consis is 0.
    """

    def __init__(self, config: CT2XConfig, lpips: LPIPSLoss | None = None):
        super().__init__()
        self.config = config
        if lpips is None and config.lambda_lpips > 0:
            lpips = LPIPSLoss(config.lpips_backbone, config.lpips_weights)
        self.lpips = lpips

    def reconstruction_loss(self, outputs: CT2XOutputs, drr: torch.Tensor) -> torch.Tensor:
        """Eq. 8 on a forward pass's Î_DRR against the true DRR ``(B, 1, S, S)``."""
        c = self.config
        return reconstruction_loss(drr, outputs.drr_hat, self.lpips, c.lambda_mae, c.lambda_lpips)

    def generator_loss(
        self,
        outputs: CT2XOutputs,
        drr: torch.Tensor,
        pose: torch.Tensor,
        discriminator: nn.Module,
        xray_discriminator: nn.Module | None = None,
        xray_field: torch.Tensor | None = None,
    ) -> GeneratorLosses:
        """Eq. 18: ``L_total^gan = lambda_adv L_adv^gan + L_rec + L_consis + lambda_0 L_0``
        (+ ``lambda_xray_adv L_adv^X`` with D_X).

        Args:
            outputs: :meth:`ct2x.models.CT2XGAN.forward`'s result.
            drr: the true DRRs ``(B, 1, S, S)`` in [-1, 1].
            pose: ``(B, 25)`` poses, given to D with the fakes (pose-aware adversarial loss).
            discriminator: D; it is only evaluated here (its parameters do get gradients, so
                zero them before D's own step or keep them out of G's optimiser).
            xray_discriminator: D_X, required with ``use_xray_discriminator`` (judges Î_X, or
                Î_DRR without E_sty: :attr:`CT2XOutputs.fake`).
            xray_field: with ``lambda_hist``, each sample's style reference cropped to its view's
                field ``(B, 1, S, S)`` (the dataset's ``xray_field``).
        """
        c = self.config
        zero = drr.new_zeros(())
        mae = mae_loss(drr, outputs.drr_hat)
        lpips = self.lpips(drr, outputs.drr_hat).mean() if c.lambda_lpips > 0 else zero
        rec = c.lambda_mae * mae + c.lambda_lpips * lpips
        cc = sc = consis = l0 = zero
        if c.consistency_enabled:
            cc = content_consistency_loss(outputs.f_c_xray_hat, outputs.f_c_drr_hat)
            sc = style_consistency_loss(outputs.f_sty_x, outputs.f_sty_x_hat, outputs.f_sty_drr, outputs.f_sty_drr_hat)
            consis = consistency_loss(cc, sc, c.lambda_cc, c.lambda_sc)
        if c.use_style_encoder:
            l0 = zero_loss(outputs.f_sty_x_of_drr, outputs.f_sty_drr_of_xray)
        adv = generator_adversarial_loss(discriminator(outputs.fake, pose), c.adv_loss) if c.lambda_adv > 0 else zero
        xray_adv = zero
        if c.use_xray_discriminator and c.lambda_xray_adv > 0:
            if xray_discriminator is None:
                raise CT2XError("this config's loss needs D_X (use_xray_discriminator)")
            xray_adv = generator_adversarial_loss(xray_discriminator(outputs.fake), c.adv_loss)
        edge = hist = zero
        if c.lambda_edge > 0:
            edge = edge_loss(outputs.xray_hat, outputs.xray_base if outputs.xray_base is not None else drr)
        if c.lambda_hist > 0:
            if xray_field is None:
                raise CT2XError("this config's loss needs each style reference cropped to its view (lambda_hist)")
            hist = histogram_loss(outputs.xray_hat, xray_field)
        total = (
            c.lambda_adv * adv + rec + consis + c.lambda_0 * l0 + c.lambda_xray_adv * xray_adv
            + c.lambda_edge * edge + c.lambda_hist * hist
        )  # fmt: skip
        return GeneratorLosses(total, rec, mae, lpips, consis, cc, sc, l0, adv, xray_adv, edge, hist)

    def discriminator_loss(
        self,
        discriminator: nn.Module,
        fake: torch.Tensor,
        real: torch.Tensor,
        pose: torch.Tensor,
        r1_scale: float = 1.0,
    ) -> DiscriminatorLosses:
        """Eq. 19: ``L_total^dis = lambda_adv L_adv^dis``, with the R1 penalty on the real DRRs.

        Args:
            discriminator: D.
            fake: the syntheses at ``pose`` ``(B, 1, S, S)`` (:attr:`CT2XOutputs.fake`); detached
                here, so this loss trains D only.
            real: the true DRRs at ``pose`` ``(B, 1, S, S)``.
            pose: ``(B, 25)``.
            r1_scale: multiplies ``lambda_r1``; lazy regularisation computes R1 every k-th step
                with ``r1_scale = k`` and skips it (``0``) in between.
        """
        return self._discriminator_loss(lambda x: discriminator(x, pose), fake, real, r1_scale, self.config.lambda_adv)

    def xray_discriminator_loss(
        self, xray_discriminator: nn.Module, fake: torch.Tensor, real: torch.Tensor, r1_scale: float = 1.0
    ) -> DiscriminatorLosses:
        """D_X's loss, eq. 17's form with weight ``lambda_xray_adv``: ``fake`` the synthesized
        X-rays Î_X, ``real`` real radiographs cropped to the detector's field (``(B, 1, S, S)``)."""
        return self._discriminator_loss(xray_discriminator, fake, real, r1_scale, self.config.lambda_xray_adv)

    def _discriminator_loss(
        self, score: Callable[[torch.Tensor], torch.Tensor], fake: torch.Tensor, real: torch.Tensor,
        r1_scale: float, weight_adv: float,
    ) -> DiscriminatorLosses:  # fmt: skip
        c = self.config
        weight = c.lambda_r1 * r1_scale
        real = real.detach().requires_grad_(weight > 0)
        fake_scores = score(fake.detach())
        real_scores = score(real)
        r1 = r1_penalty(real_scores, real) if weight > 0 else real.new_zeros(())
        adv = discriminator_adversarial_loss(fake_scores, real_scores, r1, weight, c.adv_loss)
        return DiscriminatorLosses(weight_adv * adv, adv, r1, real_scores.mean(), fake_scores.mean())

"""The model's inputs and outputs: every transform between the physical images of a CT and the
tensors the CT2X-GAN networks read and make, in one place.

The training data (:class:`ct2x.data.dataset.CTViewDataset`), inference (:mod:`ct2x.synthesize`),
evaluation (:mod:`ct2x.evaluation.methods`), the training previews and the physics anchor
(:mod:`ct2x.models.physics_anchor`) all go through these functions, so a model sees the same
numbers at training and at inference. The module depends on :mod:`ct2x.config` and torch only.

The networks work on one scale, [-1, 1], bright = attenuating:

==========================  ==============================================  ==========================
what                        physical input                                  network input
==========================  ==============================================  ==========================
CT volume (E_CT)            HU, ``(D, D, D)``                               :func:`volume_input`
MIP (the PAM)               HU, ``(V, H, W)``                               :func:`mip_input`
DRR (E_sty^sDRR, target)    ``-log`` transmitted fraction, ``(V, H, W)``    :func:`drr_input`
radiograph (E_sty^sX, D_X)  [0, 1], ``(V, H, W)`` (``read_radiograph``)    :func:`xray_input`
chain image (chain anchor)  [0, 1], ``(V, H, W)`` (``ct2x.imaging``)         :func:`display_input`
projection images (P, B)    g/cm^2 x 3 and HU, ``(V, 4, H, W)``             :func:`projection_input`
==========================  ==============================================  ==========================

and back: :func:`output_image` turns an image of the networks' scale (G's output, a DRR input,
the physics anchor's base) into a displayed image in [0, 1]; :func:`drr_image` shows a physics
DRR on that same [0, 1] scale; :func:`projection_densities` recovers the area densities in g/cm^2
from the projection input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ct2x.config import CT2XConfig

#: Number of area-density channels at the start of a projection image (air, soft tissue, bone,
#: ``ct2x.data.prepare.PROJECTION_CHANNELS``); the last channel is the MIP in HU.
DENSITY_CHANNELS = 3


def normalize_hu(hu: torch.Tensor, config: CT2XConfig) -> torch.Tensor:
    """Hounsfield units (any shape) -> the same shape in [-1, 1]: clipped to ``[hu_min, hu_max]``
    (default [-1024, 2048] HU) and mapped linearly, ``hu_min`` to -1 and ``hu_max`` to 1.

    The scale of the CT volume fed to E_CT and of a MIP given in HU.
    """
    lo, hi = config.hu_min, config.hu_max
    return (hu.clamp(lo, hi) - lo) * (2.0 / (hi - lo)) - 1.0


def drr_image(drr: torch.Tensor) -> torch.Tensor:
    """DRRs ``(..., H, W)`` (``-log`` of the transmitted fraction, dimensionless, >= 0) -> the same
    shape in [0, 1], each image min-max scaled on its own (bright = attenuating; a flat image becomes 0)."""
    low = drr.amin(dim=(-2, -1), keepdim=True)
    high = drr.amax(dim=(-2, -1), keepdim=True)
    return (drr - low) / (high - low).clamp_min(1e-6)


def scale_drr(drr: torch.Tensor) -> torch.Tensor:
    """DRRs ``(..., H, W)`` (``-log``) -> the same shape in [-1, 1], each image min-max scaled on its
    own (:func:`drr_image` mapped to [-1, 1]; a flat image becomes -1). The scale of the training
    target I_DRR and of the physics anchor's base B."""
    return drr_image(drr) * 2.0 - 1.0


def _resize2d(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images ``(C, H, W)`` -> ``(C, size, size)``: bilinear with antialiasing, unchanged at that size."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def volume_input(ct_hu: torch.Tensor, config: CT2XConfig) -> torch.Tensor:
    """The CT grid ``(D, D, D)`` in HU -> E_CT's input ``(1, volume_size, volume_size, volume_size)``
    in [-1, 1] (:func:`normalize_hu`), trilinearly resized if ``D != volume_size``."""
    volume = normalize_hu(ct_hu, config)[None]
    if volume.shape[-1] != config.volume_size:
        size = (config.volume_size,) * 3
        volume = F.interpolate(volume[None], size=size, mode="trilinear", align_corners=False)[0]
    return volume


def mip_input(mip_hu: torch.Tensor, config: CT2XConfig) -> torch.Tensor:
    """MIPs ``(V, H, W)`` in HU -> the PAM's input ``(V, pam_mip_size, pam_mip_size)`` in [-1, 1],
    scaled like the CT (:func:`normalize_hu`)."""
    return _resize2d(normalize_hu(mip_hu, config), config.pam_mip_size)


def drr_input(drr: torch.Tensor, config: CT2XConfig) -> torch.Tensor:
    """DRRs ``(V, H, W)`` (``-log``) -> ``(V, image_size, image_size)`` in [-1, 1], min-max scaled per
    image (:func:`scale_drr`): E_sty^sDRR's input and the reconstruction target I_DRR."""
    return _resize2d(scale_drr(drr), config.image_size)


def xray_input(pixels: torch.Tensor, config: CT2XConfig) -> torch.Tensor:
    """Radiographs ``(V, H, W)`` in [0, 1] (``ct2x.data.radiographs.read_radiograph``, bright =
    attenuating) -> ``(V, image_size, image_size)`` in [-1, 1]: E_sty^sX's and D_X's input."""
    return _resize2d(display_input(pixels), config.image_size)


def display_input(pixels: torch.Tensor) -> torch.Tensor:
    """Display images ``(..., H, W)`` in [0, 1] (a radiograph, the imaging chain's output) -> the networks'
    scale [-1, 1], same shape (the inverse of :func:`output_image` on [-1, 1])."""
    return pixels * 2.0 - 1.0


def projection_input(projections: torch.Tensor, config: CT2XConfig) -> torch.Tensor:
    """Projection images ``(V, 4, H, W)`` (area densities of air, soft tissue and bone in g/cm^2,
    then the MIP in HU; ``ct2x.data.prepare.PROJECTION_CHANNELS``) -> G's projection input
    ``(V, 4, image_size, image_size)`` float32: the densities divided by ``projection_scale_g_cm2``
    (about [0, 1]), the MIP scaled like the CT (:func:`normalize_hu`, [-1, 1]).
    :func:`projection_densities` undoes the first part."""
    projections = projections.float()
    scale = torch.tensor(config.projection_scale_g_cm2, dtype=torch.float32, device=projections.device)
    densities = projections[:, :DENSITY_CHANNELS] / scale[:, None, None]
    scaled = torch.cat([densities, normalize_hu(projections[:, DENSITY_CHANNELS:], config)], dim=1)
    if scaled.shape[-1] == config.image_size and scaled.shape[-2] == config.image_size:
        return scaled
    size = (config.image_size, config.image_size)
    return F.interpolate(scaled, size=size, mode="bilinear", antialias=True, align_corners=False)


def projection_densities(projections: torch.Tensor, config: CT2XConfig) -> torch.Tensor:
    """Projection inputs ``(B, 4, S, S)`` (:func:`projection_input`) -> the area densities of air,
    soft tissue and bone ``(B, 3, S, S)`` float32 in g/cm^2 (the scaling by ``projection_scale_g_cm2``
    undone), what ``ct2x.drr.drr_from_area`` reads."""
    scale = torch.tensor(config.projection_scale_g_cm2, dtype=torch.float32, device=projections.device)
    return projections[:, :DENSITY_CHANNELS].float() * scale[:, None, None]


def output_image(image: torch.Tensor) -> torch.Tensor:
    """An image on the networks' scale ``(..., H, W)``, about [-1, 1] (G's output, a DRR or radiograph
    input, the physics anchor's base) -> the displayed image, same shape, in [0, 1] (bright =
    attenuating): clipped to [-1, 1] and mapped linearly."""
    return (image.clamp(-1.0, 1.0) + 1.0) / 2.0

"""The CT2X-GAN networks (paper sect. 3, Fig. 2), one module per network.

* :class:`CTEncoder` — E_CT: CT volume -> CT content code f_c^CT.
* :class:`StyleDecouplingEncoder` — E_sty: content branch and X-ray / DRR style branches (eq. 2-6).
* :class:`PoseAttentionModule` — the PAM (eq. 13-15), :func:`pose_attention` is eq. 13;
  :class:`PoseQuery` is eq. 14 alone (the "w/o PAM" ablation).
* :class:`Generator` — G with AdaIN synthesis layers (eq. 4, 7).
* :class:`Discriminator` — the pose-conditioned D (eq. 16-17).
* :class:`ProjectionEncoder` — the projection path of the ``projected`` preset: the CT's area
  densities and MIP at the view as G's spatial input (``ct2x.models.projection``).
* :class:`XRayDiscriminator` — D_X, the multi-scale patch discriminator on real radiographs.
* :class:`CT2XGAN` — all of them from one :class:`~ct2x.config.CT2XConfig`, with the forward
  pass of Fig. 2 returning :class:`CT2XOutputs`, and the one inference path
  (:meth:`CT2XGAN.view_content`, :meth:`CT2XGAN.render`, :class:`ViewContent`).

What the networks read and make, :mod:`ct2x.models.inputs`: the transforms from a CT, a MIP, a DRR,
a radiograph or the projection images to the networks' [-1, 1] tensors (``volume_input``,
``mip_input``, ``drr_input``, ``xray_input``, ``projection_input``, ``normalize_hu``, ``scale_drr``)
and back to an image in [0, 1] (``output_image``, ``drr_image``); the training data and inference
both import them from there.
"""

from ct2x.models.ct2xgan import CT2XGAN, CT2XOutputs, ViewContent, is_discriminator_key
from ct2x.models.ct_encoder import CTEncoder
from ct2x.models.discriminator import Discriminator
from ct2x.models.generator import Generator
from ct2x.models.pose_attention import PoseAttentionModule, PoseQuery, pose_attention
from ct2x.models.projection import ProjectionEncoder
from ct2x.models.style_encoder import StyleDecouplingEncoder
from ct2x.models.xray_discriminator import XRayDiscriminator

__all__ = [
    "CT2XGAN",
    "CT2XOutputs",
    "CTEncoder",
    "Discriminator",
    "Generator",
    "PoseAttentionModule",
    "PoseQuery",
    "ProjectionEncoder",
    "StyleDecouplingEncoder",
    "ViewContent",
    "XRayDiscriminator",
    "is_discriminator_key",
    "pose_attention",
]

"""The pose attention module PAM (paper sect. 3.5, eq. 13-15).

    PAM = Softmax(Q K^T / tau) V                      (eq. 13)
    Q   = Concat(E_CT(V), MLP(p))   (merged by an MLP)  (eq. 14)
    K = V = MLP(Proj(Rot(V, p)))                      (eq. 15)

``Proj(Rot(V, p))`` is the maximum intensity projection (MIP) of the CT at the target pose,
computed outside the network by ``ct2x.drr.mip`` with the same projector as the DRRs and
passed in as an image. Choices the paper leaves open (ours):

* the MIP is resampled to ``pam_mip_size``^2 and cut into ``pam_patch_size``^2 patches;
  one shared MLP maps each patch to a ``w_dim`` token and a learned position embedding
  tells the tokens apart, so K and V hold one row per patch;
* Q holds one row per content layer of G (the W+ code of E_CT), each concatenated with the
  same pose embedding MLP(p) and merged by a shared MLP;
* the modified content code is ``f_c^{w+} = Q + PAM``: the attention read-out is added to
  the query (a residual connection), so the CT code is modified, not replaced.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ct2x.config import CT2XConfig
from ct2x.geometry import POSE_SIZE
from ct2x.models.layers import check_shape, mlp


def pose_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 13: ``Softmax(Q K^T / tau) V``.

    Args:
        q: queries ``(B, Nq, d)``.
        k: keys ``(B, Nk, d)``.
        v: values ``(B, Nk, d)``.
        tau: temperature (> 0) keeping the logits' magnitude moderate.

    Returns:
        ``(B, Nq, d)``: each query's softmax-weighted mean of the values.
    """
    weights = torch.softmax(q @ k.transpose(-1, -2) / tau, dim=-1)
    return weights @ v


class PoseQuery(nn.Module):
    """Eq. 14: ``Q = MLP(Concat(f_c^CT, MLP(p)))``, the pose-conditioned CT content code.

    Inputs: ``f_c_ct`` ``(B, num_content_layers, w_dim)`` from E_CT; ``pose`` ``(B, 25)``
    float32, the EG3D-convention pose of :attr:`ct2x.geometry.CArm.pose` (translation in
    metres, normalised intrinsics). Output: Q ``(B, num_content_layers, w_dim)``.

    On its own this is the "w/o PAM" ablation of Table 2: the content code straight from
    E_CT and the pose MLP.
    """

    def __init__(self, config: CT2XConfig):
        super().__init__()
        self.pose_mlp = mlp([POSE_SIZE, config.pose_embed_dim, config.pose_embed_dim])
        self.merge_mlp = mlp([config.w_dim + config.pose_embed_dim, config.w_dim, config.w_dim])

    def forward(self, f_c_ct: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        check_shape("the pose", pose, (f_c_ct.shape[0], POSE_SIZE))
        pose_code = self.pose_mlp(pose)[:, None, :].expand(-1, f_c_ct.shape[1], -1)
        return self.merge_mlp(torch.cat([f_c_ct, pose_code], dim=-1))


class PoseAttentionModule(nn.Module):
    """The PAM: turns the CT code f_c^CT into the modified content code f_c^{w+} (eq. 13-15).

    Forward inputs:
        f_c_ct: ``(B, num_content_layers, w_dim)``, E_CT's output.
        pose: ``(B, 25)`` float32 pose p.
        mip: ``(B, 1, h, w)``, the MIP of the CT at pose p, scaled like the CT (HU clipped to
            ``[hu_min, hu_max]`` and mapped to [-1, 1], :func:`ct2x.models.inputs.mip_input`); any size,
            resampled to ``pam_mip_size``.

    Output: f_c^{w+} ``(B, num_content_layers, w_dim)``.
    """

    def __init__(self, config: CT2XConfig):
        super().__init__()
        self.query = PoseQuery(config)
        self.mip_size, self.patch = config.pam_mip_size, config.pam_patch_size
        num_patches = (self.mip_size // self.patch) ** 2
        self.mip_mlp = mlp([self.patch**2, config.w_dim, config.w_dim])
        self.position = nn.Parameter(torch.randn(num_patches, config.w_dim) * 0.1)
        self.tau = config.tau

    def keys_values(self, mip: torch.Tensor) -> torch.Tensor:
        """Eq. 15: ``K = V = MLP(Proj(Rot(V, p)))``, one token per MIP patch: ``(B, num_patches, w_dim)``."""
        check_shape("the MIP given to the PAM", mip, (None, 1, None, None))
        mip = F.adaptive_avg_pool2d(mip, self.mip_size)
        patches = F.unfold(mip, self.patch, stride=self.patch).transpose(1, 2)  # (B, N, patch^2)
        return self.mip_mlp(patches) + self.position

    def forward(self, f_c_ct: torch.Tensor, pose: torch.Tensor, mip: torch.Tensor) -> torch.Tensor:
        check_shape("the MIP given to the PAM", mip, (f_c_ct.shape[0], 1, None, None))
        q = self.query(f_c_ct, pose)
        kv = self.keys_values(mip)
        return q + pose_attention(q, kv, kv, self.tau)

"""DiffDRR (Gopalakrishnan & Golland 2022), the peer renderer our DRRs are checked against.

Used by the tests and ``benchmarks/drr.py`` (not part of the installed package); DiffDRR comes with
the ``dev`` and ``demo`` extras. DiffDRR works in RAS with its camera at the origin looking along +z; with
``reverse_x_axis=False`` its pixel (r, c) sits at ``(delx (c - cx), -dely (r - cy), sdd)``
in camera space, so the camera-to-world rotation that reproduces a :class:`CArm` is
``RAS_from_LPS @ R @ diag(1, -1, 1)`` and its translation the source in RAS.
"""

from __future__ import annotations

import numpy as np
import torch

from ct2x.geometry import CArm
from ct2x.volume import CTVolume


def diffdrr_projector(
    volume: CTVolume, values: np.ndarray, view: CArm, device: str = "cpu", renderer: str = "siddon"
) -> tuple[object, object]:
    """DiffDRR's ``DRR`` module over ``values`` (laid out like ``volume.array``) and the pose of ``view``.

    ``drr(pose)`` then renders DiffDRR's line integral (value x mm) ``(1, 1, H, W)``
    through the same source and detector pixels as ``view``: Siddon's exact voxel walk,
    or with ``renderer="trilinear"`` trilinear samples (``drr(pose, n_points=N)``).
    """
    from diffdrr.drr import DRR
    from diffdrr.pose import RigidTransform
    from torchio import ScalarImage, Subject

    ras_from_lps = np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3] = ras_from_lps @ volume.ijk_to_lps[:3]
    tensor = torch.as_tensor(np.ascontiguousarray(np.transpose(values, (2, 1, 0))), dtype=torch.float32)[None]
    image = ScalarImage(tensor=tensor, affine=affine)
    subject = Subject(volume=image, density=image, mask=None, reorient=torch.eye(4), fiducials=None)
    (height, width), (dely, delx) = view.detector_shape, view.pixel_spacing
    drr = DRR(
        subject, sdd=view.sdd, height=height, delx=delx, width=width, dely=dely, reverse_x_axis=False, renderer=renderer
    )
    pose = np.eye(4)
    pose[:3, :3] = ras_from_lps @ view.rotation @ np.diag([1.0, -1.0, 1.0])
    pose[:3, 3] = ras_from_lps @ view.source
    return drr.to(device), RigidTransform(torch.as_tensor(pose, dtype=torch.float32)[None].to(device))

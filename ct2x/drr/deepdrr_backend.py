"""Render with DeepDRR itself, at our geometry (GPU only; optional extra ``ct2x[deepdrr]``).

DeepDRR (>= 1.2) compiles CUDA kernels at run time and only runs on an NVIDIA GPU, so
this module is used only when ``deepdrr`` imports and torch sees a CUDA device. It is a
parity check for the torch backend and is **not exercised by the CPU test suite**.

Geometry mapping (world = LPS mm, as in ``ct2x``):

* volume: ``deepdrr.Volume`` from DeepDRR's own HU -> density / threshold materials,
  data indexed ``[i, j, k]`` with ``anatomical_from_IJK = volume.ijk_to_lps`` (LPS) and
  identity ``world_from_anatomical``;
* camera: ``geo.CameraProjection(intrinsic, extrinsic)`` with ``extrinsic`` our
  world-to-camera ``[R^T | -R^T s]`` and ``intrinsic`` our ``CArm.intrinsics`` shifted by
  half a pixel, because DeepDRR casts each ray through ``(u + 0.5, v + 0.5)`` (pixel
  corners at integers) while ``ct2x`` puts pixel centres at integers.

DeepDRR returns intensities; with ``neglog=False`` we apply ``-log(I / I0)`` ourselves with
``I0 = sum_E E * pdf(E)`` of the spectrum DeepDRR used (its detector is energy
integrating too), since DeepDRR's own ``neglog`` rescales each image to [0, 1].
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import numpy as np
import torch

from ct2x.drr.spectrum import Spectrum
from ct2x.geometry import CArm
from ct2x.volume import CTVolume

#: Spectra DeepDRR ships by name; other names are passed as our SpekPy spectrum.
DEEPDRR_SPECTRA = ("60KV_AL35", "90KV_AL40", "120KV_AL43")
UNAVAILABLE = (
    "backend 'deepdrr' needs DeepDRR and an NVIDIA CUDA GPU: run `pip install ct2x[deepdrr]` on a CUDA machine, "
    "or use backend='torch'"
)


def available() -> bool:
    """True when ``deepdrr`` is installed and torch sees a CUDA GPU."""
    return importlib.util.find_spec("deepdrr") is not None and torch.cuda.is_available()


def render(
    volume: CTVolume,
    views: Sequence[CArm],
    *,
    step: float,
    spectrum: Spectrum,
    photons: float | None,
    seed: int | None,
) -> torch.Tensor:
    """``(V, H, W)`` float32 ``-log`` transmitted fraction rendered by DeepDRR (CPU tensor)."""
    import deepdrr
    from deepdrr import geo

    hu = np.ascontiguousarray(np.transpose(np.asarray(volume.array, dtype=np.float32), (2, 1, 0)))  # [i, j, k]
    dvol = deepdrr.Volume(
        data=deepdrr.Volume._convert_hounsfield_to_density(hu),
        materials=deepdrr.Volume._segment_materials(hu, use_thresholding=True),
        anatomical_from_IJK=geo.FrameTransform(volume.ijk_to_lps),
        anatomical_coordinate_system="LPS",
    )
    if spectrum.name in DEEPDRR_SPECTRA:
        spec_arg: str | np.ndarray = spectrum.name
    else:  # DeepDRR's array form: energies in eV, photon pdf
        spec_arg = np.stack([spectrum.energies_kev * 1000.0, spectrum.fluence], axis=1)
    height, width = views[0].detector_shape
    intrinsic = views[0].intrinsics + np.array([[0.0, 0.0, 0.5], [0.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
    camera_intrinsics = geo.CameraIntrinsicTransform(intrinsic)
    camera_intrinsics.sensor_height, camera_intrinsics.sensor_width = height, width
    if seed is not None:  # DeepDRR draws its Poisson noise from numpy's global generator
        np.random.seed(int(seed))  # noqa: NPY002
    images = []
    with deepdrr.Projector(
        dvol,
        camera_intrinsics=camera_intrinsics,
        step=step,
        spectrum=spec_arg,
        add_noise=photons is not None,
        photon_count=int(photons or 1e6),
        neglog=False,
    ) as projector:
        table = np.asarray(projector.spectrum, dtype=np.float64)
        i0 = float(np.sum(table[:, 0] / 1000.0 * table[:, 1] / table[:, 1].sum()))
        for view in views:
            extrinsic = np.eye(4)
            extrinsic[:3, :3] = view.rotation.T
            extrinsic[:3, 3] = -view.rotation.T @ view.source
            camera = geo.CameraProjection(camera_intrinsics, geo.FrameTransform(extrinsic))
            images.append(np.asarray(projector.project(camera), dtype=np.float64))
    intensity = np.stack(images).reshape(len(views), height, width) / i0
    return torch.as_tensor(-np.log(np.clip(intensity, 1e-30, None)), dtype=torch.float32)

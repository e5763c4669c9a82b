"""Training samples: prepared CT volumes (``ct2x prepare``) paired with unpaired real radiographs.

One sample is one (CT, view) pair of the dataset plus one radiograph drawn at random:

* ``volume`` ``(1, D, D, D)``: the CT grid in HU, clipped and scaled to [-1, 1]
  (:func:`ct2x.models.normalize_hu`), resized to the config's ``volume_size`` if the dataset
  was prepared on another grid;
* ``pose`` ``(25,)``: the view's pose (``ct2x.geometry``);
* ``mip`` ``(1, m, m)``: the MIP of the grid at the pose, scaled like the volume, resized to
  ``pam_mip_size``;
* ``drr`` ``(1, S, S)``: the DRR (``-log`` transmitted fraction) min-max scaled per image to
  [-1, 1] (bright = attenuating, like a displayed radiograph), resized to ``image_size``;
* ``xray`` ``(1, S, S)``: a real radiograph in [-1, 1] (``ct2x.data.radiographs``).

The order of samples is a pure function of the seed and the global sample number, so a run
resumed at step ``t`` sees exactly the batches an uninterrupted run would (see
:class:`StepSampler`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch.utils.data import Dataset, Sampler

from ct2x.config import CT2XConfig
from ct2x.data.prepare import FORMAT, FORMAT_VERSION, MANIFEST, volume_file_problem
from ct2x.data.radiographs import find_radiographs, read_radiograph
from ct2x.errors import CT2XError
from ct2x.models import normalize_hu


def load_manifest(folder: str | Path) -> dict:
    """The manifest of a prepared dataset, or a CT2XError saying how to make one."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise CT2XError(
            f"{folder} is not a prepared dataset (no {MANIFEST}): run ct2x prepare --ct CT_DIR --out {folder}"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CT2XError(f"cannot read {path}: {error}; run ct2x prepare again") from None
    found = (manifest.get("format"), manifest.get("version")) if isinstance(manifest, dict) else (None, None)
    if found != (FORMAT, FORMAT_VERSION):
        raise CT2XError(
            f"{path} is a manifest of format {found[0]!r} version {found[1]!r}; this ct2x reads {FORMAT!r} "
            f"version {FORMAT_VERSION}: prepare the CTs again with this ct2x (ct2x prepare --ct CT_DIR --out NEW_DIR)"
        )
    if not manifest.get("volumes"):
        raise CT2XError(f"{path} lists no prepared CT: run ct2x prepare --ct CT_DIR --out {folder}")
    return manifest


def manifest_hash(manifest: dict) -> str:
    """SHA-256 of the dataset's settings and volume hashes: identifies the data a run trained on."""
    key = {"settings": manifest["settings"], "volumes": sorted(v["sha256"] for v in manifest["volumes"])}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def scale_drr(drr: torch.Tensor) -> torch.Tensor:
    """Min-max scale each DRR ``(..., H, W)`` to [-1, 1] (a flat image becomes -1)."""
    low = drr.amin(dim=(-2, -1), keepdim=True)
    high = drr.amax(dim=(-2, -1), keepdim=True)
    return (drr - low) / (high - low).clamp_min(1e-6) * 2.0 - 1.0


def _resize2d(image: torch.Tensor, size: int) -> torch.Tensor:
    if image.shape[-1] == size and image.shape[-2] == size:
        return image
    return F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def volume_input(ct_hu: torch.Tensor, config: CT2XConfig) -> torch.Tensor:
    """The CT grid ``(D, D, D)`` in HU -> E_CT's input ``(1, volume_size^3)`` in [-1, 1]."""
    volume = normalize_hu(ct_hu, config)[None]
    if volume.shape[-1] != config.volume_size:
        size = (config.volume_size,) * 3
        volume = F.interpolate(volume[None], size=size, mode="trilinear", align_corners=False)[0]
    return volume


def mip_input(mip_hu: torch.Tensor, config: CT2XConfig) -> torch.Tensor:
    """MIPs ``(V, H, W)`` in HU -> the PAM's input ``(V, pam_mip_size, pam_mip_size)``, scaled like the CT."""
    return _resize2d(normalize_hu(mip_hu, config), config.pam_mip_size)


def drr_input(drr: torch.Tensor, config: CT2XConfig) -> torch.Tensor:
    """DRRs ``(V, H, W)`` (-log) -> ``(V, image_size, image_size)`` min-max scaled per image to [-1, 1]."""
    return _resize2d(scale_drr(drr), config.image_size)


def xray_input(pixels: torch.Tensor, config: CT2XConfig) -> torch.Tensor:
    """Radiographs ``(V, S, S)`` in [0, 1] (``read_radiograph``) -> [-1, 1] at ``image_size``."""
    return _resize2d(pixels * 2.0 - 1.0, config.image_size)


class CTViewDataset(Dataset):
    """Every (prepared CT, view) pair of a dataset folder, with radiographs drawn per sample."""

    def __init__(self, data: str | Path, xray: str | Path, config: CT2XConfig, seed: int = 0):
        self.folder = Path(data)
        self.config = config
        self.seed = seed
        self.manifest = load_manifest(self.folder)
        self.files = [self.folder / "volumes" / v["file"] for v in self.manifest["volumes"]]
        missing = [f.name for f in self.files if not f.is_file()]
        if missing:
            raise CT2XError(f"the dataset {self.folder} lacks {', '.join(missing)}: run ct2x prepare again on it")
        for file in self.files:
            problem = volume_file_problem(file, self.manifest["settings"])
            if problem:
                raise CT2XError(
                    f"the prepared volume {file} is damaged ({problem}): run ct2x prepare again on {self.folder} "
                    "(with the same --ct and options) to render it again"
                )
        self.views = len(self.manifest["settings"]["angles"])
        self.radiographs = find_radiographs(xray, size=8).paths

    @property
    def manifest_hash(self) -> str:
        return manifest_hash(self.manifest)

    def __len__(self) -> int:
        return len(self.files) * self.views

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        volume_index, view = divmod(int(index), self.views)
        with safe_open(str(self.files[volume_index]), framework="pt") as stored:
            ct = stored.get_tensor("ct").float()
            drr = stored.get_slice("drr")[view : view + 1].float()
            mip = stored.get_slice("mip")[view : view + 1].float()
            pose = stored.get_slice("poses")[view].float()
        generator = np.random.default_rng([self.seed, int(index), len(self.radiographs)])
        radiograph = self.radiographs[generator.integers(len(self.radiographs))]
        pixels = torch.from_numpy(read_radiograph(radiograph, size=self.config.image_size, warn_colour=False))
        return {
            "volume": volume_input(ct, self.config),
            "pose": pose,
            "mip": mip_input(mip, self.config),
            "drr": drr_input(drr, self.config),
            "xray": xray_input(pixels[None], self.config),
        }


class StepSampler(Sampler[list[int]]):
    """Batches of sample indices for steps ``start_step, start_step + 1, ...`` (endless).

    Global sample number ``s = step * batch_size + i`` falls in epoch ``s // N`` at position
    ``s % N`` of that epoch's permutation (seeded by ``seed`` and the epoch), so batches depend
    only on the step: resuming reproduces the data order exactly. With several processes
    (``world_size``), rank ``r`` takes every ``world_size``-th sample of each global batch,
    like ``DistributedSampler``.
    """

    def __init__(self, size: int, batch_size: int, seed: int, start_step: int = 0, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise CT2XError(f"batch_size {batch_size} must be a multiple of the number of processes ({world_size})")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size
        self._epoch, self._order = -1, np.arange(0)

    def _sample(self, number: int) -> int:
        epoch, position = divmod(number, self.size)
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = np.random.default_rng([self.seed, epoch]).permutation(self.size)
        return int(self._order[position])

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            first = step * self.batch_size
            yield [self._sample(first + i) for i in range(self.rank, self.batch_size, self.world_size)]
            step += 1

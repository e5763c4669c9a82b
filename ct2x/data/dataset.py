"""Training samples: prepared CT volumes (``ct2x prepare``) paired with unpaired real radiographs.

One sample is one (CT, view) pair of the dataset plus radiographs drawn at random:

* ``volume`` ``(1, D, D, D)``: the CT grid in HU, clipped and scaled to [-1, 1]
  (:func:`ct2x.models.inputs.volume_input`), resized to the config's ``volume_size`` if the dataset
  was prepared on another grid;
* ``pose`` ``(25,)``: the view's pose (``ct2x.geometry``);
* ``mip`` ``(1, m, m)``: the MIP of the grid at the pose, scaled like the volume, resized to
  ``pam_mip_size`` (:func:`ct2x.models.inputs.mip_input`);
* ``drr`` ``(1, S, S)``: the DRR (``-log`` transmitted fraction) min-max scaled per image to
  [-1, 1] (bright = attenuating, like a displayed radiograph), resized to ``image_size``
  (:func:`ct2x.models.inputs.drr_input`);
* ``xray`` ``(1, S, S)``: a real radiograph in [-1, 1] (``ct2x.data.radiographs``,
  :func:`ct2x.models.inputs.xray_input`), E_sty's style reference;
* with ``projection_inputs``, ``projections`` ``(4, S, S)``: the stored area densities and MIP
  of the CT at the view (``ct2x prepare --projections``), scaled by :func:`ct2x.models.inputs.projection_input`;
* with ``use_xray_discriminator``, ``xray_real`` ``(1, S, S)``: another real radiograph, cropped
  to the field of view of the view's detector at the isocenter (the radiograph taken to cover
  ``radiograph_field_mm``; the crop moved at random by up to a tenth of the room around it), D_X's real;
* with ``lambda_hist`` or ``chain_anchor``, ``xray_field`` ``(1, S, S)``: the style reference ``xray``
  cropped to that field (centred), what the histogram term compares Î_X with;
* with ``chain_anchor``, ``chain`` ``(1, S, S)`` in [-1, 1]: the imaging chain's radiograph of the view
  from its area densities, its look fitted to ``xray_field`` (:func:`ct2x.imaging.styled`, noise drawn
  afresh per sample): the base of the X-ray path.

The transforms from the stored images to these tensors are the model's own
(:mod:`ct2x.models.inputs`), shared with inference (:mod:`ct2x.synthesize`).

The order of samples and the radiographs drawn are pure functions of the seed and the global
sample number, so a run resumed at step ``t`` sees exactly the batches an uninterrupted run
would, and every sample gets fresh radiographs each time it is drawn (see :class:`StepSampler`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from torch.utils.data import Dataset, Sampler

from ct2x.config import CT2XConfig
from ct2x.data.prepare import FORMAT, FORMAT_VERSION, MANIFEST, volume_file_problem
from ct2x.data.radiographs import find_radiographs, read_radiograph
from ct2x.errors import CT2XError
from ct2x.geometry import CArm, matched_chain, pose_field_of_view_mm
from ct2x.imaging import styled
from ct2x.models.inputs import drr_input, mip_input, projection_densities, projection_input, volume_input, xray_input


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


class CTViewDataset(Dataset):
    """Every (prepared CT, view) pair of a dataset folder, with radiographs drawn per sample.

    Items are indexed by the sample number ``i`` (a radiograph draw fixed by ``i``) or by a pair
    ``(i, n)``: sample ``i`` with the radiographs of draw ``n`` (:class:`StepSampler` passes the
    global sample number, so each epoch draws afresh).
    """

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
        if config.projection_inputs and not self.manifest["settings"].get("projections"):
            raise CT2XError(
                f"the dataset {self.folder} has no projection images, which this config's generator reads "
                "(projection_inputs; the dataset was prepared with --no-projections, or before they were the "
                "default): prepare the CTs again into another --out with ct2x prepare --projections (the default), "
                "or train a config that reads none (--config small)"
            )
        spectrum = self.manifest["settings"].get("spectrum")
        if config.physics_anchor and spectrum != config.physics_spectrum:
            raise CT2XError(
                f"the dataset {self.folder} was rendered with the spectrum {spectrum} but this config's physics "
                f"anchor uses {config.physics_spectrum}: set physics_spectrum: {spectrum} in the config"
            )
        counts = []
        for file in self.files:
            with safe_open(str(file), framework="pt") as stored:
                counts.append(stored.get_slice("poses").get_shape()[0])
        self.view_counts = counts
        self._starts = np.cumsum([0, *counts])
        self.radiographs = find_radiographs(xray, size=8).paths

    @property
    def manifest_hash(self) -> str:
        return manifest_hash(self.manifest)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def views_of(self, volume_index: int) -> range:
        """The sample numbers of every view of the ``volume_index``-th CT."""
        return range(int(self._starts[volume_index]), int(self._starts[volume_index + 1]))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index, draw = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), int(key))
        volume_index = int(np.searchsorted(self._starts, index, side="right")) - 1
        view = index - int(self._starts[volume_index])
        config = self.config
        with safe_open(str(self.files[volume_index]), framework="pt") as stored:
            ct = stored.get_tensor("ct").float()
            drr = stored.get_slice("drr")[view : view + 1].float()
            mip = stored.get_slice("mip")[view : view + 1].float()
            pose = stored.get_slice("poses")[view].float()
            projections = stored.get_slice("projections")[view : view + 1] if config.projection_inputs else None
        generator = np.random.default_rng([self.seed, draw, len(self.radiographs)])
        radiograph = self.radiographs[generator.integers(len(self.radiographs))]
        pixels = torch.from_numpy(read_radiograph(radiograph, size=config.image_size, warn_colour=False))
        field = min(1.0, pose_field_of_view_mm(pose.numpy()) / config.radiograph_field_mm)
        sample = {
            "volume": volume_input(ct, config),
            "pose": pose,
            "mip": mip_input(mip, config),
            "drr": drr_input(drr, config),
            "xray": xray_input(pixels[None], config),
        }
        if projections is not None:
            sample["projections"] = projection_input(projections, config)[0]
        if config.use_xray_discriminator:
            real = self.radiographs[generator.integers(len(self.radiographs))]
            shift = tuple(float(v) for v in generator.uniform(-0.1, 0.1, size=2))
            pixels = read_radiograph(real, size=config.image_size, warn_colour=False, crop=field, shift=shift)
            sample["xray_real"] = xray_input(torch.from_numpy(pixels)[None], config)
        if config.lambda_hist > 0 or config.chain_anchor:
            pixels = read_radiograph(radiograph, size=config.image_size, warn_colour=False, crop=field)
            sample["xray_field"] = xray_input(torch.from_numpy(pixels)[None], config)
        if config.chain_anchor:
            seed = int(generator.integers(1 << 62))
            sample["chain"] = self._chain_image(sample["projections"][None], pose.numpy(), pixels, seed)
        return sample

    def _chain_image(self, projections: torch.Tensor, pose: np.ndarray, film: np.ndarray, seed: int) -> torch.Tensor:
        """The chain anchor's base of one sample ``(1, S, S)`` in [-1, 1]: the imaging chain's radiograph of the
        view (:func:`ct2x.imaging.styled`, the ``chain_preset`` fitted to ``film``, the style reference cropped to
        the view's field), from the view's area densities; the detector is the pose's, its distances those of
        the dataset's views (``ct2x.data.prepare.PrepareOptions.views``)."""
        settings, size = self.manifest["settings"], self.config.image_size
        if settings.get("random_views"):
            width = matched_chain(float(np.linalg.norm(pose[[3, 7, 11]])) * 1000.0)[1]
        else:
            width = float(settings["pixel_mm"]) * int(settings["detector_size"])
        view = CArm.from_pose(pose, (size, size), (width / size, width / size))
        area = projection_densities(projections, self.config)
        image = styled(area, [view], film, self.config.chain_preset, seed=seed).image
        return xray_input(image.float(), self.config)


class StepSampler(Sampler[list[tuple[int, int]]]):
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

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        """Each batch as ``(sample index, global sample number)`` pairs (the number seeds the
        radiograph draw, :class:`CTViewDataset`)."""
        step = self.start_step
        while True:
            first = step * self.batch_size
            numbers = [first + i for i in range(self.rank, self.batch_size, self.world_size)]
            yield [(self._sample(n), n) for n in numbers]
            step += 1

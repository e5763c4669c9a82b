"""Evaluation of a CT2X-GAN model on held-out data (paper sect. 4.1-4.3, Tables 1-3, and more).

Inputs: a prepared dataset of held-out CTs (``ct2x prepare``: the CT grid, the pose, MIP and
DRR of every view) and a folder of real radiographs. Every *method* (the physics DRR, the DRR
histogram-matched to the style reference, the imaging chain with its look fitted to the style
reference (:func:`chain_ct_images`), an untrained model, the model, its ablations) makes
images of the same CTs at the same views in the same styles (:func:`evaluation_views`), and
every measure scores them the same way (the measures are defined in :mod:`ct2x.evaluation.measures`).
Rows of real films (:data:`FILM_ROWS`: other patients of the real set's collection, another
collection) are scored by the realism measures only: they place the floor of those numbers.

* **Geometric fidelity**: edge NCC and SSIM of each image against the physics DRR of the same
  CT and view, at the training poses and at unseen ones.
* **Content sensitivity**: edge NCC with the own CT's DRR minus the mean with the other CTs'
  DRRs at the same view (about 0 for a method that ignores the CT).
* **Scale error**: the magnification of the image relative to the DRR at source-to-isocenter
  distances :data:`SCALE_SIDS_MM` (SDD = SID + :data:`SCALE_GAP_MM`), AP view, first style.
* **Style effect**: at the AP view, the spread of intensity histograms over the styles (TV
  distance) and the edge agreement between styles.
* **Realism** (Tables 1 and 2): FID (:func:`ct2x.evaluation.measures.frechet_distance`), KID (torchmetrics)
  and a classifier two-sample test (C2ST) on the Inception features of the images against those
  of the real radiographs (offline
  InceptionV3 of :mod:`ct2x.evaluation.inception`); LPIPS (the ``lpips`` package, AlexNet backbone) is
  the mean distance between each image and its style reference.
* **DRR style reconstruction** (Table 3): eq. 7's reconstruction of every stored DRR of the
  dataset from the CT's content code and the DRR's own style code, scored against the DRR by
  PSNR (dB) and SSIM on images scaled to [0, 1] (torchmetrics), beside two rows without
  learning from the stored area densities (:func:`projection_baselines`): the line integral
  with an oracle affine fit, and the noise-free physics DRR.

Every method renders each held-out CT as read from the file it was prepared from (``ct2x evaluate`` reads
the source a prepared volume records, :func:`prepared_source`, when its content is unchanged), as
``ct2x synthesize`` renders a user's CT; the stored, coarser CT grid (:func:`prepared_volume`) only when
the source is missing or changed. The physics DRRs (``ct2x.drr.render_drr``, no noise) are min-max scaled
per image to [0, 1], as the model's training target. From a few dozen images
FID is biased upward and KID (unbiased) noisy: compare only numbers computed on the same sets.

FID, KID and C2ST see only the part of the field the CT covers (:func:`scored_region`): a view whose
field reaches past the CT's ends has bands no ray of the CT crosses (air in every synthetic row, which
no film has), so every synthetic image is cropped to the largest centred rectangle covered at every
view of every CT, and every real film to the same aspect ratio (:func:`crop_to_aspect`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
from torchmetrics.image.kid import KernelInceptionDistance

from ct2x.config import CT2XConfig
from ct2x.data.dataset import CTViewDataset
from ct2x.data.prepare import PrepareSettings
from ct2x.drr import area_densities, coverage, drr_from_area, render_drr
from ct2x.errors import CT2XError
from ct2x.evaluation.measures import c2st_auc, frechet_distance
from ct2x.geometry import CArm
from ct2x.imaging.parameters import ImagingParameters
from ct2x.models import CT2XGAN
from ct2x.models.inputs import drr_image, output_image, projection_densities
from ct2x.models.physics_anchor import physics_base
from ct2x.synthesize import model_views
from ct2x.volume import OUTSIDE_HU, CTVolume

#: Unseen views of the geometric fidelity: (primary, secondary) in degrees.
UNSEEN_VIEWS = ((-90.0, 0.0), (-75.0, 0.0), (75.0, 0.0), (90.0, 0.0), (0.0, -20.0), (0.0, 20.0))
#: Source-to-isocenter distances of the scale-error sweep (mm); the detector is SCALE_GAP_MM behind the isocenter.
SCALE_SIDS_MM = tuple(float(d) for d in range(400, 801, 50))
SCALE_GAP_MM = 490.0
#: Table 3's rows without learning (:func:`projection_baselines`).
LINE_INTEGRAL_ROW = "Line integral (affine fit per image)"
NOISE_FREE_ROW = "Noise-free physics DRR (the anchor's B)"
#: The rows of every table beside the models: the physics DRR, the styled DRR, the untrained control.
DRR_ROW = "DRR (physics)"
STYLED_ROW = "Styled DRR (histogram-matched)"
UNTRAINED_ROW = "Untrained (random init)"
#: The rows of real films scored like the synthetic rows (the floor of the realism measures): other
#: patients of the real set's collection (``--floor``), another collection (``--other-collection``).
FLOOR_ROW = "Real films (same collection, other patients)"
OTHER_COLLECTION_ROW = "Real films (another collection)"
FILM_ROWS = (FLOOR_ROW, OTHER_COLLECTION_ROW)
#: The imaging chain without learning (:func:`chain_images`): the preset whose physics it renders, and its row.
CHAIN_PRESET = "mobile_carm_flat_panel"
CHAIN_ROW = "Imaging chain (fitted style)"
#: The geometric-fidelity measures of every row against the physics DRR (:mod:`ct2x.evaluation.measures`): edge
#: NCC, plain, after the blur and with the style's tone curve also undone, and SSIM.
GEOMETRY_KEYS = ("edge_ncc", "edge_ncc_blurred", "edge_ncc_untoned", "ssim")
#: Real radiographs are read at this size (pixels a side) for the Inception features (which resize to 299).
REAL_SIZE = 256


@dataclass(frozen=True)
class ReconstructionScores:
    """Mean PSNR (dB) and SSIM of reconstructed DRRs over ``samples`` (CT, pose) pairs."""

    psnr: float
    ssim: float
    samples: int


@dataclass(frozen=True)
class RealismScores:
    """FID, KID (mean and standard deviation over subsets), C2ST ROC AUC (mean and standard
    deviation over folds) and mean LPIPS (``None`` when not computed) of ``images`` images
    against ``real`` real radiographs."""

    fid: float
    kid: float
    kid_std: float
    c2st_auc: float
    c2st_auc_std: float
    lpips: float | None
    images: int
    real: int


@dataclass(frozen=True)
class EvaluationView:
    """One view of the evaluation: its label (e.g. ``LAO 30 CRAN 0``), whether the model was
    trained at that pose, and the C-arm (around the CT's centre)."""

    label: str
    seen: bool
    carm: CArm


@torch.no_grad()
def drr_reconstruction(model: CT2XGAN, dataset: CTViewDataset, batch_size: int = 8) -> ReconstructionScores:
    """Score eq. 7's reconstructions of every DRR in ``dataset`` (see the module docstring)."""
    device = next(model.parameters()).device
    psnr = PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3)).to(device)
    ssim = StructuralSimilarityIndexMeasure(data_range=1.0).to(device)
    model.eval()
    for batch in DataLoader(dataset, batch_size=batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        content = model.view_content(batch["volume"], batch["pose"], batch["mip"], batch.get("projections"))
        predicted = output_image(model.render(content, model.drr_style_code(batch["drr"])))
        truth = output_image(batch["drr"])
        psnr.update(predicted, truth)
        ssim.update(predicted, truth)
    return ReconstructionScores(float(psnr.compute()), float(ssim.compute()), len(dataset))


@torch.no_grad()
def projection_baselines(dataset: CTViewDataset, batch_size: int = 8) -> dict[str, ReconstructionScores]:
    """Table 3 without learning, scored like :func:`drr_reconstruction`, from the stored area
    densities of each view (``dataset``'s config must read ``projections``, so the data must be
    prepared with ``--projections``):

    * :data:`LINE_INTEGRAL_ROW`: the monoenergetic line integral of the density, the sum of the
      three materials' area densities (g/cm^2), mapped onto each DRR by its own least-squares
      affine fit (an oracle brightness and contrast per image);
    * :data:`NOISE_FREE_ROW`: the noise-free polyenergetic DRR of the view (:func:`physics_base`,
      the physics anchor's B), min-max scaled like the stored DRR; it differs from it only by the
      stored DRR's Poisson noise, so it is the ceiling of a model that draws the physics.
    """
    config = dataset.config
    metrics = {
        name: (
            PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3)),
            StructuralSimilarityIndexMeasure(data_range=1.0),
        )
        for name in (LINE_INTEGRAL_ROW, NOISE_FREE_ROW)
    }
    for batch in DataLoader(dataset, batch_size=batch_size):
        truth, projections = output_image(batch["drr"]), batch["projections"]
        line = projection_densities(projections, config).sum(dim=1, keepdim=True)
        x = line - line.mean(dim=(2, 3), keepdim=True)
        y = truth - truth.mean(dim=(2, 3), keepdim=True)
        gain = (x * y).sum(dim=(2, 3), keepdim=True) / (x * x).sum(dim=(2, 3), keepdim=True).clamp_min(1e-12)
        predicted = {
            LINE_INTEGRAL_ROW: gain * x + truth.mean(dim=(2, 3), keepdim=True),
            NOISE_FREE_ROW: output_image(physics_base(projections, config)),
        }
        for name, (psnr, ssim) in metrics.items():
            psnr.update(predicted[name].clamp(0, 1), truth)
            ssim.update(predicted[name].clamp(0, 1), truth)
    return {
        name: ReconstructionScores(float(psnr.compute()), float(ssim.compute()), len(dataset))
        for name, (psnr, ssim) in metrics.items()
    }


def evaluation_views(config: CT2XConfig, card: dict, ct: CTVolume) -> list[EvaluationView]:
    """The training poses of the model (its card's angle grid; for a model trained on views drawn
    from ranges, or without a card, ``ct2x prepare``'s default grid, -60..60 degrees) and :data:`UNSEEN_VIEWS`,
    at the model's detector and distances (``ct2x.synthesize.model_views``)."""
    from ct2x.view_files import view_label

    trained = card.get("training", {}).get("dataset_settings", {})
    if trained.get("random_views", 0) > 0:  # views drawn from ranges: the default grid lies inside them
        trained = {}
    primaries = [float(a) for a in trained.get("angles", PrepareSettings().angles)]
    secondaries = [float(a) for a in trained.get("secondary", PrepareSettings().secondary)]
    if len(secondaries) == 1:
        secondaries *= len(primaries)
    seen = list(zip(primaries, secondaries, strict=True))
    unseen = [v for v in UNSEEN_VIEWS if v not in seen]
    angles = seen + unseen
    carms = model_views(config, card, ct, [p for p, _ in angles], [s for _, s in angles])
    return [EvaluationView(view_label(c), n < len(seen), c) for n, c in enumerate(carms)]


def scale_views(config: CT2XConfig, card: dict, ct: CTVolume) -> list[CArm]:
    """The AP view at each of :data:`SCALE_SIDS_MM` (SDD = SID + :data:`SCALE_GAP_MM`), model's detector."""
    return [model_views(config, card, ct, [0.0], [0.0], sdd=sid + SCALE_GAP_MM, sid=sid)[0] for sid in SCALE_SIDS_MM]


def drr_images(
    ct: CTVolume,
    carms: list[CArm],
    step: float,
    device: str | torch.device = "cpu",
    area: torch.Tensor | None = None,
) -> np.ndarray:
    """Noise-free physics DRRs of ``ct`` at ``carms``, each min-max scaled to [0, 1]: float32 ``(V, H, W)``.

    ``area``: the views' area densities at ``step`` (:func:`marched`) when they are marched already (where
    :func:`shares_march`): the DRR is then computed from them, as ``render_drr`` does, without a second march."""
    drr = render_drr(ct, carms, step=step, device=device) if area is None else drr_from_area(area)
    return drr_image(drr.float().cpu()).numpy()


def shares_march(device: str | torch.device) -> bool:
    """Whether ``render_drr`` draws the physics DRR on ``device`` from the area densities of its own ray
    marchers (not DeepDRR's, on a CUDA GPU with DeepDRR installed): then the imaging chain and the DRR share
    one march (:func:`marched`)."""
    from ct2x.drr import deepdrr_backend

    return not (torch.device(device).type == "cuda" and deepdrr_backend.available())


def marched(ct: CTVolume, carms: list[CArm], step: float, device: str | torch.device = "cpu") -> torch.Tensor:
    """The per-material area densities ``(V, M, H, W)`` of ``ct`` at ``carms`` (``ct2x.drr.area_densities``,
    as ``render_drr`` marches them, its memory checked first)."""
    from ct2x.drr.render import check_render_memory

    check_render_memory(ct, carms, device=device)
    return area_densities(ct, carms, step=step, device=device)


@torch.no_grad()
def inception_features(features: torch.nn.Module, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Features ``(N, F)`` of images ``(N, 1, S, S)`` in [0, 1], on the extractor's device, batch by batch."""
    device = next(features.parameters(), torch.empty(0)).device
    return torch.cat([features(images[s : s + batch_size].to(device)).cpu() for s in range(0, len(images), batch_size)])


class _GivenFeatures(torch.nn.Module):
    """Hands torchmetrics' KID feature vectors computed beforehand (identity, ``num_features`` wide)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class RealismMetrics:
    """FID, KID, C2ST and LPIPS of image sets against one set of real radiographs, from Inception
    features computed once per image (:func:`inception_features`).

    Args:
        real: ``(N, F)`` Inception features of the real radiographs (N >= 2).
        lpips: LPIPS distance of two ``(B, 1, S, S)`` batches in [-1, 1] (``ct2x.losses.LPIPSLoss``),
            or ``None`` to skip LPIPS.
        seed: seeds KID's random subsets and the C2ST folds.
    """

    def __init__(
        self,
        real: torch.Tensor,
        lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
        seed: int = 0,
    ) -> None:
        self.real, self.lpips, self.seed = real.double(), lpips, seed
        given = _GivenFeatures(real.shape[1])
        with warnings.catch_warnings():  # KID keeps every feature vector: a few hundred here
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            self.kid = KernelInceptionDistance(feature=given, reset_real_features=False, subset_size=2)
        self.kid.update(self.real, real=True)

    @torch.no_grad()
    def score(
        self,
        features: torch.Tensor,
        images: torch.Tensor | None = None,
        references: torch.Tensor | None = None,
        pairs: torch.Tensor | None = None,
    ) -> RealismScores:
        """Scores of the images whose Inception features are ``features`` ``(M, F)``; LPIPS of
        ``images`` ``(M, 1, S, S)`` in [0, 1] against ``references[pairs[m]]`` (at the images' size)
        when given and an LPIPS network is set."""
        self.kid.reset()
        self.kid.update(features.double(), real=False)
        self.kid.subset_size = min(50, len(self.real), len(features))
        torch.manual_seed(self.seed)
        kid, kid_std = self.kid.compute()
        auc, auc_std = c2st_auc(self.real.numpy(), features.double().numpy(), seed=self.seed)
        lpips = None
        if self.lpips is not None and images is not None and references is not None and pairs is not None:
            distances = [
                self.lpips(images[s : s + 16] * 2 - 1, references[pairs[s : s + 16]] * 2 - 1)
                for s in range(0, len(images), 16)
            ]
            lpips = float(torch.cat(distances).mean())
        return RealismScores(
            frechet_distance(self.real.numpy(), features.double().numpy()),
            float(kid),
            float(kid_std),
            auc,
            auc_std,
            lpips,
            len(features),
            len(self.real),
        )


@dataclass(frozen=True)
class ScoredRegion:
    """The part of the synthetic images the realism measures see: rows ``top:bottom`` and columns
    ``left:right`` of the ``height`` x ``width`` images (the whole field when every view is covered), and
    each view's covered fraction of the field (mean over the CTs, by label)."""

    top: int
    bottom: int
    left: int
    right: int
    height: int
    width: int
    covered: dict[str, float]

    @property
    def whole(self) -> bool:
        """Whether the region is the whole field (nothing is cropped)."""
        return (self.top, self.left, self.bottom, self.right) == (0, 0, self.height, self.width)

    def crop(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` ``(..., height, width)`` cropped to the region (the same tensor when it is the whole field)."""
        return images if self.whole else images[..., self.top : self.bottom, self.left : self.right]

    def summary(self, real_size: int) -> dict:
        """``metrics.json``'s ``scored_region``: the crop, the fraction of the field kept, the real films'
        crop at ``real_size``, each view's covered fraction."""
        rows, columns = crop_to_aspect_box(real_size, real_size, self.bottom - self.top, self.right - self.left)
        return {
            "crop": {"top": self.top, "bottom": self.bottom, "left": self.left, "right": self.right},
            "image_size": [self.height, self.width],
            "fraction": (self.bottom - self.top) * (self.right - self.left) / (self.height * self.width),
            "real_crop": {"rows": list(rows), "columns": list(columns), "read_at": real_size},
            "covered_per_view": self.covered,
        }


def scanned_volume(grid: CTVolume) -> CTVolume:
    """The part of a stored CT grid (:func:`prepared_volume`) that holds the CT: the box of its voxels that
    are not padding (``OUTSIDE_HU``, where ``ct2x.volume.resample_to_grid`` padded a CT shorter than its
    largest extent along an axis), so that :func:`ct2x.drr.coverage` sees the CT's own ends and sides.
    ``grid`` itself when nothing is padding, or everything is."""
    held = np.round(grid.array) != OUTSIDE_HU
    if not held.any() or held.all():
        return grid
    box = []  # (first, last + 1) along each array axis (k, j, i)
    for axis in range(3):
        kept = np.flatnonzero(held.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append((int(kept[0]), int(kept[-1]) + 1))
    if all(box[a] == (0, grid.array.shape[a]) for a in range(3)):
        return grid
    array = grid.array[tuple(slice(first, last) for first, last in box)]
    first_ijk = np.array([box[2][0], box[1][0], box[0][0]], dtype=np.float64)
    offset = np.asarray(grid.direction, dtype=np.float64) @ (first_ijk * np.asarray(grid.spacing, dtype=np.float64))
    return CTVolume(
        np.ascontiguousarray(array), grid.spacing, np.asarray(grid.origin, dtype=np.float64) + offset, grid.direction
    )


def centred_crop(mask: np.ndarray) -> tuple[int, int] | None:
    """The largest centred rectangle of ``mask`` ``(H, W)`` (bool) that is all ``True``, as the number of
    rows and of columns left out at each end ``(t, l)`` (rows ``t:H-t``, columns ``l:W-l``); of equal areas the
    one with fewer rows left out; ``None`` when there is none."""
    height, width = mask.shape
    best, area = None, 0
    for t in range(height // 2 + height % 2):
        rows = mask[t : height - t]
        if len(rows) == 0:
            break
        bad = np.flatnonzero(~rows.all(axis=0))  # columns with an uncovered pixel in these rows
        left = int(np.minimum(bad, width - 1 - bad).max()) + 1 if len(bad) else 0
        size = (height - 2 * t) * (width - 2 * left)
        if left < width - left and size > area:
            best, area = (t, left), size
    return best


def scored_region(
    cts: list[CTVolume], views: list[list[EvaluationView]], size: int, grids: Sequence[bool] | None = None
) -> ScoredRegion:
    """The region of the ``size``² synthetic images the realism measures see: the largest centred rectangle
    (:func:`centred_crop`) whose pixels' rays cross the whole CT (:func:`ct2x.drr.coverage`) at every view
    ``views[c]`` of every CT ``cts[c]``; the whole field when none is covered anywhere (nothing to crop to).
    ``grids[c]``: whether ``cts[c]`` is a stored grid (:func:`prepared_volume`), whose padding is left out
    (:func:`scanned_volume`); a CT as read is covered whole. Every CT is a stored grid when ``None``."""
    grids = [True] * len(cts) if grids is None else list(grids)
    masks = [
        coverage(scanned_volume(ct) if grid else ct, [v.carm for v in ct_views]).numpy()
        for ct, ct_views, grid in zip(cts, views, grids, strict=True)
    ]
    if any(m.shape[1:] != (size, size) for m in masks):
        raise CT2XError(f"the evaluation views' detectors are not the images' {size}² pixels")
    covered = {view.label: float(np.mean([m[v].mean() for m in masks])) for v, view in enumerate(views[0])}
    crop = centred_crop(np.logical_and.reduce([m.all(axis=0) for m in masks]))
    top, left = crop if crop is not None else (0, 0)
    return ScoredRegion(top, size - top, left, size - left, size, size, covered)


def crop_to_aspect_box(height: int, width: int, rows: int, columns: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The largest centred box of a ``height`` x ``width`` image with the aspect ratio ``rows`` : ``columns``, as
    ``((top, bottom), (left, right))``; the whole image when its aspect ratio is that one already."""
    if rows * width == columns * height:
        return (0, height), (0, width)
    if rows * width < columns * height:  # wider than the image: keep every column
        kept = max(1, round(width * rows / columns))
        top = (height - kept) // 2
        return (top, top + kept), (0, width)
    kept = max(1, round(height * columns / rows))
    left = (width - kept) // 2
    return (0, height), (left, left + kept)


def crop_to_aspect(images: torch.Tensor, region: ScoredRegion) -> torch.Tensor:
    """Real films ``(..., H, W)`` centre-cropped to the aspect ratio of ``region`` (the same tensor when it is
    the whole field), as the realism measures see them beside the synthetic images cropped to it."""
    if region.whole:
        return images
    (top, bottom), (left, right) = crop_to_aspect_box(
        images.shape[-2], images.shape[-1], region.bottom - region.top, region.right - region.left
    )
    return images[..., top:bottom, left:right]


def prepared_volume(path: Path) -> CTVolume:
    """The CT grid stored in a prepared dataset file (HU, placed in LPS as prepared)."""
    with safe_open(str(path), framework="pt") as stored:
        array = stored.get_tensor("ct").float().numpy()
        affine = stored.get_tensor("ct_ijk_to_lps").double().numpy()
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    return CTVolume(array, spacing, affine[:3, 3].copy(), affine[:3, :3] / spacing)


def prepared_source(path: Path) -> tuple[Path | None, str | None]:
    """The CT file (or DICOM folder) a prepared dataset file was made from and the SHA-256 prepare recorded
    of it (``ct2x.data.prepare.content_hash``), from its metadata; ``None`` for what it does not record."""
    with safe_open(str(path), framework="pt") as stored:
        metadata = stored.metadata() or {}
    source = metadata.get("source")
    return (Path(source) if source else None), metadata.get("sha256") or None


@dataclass(frozen=True)
class MethodImages:
    """What one method made: ``images`` float32 ``(C, V, R, S, S)`` in [0, 1] for C CTs, the V
    :func:`evaluation_views` and R styles (R = 1 for a method without a style input), and
    ``scale`` ``(C, K, S, S)``: the K :func:`scale_views` in the first style."""

    images: np.ndarray
    scale: np.ndarray


def untrained_model(config: CT2XConfig, seed: int = 0) -> CT2XGAN:
    """The control: a CT2X-GAN of ``config`` with random initial weights (seeded), in eval mode."""
    torch.manual_seed(seed)
    return CT2XGAN(config).eval()


def synthesized_images(
    model: CT2XGAN,
    cts: list[CTVolume],
    views: list[list[CArm]],
    scale: list[list[CArm]],
    references: list[Path],
    batch_size: int = 8,
    progress: Callable[[], None] | None = None,
) -> MethodImages:
    """A model's images of every CT (``views[c]``, ``scale[c]``: its C-arms) in the style of each
    reference radiograph (one image per view for a model without the style encoder), each CT resampled to
    the model's grid once, as ``ct2x synthesize`` does (``ct2x.synthesize.prepare_ct``);
    ``progress`` is called after each CT."""
    from ct2x.synthesize import prepare_ct, synthesize_styles

    images, scaled = [], []
    for volume, carms, scale_carms in zip(cts, views, scale, strict=True):
        ct = prepare_ct(model, volume)
        images.append(synthesize_styles(model, ct, carms, references, batch_size))  # (V, R, S, S)
        scaled.append(synthesize_styles(model, ct, scale_carms, references[:1], batch_size)[:, 0])
        if progress:
            progress()
    return MethodImages(np.stack(images).astype(np.float32), np.stack(scaled).astype(np.float32))


def styled_drr_images(drrs: MethodImages, references: np.ndarray) -> MethodImages:
    """The DRRs (``drrs.images`` with R = 1) histogram-matched to each reference radiograph
    ``(R, S, S)`` in [0, 1] (:func:`ct2x.evaluation.measures.styled_drr`); the scale sweep in the first style."""
    from ct2x.evaluation.measures import styled_drr

    c, v = drrs.images.shape[:2]
    images = np.stack(
        [
            np.stack([np.stack([styled_drr(drrs.images[i, j, 0], ref) for ref in references]) for j in range(v)])
            for i in range(c)
        ]
    )
    scale = np.stack([np.stack([styled_drr(image, references[0]) for image in ct]) for ct in drrs.scale])
    return MethodImages(images, scale)


@torch.no_grad()
def chain_images(
    cts: list[CTVolume],
    views: list[list[CArm]],
    scale: list[list[CArm]],
    films: Sequence[str | Path | np.ndarray],
    step: float,
    scale_step: float,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> MethodImages:
    """The imaging chain's radiographs of every CT (``views[c]``, ``scale[c]``: its C-arms) in the style of
    each reference film (:func:`chain_ct_images`), the area densities marched at ray step ``step`` voxels
    (``scale_step`` for the scale sweep)."""
    made = [
        chain_ct_images(
            ct, marched(ct, carms, step, device), marched(ct, sweep, scale_step, device), carms, sweep, films, seed
        )
        for ct, carms, sweep in zip(cts, views, scale, strict=True)
    ]
    return MethodImages(np.stack([m[0] for m in made]), np.stack([m[1] for m in made]))


@torch.no_grad()
def chain_ct_images(
    ct: CTVolume,
    area: torch.Tensor,
    sweep: torch.Tensor,
    views: list[CArm],
    scale: list[CArm],
    films: Sequence[str | Path | np.ndarray],
    seed: int = 0,
    base: str | ImagingParameters = CHAIN_PRESET,
) -> tuple[np.ndarray, np.ndarray]:
    """One CT through the imaging chain without learning, in the style of each reference film: ``base``'s
    physics (:mod:`ct2x.imaging`; default the :data:`CHAIN_PRESET` preset's) at the views' own geometry and
    detector, its look fitted to each film by the one fitting rule users get (:func:`ct2x.synthesize.fitted_look`,
    that of ``ct2x drr --style``, a chain-anchored model's synthesis and the Slicer panel: once per CT and film,
    pooled over the AP, oblique and lateral views of the views' geometry, the film read whole as covering a chest
    film's field; the CT is marched at those views once for all films).

    ``area`` / ``sweep``: the CT's area densities ``(V, M, S, S)`` at ``views`` and ``(K, M, S, S)`` at the
    scale sweep ``scale`` (:func:`marched`); ``films``: the style references (files, or arrays of any range).
    Noise seeded with ``seed + 2 r`` for reference ``r``; the scale sweep takes the first reference's look.
    Returns float32 ``(V, R, S, S)`` and ``(K, S, S)`` in [0, 1]."""
    from ct2x.imaging import simulate
    from ct2x.synthesize import fit_area, look_on

    fit = fit_area(ct, views[0], device=area.device)
    looks = [look_on(fit, film, base) for film in films]
    styles = torch.stack([simulate(area, views, look, seed=seed + 2 * r).image for r, look in enumerate(looks)], 1)
    scaled = simulate(sweep, scale, looks[0], seed=seed).image
    return styles.float().cpu().numpy(), scaled.float().cpu().numpy()


def _geometry(scores: dict[str, np.ndarray], views: list[EvaluationView]) -> dict:
    """Geometric fidelity from ``(CTs, views, styles)`` arrays of each measure by its key (edge NCC, plain, blurred
    and with the tone undone, and SSIM): means at the training poses (``seen``) and the unseen views, and per
    view."""
    seen = np.array([view.seen for view in views])
    geometry = {
        group: {**{key: float(value[:, mask].mean()) for key, value in scores.items()}, "views": int(mask.sum())}
        for group, mask in (("seen", seen), ("unseen", ~seen))
        if mask.any()
    }
    geometry["per_view"] = {
        view.label: {**{key: float(value[:, v].mean()) for key, value in scores.items()}, "seen": view.seen}
        for v, view in enumerate(views)
    }
    return geometry


def view_measures(method: MethodImages, drrs: MethodImages, views: list[EvaluationView]) -> dict:
    """Geometric fidelity, content sensitivity, scale error and style effect of ``method`` against
    the physics DRRs ``drrs`` (see the module docstring; definitions in :mod:`ct2x.evaluation.measures`).

    Returns JSON-able numbers: means over CTs and styles (and views, per group), plus the per-view
    and per-distance values.
    """
    from ct2x.evaluation.measures import (
        blurred_edge_ncc,
        content_sensitivity,
        edge_map,
        magnification,
        ncc,
        ssim,
        style_spread,
        untoned_edge_ncc,
    )

    c_count, v_count, r_count = method.images.shape[:3]
    drr_edges = [[edge_map(drrs.images[c, v, 0]) for v in range(v_count)] for c in range(c_count)]
    scores = {key: np.zeros((c_count, v_count, r_count)) for key in GEOMETRY_KEYS}
    own, other = np.zeros((c_count, v_count, r_count)), np.zeros((c_count, v_count, r_count))
    for c in range(c_count):
        for v in range(v_count):
            drr = drrs.images[c, v, 0]
            for r in range(r_count):
                image = method.images[c, v, r]
                edges = edge_map(image)
                scores["edge_ncc"][c, v, r] = ncc(edges, drr_edges[c][v])
                scores["edge_ncc_blurred"][c, v, r] = blurred_edge_ncc(image, drr)
                scores["edge_ncc_untoned"][c, v, r] = untoned_edge_ncc(image, drr)
                scores["ssim"][c, v, r] = ssim(image, drr)
                if c_count > 1:
                    own[c, v, r], other[c, v, r] = content_sensitivity(edges, [e[v] for e in drr_edges], c)
    geometry = _geometry(scores, views)
    sensitivity = own - other
    content = (
        {
            "own_ncc": float(own.mean()),
            "other_ncc": float(other.mean()),
            "sensitivity": float(sensitivity.mean()),
            "sensitivity_std": float(sensitivity.std()),
            "images": int(sensitivity.size),
        }
        if c_count > 1
        else None
    )
    scales = np.array(
        [
            [magnification(method.scale[c, k], drrs.scale[c, k]) for k in range(len(SCALE_SIDS_MM))]
            for c in range(c_count)
        ]
    )
    error = np.abs(scales - 1) * 100
    scale = {
        "mean_error_pct": float(error.mean()),
        "max_error_pct": float(error.max()),
        "per_sid": {f"{sid:g}": float(scales[:, k].mean()) for k, sid in enumerate(SCALE_SIDS_MM)},
    }
    ap = next((v for v, view in enumerate(views) if view.carm.primary == 0 and view.carm.secondary == 0), 0)
    style = None
    if r_count > 1:
        spreads = np.array([style_spread(list(method.images[c, ap])) for c in range(c_count)])
        style = {
            "view": views[ap].label,
            "histogram_tv": float(spreads[:, 0].mean()),
            "edge_ncc": float(spreads[:, 1].mean()),
            "styles": r_count,
        }
    return {"geometry": geometry, "content": content, "scale": scale, "style": style}

"""Image measures of ``ct2x evaluate``: edge agreement, content sensitivity, magnification, style spread, C2ST.

Images are float arrays ``(H, W)`` laid out as displayed (``ct2x.geometry``), intensities in
[0, 1] (bright = attenuating) unless said otherwise. The measures compare images of the same
detector (same pixel grid), so all distances are in pixels and scale factors are unitless.

* :func:`edge_map`: gradient magnitude (Sobel) of the standardised image (zero mean, unit
  variance), so that two images with the same anatomy but different brightness, contrast or
  style have similar edge maps; :func:`edge_ncc` is the normalised cross-correlation of two
  edge maps (1: the same edges, 0: unrelated); :func:`blurred_edge_ncc` the same after a Gaussian blur of
  :data:`EDGE_BLUR_PX` pixels of both images, so that noise and grain (a radiograph's, not the anatomy's)
  do not dominate the edge maps; :func:`untoned_edge_ncc` the blurred one after the image's grey levels are
  mapped onto the reference's histogram, so that a style's tone curve (a monotone map that moves no edge but
  scales each edge by its slope) does not count as lost anatomy either.
* :func:`content_sensitivity`: how much more an image agrees with the DRR of *its own* CT than
  with the DRRs of other CTs at the same view; about 0 for an image that ignores the CT.
* :func:`magnification`: the scale ``s`` about the detector centre that best maps a reference
  onto an image (``image(x) ≈ reference(c + (x - c) / s)``); ``s = 1.05`` means the image shows
  the anatomy 5 % larger than the reference.
* :func:`histogram_tv`: total variation distance of two intensity histograms (0: the same
  histogram, 1: disjoint).
* :func:`styled_drr`: a DRR histogram-matched to a radiograph (scikit-image), the non-learned
  "styled DRR" baseline.
* :func:`frechet_distance`: the FID formula on two sets of feature vectors, computed exactly through
  the feature matrices instead of the ``F x F`` covariances (fast for a few hundred images).
* :func:`c2st_auc`: classifier two-sample test: cross-validated ROC AUC of a logistic
  regression that separates two sets of feature vectors (0.5: indistinguishable, 1: separable).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import torch
import torch.nn.functional as F

from ct2x.errors import CT2XError

#: Standard deviation (pixels) of the Gaussian blur of :func:`blurred_edge_ncc`.
EDGE_BLUR_PX = 1.5
#: The magnification search range of :func:`magnification` (about the detector centre).
MAGNIFICATION_RANGE = (0.8, 1.25)


def standardise(image: np.ndarray) -> np.ndarray:
    """``(image - mean) / std`` (a flat image becomes zeros)."""
    data = np.asarray(image, dtype=np.float64)
    std = data.std()
    return (data - data.mean()) / std if std > 1e-12 else np.zeros_like(data)


def edge_map(image: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of the standardised image, float64 ``(H, W)``."""
    from skimage.filters import sobel

    return sobel(standardise(image))


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two arrays of one shape, in [-1, 1] (0 if either is flat)."""
    x, y = standardise(a), standardise(b)
    return float((x * y).mean())


def edge_ncc(a: np.ndarray, b: np.ndarray) -> float:
    """NCC of the edge maps of two images (see the module docstring)."""
    return ncc(edge_map(a), edge_map(b))


def blurred_edge_ncc(a: np.ndarray, b: np.ndarray, sigma_px: float = EDGE_BLUR_PX) -> float:
    """:func:`edge_ncc` of the two images after a Gaussian blur of ``sigma_px`` pixels each (scipy, edges
    reflected): the agreement of the anatomy's edges when one image carries noise or grain."""
    from scipy.ndimage import gaussian_filter

    blur = [gaussian_filter(np.asarray(x, np.float64), sigma_px, mode="reflect") for x in (a, b)]
    return edge_ncc(*blur)


def untoned_edge_ncc(image: np.ndarray, reference: np.ndarray, sigma_px: float = EDGE_BLUR_PX) -> float:
    """:func:`blurred_edge_ncc` of ``image`` with its grey levels first mapped onto ``reference``'s histogram
    (scikit-image ``match_histograms``: monotone, the pixels' order kept) and ``reference``: the agreement of
    the anatomy's edges with a style's tone curve taken out."""
    from skimage.exposure import match_histograms

    matched = match_histograms(np.asarray(image, np.float64), np.asarray(reference, np.float64))
    return blurred_edge_ncc(matched, reference, sigma_px)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two images in [0, 1] (scikit-image, 7 x 7 window, data range 1)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(np.asarray(a, np.float64), np.asarray(b, np.float64), data_range=1.0))


def content_sensitivity(edges_image: np.ndarray, edges_drrs: Sequence[np.ndarray], own: int) -> tuple[float, float]:
    """``(NCC with the own CT's DRR, mean NCC with the other CTs' DRRs)`` of one image's edge map.

    ``edges_drrs``: edge maps of the DRRs of every held-out CT at the image's view; ``own`` the
    index of the image's CT. The content sensitivity is the first minus the second.
    """
    if len(edges_drrs) < 2:
        raise CT2XError("content sensitivity compares a CT with other CTs: the held-out data needs at least 2 CTs")
    scores = [ncc(edges_image, e) for e in edges_drrs]
    others = [s for n, s in enumerate(scores) if n != own]
    return scores[own], float(np.mean(others))


def _edge_scores(edges: torch.Tensor, reference_edges: torch.Tensor, scales: torch.Tensor, half: float) -> np.ndarray:
    """NCC of ``edges`` with ``reference_edges`` magnified by each scale about the centre, over the
    central square of half-width ``half`` (a fraction of the image's half-width); only that square
    of the magnified references is sampled."""
    h, w = edges.shape
    dh, dw = int(h * half / 2), int(w * half / 2)
    rows, cols = torch.arange(h // 2 - dh, h // 2 + dh), torch.arange(w // 2 - dw, w // 2 + dw)
    y, x = torch.meshgrid((2 * rows + 1) / h - 1, (2 * cols + 1) / w - 1, indexing="ij")  # grid_sample's frame
    grid = torch.stack([x, y], dim=-1)[None] / scales[:, None, None, None]
    source = reference_edges[None, None].expand(len(scales), -1, -1, -1)
    zoomed = F.grid_sample(source, grid.float(), mode="bilinear", padding_mode="border", align_corners=False)
    a = edges[rows][:, cols].flatten()
    a = (a - a.mean()) / a.std(correction=0).clamp_min(1e-12)  # zero mean: b's mean drops out of b @ a
    b = zoomed[:, 0].flatten(1)
    return (b @ a / (len(a) * b.std(1, correction=0).clamp_min(1e-12))).double().numpy()


def magnification(image: np.ndarray, reference: np.ndarray, search: tuple[float, float] = MAGNIFICATION_RANGE) -> float:
    """The scale ``s`` in ``search`` that maximises the edge NCC of ``image`` and ``reference`` magnified by ``s``.

    Both images are on one pixel grid; ``s`` is relative to the detector centre (see the module
    docstring). The NCC is taken over the central square of half-width ``search[0]`` times the
    image's, which stays inside the field of view for every ``s`` searched. The search is coarse
    to fine: steps of 0.01 on edge maps at half resolution, then of 0.001 about the best, refined
    by a parabola through the best fine step and its neighbours (resolution well below 0.1 %).
    """
    low, high = search
    if not 0 < low < 1 < high:
        raise CT2XError(f"the magnification search range must contain 1, got {search}")
    edges = torch.from_numpy(edge_map(image)).float()
    reference_edges = torch.from_numpy(edge_map(reference)).float()
    halved, reference_halved = (F.avg_pool2d(e[None], 2)[0] for e in (edges, reference_edges))
    coarse = torch.arange(low, high + 1e-9, 0.01, dtype=torch.float32)
    best = float(coarse[int(np.argmax(_edge_scores(halved, reference_halved, coarse, low)))])
    fine = torch.arange(max(low, best - 0.01), min(high, best + 0.01) + 1e-9, 0.001, dtype=torch.float32)
    scores = _edge_scores(edges, reference_edges, fine, low)
    index = int(np.argmax(scores))
    s = float(fine[index])
    if 0 < index < len(fine) - 1:
        left, mid, right = scores[index - 1 : index + 2]
        curvature = left - 2 * mid + right
        if curvature < 0:
            s += 0.5 * (left - right) / curvature * 0.001
    return s


def histogram_tv(a: np.ndarray, b: np.ndarray, bins: int = 64) -> float:
    """Total variation distance of the intensity histograms of two images in [0, 1] (``bins`` bins)."""
    p = np.histogram(np.clip(a, 0, 1), bins=bins, range=(0.0, 1.0))[0].astype(np.float64)
    q = np.histogram(np.clip(b, 0, 1), bins=bins, range=(0.0, 1.0))[0].astype(np.float64)
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def style_spread(images: Sequence[np.ndarray]) -> tuple[float, float]:
    """``(mean pairwise histogram TV, mean pairwise edge NCC)`` of one view in several styles.

    A style that changes the intensities gives a large TV; a style that keeps the anatomy a
    high edge NCC. Needs at least two images.
    """
    if len(images) < 2:
        raise CT2XError("the style effect compares at least 2 styles: use --styles 2 or more")
    edges = [edge_map(im) for im in images]
    pairs = list(combinations(range(len(images)), 2))
    tv = float(np.mean([histogram_tv(images[i], images[j]) for i, j in pairs]))
    agreement = float(np.mean([ncc(edges[i], edges[j]) for i, j in pairs]))
    return tv, agreement


def styled_drr(drr: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The DRR (any intensity range) with the intensity histogram of ``reference`` (float32, [0, 1])."""
    from skimage.exposure import match_histograms

    matched = match_histograms(np.asarray(drr, np.float64), np.asarray(reference, np.float64))
    return np.clip(matched, 0, 1).astype(np.float32)


def c2st_auc(first: np.ndarray, second: np.ndarray, folds: int = 5, seed: int = 0) -> tuple[float, float]:
    """Classifier two-sample test of two sets of feature vectors ``(N, F)`` and ``(M, F)``.

    A logistic regression (features standardised, L2 penalty ``C = 0.01``, classes weighted to
    balance them) is trained to tell the sets apart; returns the mean and standard deviation
    of its ROC AUC over ``folds`` stratified cross-validation folds (shuffled with ``seed``).
    Fewer folds are used when a set has fewer than ``folds`` vectors (at least 2 each). Two
    samples of one distribution score about 0.5; the *same* vectors in both sets do not (each test
    vector's twin is in the training folds with the other label, so the AUC falls below 0.5).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    splits = min(folds, len(first), len(second))
    if splits < 2:
        raise CT2XError(f"the two-sample test needs at least 2 images in each set, got {len(first)} and {len(second)}")
    features = np.concatenate([first, second])
    labels = np.concatenate([np.zeros(len(first)), np.ones(len(second))])
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, class_weight="balanced", max_iter=2000))
    folds_ = StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed)
    with threadpool_limits(1):  # BLAS threads beside torch's on a small CPU only wait for each other
        scores = cross_val_score(classifier, features, labels, cv=folds_, scoring="roc_auc")
    return float(scores.mean()), float(scores.std())


def frechet_distance(first: np.ndarray, second: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to two sets of feature vectors ``(N, F)``, ``(M, F)`` (the FID).

    ``|mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2)`` with the unbiased covariances
    ``S1 = A^T A / (N - 1)``, ``S2 = B^T B / (M - 1)`` of the centred features A, B. The non-zero
    eigenvalues of ``S1 S2`` are the squared singular values of ``A B^T / sqrt((N - 1)(M - 1))``, so
    ``tr sqrt(S1 S2)`` is that ``N x M`` matrix's nuclear norm: exact, without the ``F^3`` matrix
    square root (torchmetrics' eigenvalues of ``S1 S2``), and without its round-off.
    """
    a, b = np.asarray(first, np.float64), np.asarray(second, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise CT2XError(f"the FID needs at least 2 images in each set, got {len(a)} and {len(b)}")
    mean_a, mean_b = a.mean(0), b.mean(0)
    a, b = a - mean_a, b - mean_b
    scale = np.sqrt((len(a) - 1) * (len(b) - 1))
    trace_sqrt = np.linalg.svd(a @ b.T / scale, compute_uv=False).sum()
    traces = (a**2).sum() / (len(a) - 1) + (b**2).sum() / (len(b) - 1)
    return float(((mean_a - mean_b) ** 2).sum() + traces - 2 * trace_sqrt)

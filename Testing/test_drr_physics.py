"""Physics of ct2x.drr: spectra, materials, polyenergetic Beer–Lambert, Poisson noise, argument checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xraydb
from conftest import body_phantom

from ct2x.drr import deepdrr_backend, render_drr
from ct2x.drr.materials import COMPOSITIONS, MATERIALS, attenuation_table, hu_to_density, hu_to_material_index
from ct2x.drr.spectrum import get_spectrum, parse_name
from ct2x.errors import CT2XError
from ct2x.geometry import CArm
from ct2x.volume import CTVolume

#: A small odd detector so that the central pixel's ray is the principal ray.
SMALL = {"detector_shape": (5, 5), "pixel_spacing": (2.0, 2.0)}


def slab(hu: float, thickness_mm: float, spacing: float = 1.0, width: int = 20) -> CTVolume:
    """A block of ``hu`` centred on the origin, ``thickness_mm`` thick along P (the AP ray), ``width`` voxels wide."""
    depth = round(thickness_mm / spacing)
    array = np.full((width, depth, width), hu, dtype=np.float32)  # (K, J, I); J runs along P
    origin = -(np.array([width, depth, width]) - 1) / 2 * spacing
    return CTVolume(array, np.full(3, spacing), origin, np.eye(3))


def soft_tissue_mu_rho(energies_kev: np.ndarray) -> np.ndarray:
    """Soft tissue mu/rho (cm^2/g) mixed here straight from xraydb's elements (independent of ct2x.drr)."""
    comp = COMPOSITIONS["soft tissue"]
    return sum(w * xraydb.mu_elam(el, energies_kev * 1000.0) for el, w in comp.items()) / sum(comp.values())


# ------------------------------------------------------------------ spectrum


def test_spectrum_names_parse_and_weights_are_energy_integrating():
    assert parse_name("60KV_AL35") == (60, 3.5)
    assert parse_name("90kv_al40") == (90, 4.0)
    spec = get_spectrum("120KV_AL43")
    assert spec.name == "120KV_AL43" and spec.kvp == 120 and spec.aluminium_mm == pytest.approx(4.3)
    assert spec.energies_kev.max() < 120 and np.all(np.diff(spec.energies_kev) == pytest.approx(1.0))
    assert spec.weights.sum() == pytest.approx(1.0)
    ratio = spec.weights / (spec.energies_kev * spec.fluence)
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)
    # More aluminium hardens the beam: the mean energy goes up.
    soft, hard = get_spectrum("60KV_AL10"), get_spectrum("60KV_AL60")
    assert (hard.weights * hard.energies_kev).sum() > (soft.weights * soft.energies_kev).sum() + 1.0
    assert get_spectrum("60KV_AL35") is get_spectrum("60kv_al35")  # cached


@pytest.mark.parametrize("name", ["60KV", "AL35", "60KV_AL", "60 kV 3.5 mm", "", "5KV_AL35", "999KV_AL10"])
def test_bad_spectrum_name_is_a_one_line_error(name):
    with pytest.raises(CT2XError, match="60KV_AL35") as info:
        get_spectrum(name)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------- materials


def test_materials_and_density_follow_deepdrr():
    hu = torch.tensor([-1000.0, -800.0, -799.0, 0.0, 350.0, 351.0, 1500.0])
    assert hu_to_material_index(hu).tolist() == [0, 0, 1, 1, 1, 2, 2]
    expected = np.maximum(np.minimum(0.001029 * hu.numpy() + 1.030, 0.0005886 * hu.numpy() + 1.030), 0)
    np.testing.assert_allclose(hu_to_density(hu).numpy(), expected, rtol=1e-6)
    assert hu_to_density(torch.tensor([-3000.0])).item() == 0.0


def test_attenuation_comes_from_xraydb_and_is_plausible():
    energies = np.array([20.0, 40.0, 60.0, 80.0])
    table = attenuation_table(energies)
    assert table.shape == (len(MATERIALS), 4)
    np.testing.assert_allclose(table[MATERIALS.index("soft tissue")], soft_tissue_mu_rho(energies), rtol=1e-12)
    # Above 40 keV (Compton dominated) soft tissue attenuates like water per gram (NIST: within ~3%).
    water = xraydb.material_mu("water", energies[1:] * 1000.0)  # density 1 g/cm^3 -> mu/rho
    np.testing.assert_allclose(table[MATERIALS.index("soft tissue"), 1:], water, rtol=0.03)
    np.testing.assert_allclose(table[MATERIALS.index("air")], xraydb.material_mu("air", energies * 1000.0) / 0.001205,
                               rtol=0.03)  # fmt: skip
    assert np.all(table[MATERIALS.index("bone")] > table[MATERIALS.index("soft tissue")])
    assert np.all(np.diff(table, axis=1) < 0)  # no absorption edge between 20 and 80 keV for these


# ------------------------------------------------------------------- physics


@pytest.mark.parametrize("thickness_mm", [20.0, 60.0])
def test_water_slab_matches_analytic_beer_lambert(thickness_mm):
    spec = get_spectrum("60KV_AL35")
    drr = render_drr(slab(0.0, thickness_mm), CArm(**SMALL), step=0.1)
    # 0 HU is soft tissue in DeepDRR's thresholds, at 1.030 g/cm^3.
    area = 1.030 * thickness_mm / 10.0  # g/cm^2
    expected = -np.log(np.sum(spec.weights * np.exp(-soft_tissue_mu_rho(spec.energies_kev) * area)))
    assert drr[0, 2, 2].item() == pytest.approx(expected, rel=0.01)


def test_the_spectral_sum_over_chunks_of_pixels_is_each_pixels_own(monkeypatch):
    """Each pixel's energy-integrated transmission, however the view's pixels are split into chunks (a chunk
    size that divides neither the row nor the view, two views)."""
    from ct2x.drr import render

    monkeypatch.setattr(render, "SPECTRUM_PIXELS", 1000)
    area = (
        torch.rand(2, 3, 37, 41, generator=torch.Generator().manual_seed(1))
        * torch.tensor([0.01, 30.0, 5.0])[None, :, None, None]
    )
    spec = get_spectrum("60KV_AL35")
    mu = attenuation_table(spec.energies_kev)  # (M, E) cm^2/g
    exponents = np.einsum("me,vmhw->vehw", mu.astype(np.float64), area.double().numpy())
    expected = np.einsum("e,vehw->vhw", np.asarray(spec.weights, np.float64), np.exp(-exponents))
    np.testing.assert_allclose(render.transmitted_fraction(area).numpy(), expected, rtol=1e-5, atol=1e-12)


def test_beam_hardening_lowers_attenuation_per_mm_with_thickness():
    view = CArm(**SMALL)
    thin = render_drr(slab(0.0, 10.0), view)[0, 2, 2].item() / 10.0
    thick = render_drr(slab(0.0, 80.0), view)[0, 2, 2].item() / 80.0
    assert thick < 0.95 * thin


def test_bone_attenuates_more_than_soft_tissue():
    view = CArm(**SMALL)
    bone = render_drr(slab(1000.0, 30.0), view)[0, 2, 2].item()
    soft = render_drr(slab(50.0, 30.0), view)[0, 2, 2].item()
    with pytest.warns(UserWarning, match="a DRR is empty"):  # air only: nothing but air on any ray
        air = render_drr(slab(-1000.0, 30.0), view)[0, 2, 2].item()
    assert bone > 2 * soft > 0
    assert 0 < air < 0.01 * soft


def test_drr_grows_with_path_length_and_is_zero_off_the_volume():
    view = CArm(detector_shape=(9, 31), pixel_spacing=(4.0, 4.0))
    drr = render_drr(slab(0.0, 40.0, width=20), view)[0]
    assert drr[4, 15].item() > 0
    assert drr[4, 0].item() == 0.0  # this ray misses the 20 mm wide slab
    assert torch.all(drr >= 0)


def test_noise_std_scales_as_one_over_sqrt_photons():
    volume = slab(0.0, 40.0, spacing=2.0, width=40)
    view = CArm(detector_shape=(48, 48), pixel_spacing=(1.0, 1.0))
    clean = render_drr(volume, view, step=0.5)
    std = {}
    for photons in (1e4, 1e6):
        noisy = render_drr(volume, view, step=0.5, photons=photons, seed=3)
        std[photons] = (noisy - clean).std().item()
    assert std[1e4] / std[1e6] == pytest.approx(10.0, rel=0.1)
    # Poisson statistics: std of -log(counts/N0) ~ 1 / sqrt(N0 * T).
    transmitted = torch.exp(-clean).mean().item()
    assert std[1e4] == pytest.approx(1 / np.sqrt(1e4 * transmitted), rel=0.1)


def test_noise_is_reproducible_with_a_seed():
    volume, view = body_phantom(24, 4.0), CArm(detector_shape=(16, 16), pixel_spacing=(8.0, 8.0))
    a = render_drr(volume, view, step=0.5, photons=1e3, seed=7)
    b = render_drr(volume, view, step=0.5, photons=1e3, seed=7)
    c = render_drr(volume, view, step=0.5, photons=1e3, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


# ------------------------------------------------------------ argument checks


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step": 0}, "step"),
        ({"step": -0.1}, "step"),
        ({"photons": 0}, "photons"),
        ({"photons": -5}, "photons"),
        ({"backend": "optix"}, "backend"),
        ({"spectrum": "sixty"}, "KV_AL"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_arguments_raise_ct2x_errors(kwargs, message):
    with pytest.raises(CT2XError, match=message) as info:
        render_drr(body_phantom(8), CArm(**SMALL), **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(CT2XError, match="cuda"):
        render_drr(body_phantom(8), CArm(**SMALL), device="cuda")


@pytest.mark.skipif(deepdrr_backend.available(), reason="DeepDRR and CUDA are present")
def test_deepdrr_backend_without_deepdrr_says_how_to_install_it():
    with pytest.raises(CT2XError, match=r"pip install ct2x\[deepdrr\]"):
        render_drr(body_phantom(8), CArm(**SMALL), backend="deepdrr")
    # "auto" falls back to the torch backend.
    auto = render_drr(body_phantom(8), CArm(**SMALL), backend="auto")
    assert torch.equal(auto, render_drr(body_phantom(8), CArm(**SMALL), backend="torch"))


@pytest.mark.skipif(
    not deepdrr_backend.available(),
    reason="DeepDRR backend is GPU-only: needs `pip install ct2x[deepdrr]` and an NVIDIA CUDA GPU",
)
def test_deepdrr_backend_agrees_with_torch_backend():
    volume = body_phantom(48, 2.0)
    views = [CArm(primary=a, detector_shape=(64, 64), pixel_spacing=(4.0, 4.0)) for a in (-30.0, 0.0, 45.0)]
    ours = render_drr(volume, views, backend="torch", device="cuda").cpu().numpy()
    theirs = render_drr(volume, views, backend="deepdrr").cpu().numpy()
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] >= 0.99

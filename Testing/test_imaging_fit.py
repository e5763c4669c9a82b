"""Fitting the imaging chain's look to a reference radiograph (ct2x.imaging.fit): known parameters recovered from
an image the chain made of a phantom built in code, different targets give different fits, bad inputs are
one-line errors, and two real chest films give two different looks of one real CT."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import shared_file

from ct2x.errors import CT2XError
from ct2x.geometry import CArm
from ct2x.imaging import PRESETS, ImagingParameters, simulate
from ct2x.imaging.filters import gaussian_blur
from ct2x.imaging.fit import DOSE_FLOOR, band_energies, film_image, fit_style, histogram_distance
from ct2x.imaging.parameters import BAND_SCALES_MM, RANGES

BASE = PRESETS["mobile_carm_flat_panel"].parameters
#: 256 pixels of 0.4 mm: pyramid levels of 0.6-9.6 mm, so the 1, 2, 4 and 8 mm octaves are seen.
VIEW = CArm(0.0, 0.0, 1020.0, 530.0, (256, 256), (0.4, 0.4))
#: A sharp, contrasty, noisy look (a bit like a bedside film) and a soft, clean one.
SHARP = dataclasses.replace(BASE, band_gains=(2.2, 2.0, 1.6, 1.2, 0.9, 0.8), tone_contrast=7.0,
                            window_percentiles=(2.0, 98.0), mas=0.12, mtf_nyquist=0.12)  # fmt: skip
SOFT = dataclasses.replace(BASE, band_gains=(1.0, 1.1, 1.2, 1.3, 1.2, 1.0), tone_contrast=2.0, mas=1.5,
                           mtf_nyquist=0.4)  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread(one_thread):  # noqa: ANN001, ANN202 (conftest's fixture)
    yield


def chest_phantom(view: CArm, seed: int = 0) -> torch.Tensor:
    """Area densities ``(3, H, W)`` g/cm^2 of a chest-like crop filling the field: soft tissue 13-23 g/cm^2 with
    a gradient, two lungs (10 g/cm^2 less) with a vessel-like texture, a spine, ribs and three bone nodules."""
    height, width = view.detector_shape
    rows, columns = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    lungs = sum(torch.sigmoid(12 * (1 - ((rows + 0.1) / 0.8) ** 2 - ((columns - side * 0.5) / 0.38) ** 2))
                for side in (-1, 1))  # fmt: skip
    texture = gaussian_blur(torch.randn(height, width, generator=torch.Generator().manual_seed(seed)), (1.5, 1.5))
    area = torch.zeros(3, height, width)
    area[1] = 20.0 + 3.0 * rows - 2.0 * columns**2 - 10.0 * lungs + lungs * texture / texture.std()
    ribs = (torch.sin(22 * rows + 3 * columns**2) > 0.5).float() * (columns.abs() > 0.12)
    nodules = sum(((rows - y) ** 2 + (columns - x) ** 2 < r**2).float()
                  for y, x, r in ((-0.5, 0.6, 0.05), (0.5, -0.6, 0.08), (0.2, 0.45, 0.03)))  # fmt: skip
    area[2] = 0.5 * ribs + 2.5 * torch.sigmoid(80 * (0.1 - columns.abs())) + 0.8 * nodules
    return area.clamp_min(0.0)


@pytest.fixture(scope="module")
def scene() -> tuple[torch.Tensor, object]:
    """The phantom and the chain's run on it with the base parameters (what a fit starts from)."""
    area = chest_phantom(VIEW)
    return area, simulate(area, VIEW, BASE, seed=1)


def levels(image: torch.Tensor) -> np.ndarray:
    return np.array([std for _, std in band_energies(image, VIEW)[0]])


def display_noise(area: torch.Tensor, parameters: ImagingParameters) -> float:
    """The standard deviation of the display's noise: the difference of two noise draws over root 2."""
    first, second = (simulate(area, VIEW, parameters, seed=seed).image for seed in (20, 21))
    return float(((first - second) / 2**0.5)[8:-8, 8:-8].std())


def test_the_fit_recovers_known_parameters_from_an_image_the_chain_made(scene):
    """Tolerances: each band gain the pyramid sees (1-8 mm) within 20 %; the display's noise within 25 % of the
    target's; the dose within a factor 2.5 and the detector MTF in its range (they trade against each other:
    a sharper detector's noise looks like less dose's, and the noise's grain is measured roughly); re-rendered
    with the fit (a fresh noise draw), the histogram's total variation under 0.05 and each band's energy within
    15 %."""
    area, stages = scene
    target = simulate(area, VIEW, SHARP, seed=2).image
    fitted = fit_style(target, stages, VIEW, BASE)
    for k, scale in enumerate(BAND_SCALES_MM):
        if scale <= 8.0:
            assert fitted.band_gains[k] == pytest.approx(SHARP.band_gains[k], rel=0.2), (k, fitted.band_gains)
    assert display_noise(area, fitted) == pytest.approx(display_noise(area, SHARP), rel=0.25)
    assert 1 / 2.5 < fitted.mas / SHARP.mas < 2.5 and RANGES["mtf_nyquist"][0] <= fitted.mtf_nyquist <= 0.45
    assert len(fitted.tone_points) > 2 and fitted.residual_gain == BASE.residual_gain  # kept from the base
    again = simulate(area, VIEW, fitted, seed=3).image
    unfitted = simulate(area, VIEW, BASE, seed=3).image
    assert histogram_distance(again, target) < 0.05 < 0.15 < histogram_distance(unfitted, target)
    np.testing.assert_allclose(levels(again), levels(target), rtol=0.15)
    assert np.abs(levels(unfitted) / levels(target) - 1).max() > 0.3  # the unfitted look is far off
    assert display_noise(area, BASE) < 0.5 * display_noise(area, SHARP)


def test_more_noise_than_the_dose_floor_gives_is_fitted_as_structure_noise(scene):
    """A target far noisier than the base's dose at half its exposure gives (a film's grain, a copy's): the dose
    stops at DOSE_FLOOR of the base's and the detector's structure noise makes up the rest, so the display's
    noise matches within 25 % where the floor's quantum noise alone stays well short of it."""
    area, _ = scene
    base = dataclasses.replace(BASE, mas=3.0)
    grainy = dataclasses.replace(base, structure_noise=0.08)
    target = simulate(area, VIEW, grainy, seed=2).image
    fitted = fit_style(target, simulate(area, VIEW, base, seed=1), VIEW, base)
    assert fitted.mas == pytest.approx(DOSE_FLOOR * base.mas) and fitted.structure_noise > 0.03
    assert display_noise(area, fitted) == pytest.approx(display_noise(area, grainy), rel=0.25)
    floor_only = dataclasses.replace(fitted, structure_noise=0.0)
    assert display_noise(area, floor_only) < 0.7 * display_noise(area, grainy)


def test_different_targets_give_different_fits(scene):
    area, stages = scene
    targets = [simulate(area, VIEW, known, seed=2).image for known in (SHARP, SOFT)]
    sharp, soft = (fit_style(target, stages, VIEW, BASE) for target in targets)
    assert sharp.band_gains[0] > 1.5 * soft.band_gains[0] and sharp.mas < soft.mas / 4
    assert np.abs(np.subtract(sharp.tone_points, soft.tone_points)).max() > 0.05
    renders = [simulate(area, VIEW, fitted, seed=4).image for fitted in (sharp, soft)]
    for own, (render, target) in enumerate(zip(renders, targets, strict=True)):
        other = targets[1 - own]
        assert histogram_distance(render, target) < 0.5 * histogram_distance(render, other)


def test_a_log_image_alone_fits_the_look_and_keeps_the_noise(scene):
    area, stages = scene
    target = simulate(area, VIEW, SOFT, seed=2).image
    fitted = fit_style(target.numpy(), stages.log, VIEW, BASE)
    assert (fitted.mas, fitted.mtf_nyquist) == (BASE.mas, BASE.mtf_nyquist)
    assert fitted.band_gains != BASE.band_gains and fitted.tone_points
    assert histogram_distance(simulate(area, VIEW, fitted, seed=3).image, target) < 0.05


def test_films_are_read_from_unit_8_bit_and_16_bit_values():
    ramp = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    expected = ramp[None]
    for film, atol in [(ramp, 1e-6), ((ramp * 255).round().astype(np.uint8), 3e-3),
                       ((ramp * 65535).round().astype(np.uint16), 1e-5), ((ramp * 255).round(), 3e-3)]:  # fmt: skip
        np.testing.assert_allclose(film_image(film, (1, 64, 64)).numpy(), expected, rtol=0.0, atol=atol)


def test_bad_inputs_are_one_line_errors(scene):
    _, stages = scene
    film = simulate(chest_phantom(VIEW), VIEW, BASE, seed=5).image.numpy()
    nan_film, nan_log = film.copy(), stages.log.clone()
    nan_film[3, 4], nan_log[5, 6] = np.nan, np.nan
    cases = [
        (lambda: fit_style(film[:100], stages, VIEW, BASE), "the film must be a 2-D grey image (256, 256)"),
        (lambda: fit_style(np.stack([film] * 3, -1), stages, VIEW, BASE), "got shape (256, 256, 3)"),
        (lambda: fit_style(np.full((256, 256), 0.4), stages, VIEW, BASE), "the film is constant"),
        (lambda: fit_style(nan_film, stages, VIEW, BASE), "the film has 1 NaN or infinite pixels"),
        (lambda: fit_style(film - 1.0, stages, VIEW, BASE), "the film's values must be in [0, 1] or 8/16-bit"),
        (lambda: fit_style(film.astype(bool), stages, VIEW, BASE), "give the film as a grey image of numbers"),
        (lambda: fit_style(film, nan_log, VIEW, BASE), "the log image has 1 NaN or infinite pixels"),
        (lambda: fit_style(film, torch.zeros(256, 256), VIEW, BASE), "the log image is constant"),
        (lambda: fit_style(film, stages.log.numpy(), VIEW, BASE), "give the chain's log image as a tensor"),
        (lambda: fit_style(film, stages, [], BASE), "give one or more ct2x.geometry.CArm views"),
        (lambda: fit_style(film, stages, VIEW, "chest"), "unknown imaging preset 'chest'"),
    ]
    for call, message in cases:
        with pytest.raises(CT2XError) as error:
            call()
        assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


def _film(path: str, size: int) -> np.ndarray:
    """A film's centre crop (0.4 of its shorter side), resized to ``size`` pixels, 8-bit grey."""
    from PIL import Image

    with Image.open(path) as image:
        grey = np.asarray(image.convert("L"))
    height, width = grey.shape
    side = int(0.4 * min(height, width))
    top, left = (height - side) // 2, (width - side) // 2
    crop = Image.fromarray(grey[top : top + side, left : left + side])
    return np.asarray(crop.resize((size, size), Image.BILINEAR))


def _edges(image: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude of the image smoothed over 1.5 pixels (the anatomy's edges), away from the border."""
    rows, columns = torch.gradient(gaussian_blur(image, (1.5, 1.5)))
    return torch.sqrt(rows**2 + columns**2)[4:-4, 4:-4].flatten()


def test_two_real_chest_films_give_two_looks_of_one_real_ct():
    """A real chest CT through the mobile C-arm's flat panel, fitted to two real chest films of different looks:
    the two outputs differ (histogram, band energies) as the films do, their edges agree (the same anatomy), and
    each output's histogram is closer to its film than the unfitted preset's output is."""
    from ct2x.drr import area_densities
    from ct2x.volume import read_ct

    ct = read_ct(shared_file("ct/tcia-cptac-lscc_C3N-00247_chest.nii.gz"))
    films = [shared_file(f"xray/chest/hannover-mhh_{name}.png") for name in ("006f3a8a", "00870a9c")]
    preset = PRESETS["mobile_carm_flat_panel"]
    view = preset.view(128, isocenter=tuple(ct.center_lps))
    area = area_densities(ct, [view], step=1.0, backend="torch")[0]  # numba's threads would slow the chain here
    stages = simulate(area, view, preset.parameters, seed=0)
    unfitted = simulate(area, view, preset.parameters, seed=1).image
    outputs, references = [], []
    for path in films:
        film = _film(str(path), 128)
        fitted = fit_style(film, stages, view, preset.parameters)
        outputs.append(simulate(area, view, fitted, seed=1).image)
        references.append(torch.from_numpy(film / 255.0).float())
    for output, reference in zip(outputs, references, strict=True):
        assert histogram_distance(output, reference) < 0.1 < 0.3 < histogram_distance(unfitted, reference)
    first, second = outputs
    assert histogram_distance(first, second) > 0.3
    energies = [np.array([std for _, std in band_energies(image, view)[0]]) for image in outputs]
    assert np.abs(energies[1] / energies[0] - 1).max() > 0.3
    agreement = float(torch.corrcoef(torch.stack([_edges(first), _edges(second)]))[0, 1])
    unrelated = float(torch.corrcoef(torch.stack([_edges(first), _edges(references[0])]))[0, 1])
    assert agreement > 0.6 and agreement > unrelated + 0.3, (agreement, unrelated)


def test_styled_fits_the_body_not_the_air_beside_it() -> None:
    """``styled`` fits the look on the body only (rays through more than BODY_CM of water): a film of a patient
    edge to edge is matched by the body's grey levels, and the air beside the body in the CT's view does not
    flatten them; the fitted gains stay in the console's range."""
    from ct2x.imaging import styled
    from ct2x.imaging.fit import GAIN_LIMITS
    from ct2x.imaging.style import BODY_CM

    view = CArm(0.0, 0.0, 1020.0, 530.0, (128, 128), (0.8, 0.8))
    body = chest_phantom(CArm(0.0, 0.0, 1020.0, 530.0, (64, 64), (0.8, 0.8)))
    area = torch.zeros(3, 128, 128)
    area[:, 32:96, 32:96] = body  # the patient fills the middle quarter; air around it
    target = simulate(chest_phantom(view), view, SHARP, seed=5).image  # the same kind of patient, edge to edge
    made = styled(area[None], [view], target.numpy(), BASE, seed=0)
    stages = simulate(area, view, BASE, seed=0)
    inside = stages.thickness > BODY_CM
    whole = simulate(area, view, fit_style(target, stages, view, BASE), seed=1).image

    def distance(values: torch.Tensor) -> float:  # total variation of the grey-level histograms, the film's there
        p, q = (np.histogram(x.numpy(), 32, (0.0, 1.0))[0] for x in (values, target[inside]))
        return 0.5 * float(np.abs(p / p.sum() - q / q.sum()).sum())

    body_distance, whole_distance = distance(made.image[0][inside]), distance(whole[inside])
    assert body_distance < 0.1 and body_distance < whole_distance / 3, (body_distance, whole_distance)
    assert all(GAIN_LIMITS[0] <= g <= GAIN_LIMITS[1] for g in made.parameters.band_gains)
    assert made.image.shape == (1, 128, 128)


def test_a_film_s_look_is_fitted_over_ap_the_obliques_and_the_laterals_of_the_view_s_geometry(monkeypatch) -> None:
    """``fitted_look`` (the one rule of ``ct2x drr --style``, the Slicer panel, a chain-anchored synthesis and the
    evaluation's chain row) pools the fit over the views of ``FIT_PRIMARIES_DEG`` at the asked view's distances and
    isocenter, whatever its angles: two views of one geometry get one look."""
    from conftest import body_phantom

    import ct2x.synthesize
    from ct2x.drr import coverage
    from ct2x.geometry import FIT_PRIMARIES_DEG
    from ct2x.synthesize import fitted_look

    fitted_over = []
    real_fitted = ct2x.synthesize.fitted
    monkeypatch.setattr(ct2x.synthesize, "fitted", lambda area, views, *a, **k: fitted_over.append((views, k))
                        or real_fitted(area, views, *a, **k))  # fmt: skip
    ct = body_phantom(size=16, spacing=6.0)
    film = np.linspace(0.2, 0.9, 48 * 48).reshape(48, 48).astype(np.float32)
    looks = [
        fitted_look(
            ct,
            CArm(angle, 10.0, 900.0, 480.0, (64, 48), (1.0, 1.0), (2.0, 0.0, 0.0)),
            film,
            "mobile_carm_flat_panel",
            pixels=32,
        )  # fmt: skip
        for angle in (30.0, -60.0)
    ]
    assert looks[0] == looks[1]
    for views, keywords in fitted_over:
        assert tuple(v.primary for v in views) == FIT_PRIMARIES_DEG and all(v.secondary == 0.0 for v in views)
        torch.testing.assert_close(keywords["covered"], coverage(ct, views))  # fitted where the CT covers the field
        assert {(v.sdd, v.sid, v.isocenter, v.detector_shape, v.pixel_spacing) for v in views} == {
            (900.0, 480.0, (2.0, 0.0, 0.0), (32, 32), (1.5, 1.5))
        }
    assert len(fitted_over) == 2


def test_the_look_is_fitted_where_the_ct_covers_the_field_not_to_the_ct_s_cut() -> None:
    """Where a view's field reaches past the CT's ends, those rows show the CT's cut (a step no film has).
    Fitted where the CT covers the field (``styled(covered=...)``: ``fit_area``'s coverage), the output's band
    energies there match the film's; fitted over the whole body, the cut's step pulls them off."""
    from ct2x.imaging import styled

    cut = chest_phantom(VIEW)
    cut[:, :40] *= 0.15  # rows whose rays leave through the CT's first or last slice
    cut[:, 216:] *= 0.15
    covered = torch.zeros(1, 256, 256, dtype=torch.bool)
    covered[:, 40:216] = True
    film = simulate(chest_phantom(VIEW, seed=3), VIEW, SHARP, seed=5).image.numpy()

    def levels_there(image: torch.Tensor) -> np.ndarray:
        return np.array([std for _, std in band_energies(image.reshape(256, 256), VIEW, covered[0].float())[0]])

    wanted = levels_there(torch.from_numpy(film))
    error = {}
    for name, where in (("covered", covered), ("body", None)):
        made = styled(cut[None], [VIEW], film, BASE, seed=0, covered=where).image
        error[name] = float(np.nanmean(np.abs(np.log(levels_there(made) / wanted))))
    assert error["covered"] < 0.06 and error["body"] > 2 * error["covered"], error

"""The ``projected`` preset end to end on phantoms: random views, projection images, fresh
radiograph draws, D_X's field-of-view crops, the physics anchor and its loss terms, training,
and one inference path.

Models here are randomly initialised or trained for a few steps on phantoms: these tests check
the plumbing and the geometry, never image quality; no number from them is reported.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import body_phantom
from PIL import Image
from safetensors.torch import load_file

from ct2x.checkpoint import load_model
from ct2x.config import CT2XConfig
from ct2x.data.dataset import CTViewDataset, StepSampler
from ct2x.data.prepare import PROJECTION_CHANNELS, PrepareSettings, prepare_dataset
from ct2x.data.radiographs import read_radiograph
from ct2x.drr import area_densities, drr_from_area, mip, render_drr
from ct2x.errors import CT2XError
from ct2x.evaluation.measures import edge_map
from ct2x.geometry import CArm, matched_chain, pose_field_of_view_mm
from ct2x.imaging.filters import gaussian_blur
from ct2x.losses import edge_loss, edge_maps, histogram_loss
from ct2x.models import CT2XGAN
from ct2x.models.inputs import output_image, projection_densities, projection_input
from ct2x.models.physics_anchor import ToneCurve, detail_of, physics_base
from ct2x.synthesize import model_views, synthesize
from ct2x.train import TrainOptions, train
from ct2x.volume import read_ct

TINY = {"preset": "projected", "image_size": 64, "batch_size": 2, "lpips_backbone": "random", "xray_d_channels": 8}
CONFIG = CT2XConfig.from_dict(TINY)
SETTINGS = PrepareSettings(detector_size=64, step=0.5, photons=0, grid_size=32, random_views=6, projections=True)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """2 phantom CTs prepared at 6 random views with projections, and 6 phantom radiographs."""
    root = tmp_path_factory.mktemp("projected")
    for n, (size, shift) in enumerate([(24, 0.0), (20, 30.0)]):
        volume = body_phantom(size=size, spacing=4.0)
        image = sitk.GetImageFromArray(volume.array)
        image.SetSpacing(tuple(volume.spacing))
        image.SetOrigin(tuple(volume.origin + shift))
        (root / "cts").mkdir(exist_ok=True)
        sitk.WriteImage(image, str(root / "cts" / f"ct{n}.nii.gz"))
    prepare_dataset(root / "cts", root / "data", SETTINGS, workers=1, progress=False)
    rng = np.random.default_rng(0)
    (root / "xray").mkdir()
    for n in range(6):
        pixels = rng.uniform(0, 255, (90, 80)) * np.linspace(0.2, 1, 80)[None, :]
        Image.fromarray(pixels.astype(np.uint8)).save(root / "xray" / f"{n}.png")
    return {"root": root, "data": root / "data", "xray": root / "xray"}


def test_matched_chain_runs_from_mobile_c_arm_to_chest_film() -> None:
    assert matched_chain(530.0) == pytest.approx((1020.0, 1536 * 0.194))
    assert matched_chain(1800.0) == pytest.approx((1900.0, 430.0))
    sdd, width = matched_chain(1000.0)
    assert 1000.0 < sdd < 1900.0 and 298.0 < width < 430.0
    carm = CArm(sid=1000.0, sdd=sdd, detector_shape=(64, 64), pixel_spacing=(width / 64, width / 64))
    assert pose_field_of_view_mm(carm.pose) == pytest.approx(width * 1000.0 / sdd)


def test_random_views_fill_the_ranges_and_repeat_per_ct() -> None:
    settings = PrepareSettings(detector_size=32, random_views=400)
    carms = settings.views((1.0, 2.0, 3.0), seed=7)
    primary = np.array([c.primary for c in carms])
    secondary = np.array([c.secondary for c in carms])
    sid = np.array([c.sid for c in carms])
    assert primary.min() < -80 and primary.max() > 80 and np.abs(primary).max() <= 90
    assert secondary.min() < -25 and secondary.max() > 25 and np.abs(secondary).max() <= 30
    assert sid.min() < 500 and sid.max() > 1700
    for c in carms[:20]:
        assert (c.sdd, c.detector_shape[1] * c.pixel_spacing[1]) == pytest.approx(matched_chain(c.sid))
        assert c.isocenter == (1.0, 2.0, 3.0)
    again = settings.views((1.0, 2.0, 3.0), seed=7)
    assert [c.pose.tolist() for c in again] == [c.pose.tolist() for c in carms]
    other = settings.views((1.0, 2.0, 3.0), seed=8)
    assert other[0].primary != carms[0].primary


def test_prepare_stores_projections_the_drr_is_made_of(inputs: dict[str, Path]) -> None:
    manifest = json.loads((inputs["data"] / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["settings"]["random_views"] == 6 and manifest["settings"]["projections"]
    entry = manifest["volumes"][0]
    stored = load_file(inputs["data"] / "volumes" / entry["file"])
    assert stored["projections"].shape == (6, len(PROJECTION_CHANNELS), 64, 64)
    ct = read_ct(entry["source"])
    poses = stored["poses"].numpy()
    carms = [CArm.from_pose(p, (64, 64), (w / 64, w / 64)) for p, w in ((p, matched_chain(_sid(p))[1]) for p in poses)]
    carms = [CArm(c.primary, c.secondary, c.sdd, c.sid, c.detector_shape, c.pixel_spacing, _iso(ct)) for c in carms]
    area = area_densities(ct, carms, step=0.5)
    np.testing.assert_allclose(stored["projections"][:, :3].float().numpy(), area.numpy(), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(stored["projections"][:, 3].float().numpy(), mip(ct, carms, step=0.5).numpy(), atol=1.0)
    # the stored DRR is the polyenergetic physics of those area densities, and render_drr's image
    np.testing.assert_allclose(stored["drr"].numpy(), drr_from_area(area).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stored["drr"].numpy(), render_drr(ct, carms, step=0.5).numpy(), rtol=1e-4, atol=1e-4)


def _sid(pose: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(pose)[[3, 7, 11]])) * 1000.0


def _iso(ct) -> tuple[float, float, float]:  # noqa: ANN001
    from ct2x.volume import preprocess

    return tuple(float(c) for c in preprocess(ct, size=32).center_lps)


def test_radiograph_draws_differ_between_epochs_and_repeat_on_resume(inputs: dict[str, Path]) -> None:
    dataset = CTViewDataset(inputs["data"], inputs["xray"], CONFIG)
    assert len(dataset) == 12 and dataset.view_counts == [6, 6]
    sampler = iter(StepSampler(len(dataset), 2, seed=0))
    numbers = [pair for _ in range(12) for pair in next(sampler)]  # two epochs of 12 samples
    first = {index: dataset[(index, n)]["xray"] for index, n in numbers[:12]}
    second = {index: dataset[(index, n)]["xray"] for index, n in numbers[12:]}
    assert sorted(first) == sorted(second) == list(range(12))  # every sample once per epoch
    changed = sum(not torch.equal(first[i], second[i]) for i in range(12))
    assert changed >= 6  # 6 radiographs: most samples get another one in the next epoch
    resumed = iter(StepSampler(len(dataset), 2, seed=0, start_step=6))
    assert next(resumed) == numbers[12:14]


def test_xray_discriminator_reals_are_cropped_to_the_view_field(inputs: dict[str, Path], tmp_path: Path) -> None:
    """A radiograph covering ``radiograph_field_mm`` is cropped to the view's field at the isocenter."""
    field = tmp_path / "field"
    field.mkdir()
    pixels = np.zeros((400, 400), np.uint8)  # a 400 mm film, 1 mm pixels: a bright 100 mm centre square
    pixels[150:250, 150:250] = 255
    Image.fromarray(pixels).save(field / "film.png")
    dataset = CTViewDataset(inputs["data"], field, CONFIG.replace(radiograph_field_mm=400.0))
    for index in range(len(dataset)):
        sample = dataset[index]
        fov = pose_field_of_view_mm(sample["pose"].numpy())
        bright = float((sample["xray_real"] > 0).float().mean())
        # the bright square fills (100 / fov)^2 of the crop (the crop moves by at most a tenth)
        assert bright == pytest.approx(min(1.0, (100.0 / min(fov, 400.0)) ** 2), abs=0.08)
        assert sample["projections"].shape == (4, 64, 64)


def test_projection_input_scales_each_channel() -> None:
    raw = torch.zeros(1, 4, 8, 8)
    raw[:, 0], raw[:, 1], raw[:, 2], raw[:, 3] = 2.0, 30.0, 10.0, CONFIG.hu_max
    scaled = projection_input(raw, CONFIG)
    assert scaled.shape == (1, 4, 64, 64)
    torch.testing.assert_close(scaled, torch.ones_like(scaled))
    # the densities come back in g/cm^2 (what the physics anchor's base is drawn from)
    densities = torch.tensor([2.0, 30.0, 10.0])[None, :, None, None].expand(1, 3, 64, 64)
    torch.testing.assert_close(projection_densities(scaled, CONFIG), densities)


def test_projected_training_and_one_inference_path(inputs: dict[str, Path], tmp_path: Path) -> None:
    """Train 3 steps, then the same view from synthesize and from the evaluation's reconstruction path
    (the stored inputs through CT2XGAN.view_content / render) agree."""
    options = TrainOptions(
        data=inputs["data"], xray=inputs["xray"], out=tmp_path / "run", steps=3, workers=0, progress=False,
        checkpoint_every=2, log_every=1, image_every=3,
    )  # fmt: skip
    path = train(CONFIG, options)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("dx/total" in m and "g/xray_adv" in m for m in metrics)
    assert all(np.isfinite(m["dx/real_score"]) for m in metrics)
    model, card = load_model(path)
    assert model.projection_encoder is not None and model.xray_discriminator is not None
    assert not any(k.startswith("xray_discriminator.") for k in load_file(str(path)))
    # synthesize draws the projections itself; at the stored pose it must see what training saw
    dataset = CTViewDataset(inputs["data"], inputs["xray"], model.config)
    entry = json.loads((inputs["data"] / "manifest.json").read_text(encoding="utf-8"))["volumes"][0]
    ct = read_ct(entry["source"])
    sample = dataset[0]
    pose = sample["pose"].numpy()
    width = matched_chain(_sid(pose))[1]
    carm = CArm.from_pose(pose, (64, 64), (width / 64, width / 64))
    carm = CArm(carm.primary, carm.secondary, carm.sdd, carm.sid, (64, 64), carm.pixel_spacing, _iso(ct))
    code = model.style_encoder.xray_style(sample["xray"][None])[0]
    (view,) = synthesize(model, ct, [carm], style_code=code)
    with torch.no_grad():
        content = model.view_content(*(sample[k][None] for k in ("volume", "pose")), _pam_mip(model, ct, carm),
                                     sample["projections"][None])  # fmt: skip
        stored = output_image(model.render(content, code[None]))[0, 0].numpy()
    # the stored projections were marched at step 0.5 and kept as float16, synthesis marches at 0.1:
    # a few edge pixels differ by a few hundredths, the image as a whole agrees
    difference = np.abs(view.image - stored)
    assert difference.mean() < 0.005 and difference.max() < 0.1
    carms = model_views(model.config, card, ct, [0.0])
    assert synthesize(model, ct, carms, style_code=code)[0].image.shape == (64, 64)
    # the physics anchor renders at any detector size (the residual resized, the base at its pixels)
    assert synthesize(model, ct, [CArm(detector_shape=(32, 48))], style_code=code)[0].image.shape == (32, 48)


def _pam_mip(model, ct, carm: CArm) -> torch.Tensor:  # noqa: ANN001
    """The PAM's MIP exactly as synthesis reads it (from the model's grid)."""
    from ct2x.models.inputs import mip_input
    from ct2x.synthesize import mip_views, prepare_ct

    prepared = prepare_ct(model, ct)
    return mip_input(mip(prepared.grid, mip_views([carm], model.config), step=model.config.drr_step), model.config)[
        :, None
    ]


def test_projected_preset_refuses_a_dataset_without_projections(inputs: dict[str, Path], tmp_path: Path) -> None:
    settings = PrepareSettings(angles=(0.0,), detector_size=64, step=0.5, photons=0, grid_size=32, projections=False)
    prepare_dataset(inputs["root"] / "cts", tmp_path / "plain", settings, workers=1, progress=False)
    with pytest.raises(CT2XError, match="--projections"):
        CTViewDataset(tmp_path / "plain", inputs["xray"], CONFIG)


# ----------------------------------------------------------------------------- the physics anchor


def test_physics_base_is_the_noise_free_drr_of_the_view(inputs: dict[str, Path]) -> None:
    """B, computed inside the model from the projection images, is the view's stored (noise-free) DRR."""
    dataset = CTViewDataset(inputs["data"], inputs["xray"], CONFIG)
    samples = [dataset[i] for i in (0, 5, 7)]
    base = physics_base(torch.stack([s["projections"] for s in samples]), CONFIG)
    drr = torch.stack([s["drr"] for s in samples])
    assert base.shape == drr.shape == (3, 1, 64, 64)
    assert float((base - drr).abs().max()) < 0.02  # float16 storage of the area densities
    assert float((base[0] - base[2]).abs().mean()) > 0.05  # another CT, another image


def test_tone_curve_starts_as_the_identity_and_stays_monotone() -> None:
    torch.manual_seed(0)
    curve = ToneCurve(CONFIG)
    ramp = torch.linspace(-1, 1, 101).view(1, 1, 1, 101).expand(2, 1, 1, 101)
    style = torch.randn(2, CONFIG.num_style_layers, CONFIG.w_dim)
    torch.testing.assert_close(curve(ramp, style), ramp, atol=1e-5, rtol=0)
    torch.nn.init.normal_(curve.slopes.weight, std=0.5)
    toned = curve(ramp, style)
    assert bool((toned[..., 1:] >= toned[..., :-1] - 1e-6).all())  # monotone: no edge moves or flips
    assert float((toned[0] - toned[1]).abs().max().detach()) > 0.05  # another style code, another curve


def test_anchored_model_adds_g_to_the_toned_base(inputs: dict[str, Path]) -> None:
    torch.manual_seed(0)
    model = CT2XGAN(CONFIG).eval()
    sample = CTViewDataset(inputs["data"], inputs["xray"], CONFIG)[3]
    batch = {k: v[None] for k, v in sample.items()}
    with torch.no_grad():
        content = model.view_content(batch["volume"], batch["pose"], batch["mip"], batch["projections"])
        style = model.style_encoder.xray_style(batch["xray"])
        image = model.render(content, style)
        residual = model.generator(content.code, style, content.features)
    torch.testing.assert_close(image - residual, model.tone_curve(content.base, style))
    torch.testing.assert_close(content.base, physics_base(batch["projections"], CONFIG))
    plain = CT2XGAN(CONFIG.replace(physics_anchor=False))
    assert plain.tone_curve is None
    with pytest.raises(CT2XError, match="projection_inputs"):
        CONFIG.replace(projection_inputs=False)


def test_detail_residual_keeps_only_what_is_finer_than_its_scale(inputs: dict[str, Path]) -> None:
    """With ``residual_detail_px`` G's residual loses every period longer than that: what it adds to the toned
    base has no low-frequency part left (a wide blur of it is near zero where the whole residual's is not)."""
    torch.manual_seed(0)
    detail = CT2XGAN(CONFIG.replace(residual_detail_px=8.0)).eval()
    batch = _batch(CTViewDataset(inputs["data"], inputs["xray"], CONFIG)[3])
    with torch.no_grad():
        content = detail.view_content(batch["volume"], batch["pose"], batch["mip"], batch["projections"])
        style = detail.style_encoder.xray_style(batch["xray"])
        added = detail.render(content, style) - detail.tone_curve(content.base, style)
        residual = detail.generator(content.code, style, content.features)
    torch.testing.assert_close(added, detail_of(residual, 8.0))
    inner = (..., slice(16, -16), slice(16, -16))  # away from the replicated edges of both filters
    coarse = float(gaussian_blur(added, (6.0, 6.0))[inner].abs().mean())
    assert coarse < 0.05 * float(gaussian_blur(residual, (6.0, 6.0))[inner].abs().mean())
    with pytest.raises(CT2XError, match="residual_detail_px"):
        CONFIG.replace(physics_anchor=False, residual_detail_px=2.0)
    with pytest.raises(CT2XError, match="residual_detail_px"):
        CONFIG.replace(residual_detail_px=-1.0)


def test_detail_filter_removes_long_periods_keeps_short_ones_and_rises_smoothly_between() -> None:
    """``detail_of`` at 16 px on horizontal stripes (the lattice an ideal high-pass let G draw at its cutoff):
    periods of 16 px and longer are removed, those of 8 px and shorter kept whole, and in between the gain rises
    with frequency as a raised cosine (half at the middle of the octave: an ideal filter would pass it whole)."""
    rows = torch.arange(256, dtype=torch.float64)[:, None].expand(256, 256)

    def gain(period_px: float) -> float:
        stripes = torch.cos(2 * math.pi * rows / period_px)[None, None]
        inner = (..., slice(48, -48), slice(48, -48))  # away from the replicated edges
        kept = detail_of(stripes, 16.0)[inner]
        return float((kept * stripes[inner]).mean() / (stripes[inner] ** 2).mean())

    assert abs(gain(32.0)) < 0.01 and abs(gain(16.0)) < 0.02
    assert gain(8.0) == pytest.approx(1.0, abs=0.02) and gain(4.0) == pytest.approx(1.0, abs=0.02)
    assert gain(1 / (1.5 / 16)) == pytest.approx(0.5, abs=0.05)  # the middle of the rise
    between = [gain(16.0 / (1 + k / 8)) for k in range(9)]  # 16 px down to 8 px
    assert all(b <= a + 0.02 for b, a in zip(between, between[1:], strict=False))  # no bump: rises throughout


def test_edge_and_histogram_terms_can_fail(inputs: dict[str, Path]) -> None:
    drr = CTViewDataset(inputs["data"], inputs["xray"], CONFIG)[1]["drr"][None]
    # the torch edge map is the evaluation's (skimage Sobel of the standardised image), border aside
    ours = edge_maps(drr)[0, 0, 2:-2, 2:-2].numpy()
    theirs = edge_map(drr[0, 0].numpy())[2:-2, 2:-2]
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.99
    assert float(edge_loss(drr, drr)) < 1e-5
    assert float(edge_loss(0.5 * drr - 0.2, drr)) < 1e-5  # brightness and contrast are not anatomy
    assert float(edge_loss(torch.roll(drr, (12, 12), dims=(-2, -1)), drr)) > 0.3  # the anatomy moved
    assert float(edge_loss(torch.rand_like(drr), drr)) > 0.7  # unrelated
    shuffled = drr.flatten()[torch.randperm(drr.numel())].view_as(drr)
    assert float(histogram_loss(shuffled, drr)) == 0.0  # the same intensities, wherever they are
    assert float(histogram_loss(drr + 0.2, drr)) == pytest.approx(0.2, abs=1e-5)


def test_histogram_reference_is_the_style_radiograph_cropped_to_the_view(inputs: dict[str, Path]) -> None:
    dataset = CTViewDataset(inputs["data"], inputs["xray"], CONFIG)
    for key in ((2, 2), (9, 40)):
        sample = dataset[key]
        draw = np.random.default_rng([dataset.seed, key[1], len(dataset.radiographs)])
        film = dataset.radiographs[draw.integers(len(dataset.radiographs))]
        field = min(1.0, pose_field_of_view_mm(sample["pose"].numpy()) / CONFIG.radiograph_field_mm)
        expected = read_radiograph(film, size=64, warn_colour=False, crop=field) * 2.0 - 1.0
        torch.testing.assert_close(sample["xray_field"][0], torch.from_numpy(expected))
        whole = read_radiograph(film, size=64, warn_colour=False) * 2.0 - 1.0
        torch.testing.assert_close(sample["xray"][0], torch.from_numpy(whole))
    without = CTViewDataset(inputs["data"], inputs["xray"], CONFIG.replace(lambda_hist=0.0))
    assert "xray_field" not in without[0]


def test_physics_anchor_refuses_a_dataset_of_another_spectrum(inputs: dict[str, Path]) -> None:
    with pytest.raises(CT2XError, match="physics_spectrum: 60KV_AL35"):
        CTViewDataset(inputs["data"], inputs["xray"], CONFIG.replace(physics_spectrum="90KV_AL40"))


def test_table3_baselines_from_the_stored_projections(inputs: dict[str, Path]) -> None:
    from ct2x.evaluation.methods import LINE_INTEGRAL_ROW, NOISE_FREE_ROW, projection_baselines

    dataset = CTViewDataset(inputs["data"], inputs["xray"], CONFIG)
    scores = projection_baselines(dataset, batch_size=4)
    line, free = scores[LINE_INTEGRAL_ROW], scores[NOISE_FREE_ROW]
    assert line.samples == free.samples == len(dataset) == 12
    assert free.psnr > 40 and free.ssim > 0.99  # prepared without noise: the stored DRR is B, up to float16
    assert 15 < line.psnr < free.psnr - 3  # one affine map of the line integral misses the beam hardening


CHAINED = CONFIG.replace(chain_anchor=True)


def _batch(sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v[None] for k, v in sample.items()}


def test_chain_anchored_samples_carry_the_chain_image_of_their_view(inputs: dict[str, Path]) -> None:
    """A chain-anchored sample holds the imaging chain's radiograph of its view in its reference's look: the
    same anatomy as the DRR, fixed by the draw, another image for another draw."""
    dataset = CTViewDataset(inputs["data"], inputs["xray"], CHAINED)
    sample = dataset[2]
    chain = sample["chain"]
    assert chain.shape == (1, 64, 64) and chain.dtype == torch.float32
    assert -1 <= float(chain.min()) and float(chain.max()) <= 1 and float(chain.std()) > 0.05
    blocks = [torch.nn.functional.avg_pool2d(x, 8).flatten() for x in (chain, sample["drr"])]  # the noise averaged
    assert np.corrcoef(torch.stack(blocks).numpy())[0, 1] > 0.5  # the same anatomy, bright = attenuating in both
    torch.testing.assert_close(dataset[2]["chain"], chain, rtol=0, atol=0)
    assert float((dataset[(2, 5)]["chain"] - chain).abs().mean()) > 1e-3
    with pytest.raises(CT2XError, match="physics_anchor and use_style_encoder"):
        CONFIG.replace(physics_anchor=False, chain_anchor=True)
    with pytest.raises(CT2XError, match="chain_preset"):
        CHAINED.replace(chain_preset="dental")


def test_chain_anchored_model_draws_its_x_ray_on_the_chain_image(inputs: dict[str, Path]) -> None:
    """The X-ray path is T(C; f_sty) + G (C the chain's image, also the edge term's reference); the DRR path is
    the physics-anchored model's, unchanged; without C the model says what it needs."""
    torch.manual_seed(0)
    model = CT2XGAN(CHAINED).eval()
    plain = CT2XGAN(CONFIG).eval()
    plain.load_state_dict(model.state_dict())
    batch = _batch(CTViewDataset(inputs["data"], inputs["xray"], CHAINED)[3])
    args = [batch[k] for k in ("volume", "pose", "mip", "drr", "xray", "projections")]
    with torch.no_grad():
        out = model(*args, batch["chain"])
        reference = plain(*args)
        content = model.view_content(*(batch[k] for k in ("volume", "pose", "mip", "projections")))
        residual = model.generator(content.code, out.f_sty_x, content.features)
    torch.testing.assert_close(out.xray_base, batch["chain"])
    torch.testing.assert_close(out.xray_hat - residual, model.tone_curve(batch["chain"], out.f_sty_x))
    torch.testing.assert_close(out.drr_hat, reference.drr_hat)
    assert float((out.xray_hat - reference.xray_hat).abs().mean()) > 1e-3
    with pytest.raises(CT2XError, match="chain image"):
        model(*args)


def test_chain_anchored_training_and_synthesis_at_the_detectors_pixels(inputs: dict[str, Path], tmp_path: Path) -> None:
    """Two training steps with the chain anchor; the model then synthesizes at any detector size, in each film's
    look (different films, different images; the same film, the same image), and its DRR style is the
    physics-anchored path's."""
    options = TrainOptions(
        data=inputs["data"], xray=inputs["xray"], out=tmp_path / "run", steps=2, workers=0, progress=False,
        checkpoint_every=2, log_every=1, image_every=2,
    )  # fmt: skip
    model, card = load_model(train(CHAINED, options))
    assert model.config.chain_anchor
    entry = json.loads((inputs["data"] / "manifest.json").read_text(encoding="utf-8"))["volumes"][0]
    ct = read_ct(entry["source"])
    carms = model_views(model.config, card, ct, [-30.0, 0.0], detector_pixels=(96, 96))
    at_model = model_views(model.config, card, ct, [-30.0, 0.0])
    assert carms[0].detector_shape == (96, 96)
    assert carms[0].pixel_spacing[0] * 96 == pytest.approx(at_model[0].pixel_spacing[0] * 64)  # the same detector
    films = sorted(inputs["xray"].glob("*.png"))
    dark = np.asarray(Image.open(films[1]), dtype=np.float64) ** 2  # another look: a darker, harder film
    first = np.stack([v.image for v in synthesize(model, ct, carms, style=films[0])])
    again = np.stack([v.image for v in synthesize(model, ct, carms, style=films[0])])
    other = np.stack([v.image for v in synthesize(model, ct, carms, style=dark)])
    assert first.shape == (2, 96, 96)
    np.testing.assert_array_equal(first, again)
    assert abs(float(np.median(first)) - float(np.median(other))) > 0.02
    plain = CT2XGAN(CONFIG).eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    drr = [v.image for v in synthesize(model, ct, carms, drr_style=True)]
    np.testing.assert_array_equal(drr[1], synthesize(plain, ct, carms, drr_style=True)[1].image)


def test_physics_anchored_synthesis_at_twice_the_pixels_averages_to_the_image(inputs: dict[str, Path]) -> None:
    """At 128 pixels the physics-anchored image holds the 64-pixel image's content: 2 x 2 means agree with it."""
    torch.manual_seed(0)
    model = CT2XGAN(CONFIG).eval()
    entry = json.loads((inputs["data"] / "manifest.json").read_text(encoding="utf-8"))["volumes"][0]
    ct = read_ct(entry["source"])
    coarse = model_views(CONFIG, {}, ct, [30.0])
    fine = model_views(CONFIG, {}, ct, [30.0], pixel_mm=[coarse[0].pixel_spacing[0] / 2])
    assert fine[0].detector_shape == (128, 128)
    small = synthesize(model, ct, coarse, drr_style=True)[0].image
    large = synthesize(model, ct, fine, drr_style=True)[0].image
    means = large.reshape(64, 2, 64, 2).mean(axis=(1, 3))
    assert np.abs(means - small).mean() < 0.02

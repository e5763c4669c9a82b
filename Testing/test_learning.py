"""CT2X-GAN learns: on one phantom CT, G trained only on L_rec (eq. 8) reproduces its DRRs at 5 poses.

The DRR path of Fig. 2 is trained alone: f_c^{w+} = PAM(E_CT(V), p, MIP),
Î_DRR = G(f_c^{w+}, E_sty^sDRR(I_DRR)), loss L_rec = MAE + LPIPS. LPIPS uses the ``random``
backbone (random AlexNet weights: no pretrained weights on a test machine), so here it is
only a fixed random feature distance; the PSNRs come from torchmetrics on the DRRs.

The optimiser is Adam at the paper's learning rate 0.0025 but with beta1 = 0.9 instead of the
StyleGAN2 value 0: with beta1 = 0 the same result needs about three times the steps.

Run with ``-s`` to see the printed PSNRs and pose separations (that of the no-PAM ablation
is reported, not asserted: memorising five poses is possible through the pose MLP alone).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio

from ct2x.config import CT2XConfig
from ct2x.geometry import views
from ct2x.losses import LPIPSLoss, reconstruction_loss
from ct2x.models import CT2XGAN
from ct2x.models.inputs import normalize_hu
from ct2x.volume import CTVolume

drr_module = pytest.importorskip("ct2x.drr", reason="needs ct2x.drr to render the DRRs and MIPs")

ANGLES = [-60.0, -30.0, 0.0, 30.0, 60.0]
STEPS = 100


def asymmetric_phantom(size: int = 48, spacing: float = 2.0) -> CTVolume:
    """A water cylinder along S (LPS, centred on the origin) with parts that break every mirror symmetry.

    An air pocket on the patient's right posterior (-800 HU), a thick bone rod on the left
    anterior (1200 HU) and a dense ball posterior and superior (1800 HU), in air (-1000 HU).
    """
    k, j, i = np.meshgrid(*(np.arange(size, dtype=np.float32),) * 3, indexing="ij")
    c = (size - 1) / 2
    x, y, z = (i - c) * spacing, (j - c) * spacing, (k - c) * spacing  # LPS mm
    r = 0.4 * size * spacing
    hu = np.full((size, size, size), -1000.0, dtype=np.float32)
    hu[x**2 + y**2 <= r**2] = 0.0
    hu[(x + 0.45 * r) ** 2 + (y - 0.3 * r) ** 2 <= (0.3 * r) ** 2] = -800.0
    hu[(x - 0.5 * r) ** 2 + (y + 0.2 * r) ** 2 <= (0.18 * r) ** 2] = 1200.0
    hu[(x - 0.1 * r) ** 2 + (y - 0.6 * r) ** 2 + (z - 0.3 * r) ** 2 <= (0.2 * r) ** 2] = 1800.0
    return CTVolume(hu, np.full(3, spacing), np.full(3, -c * spacing), np.eye(3))


@pytest.fixture(scope="module")
def data():
    """The phantom's CT (at the small preset's grid), DRRs and MIPs at the 5 poses, poses, all as tensors."""
    config = CT2XConfig.preset("small", lpips_backbone="random")
    volume = asymmetric_phantom()
    size = config.image_size
    spacing = 256.0 / size  # a 256 mm detector: the phantom, magnified ~1.9x, fills most of it
    arms = views(ANGLES, detector_shape=(size, size), pixel_spacing=(spacing, spacing),
                 isocenter=tuple(volume.center_lps))  # fmt: skip
    drr = drr_module.render_drr(volume, arms)  # (5, S, S), -log transmitted fraction
    mip = drr_module.mip(volume, arms)  # (5, S, S) HU
    hu = torch.from_numpy(volume.array)[None, None]
    grid = F.interpolate(hu, size=(config.volume_size,) * 3, mode="trilinear", align_corners=False)
    return {
        "config": config,
        "volume": normalize_hu(grid, config),  # (1, 1, 32, 32, 32)
        "pose": torch.tensor(np.stack([a.pose for a in arms]), dtype=torch.float32),
        "drr": (drr / drr.max() * 2 - 1)[:, None],  # (5, 1, S, S) in [-1, 1]
        "mip": normalize_hu(mip, config)[:, None],
    }


def drr_path(model: CT2XGAN, data: dict) -> torch.Tensor:
    """Î_DRR (eq. 7) at the 5 poses: one CT, encoded once, with each pose and MIP."""
    f_c_ct = model.ct_encoder(data["volume"]).expand(len(ANGLES), -1, -1)
    if model.config.use_pam:
        f_c_wplus = model.pose_module(f_c_ct, data["pose"], data["mip"])
    else:
        f_c_wplus = model.pose_module(f_c_ct, data["pose"])
    return model.generator(f_c_wplus, model.style_encoder.drr_style(data["drr"]))


def evaluate(model: CT2XGAN, data: dict) -> dict[str, float]:
    """Mean PSNR over the 5 views (dB, data range 2), and how Î(-60) - Î(+60) matches I(-60) - I(+60)."""
    model.eval()
    with torch.no_grad():
        out = drr_path(model, data)
    model.train()
    drr = data["drr"]
    psnr = peak_signal_noise_ratio(out, drr, data_range=2.0, dim=(1, 2, 3), reduction="none")
    d_hat, d_true = (out[0] - out[-1]).flatten(), (drr[0] - drr[-1]).flatten()
    return {
        "psnr": float(psnr.mean()),
        "corr": float(torch.corrcoef(torch.stack([d_hat, d_true]))[0, 1]),
        "ratio": float(d_hat.norm() / d_true.norm()),
    }


def train_on_reconstruction(config: CT2XConfig, data: dict) -> tuple[dict, dict]:
    torch.manual_seed(0)
    model = CT2XGAN(config)
    lpips = LPIPSLoss(config.lpips_backbone)
    optimiser = torch.optim.Adam(model.generator_parameters(), lr=config.lr, betas=(0.9, 0.99))
    before = evaluate(model, data)
    for _ in range(STEPS):
        loss = reconstruction_loss(data["drr"], drr_path(model, data), lpips, config.lambda_mae, config.lambda_lpips)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return before, evaluate(model, data)


@pytest.mark.slow
def test_generator_learns_the_drrs_and_the_pam_separates_poses(data, record_property):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks: one thread is several times faster on a shared 2-core CPU
    try:
        before, after = train_on_reconstruction(data["config"], data)
        no_pam_before, no_pam_after = train_on_reconstruction(data["config"].replace(use_pam=False), data)
    finally:
        torch.set_num_threads(threads)

    drr = data["drr"]
    true_gap = float((drr[0] - drr[-1]).norm() / (drr[0] + 1).norm())
    lines = [
        f"DRR difference -60 vs +60: {true_gap:.2f} of the -60 DRR's norm",
        f"with PAM: PSNR {before['psnr']:.2f} -> {after['psnr']:.2f} dB; "
        f"corr(Î(-60)-Î(+60), I(-60)-I(+60)) {before['corr']:.3f} -> {after['corr']:.3f}, "
        f"norm ratio {after['ratio']:.3f}",
        f"without PAM (reported only): PSNR {no_pam_before['psnr']:.2f} -> {no_pam_after['psnr']:.2f} dB; "
        f"corr {no_pam_before['corr']:.3f} -> {no_pam_after['corr']:.3f}, norm ratio {no_pam_after['ratio']:.3f}",
    ]
    print("\n" + "\n".join(lines))
    for key, value in [("pam", after), ("no_pam", no_pam_after), ("init", before)]:
        record_property(f"{key}_metrics", value)

    assert true_gap > 0.1  # the phantom's views at -60 and +60 really differ
    assert after["psnr"] - before["psnr"] >= 6.0
    # with the PAM the synthesised views at -60 and +60 differ the way the DRRs do
    assert after["corr"] > 0.7
    assert 0.5 < after["ratio"] < 1.5

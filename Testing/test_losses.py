"""The losses of eq. 8-19: values, and which parameters each loss reaches.

LPIPS here uses the ``random`` backbone (random AlexNet weights): it checks the plumbing
only; no number from it means anything perceptually.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_models import make_batch, tiny_config
from torch import nn

from ct2x.errors import CT2XError
from ct2x.losses import (
    CT2XLoss,
    LPIPSLoss,
    consistency_loss,
    content_consistency_loss,
    discriminator_adversarial_loss,
    generator_adversarial_loss,
    mae_loss,
    r1_penalty,
    reconstruction_loss,
    style_consistency_loss,
    zero_loss,
)
from ct2x.models import CT2XGAN, Discriminator

pytestmark = pytest.mark.usefixtures("one_thread")


def groups(model: CT2XGAN) -> dict[str, nn.Module]:
    """The parameter groups of Fig. 2, by the paper's names."""
    named = {"E_CT": model.ct_encoder, "PAM": model.pose_module, "G": model.generator, "D": model.discriminator}
    if model.style_encoder is not None:
        named["E_sty^c"] = model.style_encoder.content_branch
        named["E_sty^sX"] = model.style_encoder.xray_style_branch
        named["E_sty^sDRR"] = model.style_encoder.drr_style_branch
    return named


def reached(loss: torch.Tensor, model: CT2XGAN) -> set[str]:
    """Names of the groups (and ``constant_style``) in which some parameter gets a non-zero gradient."""
    params = [(name, p) for name, module in groups(model).items() for p in module.parameters()]
    if model.constant_style is not None:
        params.append(("constant_style", model.constant_style))
    grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True, retain_graph=True)
    return {name for (name, _), g in zip(params, grads, strict=True) if g is not None and g.abs().sum() > 0}


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    config = tiny_config()
    model = CT2XGAN(config)
    x = make_batch(config, 2)
    out = model(x["volume"], x["pose"], x["mip"], x["drr"], x["xray"])
    return config, model, x, out, CT2XLoss(config)


G_SIDE = {"E_CT", "PAM", "G"}


@pytest.mark.parametrize(
    ("loss_name", "expected"),
    [
        # eq. 8: Î_DRR = G(f_c^{w+}, E_sty^sDRR(I_DRR)); never the X-ray branch, the content branch or D
        ("rec", G_SIDE | {"E_sty^sDRR"}),
        # eq. 10: content codes of Î_X and Î_DRR: the content branch and both style paths
        ("cc", G_SIDE | {"E_sty^c", "E_sty^sX", "E_sty^sDRR"}),
        # eq. 11: style codes of real and synthetic images; not the content branch
        ("sc", G_SIDE | {"E_sty^sX", "E_sty^sDRR"}),
        # eq. 12: only the two style branches
        ("zero", {"E_sty^sX", "E_sty^sDRR"}),
        # eq. 16: D(Î_X, p): the X-ray path through D (D's own gradients are discarded by G's optimiser)
        ("adv", G_SIDE | {"E_sty^sX", "D"}),
        # eq. 18: everything
        ("total", G_SIDE | {"E_sty^c", "E_sty^sX", "E_sty^sDRR", "D"}),
    ],
)
def test_generator_losses_reach_exactly_their_parameters(setup, loss_name, expected):
    config, model, x, out, criterion = setup
    losses = criterion.generator_loss(out, x["drr"], x["pose"], model.discriminator)
    assert reached(getattr(losses, loss_name), model) == expected


def test_discriminator_loss_reaches_only_d(setup):
    config, model, x, out, criterion = setup
    losses = criterion.discriminator_loss(model.discriminator, out.fake, x["drr"], x["pose"])
    assert reached(losses.total, model) == {"D"}
    assert reached(losses.r1, model) == {"D"}  # the R1 penalty trains D (double backward)


def test_ablations_change_what_the_total_reaches():
    torch.manual_seed(0)
    x = make_batch(tiny_config(), 2)
    args = (x["volume"], x["pose"], x["mip"], x["drr"], x["xray"])

    config = tiny_config(use_consistency=False)
    model = CT2XGAN(config)
    losses = CT2XLoss(config).generator_loss(model(*args), x["drr"], x["pose"], model.discriminator)
    assert float(losses.consis) == 0.0
    assert "E_sty^c" not in reached(losses.total, model)  # only L_cc trains the content branch

    config = tiny_config(use_style_encoder=False)
    model = CT2XGAN(config)
    losses = CT2XLoss(config).generator_loss(model(*args), x["drr"], x["pose"], model.discriminator)
    assert float(losses.zero) == 0.0 and float(losses.consis) == 0.0
    assert reached(losses.rec, model) == G_SIDE | {"constant_style"}

    config = tiny_config(use_pam=False)
    model = CT2XGAN(config)
    losses = CT2XLoss(config).generator_loss(model(*args), x["drr"], x["pose"], model.discriminator)
    assert "PAM" in reached(losses.rec, model)  # the pose MLP and merge MLP of eq. 14 still train


def test_zero_loss_is_zero_exactly_when_both_branches_output_zeros():
    g = torch.Generator().manual_seed(0)
    zeros = torch.zeros(3, 6, 16)
    for _ in range(20):
        a = torch.randn(3, 6, 16, generator=g) * (torch.rand(3, 6, 16, generator=g) < 0.3)
        b = torch.randn(3, 6, 16, generator=g) * (torch.rand(3, 6, 16, generator=g) < 0.3)
        assert (zero_loss(a, b) == 0) == (not a.any() and not b.any())
        assert (zero_loss(a, zeros) == 0) == (not a.any())
        assert (zero_loss(zeros, b) == 0) == (not b.any())
    assert zero_loss(zeros, zeros) == 0
    # the value is the mean absolute entry per sample, summed over the two terms
    assert zero_loss(torch.full((2, 3, 4), 0.5), torch.full((2, 3, 4), -0.25)).item() == pytest.approx(0.75)


def test_zero_loss_on_the_style_branches():
    """Zeroing each branch's last convolution makes it output tanh(0) = 0: L_0 becomes exactly 0."""
    torch.manual_seed(0)
    config = tiny_config()
    model = CT2XGAN(config)
    x = make_batch(config, 2)
    args = (x["volume"], x["pose"], x["mip"], x["drr"], x["xray"])
    assert zero_loss(*_zero_terms(model(*args))) > 0
    with torch.no_grad():
        for p in model.style_encoder.xray_style_branch.final.parameters():
            p.zero_()
    out = model(*args)
    assert zero_loss(*_zero_terms(out)) > 0  # the DRR branch still answers X-rays
    assert not out.f_sty_x.any()  # (and the zeroed X-ray branch now outputs zeros for every domain)
    with torch.no_grad():
        for p in model.style_encoder.drr_style_branch.final.parameters():
            p.zero_()
    assert zero_loss(*_zero_terms(model(*args))) == 0


def _zero_terms(out):
    return out.f_sty_x_of_drr, out.f_sty_drr_of_xray


def test_consistency_losses_vanish_for_identical_inputs():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 8, 16, 16, generator=g), torch.randn(2, 6, 32, generator=g)
    c, d = torch.randn(2, 6, 32, generator=g), torch.randn(2, 6, 32, generator=g)
    assert content_consistency_loss(a, a.clone()) == 0
    assert style_consistency_loss(b, b.clone(), c, c.clone()) == 0
    assert content_consistency_loss(a, a + 1e-3) > 0
    assert style_consistency_loss(b, b, c, d) > 0
    # ||.||_2 per sample as root mean square: a constant offset of 0.5 gives 0.5
    assert content_consistency_loss(a, a + 0.5).item() == pytest.approx(0.5, rel=1e-5)
    assert style_consistency_loss(b, b - 0.5, c, c + 2.0).item() == pytest.approx(2.5, rel=1e-5)
    assert consistency_loss(torch.tensor(2.0), torch.tensor(3.0), 0.5, 10.0).item() == 31.0
    # gradients stay finite at zero difference
    z = a.clone().requires_grad_(True)
    content_consistency_loss(z, a).backward()
    assert torch.isfinite(z.grad).all()


def test_content_consistency_is_zero_when_both_syntheses_coincide():
    """With identical style branches and I_X = I_DRR, Î_X = Î_DRR, so L_cc (eq. 10) is exactly 0."""
    torch.manual_seed(0)
    config = tiny_config()
    model = CT2XGAN(config)
    model.style_encoder.xray_style_branch.load_state_dict(model.style_encoder.drr_style_branch.state_dict())
    x = make_batch(config, 2)
    out = model(x["volume"], x["pose"], x["mip"], x["drr"], x["drr"])
    assert torch.equal(out.xray_hat, out.drr_hat)
    assert content_consistency_loss(out.f_c_xray_hat, out.f_c_drr_hat) == 0


class TinyD(nn.Module):
    """D(x, p) = v . tanh(W vec(x) + U p): small enough to differentiate by hand."""

    def __init__(self, pixels: int):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.w = nn.Parameter(torch.randn(5, pixels, generator=g) * 0.3)
        self.u = nn.Parameter(torch.randn(5, 25, generator=g) * 0.3)
        self.v = nn.Parameter(torch.randn(5, generator=g))

    def forward(self, image: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        return torch.tanh(image.flatten(1) @ self.w.T + pose @ self.u.T) @ self.v

    def input_gradient(self, image: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """dD/dx by hand: W^T (v * (1 - tanh^2(h)))."""
        h = image.flatten(1) @ self.w.T + pose @ self.u.T
        return ((self.v * (1 - torch.tanh(h) ** 2)) @ self.w).view_as(image)


def test_r1_matches_hand_computed_gradient_on_a_tiny_d():
    g = torch.Generator().manual_seed(0)
    d = TinyD(16)
    real = torch.randn(3, 1, 4, 4, generator=g).requires_grad_(True)
    pose = torch.randn(3, 25, generator=g)
    expected = d.input_gradient(real.detach(), pose).square().flatten(1).sum(1).mean()
    r1 = r1_penalty(d(real, pose), real)
    torch.testing.assert_close(r1, expected)
    # the penalty trains D: its gradient w.r.t. v is d/dv of the hand formula
    (grad_v,) = torch.autograd.grad(r1, d.v)
    v = d.v.detach().clone().requires_grad_(True)
    h = real.detach().flatten(1) @ d.w.detach().T + pose @ d.u.detach().T
    reference = (((v * (1 - torch.tanh(h) ** 2)) @ d.w.detach()) ** 2).sum(1).mean()
    (grad_ref,) = torch.autograd.grad(reference, v)
    torch.testing.assert_close(grad_v, grad_ref)


def test_r1_on_the_discriminator_matches_per_sample_gradients():
    torch.manual_seed(0)
    config = tiny_config()
    d = Discriminator(config)
    x = make_batch(config, 3)
    real = x["drr"].clone().requires_grad_(True)
    r1 = r1_penalty(d(real, x["pose"]), real)
    per_sample = []
    for i in range(3):
        one = x["drr"][i : i + 1].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(d(one, x["pose"][i : i + 1]).sum(), one)
        per_sample.append(grad.square().sum())
    torch.testing.assert_close(r1, torch.stack(per_sample).mean())


def test_adversarial_losses_follow_eq_16_and_17():
    fake, real, r1 = torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.0]), torch.tensor(3.0)
    assert generator_adversarial_loss(fake, "linear").item() == pytest.approx(0.25)
    assert generator_adversarial_loss(fake, "softplus").item() == pytest.approx(F.softplus(-fake).mean().item())
    assert discriminator_adversarial_loss(fake, real, r1, 0.5, "linear").item() == pytest.approx(-0.25 - 1.0 + 1.5)
    expected = F.softplus(fake).mean() + F.softplus(-real).mean() + 0.5 * 3.0
    assert discriminator_adversarial_loss(fake, real, r1, 0.5, "softplus").item() == pytest.approx(expected.item())


def test_totals_follow_eq_18_and_19():
    torch.manual_seed(0)
    config = tiny_config(
        lambda_mae=0.7, lambda_lpips=1.3, lambda_cc=0.4, lambda_sc=2.5, lambda_0=0.3, lambda_adv=0.2, lambda_r1=5.0
    )
    model = CT2XGAN(config)
    x = make_batch(config, 2)
    out = model(x["volume"], x["pose"], x["mip"], x["drr"], x["xray"])
    criterion = CT2XLoss(config)
    g = criterion.generator_loss(out, x["drr"], x["pose"], model.discriminator)
    assert g.mae.item() == pytest.approx(mae_loss(x["drr"], out.drr_hat).item())
    assert g.lpips.item() == pytest.approx(criterion.lpips(x["drr"], out.drr_hat).mean().item())
    assert g.rec.item() == pytest.approx(0.7 * g.mae.item() + 1.3 * g.lpips.item())
    assert g.rec.item() == pytest.approx(criterion.reconstruction_loss(out, x["drr"]).item())
    assert g.consis.item() == pytest.approx(0.4 * g.cc.item() + 2.5 * g.sc.item())
    assert g.total.item() == pytest.approx(0.2 * g.adv.item() + g.rec.item() + g.consis.item() + 0.3 * g.zero.item())
    assert g.xray_adv.item() == 0  # no D_X in this config
    assert min(v for k, v in g.as_floats().items() if k not in ("xray_adv", "edge", "hist")) > 0
    assert g.edge.item() == 0 and g.hist.item() == 0  # no physics-anchor terms in this config

    d = criterion.discriminator_loss(model.discriminator, out.fake, x["drr"], x["pose"])
    assert d.total.item() == pytest.approx(0.2 * d.adv.item())
    assert d.r1.item() > 0


def test_radiograph_discriminator_term_joins_eq_18():
    torch.manual_seed(0)
    config = tiny_config(use_xray_discriminator=True, xray_d_channels=8, lambda_xray_adv=0.6, lambda_r1=5.0)
    model = CT2XGAN(config)
    x = make_batch(config, 2)
    out = model(x["volume"], x["pose"], x["mip"], x["drr"], x["xray"])
    criterion = CT2XLoss(config)
    g = criterion.generator_loss(out, x["drr"], x["pose"], model.discriminator, model.xray_discriminator)
    expected_adv = F.softplus(-model.xray_discriminator(out.xray_hat)).mean()
    assert g.xray_adv.item() == pytest.approx(expected_adv.item())
    assert g.total.item() == pytest.approx(
        g.adv.item() + g.rec.item() + g.consis.item() + g.zero.item() + 0.6 * g.xray_adv.item()
    )
    with pytest.raises(CT2XError, match="needs D_X"):
        criterion.generator_loss(out, x["drr"], x["pose"], model.discriminator)
    d = criterion.xray_discriminator_loss(model.xray_discriminator, out.xray_hat, x["xray"], r1_scale=2.0)
    real, fake = model.xray_discriminator(x["xray"]), model.xray_discriminator(out.xray_hat)
    plain = F.softplus(fake).mean() + F.softplus(-real).mean()
    assert d.total.item() == pytest.approx(0.6 * (plain.item() + 10.0 * d.r1.item()), rel=1e-5)
    assert d.r1.item() > 0


def test_reconstruction_loss_needs_lpips_when_weighted():
    a, b = torch.zeros(1, 1, 64, 64), torch.ones(1, 1, 64, 64)
    assert reconstruction_loss(a, b, None, 2.0, 0.0).item() == 2.0
    with pytest.raises(CT2XError, match="needs an LPIPS network"):
        reconstruction_loss(a, b, None, 1.0, 1.0)


# ----------------------------------------------------------------------------- LPIPS


def test_lpips_random_backbone_is_frozen_and_deterministic_in_train_mode():
    torch.manual_seed(0)
    lpips = LPIPSLoss("random")
    assert not any(p.requires_grad for p in lpips.parameters())
    lpips.train()
    assert not lpips.lpips.training  # no dropout
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 1, 64, 64, generator=g) * 2 - 1, torch.rand(2, 1, 64, 64, generator=g) * 2 - 1
    assert lpips(a, a).abs().max() < 1e-6
    first, second = lpips(a, b), lpips(a, b)
    assert first.shape == (2,) and torch.equal(first, second) and (first > 0).all()
    x = b.clone().requires_grad_(True)
    lpips(a, x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradients reach the image


def _alexnet_features_file(tmp_path, name: str, suffix: str):
    """A torchvision-format AlexNet features state dict with random weights, written as .pth or .safetensors."""
    from torchvision.models import alexnet

    state = {f"features.{k}": v.contiguous() for k, v in alexnet(weights=None).features.state_dict().items()}
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path, state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_lpips_loads_backbone_weights_from_a_path(tmp_path, suffix):
    path, state = _alexnet_features_file(tmp_path, "alexnet", suffix)
    lpips = LPIPSLoss("alex", path)
    loaded = lpips.lpips.net.state_dict()
    torch.testing.assert_close(loaded["slice1.0.weight"], state["features.0.weight"])
    torch.testing.assert_close(loaded["slice5.10.bias"], state["features.10.bias"])


def test_lpips_finds_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(CT2XError, match="checkpoints/alexnet-owt-7be5be79.pth is missing") as caught:
        LPIPSLoss("alex")
    assert "lpips_weights" in str(caught.value)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    _, state = _alexnet_features_file(tmp_path / "hub" / "checkpoints", "alexnet-owt-7be5be79", ".pth")
    lpips = LPIPSLoss("alex")
    torch.testing.assert_close(lpips.lpips.net.state_dict()["slice2.3.weight"], state["features.3.weight"])


def test_lpips_errors(tmp_path):
    with pytest.raises(CT2XError, match="does not exist"):
        LPIPSLoss("vgg", tmp_path / "absent.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(CT2XError, match="does not hold torchvision alex weights"):
        LPIPSLoss("alex", wrong)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CT2XError, match="cannot read LPIPS backbone weights"):
        LPIPSLoss("alex", garbage)
    with pytest.raises(CT2XError, match="unknown LPIPS backbone"):
        LPIPSLoss("squeeze")

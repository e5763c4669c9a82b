"""Shapes, dtypes and wiring of the CT2X-GAN networks (ct2x.models).

Most tests use :func:`tiny_config`: the paper's layer structure (E_CT's five layers, seven
convolutions per E_sty branch, 14 / 12 synthesis layers at 256^2 / 128^2, 8 content layers)
with narrow channels and a 32^3 CT so that they run in seconds on a CPU.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ct2x.config import CT2XConfig
from ct2x.errors import CT2XError
from ct2x.geometry import views
from ct2x.models import (
    CT2XGAN,
    CTEncoder,
    Discriminator,
    Generator,
    PoseAttentionModule,
    PoseQuery,
    StyleDecouplingEncoder,
    pose_attention,
)
from ct2x.models.inputs import normalize_hu

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(image_size: int = 128, **overrides) -> CT2XConfig:
    """The paper's layer structure with narrow channels, a 32^3 CT and the random LPIPS backbone (tests only)."""
    values = dict(
        image_size=image_size,
        volume_size=32,
        w_dim=32,
        ct_channels=(4, 4, 8, 8),
        ct_latent_channels=4,
        style_channels=(4, 4, 8, 8, 8, 8),
        content_channels=(4, 4, 8, 8),
        pose_embed_dim=16,
        pam_mip_size=32,
        pam_patch_size=8,
        g_channel_base=512,
        g_channel_max=16,
        d_channel_base=512,
        d_channel_max=16,
        d_cmap_dim=16,
        lpips_backbone="random",
    )
    return CT2XConfig.preset("paper", **{**values, **overrides})


def make_batch(config: CT2XConfig, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs of the right shapes and ranges; poses are real C-arm poses (float32)."""
    g = torch.Generator().manual_seed(seed)
    d, s = config.volume_size, config.image_size
    angles = np.linspace(-60, 60, batch) if batch > 1 else [30.0]
    pose = torch.tensor(np.stack([v.pose for v in views(list(angles))]), dtype=torch.float32)
    return {
        "volume": torch.rand(batch, 1, d, d, d, generator=g) * 2 - 1,
        "pose": pose,
        "mip": torch.rand(batch, 1, 48, 48, generator=g) * 2 - 1,
        "drr": torch.rand(batch, 1, s, s, generator=g) * 2 - 1,
        "xray": torch.rand(batch, 1, s, s, generator=g) * 2 - 1,
    }


def _ok(t: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert tuple(t.shape) == shape
    assert t.dtype == torch.float32
    assert torch.isfinite(t).all()


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("size", [128, 256])
def test_every_module_shape_and_dtype(size, batch):
    torch.manual_seed(0)
    c = tiny_config(size)
    x = make_batch(c, batch)
    n_c, n_s, w = c.num_content_layers, c.num_style_layers, c.w_dim
    assert (n_c, n_s) == ((8, 4) if size == 128 else (8, 6))

    f_c_ct = CTEncoder(c)(x["volume"])
    _ok(f_c_ct, (batch, n_c, w))
    q = PoseQuery(c)(f_c_ct, x["pose"])
    _ok(q, (batch, n_c, w))
    f_c_wplus = PoseAttentionModule(c)(f_c_ct, x["pose"], x["mip"])
    _ok(f_c_wplus, (batch, n_c, w))

    e_sty = StyleDecouplingEncoder(c)
    content, style_x, style_drr = e_sty(x["xray"])
    _ok(content, (batch, c.content_channels[-1], size // 8, size // 8))
    for style in (style_x, style_drr):
        _ok(style, (batch, n_s, w))
        assert style.abs().max() <= 1.0  # tanh

    image = Generator(c)(f_c_wplus, style_x)
    _ok(image, (batch, 1, size, size))
    _ok(Discriminator(c)(image, x["pose"]), (batch,))


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("size", [128, 256])
def test_ct2xgan_forward_outputs(size, batch):
    torch.manual_seed(0)
    c = tiny_config(size)
    model = CT2XGAN(c)
    x = make_batch(c, batch)
    out = model(x["volume"], x["pose"], x["mip"], x["drr"], x["xray"])
    code, style = (batch, c.num_content_layers, c.w_dim), (batch, c.num_style_layers, c.w_dim)
    image = (batch, 1, size, size)
    content_map = (batch, c.content_channels[-1], size // 8, size // 8)
    for name, shape in [
        ("f_c_ct", code), ("f_c_wplus", code), ("f_sty_x", style), ("f_sty_drr", style),
        ("xray_hat", image), ("drr_hat", image), ("f_sty_x_of_drr", style), ("f_sty_drr_of_xray", style),
        ("f_c_xray_hat", content_map), ("f_c_drr_hat", content_map), ("f_sty_x_hat", style), ("f_sty_drr_hat", style),
    ]:  # fmt: skip
        _ok(getattr(out, name), shape)
    assert out.fake is out.xray_hat
    _ok(model.discriminator(out.fake, x["pose"]), (batch,))


def test_ablation_outputs():
    torch.manual_seed(0)
    x = make_batch(tiny_config(), 2)
    args = (x["volume"], x["pose"], x["mip"], x["drr"])

    no_sty = CT2XGAN(tiny_config(use_style_encoder=False))
    assert no_sty.style_encoder is None and no_sty.constant_style is not None
    out = no_sty(*args)  # no X-ray needed
    assert out.xray_hat is None and out.fake is out.drr_hat and out.f_c_xray_hat is None
    _ok(out.drr_hat, (2, 1, 128, 128))

    no_consis = CT2XGAN(tiny_config(use_consistency=False))
    out = no_consis(*args, x["xray"])
    assert out.xray_hat is not None and out.f_sty_x_of_drr is not None
    assert out.f_c_xray_hat is None and out.f_sty_drr_hat is None

    no_pam = CT2XGAN(tiny_config(use_pam=False)).eval()
    assert isinstance(no_pam.pose_module, PoseQuery)
    other_mip = torch.rand_like(x["mip"])
    with torch.no_grad():
        a = no_pam(*args, x["xray"]).drr_hat
        b = no_pam(x["volume"], x["pose"], other_mip, x["drr"], x["xray"]).drr_hat
    assert torch.equal(a, b)  # without the PAM the MIP is not used

    pam = CT2XGAN(tiny_config()).eval()
    assert isinstance(pam.pose_module, PoseAttentionModule)
    with torch.no_grad():
        a = pam.view_content(x["volume"], x["pose"], x["mip"]).code
        b = pam.view_content(x["volume"], x["pose"], other_mip).code
    assert not torch.allclose(a, b)  # the PAM reads the MIP


def test_content_code_depends_on_pose():
    torch.manual_seed(0)
    c = tiny_config()
    model = CT2XGAN(c).eval()
    x = make_batch(c, 2)
    same_volume = x["volume"][:1].expand(2, -1, -1, -1, -1)
    same_mip = x["mip"][:1].expand(2, -1, -1, -1)
    with torch.no_grad():
        code = model.view_content(same_volume, x["pose"], same_mip).code  # poses -60 and +60
    assert not torch.allclose(code[0], code[1])


@pytest.mark.parametrize(("size", "num_ws"), [(128, 12), (256, 14)])
def test_generator_layers_take_content_then_style(size, num_ws):
    """Layers 1-8 get the content code's vectors, layers 9..num_ws the style code's, in order."""
    torch.manual_seed(0)
    c = tiny_config(size)
    g = Generator(c)
    assert g.num_ws == num_ws == 2 * int(math.log2(size)) - 2
    assert g.layer_resolutions == sorted(g.layer_resolutions)
    assert g.layer_resolutions[0] == 4 and g.layer_resolutions[-1] == size
    seen: list[torch.Tensor] = []
    hooks = [layer.register_forward_pre_hook(lambda _m, args: seen.append(args[1])) for layer in g.layers]
    content = torch.randn(2, c.num_content_layers, c.w_dim)
    style = torch.randn(2, c.num_style_layers, c.w_dim)
    g(content, style)
    for h in hooks:
        h.remove()
    expected = list(content.unbind(1)) + list(style.unbind(1))
    assert len(seen) == num_ws
    for got, want in zip(seen, expected, strict=True):
        assert torch.equal(got, want)


def test_pose_attention_is_eq_13():
    q = torch.tensor([[[1.0, 0.0]]])  # (1, 1, 2)
    k = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (1, 2, 2)
    v = torch.tensor([[[2.0], [4.0]]])  # (1, 2, 1)
    tau = 0.5
    e0, e1 = math.exp(1.0 / tau), math.exp(0.0)
    expected = (2.0 * e0 + 4.0 * e1) / (e0 + e1)
    assert pose_attention(q, k, v, tau).item() == pytest.approx(expected, rel=1e-6)


def test_discriminator_is_pose_conditioned():
    torch.manual_seed(0)
    c = tiny_config()
    d = Discriminator(c)
    x = make_batch(c, 2)
    image = x["drr"][:1].expand(2, -1, -1, -1)
    scores = d(image, x["pose"])
    assert scores[0] != scores[1]


def test_inference_path_matches_forward():
    torch.manual_seed(0)
    c = tiny_config()
    model = CT2XGAN(c).eval()
    x = make_batch(c, 2)
    with torch.no_grad():
        out = model(x["volume"], x["pose"], x["mip"], x["drr"], x["xray"])
        content = model.view_content(x["volume"], x["pose"], x["mip"])
        image = model.render(content, model.style_encoder.xray_style(x["xray"]))
    torch.testing.assert_close(image, out.xray_hat)
    with pytest.raises(CT2XError, match="takes no projection images"):
        model.view_content(x["volume"], x["pose"], x["mip"], torch.zeros(2, 4, c.image_size, c.image_size))


def test_projected_generator_draws_its_projection_images():
    """With the projection path the image follows the projections given (the same codes, other
    projections: another image) and keeps their layout (a bright square stays where it is)."""
    torch.manual_seed(0)
    c = tiny_config(projection_inputs=True, use_xray_discriminator=True, xray_d_channels=8)
    model = CT2XGAN(c).eval()
    x = make_batch(c, 2)
    size = c.image_size
    projections = torch.zeros(2, 4, size, size)
    projections[0, 1, : size // 2, : size // 2] = 1.0  # soft tissue top left
    projections[1, 1, size // 2 :, size // 2 :] = 1.0  # bottom right
    same = {k: v[:1].expand_as(v) for k, v in x.items()}
    with torch.no_grad():
        content = model.view_content(same["volume"], same["pose"], same["mip"], projections)
        images = model.render(content, model.drr_style_code(same["drr"]))
    assert not torch.allclose(images[0], images[1], atol=1e-3)
    # the two images differ where the projections differ (top left, bottom right), far less elsewhere
    diff = (images[0] - images[1]).abs()[0]
    h = size // 2
    changed = (diff[:h, :h].mean() + diff[h:, h:].mean()) / 2
    unchanged = (diff[:h, h:].mean() + diff[h:, :h].mean()) / 2
    assert changed > 2 * unchanged
    with pytest.raises(CT2XError, match="needs the projection images"):
        model.view_content(x["volume"], x["pose"], x["mip"])
    out = model(x["volume"], x["pose"], x["mip"], x["drr"], x["xray"], projections)
    scores = model.xray_discriminator(out.xray_hat)
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_bad_inputs_raise_ct2x_errors():
    c = tiny_config()
    model = CT2XGAN(c)
    x = make_batch(c, 2)
    with pytest.raises(CT2XError, match=r"CT volume given to E_CT must have shape \(B, 1, 32, 32, 32\)"):
        model(torch.zeros(2, 1, 16, 16, 16), x["pose"], x["mip"], x["drr"], x["xray"])
    with pytest.raises(CT2XError, match=r"pose must have shape \(2, 25\)"):
        model(x["volume"], x["pose"][:, :16], x["mip"], x["drr"], x["xray"])
    with pytest.raises(CT2XError, match=r"image given to E_sty must have shape \(B, 1, 128, 128\)"):
        model(x["volume"], x["pose"], x["mip"], x["drr"][..., :64, :64], x["xray"])
    with pytest.raises(CT2XError, match="needs a real X-ray"):
        model(x["volume"], x["pose"], x["mip"], x["drr"])


def test_normalize_hu():
    c = CT2XConfig()
    hu = torch.tensor([-3000.0, c.hu_min, 0.5 * (c.hu_min + c.hu_max), c.hu_max, 5000.0])
    assert normalize_hu(hu, c).tolist() == pytest.approx([-1.0, -1.0, 0.0, 1.0, 1.0])


@pytest.mark.slow
def test_paper_config_builds_and_runs_one_sample():
    """The full paper sizes (128^3 CT, 256^2 images, 14 synthesis layers): construction and one synthesis.

    D's forward at paper size is left out to keep this under ~10 s on one CPU core (D's
    shapes are covered at 256^2 with narrow channels above).
    """
    torch.manual_seed(0)
    c = CT2XConfig.preset("paper")
    model = CT2XGAN(c).eval()
    count = sum(p.numel() for p in model.parameters())
    assert 10e6 < count < 200e6
    assert model.generator.num_ws == 14
    x = make_batch(c, 1)
    with torch.no_grad():
        f_c_ct = model.ct_encoder(x["volume"])
        f_c_wplus = model.pose_module(f_c_ct, x["pose"], x["mip"])
        f_sty_x = model.style_encoder.xray_style(x["xray"])
        image = model.generator(f_c_wplus, f_sty_x)
    _ok(f_c_ct, (1, 8, 512))
    _ok(f_c_wplus, (1, 8, 512))
    _ok(f_sty_x, (1, 6, 512))
    _ok(image, (1, 1, 256, 256))

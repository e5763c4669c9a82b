"""CT2XConfig: paper defaults, presets, files, and errors that name the key."""

from __future__ import annotations

import json

import pytest

from ct2x.config import CT2XConfig
from ct2x.errors import CT2XError


def test_defaults_are_the_papers_values():
    c = CT2XConfig()
    assert c == CT2XConfig.preset("paper")
    # sect. 4.1
    assert (c.volume_size, c.voxel_spacing_mm) == (128, 1.0)
    assert (c.lr, c.batch_size, c.epochs) == (0.0025, 16, 100)
    assert c.drr_step == 0.1
    assert (c.sdd_mm, c.sid_mm) == (1020.0, 530.0)
    # 14 synthesis layers at 256^2, layers 1-8 content, 9-14 style
    assert (c.image_size, c.num_ws, c.num_content_layers, c.num_style_layers) == (256, 14, 8, 6)
    assert len(c.style_channels) + 1 == 7  # seven Conv2D layers per style branch
    assert c.use_style_encoder and c.use_pam and c.use_consistency
    assert c.pixel_spacing_mm == pytest.approx(1536 * 0.194 / 256)


def test_small_preset_is_smaller_and_valid():
    small, paper = CT2XConfig.preset("small"), CT2XConfig.preset("paper")
    assert small.image_size == 128 and small.num_ws == 12 and small.num_style_layers == 4
    assert small.volume_size < paper.volume_size and small.w_dim < paper.w_dim
    assert CT2XConfig.preset("small", batch_size=2).batch_size == 2


def test_tau_defaults_to_sqrt_of_w_dim():
    assert CT2XConfig(w_dim=64).tau == 8.0
    assert CT2XConfig(pam_tau=0.5).tau == 0.5


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_file_round_trip(tmp_path, suffix):
    config = CT2XConfig.preset("small", use_pam=False, lambda_0=0.25, lpips_weights="/some/alexnet.pth")
    path = tmp_path / f"config{suffix}"
    config.save(path)
    assert CT2XConfig.from_file(path) == config


def test_yaml_with_preset_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("preset: small\nradiograph_field_mm: 4e2\nadam_betas: [0, 0.9]\nuse_consistency: false\n")
    config = CT2XConfig.from_file(path)
    assert config.volume_size == CT2XConfig.preset("small").volume_size
    assert config.radiograph_field_mm == 400.0 and isinstance(config.radiograph_field_mm, float)
    assert config.adam_betas == (0.0, 0.9)
    assert not config.use_consistency and not config.consistency_enabled


def test_retired_keys_of_old_model_cards_still_load():
    old = {"preset": "small", "view_angles": [-60, 0, 60], "drr_spectrum": "60KV_AL35", "drr_photons": 1e6}
    assert CT2XConfig.from_dict(old) == CT2XConfig.preset("small")


def test_projected_preset_adds_the_projection_path_and_radiograph_discriminator():
    projected, small, paper = (CT2XConfig.preset(n) for n in ("projected", "small", "paper"))
    assert projected.projection_inputs and projected.use_xray_discriminator
    assert not (small.projection_inputs or small.use_xray_discriminator)
    assert not (paper.projection_inputs or paper.use_xray_discriminator)
    assert (projected.image_size, projected.w_dim) == (small.image_size, small.w_dim)


def test_every_config_key_is_read_by_the_package():
    """A key no code reads is a dead switch: each field must be used outside config.py, directly or
    through a derived property of the config (e.g. ``tau`` reads ``pam_tau``) that is."""
    import dataclasses
    import inspect
    import re
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "ct2x"
    sources = "\n".join(p.read_text(encoding="utf-8") for p in package.rglob("*.py") if p.name != "config.py")

    def used(name: str) -> bool:
        return re.search(rf"\.{name}\b|[\"']{name}[\"']", sources) is not None

    derived = {n: inspect.getsource(v.fget) for n, v in vars(CT2XConfig).items() if isinstance(v, property)}
    dead = [
        f.name
        for f in dataclasses.fields(CT2XConfig)
        if not used(f.name) and not any(used(n) and f"self.{f.name}" in body for n, body in derived.items())
    ]
    assert dead == []


def test_ablation_switches():
    assert not CT2XConfig(use_style_encoder=False).consistency_enabled
    assert not CT2XConfig(use_consistency=False).consistency_enabled
    assert CT2XConfig(use_pam=False).consistency_enabled


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lr_g": 0.1}, "unknown config key 'lr_g' (known keys: adam_betas,"),
        ({"batch_size": "16"}, "config key 'batch_size' must be int, got str"),
        ({"batch_size": 16.0}, "config key 'batch_size' must be int, got float"),
        ({"use_pam": 1}, "config key 'use_pam' must be bool, got int"),
        ({"lr": True}, "config key 'lr' must be float, got bool"),
        ({"ct_channels": [8, "16", 32, 32]}, "config key 'ct_channels[1]' must be int, got str"),
        ({"adam_betas": 0.5}, "config key 'adam_betas' must be list of float, got float"),
        ({"pam_tau": "small"}, "config key 'pam_tau' must be float or null, got str"),
        ({"lpips_weights": 3}, "config key 'lpips_weights' must be str or null, got int"),
        ({"image_size": 200}, "config key 'image_size' must be a power of two"),
        ({"image_size": 16}, "config key 'num_content_layers'"),
        ({"ct_channels": [8, 16]}, "config key 'ct_channels' must list 4 widths"),
        ({"lambda_0": -1.0}, "config key 'lambda_0' must be a weight >= 0"),
        ({"sid_mm": 2000.0}, "config key 'sid_mm' must be smaller than sdd_mm"),
        ({"lpips_backbone": "squeeze"}, "config key 'lpips_backbone' must be one of alex, vgg, random"),
        ({"adv_loss": "hinge"}, "config key 'adv_loss' must be one of softplus, linear"),
        ({"pam_mip_size": 30}, "config key 'pam_mip_size' must be a multiple of pam_patch_size"),
        ({"preset": "huge"}, "unknown config preset 'huge'"),
    ],
)
def test_bad_values_name_the_key(values, message):
    with pytest.raises(CT2XError) as caught:
        CT2XConfig.from_dict(values)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_replace_validates():
    with pytest.raises(CT2XError, match="'w_dim' must be int"):
        CT2XConfig().replace(w_dim="512")
    assert CT2XConfig().replace(w_dim=256).w_dim == 256


def test_file_errors(tmp_path):
    with pytest.raises(CT2XError, match="must end in .yaml, .yml or .json"):
        CT2XConfig.from_file(tmp_path / "config.toml")
    with pytest.raises(CT2XError, match="cannot read config file"):
        CT2XConfig.from_file(tmp_path / "absent.yaml")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("lr: [0.1\n")
    with pytest.raises(CT2XError, match="is not valid YAML"):
        CT2XConfig.from_file(bad_yaml)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{'lr': 0.1}")
    with pytest.raises(CT2XError, match="is not valid JSON"):
        CT2XConfig.from_file(bad_json)
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([1, 2]))
    with pytest.raises(CT2XError, match="must hold a mapping"):
        CT2XConfig.from_file(listed)
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"image_sise": 128}))
    with pytest.raises(CT2XError, match="unknown config key 'image_sise'"):
        CT2XConfig.from_file(unknown)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert CT2XConfig.from_file(empty) == CT2XConfig()


def test_every_shipped_config_file_loads_and_changes_its_preset():
    """configs/*.yaml and configs/ablations/*.yaml are README recipes: each must load (an unknown or
    misspelt key is refused) and must differ from the bare preset it names."""
    from pathlib import Path

    import yaml

    files = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))
    assert len(files) >= 9
    for path in files:
        loaded = CT2XConfig.from_file(path)
        preset = yaml.safe_load(path.read_text(encoding="utf-8"))["preset"]
        assert loaded != CT2XConfig.preset(preset), path.name

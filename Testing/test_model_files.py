"""Trained-model files: safetensors + JSON card only, checked before use; DRR-reconstruction scores.

The networks here are randomly initialised: these tests check the plumbing only.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from ct2x.checkpoint import load_model, save_model
from ct2x.config import CT2XConfig
from ct2x.errors import CT2XError
from ct2x.models import CT2XGAN

CONFIG = CT2XConfig.preset("small", image_size=64, lpips_backbone="random")


def _saved(tmp_path: Path) -> tuple[Path, CT2XGAN]:
    torch.manual_seed(3)
    model = CT2XGAN(CONFIG)
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith("discriminator.")}
    path = tmp_path / "model.safetensors"
    save_model(path, weights, {"config": CONFIG.to_dict(), "training": {"steps": 0}})
    return path, model


def test_model_round_trips_without_the_discriminator(tmp_path: Path) -> None:
    path, original = _saved(tmp_path)
    loaded, card = load_model(path)
    assert card["format"] == "ct2x-model" and not loaded.training
    expected = original.state_dict()
    for key, value in loaded.state_dict().items():
        if not key.startswith("discriminator."):
            torch.testing.assert_close(value, expected[key], msg=key)


def test_a_pickle_is_refused_and_never_opened(tmp_path: Path) -> None:
    trap = tmp_path / "model.pt"
    trap.write_bytes(pickle.dumps({"weights": 1}))
    with pytest.raises(CT2XError, match="pickle"):
        load_model(trap)


def test_card_of_another_format_version_is_refused(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    card = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    path.with_suffix(".json").write_text(json.dumps({**card, "version": 99}))
    with pytest.raises(CT2XError, match="version 99"):
        load_model(path)


def test_weights_that_do_not_match_the_card_are_refused(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    card = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    card["config"]["w_dim"] = 32
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(CT2XError, match="do not match the config"):
        load_model(path)


def test_missing_card_is_named(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    path.with_suffix(".json").unlink()
    with pytest.raises(CT2XError, match="model.json is missing"):
        load_model(path)

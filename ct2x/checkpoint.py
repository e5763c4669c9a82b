"""Training checkpoints and trained-model files: safetensors for tensors, JSON for the rest.

Nothing here unpickles: every tensor lives in a ``.safetensors`` file and every other value
(config, step, optimiser hyper-parameters, dataset hash) in a JSON file beside it. Every file
is written atomically (temporary file, then rename), and a run's ``latest.json`` is replaced
only after the checkpoint it names is complete, so a crash at any moment leaves the previous
checkpoint as the latest one.

Layout of a run folder::

    latest.json                      {"checkpoint": "checkpoints/step-00000100.json", "step": 100}
    checkpoints/step-00000100.json   format, version, step, config, manifest_hash, optimisers
    checkpoints/step-00000100.safetensors   model.*, ema.*, opt_g.*, opt_d.*, rng.torch
    model.safetensors, model.json    the trained model (EMA weights of everything but D) + card

A trained model may also carry **reference style codes**: the X-ray style codes
``f_sty^X`` ``(num_style_layers, w_dim)`` of a few training radiographs, stored as tensors
``style_code.<name>`` and listed in the card's ``style_codes`` (name and source radiograph).
They let a model synthesize in those styles without the radiographs themselves (the demo's
style grid); they are numbers the model computed, not images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ct2x.atomic import atomic_path
from ct2x.errors import CT2XError

CHECKPOINT_FORMAT = "ct2x-checkpoint"
MODEL_FORMAT = "ct2x-model"
FORMAT_VERSION = 1
LATEST = "latest.json"
STYLE_CODE_PREFIX = "style_code."


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def optimizer_to_files(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser's state into tensors (``prefix.<param>.<name>``) and JSON-able groups."""
    state = optimizer.state_dict()
    tensors = {
        f"{prefix}.{index}.{name}": value if torch.is_tensor(value) else torch.tensor(value)
        for index, entries in state["state"].items()
        for name, value in entries.items()
    }
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups}


def optimizer_from_files(prefix: str, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], saved: dict):
    """Restore what :func:`optimizer_to_files` split (in place)."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            index, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in saved["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(
    run: Path, step: int, tensors: dict[str, torch.Tensor], info: dict[str, Any], keep: int = 3
) -> Path:
    """Write checkpoint ``step`` (tensors + JSON ``info``), then point ``latest.json`` at it.

    Older checkpoints beyond the ``keep`` most recent are deleted afterwards.
    Returns the JSON file of the checkpoint.
    """
    folder = run / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    _write_tensors(folder / f"{name}.safetensors", tensors)
    payload = {"format": CHECKPOINT_FORMAT, "version": FORMAT_VERSION, "step": step, "weights": f"{name}.safetensors"}
    _write_json(folder / f"{name}.json", {**payload, **info})
    _write_json(run / LATEST, {"checkpoint": f"checkpoints/{name}.json", "step": step})
    for old in sorted(folder.glob("step-*.json"))[:-keep]:
        old.with_suffix(".safetensors").unlink(missing_ok=True)
        old.unlink(missing_ok=True)
    return folder / f"{name}.json"


def load_latest(run: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON info and tensors of the run's latest checkpoint, or a CT2XError saying why not."""
    latest = run / LATEST
    if not latest.is_file():
        raise CT2XError(f"nothing to resume in {run}: it has no {LATEST} (start without --resume)")
    try:
        pointer = json.loads(latest.read_text(encoding="utf-8"))
        info_path = run / pointer["checkpoint"]
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, KeyError, json.JSONDecodeError) as error:
        raise CT2XError(f"the checkpoint named by {latest} cannot be read ({error})") from None
    if info.get("format") != CHECKPOINT_FORMAT or info.get("version") != FORMAT_VERSION:
        raise CT2XError(f"{info_path} is not a CT2X checkpoint of format version {FORMAT_VERSION}")
    return info, load_file(str(info_path.parent / info["weights"]))


def save_model(path: Path, weights: dict[str, torch.Tensor], card: dict[str, Any]) -> None:
    """Write a trained model: ``path`` (.safetensors) and its card ``path.with_suffix('.json')``."""
    _write_tensors(path, weights, metadata={"format": MODEL_FORMAT})
    _write_json(path.with_suffix(".json"), {"format": MODEL_FORMAT, "version": FORMAT_VERSION, **card})


def load_card(path: str | Path):  # noqa: ANN201 (CT2XConfig is imported lazily)
    """The card of a trained model file (``path``: its ``.safetensors``) and the config it records, as
    ``(card, CT2XConfig)``, checked without building the network; a CT2XError says what is wrong
    (missing files, not a JSON object, another format or version, no or a bad ``config``)."""
    from ct2x.config import CT2XConfig

    path = Path(path)
    card_path = path.with_suffix(".json")
    if path.suffix != ".safetensors":
        raise CT2XError(
            f"{path.name} is not a .safetensors file: CT2X reads models only as safetensors + a JSON card "
            "(pickled .pt/.pth/.ckpt files can run code when loaded and are refused)"
        )
    for needed in (path, card_path):
        if not needed.is_file():
            raise CT2XError(f"a model is {path.name} with its card {card_path.name} beside it; {needed} is missing")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CT2XError(f"cannot read the model card {card_path}: {error}") from None
    if not isinstance(card, dict):
        raise CT2XError(
            f"the model card {card_path} holds a JSON {type(card).__name__}, not the card's JSON object "
            '({"format": "ct2x-model", "config": {...}, ...}): put the card ct2x train wrote beside the model'
        )
    if card.get("format") != MODEL_FORMAT or card.get("version") != FORMAT_VERSION:
        raise CT2XError(
            f"{card_path} is a model card of format {card.get('format')!r} version {card.get('version')!r}; "
            f"this ct2x reads {MODEL_FORMAT!r} version {FORMAT_VERSION}"
        )
    if "config" not in card:
        raise CT2XError(
            f"the model card {card_path} has no 'config' (the network's configuration), so the weights cannot "
            "be placed: put the card ct2x train wrote beside the model"
        )
    try:
        config = CT2XConfig.from_dict(card["config"])
    except CT2XError as error:
        raise CT2XError(f"the 'config' of the model card {card_path} is not valid: {error}") from None
    return card, config


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """A trained model (``.safetensors`` + its ``.json`` card) as ``(CT2XGAN, card)``, in eval mode.

    Only safetensors weights are read (never a pickle). The discriminator is not part of a
    trained model and stays at its initial values. The card is read by :func:`load_card`.
    """
    from ct2x.models import CT2XGAN

    path = Path(path)
    card, config = load_card(path)
    model = CT2XGAN(config)
    try:
        weights = load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise CT2XError(f"cannot read the weights {path}: {error}") from None
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.startswith("discriminator.")}
    found = {k: v.shape for k, v in weights.items() if not k.startswith(STYLE_CODE_PREFIX)}
    if found != expected:
        wrong = sorted(set(found) ^ set(expected)) or sorted(k for k in found if found[k] != expected[k])
        raise CT2XError(f"the weights in {path} do not match the config in its card (e.g. {wrong[0]})")
    code_shape = (config.num_style_layers, config.w_dim)
    bad_codes = [k for k, v in weights.items() if k.startswith(STYLE_CODE_PREFIX) and tuple(v.shape) != code_shape]
    if bad_codes:
        raise CT2XError(f"the style code {bad_codes[0]} in {path} is not {code_shape[0]} x {code_shape[1]}")
    model.load_state_dict({k: v for k, v in weights.items() if not k.startswith(STYLE_CODE_PREFIX)}, strict=False)
    return model.to(device).eval(), card


def load_style_codes(path: str | Path) -> dict[str, torch.Tensor]:
    """The reference style codes of a model file (see the module docstring), by name; empty if none."""
    weights = load_file(str(path))
    return {k[len(STYLE_CODE_PREFIX) :]: v for k, v in weights.items() if k.startswith(STYLE_CODE_PREFIX)}

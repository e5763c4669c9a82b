"""Training checkpoints and trained-model files: safetensors for tensors, JSON for the rest.

Nothing here unpickles: every tensor lives in a ``.safetensors`` file and every other value
(config, step, optimiser hyper-parameters, dataset hash) in a JSON file beside it. Every file
is written atomically (temporary file, then rename), and a run's ``latest.json`` is replaced
only after the checkpoint it names is complete, so a crash at any moment leaves the previous
checkpoint as the latest one. Old checkpoints are pruned by their step number, never the newest;
:func:`load_latest` falls back to the newest complete checkpoint when the one ``latest.json``
names is damaged or missing (or ``latest.json`` itself is), with one warning.

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
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ct2x.atomic import atomic_path, remove_temporaries, write_safetensors
from ct2x.contracts import STYLE_CODE_PREFIX
from ct2x.errors import CT2XError

CHECKPOINT_FORMAT = "ct2x-checkpoint"
MODEL_FORMAT = "ct2x-model"
FORMAT_VERSION = 1
LATEST = "latest.json"
CHECKPOINTS = "checkpoints"
MODEL = "model.safetensors"
_CHECKPOINT_NAME = re.compile(r"step-(\d+)\.(json|safetensors)")


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")


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


def checkpoint_steps(run: Path) -> list[int]:
    """The step numbers of the checkpoint files in ``run`` (either file of a pair), ascending."""
    folder = run / CHECKPOINTS
    names = (_CHECKPOINT_NAME.fullmatch(p.name) for p in folder.iterdir()) if folder.is_dir() else ()
    return sorted({int(match.group(1)) for match in names if match})


def run_contents(run: Path) -> list[str]:
    """What of a training run ``run`` holds (``latest.json``, checkpoints, the model); empty for a new run."""
    steps = checkpoint_steps(run)
    found = [LATEST] if (run / LATEST).exists() else []
    found += [f"{len(steps)} checkpoints (steps {steps[0]}-{steps[-1]})"] if steps else []
    return found + [name for name in (MODEL, "model.json") if (run / name).exists()]


def remove_stale_temporaries(run: Path) -> list[Path]:
    """Remove the temporary files a killed run left (see :func:`ct2x.atomic.remove_temporaries`).
    Only the process that holds the run's lock may call this."""
    removed = [p for target in (LATEST, MODEL, "model.json") for p in remove_temporaries(run, target)]
    if (run / CHECKPOINTS).is_dir():
        removed += [p for t in ("step-*.json", "step-*.safetensors") for p in remove_temporaries(run / CHECKPOINTS, t)]
    return removed


def latest_step(run: Path) -> int | None:
    """The step ``latest.json`` of ``run`` names, or None (no readable ``latest.json``)."""
    try:
        return int(json.loads((run / LATEST).read_text(encoding="utf-8"))["step"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def save_checkpoint(
    run: Path, step: int, tensors: dict[str, torch.Tensor], info: dict[str, Any], keep: int = 3
) -> Path:
    """Write checkpoint ``step`` (tensors + JSON ``info``), then point ``latest.json`` at it.

    Afterwards only the ``keep`` checkpoints of the highest step numbers and this one are kept.
    Returns the JSON file of the checkpoint. A failed write raises :class:`ct2x.atomic.WriteError`
    with ``latest.json`` still naming the previous checkpoint.
    """
    folder = run / CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    write_safetensors(folder / f"{name}.safetensors", tensors)
    payload = {"format": CHECKPOINT_FORMAT, "version": FORMAT_VERSION, "step": step, "weights": f"{name}.safetensors"}
    _write_json(folder / f"{name}.json", {**payload, **info})
    _write_json(run / LATEST, {"checkpoint": f"{CHECKPOINTS}/{name}.json", "step": step})
    for old in checkpoint_steps(run)[:-keep]:
        if old != step:
            for suffix in (".safetensors", ".json"):
                (folder / f"step-{old:08d}{suffix}").unlink(missing_ok=True)
    return folder / f"{name}.json"


def _read_checkpoint(info_path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A complete checkpoint's JSON info and tensors, or a CT2XError saying what is wrong with it."""
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CT2XError(f"the checkpoint {info_path} cannot be read ({error})") from None
    if not isinstance(info, dict) or info.get("format") != CHECKPOINT_FORMAT or info.get("version") != FORMAT_VERSION:
        raise CT2XError(f"{info_path} is not a CT2X checkpoint of format version {FORMAT_VERSION}")
    missing = [k for k in ("step", "weights", "config", "manifest_hash", "optimizers") if k not in info]
    if missing:
        raise CT2XError(f"the checkpoint {info_path} lacks {', '.join(missing)}")
    weights = info_path.parent / str(info["weights"])
    try:
        tensors = load_file(str(weights))
    except Exception as error:  # safetensors raises its own error type for a damaged file
        raise CT2XError(f"the checkpoint weights {weights} cannot be read ({error})") from None
    if "rng.torch" not in tensors:
        raise CT2XError(f"the checkpoint weights {weights} are incomplete (no rng.torch)")
    return info, tensors


def load_latest(run: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON info and tensors of the run's latest checkpoint, or a CT2XError saying why not.

    When the checkpoint ``latest.json`` names (or ``latest.json`` itself) is damaged or missing,
    this falls back to the complete checkpoint of the highest step, with one warning."""
    latest = run / LATEST
    named: Path | None = None
    if not latest.is_file():
        problem = f"{run} has no {LATEST}"
    else:
        try:
            named = run / json.loads(latest.read_text(encoding="utf-8"))["checkpoint"]
            return _read_checkpoint(named)
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as error:
            problem = f"{latest} cannot be read ({error})"
        except CT2XError as error:
            problem = str(error)
    folder = run / CHECKPOINTS
    for step in reversed(checkpoint_steps(run)):
        candidate = folder / f"step-{step:08d}.json"
        if candidate == named or not candidate.is_file():
            continue
        try:
            saved = _read_checkpoint(candidate)
        except CT2XError:
            continue
        warnings.warn(f"{problem}: resuming from {candidate} (step {step}), the newest complete one", stacklevel=2)
        return saved
    if named is None and not checkpoint_steps(run):
        raise CT2XError(f"nothing to resume in {run}: it has no {LATEST} (start without --resume)")
    raise CT2XError(f"nothing to resume in {run}: {problem}, and no other checkpoint in {folder} is complete")


def save_model(path: Path, weights: dict[str, torch.Tensor], card: dict[str, Any]) -> None:
    """Write a trained model: ``path`` (.safetensors) and its card ``path.with_suffix('.json')``."""
    write_safetensors(path, weights, metadata={"format": MODEL_FORMAT})
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

    Only safetensors weights are read (never a pickle). The discriminators are not part of a
    trained model (D and D_X stay at their initial values). The card is read by :func:`load_card`.
    """
    from ct2x.models import CT2XGAN, is_discriminator_key

    path = Path(path)
    card, config = load_card(path)
    model = CT2XGAN(config)
    try:
        weights = load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise CT2XError(f"cannot read the weights {path}: {error}") from None
    expected = {k: v.shape for k, v in model.state_dict().items() if not is_discriminator_key(k)}
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

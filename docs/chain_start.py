"""A trained model set to draw its X-ray path's base unchanged: the start of the chain-anchored runs of
docs/training.md that begin exactly at the imaging chain.

    python docs/chain_start.py MODEL.safetensors OUT.safetensors

Writes OUT (+ its card) with the tone curve T reset to the identity and G's last layer (the 1x1
convolution of its image head) zeroed, so that with ``chain_anchor`` step 0 draws the chain's image C
itself (and, in the DRR style, the physics image B); every other tensor is MODEL's. Start a run from it
with ``ct2x train --init OUT``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from safetensors.torch import load_file

from ct2x.checkpoint import load_model, save_model
from ct2x.models.physics_anchor import ToneCurve


def main(model: Path, out: Path) -> None:
    """Write the reset copy of ``model`` to ``out``."""
    network, _ = load_model(model)  # checks the file and its card
    weights = load_file(str(model))  # with the stored style codes, which the network does not hold
    for key, value in ToneCurve(network.config).state_dict().items():  # a fresh tone curve is the identity
        weights[f"tone_curve.{key}"] = value
    last = len(network.generator.layers) - 1
    weights[f"generator.layers.{last}.conv.weight"].zero_()
    weights[f"generator.layers.{last}.conv.bias"].zero_()
    card = json.loads(model.with_suffix(".json").read_text(encoding="utf-8"))
    card = {k: v for k, v in card.items() if k not in ("format", "version")}
    save_model(out, weights, {**card, "reset_from": model.name})
    print(f"{out}: {model.name} with the identity tone curve and G's image head zeroed")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

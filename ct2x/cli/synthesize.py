"""``ct2x synthesize``: X-rays of a CT with a trained model (options: :class:`ct2x.options.SynthesizeOptions`);
also the writer of a synthesized run's files, which ``ct2x demo`` shares."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from ct2x.cli.arguments import (
    add_angle_arguments,
    add_device_argument,
    add_field,
    add_isocenter_argument,
    add_path,
    add_positional,
    options_from,
)
from ct2x.errors import CT2XError
from ct2x.options import SynthesizeOptions

#: Primary angles (degrees) of strip.png, paper Fig. 8.
STRIP_ANGLES = [-90.0, -60.0, -30.0, 0.0, 30.0, 60.0, 90.0]


def add_parser(verbs: argparse._SubParsersAction) -> None:
    """Add ``ct2x synthesize`` to the verbs."""
    synth = verbs.add_parser(
        "synthesize",
        help="synthesize X-ray images of a CT at C-arm angles with a trained CT2X-GAN model",
        description=(
            "Synthesize one X-ray per view in the style of a reference radiograph (or the DRR style), with the "
            "CT preprocessed as in training. Writes per view: NRRD (float32, placed on the detector plane in LPS), "
            "DICOM DX (distances, positioner angles, pixel spacing) and a PNG preview, with the view's CT coverage "
            "(the pixels whose rays cross the CT without leaving through its first or last slice: "
            "VIEW_coverage.nrrd, 1 = covered, and VIEW_coverage.png, white = covered; an overlay plane of the "
            "uncovered pixels in the DICOM; the covered fraction in the NRRD's header, beside the model's file name, "
            "the style and whether the couch was removed), plus views.png (the "
            "requested views) and strip.png (-90..90 degrees every 30, paper Fig. 8)."
        ),
    )
    add_positional(synth, SynthesizeOptions, "ct", type=Path)
    add_path(synth, SynthesizeOptions, "model")
    style = synth.add_mutually_exclusive_group(required=True)
    add_path(style, SynthesizeOptions, "style")
    add_field(style, SynthesizeOptions, "drr_style", action="store_true")
    add_field(style, SynthesizeOptions, "model_style", metavar="NAME")
    add_path(synth, SynthesizeOptions, "like", metavar="XRAY.dcm")
    add_angle_arguments(synth, SynthesizeOptions)
    add_field(synth, SynthesizeOptions, "sdd", type=float)
    add_field(synth, SynthesizeOptions, "sid", type=float)
    add_field(synth, SynthesizeOptions, "detector_size", type=int, nargs="+", metavar="PX")
    add_field(synth, SynthesizeOptions, "pixel_mm", type=float, nargs="+", metavar="MM")
    add_isocenter_argument(synth, SynthesizeOptions)
    add_field(synth, SynthesizeOptions, "series", metavar="UID")
    add_field(synth, SynthesizeOptions, "remove_table", action="store_true")
    add_field(synth, SynthesizeOptions, "format")
    add_path(synth, SynthesizeOptions, "out")
    add_field(synth, SynthesizeOptions, "overwrite", action="store_true")
    add_device_argument(synth, SynthesizeOptions)
    synth.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    """Synthesize into the output folder, held for the run (the previous run in it replaced)."""
    from ct2x.atomic import check_output_folder
    from ct2x.folder_lock import output_run

    options = options_from(args, SynthesizeOptions)
    check_output_folder(options.out, options.overwrite, create=False)
    with output_run(options.out, "ct2x synthesize", options.overwrite) as out:
        _synthesize_into(options, out)


def _synthesize_into(options: SynthesizeOptions, out) -> None:  # noqa: ANN001 (OutputFiles)
    from ct2x.body import read_patient
    from ct2x.checkpoint import load_model
    from ct2x.device import torch_device
    from ct2x.samples import bundled_model

    device = torch_device(options.device)
    geometry = _synthesis_geometry(options)
    path = options.model if options.model is not None else bundled_model()
    model, card = load_model(path, device)
    ct = read_patient(options.ct, options.series, remove_table=options.remove_table)
    if options.drr_style:
        style, style_name = {"drr_style": True}, "DRR style"
    elif options.model_style is not None:
        code = model_style(path, options.model_style)
        style, style_name = {"style_code": code}, f"style {options.model_style}"
    else:
        style, style_name = {"style": options.style}, f"style {options.style.name}"
    made = made_fields(path, style_name, options.remove_table)
    synthesize_to_folder(model, card, ct, geometry, style, made, options.formats, out)


def made_fields(model: Path, style_name: str, remove_table: bool = False) -> dict[str, str]:
    """What made a synthesis, for each view's NRRD header: the model file's name (``ct2x_model``), the style
    (``ct2x_style``: ``style FILM`` with the reference film's file name, ``style NAME`` of a style stored with
    the model, or ``DRR style``; the DICOM's series description names it too) and, with ``--remove-table``,
    ``ct2x_table_removed`` (:func:`ct2x.body.table_field`)."""
    from ct2x.body import table_field

    return {"ct2x_model": model.name, "ct2x_style": style_name} | table_field(remove_table)


def _synthesis_geometry(options: SynthesizeOptions) -> dict:
    """Keyword arguments of ``model_views`` from ``like`` and the geometry options (the options win)."""
    geometry = {
        "primaries": list(options.primaries),
        "secondaries": list(options.secondary) if options.secondary is not None else [0.0],
        "sdd": options.sdd,
        "sid": options.sid,
        "isocenter": tuple(options.isocenter) if options.isocenter else None,
        "detector_pixels": options.detector_size,
        "pixel_mm": options.pixel_mm,
    }
    if options.like is None:
        return geometry
    from ct2x.radiograph_geometry import read_radiograph_geometry

    like = read_radiograph_geometry(options.like)
    for note in like.notes:
        warnings.warn(f"--like {options.like.name}: {note}", stacklevel=1)
    return {
        **geometry,
        "primaries": list(options.angles) if options.angles is not None else [like.primary],
        "secondaries": list(options.secondary) if options.secondary is not None else [like.secondary],
        "sdd": options.sdd if options.sdd is not None else like.sdd,
        "sid": options.sid if options.sid is not None else like.sid,
        "detector_size_mm": like.detector_size_mm,
    }


def model_style(model: Path, name: str):  # noqa: ANN201 (torch is imported lazily)
    """The style code ``name`` stored with ``model``, or a CT2XError listing the stored ones."""
    from ct2x.checkpoint import load_style_codes

    codes = load_style_codes(model)
    if name not in codes:
        stored = ", ".join(sorted(codes)) if codes else "none"
        raise CT2XError(f"{model.name} stores no style named {name!r} (stored styles: {stored})")
    return codes[name]


def synthesize_to_folder(
    model,
    card: dict,
    ct,
    geometry: dict,
    style: dict,
    made: dict[str, str],
    formats: set[str],
    out,
) -> None:  # noqa: ANN001 (CT2XGAN, CTVolume, OutputFiles: torch is imported lazily)
    """Synthesize the requested views (``geometry``: keyword arguments of ``model_views``) and the
    -90..90 strip in one ``style`` (keyword arguments of ``synthesize``); write each view in
    ``formats``, views.png and strip.png into ``out`` (a ``ct2x.folder_lock.OutputFiles``). ``made``: the header
    fields of :func:`made_fields`.

    Each view's CT coverage (:func:`ct2x.drr.coverage`: the pixels whose rays cross the CT without leaving
    through its first or last slice) is written too: ``<view>_coverage.nrrd`` (uint8, 1 = covered) with nrrd,
    ``<view>_coverage.png`` (white = covered) with png, an overlay plane of the uncovered pixels in the DICOM,
    and the covered fraction in the view NRRD's header."""
    from ct2x.drr import coverage
    from ct2x.synthesize import model_views, synthesize
    from ct2x.view_files import (
        coverage_fields,
        coverage_name,
        view_label,
        view_stem,
        write_contact_sheet,
        write_coverage,
        write_png,
        write_view_dicom,
        write_view_nrrd,
    )

    requested = model_views(model.config, card, ct, **geometry)
    strip = model_views(model.config, card, ct, **{**geometry, "primaries": STRIP_ANGLES, "secondaries": [0.0]})
    unique = list(dict.fromkeys(requested + strip))  # the demo asks for the strip's own views
    by_view = dict(zip(unique, synthesize(model, ct, unique, **style), strict=True))
    results, strip = [by_view[c] for c in requested], [by_view[c] for c in strip]
    masks = coverage(ct, requested).numpy()
    for index, (view, mask) in enumerate(zip(results, masks, strict=True)):
        stem = view_stem(view.carm, index)
        if "nrrd" in formats:
            write_view_nrrd(out.path(f"{stem}.nrrd"), view.image, view.carm, made | coverage_fields(mask))
        if "dcm" in formats:
            description = f"CT2X {view_label(view.carm)} {made['ct2x_style']}"
            write_view_dicom(out.path(f"{stem}.dcm"), view.image, view.carm, description, coverage=mask)
        if "png" in formats:
            write_png(out.path(f"{stem}.png"), view.image)
        if formats & {"nrrd", "png"}:
            nrrd = out.path(coverage_name(stem, ".nrrd")) if "nrrd" in formats else None
            png = out.path(coverage_name(stem, ".png")) if "png" in formats else None
            write_coverage(nrrd, png, mask, view.carm)
    write_contact_sheet(out.path("views.png"), [v.image for v in results], [view_label(v.carm) for v in results])
    write_contact_sheet(out.path("strip.png"), [v.image for v in strip], [view_label(v.carm) for v in strip])
    print(
        f"wrote {len(results)} views ({', '.join(sorted(formats))}) with CT coverage masks, views.png and strip.png to "
        f"{out.folder}/"
    )

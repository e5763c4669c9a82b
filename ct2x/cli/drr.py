"""``ct2x drr``: radiographs of a CT at C-arm angles, through the imaging chain on DeepDRR's physics, or the raw
physics DRRs (options: :class:`ct2x.options.DRROptions`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ct2x.cli.arguments import (
    LinesHelpFormatter,
    add_backend_argument,
    add_device_argument,
    add_field,
    add_geometry_arguments,
    add_path,
    add_positional,
    options_from,
)
from ct2x.options import DEFAULT_IMAGING, IMAGING_MODES, IMAGING_PRESETS, IMAGING_RANDOMISED, IMAGING_RAW, DRROptions

#: One or two lines per ``--imaging`` choice, for ``--help`` (the presets' values: ``ct2x.imaging.PRESETS``;
#: ``Testing/test_drr_imaging.py`` checks that every preset is here with its distances).
IMAGING_CHOICES_HELP = {
    "mobile_carm_flat_panel": "a saved fluoroscopy image of a mobile C-arm with a CsI flat panel (70 kVp, grid, "
    "mild processing); SID 530, SDD 1020 mm, 298 x 298 mm detector",
    "mobile_carm_image_intensifier": "the same C-arm with a 23 cm image intensifier (round field, vignetting, "
    "8 bits); SID 530, SDD 1020 mm, 230 x 230 mm detector",
    "chest_dr_pa": "chest PA on a flat-panel stand (125 kVp, grid, strong processing, side marker); SID 1650, "
    "SDD 1800 mm, 430 x 430 mm detector",
    "bedside_cr_ap": "bedside chest AP on a CR cassette (85 kVp, no grid, heel effect, collimated); SID 960, "
    "SDD 1100 mm, 430 x 350 mm detector (rows x columns)",
    IMAGING_RANDOMISED: "every chain parameter (tube, dose, scatter, grid, detector, processing) drawn from its "
    "published range with --seed, at DeepDRR's C-arm geometry",
    IMAGING_RAW: "the physics DRR alone, as before --imaging existed: -log of the transmitted fraction, "
    "--spectrum, --photons Poisson noise",
}


def _epilog() -> str:
    lines = [f"--imaging choices (default {DEFAULT_IMAGING}; docs/imaging-chain.md):"]
    for name in IMAGING_MODES:
        lines += [f"  {name}", f"      {IMAGING_CHOICES_HELP[name]}"]
    lines += [
        "",
        "The geometry options not given take the --imaging preset's (randomised and raw: DeepDRR's C-arm), "
        "e.g. --imaging chest_dr_pa renders at SDD 1800 mm unless --sdd is given; --size or --pixel alone keeps "
        "the detector's size in mm.",
        "",
        "Per view: VIEW.nrrd (float32, placed on the detector plane in LPS; its header holds the C-arm, the "
        "imaging mode, the chain's parameters as JSON and the seeds, the covered fraction), VIEW.png, and the CT "
        "coverage mask VIEW_coverage.nrrd (uint8, 1 = covered) and VIEW_coverage.png (white = covered): the "
        "pixels whose rays cross the CT without leaving through its first or last slice; contact_sheet.png.",
    ]
    return "\n".join(lines)


def add_parser(verbs: argparse._SubParsersAction) -> None:
    """Add ``ct2x drr`` to the verbs."""
    drr = verbs.add_parser(
        "drr",
        help="render radiographs (imaging chain on DeepDRR's physics) or raw DRRs of a CT at C-arm angles",
        description=(
            "Render radiographs of a CT: DeepDRR's physical model (HU -> air / soft tissue / bone and densities, "
            "ray marching with trilinear sampling, polyenergetic attenuation with spekpy spectra and xraydb "
            "coefficients) gives each ray's area densities, then an imaging chain (--imaging) adds the beam "
            "profile, scatter and grid, focal-spot and detector blur, noise from the dose, the detector's log and "
            "the console's processing: display images in [0, 1], bright = attenuating. --imaging raw writes the "
            "physics DRR (-log, optional Poisson noise) instead."
        ),
        epilog=_epilog(),
        formatter_class=LinesHelpFormatter,
    )
    add_positional(drr, DRROptions, "ct", type=Path)
    add_field(drr, DRROptions, "series", metavar="UID")
    add_field(drr, DRROptions, "remove_table", action="store_true")
    add_field(drr, DRROptions, "imaging", metavar="NAME")
    add_path(drr, DRROptions, "style", metavar="FILM")
    add_field(drr, DRROptions, "devices", type=int, metavar="N")
    add_geometry_arguments(drr, DRROptions, "defaults: the --imaging preset's")
    physics = drr.add_argument_group("physics")
    add_field(physics, DRROptions, "step", type=float)
    add_field(physics, DRROptions, "spectrum")
    add_field(physics, DRROptions, "photons", type=float)
    add_field(physics, DRROptions, "seed", type=int)
    add_backend_argument(physics, DRROptions)
    add_device_argument(physics, DRROptions)
    add_path(drr, DRROptions, "out")
    drr.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    """Render the views of ``args`` into their output folder (a re-run replaces the previous run's files)."""
    from ct2x.folder_lock import output_run

    options = options_from(args, DRROptions)
    with output_run(options.out, "ct2x drr", overwrite=True) as out:
        render_views(options, out)


def render_views(options: DRROptions, out) -> None:  # noqa: ANN001 (ct2x.folder_lock.OutputFiles)
    """Render every view of ``options`` and write its NRRD, PNG and coverage mask, then contact_sheet.png,
    into ``out``."""
    from tqdm import tqdm

    from ct2x.body import read_patient
    from ct2x.device import torch_device
    from ct2x.drr import coverage
    from ct2x.drr.spectrum import get_spectrum
    from ct2x.imaging.parameters import chosen
    from ct2x.view_files import view_label, write_contact_sheet

    raw = options.imaging == IMAGING_RAW
    # one chain for all views (its devices too), their noise differs
    parameters = None if raw else chosen(options.imaging, options.seed, options.devices)
    spectrum = options.raw_spectrum if raw else parameters.spectrum
    get_spectrum(spectrum)  # an unknown spectrum fails here, before any work
    device = torch_device(options.device)
    volume = read_patient(options.ct, options.series, remove_table=options.remove_table)
    carms = _views(options, volume, spectrum, device)
    covered = coverage(volume, carms).numpy()
    render, parameters = _renderer(options, volume, parameters, spectrum, device, carms[0])
    made = _header_fields(options, parameters, spectrum)
    images, labels = [], []
    for index, carm in enumerate(tqdm(carms, desc="radiographs" if not raw else "DRR views", unit="view")):
        image = render(carm, index)
        noise = {"ct2x_noise_seed": str(options.seed + index)}
        _write_view(out, image, carm, index, covered[index], made | noise, raw)
        images.append(image)
        labels.append(view_label(carm))
    write_contact_sheet(out.path("contact_sheet.png"), images, labels, window=None if raw else (0.0, 1.0))
    print(
        f"wrote {len(carms)} views ({options.imaging}) to {options.out}/ (NRRD + PNG + coverage mask per view, "
        "contact_sheet.png)"
    )


def _views(options: DRROptions, volume, spectrum: str, device) -> list:  # noqa: ANN001 (CTVolume, torch.device)
    """The C-arm views of ``options`` (a preset's geometry for the options not given), their memory and
    detector checked before any rendering."""
    from ct2x.drr.render import check_render_memory
    from ct2x.geometry import check_detector, views
    from ct2x.imaging.render import chain_geometry

    isocenter = tuple(options.isocenter) if options.isocenter else tuple(volume.center_lps)
    preset = options.imaging if options.imaging in IMAGING_PRESETS else None
    chain = chain_geometry(
        preset, sdd=options.sdd, sid=options.sid, detector_size=options.detector_size, pixel_mm=options.pixel_mm
    )
    carms = views(options.angles, options.secondary, **chain, isocenter=isocenter)
    imaging = options.imaging != IMAGING_RAW
    check_render_memory(  # the views are rendered one at a time, all on one detector: one view's need is the peak
        volume, carms[:1], spectrum=spectrum, device=device, backend=options.backend, imaging=imaging
    )
    (rows, columns), (row_mm, column_mm) = chain["detector_shape"], chain["pixel_spacing"]
    flags = f"--size {rows} x {columns} / --pixel {row_mm:g} x {column_mm:g} mm"
    check_detector(chain["detector_shape"], chain["pixel_spacing"], flags)  # after the memory check (--size 100000)
    return carms


def _header_fields(options: DRROptions, parameters, spectrum: str) -> dict[str, str]:  # noqa: ANN001
    """What made the images, for each view's NRRD header: the imaging mode, step and seed, and the raw physics'
    spectrum and photons or the chain's parameters as JSON (``ImagingParameters(**json.loads(...))``)."""
    import dataclasses
    import json

    from ct2x.body import table_field

    made = {"ct2x_imaging": options.imaging, "ct2x_step_voxels": f"{options.step:g}", "ct2x_seed": str(options.seed)}
    if options.style is not None:
        made["ct2x_style"] = options.style.name  # the parameters below are fitted to it
    made |= table_field(options.remove_table)
    if parameters is None:
        return made | {"ct2x_spectrum": spectrum, "ct2x_photons": f"{options.raw_photons:g}"}
    return made | {"ct2x_imaging_parameters": json.dumps(dataclasses.asdict(parameters))}


def _renderer(options: DRROptions, volume, parameters, spectrum: str, device, first):  # noqa: ANN001, ANN202
    """``(render, parameters)``: ``render(carm, index)`` -> one view's image ``(H, W)`` float32, the raw physics
    DRR, or the imaging chain from the CT converted once (with ``--style``, its look fitted to the film for the
    geometry of the ``first`` view: ``ct2x.synthesize.fitted_look``); view ``index``'s noise is drawn from
    ``seed + index``. The chain's
    parameters are returned (``None`` for raw)."""
    from ct2x.drr import materials, render_drr
    from ct2x.imaging.render import render_radiographs
    from ct2x.synthesize import fitted_look

    if parameters is None:

        def render(carm, index: int):  # noqa: ANN001, ANN202
            return render_drr(
                volume, [carm], step=options.step, spectrum=spectrum, photons=options.raw_photons or None,
                seed=options.seed + index, device=device, backend=options.backend,
                check_memory=False,  # checked once, before any view
            )[0].cpu().numpy()  # fmt: skip

        return render, None
    prepared = materials(volume, device=device, backend=options.backend)
    if options.style is not None:
        parameters = fitted_look(prepared, first, options.style, parameters, device=device, backend=options.backend)

    def render(carm, index: int):  # noqa: ANN001, ANN202
        return render_radiographs(
            prepared, [carm], parameters, step=options.step, seed=options.seed + index, check_memory=False
        )[0].numpy()  # memory checked once, before any view

    return render, parameters


def _write_view(out, image, carm, index: int, covered, made: dict[str, str], raw: bool) -> None:  # noqa: ANN001
    """One view's NRRD (with the header fields ``made`` and its covered fraction), PNG and coverage mask files."""
    from ct2x.view_files import coverage_fields, coverage_name, view_stem, write_coverage, write_png, write_view_nrrd

    stem = view_stem(carm, index)
    fields = {**made, **coverage_fields(covered)}
    write_view_nrrd(out.path(f"{stem}.nrrd"), image, carm, fields)
    write_png(out.path(f"{stem}.png"), image, window=None if raw else (0.0, 1.0))
    write_coverage(out.path(coverage_name(stem, ".nrrd")), out.path(coverage_name(stem, ".png")), covered, carm)

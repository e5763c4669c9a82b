"""``ct2x drr``: DRRs of a CT at C-arm angles with DeepDRR's physics (options: :class:`ct2x.options.DRROptions`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ct2x.cli.arguments import (
    add_backend_argument,
    add_device_argument,
    add_field,
    add_geometry_arguments,
    add_path,
    add_positional,
    options_from,
)
from ct2x.options import DRROptions


def add_parser(verbs: argparse._SubParsersAction) -> None:
    """Add ``ct2x drr`` to the verbs."""
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
    add_positional(drr, DRROptions, "ct", type=Path)
    add_field(drr, DRROptions, "series", metavar="UID")
    add_geometry_arguments(drr, DRROptions)
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
    """Render every view of ``options`` and write its NRRD and PNG, then contact_sheet.png, into ``out``."""
    from tqdm import tqdm

    from ct2x.device import torch_device
    from ct2x.drr import render_drr
    from ct2x.drr.render import check_render_memory
    from ct2x.drr.spectrum import get_spectrum
    from ct2x.geometry import check_detector, views
    from ct2x.view_files import view_label, view_stem, write_contact_sheet, write_png, write_view_nrrd
    from ct2x.volume import read_ct

    get_spectrum(options.spectrum)  # an unknown spectrum fails here, before any work
    device = torch_device(options.device)
    volume = read_ct(options.ct, series_uid=options.series)
    isocenter = tuple(options.isocenter) if options.isocenter else tuple(volume.center_lps)
    chain = {
        "sdd": options.sdd,
        "sid": options.sid,
        "detector_shape": options.detector_shape,
        "pixel_spacing": options.pixel_spacing,
        "isocenter": isocenter,
    }
    carms = views(options.angles, options.secondary, **chain)
    check_render_memory(volume, carms, spectrum=options.spectrum, device=device, backend=options.backend)
    (rows, columns), (row_mm, column_mm) = options.detector_shape, options.pixel_spacing
    flags = f"--size {rows} x {columns} / --pixel {row_mm:g} x {column_mm:g} mm"
    check_detector(options.detector_shape, options.pixel_spacing, flags)  # after the memory check (--size 100000)
    images, labels = [], []
    for index, carm in enumerate(tqdm(carms, desc="DRR views", unit="view")):
        image = (
            render_drr(
                volume,
                [carm],
                step=options.step,
                spectrum=options.spectrum,
                photons=options.photons or None,
                seed=options.seed + index,
                device=device,
                backend=options.backend,
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
    print(f"wrote {len(carms)} views to {options.out}/ (NRRD + PNG per view, contact_sheet.png)")

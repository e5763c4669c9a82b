"""The report folder of ``ct2x evaluate``: what it writes from the images and scores of a run.

* ``report.md`` (:func:`write_report`, :func:`markdown`): paper Tables 1-3 and one table per measure,
  written from the run's summary (the content of ``metrics.json``, every number with the sets it came from).
* ``strip.png`` (one held-out CT from -90 to 90 degrees every 30, paper Fig. 8), ``style_grid.png``
  (paper Fig. 6: rows are held-out CTs, columns style references, AP view) and ``ct_a_vs_b.png`` (two
  CTs at the AP view in one style, each beside its DRR): :func:`write_figures`.
* ``images/`` (every evaluated image as an 8-bit PNG, one folder per method, listed in
  ``images/index.json``: the material of ``ct2x study make``): :func:`write_images`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ct2x.atomic import atomic_path
from ct2x.data.radiographs import evenly_spread
from ct2x.evaluation.measures import EDGE_BLUR_PX
from ct2x.evaluation.methods import (
    CHAIN_ROW,
    DRR_ROW,
    FILM_ROWS,
    FLOOR_ROW,
    GEOMETRY_KEYS,
    OTHER_COLLECTION_ROW,
    REAL_SIZE,
    STYLED_ROW,
    UNTRAINED_ROW,
    EvaluationView,
    MethodImages,
)
from ct2x.evaluation.study import IMAGE_INDEX, IMAGE_INDEX_FORMAT
from ct2x.folder_lock import OutputFiles
from ct2x.models import CT2XGAN
from ct2x.synthesize import model_views, synthesize
from ct2x.view_files import view_label, write_contact_sheet
from ct2x.volume import CTVolume

#: The views of ``strip.png``: primary angles in degrees (RAO 90 to LAO 90).
STRIP_ANGLES = [-90.0, -60.0, -30.0, 0.0, 30.0, 60.0, 90.0]
#: The real radiographs' name in the image index.
REAL_METHOD = "Real radiograph"
#: The image index of a report (``ct2x study make`` reads it).
_REALISM_HEAD = ["| Method | FID ↓ | KID ↓ | C2ST AUC (0.5 best) | LPIPS ↓ | images |", "|---|---|---|---|---|---|"]
#: A measure that does not apply to a row (the film rows' geometry, content, scale, style and LPIPS).
NOT_APPLICABLE = "—"


def write_report(outputs: OutputFiles, summary: dict) -> Path:
    """``metrics.json`` (``summary``) and ``report.md`` (:func:`markdown`) in the report folder; returns the latter."""
    with atomic_path(outputs.path("metrics.json")) as tmp:
        tmp.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    report = outputs.path("report.md")
    with atomic_path(report) as tmp:
        tmp.write_text(markdown(summary), encoding="utf-8")
    return report


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "method"


def _write_png(path: Path, image: np.ndarray) -> None:
    """An image in [0, 1] as an 8-bit grey PNG on the fixed window [0, 1] (no metadata)."""
    pixels = (np.clip(np.nan_to_num(image), 0, 1) * 255 + 0.5).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


def write_images(outputs: OutputFiles, methods: dict[str, MethodImages], real: torch.Tensor) -> dict[str, int]:
    """Every evaluated image under ``OUT/images/<method>/`` and the index ``OUT/images/index.json``
    (method -> files, relative to the report folder ``OUT``), the real radiographs (``(n, 1, h, w)``
    in [0, 1]) first; returns the number of images of each method."""
    index: dict[str, list[str]] = {}
    sets = {
        REAL_METHOD: real[:, 0].numpy(),
        **{n: m.images.reshape(-1, *m.images.shape[-2:]) for n, m in methods.items()},
    }
    for number, (name, images) in enumerate(sets.items()):
        folder = f"images/{number:02d}-{_slug(name)}"
        index[name] = []
        for n, image in enumerate(images):
            _write_png(outputs.path(f"{folder}/{n:04d}.png"), image)
            index[name].append(str(Path(folder, f"{n:04d}.png")))
    with atomic_path(outputs.path(IMAGE_INDEX)) as tmp:
        tmp.write_text(json.dumps({"format": IMAGE_INDEX_FORMAT, "methods": index}, indent=1), encoding="utf-8")
    return {name: len(names) for name, names in index.items()}


def write_figures(
    model: CT2XGAN,
    card: dict,
    cts: list[CTVolume],
    images: MethodImages,
    drrs: MethodImages,
    views: list[EvaluationView],
    outputs: OutputFiles,
    grid_cts: int,
    grid_styles: int,
    references: list[Path],
) -> None:
    """``strip.png``, ``style_grid.png`` and ``ct_a_vs_b.png`` (module docstring) of the model under test
    (``images``: its images of ``cts`` at ``views``; ``drrs``: the physics DRRs; the style grid
    ``grid_cts`` CTs by ``grid_styles`` styles; ``references``: the style references, the first styles the strip)."""
    style = {} if model.style_encoder is None else {"style": references[0]}
    strip = synthesize(model, cts[0], model_views(model.config, card, cts[0], STRIP_ANGLES), **style)
    write_contact_sheet(outputs.path("strip.png"), [v.image for v in strip], [view_label(v.carm) for v in strip])
    ap = next(n for n, v in enumerate(views) if v.carm.primary == 0 and v.carm.secondary == 0)
    rows = evenly_spread(list(range(len(cts))), grid_cts)
    columns = evenly_spread(list(range(images.images.shape[2])), grid_styles)
    tiles = [images.images[c, ap, r] for c in rows for r in columns]
    labels = [f"CT {i}, style {j}" for i in range(1, len(rows) + 1) for j in range(1, len(columns) + 1)]
    write_contact_sheet(outputs.path("style_grid.png"), tiles, labels, columns=len(columns), window=(0.0, 1.0))
    pair = [images.images[0, ap, 0], drrs.images[0, ap, 0], images.images[1, ap, 0], drrs.images[1, ap, 0]]
    labels = ["CT A: model", "CT A: DRR", "CT B: model", "CT B: DRR"]
    write_contact_sheet(outputs.path("ct_a_vs_b.png"), pair, labels, columns=2, window=(0.0, 1.0))


def volume_name(file_name: str) -> str:
    """A prepared file's CT name (``NAME-<hash>.safetensors`` -> ``NAME``)."""
    return file_name.rsplit("-", 1)[0]


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _realism_row(label: str, scores: dict) -> str:
    kid = f"{_fmt(scores['kid'])} ± {_fmt(scores['kid_std'])}"
    auc = f"{_fmt(scores['c2st_auc'], 3)} ± {_fmt(scores['c2st_auc_std'], 3)}"
    lpips = NOT_APPLICABLE if label in FILM_ROWS else _fmt(scores["lpips"])  # a film has no style reference
    return f"| {label} | {_fmt(scores['fid'], 2)} | {kid} | {auc} | {lpips} | {scores['images']} |"


def _not_applicable(label: str, cells: int) -> str:
    """A row of ``cells`` dashes: measures that do not apply to ``label`` (a film row)."""
    return f"| {label} | {' | '.join([NOT_APPLICABLE] * cells)} |"


def _row_order(summary: dict) -> list[str]:
    """The film rows given, the baselines (the imaging chain where scored), the untrained control, the model
    under test, then its ablations."""
    first = summary["model_under_test"]
    ablations = [n for n in summary["models"] if n != first]
    films = [n for n in FILM_ROWS if n in summary["rows"]]
    chain = [CHAIN_ROW] if CHAIN_ROW in summary["rows"] else []
    return [*films, DRR_ROW, STYLED_ROW, *chain, UNTRAINED_ROW, first, *ablations]


def markdown(summary: dict) -> str:
    """``report.md`` of a run's summary (``metrics.json``): the header, Tables 1-3, the geometry, content,
    scale and style tables, the figures; one blank line between sections."""
    order = _row_order(summary)
    rows = summary["rows"]
    first = summary["model_under_test"]
    ablations = [n for n in summary["models"] if n != first]
    sections = [
        _header(summary),
        _realism_table(summary, [n for n in order if n not in ablations]),
        _ablation_table(first, rows, ablations),
        _reconstruction_table(summary["drr_reconstruction_baselines"], rows, order),
        _geometry_table(rows, order),
        _content_table(rows, order),
        _scale_table(summary, order),
        _style_table(rows, order),
        _strip_section(summary),
        _style_grid_section(summary),
        _ct_pair_section(summary),
    ]
    return "\n".join(line for section in sections for line in [*section, ""])


def _header(summary: dict) -> list[str]:
    """The title and what was evaluated, on what, with which features, settings and device."""
    main = summary["models"][summary["model_under_test"]]
    data = summary["data"]
    settings = summary["settings"]
    seen = [v["label"] for v in summary["views"] if v["seen"]]
    unseen = [v["label"] for v in summary["views"] if not v["seen"]]
    return [
        "# CT2X evaluation report",
        "",
        f"- Model under test: `{main['model']}` ({main['steps']} training steps, {main['image_size']}² images)",
        f"- Held-out data: `{data['folder']}`: {len(data['volumes'])} CTs "
        f"({', '.join(volume_name(v) for v in data['volumes'])})",
        f"- Views: {len(seen)} training poses ({', '.join(seen)}) and {len(unseen)} unseen ({', '.join(unseen)}); "
        f"physics DRRs (and every other row) from {_ct_source_phrase(data.get('cts'))}, ray step "
        f"{settings['drr_step']:g} voxel of the CT marched, no noise, min-max scaled",
        f"- Real radiographs: `{summary['radiographs']['folder']}` ({summary['radiographs']['count']} images), "
        f"for the realism measures each centre-cropped to {summary['radiographs']['crop']:g} of its shorter side "
        f"and read at {REAL_SIZE}²; style references: {len(summary['style_references'])} of them, evenly spread, "
        f"read whole by the models and cropped like the real set for the histogram matching "
        f"({', '.join(summary['style_references'])})",
        _region_line(summary.get("scored_region")),
        f"- FID / KID / C2ST features: {summary['feature_extractor']}; KID over 100 random subsets of "
        "min(50, images) images of each set; C2ST: logistic regression on the standardised features, "
        "5-fold stratified cross-validated ROC AUC (mean ± sd over folds)",
        f"- LPIPS (mean distance of each image to its style reference): {summary['lpips']}",
        *_chain_lines(summary),
        *_floor_lines(summary),
        f"- Untrained control: the model's configuration, random initialisation (seed {settings['seed']})",
        f"- Device: {summary['device']}; {summary['seconds']} s",
        "",
        "From this few images FID is biased upward and KID is noisy: compare only rows of the same report.",
    ]


def _chain_lines(summary: dict) -> list[str]:
    """The header's line on the imaging chain's row, where it was scored."""
    chain = summary.get("imaging_chain")
    if chain is None or CHAIN_ROW not in summary["rows"]:
        return []
    return [
        f"- {CHAIN_ROW}: the imaging chain (`ct2x.imaging`) with the `{chain['preset']}` preset's physics at the "
        f"evaluation's views and detector, no learning; its {', '.join(chain['fitted'])} fitted to each style "
        f"reference cropped like the real set ({chain['fit']})"
    ]


def _floor_lines(summary: dict) -> list[str]:
    """The header's line on each film row: its folder and how many of its films were scored."""
    lines = []
    for name, films in summary.get("floor", {}).items():
        scored = (
            f"all {films['films']} films"
            if films["scored"] == films["films"]
            else f"{films['scored']} of its {films['films']} films, evenly spread"
        )
        lines.append(f"- {name}: `{films['folder']}`, {scored}, read like the real set")
    return lines


def _floor_text(summary: dict) -> list[str]:
    """What the film rows are, or that the floor is not placed."""
    floor = summary.get("floor", {})
    if not floor:
        return [
            "The floor is not placed: no real films besides the real set were scored (`--floor` for films of other "
            "patients of the real set's collection, `--other-collection` for another collection), so nothing here "
            "says how low these numbers can go on sets of this size; even real films are far from FID 0 and a "
            "C2ST AUC of 0.5 with this few images."
        ]
    meaning = {
        FLOOR_ROW: "a method at the same-collection row's numbers cannot be told by these measures from real "
        "films of other patients",
        OTHER_COLLECTION_ROW: "the other collection's row shows what a change of hospital or device alone costs",
    }
    counts = []
    for name, films in floor.items():
        if films["scored"] == films["films"] and films["films"] < films["synthetic_images"]:
            counts.append(
                f"{name}: all {films['films']} films, fewer than the {films['synthetic_images']} images of a "
                "synthetic row (FID rises and KID gets noisier as a set shrinks)"
            )
        else:
            counts.append(f"{name}: {films['scored']} films, as many as the images of a synthetic row")
    return [
        "The first rows are real films, not synthesized images, read like the real set (the same crop and size) "
        "and scored by the same measures against it: they place the floor, the numbers that images as real as "
        "films get on sets of this size. Read every synthetic row against them, not against 0: "
        + "; ".join(meaning[name] for name in FILM_ROWS if name in floor)
        + ". LPIPS (the distance to a style reference) and the measures against the physics DRR do not apply to "
        f"films ({NOT_APPLICABLE}). Films scored: " + "; ".join(counts) + "."
    ]


def _ct_source_phrase(cts: list[dict] | None) -> str:
    """What the rows were rendered from (``metrics.json``'s ``data.cts``: each CT's ``ct_source``): the CT as
    read from its file, the stored CT grid (its source missing or changed since prepare), or some of each."""
    if not cts:
        return "the stored CT grid"
    grids = [volume_name(c["volume"]) for c in cts if c["ct_source"] != "file"]
    if not grids:
        return "the CT as read (each volume's source file)"
    if len(grids) == len(cts):
        return "the stored CT grid (the source files missing or changed since prepare)"
    return (
        f"the CT as read (each volume's source file), but from the stored CT grid for {', '.join(grids)} "
        "(source missing or changed since prepare)"
    )


def _region_line(region: dict | None) -> str:
    """The report's line on the part of the field the realism measures see (``metrics.json``'s ``scored_region``)."""
    if region is None:
        return "- Realism is scored on the whole field (no coverage recorded)"
    views = ", ".join(f"{label} {100 * fraction:.0f}%" for label, fraction in region["covered_per_view"].items())
    crop, (height, width) = region["crop"], region["image_size"]
    if region["fraction"] == 1:
        where = "every view's field is covered, so the whole images are scored"
    else:
        rows, columns = region["real_crop"]["rows"], region["real_crop"]["columns"]
        where = (
            f"FID, KID and C2ST see rows {crop['top']}:{crop['bottom']} and columns {crop['left']}:{crop['right']} "
            f"of the {height} x {width} synthetic images ({100 * region['fraction']:.0f}% of the field: the largest "
            f"centred rectangle whose rays cross the whole CT at every view of every CT), and the films centre-cropped "
            f"to its aspect ratio (rows {rows[0]}:{rows[1]}, columns {columns[0]}:{columns[1]} of "
            f"{region['real_crop']['read_at']}²); LPIPS compares whole images"
        )
    return f"- Realism is scored where the CT covers the field: {where}; covered fraction of each view's field: {views}"


def _realism_table(summary: dict, order: list[str]) -> list[str]:
    """Table 1: the film rows (the floor), the baselines, the untrained control and the model under test."""
    realism = [_realism_row(name, summary["rows"][name]["realism"]) for name in order]
    return [
        "## Table 1: realism against the real radiographs",
        "",
        *_floor_text(summary),
        "",
        *_REALISM_HEAD,
        *realism,
    ]


def _ablation_table(first: str, rows: dict, ablations: list[str]) -> list[str]:
    """Table 2: the ablations, then the model under test (``first``) for comparison."""
    if not ablations:
        return ["## Table 2: ablations", "", "No ablation models given (`--ablation NAME=MODEL`)."]
    realism = [_realism_row(name, rows[name]["realism"]) for name in ablations]
    return [
        "## Table 2: ablations",
        "",
        *_REALISM_HEAD,
        *realism,
        _realism_row(f"Ours ({first})", rows[first]["realism"]),
    ]


def _reconstruction_table(baselines: dict | None, rows: dict, order: list[str]) -> list[str]:
    """Table 3: the rows without learning (``baselines``, ``None`` without ``--projections`` data), then every
    network's reconstruction of the stored DRRs."""
    lines = [
        "## Table 3: DRR style reconstruction (eq. 7)",
        "",
        "| Method | PSNR (dB) ↑ | SSIM ↑ | samples |",
        "|---|---|---|---|",
    ]
    networks = [name for name in order if "drr_reconstruction" in rows[name]]
    scores = [*(baselines or {}).items(), *((name, rows[name]["drr_reconstruction"]) for name in networks)]
    lines += [f"| {name} | {_fmt(r['psnr'], 2)} | {_fmt(r['ssim'])} | {r['samples']} |" for name, r in scores]
    if baselines is None:
        lines += ["", "The line-integral and noise-free DRR rows need held-out data prepared with `--projections`."]
    return lines


def _geometry_table(rows: dict, order: list[str]) -> list[str]:
    """Edge NCC (plain, after a blur of both images by :data:`EDGE_BLUR_PX`, and with the tone curve also undone)
    and SSIM against the physics DRR, at the training poses and at the unseen views."""
    lines = [
        "## Geometric fidelity (agreement with the physics DRR of the same CT and view)",
        "",
        f"Edge NCC blurred: both images blurred by a Gaussian of {EDGE_BLUR_PX:g} px before the edge maps, so that "
        "grain and noise do not count as lost anatomy. Untoned: the same after the image's grey levels are mapped "
        "onto the DRR's histogram (monotone: no edge moves), so that a style's tone curve, which scales each edge "
        "by its slope, does not count either.",
        "",
        "| Method | edge NCC, training poses ↑ | blurred ↑ | untoned ↑ | SSIM ↑ "
        "| edge NCC, unseen ↑ | blurred ↑ | untoned ↑ | SSIM ↑ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in order:
        g = rows[name]["geometry"]
        if g is None:
            lines.append(_not_applicable(name, 2 * len(GEOMETRY_KEYS)))
            continue
        cells = [_fmt(g.get(group, {}).get(key), 3) for group in ("seen", "unseen") for key in GEOMETRY_KEYS]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines


def _content_table(rows: dict, order: list[str]) -> list[str]:
    """Edge NCC with the own CT's DRR and with the other CTs' DRRs, and their difference."""
    lines = [
        "## Content sensitivity (own CT's DRR against the other CTs' DRRs, same view)",
        "",
        "| Method | edge NCC, own DRR | edge NCC, other CTs' DRRs | sensitivity ↑ (± sd) |",
        "|---|---|---|---|",
    ]
    for name in order:
        c = rows[name]["content"]
        if c is None:
            lines.append(_not_applicable(name, 3))
            continue
        sensitivity = f"{_fmt(c['sensitivity'], 3)} ± {_fmt(c['sensitivity_std'], 3)}"
        lines.append(f"| {name} | {_fmt(c['own_ncc'], 3)} | {_fmt(c['other_ncc'], 3)} | {sensitivity} |")
    return lines


def _scale_table(summary: dict, order: list[str]) -> list[str]:
    """The magnification error over the SID sweep (mm), in per cent, and the magnification at each SID."""
    sids = summary["scale_sweep"]["sid_mm"]
    lines = [
        f"## Scale error (AP view, style 1, SID {sids[0]:g}-{sids[-1]:g} mm, SDD = SID + "
        f"{summary['scale_sweep']['sdd_minus_sid_mm']:g} mm; DRR ray step {summary['settings']['scale_step']:g} voxel)",
        "",
        "| Method | mean abs(s − 1) % ↓ | max abs(s − 1) % ↓ | " + " | ".join(f"s @ {d:g}" for d in sids) + " |",
        "|---|---|---|" + "---|" * len(sids),
    ]
    for name in order:
        sc = summary["rows"][name]["scale"]
        if sc is None:
            lines.append(_not_applicable(name, 2 + len(sids)))
            continue
        per = " | ".join(_fmt(sc["per_sid"][f"{d:g}"], 3) for d in sids)
        lines.append(f"| {name} | {_fmt(sc['mean_error_pct'], 2)} | {_fmt(sc['max_error_pct'], 2)} | {per} |")
    return lines


def _style_table(rows: dict, order: list[str]) -> list[str]:
    """The histogram spread and the edge agreement between the styles ("n/a" for a method without style input)."""
    lines = [
        "## Style effect (AP view, between the style references)",
        "",
        "| Method | histogram TV between styles | edge NCC between styles |",
        "|---|---|---|",
    ]
    for name in order:
        st = rows[name]["style"]
        if name in FILM_ROWS:
            lines.append(_not_applicable(name, 2))
            continue
        cells = (
            ["n/a (no style input)", "n/a"] if st is None else [_fmt(st["histogram_tv"], 3), _fmt(st["edge_ncc"], 3)]
        )
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines


def _strip_section(summary: dict) -> list[str]:
    """``strip.png`` and its caption."""
    return [
        "## Multi-view synthesis (paper Fig. 8)",
        "",
        f"![strip](strip.png)\n\n*{volume_name(summary['data']['volumes'][0])}, RAO 90 to LAO 90 every 30 degrees, "
        f"style {summary['style_references'][0]}.*",
    ]


def _style_grid_section(summary: dict) -> list[str]:
    """``style_grid.png``, its caption and the CTs and styles of its rows and columns."""
    return [
        "## Style swap (paper Fig. 6)",
        "",
        "![style grid](style_grid.png)\n\n*AP view. Along a row one CT takes several styles; down a column several "
        "CTs take one style.*",
        "",
        *[f"- CT {n}: {name}" for n, name in enumerate(summary["grid"]["rows"], start=1)],
        *[f"- style {n}: {name}" for n, name in enumerate(summary["grid"]["columns"], start=1)],
    ]


def _ct_pair_section(summary: dict) -> list[str]:
    """``ct_a_vs_b.png`` and its caption."""
    volumes = summary["data"]["volumes"]
    return [
        "## CT A vs CT B",
        "",
        f"![CT A vs CT B](ct_a_vs_b.png)\n\n*AP view, style {summary['style_references'][0]}: CT A = "
        f"{volume_name(volumes[0])}, CT B = {volume_name(volumes[1])}; each model image beside the "
        "physics DRR of its CT. A model that follows the CT draws two different images.*",
    ]

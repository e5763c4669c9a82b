"""``ct2x evaluate``: score a model, its ablations and the baselines on held-out data; write a report.

Rows of every table (see :mod:`ct2x.evaluation.methods` for the measures): the physics DRR, the DRR
histogram-matched to the style reference ("styled DRR"), an untrained model of the model's
configuration (random initialisation, seed 0: the control), the model, its ablations.

The report folder holds ``report.md`` (paper Tables 1-3 and one table per measure),
``metrics.json`` (every number, with the sets they came from), ``strip.png`` (one held-out CT
from -90 to 90 degrees every 30, paper Fig. 8), ``style_grid.png`` (paper Fig. 6: rows are
held-out CTs, columns style references, AP view), ``ct_a_vs_b.png`` (two CTs at the AP view in
one style, each beside its DRR) and ``images/`` (every evaluated image as an 8-bit PNG, one
folder per method, listed in ``images/index.json``: the material of ``ct2x study make``).
"""

from __future__ import annotations

import json
import re
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ct2x.atomic import atomic_path
from ct2x.checkpoint import load_card, load_model
from ct2x.data.dataset import CTViewDataset
from ct2x.data.radiographs import evenly_spread, find_radiographs, read_radiographs
from ct2x.device import torch_device
from ct2x.errors import CT2XError, positive_finite
from ct2x.evaluation.inception import InceptionFeatures
from ct2x.evaluation.methods import (
    SCALE_GAP_MM,
    SCALE_SIDS_MM,
    MethodImages,
    RealismMetrics,
    drr_images,
    drr_reconstruction,
    evaluation_views,
    inception_features,
    prepared_volume,
    projection_baselines,
    scale_views,
    styled_drr_images,
    synthesized_images,
    untrained_model,
    view_measures,
)
from ct2x.folder_lock import OutputFiles, output_run
from ct2x.synthesize import model_views, synthesize
from ct2x.view_files import view_label, write_contact_sheet

STRIP_ANGLES = [-90.0, -60.0, -30.0, 0.0, 30.0, 60.0, 90.0]
#: Real radiographs are read at this size for the Inception features (which resize to 299).
REAL_SIZE = 256
DRR_ROW = "DRR (physics)"
STYLED_ROW = "Styled DRR (histogram-matched)"
UNTRAINED_ROW = "Untrained (random init)"
REAL_METHOD = "Real radiograph"
#: The image index of a report (``ct2x study make`` reads it).
IMAGE_INDEX = "images/index.json"


@dataclass(frozen=True)
class EvaluationSettings:
    """``styles``: number of style references; ``lpips_weights``: torchvision AlexNet weights
    (``None``: the torch hub cache); ``grid_cts`` / ``grid_styles``: size of the style grid;
    ``real_crop``: centred fraction of each real radiograph's shorter side kept for the realism
    measures (the field of view; see the README); ``drr_step`` / ``scale_step``: ray-marching
    steps (voxels of the stored CT grid) of the physics DRRs at the evaluation views and of the
    scale-error sweep; ``seed``: of the untrained control, KID's subsets and the C2ST folds."""

    styles: int = 5
    lpips_weights: Path | None = None
    batch_size: int = 8
    grid_cts: int = 4
    grid_styles: int = 5
    real_crop: float = 0.4
    drr_step: float = 0.5
    scale_step: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        """Refuse a ray step that is not a positive finite number of voxels (``inf`` would pass a plain
        ``> 0`` check and fail inside the renders), naming ``ct2x evaluate``'s option."""
        for name in ("drr_step", "scale_step"):
            positive_finite(f"--{name.replace('_', '-')} ({name})", getattr(self, name), "voxels (e.g. 0.5)")


def _lpips(weights: Path | None, device: torch.device):  # noqa: ANN202 (LPIPSLoss or None)
    """The LPIPS network with AlexNet ImageNet weights, or ``(None, reason)`` when they are absent."""
    from ct2x.losses import LPIPSLoss

    try:
        return LPIPSLoss("alex", weights).to(device), "LPIPS v0.1, AlexNet backbone (`lpips` package)"
    except CT2XError as error:
        return None, f"not computed: {error}"


def evaluate_models(
    models: dict[str, Path],
    data: Path,
    xray: Path,
    out: Path,
    settings: EvaluationSettings = EvaluationSettings(),
    device: str | torch.device = "cpu",
    overwrite: bool = True,
) -> Path:
    """Evaluate ``models`` (``{name: model file}``; the first is the model under test, the rest its
    ablations) with the baselines, and write the report folder ``out``; returns ``out / 'report.md'``.

    ``out`` is held for the run (:func:`ct2x.folder_lock.output_run`): another process using it is
    refused at once, an existing folder only with ``overwrite``, and the previous report in it is
    replaced (its files removed, a user's files kept) when this one writes."""
    with output_run(out, "ct2x evaluate", overwrite) as outputs:
        return _evaluate_models(models, data, xray, outputs, settings, device)


def _evaluate_models(
    models: dict[str, Path],
    data: Path,
    xray: Path,
    outputs: OutputFiles,
    settings: EvaluationSettings,
    device: str | torch.device,
) -> Path:
    """:func:`evaluate_models`, with its report folder held as ``outputs``."""
    device = torch_device(device)
    started = time.time()
    # every input is checked (cards, radiographs, held-out CTs) before any network is built
    configs = {name: load_card(path)[1] for name, path in models.items()}
    first = next(iter(models))
    size = configs[first].image_size
    for name, other in configs.items():
        if other.image_size != size:
            raise CT2XError(
                f"{name} makes {other.image_size}² images, the model under test {size}²: "
                "ablations are compared on the same views, train them at the same image_size"
            )
    radiographs = find_radiographs(xray, warn_single=False).paths  # fewer than 2 are refused below
    if len(radiographs) < 2:
        raise CT2XError(
            f"{xray} holds {len(radiographs)} readable radiograph: the realism measures compare two sets, "
            "give a folder of at least 2 real radiographs (tens for meaningful numbers)"
        )
    if settings.styles > len(radiographs):
        warnings.warn(
            f"--styles {settings.styles} asks for more style references than the {len(radiographs)} readable "
            f"radiographs in {xray}: using all {len(radiographs)}",
            stacklevel=2,
        )
    references = evenly_spread(radiographs, settings.styles)
    dataset = CTViewDataset(data, xray, configs[first])
    files = dataset.files
    if len(files) < 2:
        raise CT2XError(
            f"{data} holds {len(files)} prepared CT: content sensitivity compares CTs, prepare at least 2 held-out CTs"
        )
    cts = [prepared_volume(f) for f in files]
    loaded = {name: load_model(path, device) for name, path in models.items()}
    model, card = loaded[first]
    views = [evaluation_views(model.config, card, ct) for ct in cts]
    scale = [scale_views(model.config, card, ct) for ct in cts]
    runs = {UNTRAINED_ROW: untrained_model(model.config, settings.seed).to(device)}
    runs.update({name: m for name, (m, _) in loaded.items()})
    bar = tqdm(total=len(cts) * (1 + len(runs)) + len(runs) + 2, desc="evaluate", unit="step")
    timings: dict[str, float] = {}
    clock = time.time()

    def lap(stage: str) -> None:
        nonlocal clock
        timings[stage] = round(timings.get(stage, 0.0) + time.time() - clock, 1)
        clock = time.time()

    lap("load models and data")
    drr_views, drr_scale = [], []
    for ct, vs, sc in zip(cts, views, scale, strict=True):
        drr_views.append(drr_images(ct, [v.carm for v in vs], settings.drr_step, device)[:, None])
        drr_scale.append(drr_images(ct, sc, settings.scale_step, device))
        bar.update()
    drrs = MethodImages(np.stack(drr_views), np.stack(drr_scale))
    lap("physics DRRs")
    # the styled DRR takes the histogram of the reference at the detector's field of view (the crop of
    # the real set): a whole chest film's darkest pixels are the air around the patient, not the lungs
    cropped_references = read_radiographs(references, size, crop=settings.real_crop)[:, 0].numpy()
    methods: dict[str, MethodImages] = {DRR_ROW: drrs, STYLED_ROW: styled_drr_images(drrs, cropped_references)}
    lap("styled DRRs")
    carms = [[v.carm for v in vs] for vs in views]
    for name, run in runs.items():
        bar.set_postfix_str(name)
        methods[name] = synthesized_images(run, cts, carms, scale, references, settings.batch_size, bar.update)
        lap("synthesis")
    real = read_radiographs(radiographs, REAL_SIZE, crop=settings.real_crop)
    features = InceptionFeatures().to(device)
    lpips, lpips_note = _lpips(settings.lpips_weights, device)
    metrics = RealismMetrics(inception_features(features, real), lpips, seed=settings.seed)
    lap("real radiographs (read, Inception)")
    references_tensor = read_radiographs(references, size).to(device)  # LPIPS: the references as the model reads them
    results: dict[str, dict] = {}
    for name, images in methods.items():
        bar.set_postfix_str(f"measures of {name}")
        flat = torch.from_numpy(images.images.reshape(-1, 1, size, size))
        styles = images.images.shape[2]
        pairs = torch.arange(styles).repeat(len(flat) // styles).to(device) if styles == len(references) else None
        realism = metrics.score(inception_features(features, flat), flat.to(device), references_tensor, pairs)
        lap("realism (Inception, FID, KID, C2ST)")
        results[name] = {"realism": asdict(realism), **view_measures(images, drrs, views[0])}
        lap("geometry, content, scale, style")
        if name in runs:
            run_dataset = CTViewDataset(data, xray, runs[name].config)
            results[name]["drr_reconstruction"] = asdict(
                drr_reconstruction(runs[name], run_dataset, settings.batch_size)
            )
            lap("DRR reconstruction")
        bar.update()
    baselines = None
    if dataset.manifest["settings"].get("projections"):  # B at the dataset's own spectrum, whatever the model's
        spectrum = dataset.manifest["settings"]["spectrum"]
        projected = CTViewDataset(data, xray, configs[first].replace(projection_inputs=True, physics_spectrum=spectrum))
        baselines = {k: asdict(v) for k, v in projection_baselines(projected, settings.batch_size).items()}
        lap("DRR reconstruction")
    index = _write_images(outputs, methods, real)
    _write_figures(model, card, cts, methods[first], drrs, views[0], outputs, settings, references)
    lap("images and figures")
    bar.update()
    bar.close()
    names = [_volume_name(f.name) for f in files]
    summary = {
        "model_under_test": first,
        "models": {
            name: {
                "model": str(path),
                "steps": loaded[name][1].get("training", {}).get("steps"),
                "image_size": loaded[name][0].config.image_size,
            }
            for name, path in models.items()
        },
        "rows": results,
        "drr_reconstruction_baselines": baselines,
        "views": [{"label": v.label, "seen": v.seen} for v in views[0]],
        "scale_sweep": {"sid_mm": list(SCALE_SIDS_MM), "sdd_minus_sid_mm": SCALE_GAP_MM, "view": "AP", "style": 1},
        "grid": {
            "rows": evenly_spread(names, settings.grid_cts),
            "columns": [str(p.relative_to(xray)) for p in evenly_spread(references, settings.grid_styles)],
        },
        "data": {
            "folder": str(data),
            "volumes": [f.name for f in files],
            "stored_views_per_volume": dataset.view_counts,
            "samples": len(dataset),
        },
        "radiographs": {"folder": str(xray), "count": len(radiographs), "crop": settings.real_crop},
        "style_references": [str(p.relative_to(xray)) for p in references],
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
        "images": index,
        "feature_extractor": features.description,
        "lpips": lpips_note,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "seconds": round(time.time() - started, 1),
        "seconds_per_stage": timings,
    }
    with atomic_path(outputs.path("metrics.json")) as tmp:
        tmp.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    report = outputs.path("report.md")
    with atomic_path(report) as tmp:
        tmp.write_text(_markdown(summary), encoding="utf-8")
    return report


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "method"


def _write_png(path: Path, image: np.ndarray) -> None:
    """An image in [0, 1] as an 8-bit grey PNG on the fixed window [0, 1] (no metadata)."""
    pixels = (np.clip(np.nan_to_num(image), 0, 1) * 255 + 0.5).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


def _write_images(outputs: OutputFiles, methods: dict[str, MethodImages], real: torch.Tensor) -> dict:
    """Every evaluated image under ``OUT/images/<method>/`` and the index ``OUT/images/index.json``
    (method -> files, relative to the report folder ``OUT``); returns the index."""
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
        tmp.write_text(json.dumps({"format": "ct2x-evaluation-images", "methods": index}, indent=1), encoding="utf-8")
    return {name: len(names) for name, names in index.items()}


def _write_figures(
    model,  # noqa: ANN001 (CT2XGAN)
    card: dict,
    cts: list,
    images: MethodImages,
    drrs: MethodImages,
    views: list,
    outputs: OutputFiles,
    settings: EvaluationSettings,
    references: list[Path],
) -> None:
    """``strip.png``, ``style_grid.png`` and ``ct_a_vs_b.png`` of the model under test (module docstring)."""
    style = {} if model.style_encoder is None else {"style": references[0]}
    strip = synthesize(model, cts[0], model_views(model.config, card, cts[0], STRIP_ANGLES), **style)
    write_contact_sheet(outputs.path("strip.png"), [v.image for v in strip], [view_label(v.carm) for v in strip])
    ap = next(n for n, v in enumerate(views) if v.carm.primary == 0 and v.carm.secondary == 0)
    rows = evenly_spread(list(range(len(cts))), settings.grid_cts)
    columns = evenly_spread(list(range(images.images.shape[2])), settings.grid_styles)
    tiles = [images.images[c, ap, r] for c in rows for r in columns]
    labels = [f"CT {i}, style {j}" for i in range(1, len(rows) + 1) for j in range(1, len(columns) + 1)]
    write_contact_sheet(outputs.path("style_grid.png"), tiles, labels, columns=len(columns), window=(0.0, 1.0))
    pair = [images.images[0, ap, 0], drrs.images[0, ap, 0], images.images[1, ap, 0], drrs.images[1, ap, 0]]
    labels = ["CT A: model", "CT A: DRR", "CT B: model", "CT B: DRR"]
    write_contact_sheet(outputs.path("ct_a_vs_b.png"), pair, labels, columns=2, window=(0.0, 1.0))


def _volume_name(file_name: str) -> str:
    """A prepared file's CT name (``NAME-<hash>.safetensors`` -> ``NAME``)."""
    return file_name.rsplit("-", 1)[0]


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _realism_row(label: str, scores: dict) -> str:
    kid = f"{_fmt(scores['kid'])} ± {_fmt(scores['kid_std'])}"
    auc = f"{_fmt(scores['c2st_auc'], 3)} ± {_fmt(scores['c2st_auc_std'], 3)}"
    return f"| {label} | {_fmt(scores['fid'], 2)} | {kid} | {auc} | {_fmt(scores['lpips'])} | {scores['images']} |"


def _row_order(summary: dict) -> list[str]:
    """Baselines, the untrained control, the model under test, then its ablations."""
    first = summary["model_under_test"]
    ablations = [n for n in summary["models"] if n != first]
    return [DRR_ROW, STYLED_ROW, UNTRAINED_ROW, first, *ablations]


def _markdown(summary: dict) -> str:
    first = summary["model_under_test"]
    rows = summary["rows"]
    order = _row_order(summary)
    main = summary["models"][first]
    data = summary["data"]
    settings = summary["settings"]
    seen = [v["label"] for v in summary["views"] if v["seen"]]
    unseen = [v["label"] for v in summary["views"] if not v["seen"]]
    realism_head = ["| Method | FID ↓ | KID ↓ | C2ST AUC (0.5 best) | LPIPS ↓ | images |", "|---|---|---|---|---|---|"]
    lines = [
        "# CT2X evaluation report",
        "",
        f"- Model under test: `{main['model']}` ({main['steps']} training steps, {main['image_size']}² images)",
        f"- Held-out data: `{data['folder']}`: {len(data['volumes'])} CTs "
        f"({', '.join(_volume_name(v) for v in data['volumes'])})",
        f"- Views: {len(seen)} training poses ({', '.join(seen)}) and {len(unseen)} unseen ({', '.join(unseen)}); "
        f"physics DRRs from the stored CT grid, ray step {settings['drr_step']:g} voxel, no noise, min-max scaled",
        f"- Real radiographs: `{summary['radiographs']['folder']}` ({summary['radiographs']['count']} images), "
        f"for the realism measures each centre-cropped to {summary['radiographs']['crop']:g} of its shorter side "
        f"and read at {REAL_SIZE}²; style references: {len(summary['style_references'])} of them, evenly spread, "
        f"read whole by the models and cropped like the real set for the histogram matching "
        f"({', '.join(summary['style_references'])})",
        f"- FID / KID / C2ST features: {summary['feature_extractor']}; KID over 100 random subsets of "
        "min(50, images) images of each set; C2ST: logistic regression on the standardised features, "
        "5-fold stratified cross-validated ROC AUC (mean ± sd over folds)",
        f"- LPIPS (mean distance of each image to its style reference): {summary['lpips']}",
        f"- Untrained control: the model's configuration, random initialisation (seed {settings['seed']})",
        f"- Device: {summary['device']}; {summary['seconds']} s",
        "",
        "FID and KID from this few images are biased upward and noisy: compare only rows of the same report.",
        "",
        "## Table 1: realism against the real radiographs",
        "",
        *realism_head,
        *[_realism_row(name, rows[name]["realism"]) for name in order[:4]],
        "",
        "## Table 2: ablations",
        "",
    ]
    ablations = order[4:]
    if ablations:
        lines += realism_head
        lines += [_realism_row(name, rows[name]["realism"]) for name in ablations]
        lines += [_realism_row(f"Ours ({first})", rows[first]["realism"])]
    else:
        lines += ["No ablation models given (`--ablation NAME=MODEL`)."]
    lines += [
        "",
        "## Table 3: DRR style reconstruction (eq. 7)",
        "",
        "| Method | PSNR (dB) ↑ | SSIM ↑ | samples |",
        "|---|---|---|---|",
    ]
    baselines = summary["drr_reconstruction_baselines"]
    for name, r in (baselines or {}).items():
        lines.append(f"| {name} | {_fmt(r['psnr'], 2)} | {_fmt(r['ssim'])} | {r['samples']} |")
    for name in order[2:]:
        r = rows[name]["drr_reconstruction"]
        lines.append(f"| {name} | {_fmt(r['psnr'], 2)} | {_fmt(r['ssim'])} | {r['samples']} |")
    if baselines is None:
        lines += ["", "The line-integral and noise-free DRR rows need held-out data prepared with `--projections`."]
    lines += [
        "",
        "## Geometric fidelity (agreement with the physics DRR of the same CT and view)",
        "",
        "| Method | edge NCC, training poses ↑ | SSIM, training poses ↑ | edge NCC, unseen ↑ | SSIM, unseen ↑ |",
        "|---|---|---|---|---|",
    ]
    for name in order:
        g = rows[name]["geometry"]
        cells = [_fmt(g.get(group, {}).get(key), 3) for group in ("seen", "unseen") for key in ("edge_ncc", "ssim")]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines += [
        "",
        "## Content sensitivity (own CT's DRR against the other CTs' DRRs, same view)",
        "",
        "| Method | edge NCC, own DRR | edge NCC, other CTs' DRRs | sensitivity ↑ (± sd) |",
        "|---|---|---|---|",
    ]
    for name in order:
        c = rows[name]["content"]
        sensitivity = f"{_fmt(c['sensitivity'], 3)} ± {_fmt(c['sensitivity_std'], 3)}"
        lines.append(f"| {name} | {_fmt(c['own_ncc'], 3)} | {_fmt(c['other_ncc'], 3)} | {sensitivity} |")
    sids = summary["scale_sweep"]["sid_mm"]
    lines += [
        "",
        f"## Scale error (AP view, style 1, SID {sids[0]:g}-{sids[-1]:g} mm, SDD = SID + "
        f"{summary['scale_sweep']['sdd_minus_sid_mm']:g} mm; DRR ray step {settings['scale_step']:g} voxel)",
        "",
        "| Method | mean abs(s − 1) % ↓ | max abs(s − 1) % ↓ | " + " | ".join(f"s @ {d:g}" for d in sids) + " |",
        "|---|---|---|" + "---|" * len(sids),
    ]
    for name in order:
        sc = rows[name]["scale"]
        per = " | ".join(_fmt(sc["per_sid"][f"{d:g}"], 3) for d in sids)
        lines.append(f"| {name} | {_fmt(sc['mean_error_pct'], 2)} | {_fmt(sc['max_error_pct'], 2)} | {per} |")
    lines += [
        "",
        "## Style effect (AP view, between the style references)",
        "",
        "| Method | histogram TV between styles | edge NCC between styles |",
        "|---|---|---|",
    ]
    for name in order:
        st = rows[name]["style"]
        cells = (
            ["n/a (no style input)", "n/a"] if st is None else [_fmt(st["histogram_tv"], 3), _fmt(st["edge_ncc"], 3)]
        )
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines += [
        "",
        "## Multi-view synthesis (paper Fig. 8)",
        "",
        f"![strip](strip.png)\n\n*{_volume_name(data['volumes'][0])}, RAO 90 to LAO 90 every 30 degrees, "
        f"style {summary['style_references'][0]}.*",
        "",
        "## Style swap (paper Fig. 6)",
        "",
        "![style grid](style_grid.png)\n\n*AP view. Along a row one CT takes several styles; down a column several "
        "CTs take one style.*",
        "",
        *[f"- CT {n}: {name}" for n, name in enumerate(summary["grid"]["rows"], start=1)],
        *[f"- style {n}: {name}" for n, name in enumerate(summary["grid"]["columns"], start=1)],
        "",
        "## CT A vs CT B",
        "",
        f"![CT A vs CT B](ct_a_vs_b.png)\n\n*AP view, style {summary['style_references'][0]}: CT A = "
        f"{_volume_name(data['volumes'][0])}, CT B = {_volume_name(data['volumes'][1])}; each model image beside the "
        "physics DRR of its CT. A model that follows the CT draws two different images.*",
        "",
    ]
    return "\n".join(lines)

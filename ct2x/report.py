"""``ct2x evaluate``: score a model (and its ablations) on held-out data and write a report.

The report folder holds ``report.md`` (paper Tables 1-3 layout), ``metrics.json`` (every
number, with the sets they came from), ``strip.png`` (one held-out CT from -90 to 90 degrees
every 30, paper Fig. 8) and ``style_grid.png`` (paper Fig. 6: rows are held-out CTs, columns
style references, AP view). Numbers are defined in :mod:`ct2x.evaluate`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ct2x.atomic import atomic_path
from ct2x.checkpoint import load_model
from ct2x.data.dataset import CTViewDataset
from ct2x.data.radiographs import evenly_spread, find_radiographs, read_radiographs
from ct2x.errors import CT2XError
from ct2x.evaluate import (
    RealismMetrics,
    drr_reconstruction,
    prepared_volume,
    synthesized_xrays,
    true_drrs,
)
from ct2x.inception import InceptionFeatures
from ct2x.models import CT2XGAN
from ct2x.synthesize import model_views, synthesize
from ct2x.view_files import view_label, write_contact_sheet

STRIP_ANGLES = [-90.0, -60.0, -30.0, 0.0, 30.0, 60.0, 90.0]
#: Real radiographs are read at this size for the Inception features (which resize to 299).
REAL_SIZE = 256


@dataclass(frozen=True)
class EvaluationSettings:
    """``styles``: number of style references; ``lpips_weights``: torchvision AlexNet weights
    (``None``: the torch hub cache); ``grid_cts`` / ``grid_styles``: size of the style grid."""

    styles: int = 8
    lpips_weights: Path | None = None
    batch_size: int = 8
    grid_cts: int = 4
    grid_styles: int = 5
    seed: int = 0


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
) -> Path:
    """Evaluate ``models`` (``{name: model file}``; the first is the model under test, the rest its
    ablations) and write the report folder ``out``; returns ``out / 'report.md'``."""
    device = torch.device(device)
    started = time.time()
    loaded = {name: load_model(path, device) for name, path in models.items()}
    radiographs = find_radiographs(xray).paths
    references = evenly_spread(radiographs, settings.styles)
    real = read_radiographs(radiographs, REAL_SIZE)
    features = InceptionFeatures().to(device)
    lpips, lpips_note = _lpips(settings.lpips_weights, device)
    metrics = RealismMetrics(real.to(device), features, lpips, seed=settings.seed)
    results: dict[str, dict] = {}
    first = next(iter(models))
    model, card = loaded[first]
    dataset = CTViewDataset(data, xray, model.config)  # the model under test's view of the data
    drr_row = asdict(metrics.score(true_drrs(dataset).to(device)))
    samples, views, files = len(dataset), dataset.views, dataset.files
    for name, (model, card) in tqdm(loaded.items(), desc="evaluate", unit="model"):
        dataset = CTViewDataset(data, xray, model.config)
        refs = read_radiographs(references, model.config.image_size)
        images, pairs = synthesized_xrays(model, dataset, refs, settings.batch_size)
        realism = metrics.score(images.to(device), refs.to(device), pairs.to(device))
        reconstruction = drr_reconstruction(model, dataset, settings.batch_size)
        results[name] = {
            "model": str(models[name]),
            "steps": card.get("training", {}).get("steps"),
            "image_size": model.config.image_size,
            "realism": asdict(realism),
            "drr_reconstruction": asdict(reconstruction),
        }
    out.mkdir(parents=True, exist_ok=True)
    model, card = loaded[first]
    _write_figures(model, card, files, references, out, settings)
    summary = {
        "grid": {
            "rows": [_volume_name(p.name) for p in grid_volumes(files, settings)],
            "columns": [str(p.relative_to(xray)) for p in evenly_spread(references, settings.grid_styles)],
        },
        "models": results,
        "drr_physics": drr_row,
        "data": {
            "folder": str(data),
            "volumes": [f.name for f in files],
            "views_per_volume": views,
            "samples": samples,
        },
        "radiographs": {"folder": str(xray), "count": len(radiographs)},
        "style_references": [str(p.relative_to(xray)) for p in references],
        "feature_extractor": features.description,
        "lpips": lpips_note,
        "device": str(device),
        "seconds": round(time.time() - started, 1),
    }
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    report = out / "report.md"
    with atomic_path(report) as tmp:
        tmp.write_text(_markdown(summary, first), encoding="utf-8")
    return report


def _write_figures(
    model: CT2XGAN, card: dict, files: list[Path], references: list[Path], out: Path, settings: EvaluationSettings
) -> None:
    """``strip.png`` and ``style_grid.png`` of the model under test (see the module docstring)."""
    styles = evenly_spread(references, settings.grid_styles)
    style_args = [{} if model.style_encoder is None else {"style": path} for path in styles]
    ct = prepared_volume(files[0])
    strip = synthesize(
        model, ct, model_views(model.config, card, ct, STRIP_ANGLES), **style_args[0], batch_size=settings.batch_size
    )
    write_contact_sheet(out / "strip.png", [v.image for v in strip], [view_label(v.carm) for v in strip])
    images, labels = [], []
    for row, path in enumerate(grid_volumes(files, settings), start=1):
        ct = prepared_volume(path)
        ap = model_views(model.config, card, ct, [0.0])
        for column, kwargs in enumerate(style_args, start=1):
            images.append(synthesize(model, ct, ap, **kwargs)[0].image)
            labels.append(f"CT {row}, style {column}")
    write_contact_sheet(out / "style_grid.png", images, labels, columns=len(styles), window=(0.0, 1.0))


def grid_volumes(files: list[Path], settings: EvaluationSettings) -> list[Path]:
    """The held-out CTs in the rows of the style grid."""
    return evenly_spread(files, settings.grid_cts)


def _volume_name(file_name: str) -> str:
    """A prepared file's CT name (``NAME-<hash>.safetensors`` -> ``NAME``)."""
    return file_name.rsplit("-", 1)[0]


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _realism_row(label: str, scores: dict) -> str:
    kid = f"{_fmt(scores['kid'])} ± {_fmt(scores['kid_std'])}"
    return f"| {label} | {_fmt(scores['fid'], 2)} | {kid} | {_fmt(scores['lpips'])} | {scores['images']} |"


def _markdown(summary: dict, first: str) -> str:
    models = summary["models"]
    main = models[first]
    data = summary["data"]
    lines = [
        "# CT2X evaluation report",
        "",
        f"- Model under test: `{main['model']}` ({main['steps']} training steps, {main['image_size']}² images)",
        f"- Held-out data: `{data['folder']}`: {len(data['volumes'])} CT(s) x {data['views_per_volume']} poses "
        f"= {data['samples']} samples ({', '.join(_volume_name(v) for v in data['volumes'])})",
        f"- Real radiographs: `{summary['radiographs']['folder']}` ({summary['radiographs']['count']} images); "
        f"style references: {len(summary['style_references'])} of them, evenly spread "
        f"({', '.join(summary['style_references'])})",
        f"- FID / KID features: {summary['feature_extractor']}; KID over 100 random subsets of min(50, images) "
        "images of each set",
        f"- LPIPS (mean distance of each synthesized image to its style reference): {summary['lpips']}",
        f"- Device: {summary['device']}; {summary['seconds']} s",
        "",
        "FID and KID from this few images are biased upward and noisy: compare only rows of the same report.",
        "",
        "## Table 1: realism against the real radiographs",
        "",
        "| Method | FID ↓ | KID ↓ | LPIPS ↓ | images |",
        "|---|---|---|---|---|",
        _realism_row("DRR (DeepDRR physics, no learning)", summary["drr_physics"]),
        _realism_row(first, main["realism"]),
        "",
        "## Table 2: ablations",
        "",
    ]
    if len(models) > 1:
        lines += ["| Method | FID ↓ | KID ↓ | LPIPS ↓ | images |", "|---|---|---|---|---|"]
        lines += [_realism_row(name, m["realism"]) for name, m in models.items() if name != first]
        lines += [_realism_row(f"Ours ({first})", main["realism"])]
    else:
        lines += ["No ablation models given (`--ablation NAME=MODEL`)."]
    lines += [
        "",
        "## Table 3: DRR style reconstruction (eq. 7)",
        "",
        "| Method | PSNR (dB) ↑ | SSIM ↑ | samples |",
        "|---|---|---|---|",
    ]
    for name, m in models.items():
        r = m["drr_reconstruction"]
        lines.append(f"| {name} | {_fmt(r['psnr'], 2)} | {_fmt(r['ssim'])} | {r['samples']} |")
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
    ]
    return "\n".join(lines)

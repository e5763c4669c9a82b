"""``ct2x evaluate``: score a model, its ablations and the baselines on held-out data; write a report.

Rows of every table (see :mod:`ct2x.evaluation.methods` for the measures): the physics DRR, the DRR
histogram-matched to the style reference ("styled DRR"), an untrained model of the model's
configuration (random initialisation, seed 0: the control), the imaging chain of a mobile C-arm with its
look fitted to each style reference (no learning), the model, its ablations. Rows of real films
place the floor of the realism measures: films of other patients of the real set's collection
(``--floor``) and of another collection (``--other-collection``), read and scored like the real set;
the other measures do not apply to them (``null`` in ``metrics.json``).

A run reads and checks its inputs (model cards, real radiographs, held-out CTs) before it builds any
network, loads the networks, makes every method's images, scores them, and writes the report folder
(``report.md``, ``metrics.json``, the figures and ``images/``: :mod:`ct2x.evaluation.report`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ct2x.checkpoint import load_card, load_model
from ct2x.config import CT2XConfig
from ct2x.data.dataset import CTViewDataset
from ct2x.data.prepare import content_hash
from ct2x.data.radiographs import evenly_spread, find_radiographs, read_radiographs
from ct2x.device import torch_device
from ct2x.errors import CT2XError
from ct2x.evaluation.inception import InceptionFeatures
from ct2x.evaluation.methods import (
    CHAIN_PRESET,
    CHAIN_ROW,
    DRR_ROW,
    FLOOR_ROW,
    OTHER_COLLECTION_ROW,
    REAL_SIZE,
    SCALE_GAP_MM,
    SCALE_SIDS_MM,
    STYLED_ROW,
    UNTRAINED_ROW,
    EvaluationView,
    MethodImages,
    RealismMetrics,
    chain_ct_images,
    crop_to_aspect,
    drr_images,
    drr_reconstruction,
    evaluation_views,
    inception_features,
    marched,
    prepared_source,
    prepared_volume,
    projection_baselines,
    scale_views,
    scored_region,
    shares_march,
    styled_drr_images,
    synthesized_images,
    untrained_model,
    view_measures,
)
from ct2x.evaluation.report import volume_name, write_figures, write_images, write_report
from ct2x.folder_lock import OutputFiles, output_run
from ct2x.geometry import CArm
from ct2x.models import CT2XGAN
from ct2x.options import EvaluationSettings  # the options of ct2x evaluate, torch-free
from ct2x.volume import CTVolume, read_ct


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
    settings: EvaluationSettings = EvaluationSettings(),  # noqa: B008 (frozen: never changed)
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


@dataclass(frozen=True)
class _Inputs:
    """What a run reads before building any network, every part checked (:func:`_read_inputs`)."""

    data: Path  # the held-out data folder
    xray: Path  # the real radiographs' folder
    configs: dict[str, CT2XConfig]  # each model's configuration, the model under test first
    radiographs: list[Path]  # the readable real radiographs
    references: list[Path]  # the style references, evenly spread among them
    dataset: CTViewDataset  # the held-out data at the model under test's configuration
    cts: list[CTVolume]  # the held-out CTs: each as read from its source file, or its stored grid (``ct_sources``)
    ct_sources: list[str]  # what each CT is: CT_FROM_FILE or CT_FROM_GRID
    floors: dict[str, tuple[Path, list[Path]]]  # film row -> (its folder, its readable films), none in the real set

    @property
    def first(self) -> str:
        """The model under test's name."""
        return next(iter(self.configs))

    @property
    def size(self) -> int:
        """The side of every model's images, pixels."""
        return self.configs[self.first].image_size


@dataclass(frozen=True)
class _Networks:
    """The networks of a run and the views they are evaluated at (:func:`_load_networks`)."""

    loaded: dict[str, tuple[CT2XGAN, dict]]  # name -> (model, card) of every model file
    runs: dict[str, CT2XGAN]  # the untrained control, then the models: each a row that synthesizes
    views: list[list[EvaluationView]]  # the evaluation views of each CT
    scale: list[list[CArm]]  # the C-arms of each CT's scale-error sweep


@dataclass(frozen=True)
class _Scores:
    """Every method's scores (:func:`_score_methods`) and what they were computed with."""

    rows: dict[str, dict]  # method -> measures, as in ``metrics.json``
    real: torch.Tensor  # the real radiographs as read: (n, 1, REAL_SIZE, REAL_SIZE) in [0, 1], before the region's crop
    feature_extractor: str  # the realism features' description
    lpips: str  # the LPIPS network's description, or why it was not computed
    floor: dict[str, dict]  # film row -> its folder, films and the films scored (``metrics.json``'s ``floor``)
    region: dict  # the part of the field the realism measures see (``metrics.json``'s ``scored_region``)


class _Stages:
    """A run's progress bar and the seconds spent in each stage (``metrics.json``'s ``seconds_per_stage``)."""

    def __init__(self, steps: int, started: float) -> None:
        self.bar = tqdm(total=steps, desc="evaluate", unit="step")
        self.seconds: dict[str, float] = {}
        self.started = started
        self._clock = started

    def lap(self, stage: str) -> None:
        """Add the seconds since the previous lap (or the start of the run) to ``stage``."""
        now = time.time()
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + now - self._clock, 1)
        self._clock = now


def _evaluate_models(
    models: dict[str, Path],
    data: Path,
    xray: Path,
    outputs: OutputFiles,
    settings: EvaluationSettings,
    device: str | torch.device,
) -> Path:
    """:func:`evaluate_models`, with its report folder held as ``outputs``: read and check the inputs,
    load the networks, make every method's images, score them, write the report."""
    device = torch_device(device)
    started = time.time()
    inputs = _read_inputs(models, data, xray, settings)  # every input is checked before any network is built
    networks = _load_networks(models, inputs, settings.seed, device)
    cts, runs = len(inputs.cts), len(networks.runs)
    # DRRs and the imaging chain of each CT, synthesis of each CT by each run, the film rows, the measures of
    # each method, the images and figures
    stages = _Stages(steps=2 * cts + cts * runs + len(inputs.floors) + (3 + runs) + 1, started=started)
    stages.lap("load models and data")
    methods = _method_images(inputs, networks, settings, device, stages)
    scores = _score_methods(methods, inputs, networks, settings, device, stages)
    baselines = _projection_baselines(inputs, settings.batch_size)
    if baselines is not None:
        stages.lap("DRR reconstruction")
    index = write_images(outputs, methods, scores.real)
    model, card = networks.loaded[inputs.first]
    write_figures(
        model,
        card,
        inputs.cts,
        methods[inputs.first],
        methods[DRR_ROW],
        networks.views[0],
        outputs,
        settings.grid_cts,
        settings.grid_styles,
        inputs.references,
    )
    stages.lap("images and figures")
    stages.bar.update()
    stages.bar.close()
    summary = _summary(models, inputs, networks, scores, baselines, index, settings, device, stages)
    return write_report(outputs, summary)


def _read_inputs(models: dict[str, Path], data: Path, xray: Path, settings: EvaluationSettings) -> _Inputs:
    """The model cards, real radiographs, style references and held-out CTs of a run, refused with a CT2XError
    (models of different image sizes, fewer than 2 radiographs or 2 CTs) before any network is built; warns
    when ``--styles`` asks for more references than there are radiographs."""
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
            stacklevel=4,  # evaluate_models' caller
        )
    references = evenly_spread(radiographs, settings.styles)
    floors = _film_rows(radiographs, settings)
    dataset = CTViewDataset(data, xray, configs[first])
    if len(dataset.files) < 2:
        raise CT2XError(
            f"{data} holds {len(dataset.files)} prepared CT: content sensitivity compares CTs, "
            "prepare at least 2 held-out CTs"
        )
    cts, sources = _held_out_cts(dataset.files)
    return _Inputs(data, xray, configs, radiographs, references, dataset, cts, sources, floors)


CT_FROM_FILE = "file"  # a CT rendered as read from the source file it was prepared from
CT_FROM_GRID = "stored grid"  # a CT rendered from the resampled grid its prepared volume file stores


def _held_out_cts(files: list[Path]) -> tuple[list[CTVolume], list[str]]:
    """Each prepared volume's CT as ``ct2x synthesize`` would read it: its metadata's ``source`` file, read
    (``read_ct``) when it is there with the content prepare hashed (``sha256``); its stored grid otherwise, all
    such volumes named with the reason in one warning. Returns the CTs and what each is
    (:data:`CT_FROM_FILE` or :data:`CT_FROM_GRID`)."""
    cts, sources, reasons = [], [], []
    for path in files:
        source, digest = prepared_source(path)
        if source is None or not source.exists():
            reasons.append(f"{path.name}: its source {source or '(not recorded)'} is missing")
        else:
            try:
                same = digest is not None and content_hash(source) == digest
            except CT2XError as error:  # unreadable: as good as missing
                reasons.append(f"{path.name}: {error}")
            else:
                if same:
                    cts.append(read_ct(source))
                    sources.append(CT_FROM_FILE)
                    continue
                reasons.append(f"{path.name}: its source {source} changed since prepare (another SHA-256)")
        cts.append(prepared_volume(path))
        sources.append(CT_FROM_GRID)
    if reasons:
        warnings.warn(
            f"{len(reasons)} of {len(files)} held-out CTs are rendered from their stored grids (coarser than the CT "
            f"as read, not what ct2x synthesize renders): {'; '.join(reasons)}",
            stacklevel=5,  # evaluate_models' caller
        )
    return cts, sources


def _film_rows(radiographs: list[Path], settings: EvaluationSettings) -> dict[str, tuple[Path, list[Path]]]:
    """The rows of real films (``--floor``, ``--other-collection``): row -> (folder, readable films), each
    refused with a CT2XError when it holds fewer than 2 films or a film of the real set ``radiographs``."""
    floors = {}
    for row, folder, flag in (
        (FLOOR_ROW, settings.floor, "--floor"),
        (OTHER_COLLECTION_ROW, settings.other_collection, "--other-collection"),
    ):
        if folder is None:
            continue
        folder = Path(folder)
        if not folder.is_dir():
            raise CT2XError(f"{flag} {folder} does not exist or is not a folder")
        try:
            films = find_radiographs(folder, warn_single=False).paths
        except CT2XError:  # none readable: counted as 0 below
            films = []
        if len(films) < 2:
            raise CT2XError(
                f"{flag} {folder} holds {len(films)} readable radiograph: the realism measures compare two sets, "
                "give a folder of at least 2 real radiographs (as many as the synthetic rows' images for "
                "comparable numbers)"
            )
        shared = _shared_film(films, radiographs)
        if shared is not None:
            film, real = shared
            raise CT2XError(
                f"{flag} {folder} holds {film.name}, the same film as {real} of --xray (same file or same content): "
                "a film scored against itself is no floor; give films of other patients (split --xray by patient)"
            )
        floors[row] = (folder, films)
    return floors


def _shared_film(films: list[Path], radiographs: list[Path]) -> tuple[Path, Path] | None:
    """The first of ``films`` that is also one of ``radiographs`` (same resolved path or same bytes), with it;
    ``None`` if none is. Only files of equal size are hashed."""
    resolved = {p.resolve(): p for p in radiographs}
    for film in films:
        if film.resolve() in resolved:
            return film, resolved[film.resolve()]
    sizes: dict[int, list[Path]] = {}
    for p in radiographs:
        sizes.setdefault(p.stat().st_size, []).append(p)
    hashed: dict[int, dict[str, Path]] = {}  # size -> digest -> radiograph, hashed when a film of that size comes
    for film in films:
        size = film.stat().st_size
        if size not in sizes:
            continue
        if size not in hashed:
            hashed[size] = {}
            for p in sizes[size]:
                hashed[size].setdefault(content_hash(p), p)
        same = hashed[size].get(content_hash(film))
        if same is not None:
            return film, same
    return None


def _load_networks(models: dict[str, Path], inputs: _Inputs, seed: int, device: torch.device) -> _Networks:
    """Every model file on ``device``, the untrained control (random initialisation, ``seed``), and the
    evaluation and scale-sweep views of each CT at the model under test's poses."""
    loaded = {name: load_model(path, device) for name, path in models.items()}
    model, card = loaded[inputs.first]
    views = [evaluation_views(model.config, card, ct) for ct in inputs.cts]
    scale = [scale_views(model.config, card, ct) for ct in inputs.cts]
    runs = {UNTRAINED_ROW: untrained_model(model.config, seed).to(device)}
    runs.update({name: m for name, (m, _) in loaded.items()})
    return _Networks(loaded, runs, views, scale)


def _method_images(
    inputs: _Inputs, networks: _Networks, settings: EvaluationSettings, device: torch.device, stages: _Stages
) -> dict[str, MethodImages]:
    """Every method's images of the held-out CTs at the evaluation views and the scale sweep: the physics DRR,
    the styled DRR, the imaging chain with its look fitted to each style reference, then each run (the
    untrained control, the model under test, its ablations)."""
    # the styled DRR takes the histogram of the reference at the detector's field of view (the crop of
    # the real set): a whole chest film's darkest pixels are the air around the patient, not the lungs; the
    # imaging chain fits its look to the film the way users' commands do (ct2x.synthesize.fitted_look)
    cropped_references = read_radiographs(inputs.references, inputs.size, crop=settings.real_crop)[:, 0].numpy()
    stages.lap("styled DRRs")
    share = shares_march(device)  # the DRR is drawn from the area densities the chain needs: march once
    carms = [[v.carm for v in views] for views in networks.views]
    drr_views, drr_scale, chain_views, chain_scale = [], [], [], []
    for ct, views, scale in zip(inputs.cts, carms, networks.scale, strict=True):
        area = marched(ct, views, settings.drr_step, device) if share else None
        sweep = marched(ct, scale, settings.scale_step, device) if share else None
        drr_views.append(drr_images(ct, views, settings.drr_step, device, area)[:, None])
        drr_scale.append(drr_images(ct, scale, settings.scale_step, device, sweep))
        stages.lap("physics DRRs")
        stages.bar.update()
        stages.bar.set_postfix_str(CHAIN_ROW)
        if not share:
            area, sweep = marched(ct, views, settings.drr_step, device), marched(ct, scale, settings.scale_step, device)
        images, scaled = chain_ct_images(ct, area, sweep, views, scale, inputs.references, settings.seed)
        chain_views.append(images)
        chain_scale.append(scaled)
        stages.lap("imaging chain (fitted style)")
        stages.bar.update()
    drrs = MethodImages(np.stack(drr_views), np.stack(drr_scale))
    methods = {DRR_ROW: drrs, STYLED_ROW: styled_drr_images(drrs, cropped_references)}
    stages.lap("styled DRRs")
    methods[CHAIN_ROW] = MethodImages(np.stack(chain_views), np.stack(chain_scale))
    for name, run in networks.runs.items():
        stages.bar.set_postfix_str(name)
        methods[name] = synthesized_images(
            run, inputs.cts, carms, networks.scale, inputs.references, settings.batch_size, stages.bar.update
        )
        stages.lap("synthesis")
    return methods


def _score_methods(
    methods: dict[str, MethodImages],
    inputs: _Inputs,
    networks: _Networks,
    settings: EvaluationSettings,
    device: torch.device,
    stages: _Stages,
) -> _Scores:
    """Every method's realism against the real radiographs, its geometry, content, scale and style measures
    against the physics DRRs and, for the networks, its reconstruction of the stored DRRs.

    FID, KID and C2ST see the region of the field the CTs cover (:func:`scored_region`): every synthetic image
    cropped to it, every film (real set, film rows) centre-cropped to its aspect ratio; LPIPS compares each
    whole image with its whole style reference."""
    region = scored_region(inputs.cts, networks.views, inputs.size, [s == CT_FROM_GRID for s in inputs.ct_sources])
    real = read_radiographs(inputs.radiographs, REAL_SIZE, crop=settings.real_crop)
    features = InceptionFeatures().to(device)
    lpips, lpips_note = _lpips(settings.lpips_weights, device)
    metrics = RealismMetrics(inception_features(features, crop_to_aspect(real, region)), lpips, seed=settings.seed)
    stages.lap("real radiographs (read, Inception)")
    references = read_radiographs(inputs.references, inputs.size).to(device)  # LPIPS: as the models read them
    rows: dict[str, dict] = {}
    floor: dict[str, dict] = {}
    # the film rows: as many films as the synthetic rows' images where there are, all of them otherwise
    target = max(int(np.prod(m.images.shape[:3])) for m in methods.values())
    for name, (folder, films) in inputs.floors.items():
        stages.bar.set_postfix_str(f"measures of {name}")
        used = evenly_spread(films, target)
        images = read_radiographs(used, REAL_SIZE, crop=settings.real_crop)  # read like the real set
        scored = crop_to_aspect(images, region)
        realism = metrics.score(inception_features(features, scored))  # no style reference: no LPIPS
        rows[name] = {"realism": asdict(realism), "geometry": None, "content": None, "scale": None, "style": None}
        floor[name] = {
            "folder": str(folder),
            "films": len(films),
            "scored": len(used),
            "selection": "all films" if len(used) == len(films) else "evenly spread, as many as the synthetic images",
            "synthetic_images": target,
        }
        stages.lap("film rows (read, Inception, FID, KID, C2ST)")
        stages.bar.update()
    for name, images in methods.items():
        stages.bar.set_postfix_str(f"measures of {name}")
        flat = torch.from_numpy(images.images.reshape(-1, 1, inputs.size, inputs.size))
        styles = images.images.shape[2]
        pairs = torch.arange(styles).repeat(len(flat) // styles).to(device) if styles == len(references) else None
        scored = region.crop(flat)  # the part of the field the CTs cover
        realism = metrics.score(inception_features(features, scored), flat.to(device), references, pairs)
        stages.lap("realism (Inception, FID, KID, C2ST)")
        rows[name] = {"realism": asdict(realism), **view_measures(images, methods[DRR_ROW], networks.views[0])}
        stages.lap("geometry, content, scale, style")
        if name in networks.runs:
            run = networks.runs[name]
            run_dataset = CTViewDataset(inputs.data, inputs.xray, run.config)
            rows[name]["drr_reconstruction"] = asdict(drr_reconstruction(run, run_dataset, settings.batch_size))
            stages.lap("DRR reconstruction")
        stages.bar.update()
    return _Scores(rows, real, features.description, lpips_note, floor, region.summary(REAL_SIZE))


def _projection_baselines(inputs: _Inputs, batch_size: int) -> dict[str, dict] | None:
    """Table 3's rows without learning (:func:`ct2x.evaluation.methods.projection_baselines`), or ``None`` when
    the held-out data holds no projections (prepared without ``--projections``)."""
    prepared = inputs.dataset.manifest["settings"]
    if not prepared.get("projections"):
        return None
    # B at the dataset's own spectrum, whatever the model's
    config = inputs.configs[inputs.first].replace(projection_inputs=True, physics_spectrum=prepared["spectrum"])
    projected = CTViewDataset(inputs.data, inputs.xray, config)
    return {name: asdict(scores) for name, scores in projection_baselines(projected, batch_size).items()}


def _summary(
    models: dict[str, Path],
    inputs: _Inputs,
    networks: _Networks,
    scores: _Scores,
    baselines: dict[str, dict] | None,
    index: dict[str, int],
    settings: EvaluationSettings,
    device: torch.device,
    stages: _Stages,
) -> dict:
    """``metrics.json``: every number of the run, the sets and settings it came from, the seconds it took."""
    files = inputs.dataset.files
    names = [volume_name(f.name) for f in files]
    columns = evenly_spread(inputs.references, settings.grid_styles)
    return {
        "model_under_test": inputs.first,
        "models": {
            name: {
                "model": str(path),
                "steps": networks.loaded[name][1].get("training", {}).get("steps"),
                "image_size": networks.loaded[name][0].config.image_size,
            }
            for name, path in models.items()
        },
        "rows": scores.rows,
        "drr_reconstruction_baselines": baselines,
        "views": [{"label": v.label, "seen": v.seen} for v in networks.views[0]],
        "scale_sweep": {"sid_mm": list(SCALE_SIDS_MM), "sdd_minus_sid_mm": SCALE_GAP_MM, "view": "AP", "style": 1},
        "grid": {
            "rows": evenly_spread(names, settings.grid_cts),
            "columns": [str(p.relative_to(inputs.xray)) for p in columns],
        },
        "data": {
            "folder": str(inputs.data),
            "volumes": [f.name for f in files],
            "cts": [
                {"volume": f.name, "source": str(source) if source else None, "ct_source": used}
                for f, used, source in zip(
                    files, inputs.ct_sources, (prepared_source(f)[0] for f in files), strict=True
                )
            ],
            "stored_views_per_volume": inputs.dataset.view_counts,
            "samples": len(inputs.dataset),
        },
        "radiographs": {"folder": str(inputs.xray), "count": len(inputs.radiographs), "crop": settings.real_crop},
        "floor": scores.floor,
        "scored_region": scores.region,
        "imaging_chain": {
            "preset": CHAIN_PRESET,
            "fitted": ["tone_points", "band_gains", "mas", "mtf_nyquist", "structure_noise"],
            "fit": (
                "per CT and style reference by ct2x.synthesize.fitted_look: pooled over AP, LAO/RAO 45 and 90 of the "
                "views' geometry, where the CT covers the field; the scale sweep with the first style's"
            ),
        },
        "style_references": [str(p.relative_to(inputs.xray)) for p in inputs.references],
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
        "images": index,
        "feature_extractor": scores.feature_extractor,
        "lpips": scores.lpips,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "seconds": round(time.time() - stages.started, 1),
        "seconds_per_stage": stages.seconds,
    }

"""``ct2x train``: the CT2X-GAN training loop of paper eq. 16-19 (sect. 3.6, 4.1).

Each step takes a batch of (CT, pose, MIP, DRR) samples and unpaired radiographs
(:class:`ct2x.data.dataset.CTViewDataset`), then

1. **D step** (eq. 17, 19): D learns real DRRs vs. the synthesized X-rays at the same poses;
   with ``use_xray_discriminator`` D_X learns real radiographs (cropped to the view's field)
   vs. the synthesized X-rays. The R1 penalty on the reals is applied lazily, every
   ``r1_interval`` steps with its weight multiplied by the interval, and the discriminators'
   Adam runs at ``lr * k / (k + 1)`` with betas raised to ``k / (k + 1)`` (k = the interval:
   StyleGAN2's lazy regularisation with its minibatch-ratio correction);
2. **G step** (eq. 18): E_CT, the PAM, E_sty, the projection path and G learn ``lambda_adv L_adv
   + L_rec + L_consis + lambda_0 L_0`` (+ ``lambda_xray_adv L_adv^X``) with the discriminators frozen;
3. the EMA copy of everything but D is updated with decay ``min(ema_beta, (1 + t) / (10 + t))``
   at step ``t`` (TensorFlow's ExponentialMovingAverage warm-up), so a short run's EMA is not
   dominated by the initial weights.

Adam with the config's ``lr`` and ``adam_betas`` for both players. On a CUDA device the
forward passes run under bfloat16 autocast. Under ``torchrun`` (``WORLD_SIZE > 1``) the
generator side and D are each wrapped in DistributedDataParallel, every rank takes its share
of each global batch (:class:`ct2x.data.dataset.StepSampler`), and rank 0 alone logs and
writes checkpoints. Checkpoints (``ct2x.checkpoint``) hold the step, the optimisers, the EMA
copy, the RNG state, the config and the dataset's hash, so ``--resume`` continues exactly.
SIGINT, SIGTERM and (Windows) SIGBREAK - Stop in Slicer - go to one handler
(:func:`stop_signals`): the step in progress ends, then a checkpoint and the model of the step
reached are written, and the run exits cleanly. ``init`` starts a new run from a trained model
(:func:`warm_start`), e.g. a 256^2 model from a 128^2 one: the layers both share start trained, the new ones fresh.

Progress for programs (the CT2XTraining module) is printed on stdout as
``CT2X-PROGRESS step=N total=T loss_g=.. loss_d=.. step_s=..`` (``step_s``: seconds per step, also
after the first step, so that the module's Stop knows how long a step may take) and
``CT2X-CHECKPOINT step=N path=..``, written by :mod:`ct2x.progress_line` (which the module reads them with).
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from ct2x import __version__
from ct2x.atomic import WriteError
from ct2x.checkpoint import (
    STYLE_CODE_PREFIX,
    latest_step,
    load_latest,
    optimizer_from_files,
    optimizer_to_files,
    remove_stale_temporaries,
    run_contents,
    save_checkpoint,
    save_model,
)
from ct2x.config import CT2XConfig
from ct2x.data.dataset import CTViewDataset, StepSampler
from ct2x.data.radiographs import evenly_spread, read_radiographs
from ct2x.device import torch_device
from ct2x.errors import CT2XError
from ct2x.folder_lock import folder_lock
from ct2x.losses import CT2XLoss
from ct2x.models import CT2XGAN, is_discriminator_key
from ct2x.models.ct2xgan import DISCRIMINATORS
from ct2x.models.inputs import output_image, xray_input
from ct2x.progress_line import format_checkpoint, format_progress


@dataclass(frozen=True)
class TrainOptions:
    """How to run training (the model and loss settings are in :class:`CT2XConfig`).

    ``steps`` = total optimisation steps (``None``: the config's epochs over the dataset);
    intervals are in steps; ``workers`` = data-loading processes per training process.
    """

    data: Path
    xray: Path
    out: Path
    steps: int | None = None
    resume: bool = False
    device: str | None = None
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    image_every: int = 100
    workers: int = 2
    progress: bool = True
    init: Path | None = None


class GeneratorSide(nn.Module):
    """Everything of CT2X-GAN but the discriminators, as one module (so they can be wrapped separately).

    Its forward is :meth:`CT2XGAN.forward`; its parameters are exactly those of eq. 18.
    """

    def __init__(self, model: CT2XGAN):
        super().__init__()
        object.__setattr__(self, "model", model)  # not registered: the discriminators stay outside
        for name, child in model.named_children():
            if name not in DISCRIMINATORS:
                self.add_module(name, child)
        if model.constant_style is not None:
            self.constant_style = model.constant_style

    def forward(self, *args: torch.Tensor) -> Any:
        return self.model(*args)


def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def _distributed() -> tuple[int, int, int]:
    """(rank, local rank, world size) from torchrun's environment; (0, 0, 1) when not distributed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def _device(requested: str | None, local_rank: int, world: int) -> torch.device:
    device = torch_device(requested)
    if device.type == "cuda":
        if world > 1:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def _config_differences(saved: dict[str, Any], config: CT2XConfig) -> list[str]:
    current = json.loads(json.dumps(config.to_dict()))
    keys = sorted(set(saved) | set(current))
    return [
        f"{k} (checkpoint {saved.get(k)!r}, now {current.get(k)!r})" for k in keys if saved.get(k) != current.get(k)
    ]


def stop_signals() -> tuple[int, ...]:
    """The signals that ask a run to stop with a checkpoint, those this platform has: SIGINT
    (Ctrl-C; Stop in CT2XTraining on Linux and macOS), SIGTERM (``kill``, schedulers; the
    module's terminate on POSIX) and SIGBREAK (Ctrl-Break; Stop in CT2XTraining on Windows,
    which sends CTRL_BREAK_EVENT to the job's process group)."""
    return tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, name))


class _StopRequest:
    """One handler for every :func:`stop_signals` signal: it sets a flag that the loop checks
    after each step, so the step in progress ends, then the checkpoint and the model are written.

    Handlers can only be installed from the main thread; elsewhere (e.g. ``train`` called from a
    worker thread) the signals keep their handlers and the run is not stoppable this way.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in stop_signals():
                self._previous[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum: int, frame: object) -> None:
        if not self.requested:
            name = signal.Signals(signum).name if signum in signal.valid_signals() else str(signum)
            print(f"ct2x: {name} received: finishing this step, then writing a checkpoint", file=sys.stderr, flush=True)
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers ignore the stop signals: Ctrl-C in a terminal and CTRL_BREAK on Windows
    reach the whole process group, and the main process must be the one that answers."""
    for sig in stop_signals():
        signal.signal(sig, signal.SIG_IGN)


def _image_grid(model: nn.Module, preview: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rows: true DRR, reconstructed DRR, synthesized X-ray; one column per pose. ``(1, 3H, VW)`` in [0, 1]."""
    with torch.no_grad():
        out = model(preview["volume"], preview["pose"], preview["mip"], preview["drr"], preview["xray"],
                    preview.get("projections"))  # fmt: skip
    rows = [preview["drr"], out.drr_hat, out.xray_hat if out.xray_hat is not None else out.drr_hat]
    grid = torch.cat([torch.cat(list(r[:, 0].float().cpu()), dim=1) for r in rows], dim=0)
    return output_image(grid)[None]


def train(config: CT2XConfig, options: TrainOptions) -> Path:
    """Train (or resume) a run; returns the path of the trained model's ``.safetensors``.

    The run folder is locked for the run (another training process on it is refused), the
    temporary files a killed run left in it are removed, and a folder that holds a run (a
    checkpoint, ``latest.json`` or a model) is only continued with ``resume``, never overwritten."""
    if _distributed()[0] != 0:  # under torchrun, rank 0 owns the run folder
        return _train(config, options)
    with folder_lock(options.out, "ct2x train", wait=False, create=True):  # a refused run leaves no folder
        remove_stale_temporaries(options.out)
        found = run_contents(options.out)
        if found and not options.resume:
            raise CT2XError(
                f"{options.out} already holds a training run ({', '.join(found)}): add --resume to continue it, "
                "or choose another --out"
            )
        return _train(config, options)


def _train(config: CT2XConfig, options: TrainOptions) -> Path:
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    rank, local_rank, world = _distributed()
    device = _device(options.device, local_rank, world)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    main_process = rank == 0
    run = options.out
    dataset = CTViewDataset(options.data, options.xray, config, seed=options.seed)
    steps_per_epoch = math.ceil(len(dataset) / config.batch_size)
    total = options.steps if options.steps is not None else config.epochs * steps_per_epoch
    if total < 1:
        raise CT2XError(f"--steps must be at least 1, got {total}")

    saved: tuple[dict[str, Any], dict[str, torch.Tensor]] | None = None
    if options.resume:
        saved = load_latest(run)
        differences = _config_differences(saved[0]["config"], config)
        if differences:
            raise CT2XError(
                f"cannot resume {run} with another config: {'; '.join(differences)}; "
                "use the run's config or choose another --out"
            )
        if saved[0]["manifest_hash"] != dataset.manifest_hash:
            raise CT2XError(f"cannot resume {run}: it was trained on another dataset than {options.data}")
        if int(saved[0]["step"]) >= total:
            raise CT2XError(f"{run} already trained {saved[0]['step']} steps (>= --steps {total}): raise --steps")
    if options.init is not None and options.resume:
        raise CT2XError("--init starts a new run from a model; --resume continues a run: give one of them")

    torch.manual_seed(options.seed)
    model = CT2XGAN(config).to(device)
    initialized = warm_start(model, options.init) if options.init is not None else None
    ema_model = copy.deepcopy(model)
    for name in DISCRIMINATORS:  # the EMA copy is of the generator side only
        setattr(ema_model, name, None)
    ema = GeneratorSide(ema_model).eval()
    _set_requires_grad(ema, False)
    loss_fn = CT2XLoss(config).to(device)
    g_side = GeneratorSide(model)
    opt_g = torch.optim.Adam(g_side.parameters(), lr=config.lr, betas=tuple(config.adam_betas))
    r1_interval = max(1, config.r1_interval)
    ratio = r1_interval / (r1_interval + 1)  # StyleGAN2's mb_ratio for lazily regularised players
    d_betas = tuple(b**ratio for b in config.adam_betas)
    opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=config.lr * ratio, betas=d_betas)
    x_disc = model.xray_discriminator
    opt_x = torch.optim.Adam(x_disc.parameters(), lr=config.lr * ratio, betas=d_betas) if x_disc else None

    step = 0
    if saved is not None:
        info, tensors = saved
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        optimizer_from_files("opt_g", opt_g, tensors, info["optimizers"]["g"])
        optimizer_from_files("opt_d", opt_d, tensors, info["optimizers"]["d"])
        if opt_x is not None:
            optimizer_from_files("opt_x", opt_x, tensors, info["optimizers"]["x"])
        torch.set_rng_state(tensors["rng.torch"])
        step = int(info["step"])

    g_train: nn.Module = g_side
    d_train: nn.Module = model.discriminator
    x_train: nn.Module | None = x_disc
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        # Without L_consis the content branch of E_sty takes no part in the loss.
        unused = config.use_style_encoder and not config.consistency_enabled
        g_train = nn.parallel.DistributedDataParallel(g_side, device_ids=ids, find_unused_parameters=unused)
        d_train = nn.parallel.DistributedDataParallel(model.discriminator, device_ids=ids)
        if x_disc is not None:
            x_train = nn.parallel.DistributedDataParallel(x_disc, device_ids=ids)

    sampler = StepSampler(len(dataset), config.batch_size, options.seed, step, rank, world)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=options.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=options.workers > 0,
        worker_init_fn=_ignore_stop_signals,
    )
    preview = {k: v.to(device) for k, v in _preview_batch(dataset).items()}
    writer = SummaryWriter(str(run / "tensorboard")) if main_process else None
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not (options.progress and main_process))
    metrics_file = run / "metrics.jsonl"
    losses: dict[str, float] = {}
    data_wait, tick, logged_step, first_step = 0.0, time.perf_counter(), step, step

    def checkpoint() -> Path:
        optimizers = {"g": opt_g, "d": opt_d, **({"x": opt_x} if opt_x is not None else {})}
        info, tensors = _checkpoint_payload(config, dataset.manifest_hash, model, ema, optimizers, step, losses)
        try:
            path = save_checkpoint(run, step, tensors, info)
        except WriteError as error:
            last = latest_step(run)
            kept = f"the last good checkpoint, step {last}, is kept" if last else "no checkpoint was written before"
            bar.close()  # the error goes on a line of its own
            raise CT2XError(f"{error}; {kept}: free space, then continue with --resume") from None
        print(format_checkpoint(step, path), flush=True)
        return path

    with _StopRequest() as stop:
        batches = iter(loader)
        while step < total and not stop.requested:
            waited = time.perf_counter()
            batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
            data_wait += time.perf_counter() - waited
            inputs = (batch["volume"], batch["pose"], batch["mip"], batch["drr"],
                      batch["xray"] if config.use_style_encoder else None, batch.get("projections"))  # fmt: skip

            # ---- D and D_X steps (eq. 17, 19), lazy R1
            for disc in (model.discriminator, x_disc):
                if disc is not None:
                    _set_requires_grad(disc, True)
            with torch.no_grad(), amp:
                outputs = g_train(*inputs)
            r1_scale = float(r1_interval) if step % r1_interval == 0 else 0.0
            with amp:
                d_losses = loss_fn.discriminator_loss(
                    d_train, outputs.fake.float(), batch["drr"], batch["pose"], r1_scale
                )
            opt_d.zero_grad(set_to_none=True)
            d_losses.total.backward()
            opt_d.step()
            x_losses = None
            if x_train is not None:
                with amp:
                    x_losses = loss_fn.xray_discriminator_loss(
                        x_train, outputs.fake.float(), batch["xray_real"], r1_scale
                    )
                opt_x.zero_grad(set_to_none=True)
                x_losses.total.backward()
                opt_x.step()

            # ---- G step (eq. 18) with the discriminators frozen
            for disc in (model.discriminator, x_disc):
                if disc is not None:
                    _set_requires_grad(disc, False)
            with amp:
                outputs = g_train(*inputs)
                g_losses = loss_fn.generator_loss(
                    outputs, batch["drr"], batch["pose"], d_train, x_train, batch.get("xray_field")
                )
            opt_g.zero_grad(set_to_none=True)
            g_losses.total.backward()
            opt_g.step()
            _update_ema(ema, g_side, min(config.ema_beta, (1 + step) / (10 + step)))
            step += 1

            losses = {
                **{f"g/{k}": v for k, v in g_losses.as_floats().items()},
                **{f"d/{k}": v for k, v in d_losses.as_floats().items()},
                **({f"dx/{k}": v for k, v in x_losses.as_floats().items()} if x_losses is not None else {}),
            }
            if not all(math.isfinite(v) for v in losses.values()):
                raise CT2XError(f"training diverged at step {step} (a loss is not finite): lower lr in the config")
            if main_process:
                bar.update()
                logged = step % options.log_every == 0 or step == total
                if step == first_step + 1 and not logged:  # the step time, early (for CT2XTraining's Stop)
                    print(format_progress(step, total, step_s=time.perf_counter() - tick), flush=True)
                if logged:
                    steps_done = step - logged_step
                    losses["time/step_s"] = (time.perf_counter() - tick) / steps_done
                    losses["time/data_wait_s"] = data_wait / steps_done
                    data_wait, tick, logged_step = 0.0, time.perf_counter(), step
                    for key, value in losses.items():
                        writer.add_scalar(key, value, step)
                    with metrics_file.open("a", encoding="utf-8") as handle:
                        handle.write(json.dumps({"step": step, **losses}) + "\n")
                    print(
                        format_progress(
                            step,
                            total,
                            loss_g=losses["g/total"],
                            loss_d=losses["d/total"],
                            rec=losses["g/rec"],
                            step_s=losses["time/step_s"],
                        ),
                        flush=True,
                    )
                if step % options.image_every == 0 or step == total:
                    writer.add_image(
                        "views/true_drr-reconstructed_drr-synthesized_xray", _image_grid(ema, preview), step
                    )
                if step % options.checkpoint_every == 0 and step < total:
                    checkpoint()
        bar.close()
        if main_process:
            checkpoint()
            writer.close()
    model_path = run / "model.safetensors"
    if main_process:
        _write_model_card(model_path, config, ema, dataset, step, losses, options, initialized)
        if step < total:
            print(f"stopped at step {step} of {total}: model written; continue with --resume", flush=True)
    if world > 1:
        dist.barrier()
    return model_path


def warm_start(model: CT2XGAN, path: Path) -> dict[str, Any]:
    """Copy into ``model`` (in place) every tensor of the trained model ``path`` whose name and
    shape match; the rest keep their fresh initialisation. A trained model holds no
    discriminator, so D always starts fresh. Returns what the model card records."""
    from safetensors.torch import load_file

    from ct2x.checkpoint import load_model

    load_model(path)  # checks the file (safetensors, card format, weights match its card)
    trained = load_file(str(path))
    own = model.state_dict()
    copied = {k: v for k, v in trained.items() if k in own and own[k].shape == v.shape}
    if not copied:
        raise CT2XError(f"--init {path}: none of its tensors fit this config (another architecture?)")
    model.load_state_dict(copied, strict=False)
    fresh = sorted(k for k in own if k not in copied and not is_discriminator_key(k))
    return {"model": Path(path).name, "tensors_copied": len(copied), "fresh_tensors": fresh}


def _preview_batch(dataset: CTViewDataset, count: int = 5) -> dict[str, torch.Tensor]:
    """Up to ``count`` views of the dataset's first CT, each with the same radiograph (for the image grid)."""
    samples = [dataset[i] for i in evenly_spread(list(dataset.views_of(0)), count)]
    batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
    batch["xray"] = batch["xray"][:1].expand_as(batch["xray"]).contiguous()
    return batch


def _update_ema(ema: nn.Module, live: nn.Module, beta: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), live.parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - beta)
        for e, b in zip(ema.buffers(), live.buffers(), strict=True):
            e.copy_(b)


def _checkpoint_payload(
    config: CT2XConfig,
    manifest_hash: str,
    model: CT2XGAN,
    ema: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    step: int,
    losses: dict[str, float],
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    tensors = {
        **{f"model.{k}": v for k, v in model.state_dict().items()},
        **{f"ema.{k}": v for k, v in ema.state_dict().items()},
        "rng.torch": torch.get_rng_state(),
    }
    infos = {}
    for name, optimizer in optimizers.items():
        part, infos[name] = optimizer_to_files(f"opt_{name}", optimizer)
        tensors.update(part)
    info = {
        "config": config.to_dict(),
        "manifest_hash": manifest_hash,
        "optimizers": infos,
        "losses": losses,
        "ct2x_version": __version__,
    }
    return info, tensors


def _write_model_card(
    path: Path,
    config: CT2XConfig,
    ema: nn.Module,
    dataset: CTViewDataset,
    step: int,
    losses: dict[str, float],
    options: TrainOptions,
    initialized: dict[str, Any] | None,
) -> None:
    card = {
        "model": "CT2X-GAN (Tan et al., ACM MM 2024), trained with ct2x",
        "ct2x_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "weights": "exponential moving average of E_CT, PAM, E_sty and G (no discriminator)",
        "config": config.to_dict(),
        "training": {
            "steps": step,
            "batch_size": config.batch_size,
            "ct_volumes": len(dataset.files),
            "views_per_ct": dataset.view_counts,
            "radiographs": len(dataset.radiographs),
            "dataset_settings": dataset.manifest["settings"],
            "manifest_hash": dataset.manifest_hash,
            "final_losses": losses,
            "seed": options.seed,
            **({"initialized_from": initialized} if initialized else {}),
        },
        "intended_use": "research: realistic X-ray images of a CT at chosen C-arm angles; not for diagnosis",
        "limitations": "trained on the listed data only; anatomy outside its range, or other scanners, may fail",
    }
    codes = reference_style_codes(ema, dataset.radiographs, config)
    if codes:
        card["style_codes"] = [
            {"name": name, "radiograph": f"{source.parent.name}/{source.name}"} for name, (source, _) in codes.items()
        ]
    weights = {**ema.state_dict(), **{STYLE_CODE_PREFIX + name: code for name, (_, code) in codes.items()}}
    save_model(path, weights, card)


@torch.no_grad()
def reference_style_codes(
    model: nn.Module, radiographs: list[Path], config: CT2XConfig, count: int = 8
) -> dict[str, tuple[Path, torch.Tensor]]:
    """X-ray style codes of ``count`` training radiographs spread evenly over the sorted list,
    named ``<folder>-<n>`` (e.g. ``chest-1``): ``{name: (radiograph, (num_style_layers, w_dim))}``.
    Empty for a model without the style encoder."""
    encoder = getattr(model, "style_encoder", None)
    if encoder is None or not radiographs:
        return {}
    device = next(encoder.parameters()).device
    sources = evenly_spread(radiographs, count)
    images = xray_input(read_radiographs(sources, config.image_size)[:, 0], config)[:, None].to(device)
    styles = encoder.xray_style(images).float().cpu()
    codes: dict[str, tuple[Path, torch.Tensor]] = {}
    for source, style in zip(sources, styles, strict=True):
        folder = source.parent.name or "xray"
        name = f"{folder}-{sum(n.startswith(folder + '-') for n in codes) + 1}"
        codes[name] = (source, style)
    return codes

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
from collections.abc import Iterator
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
from ct2x.losses import CT2XLoss, DiscriminatorLosses, GeneratorLosses
from ct2x.models import CT2XGAN, is_discriminator_key
from ct2x.models.ct2xgan import DISCRIMINATORS
from ct2x.models.inputs import output_image, xray_input
from ct2x.options import TrainOptions  # the options of ct2x train, torch-free (the CLI and Slicer read them)
from ct2x.progress_line import format_checkpoint, format_progress


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
                    preview.get("projections"), preview.get("chain"))  # fmt: skip
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
    """Train in this process (rank ``RANK`` of ``WORLD_SIZE`` under torchrun): set the run up
    (resuming its latest checkpoint with ``options.resume``), run :class:`_Trainer`'s loop, then
    (rank 0) write the model of the step reached. Returns the model's path."""
    rank, local_rank, world = _distributed()
    device = _device(options.device, local_rank, world)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    dataset = CTViewDataset(options.data, options.xray, config, seed=options.seed)
    steps_per_epoch = math.ceil(len(dataset) / config.batch_size)
    total = options.steps if options.steps is not None else config.epochs * steps_per_epoch
    if total < 1:
        raise CT2XError(f"--steps must be at least 1, got {total}")
    saved = _checkpoint_to_resume(config, options, dataset, total) if options.resume else None
    if options.init is not None and options.resume:
        raise CT2XError("--init starts a new run from a model; --resume continues a run: give one of them")

    nets, initialized = _build_networks(config, options, device)
    step = _restore(nets, saved) if saved is not None else 0
    if world > 1:
        _wrap_distributed(nets, config, device)
    trainer = _Trainer(config, options, dataset, nets, device, step, total, rank, world)
    trainer.run()
    model_path = options.out / "model.safetensors"
    if rank == 0:
        _write_model_card(model_path, config, nets.ema, dataset, trainer.step, trainer.losses, options, initialized)
        if trainer.step < total:
            print(f"stopped at step {trainer.step} of {total}: model written; continue with --resume", flush=True)
    if world > 1:
        dist.barrier()
    return model_path


def _checkpoint_to_resume(
    config: CT2XConfig, options: TrainOptions, dataset: CTViewDataset, total: int
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The run's latest checkpoint (JSON info, tensors), or a CT2XError when it cannot be continued:
    another config, another dataset, or already ``total`` steps or more."""
    run = options.out
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
    return saved


@dataclass
class _Networks:
    """The players of one run and their optimisers.

    ``g_train``, ``d_train`` and ``x_train`` are what the steps call: ``g_side``, D and D_X
    themselves, or their DistributedDataParallel wrappers under torchrun (:func:`_wrap_distributed`).
    ``autocast`` is bfloat16 autocast on a CUDA device and does nothing elsewhere.
    """

    model: CT2XGAN
    g_side: GeneratorSide
    ema: GeneratorSide
    loss_fn: CT2XLoss
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    opt_x: torch.optim.Optimizer | None
    r1_interval: int
    autocast: torch.autocast
    g_train: nn.Module
    d_train: nn.Module
    x_train: nn.Module | None

    def discriminators(self) -> list[nn.Module]:
        """D, and D_X when the config has it."""
        return [d for d in (self.model.discriminator, self.model.xray_discriminator) if d is not None]

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimisers by their names in a checkpoint: ``g``, ``d`` and (with D_X) ``x``."""
        return {"g": self.opt_g, "d": self.opt_d, **({"x": self.opt_x} if self.opt_x is not None else {})}


def _build_networks(
    config: CT2XConfig, options: TrainOptions, device: torch.device
) -> tuple[_Networks, dict[str, Any] | None]:
    """A fresh CT2X-GAN seeded with ``options.seed`` (warm-started from ``options.init`` if given),
    its EMA copy, the loss and the optimisers; also what :func:`warm_start` returned (or ``None``).

    The discriminators' Adam runs at ``lr * k / (k + 1)`` with betas raised to ``k / (k + 1)``
    (k = the R1 interval: StyleGAN2's minibatch-ratio correction for lazily regularised players)."""
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
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    nets = _Networks(
        model=model,
        g_side=g_side,
        ema=ema,
        loss_fn=loss_fn,
        opt_g=opt_g,
        opt_d=opt_d,
        opt_x=opt_x,
        r1_interval=r1_interval,
        autocast=autocast,
        g_train=g_side,
        d_train=model.discriminator,
        x_train=x_disc,
    )
    return nets, initialized


def _restore(nets: _Networks, saved: tuple[dict[str, Any], dict[str, torch.Tensor]]) -> int:
    """Load a checkpoint (:func:`_checkpoint_payload`'s JSON info and tensors) into ``nets``: the
    model, the EMA copy and the optimisers, and the torch RNG state. Returns the checkpoint's step."""
    info, tensors = saved
    nets.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    nets.ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    for name, optimizer in nets.optimizers().items():
        optimizer_from_files(f"opt_{name}", optimizer, tensors, info["optimizers"][name])
    torch.set_rng_state(tensors["rng.torch"])
    return int(info["step"])


def _wrap_distributed(nets: _Networks, config: CT2XConfig, device: torch.device) -> None:
    """Wrap the generator side, D and D_X (each on its own) in DistributedDataParallel, in place."""
    ids = [device.index] if device.type == "cuda" else None
    # Without L_consis the content branch of E_sty takes no part in the loss.
    unused = config.use_style_encoder and not config.consistency_enabled
    nets.g_train = nn.parallel.DistributedDataParallel(nets.g_side, device_ids=ids, find_unused_parameters=unused)
    nets.d_train = nn.parallel.DistributedDataParallel(nets.model.discriminator, device_ids=ids)
    if nets.model.xray_discriminator is not None:
        nets.x_train = nn.parallel.DistributedDataParallel(nets.model.xray_discriminator, device_ids=ids)


class _Trainer:
    """The loop of one run: each step takes this rank's share of a global batch, runs the D step,
    the G step and the EMA update, then rank 0 reports (:class:`_Reporter`) and writes the checkpoint
    every ``checkpoint_every`` steps. A stop signal ends the loop after the step in progress; the
    last checkpoint is written at the end either way.

    ``step`` counts the steps done; ``losses`` holds the last step's loss terms (and, at a logged
    step, its timings), as the checkpoints and the model card record them.
    """

    def __init__(
        self,
        config: CT2XConfig,
        options: TrainOptions,
        dataset: CTViewDataset,
        nets: _Networks,
        device: torch.device,
        step: int,
        total: int,
        rank: int,
        world: int,
    ):
        self.config, self.options, self.dataset, self.nets, self.device = config, options, dataset, nets, device
        self.step, self.total, self.main_process = step, total, rank == 0
        self.losses: dict[str, float] = {}
        self.loader = DataLoader(
            dataset,
            batch_sampler=StepSampler(len(dataset), config.batch_size, options.seed, step, rank, world),
            num_workers=options.workers,
            pin_memory=device.type == "cuda",
            persistent_workers=options.workers > 0,
            worker_init_fn=_ignore_stop_signals,
        )
        self.reporter = _Reporter(options, dataset, device, step, total, self.main_process)

    def run(self) -> None:
        """Train up to ``total`` steps or until a stop signal, then write the last checkpoint (rank 0)."""
        with _StopRequest() as stop:
            batches = iter(self.loader)
            while self.step < self.total and not stop.requested:
                self.train_step(batches)
                if self.main_process:
                    self.reporter.step_done(self.step, self.losses, self.nets.ema)
                    if self.step % self.options.checkpoint_every == 0 and self.step < self.total:
                        self.checkpoint()
            self.reporter.bar.close()
            if self.main_process:
                self.checkpoint()
                self.reporter.writer.close()

    def train_step(self, batches: Iterator[dict[str, torch.Tensor]]) -> None:
        """One step on the next batch of ``batches``: D and D_X, then G, then the EMA copy with decay
        ``min(ema_beta, (1 + t) / (10 + t))`` at step ``t``. A CT2XError if a loss is not finite."""
        waited = time.perf_counter()
        batch = {k: v.to(self.device, non_blocking=True) for k, v in next(batches).items()}
        self.reporter.data_wait += time.perf_counter() - waited
        inputs = (batch["volume"], batch["pose"], batch["mip"], batch["drr"],
                  batch["xray"] if self.config.use_style_encoder else None, batch.get("projections"),
                  batch.get("chain"))  # fmt: skip
        d_losses, x_losses = _discriminator_step(self.nets, batch, inputs, self.step)
        g_losses = _generator_step(self.nets, batch, inputs)
        _update_ema(self.nets.ema, self.nets.g_side, min(self.config.ema_beta, (1 + self.step) / (10 + self.step)))
        self.step += 1
        self.losses = _step_losses(g_losses, d_losses, x_losses, self.step)

    def checkpoint(self) -> Path:
        """Write the checkpoint of the step reached and print its ``CT2X-CHECKPOINT`` line; returns its path.
        A failed write is a CT2XError naming the checkpoint that is kept."""
        run, step = self.options.out, self.step
        nets = self.nets
        info, tensors = _checkpoint_payload(
            self.config, self.dataset.manifest_hash, nets.model, nets.ema, nets.optimizers(), step, self.losses
        )
        try:
            path = save_checkpoint(run, step, tensors, info)
        except WriteError as error:
            last = latest_step(run)
            kept = f"the last good checkpoint, step {last}, is kept" if last else "no checkpoint was written before"
            self.reporter.bar.close()  # the error goes on a line of its own
            raise CT2XError(f"{error}; {kept}: free space, then continue with --resume") from None
        print(format_checkpoint(step, path), flush=True)
        return path


def _discriminator_step(
    nets: _Networks, batch: dict[str, torch.Tensor], inputs: tuple[torch.Tensor | None, ...], step: int
) -> tuple[DiscriminatorLosses, DiscriminatorLosses | None]:
    """The D and D_X steps (eq. 17, 19) against the generator's fakes for ``inputs`` (made without
    gradients); the R1 penalty lazily, at every ``r1_interval``-th ``step`` with its weight times the
    interval. Returns D's losses and D_X's (``None`` without D_X)."""
    for disc in nets.discriminators():
        _set_requires_grad(disc, True)
    with torch.no_grad(), nets.autocast:
        outputs = nets.g_train(*inputs)
    r1_scale = float(nets.r1_interval) if step % nets.r1_interval == 0 else 0.0
    with nets.autocast:
        d_losses = nets.loss_fn.discriminator_loss(
            nets.d_train, outputs.fake.float(), batch["drr"], batch["pose"], r1_scale
        )
    nets.opt_d.zero_grad(set_to_none=True)
    d_losses.total.backward()
    nets.opt_d.step()
    x_losses = None
    if nets.x_train is not None:
        with nets.autocast:
            x_losses = nets.loss_fn.xray_discriminator_loss(
                nets.x_train, outputs.fake.float(), batch["xray_real"], r1_scale
            )
        nets.opt_x.zero_grad(set_to_none=True)
        x_losses.total.backward()
        nets.opt_x.step()
    return d_losses, x_losses


def _generator_step(
    nets: _Networks, batch: dict[str, torch.Tensor], inputs: tuple[torch.Tensor | None, ...]
) -> GeneratorLosses:
    """The G step (eq. 18) on ``inputs`` with the discriminators frozen; returns its losses."""
    for disc in nets.discriminators():
        _set_requires_grad(disc, False)
    with nets.autocast:
        outputs = nets.g_train(*inputs)
        g_losses = nets.loss_fn.generator_loss(
            outputs, batch["drr"], batch["pose"], nets.d_train, nets.x_train, batch.get("xray_field")
        )
    nets.opt_g.zero_grad(set_to_none=True)
    g_losses.total.backward()
    nets.opt_g.step()
    return g_losses


def _step_losses(
    g_losses: GeneratorLosses, d_losses: DiscriminatorLosses, x_losses: DiscriminatorLosses | None, step: int
) -> dict[str, float]:
    """A step's loss terms as floats named ``g/<term>``, ``d/<term>`` and ``dx/<term>``, or a
    CT2XError when one is not finite (``step``: the steps done, for the message)."""
    losses = {
        **{f"g/{k}": v for k, v in g_losses.as_floats().items()},
        **{f"d/{k}": v for k, v in d_losses.as_floats().items()},
        **({f"dx/{k}": v for k, v in x_losses.as_floats().items()} if x_losses is not None else {}),
    }
    if not all(math.isfinite(v) for v in losses.values()):
        raise CT2XError(f"training diverged at step {step} (a loss is not finite): lower lr in the config")
    return losses


class _Reporter:
    """What a run reports after each step (rank 0 only; the other ranks' bar is disabled and they
    have no writer): the tqdm bar; at the first step, when it is not logged, a ``CT2X-PROGRESS`` line
    with the step time (for CT2XTraining's Stop); every ``log_every`` steps and at the last one, the
    losses and timings to TensorBoard, ``metrics.jsonl`` and a ``CT2X-PROGRESS`` line; every
    ``image_every`` steps and at the last one, the preview grid of the EMA model to TensorBoard.

    ``data_wait`` sums the seconds spent waiting for batches since the last logged step.
    """

    def __init__(
        self,
        options: TrainOptions,
        dataset: CTViewDataset,
        device: torch.device,
        step: int,
        total: int,
        main_process: bool,
    ):
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        self.options, self.total = options, total
        self.preview = {k: v.to(device) for k, v in _preview_batch(dataset).items()}
        self.writer = SummaryWriter(str(options.out / "tensorboard")) if main_process else None
        show = options.progress and main_process
        self.bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not show)
        self.metrics_file = options.out / "metrics.jsonl"
        self.data_wait, self.tick, self.logged_step, self.first_step = 0.0, time.perf_counter(), step, step

    def step_done(self, step: int, losses: dict[str, float], ema: nn.Module) -> None:
        """Report step ``step`` (steps done) with its ``losses``; ``ema`` draws the preview grid."""
        self.bar.update()
        logged = step % self.options.log_every == 0 or step == self.total
        if step == self.first_step + 1 and not logged:  # the step time, early (for CT2XTraining's Stop)
            print(format_progress(step, self.total, step_s=time.perf_counter() - self.tick), flush=True)
        if logged:
            self.log(step, losses)
        if step % self.options.image_every == 0 or step == self.total:
            self.writer.add_image(
                "views/true_drr-reconstructed_drr-synthesized_xray", _image_grid(ema, self.preview), step
            )

    def log(self, step: int, losses: dict[str, float]) -> None:
        """Add the mean seconds per step and waiting for data since the last logged step to ``losses``
        (in place: the checkpoint and the model card record them too), then write them out."""
        steps_done = step - self.logged_step
        losses["time/step_s"] = (time.perf_counter() - self.tick) / steps_done
        losses["time/data_wait_s"] = self.data_wait / steps_done
        self.data_wait, self.tick, self.logged_step = 0.0, time.perf_counter(), step
        for key, value in losses.items():
            self.writer.add_scalar(key, value, step)
        with self.metrics_file.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, **losses}) + "\n")
        print(
            format_progress(
                step,
                self.total,
                loss_g=losses["g/total"],
                loss_d=losses["d/total"],
                rec=losses["g/rec"],
                step_s=losses["time/step_s"],
            ),
            flush=True,
        )


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

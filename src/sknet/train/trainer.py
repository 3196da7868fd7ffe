"""The training loop: plain PyTorch, DDP under torchrun, exact resume, atomic checkpoints.

:func:`train` runs one :class:`_Trainer` through named steps: :meth:`~_Trainer.build` (data,
model, optimiser), :meth:`~_Trainer.resume`, then per epoch :meth:`~_Trainer.train_one_epoch`,
:meth:`~_Trainer.evaluate` and :meth:`~_Trainer.end_epoch`, and :meth:`~_Trainer.finish` (final
weights and summary). What changes as it runs is one :class:`~sknet.train.state.TrainState`;
the run directory's files are described in :mod:`sknet.train.rundir`.

Interruption and resume: checkpoints are written atomically every ``checkpoint_every``
optimizer steps and at every epoch end, with the model, optimizer (and fp16 scaler) state, the
``TrainState`` (position, partial epoch sums, best epoch, history, ...) and the RNG states of
Python/NumPy/torch of every rank. The sample order of an epoch and each sample's augmentation are
pure functions of ``(seed, epoch, index)``, so ``--resume`` skips the consumed samples and
continues from the last checkpoint; the steps done after it are recomputed. With
``deterministic=True`` and a fixed thread count the result on the CPU is bit-identical to an
uninterrupted run (tested, also from checkpoints of earlier sknet versions); on GPUs it is as
reproducible as cuDNN/NCCL make it. A NaN/inf loss stops the run (``NonFiniteLossError``): on the
CPU before the bad step is applied, on GPUs within ``log_every`` steps (checked without a
per-step sync); checkpoints are only written when all weights are finite, so the last one is
kept good.

Departures from the paper's training description (which gives only the optimiser, batch,
schedule, weight decay, label smoothing and augmentation): ``batch_size`` is the global batch and
the learning rate follows the linear scaling rule relative to ``lr_reference_batch``; the
optional warm-up is linear from ``lr / warmup_steps``. Weight decay applies to every parameter
unless ``wd_exclude_bn_bias`` (on in the paper presets: the official release's ``decay_mult: 0``
on BatchNorm parameters and the classifier bias; it also gives the classifier bias twice the
learning rate, which we do not copy).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from torchvision.transforms import v2

import sknet.errors as errors
from sknet._device import autocast
from sknet._files import RunLock
from sknet.complexity import complexity
from sknet.errors import (
    ConfigError,
    CorruptImageError,
    DataError,
    FileFormatError,
    InputTypeError,
    NonFiniteLossError,
    SKNetError,
    TrainingError,
)
from sknet.hub.metadata import checkpoint_meta, save_weights
from sknet.models import create_model
from sknet.models._base import SKNetModel
from sknet.preprocess import default_preprocess
from sknet.train import rundir
from sknet.train.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    weights_digest,
)
from sknet.train.config import TrainConfig, apply_overrides, available_cores, resolve_engine
from sknet.train.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup_distributed,
    seed_everything,
    setup_distributed,
)
from sknet.train.evaluate import evaluate
from sknet.train.finetune import init_state, param_groups, resolve_init, set_freeze
from sknet.train.pipeline import (
    DataBundle,
    PositionedSampler,
    build_data,
    eval_loader,
    loader_kwargs,
)
from sknet.train.rundir import RESUME_MUTABLE_KEYS, pct
from sknet.train.state import TrainState

__all__ = [
    "RESUME_MUTABLE_KEYS",
    "NonFiniteLossError",
    "learning_rate",
    "train",
    "weights_digest",
]

log = logging.getLogger("sknet.train")


def learning_rate(cfg: TrainConfig, step: int, epoch: int, steps_per_epoch: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based, global) taken during ``epoch``."""
    base = cfg.effective_lr()
    warm = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return base * (step + 1) / warm
    if cfg.schedule == "constant":
        return base
    if cfg.schedule == "step":
        return base * cfg.lr_gamma ** (epoch // cfg.lr_step)
    if cfg.schedule == "multistep":
        return base * cfg.lr_gamma ** sum(1 for m in cfg.lr_milestones if epoch >= m)
    total = cfg.epochs * steps_per_epoch
    p = min(1.0, (step - warm) / max(1, total - warm))
    return cfg.min_lr + (base - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * p))


# ---------------------------------------------------------------------------------------------
# process-wide settings and small helpers
# ---------------------------------------------------------------------------------------------


def engine_settings(cfg: TrainConfig) -> tuple[int, int]:
    """``(threads, workers)`` of a run: ``cfg``'s, with the automatic values (threads 0,
    workers -1) resolved for the cores of this process (shared by the processes of one
    machine under torchrun)."""
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    cores = max(1, available_cores() // local)
    return resolve_engine(cfg.threads, cfg.workers, cfg.data, cores)


@contextlib.contextmanager
def _engine_state(cfg: TrainConfig, device: torch.device) -> Iterator[None]:
    """Apply threads / determinism settings for the run; restore the previous ones afterwards."""
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    det_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn_det = torch.backends.cudnn.deterministic
    cudnn_bench = torch.backends.cudnn.benchmark
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        torch.set_num_threads(engine_settings(cfg)[0])
        if cfg.deterministic:
            if device.type == "cuda" and cublas is None:
                os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=det_warn)
        torch.backends.cudnn.deterministic = cudnn_det
        torch.backends.cudnn.benchmark = cudnn_bench
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def _clean_loader_error(exc: BaseException) -> BaseException:
    """DataLoader worker errors carry the worker's traceback in the message: keep its last line."""
    msg = str(exc)
    if "Original Traceback" not in msg:
        return exc
    last = msg.strip().splitlines()[-1]
    name = type(exc).__name__
    if last.startswith(f"{name}: "):
        last = last[len(name) + 2 :]
    try:
        return type(exc)(last)
    except Exception:  # pragma: no cover - exotic exception signatures
        return RuntimeError(last)


def _on_main(fn: Any, dist: DistInfo) -> Any:
    """Run ``fn`` on rank 0 and give every rank its result, or raise its error on every rank.

    Rank 0 raises the original exception; the other ranks raise the same sknet error class
    (a plain built-in for any other exception) with the same message.
    """
    if not dist.distributed:
        return fn()
    result: Any = None
    error: tuple[str, str] | None = None
    original: BaseException | None = None
    if dist.is_main:
        try:
            result = fn()
        except (ValueError, TypeError, FileNotFoundError, KeyError, RuntimeError) as exc:
            error = (type(exc).__name__, str(exc))
            original = exc
    result, error = broadcast_object((result, error), dist)
    if error is not None:
        if original is not None:
            raise original
        raise _error_named(*error)
    return result


def _error_named(name: str, message: str) -> Exception:
    """An exception of the class called ``name`` (an sknet error or a built-in) with
    ``message``: rank 0's error, raised again on the other ranks."""
    cls = getattr(errors, name, None) if name in errors.__all__ else None
    if isinstance(cls, type) and issubclass(cls, SKNetError) and cls is not CorruptImageError:
        return cls(message)
    if name == "CorruptImageError":
        return FileFormatError(message)
    builtin = {
        "TypeError": TypeError,
        "FileNotFoundError": FileNotFoundError,
        "KeyError": KeyError,
        "RuntimeError": RuntimeError,
    }
    return builtin.get(name, ValueError)(message)


def _model_meta(
    cfg: TrainConfig, model: SKNetModel, data: DataBundle, provenance: dict[str, Any]
) -> dict[str, Any]:
    """What a checkpoint records about the network and its inputs: the checkpoint dialect of the
    one metadata schema (:func:`sknet.hub.metadata.checkpoint_meta`, read back by sknet.load)."""
    return checkpoint_meta(
        model,
        name=cfg.model,
        overrides=cfg.model_overrides,
        classes=data.classes,
        image_size=data.image_size,
        data=cfg.data,
        mean=data.mean,
        std=data.std,
        provenance=provenance,
    )


class _Window:
    """Images and time since the last progress update (for the img/s figure)."""

    def __init__(self) -> None:
        self.start, self.images = time.perf_counter(), 0

    def rate(self, world_size: int) -> float:
        """Images per second over all processes since the last call; starts a new window."""
        now = time.perf_counter()
        ips = self.images * world_size / max(1e-9, now - self.start)
        self.start, self.images = now, 0
        return ips


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------


class _Trainer:
    """One call of :func:`train`: the built objects, the :class:`TrainState` and the steps.

    The classifier's trainer; :mod:`sknet.train.dense` subclasses it for the dense tasks.
    """

    #: the training loader's collate function (None: torch's default)
    collate_fn: Any = None
    #: columns of metrics.csv
    csv_fields: tuple[str, ...] = rundir.CSV_FIELDS
    #: the validation metric that picks the best epoch, and whether higher is better
    best_key, best_higher = "top1_err", False

    def __init__(self, cfg: TrainConfig, run_dir: Path, dist: DistInfo, progress: bool) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.dist = dist
        self.device = dist.device
        self.progress = progress and dist.is_main
        self.ckpt_dir = run_dir / "checkpoints"
        self.state = TrainState(partial=torch.zeros(3, dtype=torch.float64, device=self.device))
        self.tb: Any = None
        self.provenance: dict[str, Any] = {}  # where the initial weights came from
        self.val_shard_n: int | None = None  # this rank's share of the last evaluation
        # A counter of non-finite losses, summed on the device so that checking it costs a
        # sync only when :meth:`check_finite` runs (every step on the CPU, else at log steps).
        self.nonfinite = torch.zeros((), dtype=torch.float32, device=self.device)
        self.check_every = 1 if self.device.type == "cpu" else cfg.log_every
        self.threads, self.workers = engine_settings(cfg)
        self.ema: AveragedModel | None = None
        self.mix: Any = None  # MixUp / CutMix on batches, or None
        self.last_grad_norm: float | None = None  # before clipping, of the last step

    # ----------------------------------------------------------------------- the whole run

    def run(self, resume: bool) -> dict[str, Any]:
        self.check_engine()
        ckpt = _on_main(lambda: self.read_checkpoint(resume), self.dist)
        self.build(ckpt)
        if ckpt is not None:
            self.resume(ckpt)
        self.open_outputs(resume, resumed=ckpt is not None)
        while self.state.epoch < self.cfg.epochs:
            t_epoch = time.perf_counter()
            images = self.train_one_epoch()
            seconds = time.perf_counter() - t_epoch
            self.sync_buffers()
            train_stats = self.train_stats()
            val = self.evaluate() if self.eval_due() else {}
            self.end_epoch(train_stats, val, seconds, images)
        return self.finish(resumed=ckpt is not None)

    def check_engine(self) -> None:
        if self.cfg.amp == "fp16" and self.device.type != "cuda":
            raise ConfigError("amp='fp16' needs a CUDA device; use amp='bf16' on the CPU")
        if self.cfg.sync_bn and self.dist.distributed and self.device.type != "cuda":
            raise ConfigError("sync_bn needs CUDA devices (SyncBatchNorm has no CPU kernels)")

    # ----------------------------------------------------------------------- build

    def build(self, ckpt: dict[str, Any] | None) -> None:
        """Data, model (from the checkpoint, the init weights or the seed), optimiser, sampler."""
        cfg, dist = self.cfg, self.dist
        self.mb = cfg.micro_batch(dist.world_size)
        # Data first: building it must not shift the seeded model initialisation below.
        self.data = self.build_data()
        self.num_classes = cfg.num_classes or self.data.num_classes
        if cfg.num_classes and cfg.num_classes != self.data.num_classes:
            raise ConfigError(
                f"num_classes={cfg.num_classes} but {cfg.data} has {self.data.num_classes} classes"
            )
        self.build_model(ckpt)
        self.build_optimizer()
        self.build_ingredients()
        self.sampler = PositionedSampler(self.data.train, dist.world_size, dist.rank, seed=cfg.seed)
        micro = (self.sampler.num_samples // self.mb) // cfg.grad_accum * cfg.grad_accum
        self.micro_per_epoch, self.steps_per_epoch = micro, micro // cfg.grad_accum
        if self.steps_per_epoch < 1:
            raise DataError(
                f"{len(self.data.train)} training samples give no full batch of "
                f"{cfg.batch_size}; lower batch_size or raise num_samples"
            )
        self.val_loader = self.build_val_loader(cfg.eval_batch_size or 2 * self.mb)

    def build_data(self) -> Any:
        """The run's datasets (:class:`DataBundle`: ``train``, ``val``, ``num_classes``, ...)."""
        return build_data(self.cfg)

    def build_val_loader(self, batch_size: int) -> DataLoader:
        """The loader over this rank's shard of the validation split."""
        dist = self.dist
        return eval_loader(
            self.data.val, batch_size, dist.rank, dist.world_size, self.workers, self.device
        )

    def build_model(self, ckpt: dict[str, Any] | None) -> None:
        cfg, dist, data = self.cfg, self.dist, self.data
        # Every rank seeds alike here, so every rank starts from the same weights.
        seed_everything(cfg.seed)
        model = create_model(cfg.model, num_classes=self.num_classes, **dict(cfg.model_overrides))
        # An internal invariant, not a user error: without features_only it is a classifier.
        assert isinstance(model, SKNetModel)
        if data.image_size < model.min_input_size:
            raise ConfigError(
                f"image_size {data.image_size} is below {cfg.model}'s minimum input "
                f"{model.min_input_size}"
            )
        set_freeze(model, cfg.freeze_stages)
        self.cx = complexity(model, data.image_size)
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            self.provenance = dict(ckpt["meta"].get("provenance") or {})
        elif cfg.init:
            state, self.provenance = _on_main(lambda: init_state(cfg, model, data.classes), dist)
            model.load_state_dict(state)
        self.meta = _model_meta(cfg, model, data, self.provenance)
        model.to(self.device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        if cfg.sync_bn and dist.distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif cfg.sync_bn:
            log.info("sync_bn ignored: a single process")
        self.model: nn.Module = model
        self.net: nn.Module = model
        if dist.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DDP(model, device_ids=ids)
        # From here on each rank draws its own random numbers.
        seed_everything(cfg.seed + dist.rank)

    def build_optimizer(self) -> None:
        cfg = self.cfg
        params = param_groups(self.model, cfg)
        self.optimizer: torch.optim.Optimizer
        if cfg.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(
                params, lr=cfg.effective_lr(), weight_decay=cfg.weight_decay
            )
        else:
            self.optimizer = torch.optim.SGD(
                params,
                lr=cfg.effective_lr(),
                momentum=cfg.momentum,
                nesterov=cfg.nesterov,
                weight_decay=cfg.weight_decay,
            )
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.amp == "fp16" else None
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    def build_ingredients(self) -> None:
        """EMA of the weights and batch MixUp / CutMix, when the config turns them on."""
        cfg = self.cfg
        if cfg.ema_decay > 0:
            self.ema = AveragedModel(
                self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True
            )
            self.ema.requires_grad_(False)
        mixers: list[Any] = []
        if cfg.mixup_alpha > 0:
            mixers.append(v2.MixUp(alpha=cfg.mixup_alpha, num_classes=self.num_classes))
        if cfg.cutmix_alpha > 0:
            mixers.append(v2.CutMix(alpha=cfg.cutmix_alpha, num_classes=self.num_classes))
        if mixers:
            self.mix = mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)

    def eval_model(self) -> nn.Module:
        """The weights evaluated and saved: the EMA when enabled, else the trained ones."""
        return self.ema.module if self.ema is not None else self.model

    # ----------------------------------------------------------------------- resume

    def read_checkpoint(self, resume: bool) -> dict[str, Any] | None:
        """The checkpoint to resume from (rank 0 reads it; :func:`_on_main` shares it)."""
        if not resume:
            return None
        for stale in self.ckpt_dir.glob(".*.tmp"):  # left by a kill during a save
            stale.unlink(missing_ok=True)
        last = self.ckpt_dir / "last.pt"
        if not last.is_file():
            rundir.refuse_results_without_checkpoint(self.run_dir)
            log.info("no checkpoint in %s yet: starting from scratch", self.run_dir)
            return None
        state = load_checkpoint(last)
        rundir.check_resume_config(state["config"], self.cfg)
        return state

    def resume(self, ckpt: dict[str, Any]) -> None:
        """Restore optimiser, scaler, train state and RNG states (the model is loaded in
        :meth:`build_model`)."""
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            if ckpt.get("ema") is None:
                raise ConfigError(
                    "the checkpoint holds no EMA weights (ema_decay was 0): resume with "
                    "ema_decay = 0 or start a new run"
                )
            self.ema.load_state_dict(ckpt["ema"])
        # The stored partial sums are over all ranks: rank 0 takes them, the others start at 0.
        self.state.load_state_dict(ckpt, holds_partial=self.dist.is_main)
        st = self.state
        # Each rank continues its own random stream; with another process count the remaining
        # samples of the epoch are split differently anyway, so exactness is lost regardless.
        if int(ckpt["world_size"]) == self.dist.world_size:
            restore_rng_state(ckpt["rng"][self.dist.rank])
        else:
            log.warning(
                "resuming with %d processes (checkpoint: %d): the remaining samples of epoch "
                "%d are split differently, so the result is not bit-identical",
                self.dist.world_size,
                ckpt["world_size"],
                st.epoch + 1,
            )
        log.info(
            "resuming %s at epoch %d, step %d/%d (global step %d)",
            self.run_dir,
            st.epoch + 1,
            st.step_in_epoch,
            self.steps_per_epoch,
            st.global_step,
        )

    # ----------------------------------------------------------------------- outputs

    def open_outputs(self, resume: bool, resumed: bool) -> None:
        """Config, metrics.csv (cut back to the checkpoint's epochs), TensorBoard, first logs."""
        cfg, dist = self.cfg, self.dist
        if dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                rundir.write_config(self.run_dir, cfg)
            rundir.prepare_csv(self.run_dir, self.state.metrics_rows, self.csv_fields)
            if cfg.tensorboard:
                purge = self.state.global_step if resumed else None
                self.tb = rundir.tensorboard_writer(self.run_dir / "tb", purge)
            self.log_setup()
        barrier(dist)

    def log_setup(self) -> None:
        cfg, data = self.cfg, self.data
        log.info(
            "%s: %s params, %.1f MMACs at %dpx | %s: %d train / %d val images, %d classes",
            cfg.model,
            f"{self.cx.params:,}",
            self.cx.macs / 1e6,
            data.image_size,
            cfg.data,
            len(data.train),
            len(data.val),
            self.num_classes,
        )
        log.info(
            "%d epochs x %d steps, global batch %d (%d per process x %d processes x %d "
            "accumulation), lr %.4g (%s), device %s",
            cfg.epochs,
            self.steps_per_epoch,
            cfg.batch_size,
            self.mb,
            self.dist.world_size,
            cfg.grad_accum,
            cfg.effective_lr(),
            cfg.schedule,
            self.device,
        )
        log.info(
            "engine: %d intra-op thread(s), %d loader worker(s) (config: threads=%d, workers=%d; "
            "%d core(s) available)",
            self.threads,
            self.workers,
            cfg.threads,
            cfg.workers,
            available_cores(),
        )
        keys = ("auto_augment", "mixup_alpha", "cutmix_alpha", "ema_decay", "grad_clip_norm")
        extras = [f"{k}={getattr(cfg, k)}" for k in keys if getattr(cfg, k) not in ("none", 0)]
        extras += [
            f"{k}={v}"
            for k, v in cfg.model_overrides.items()
            if k in ("drop_path_rate", "drop_rate")
        ]
        if extras:
            log.info("ingredients: %s", ", ".join(extras))
        if self.provenance:
            log.info("initial weights: %s (%s)", cfg.init, self.provenance.get("init_model"))

    # ----------------------------------------------------------------------- one epoch

    def train_one_epoch(self) -> int:
        """Train the rest of the epoch in progress; returns the images this process trained."""
        cfg, st = self.cfg, self.state
        start_micro = st.step_in_epoch * cfg.grad_accum
        # The sampler skips the samples consumed before the checkpoint without loading them.
        self.sampler.set_position(st.epoch, start_micro * self.mb)
        loader = DataLoader(
            self.data.train,
            batch_size=self.mb,
            sampler=self.sampler,
            drop_last=True,
            collate_fn=self.collate_fn,
            generator=self.loader_generator(),
            **loader_kwargs(self.workers, self.device),
        )
        self.net.train()
        window, bar = _Window(), self.progress_bar()
        it = iter(loader)
        try:
            for micro in range(start_micro, self.micro_per_epoch):
                batch = self.next_batch(it)
                if batch is None:  # pragma: no cover - guarded by micro_per_epoch
                    break
                if micro % cfg.grad_accum == 0:
                    self.set_lr()
                last_micro = (micro + 1) % cfg.grad_accum == 0
                loss = self.forward_backward(*batch, sync=last_micro)
                window.images += len(batch[0])
                if last_micro:
                    self.optimizer_step(loss, window, bar)
        finally:
            if bar is not None:
                bar.close()
            del it  # shuts down loader workers now, also on errors
        self.check_finite()
        return (self.micro_per_epoch - start_micro) * self.mb

    def loader_generator(self) -> torch.Generator | None:
        """The generator the training DataLoader draws its worker seed from (None: torch's
        global one, as before; the dense trainer keeps the global stream for its samplers)."""
        return None

    def progress_bar(self) -> Any:
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=self.steps_per_epoch,
            initial=self.state.step_in_epoch,
            desc=f"epoch {self.state.epoch + 1}/{self.cfg.epochs}",
            dynamic_ncols=True,
            leave=True,
        )

    def next_batch(self, it: Iterator[Any]) -> tuple[Any, Any] | None:
        """The next ``(inputs, targets)`` of the loader (whose batches are ``(inputs, targets,
        bad)``; the names in ``bad`` are recorded), or None at its end."""
        try:
            images, targets, bad = next(it)
        except StopIteration:  # pragma: no cover - guarded by micro_per_epoch
            return None
        except Exception as exc:
            raise _clean_loader_error(exc) from None
        if any(bad):  # classification: an entry per sample ("" when read); dense: the names
            self.note_bad(list(bad))
        return images, targets

    def set_lr(self) -> None:
        """The schedule's learning rate for the next optimizer step, times each group's
        ``lr_scale`` (fine-tuning's backbone factor; absent: 1)."""
        st = self.state
        lr = learning_rate(self.cfg, st.global_step, st.epoch, self.steps_per_epoch)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)

    def current_lr(self) -> float:
        """The schedule's learning rate of the last step (that of the classifier's group)."""
        groups = self.optimizer.param_groups
        return next((g["lr"] for g in groups if g.get("lr_scale", 1.0) == 1.0), groups[0]["lr"])

    def forward_backward(
        self, images: torch.Tensor, labels: torch.Tensor, *, sync: bool
    ) -> torch.Tensor:
        """Forward and backward pass of one micro-batch; returns its (detached) loss."""
        cfg = self.cfg
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        hard = labels
        if self.mix is not None:
            images, labels = self.mix(images, labels)  # soft targets (B, classes)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)

        def forward() -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.net(images)
            return self.criterion(logits.float(), labels), logits

        ld, logits = self.backward(forward, sync=sync)
        with torch.no_grad():
            partial = self.state.partial
            partial[0] += ld.double() * hard.numel()
            partial[1] += (logits.detach().argmax(1) == hard).sum()
            partial[2] += hard.numel()
        return ld

    def backward(
        self, forward: Callable[[], tuple[torch.Tensor, Any]], *, sync: bool
    ) -> tuple[torch.Tensor, Any]:
        """``forward()`` (returning the loss and anything else) under autocast, then the
        backward pass of the loss over ``grad_accum``, scaled when AMP needs it. Under DDP,
        gradients are all-reduced only after the last micro-batch of a step (``sync``).
        Returns the detached loss, counted by the non-finite check, and the other output."""
        no_sync = self.dist.distributed and not sync
        with self.net.no_sync() if no_sync else contextlib.nullcontext():  # type: ignore[operator]
            with autocast(self.device, self.cfg.amp):
                loss, out = forward()
            scaled = loss / self.cfg.grad_accum
            if self.scaler is not None:
                self.scaler.scale(scaled).backward()
            else:
                scaled.backward()
        ld = loss.detach()
        with torch.no_grad():
            self.nonfinite += (~torch.isfinite(ld)).float()
        return ld, out

    def optimizer_step(self, loss: torch.Tensor, window: _Window, bar: Any) -> None:
        """Apply the accumulated gradients, then log and checkpoint when due."""
        cfg, st = self.cfg, self.state
        if st.global_step % self.check_every == 0:
            self.check_finite()  # on the CPU: before a bad step is applied
        if cfg.grad_clip_norm > 0:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            params = [p for p in self.model.parameters() if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip_norm)
            self.last_grad_norm = float(norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        st.global_step += 1
        st.step_in_epoch += 1
        if st.step_in_epoch % cfg.log_every == 0 or st.step_in_epoch == self.steps_per_epoch:
            self.check_finite()
            self.log_step(loss, window.rate(self.dist.world_size), bar)
        if bar is not None:
            bar.update(1)
        mid_epoch = st.step_in_epoch < self.steps_per_epoch  # epoch ends save in end_epoch
        if cfg.checkpoint_every and st.global_step % cfg.checkpoint_every == 0 and mid_epoch:
            self.check_finite()
            self.save_checkpoint()

    def log_step(self, loss: torch.Tensor, ips: float, bar: Any) -> None:
        if not self.dist.is_main:
            return
        loss_v, lr, step = float(loss), self.current_lr(), self.state.global_step
        if bar is not None:
            partial = self.state.partial
            acc = float(partial[1] / partial[2].clamp(min=1)) * 100
            bar.set_postfix(
                loss=f"{loss_v:.3f}", acc=f"{acc:.1f}%", img_s=f"{ips:.0f}", lr=f"{lr:.3g}",
                refresh=False,
            )  # fmt: skip
        if self.tb is not None:
            self.tb.add_scalar("train/loss_step", loss_v, step)
            self.tb.add_scalar("train/lr", lr, step)
            self.tb.add_scalar("train/img_per_s", ips, step)

    def check_finite(self) -> None:
        """Stop the run (on every rank) if any rank has seen a non-finite loss."""
        bad = self.nonfinite.clone()
        all_reduce_sum(bad, self.dist)
        if float(bad) > 0:
            cfg, st = self.cfg, self.state
            hint = "--lr" + (f", or amp='none' instead of {cfg.amp!r}" if cfg.amp != "none" else "")
            raise NonFiniteLossError(
                f"non-finite loss in optimizer step {st.global_step + 1} (epoch {st.epoch + 1}, "
                f"lr {self.current_lr():.4g}); training stopped and {self.kept_checkpoint()}. "
                f"Start a new run with a smaller learning rate ({hint})"
            )

    def kept_checkpoint(self) -> str:
        last = self.ckpt_dir / "last.pt"
        if last.is_file():
            return f"the last good checkpoint {last} is kept"
        return "no checkpoint was written yet"

    # ----------------------------------------------------------------------- end of an epoch

    def sync_buffers(self) -> None:
        """Make every rank's BN running statistics rank 0's: DDP broadcasts buffers only at the
        start of a forward pass, so after the last step they differ, and evaluation and
        checkpoints must see one set."""
        if self.dist.distributed:
            import torch.distributed as tdist

            for b in self.model.buffers():
                tdist.broadcast(b, 0)

    def train_stats(self) -> dict[str, float]:
        """Train loss and accuracy of the epoch, over all ranks."""
        totals = self.state.partial.clone()
        all_reduce_sum(totals, self.dist)
        n_seen = max(1.0, float(totals[2]))
        return {"loss": float(totals[0]) / n_seen, "acc": 100.0 * float(totals[1]) / n_seen}

    def eval_due(self) -> bool:
        epoch = self.state.epoch + 1  # the epoch just trained
        return epoch % self.cfg.eval_every == 0 or epoch == self.cfg.epochs

    def evaluate(self) -> dict[str, Any]:
        """Validation metrics: each rank evaluates its shard, the sums are all-reduced."""
        try:
            val = evaluate(
                self.eval_model(),
                self.val_loader,
                device=self.device,
                amp=self.cfg.amp,
                channels_last=self.cfg.channels_last,
                dist_info=self.dist,
            )
        except Exception as exc:
            raise _clean_loader_error(exc) from None
        self.val_shard_n = val.pop("n_local", val["n"])
        return val

    def end_epoch(
        self, train_stats: dict[str, float], val: dict[str, Any], seconds: float, images: int
    ) -> None:
        """Close the epoch: state, metrics row, TensorBoard, log line, checkpoint."""
        st = self.state
        self.note_bad(val.pop("bad_files", []))
        is_best = st.finish_epoch(train_stats, val, key=self.best_key, higher=self.best_higher)
        row = self.csv_row(train_stats, val, seconds, images)
        if self.dist.is_main:
            rundir.append_csv(self.run_dir, row, self.csv_fields)
            st.metrics_rows += 1
            self.log_epoch(row, train_stats, val)
        self.save_checkpoint(is_best=is_best)

    def csv_row(
        self, train_stats: dict[str, float], val: dict[str, Any], seconds: float, images: int
    ) -> dict[str, Any]:
        """The epoch's row of metrics.csv (:attr:`csv_fields`): step, lr and timing, with the
        task's own columns from :meth:`metric_columns`."""
        st = self.state
        return {
            "epoch": st.epoch,
            "step": st.global_step,
            "lr": self.current_lr(),
            "train_loss": train_stats["loss"],
            **self.metric_columns(train_stats, val),
            "epoch_seconds": seconds,
            "img_per_s": images * self.dist.world_size / max(1e-9, seconds),
            "elapsed_seconds": st.elapsed(),
        }

    def metric_columns(self, train_stats: dict[str, float], val: dict[str, Any]) -> dict[str, Any]:
        """The classification columns of a metrics.csv row ("" where not measured)."""
        return {
            "train_acc": train_stats["acc"],
            "val_loss": val.get("loss", ""),
            "val_top1_err": val.get("top1_err", ""),
            "val_top5_err": "" if val.get("top5_err") is None else val["top5_err"],
            "val_acc": val.get("top1_acc", ""),
        }

    def log_epoch(
        self, row: dict[str, Any], train_stats: dict[str, float], val: dict[str, Any]
    ) -> None:
        epoch = self.state.epoch
        if self.tb is not None:
            self.tb.add_scalar("train/loss", train_stats["loss"], epoch)
            self.tb.add_scalar("train/acc", train_stats["acc"], epoch)
            if val:
                self.tb.add_scalar("val/top1_err", val["top1_err"], epoch)
                if val["top5_err"] is not None:
                    self.tb.add_scalar("val/top5_err", val["top5_err"], epoch)
                self.tb.add_scalar("val/loss", val["loss"], epoch)
            self.tb.flush()
        log.info(
            "epoch %d/%d: train loss %.4f acc %.2f%% | val top-1 err %s top-5 err %s | "
            "%.0f img/s, %.1fs",
            epoch,
            self.cfg.epochs,
            train_stats["loss"],
            train_stats["acc"],
            pct(val["top1_err"]) if val else "-",
            pct(val["top5_err"]) if val else "-",
            row["img_per_s"],
            row["epoch_seconds"],
        )

    # ----------------------------------------------------------------------- checkpoints

    def save_checkpoint(self, *, is_best: bool = False) -> None:
        """Write ``last.pt`` (and ``best.pt``) at the current position (collective: every rank
        calls it). Refused when any weight is non-finite, so the last checkpoint stays good."""
        self.gather_bad()
        self.sync_buffers()
        finite = torch.tensor(
            float(all(bool(torch.isfinite(p).all()) for p in self.model.parameters())),
            device=self.device,
        )
        all_reduce_sum(finite, self.dist)
        if int(finite.item()) != self.dist.world_size:
            st = self.state
            raise NonFiniteLossError(
                f"the weights became non-finite (epoch {st.epoch + 1}, step {st.global_step}); "
                f"stopped, {self.kept_checkpoint()}; lower --lr"
            )
        state = self.checkpoint_state()
        if state is not None:
            save_checkpoint(state, self.ckpt_dir / "last.pt")
            if is_best:
                save_checkpoint(state, self.ckpt_dir / "best.pt")
        barrier(self.dist)

    def checkpoint_state(self) -> dict[str, Any] | None:
        """Everything a checkpoint holds, on rank 0 (None elsewhere); collective."""
        total = self.state.partial.clone()
        all_reduce_sum(total, self.dist)
        # Every rank's RNG states: a resume with the same process count restores each one's.
        rngs = all_gather_objects(capture_rng_state(), self.dist)
        if not self.dist.is_main:
            return None
        return {
            "config": self.cfg.to_dict(),
            "meta": self.meta,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": (
                {k: v.detach().cpu() for k, v in self.ema.state_dict().items()}
                if self.ema is not None
                else None
            ),
            **self.state.state_dict(partial=total),
            "rng": rngs,
            "world_size": self.dist.world_size,
        }

    # ----------------------------------------------------------------------- unreadable files

    def note_bad(self, names: list[str] | tuple[str, ...]) -> None:
        """Record unreadable images; stop the run beyond ``max_bad``."""
        st = self.state
        for name in st.add_bad_files(names):
            log.warning("skipped unreadable image %s (%d so far)", name, len(st.bad_files))
        if len(st.bad_files) > self.cfg.max_bad:
            first = ", ".join(st.bad_files[:5])
            raise TrainingError(
                f"{len(st.bad_files)} unreadable images, more than max_bad={self.cfg.max_bad} "
                f"(first: {first}); fix or remove them, or raise max_bad"
            )

    def gather_bad(self) -> None:
        """Every rank's unreadable files on every rank (each loads other images)."""
        if self.dist.distributed:
            merged: list[str] = []
            for lst in all_gather_objects(self.state.bad_files, self.dist):
                merged.extend(lst)
            self.note_bad(merged)

    # ----------------------------------------------------------------------- the end

    def finish(self, resumed: bool) -> dict[str, Any]:
        """Final weights, summary and (optionally) per-rank summaries."""
        self.gather_bad()
        summary = self.summary(resumed)
        if self.dist.is_main:
            self.write_final(summary)
        if self.cfg.rank_summaries:
            self.write_rank_summary()
        barrier(self.dist)
        return summary

    def summary(self, resumed: bool) -> dict[str, Any]:
        """summary.json's content: the run, model, data, schedule, timing and provenance, with
        the task's own results from :meth:`summary_results`."""
        cfg, st, data = self.cfg, self.state, self.data
        params, macs = self.counts()
        summary = {
            "run_dir": str(self.run_dir),
            "model": cfg.model,
            "model_overrides": self.meta["model_overrides"],
            "data": cfg.data,
            "image_size": data.image_size,
            "num_classes": self.num_classes,
            "classes": list(data.classes) if data.classes else None,
            "params": params,
            "macs": macs,
            "epochs_done": st.epoch,
            "steps": st.global_step,
            "global_batch": cfg.batch_size,
            "world_size": self.dist.world_size,
            "lr": cfg.effective_lr(),
            "seconds": round(st.elapsed(), 2),
            "train_loss": st.last_train().get("loss"),
            **self.summary_results(st.last_val(), st.last_train()),
            "best": st.best,
            "bad_images": len(st.bad_files),
            "bad_files": st.bad_files[:20],
            "resumed": resumed,
            "torch": torch.__version__,
            "python": platform.python_version(),
        }
        if self.provenance:
            summary["init"] = self.provenance
        return summary

    def counts(self) -> tuple[int, int]:
        """The model's parameters and MACs per image."""
        return int(self.cx.params), int(self.cx.macs)

    def summary_results(self, val: dict[str, Any], train_stats: dict[str, float]) -> dict[str, Any]:
        """The classification results of summary.json."""
        return {
            "train_acc": train_stats.get("acc"),
            "top1_err": val.get("top1_err"),
            "top5_err": val.get("top5_err"),
            "val_loss": val.get("loss"),
            "val_acc": val.get("top1_acc"),
            "val_n": val.get("n"),
        }

    def write_final(self, summary: dict[str, Any]) -> None:
        cfg, meta = self.cfg, self.meta
        save_weights(
            self.eval_model(),
            self.run_dir / "model.safetensors",
            name=cfg.model,
            overrides=dict(cfg.model_overrides),
            classes=meta["classes"],
            preprocess=default_preprocess(
                meta["image_size"], cfg.data, meta["mean"], meta["std"]
            ).to_dict(),
            provenance={"trained_in": str(self.run_dir), **self.provenance},
            extra={
                "sknet_image_size": str(meta["image_size"]),
                "sknet_data": cfg.data,
                "sknet_mean": json.dumps(meta["mean"]),
                "sknet_std": json.dumps(meta["std"]),
                "sknet_train_config": json.dumps(cfg.to_dict()),
            },
        )
        rundir.write_summary(self.run_dir, summary)
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        log.info("finished: val top-1 err %s; wrote %s", pct(summary["top1_err"]), self.run_dir)

    def write_rank_summary(self) -> None:
        """``ranks/rank<R>.json``: this rank's metrics, shard size and weights digest (tests
        compare them across ranks)."""
        rank_dir = self.run_dir / "ranks"
        rank_dir.mkdir(parents=True, exist_ok=True)
        info = {
            "rank": self.dist.rank,
            "world_size": self.dist.world_size,
            "weights_sha256": weights_digest(self.model),
            "val": self.state.last_val(),
            "val_shard_n": self.val_shard_n,
            "train": self.state.last_train(),
        }
        (rank_dir / f"rank{self.dist.rank}.json").write_text(json.dumps(info, indent=2))


#: The trainer of each ``TrainConfig.task`` (:mod:`sknet.train.dense` adds the dense tasks).
TRAINER_CLASSES: dict[str, type[_Trainer]] = {"classify": _Trainer}


def train(
    cfg: TrainConfig,
    run_dir: str | os.PathLike,
    resume: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` and return the summary (also written to summary.json).

    Args:
        cfg: the configuration (see :func:`sknet.train.load_preset`). With ``cfg.init`` the
            model starts from those weights (see :mod:`sknet.train.finetune`).
        run_dir: output directory; must not already hold a run unless ``resume``.
        resume: continue the run in ``run_dir`` from ``checkpoints/last.pt`` (from scratch when
            no checkpoint was written yet). ``cfg`` must equal the run's ``config.toml`` except
            for :data:`RESUME_MUTABLE_KEYS`.
        progress: show a tqdm progress bar (rank 0).

    Returns:
        dict with ``run_dir``, ``top1_err``/``top5_err`` (final val, in %), ``val_acc``,
        ``val_loss``, ``train_loss``, ``train_acc``, ``params``, ``macs``, ``epochs_done``,
        ``steps``, ``seconds``, ``best`` (epoch and errors of the best epoch), ``bad_images``,
        ``init`` (fine-tuned runs: where the initial weights came from) ...

    Raises:
        NonFiniteLossError: the loss became NaN/inf (the last good checkpoint is kept).
        ValueError, FileNotFoundError, TypeError: invalid config or data.

    Global state: thread count and determinism flags are set for the call and restored after;
    the global RNGs of torch/numpy/random are re-seeded (from ``cfg.seed``) and left as training
    leaves them. Under torchrun the process group is created and destroyed here unless the
    caller created it.
    """
    if not isinstance(cfg, TrainConfig):
        raise InputTypeError(f"train() needs a TrainConfig, got {type(cfg).__name__}")
    cfg = apply_overrides(cfg, {}, source="config")  # re-validate
    run_dir = Path(run_dir)
    dist = setup_distributed(cfg.device)
    lock = RunLock(run_dir)
    existed = run_dir.exists()
    try:
        # What init determines is resolved before anything is written (rank 0 reads it).
        cfg = _on_main(lambda: resolve_init(cfg), dist)
        # Rank 0 holds an exclusive lock on the run directory for the whole run, taken before
        # the directory is checked, so that two processes can never write one run.
        _on_main(lambda: rundir.lock_and_check(lock, run_dir, resume, existed), dist)
        with _engine_state(cfg, dist.device):
            log_path = run_dir / "train.log" if dist.is_main else None
            try:
                with rundir.run_log(log_path):
                    trainer = TRAINER_CLASSES[cfg.task](cfg, run_dir, dist, progress)
                    try:
                        return trainer.run(resume)
                    finally:
                        if trainer.tb is not None:
                            trainer.tb.close()
            except BaseException:
                if dist.is_main and not resume:
                    rundir.remove_failed_start(run_dir, existed)
                raise
    finally:
        lock.release()
        cleanup_distributed(dist)

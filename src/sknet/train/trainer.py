"""The training loop: plain PyTorch, DDP under torchrun, exact resume, atomic checkpoints.

Run directory layout (written by rank 0)::

    RUN_DIR/config.toml          resolved TrainConfig (load it with --config to repeat the run)
    RUN_DIR/metrics.csv          one row per epoch: lr, train loss/acc, val loss/top-1/top-5
    RUN_DIR/tb/                  TensorBoard events (if tensorboard is importable)
    RUN_DIR/checkpoints/last.pt  latest checkpoint (every ``checkpoint_every`` steps and epoch)
    RUN_DIR/checkpoints/best.pt  checkpoint of the epoch with the lowest val top-1 error
    RUN_DIR/model.safetensors    final weights, self-describing (sknet.weights.load_weights)
    RUN_DIR/summary.json         final metrics, params, MACs, time (and summary.txt)
    RUN_DIR/train.log            the log

Interruption and resume: checkpoints are written atomically every ``checkpoint_every`` optimizer
steps and at every epoch end, with the model, optimizer (and fp16 scaler) state, the position
(epoch, step in the epoch, global step), the partial epoch metrics and the RNG states of
Python/NumPy/torch of every rank. The sample order of an epoch and each sample's augmentation are
pure functions of ``(seed, epoch, index)``, so ``--resume`` skips the consumed samples and
continues from the last checkpoint; the steps done after it are recomputed. With
``deterministic=True`` and a fixed thread count the result on the CPU is bit-identical to an
uninterrupted run (tested); on GPUs it is as reproducible as cuDNN/NCCL make it. A NaN/inf loss
stops the run (``NonFiniteLossError``): on the CPU before the bad step is applied, on GPUs
within ``log_every`` steps (checked without a per-step sync); checkpoints are only written when
all weights are finite, so the last one is kept good.

Departures from the paper's training description (which gives only the optimiser, batch,
schedule, weight decay, label smoothing and augmentation): weight decay applies to all
parameters (BN and biases included, as in the 2019 reference implementations); ``batch_size`` is
the global batch and the learning rate follows the linear scaling rule relative to
``lr_reference_batch``; the optional warm-up is linear from ``lr / warmup_steps``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from sknet._files import RunLock, atomic_write_text
from sknet.errors import RunDirError
from sknet.train.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from sknet.train.config import TrainConfig, apply_overrides
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
from sknet.train.pipeline import (
    DataBundle,
    PositionedSampler,
    build_data,
    eval_loader,
    loader_kwargs,
)

__all__ = ["NonFiniteLossError", "learning_rate", "train", "weights_digest"]

log = logging.getLogger("sknet.train")

#: Config keys that may differ when resuming (they do not change the computation).
RESUME_MUTABLE_KEYS = frozenset(
    {
        "workers",
        "log_every",
        "tensorboard",
        "device",
        "threads",
        "eval_batch_size",
        "rank_summaries",
        "description",
        "preset",
        "cache_data",
        "data_dir",
    }
)

CSV_FIELDS = (
    "epoch",
    "step",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_top1_err",
    "val_top5_err",
    "val_acc",
    "epoch_seconds",
    "img_per_s",
    "elapsed_seconds",
)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


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


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over the state dict (names, dtypes, shapes and bytes): equal iff bit-identical."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# engine state (restored after each call of train)
# ---------------------------------------------------------------------------------------------


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
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
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


@contextlib.contextmanager
def _run_log(path: Path | None) -> Iterator[None]:
    """Mirror the ``sknet`` loggers into ``path`` (rank 0) for the duration of the run."""
    if path is None:
        yield
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    targets = [logging.getLogger("sknet.train"), logging.getLogger("sknet.data")]
    old_levels = [lg.level for lg in targets]
    for lg in targets:
        lg.addHandler(handler)
        if lg.getEffectiveLevel() > logging.INFO:
            lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, lvl in zip(targets, old_levels):
            lg.removeHandler(handler)
            lg.setLevel(lvl)
        handler.close()


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


def _tensorboard(log_dir: Path, purge_step: int | None) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception as exc:  # ImportError (tensorboard missing) or its own import errors
        log.info("TensorBoard logging skipped (tensorboard not importable: %s)", exc)
        return None
    return SummaryWriter(str(log_dir), purge_step=purge_step)


def _model_meta(cfg: TrainConfig, model: nn.Module, data: DataBundle) -> dict[str, Any]:
    from sknet.train.config import _plain

    from sknet.weights import arch_config_of

    return {
        "model": cfg.model,
        "num_classes": int(model.num_classes),
        "in_chans": int(model.in_chans),
        "model_overrides": _plain(dict(cfg.model_overrides)),
        "arch": arch_config_of(model),
        "classes": list(data.classes) if data.classes else None,
        "image_size": int(data.image_size),
        "data": cfg.data,
        "mean": [float(x) for x in data.mean],
        "std": [float(x) for x in data.std],
    }


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    if resume:
        if not (run_dir / "config.toml").is_file():
            raise FileNotFoundError(
                f"cannot resume: {run_dir} is not a run directory (no config.toml)"
            )
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run directory {run_dir} exists and is not a directory")
    taken = [
        p for p in ("config.toml", "checkpoints", "model.safetensors") if (run_dir / p).exists()
    ]
    if taken:
        raise ValueError(
            f"{run_dir} already holds a run ({', '.join(taken)}); resume it with --resume "
            f"{run_dir} or choose another --out"
        )


def _refuse_results_without_checkpoint(run_dir: Path) -> None:
    """A run that has results but no ``last.pt`` must not silently restart over them."""
    results = [
        p
        for p in ("model.safetensors", "summary.json", "checkpoints/best.pt")
        if (run_dir / p).exists()
    ]
    metrics = run_dir / "metrics.csv"
    if metrics.is_file() and len(metrics.read_text(encoding="utf-8").splitlines()) > 1:
        results.append("metrics.csv")
    if results:
        raise RunDirError(
            f"cannot resume {run_dir}: it holds results ({', '.join(results)}) but no "
            "checkpoints/last.pt, so resuming would retrain from scratch over them; restore "
            "the checkpoint, or start a new run with another --out"
        )


def _check_resume_config(saved: dict[str, Any], cfg: TrainConfig) -> None:
    now = cfg.to_dict()
    diff = sorted(
        k
        for k in set(saved) | set(now)
        if k not in RESUME_MUTABLE_KEYS and saved.get(k) != now.get(k)
    )
    if diff:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff[:6])
        raise ValueError(
            f"cannot resume with a different config ({shown}); only "
            f"{', '.join(sorted(RESUME_MUTABLE_KEYS))} may change"
        )


def _on_main(fn: Any, dist: DistInfo) -> Any:
    """Run ``fn`` on rank 0 and give every rank its result, or raise its error on every rank."""
    if not dist.distributed:
        return fn()
    result: Any = None
    error: tuple[str, str] | None = None
    if dist.is_main:
        try:
            result = fn()
        except (ValueError, TypeError, FileNotFoundError, KeyError, RuntimeError) as exc:
            error = (type(exc).__name__, str(exc))
    result, error = broadcast_object((result, error), dist)
    if error is not None:
        kind = {"TypeError": TypeError, "FileNotFoundError": FileNotFoundError}.get(
            error[0], ValueError if error[0] != "RuntimeError" else RuntimeError
        )
        raise kind(error[1])
    return result


def _all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------


class _Run:
    """State of one call of :func:`train` (kept in one object so checkpoints are complete)."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, dist: DistInfo, progress: bool) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.dist = dist
        self.progress = progress and dist.is_main
        self.ckpt_dir = run_dir / "checkpoints"
        self.bad_files: list[str] = []
        self._bad_set: set[str] = set()
        self.tb: Any = None
        self.provenance: dict[str, Any] = {}  # where the initial weights came from

    # -------------------------------------------------------------- helpers

    def note_bad(self, names: list[str] | tuple[str, ...]) -> None:
        for entry in names:
            for name in entry.split("\n") if entry else ():
                if name and name not in self._bad_set:
                    self._bad_set.add(name)
                    self.bad_files.append(name)
                    log.warning(
                        "skipped unreadable image %s (%d so far)", name, len(self.bad_files)
                    )
        if len(self.bad_files) > self.cfg.max_bad:
            first = ", ".join(self.bad_files[:5])
            raise RuntimeError(
                f"{len(self.bad_files)} unreadable images, more than max_bad={self.cfg.max_bad} "
                f"(first: {first}); fix or remove them, or raise max_bad"
            )

    def gather_bad(self) -> None:
        if self.dist.distributed:
            merged: list[str] = []
            for lst in all_gather_objects(self.bad_files, self.dist):
                merged.extend(lst)
            self.note_bad(merged)

    def sync_buffers(self, module: nn.Module) -> None:
        """Make every rank's BN running statistics rank 0's (DDP only syncs them on forward)."""
        if self.dist.distributed:
            import torch.distributed as tdist

            for b in module.buffers():
                tdist.broadcast(b, 0)

    # -------------------------------------------------------------- main

    def run(self, resume: bool) -> dict[str, Any]:
        cfg, dist, run_dir = self.cfg, self.dist, self.run_dir
        t_start = time.perf_counter()
        device = dist.device
        if cfg.amp == "fp16" and device.type != "cuda":
            raise ValueError("amp='fp16' needs a CUDA device; use amp='bf16' on the CPU")
        if cfg.sync_bn and dist.distributed and device.type != "cuda":
            raise ValueError("sync_bn needs CUDA devices (SyncBatchNorm has no CPU kernels)")
        mb = cfg.micro_batch(dist.world_size)

        # ---- checkpoint to resume from (rank 0 reads, everyone receives)
        def read_checkpoint() -> dict[str, Any] | None:
            if not resume:
                return None
            for stale in self.ckpt_dir.glob(".*.tmp"):  # left by a kill during a save
                stale.unlink(missing_ok=True)
            last = self.ckpt_dir / "last.pt"
            if not last.is_file():
                _refuse_results_without_checkpoint(run_dir)
                log.info("no checkpoint in %s yet: starting from scratch", run_dir)
                return None
            state = load_checkpoint(last)
            _check_resume_config(state["config"], cfg)
            return state

        ckpt: dict[str, Any] | None = _on_main(read_checkpoint, dist)

        # ---- data
        data = build_data(cfg)
        num_classes = cfg.num_classes or data.num_classes
        if cfg.num_classes and cfg.num_classes != data.num_classes:
            raise ValueError(
                f"num_classes={cfg.num_classes} but {cfg.data} has {data.num_classes} classes"
            )

        # ---- model (same initialisation on every rank)
        from sknet import complexity, create_model

        seed_everything(cfg.seed)
        model = create_model(cfg.model, num_classes=num_classes, **dict(cfg.model_overrides))
        if data.image_size < model.min_input_size:
            raise ValueError(
                f"image_size {data.image_size} is below {cfg.model}'s minimum input "
                f"{model.min_input_size}"
            )
        cx = complexity(model, data.image_size)
        meta = _model_meta(cfg, model, data)
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
        model.to(device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        if cfg.sync_bn and dist.distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif cfg.sync_bn:
            log.info("sync_bn ignored: a single process")
        net: nn.Module = model
        if dist.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        seed_everything(cfg.seed + dist.rank)  # per-rank streams from here on

        optimizer: torch.optim.Optimizer
        if cfg.optimizer == "adamw":
            optimizer = torch.optim.AdamW(
                model.parameters(), lr=cfg.effective_lr(), weight_decay=cfg.weight_decay
            )
        else:
            optimizer = torch.optim.SGD(
                model.parameters(),
                lr=cfg.effective_lr(),
                momentum=cfg.momentum,
                nesterov=cfg.nesterov,
                weight_decay=cfg.weight_decay,
            )
        scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None
        criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

        sampler = PositionedSampler(data.train, dist.world_size, dist.rank, seed=cfg.seed)
        micro_per_epoch = (sampler.num_samples // mb) // cfg.grad_accum * cfg.grad_accum
        steps_per_epoch = micro_per_epoch // cfg.grad_accum
        if steps_per_epoch < 1:
            raise ValueError(
                f"{len(data.train)} training samples give no full batch of {cfg.batch_size}; "
                "lower batch_size or raise num_samples"
            )

        # ---- position
        epoch, step_in_epoch, global_step, rows, elapsed_before = 0, 0, 0, 0, 0.0
        best: dict[str, Any] = {"epoch": None, "top1_err": None}
        partial = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, n
        history: list[dict[str, Any]] = []
        if ckpt is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
            if scaler is not None and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            pos = ckpt["position"]
            epoch, step_in_epoch, global_step = (
                pos["epoch"],
                pos["step_in_epoch"],
                pos["global_step"],
            )
            rows, elapsed_before = int(ckpt["metrics_rows"]), float(ckpt["elapsed"])
            best = dict(ckpt["best"])
            history = list(ckpt.get("history", []))
            self.bad_files = list(ckpt.get("bad_files", []))
            self._bad_set = set(self.bad_files)
            if dist.is_main:
                partial += ckpt["partial"].to(device)
            rng = ckpt["rng"]
            if int(ckpt["world_size"]) == dist.world_size:
                restore_rng_state(rng[dist.rank])
            else:
                log.warning(
                    "resuming with %d processes (checkpoint: %d): the remaining samples of epoch "
                    "%d are split differently, so the result is not bit-identical",
                    dist.world_size,
                    ckpt["world_size"],
                    epoch + 1,
                )
            log.info(
                "resuming %s at epoch %d, step %d/%d (global step %d)",
                run_dir,
                epoch + 1,
                step_in_epoch,
                steps_per_epoch,
                global_step,
            )

        # ---- outputs
        if dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                try:  # exclusive creation: two runs never share a directory
                    with open(run_dir / "config.toml", "x", encoding="utf-8") as fh:
                        fh.write(cfg.to_toml())
                except FileExistsError:
                    raise ValueError(
                        f"{run_dir} was taken by another run meanwhile; choose another --out"
                    ) from None
            self._prepare_csv(rows)
            if cfg.tensorboard:
                self.tb = _tensorboard(run_dir / "tb", global_step if ckpt is not None else None)
            log.info(
                "%s: %s params, %.1f MMACs at %dpx | %s: %d train / %d val images, %d classes",
                cfg.model,
                f"{cx.params:,}",
                cx.macs / 1e6,
                data.image_size,
                cfg.data,
                len(data.train),
                len(data.val),
                num_classes,
            )
            log.info(
                "%d epochs x %d steps, global batch %d (%d per process x %d processes x %d "
                "accumulation), lr %.4g (%s), device %s",
                cfg.epochs,
                steps_per_epoch,
                cfg.batch_size,
                mb,
                dist.world_size,
                cfg.grad_accum,
                cfg.effective_lr(),
                cfg.schedule,
                device,
            )
        barrier(dist)

        amp_ctx = _amp_factory(cfg.amp, device)
        eval_bs = cfg.eval_batch_size or 2 * mb
        val_loader = eval_loader(data.val, eval_bs, dist.rank, dist.world_size, cfg.workers, device)
        val: dict[str, Any] = next((dict(h["val"]) for h in reversed(history) if h["val"]), {})
        train_stats: dict[str, float] = dict(history[-1]["train"]) if history else {}
        nonfinite = torch.zeros((), dtype=torch.float32, device=device)
        check_every = 1 if device.type == "cpu" else cfg.log_every

        def checkpoint_state(pos_epoch: int, pos_step: int) -> dict[str, Any] | None:
            """Gather what a checkpoint needs (collective: call on every rank)."""
            total = partial.clone()
            all_reduce_sum(total, dist)
            rngs = all_gather_objects(capture_rng_state(), dist)
            bad = self.bad_files
            if not dist.is_main:
                return None
            return {
                "config": cfg.to_dict(),
                "meta": meta,
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "position": {
                    "epoch": pos_epoch,
                    "step_in_epoch": pos_step,
                    "global_step": global_step,
                },
                "partial": total.cpu(),
                "metrics_rows": rows,
                "elapsed": elapsed_before + time.perf_counter() - t_start,
                "best": best,
                "history": history,
                "bad_files": list(bad),
                "rng": rngs,
                "world_size": dist.world_size,
            }

        def write_checkpoint(pos_epoch: int, pos_step: int, *, is_best: bool = False) -> None:
            self.gather_bad()
            self.sync_buffers(model)
            finite = torch.tensor(float(_all_finite(model)), device=device)
            all_reduce_sum(finite, dist)
            if int(finite.item()) != dist.world_size:
                last = self.ckpt_dir / "last.pt"
                kept = (
                    f"the last good checkpoint {last} is kept"
                    if last.is_file()
                    else "no checkpoint was written yet"
                )
                raise NonFiniteLossError(
                    f"the weights became non-finite (epoch {epoch + 1}, step {global_step}); "
                    f"stopped, {kept}; lower --lr"
                )
            state = checkpoint_state(pos_epoch, pos_step)
            if state is not None:
                save_checkpoint(state, self.ckpt_dir / "last.pt")
                if is_best:
                    save_checkpoint(state, self.ckpt_dir / "best.pt")
            barrier(dist)

        def check_finite(loss_value: float | None = None) -> None:
            bad = nonfinite.clone()
            all_reduce_sum(bad, dist)
            if float(bad) > 0:
                last = self.ckpt_dir / "last.pt"
                kept = (
                    f"the last good checkpoint {last} is kept"
                    if last.is_file()
                    else "no checkpoint was written yet"
                )
                hint = "--lr" + (
                    f", or amp='none' instead of {cfg.amp!r}" if cfg.amp != "none" else ""
                )
                raise NonFiniteLossError(
                    f"non-finite loss in optimizer step {global_step + 1} (epoch {epoch + 1}, lr "
                    f"{optimizer.param_groups[0]['lr']:.4g}); training stopped and {kept}. "
                    f"Start a new run with a smaller learning rate ({hint})"
                )

        # ---- epochs
        while epoch < cfg.epochs:
            start_micro = step_in_epoch * cfg.grad_accum
            sampler.set_position(epoch, start_micro * mb)
            loader = DataLoader(
                data.train,
                batch_size=mb,
                sampler=sampler,
                drop_last=True,
                **loader_kwargs(cfg.workers, device),
            )
            net.train()
            t_epoch = time.perf_counter()
            t_win, n_win = t_epoch, 0
            bar = None
            if self.progress:
                from tqdm.auto import tqdm

                bar = tqdm(
                    total=steps_per_epoch,
                    initial=step_in_epoch,
                    desc=f"epoch {epoch + 1}/{cfg.epochs}",
                    dynamic_ncols=True,
                    leave=True,
                )
            micro = start_micro
            it = iter(loader)
            try:
                while micro < micro_per_epoch:
                    try:
                        images, labels, bad = next(it)
                    except StopIteration:  # pragma: no cover - guarded by micro_per_epoch
                        break
                    except Exception as exc:
                        raise _clean_loader_error(exc) from None
                    if any(bad):
                        self.note_bad(list(bad))
                    first = micro % cfg.grad_accum == 0
                    last_micro = (micro + 1) % cfg.grad_accum == 0
                    if first:
                        lr = learning_rate(cfg, global_step, epoch, steps_per_epoch)
                        for g in optimizer.param_groups:
                            g["lr"] = lr
                    images = images.to(device, non_blocking=True)
                    labels = labels.to(device, non_blocking=True)
                    if cfg.channels_last:
                        images = images.contiguous(memory_format=torch.channels_last)
                    sync_ctx = (
                        net.no_sync()
                        if dist.distributed and not last_micro
                        else contextlib.nullcontext()
                    )
                    with sync_ctx:
                        with amp_ctx():
                            logits = net(images)
                            loss = criterion(logits.float(), labels)
                        scaled = loss / cfg.grad_accum
                        if scaler is not None:
                            scaler.scale(scaled).backward()
                        else:
                            scaled.backward()
                    with torch.no_grad():
                        ld = loss.detach()
                        nonfinite += (~torch.isfinite(ld)).float()
                        partial[0] += ld.double() * labels.numel()
                        partial[1] += (logits.detach().argmax(1) == labels).sum()
                        partial[2] += labels.numel()
                    micro += 1
                    n_win += labels.numel()
                    if not last_micro:
                        continue
                    if global_step % check_every == 0:
                        check_finite()
                    if scaler is not None:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    global_step += 1
                    step_in_epoch += 1
                    if step_in_epoch % cfg.log_every == 0 or step_in_epoch == steps_per_epoch:
                        check_finite()
                        now = time.perf_counter()
                        ips = n_win * dist.world_size / max(1e-9, now - t_win)
                        t_win, n_win = now, 0
                        if dist.is_main:
                            loss_v = float(ld)
                            if bar is not None:
                                acc = float(partial[1] / partial[2].clamp(min=1)) * 100
                                bar.set_postfix(
                                    loss=f"{loss_v:.3f}",
                                    acc=f"{acc:.1f}%",
                                    img_s=f"{ips:.0f}",
                                    lr=f"{lr:.3g}",
                                    refresh=False,
                                )
                            if self.tb is not None:
                                self.tb.add_scalar("train/loss_step", loss_v, global_step)
                                self.tb.add_scalar("train/lr", lr, global_step)
                                self.tb.add_scalar("train/img_per_s", ips, global_step)
                    if bar is not None:
                        bar.update(1)
                    if (
                        cfg.checkpoint_every
                        and global_step % cfg.checkpoint_every == 0
                        and step_in_epoch < steps_per_epoch
                    ):
                        check_finite()
                        write_checkpoint(epoch, step_in_epoch)
            finally:
                if bar is not None:
                    bar.close()
                del it
            check_finite()

            # ---- end of epoch: metrics, evaluation, checkpoint
            epoch_seconds = time.perf_counter() - t_epoch
            self.sync_buffers(model)
            totals = partial.clone()
            all_reduce_sum(totals, dist)
            n_seen = max(1.0, float(totals[2]))
            train_stats = {
                "loss": float(totals[0]) / n_seen,
                "acc": 100.0 * float(totals[1]) / n_seen,
            }
            images_epoch = (micro_per_epoch - start_micro) * mb * dist.world_size
            ips_epoch = images_epoch / max(1e-9, epoch_seconds)
            val_now: dict[str, Any] = {}
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                try:
                    val_now = evaluate(
                        model,
                        val_loader,
                        device=device,
                        amp=cfg.amp,
                        channels_last=cfg.channels_last,
                        dist_info=dist,
                    )
                except Exception as exc:
                    raise _clean_loader_error(exc) from None
            epoch += 1
            step_in_epoch = 0
            partial.zero_()
            self.note_bad(val_now.pop("bad_files", []))
            if val_now:
                val = val_now
            is_best = bool(val_now) and (
                best["top1_err"] is None or val_now["top1_err"] < best["top1_err"]
            )
            if is_best:
                best = {"epoch": epoch, "top1_err": val["top1_err"], "top5_err": val["top5_err"]}
            elapsed = elapsed_before + time.perf_counter() - t_start
            row = {
                "epoch": epoch,
                "step": global_step,
                "lr": optimizer.param_groups[0]["lr"],
                "train_loss": train_stats["loss"],
                "train_acc": train_stats["acc"],
                "val_loss": val_now.get("loss", ""),
                "val_top1_err": val_now.get("top1_err", ""),
                "val_top5_err": "" if val_now.get("top5_err") is None else val_now["top5_err"],
                "val_acc": val_now.get("top1_acc", ""),
                "epoch_seconds": epoch_seconds,
                "img_per_s": ips_epoch,
                "elapsed_seconds": elapsed,
            }
            history.append({"epoch": epoch, "train": train_stats, "val": dict(val_now)})
            if dist.is_main:
                self._append_csv(row)
                rows += 1
                if self.tb is not None:
                    self.tb.add_scalar("train/loss", train_stats["loss"], epoch)
                    self.tb.add_scalar("train/acc", train_stats["acc"], epoch)
                    if val_now:
                        self.tb.add_scalar("val/top1_err", val_now["top1_err"], epoch)
                        if val_now["top5_err"] is not None:
                            self.tb.add_scalar("val/top5_err", val_now["top5_err"], epoch)
                        self.tb.add_scalar("val/loss", val_now["loss"], epoch)
                    self.tb.flush()
                log.info(
                    "epoch %d/%d: train loss %.4f acc %.2f%% | val top-1 err %s top-5 err %s | "
                    "%.0f img/s, %.1fs",
                    epoch,
                    cfg.epochs,
                    train_stats["loss"],
                    train_stats["acc"],
                    _pct(val_now["top1_err"]) if val_now else "-",
                    _pct(val_now["top5_err"]) if val_now else "-",
                    ips_epoch,
                    epoch_seconds,
                )
            write_checkpoint(epoch, 0, is_best=is_best)

        # ---- final outputs
        self.gather_bad()
        seconds = elapsed_before + time.perf_counter() - t_start
        summary = {
            "run_dir": str(run_dir),
            "model": cfg.model,
            "model_overrides": meta["model_overrides"],
            "data": cfg.data,
            "image_size": data.image_size,
            "num_classes": num_classes,
            "classes": list(data.classes) if data.classes else None,
            "params": int(cx.params),
            "macs": int(cx.macs),
            "epochs_done": epoch,
            "steps": global_step,
            "global_batch": cfg.batch_size,
            "world_size": dist.world_size,
            "lr": cfg.effective_lr(),
            "seconds": round(seconds, 2),
            "train_loss": train_stats.get("loss"),
            "train_acc": train_stats.get("acc"),
            "top1_err": val.get("top1_err"),
            "top5_err": val.get("top5_err"),
            "val_loss": val.get("loss"),
            "val_acc": val.get("top1_acc"),
            "val_n": val.get("n"),
            "best": best,
            "bad_images": len(self.bad_files),
            "bad_files": self.bad_files[:20],
            "resumed": ckpt is not None,
            "torch": torch.__version__,
            "python": platform.python_version(),
        }
        if dist.is_main:
            self._write_final(model, cfg, meta, summary)
        if cfg.rank_summaries:
            rank_dir = run_dir / "ranks"
            rank_dir.mkdir(parents=True, exist_ok=True)
            rank_info = {
                "rank": dist.rank,
                "world_size": dist.world_size,
                "weights_sha256": weights_digest(model),
                "val": val,
                "train": train_stats,
            }
            (rank_dir / f"rank{dist.rank}.json").write_text(json.dumps(rank_info, indent=2))
        barrier(dist)
        return summary

    # -------------------------------------------------------------- files

    def _prepare_csv(self, rows: int) -> None:
        """Create metrics.csv, or cut it back to the ``rows`` epochs the checkpoint knows."""
        path = self.run_dir / "metrics.csv"
        kept: list[list[str]] = []
        if rows and path.is_file():
            with open(path, newline="", encoding="utf-8") as fh:
                kept = list(csv.reader(fh))[1 : rows + 1]
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(CSV_FIELDS)
            w.writerows(kept)

    def _append_csv(self, row: dict[str, Any]) -> None:
        path = self.run_dir / "metrics.csv"
        with open(path, "a", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
            fh.flush()
            os.fsync(fh.fileno())

    def _write_final(
        self, model: nn.Module, cfg: TrainConfig, meta: dict[str, Any], summary: dict[str, Any]
    ) -> None:
        from sknet.loading import default_preprocess
        from sknet.weights import save_weights

        extra = {
            "sknet_image_size": str(meta["image_size"]),
            "sknet_data": cfg.data,
            "sknet_mean": json.dumps(meta["mean"]),
            "sknet_std": json.dumps(meta["std"]),
            "sknet_train_config": json.dumps(cfg.to_dict()),
        }
        save_weights(
            model,
            self.run_dir / "model.safetensors",
            name=cfg.model,
            overrides=dict(cfg.model_overrides),
            classes=meta["classes"],
            preprocess=default_preprocess(
                meta["image_size"], cfg.data, meta["mean"], meta["std"]
            ).to_dict(),
            provenance={"trained_in": str(self.run_dir), **self.provenance},
            extra=extra,
        )
        atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        lines = [
            f"run        {summary['run_dir']}",
            f"model      {summary['model']} ({summary['params']:,} params, "
            f"{summary['macs'] / 1e6:.1f} MMACs at {summary['image_size']}px)",
            f"data       {summary['data']} ({summary['num_classes']} classes)",
            f"epochs     {summary['epochs_done']} ({summary['steps']} steps, global batch "
            f"{summary['global_batch']}, {summary['world_size']} process(es))",
            f"val        top-1 err {_pct(summary['top1_err'])}, top-5 err "
            f"{_pct(summary['top5_err'])} (accuracy {_pct(summary['val_acc'])}, "
            f"n={summary['val_n']})",
            f"best       epoch {summary['best'].get('epoch')}: top-1 err "
            f"{_pct(summary['best'].get('top1_err'))}",
            f"time       {summary['seconds']:.1f}s",
        ]
        if summary["bad_images"]:
            lines.append(f"skipped    {summary['bad_images']} unreadable image(s)")
        body = "\n".join(lines) + "\n"
        atomic_write_text(self.run_dir / "summary.txt", body)
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        log.info("finished: val top-1 err %s; wrote %s", _pct(summary["top1_err"]), self.run_dir)


def _pct(v: Any) -> str:
    """A percentage for logs; None is "n/a" (e.g. top-5 with 5 classes or fewer)."""
    return f"{v:.2f}%" if isinstance(v, (int, float)) else "n/a"


def _amp_factory(amp: str, device: torch.device) -> Any:
    if amp == "none":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def train(
    cfg: TrainConfig,
    run_dir: str | os.PathLike,
    resume: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` and return the summary (also written to summary.json).

    Args:
        cfg: the configuration (see :func:`sknet.train.load_preset`).
        run_dir: output directory; must not already hold a run unless ``resume``.
        resume: continue the run in ``run_dir`` from ``checkpoints/last.pt`` (from scratch when
            no checkpoint was written yet). ``cfg`` must equal the run's ``config.toml`` except
            for :data:`RESUME_MUTABLE_KEYS`.
        progress: show a tqdm progress bar (rank 0).

    Returns:
        dict with ``run_dir``, ``top1_err``/``top5_err`` (final val, in %), ``val_acc``,
        ``val_loss``, ``train_loss``, ``train_acc``, ``params``, ``macs``, ``epochs_done``,
        ``steps``, ``seconds``, ``best`` (epoch and errors of the best epoch), ``bad_images`` ...

    Raises:
        NonFiniteLossError: the loss became NaN/inf (the last good checkpoint is kept).
        ValueError, FileNotFoundError, TypeError: invalid config or data.

    Global state: thread count and determinism flags are set for the call and restored after;
    the global RNGs of torch/numpy/random are re-seeded (from ``cfg.seed``) and left as training
    leaves them. Under torchrun the process group is created and destroyed here unless the
    caller created it.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"train() needs a TrainConfig, got {type(cfg).__name__}")
    cfg = apply_overrides(cfg, {}, source="config")  # re-validate
    run_dir = Path(run_dir)
    dist = setup_distributed(cfg.device)
    lock = RunLock(run_dir)
    existed = run_dir.exists()
    try:
        # Rank 0 holds an exclusive lock on the run directory for the whole run, taken before
        # the directory is checked, so that two processes can never write one run.
        _on_main(lambda: _lock_and_check(lock, run_dir, resume, existed), dist)
        with _engine_state(cfg, dist.device):
            log_path = run_dir / "train.log" if dist.is_main else None
            try:
                with _run_log(log_path):
                    r = _Run(cfg, run_dir, dist, progress)
                    try:
                        return r.run(resume)
                    finally:
                        if r.tb is not None:
                            r.tb.close()
            except BaseException:
                if dist.is_main and not resume:
                    _remove_failed_start(run_dir, existed)
                raise
    finally:
        lock.release()
        cleanup_distributed(dist)


def _lock_and_check(lock: RunLock, run_dir: Path, resume: bool, existed: bool) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} exists and is not a directory")
    if resume and not existed:
        raise FileNotFoundError(
            f"cannot resume: {run_dir} is not a run directory (it does not exist)"
        )
    lock.acquire()
    try:
        _check_run_dir(run_dir, resume)
    except BaseException:
        lock.release()
        if not resume:
            _remove_failed_start(run_dir, existed)
        raise


def _remove_failed_start(run_dir: Path, existed: bool) -> None:
    """After a run failed before writing its config, leave no half-made run directory behind
    (only its log and lock file would be in it)."""
    if (run_dir / "config.toml").exists():
        return
    for name in ("train.log", ".lock"):
        (run_dir / name).unlink(missing_ok=True)
    if not existed:
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # only when empty

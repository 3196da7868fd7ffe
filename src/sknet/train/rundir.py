"""The run directory: the checks before a run writes into it, and the files it writes.

Layout (written by rank 0)::

    RUN_DIR/config.toml          resolved TrainConfig (load it with --config to repeat the run)
    RUN_DIR/metrics.csv          one row per epoch: lr, train loss/acc, val loss/top-1/top-5
    RUN_DIR/tb/                  TensorBoard events (if tensorboard is importable)
    RUN_DIR/checkpoints/last.pt  latest checkpoint (every ``checkpoint_every`` steps and epoch)
    RUN_DIR/checkpoints/best.pt  checkpoint of the epoch with the lowest val top-1 error
    RUN_DIR/model.safetensors    final weights, self-describing (sknet.load)
    RUN_DIR/summary.json         final metrics, params, MACs, time (and summary.txt)
    RUN_DIR/train.log            the log
    RUN_DIR/.lock                held (flock) by the process writing the run

A run never writes over another: a new run needs a directory without a run in it, a resume
needs the run's ``config.toml`` (and refuses to start over results without ``last.pt``), and
rank 0 holds :class:`~sknet._files.RunLock` for the whole run.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sknet._files import RunLock, atomic_write_text, path_error
from sknet.errors import ConfigError, MissingFileError, OutputError, RunDirError
from sknet.train.config import TrainConfig

__all__ = [
    "CSV_FIELDS",
    "RESUME_MUTABLE_KEYS",
    "append_csv",
    "check_resumable",
    "check_resume_config",
    "lock_and_check",
    "prepare_csv",
    "remove_failed_start",
    "run_log",
    "tensorboard_writer",
    "write_config",
    "write_dense_summary",
    "write_summary",
]

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

# ------------------------------------------------------------------------------------ checks


def check_resumable(run_dir: Path) -> None:
    """Raise ``FileNotFoundError`` unless ``run_dir`` holds a run (its ``config.toml``)."""
    if not run_dir.exists():
        raise MissingFileError(
            f"cannot resume: {run_dir} is not a run directory (it does not exist)"
        )
    if not (run_dir / "config.toml").is_file():
        raise MissingFileError(f"cannot resume: {run_dir} is not a run directory (no config.toml)")


def check_new_run_dir(run_dir: Path) -> None:
    """Raise ``ValueError`` when ``run_dir`` is a file or already holds a run."""
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputError(f"run directory {run_dir} exists and is not a directory")
    taken = [
        p for p in ("config.toml", "checkpoints", "model.safetensors") if (run_dir / p).exists()
    ]
    if taken:
        raise OutputError(
            f"{run_dir} already holds a run ({', '.join(taken)}); resume it with --resume "
            f"{run_dir} or choose another --out"
        )


def refuse_results_without_checkpoint(run_dir: Path) -> None:
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


def check_resume_config(saved: dict[str, Any], cfg: TrainConfig) -> None:
    """Raise ``ValueError`` when ``cfg`` differs from a checkpoint's config in a key that
    changes the computation. Keys a checkpoint lacks (added to sknet since) count as their
    defaults, which reproduce the behaviour of the version that wrote it."""
    saved = {**TrainConfig().to_dict(), **saved}
    now = cfg.to_dict()
    diff = sorted(
        k
        for k in set(saved) | set(now)
        if k not in RESUME_MUTABLE_KEYS and saved.get(k) != now.get(k)
    )
    if diff:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff[:6])
        raise ConfigError(
            f"cannot resume with a different config ({shown}); only "
            f"{', '.join(sorted(RESUME_MUTABLE_KEYS))} may change"
        )


def check_resume_overrides(keys: list[str]) -> None:
    """Raise ``ConfigError`` naming the override keys that a resume may not change."""
    fixed = sorted(k for k in keys if k.split(".")[0] not in RESUME_MUTABLE_KEYS)
    if fixed:
        raise ConfigError(
            f"cannot change {', '.join(fixed)} when resuming; only "
            f"{', '.join(sorted(RESUME_MUTABLE_KEYS))} may change"
        )


def lock_and_check(lock: RunLock, run_dir: Path, resume: bool, existed: bool) -> None:
    """Take the run lock, then check the directory (under the lock, so that two processes can
    never both pass the check); on failure leave no half-made directory behind."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} exists and is not a directory")
    if resume and not existed:
        check_resumable(run_dir)
    lock.acquire()
    try:
        if resume:
            check_resumable(run_dir)
        else:
            check_new_run_dir(run_dir)
    except BaseException:
        lock.release()
        if not resume:
            remove_failed_start(run_dir, existed)
        raise


def remove_failed_start(run_dir: Path, existed: bool) -> None:
    """After a run failed before writing its config, leave no half-made run directory behind
    (only its log and lock file would be in it)."""
    if (run_dir / "config.toml").exists():
        return
    for name in ("train.log", ".lock"):
        (run_dir / name).unlink(missing_ok=True)
    if not existed:
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # only when empty


# ------------------------------------------------------------------------------------ files


def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    """Write ``config.toml`` with exclusive creation: two runs never share a directory."""
    path = run_dir / "config.toml"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8") as fh:
            fh.write(cfg.to_toml())
    except FileExistsError:
        raise OutputError(
            f"{run_dir} was taken by another run meanwhile; choose another --out"
        ) from None
    except OSError as exc:  # a full disk, a read-only folder: name the file, say why
        path.unlink(missing_ok=True)
        raise path_error(exc, path) from exc


def prepare_csv(run_dir: Path, rows: int, fields: tuple[str, ...] = CSV_FIELDS) -> None:
    """Create metrics.csv, or cut it back to the ``rows`` epochs the checkpoint knows."""
    path = run_dir / "metrics.csv"
    kept: list[list[str]] = []
    try:
        if rows and path.is_file():
            with open(path, newline="", encoding="utf-8") as fh:
                kept = list(csv.reader(fh))[1 : rows + 1]
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)  # numbers only (see CSV_FIELDS): nothing to escape
            w.writerow(fields)
            w.writerows(kept)
    except OSError as exc:
        raise path_error(exc, path) from exc


def append_csv(run_dir: Path, row: dict[str, Any], fields: tuple[str, ...] = CSV_FIELDS) -> None:
    """Append one epoch's row and fsync it (a kill right after still keeps it). A full disk is
    an ``OSError`` naming the file ("No space left on device")."""
    path = run_dir / "metrics.csv"
    try:
        with open(path, "a", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise path_error(exc, path) from exc


def pct(v: Any) -> str:
    """A percentage for logs; None is "n/a" (e.g. top-5 with 5 classes or fewer)."""
    return f"{v:.2f}%" if isinstance(v, (int, float)) else "n/a"


def _write_summary_files(run_dir: Path, s: dict[str, Any], model: str, val: str, best: str) -> None:
    """``summary.json`` and its human-readable twin ``summary.txt`` (both atomic); ``model``,
    ``val`` and ``best`` are the task's own lines."""
    atomic_write_text(run_dir / "summary.json", json.dumps(s, indent=2) + "\n")
    lines = [
        f"run        {s['run_dir']}",
        f"model      {model} ({s['params']:,} params, "
        f"{s['macs'] / 1e6:.1f} MMACs at {s['image_size']}px)",
        f"data       {s['data']} ({s['num_classes']} classes)",
        f"epochs     {s['epochs_done']} ({s['steps']} steps, global batch "
        f"{s['global_batch']}, {s['world_size']} process(es))",
        f"val        {val}",
        f"best       {best}",
        f"time       {s['seconds']:.1f}s",
    ]
    if s.get("init"):
        lines.insert(2, f"init       {s['init'].get('init')}")
    if s["bad_images"]:
        lines.append(f"skipped    {s['bad_images']} unreadable image(s)")
    atomic_write_text(run_dir / "summary.txt", "\n".join(lines) + "\n")


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """``summary.json`` and ``summary.txt`` of a classification run."""
    s = summary
    _write_summary_files(
        run_dir,
        s,
        model=s["model"],
        val=f"top-1 err {pct(s['top1_err'])}, top-5 err {pct(s['top5_err'])} "
        f"(accuracy {pct(s['val_acc'])}, n={s['val_n']})",
        best=f"epoch {s['best'].get('epoch')}: top-1 err {pct(s['best'].get('top1_err'))}",
    )


def write_dense_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """``summary.json`` and ``summary.txt`` of a detection or segmentation run."""
    s, val = summary, summary.get("val") or {}

    def f(key: str) -> str:
        x = val.get(key)
        return f"{x:.2f}" if isinstance(x, (int, float)) else "n/a"

    if s["task"] == "segment":
        metrics = f"mIoU {f('miou')}%, pixel accuracy {f('pixel_acc')}%"
    else:
        bins = ", ".join(
            f"{b[0]} [{b[1]:g}, {'inf' if b[2] is None else format(b[2], 'g')}) px "
            f"{f('ap_' + b[0])}"
            for b in val.get("bins", [])
        )
        metrics = f"mAP {f('map')}, AP50 {f('ap50')}, AP75 {f('ap75')}; by size: {bins}"
    best = s["best"]
    best_key = next((k for k in best if k != "epoch"), "map")
    _write_summary_files(
        run_dir,
        s,
        model=f"{s['task']} {s['head']} over {s['model']}",
        val=f"{metrics} (n={val.get('n_images')})",
        best=f"epoch {best.get('epoch')}: {best_key} {best.get(best_key)}",
    )


# ------------------------------------------------------------------------------------ logs


@contextlib.contextmanager
def run_log(path: Path | None) -> Iterator[None]:
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


def tensorboard_writer(log_dir: Path, purge_step: int | None) -> Any:
    """A TensorBoard ``SummaryWriter``, or None (logged) when tensorboard is not importable."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception as exc:  # ImportError (tensorboard missing) or its own import errors
        log.info("TensorBoard logging skipped (tensorboard not importable: %s)", exc)
        return None
    return SummaryWriter(str(log_dir), purge_step=purge_step)

"""``sknet train``: train a model from a preset or a TOML config (default: the CPU demo).

Under ``torchrun`` the same command trains with DDP on every process (NCCL on GPUs, gloo on
CPUs); ``--out`` is then required so that all processes agree on the run directory.

Fine-tuning: ``--init SOURCE`` starts from trained weights (a run directory, weights file,
checkpoint or registry ``name.tag``); without ``--preset``/``--config`` it uses the ``finetune``
preset, whose model is the init weights' own architecture.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from sknet._files import check_out_arg
from sknet.cli import AMP_CHOICES, DEVICE_HELP, HelpFormatter, add_progress, show_progress
from sknet.data import DATASET_NAMES, DENSE_DATASET_NAMES, TASKS
from sknet.errors import ConfigError
from sknet.train import (
    list_presets,
    load_config_file,
    load_preset,
    parse_set_options,
    preset_path,
    train,
)
from sknet.train.config import DENSE_HEADS
from sknet.train.finetune import resolve_init
from sknet.train.rundir import check_resumable, check_resume_overrides

# First-class flags: (flag, config key, type, help)
_FLAGS: tuple[tuple[str, str, Any, str], ...] = (
    ("--task", "task", str, "classify (the paper's), or detect / segment (beyond the paper; "
     "default preset then: detect-demo / segment-demo)"),
    ("--head", "head", str, "detector or segmentation head (detect: fcos, retinanet, "
     "faster_rcnn, mask_rcnn; segment: fpn)"),
    ("--model", "model", str, "model name (sknet info --list); the backbone for detect/segment"),
    ("--epochs", "epochs", int, "number of epochs"),
    ("--batch-size", "batch_size", int, "global batch size (all processes x accumulation)"),
    ("--lr", "lr", float, "learning rate at lr_reference_batch (linear scaling)"),
    ("--data", "data", str, "training data"),
    ("--data-dir", "data_dir", str, "folder of real data (never downloaded)"),
    ("--image-size", "image_size", int, "training resolution (0: the data's default)"),
    ("--num-samples", "num_samples", int, "synthetic training images"),
    ("--seed", "seed", int, "random seed"),
    ("--workers", "workers", int, "DataLoader worker processes"),
    ("--threads", "threads", int, "torch CPU threads (0: torch's default)"),
    ("--amp", "amp", str, "autocast precision (fp16: CUDA only)"),
    ("--device", "device", str, DEVICE_HELP),
    ("--grad-accum", "grad_accum", int, "gradient accumulation micro-batches per step"),
    ("--checkpoint-every", "checkpoint_every", int, "optimizer steps between checkpoints"),
    ("--init", "init", str, "start from these weights (run dir, .safetensors, checkpoint, "
     "registry name.tag); default preset then: finetune"),
    ("--freeze-stages", "freeze_stages", int, "freeze the stem (0) and the first N stages "
     "(their BN in eval mode); -1: nothing"),
    ("--backbone-lr-scale", "backbone_lr_scale", float, "learning-rate factor of everything "
     "but the classifier (e.g. 0.1)"),
)  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (no arguments: the built-in CPU demo on synthetic data)",
        description=(
            "Train an SKNet-family model from a named preset (demo, cifar, imagenet, "
            "imagenet-light, finetune) or your own TOML config, writing a run directory with the "
            "resolved config, metrics.csv, TensorBoard events, checkpoints, final weights "
            "(model.safetensors) and summary.json. Without arguments it trains the demo. "
            "Options left out take the preset's values (see --show-config)."
        ),
        epilog=(
            "examples:\n"
            "  sknet train --out runs/demo\n"
            "  sknet train --preset cifar --data cifar10 --data-dir ~/data --out runs/c10\n"
            "  sknet train --print-preset imagenet > my.toml; sknet train --config my.toml\n"
            "  sknet train --set epochs=3 --set model_overrides.sk_aggregation=sum\n"
            "  sknet train --resume runs/demo\n"
            "  sknet train --task detect --head fcos --out runs/det   # synthetic-dense data\n"
            "  sknet train --task segment --data coco --data-dir my_coco --out runs/seg\n"
            "  sknet train --init runs/demo --data imagefolder --data-dir my_images --out runs/ft\n"
            "  torchrun --nproc-per-node 8 -m sknet.cli.main train --preset imagenet "
            "--data-dir /data/imagenet --out runs/sk50"
        ),
        formatter_class=HelpFormatter,
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--preset", default=None, help="named preset (default: demo; finetune with --init)"
    )
    src.add_argument("--config", default=None, metavar="FILE.toml", help="your own TOML config")
    src.add_argument(
        "--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run"
    )
    heads = tuple(h for hs in DENSE_HEADS.values() for h in hs)
    choices = {
        "data": DATASET_NAMES + DENSE_DATASET_NAMES,
        "amp": AMP_CHOICES,
        "task": TASKS,
        "head": heads,
    }
    for flag, key, typ, help_ in _FLAGS:
        p.add_argument(
            flag,
            dest=f"cfg_{key}",
            type=typ,
            default=None,
            choices=choices.get(key),
            metavar=key.upper() if key not in choices else None,
            help=help_,
        )
    for flag, key, help_ in (
        ("channels-last", "channels_last", "channels_last memory format"),
        ("sync-bn", "sync_bn", "SyncBatchNorm across processes (CUDA)"),
        ("deterministic", "deterministic", "deterministic algorithms (bit-exact resume)"),
        ("tensorboard", "tensorboard", "write TensorBoard events"),
    ):
        p.add_argument(
            f"--{flag}", dest=f"cfg_{key}", action=argparse.BooleanOptionalAction, default=None,
            help=help_,
        )  # fmt: skip
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key (TOML value), e.g. --set lr_milestones=[150,225]",
    )
    p.add_argument("--out", default=None, metavar="RUN_DIR", help="run directory to create")
    add_progress(p)
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    p.add_argument(
        "--print-preset", default=None, metavar="NAME", help="print a preset's TOML and exit"
    )
    p.add_argument("--show-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _flag, key, _typ, _help in _FLAGS:
        v = getattr(args, f"cfg_{key}")
        if v is not None:
            out[key] = v
    for key in ("channels_last", "sync_bn", "deterministic", "tensorboard"):
        v = getattr(args, f"cfg_{key}")
        if v is not None:
            out[key] = v
    out.update(parse_set_options(args.sets))
    return out


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (survives redirection)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it
        pass


def _setup_logging() -> None:
    logger = logging.getLogger("sknet")
    if any(isinstance(h, _StderrHandler) for h in logger.handlers):
        return
    rank = int(os.environ.get("RANK", "0") or 0)
    handler = _StderrHandler()
    prefix = f"[rank {rank}] " if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 else ""
    handler.setFormatter(logging.Formatter(f"{prefix}%(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def run(args: argparse.Namespace) -> int:
    if args.list_presets:
        for name in list_presets():
            cfg = load_preset(name)
            print(f"{name:<16} {cfg.description}")
        return 0
    if args.print_preset:
        print(preset_path(args.print_preset).read_text(encoding="utf-8"), end="")
        return 0

    check_out_arg(args.out, "--out")  # '' is an error, not "a new folder under ./runs"
    check_out_arg(args.resume, "--resume")
    cfg = _config(args)
    if args.show_config:
        print(_resolved(cfg).to_toml(), end="")
        return 0

    if args.resume:
        run_dir = Path(args.resume)
    elif args.out is not None:
        run_dir = Path(args.out)
    else:
        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
            raise ConfigError("pass --out RUN_DIR when running under torchrun")
        cfg = _resolved(cfg)  # the model name, for the directory name
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{cfg.preset or 'custom'}-{cfg.model}-{stamp}"

    _setup_logging()
    summary = train(cfg, run_dir, resume=bool(args.resume), progress=show_progress(args))
    if int(os.environ.get("RANK", "0") or 0) == 0 and summary.get("task") in ("detect", "segment"):
        print(_dense_line(summary))
        if summary["bad_images"]:
            print(f"skipped {summary['bad_images']} unreadable image(s); see {run_dir}/train.log")
        print(f"run directory: {summary['run_dir']}  (evaluate: sknet eval {summary['run_dir']})")
    elif int(os.environ.get("RANK", "0") or 0) == 0:
        print(
            f"{summary['model']} on {summary['data']}: val top-1 err {summary['top1_err']:.2f}% "
            f"(accuracy {summary['val_acc']:.2f}%), top-5 err {_pct(summary['top5_err'])}, "
            f"{summary['epochs_done']} epochs in {summary['seconds']:.0f}s"
        )
        if summary["bad_images"]:
            print(f"skipped {summary['bad_images']} unreadable image(s); see {run_dir}/train.log")
        print(f"run directory: {summary['run_dir']}  (evaluate: sknet eval {summary['run_dir']})")
    return 0


def _config(args: argparse.Namespace) -> Any:
    """The config of the command: a resumed run's own, a TOML file's or a preset's, with the
    command-line overrides applied."""
    overrides = _overrides(args)
    if args.resume:
        run_dir = Path(args.resume)
        if args.out and Path(args.out) != run_dir:
            raise ConfigError("--resume continues RUN_DIR in place; do not pass a different --out")
        check_resume_overrides(list(overrides))
        check_resumable(run_dir)
        return load_config_file(run_dir / "config.toml", **overrides)
    if args.config:
        return load_config_file(args.config, **overrides)
    task = overrides.get("task", "classify")
    if task != "classify":
        default = f"{task}-demo"
    else:
        default = "finetune" if overrides.get("init") else "demo"
    return load_preset(args.preset or default, **overrides)


def _resolved(cfg: Any) -> Any:
    """``cfg`` with what ``--init`` determines filled in (model, image size, normalisation)."""
    return resolve_init(cfg) if cfg.init else cfg


def _dense_line(summary: dict[str, Any]) -> str:
    val = summary.get("val") or {}

    def f(key: str) -> str:
        v = val.get(key)
        return "n/a" if v is None else f"{v:.1f}"

    if summary["task"] == "segment":
        metrics = f"mIoU {f('miou')}%, pixel accuracy {f('pixel_acc')}%"
    else:
        bins = ", ".join(f"{b[0]} {f('ap_' + b[0])}" for b in val.get("bins", []))
        metrics = f"mAP {f('map')} (AP50 {f('ap50')}, AP75 {f('ap75')}; {bins})"
    return (
        f"{summary['head']} over {summary['model']} on {summary['data']}: {metrics}, "
        f"{summary['epochs_done']} epochs in {summary['seconds']:.0f}s"
    )


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}%"

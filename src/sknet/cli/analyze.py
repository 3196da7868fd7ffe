"""``sknet analyze``: the paper's object-scale attention analysis (Figs. 3-4) for a trained model.

Writes ``attention.json``, ``fig3_channel_attention``, ``fig3_depth`` and ``fig4_classes`` (PNG
and SVG) and ``report.md`` into ``--out``. See :mod:`sknet.analysis.attention` for the protocol.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

import sknet
from sknet._device import resolve_device
from sknet._files import check_out_arg
from sknet.cli import DEVICE_HELP, add_progress, show_progress
from sknet.cli._source import add_checkpoint_path, checkpoint_path_of
from sknet.data import DATASET_NAMES, DEFAULT_SCALE_RANGE
from sknet.dense import is_dense_source
from sknet.errors import ConfigError, MissingFileError
from sknet.hub.load import is_random_source, load, random_weights_hint

# sknet.analysis (and matplotlib with it) is imported in _analyze, when the command runs:
# `sknet --help` and the other commands start without it.


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="attention vs object size (the paper's Figs. 3-4): JSON, plots and a report",
        description=(
            "Probe a model with its validation images at several object zooms, record the SK "
            "attention of every unit during the ordinary forward pass (eval mode, batched) and "
            "write attention.json, the paper's Fig. 3 / Fig. 4 plots (PNG and SVG) and "
            "report.md. Built-in data: objects are re-rendered at each zoom, and by default only "
            "objects that stay inside the training scale range at every zoom are used. Photos "
            "(ImageFolder val split): centre crop and resize."
        ),
        epilog=(
            "examples:\n"
            "  sknet analyze runs/demo --out runs/demo/analysis\n"
            "  sknet analyze sknet50.safetensors --data imagefolder --data-dir /data/imagenet \\\n"
            "      --num-images 1000 --out analysis/sknet50"
        ),
    )
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="run directory, .pt checkpoint or .safetensors weights (e.g. from "
        "'sknet convert --from timm')",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="allow a bare model name (random weights, for smoke tests)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    _add_data_args(p)
    _add_unit_args(p)
    _add_engine_args(p)
    # issue 17: CLI parity with the Python API
    add_checkpoint_path(p)
    add_progress(p, "progress line")
    p.set_defaults(func=run)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    """What to probe: data set, split, zooms, object selection, input size."""
    p.add_argument(
        "--data",
        choices=DATASET_NAMES,
        default=None,
        help="dataset (default: the one the run was trained on, else synthetic)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="root of real data (imagefolder: DIR/val/<class>/<image>)",
    )
    p.add_argument("--split", default="val", choices=("val", "train"), help="split to probe")
    p.add_argument(
        "--zooms",
        type=float,
        nargs="+",
        default=[1.0, 1.5, 2.0],
        metavar="Z",
        help="object enlargement factors, ascending; the first is the reference (default 1 1.5 2)",
    )
    p.add_argument(
        "--num-images", type=int, default=1000, metavar="N", help="images to probe (default 1000)"
    )
    p.add_argument(
        "--select",
        choices=("in-range", "all"),
        default="in-range",
        help="built-in data: 'in-range' keeps objects whose zoomed size stays inside "
        "the training scale range (default); 'all' keeps every object",
    )
    p.add_argument(
        "--train-scales",
        type=float,
        nargs=2,
        default=None,
        metavar=("LO", "HI"),
        help="built-in data: object-size range the model was trained on (default: "
        "from the run, else 0.15 0.9)",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="built-in data: data seed (default: the run's)"
    )
    p.add_argument("--image-size", type=int, default=None, help="input side (default: the run's)")


def _add_unit_args(p: argparse.ArgumentParser) -> None:
    """Which units the per-channel and per-class plots show."""
    p.add_argument(
        "--units",
        nargs="+",
        default=None,
        metavar="UNIT",
        help="units for the per-channel plot (default: one early, one middle, the "
        "last, e.g. SK_2_3 SK_3_4 SK_5_3)",
    )
    p.add_argument(
        "--class-units",
        nargs="+",
        default=None,
        metavar="UNIT",
        help="units for the per-class plot (Fig. 4; same default)",
    )
    p.add_argument(
        "--channel-bin",
        type=int,
        default=None,
        metavar="K",
        help="channels per group in the per-channel plot (default: at most 64 groups)",
    )


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    """How to run: batch, workers, device, threads, deploy form, output."""
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--workers", type=int, default=0, help="data-loading worker processes")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: the run's 'threads' setting, else torch's choice)",
    )
    p.add_argument(
        "--no-deploy",
        action="store_true",
        help="probe the model as trained instead of its sknet.deploy form (BN folded, fused "
        "kernels: the same attention within float rounding, about 2x faster on a CPU)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _load(
    source: str, random_weights: bool = False, copy: Path | None = None
) -> tuple[Any, dict[str, Any]]:
    """(model in eval mode, info) from a run dir, checkpoint or safetensors file, or from
    published weights (MODEL.TAG) read from ``copy`` (``--checkpoint-path``); a bare model name
    (random weights) only with ``random_weights``."""
    if copy is not None:
        model, record = load(source, checkpoint_path=copy)
        return model.eval(), record.info()
    if is_random_source(source):
        if not random_weights:
            raise ConfigError(random_weights_hint(source))
        model, record = load(source, random_weights=True)
        return model.eval(), record.info()
    path = Path(source)
    if not path.exists():
        raise MissingFileError(f"no run directory, checkpoint or weights file at {source}")
    model, record = load(path)
    return model.eval(), record.info()


def _get(info: dict[str, Any], *keys: str) -> Any:
    """The first of ``keys`` set in ``info`` or in the run's config (``info["config"]``)."""
    config = info.get("config")
    cfg: dict[str, Any] = config if isinstance(config, dict) else {}
    for k in keys:
        for where in (info, cfg):
            v = where.get(k)
            if v is not None and v != "" and not isinstance(v, dict):
                return v
    return None


def run(args: argparse.Namespace) -> int:
    args.out = Path(check_out_arg(args.out, "--out") or "")  # '' is an error, not "here"
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.num_images < 1:
        raise ConfigError(f"--num-images must be >= 1, got {args.num_images}")
    args.device = str(resolve_device(args.device))
    if is_dense_source(args.source):
        return _analyze_dense(args)
    model, info = _load(args.source, args.random_weights, checkpoint_path_of(args))
    if not args.no_deploy:
        model = sknet.deploy(model.to(args.device))
    # Threads: --threads, else the run's own setting (the demo preset uses 1), else torch's;
    # restored afterwards so that an in-process call leaves torch as it found it.
    threads = args.threads or _get(info, "threads") or None
    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return _analyze(args, model, info)
    finally:
        torch.set_num_threads(saved_threads)


def _analyze_dense(args: argparse.Namespace) -> int:
    """A detector or segmenter: per-object attention vs size and the forced-branch test."""
    from sknet.analysis.dense_study import analyze_dense

    saved_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(int(args.threads))
    try:
        analyze_dense(args.source, args.out, num_images=args.num_images)
    finally:
        torch.set_num_threads(saved_threads)
    print((args.out / "report.md").read_text(encoding="utf-8"))
    print(f"wrote {args.out}")
    return 0


def _analyze(args: argparse.Namespace, model: Any, info: dict[str, Any]) -> int:
    from sknet.analysis import build_views, run_analysis

    run_data = _get(info, "data")
    data = args.data or run_data or "synthetic"
    if data != run_data:
        # Probing on other data than the run's: its statistics and sizes do not apply.
        info = {k: v for k, v in info.items() if k in ("model", "source")}
    data_dir = args.data_dir or _get(info, "data_dir")
    image_size = args.image_size or _get(info, "image_size")
    if data == "synthetic" and image_size is None:
        image_size = getattr(model, "default_input_size", 48)
    scales = args.train_scales or _get(info, "scale_range") or DEFAULT_SCALE_RANGE
    seed = args.seed if args.seed is not None else (_get(info, "seed") or 0)
    mean = _get(info, "mean")
    std = _get(info, "std")

    views = build_views(
        data,
        zooms=args.zooms,
        num_images=args.num_images,
        data_dir=data_dir,
        split=args.split,
        image_size=image_size,
        mean=mean,
        std=std,
        seed=int(seed),
        train_scale_range=(float(scales[0]), float(scales[1])),
        selection=args.select,
    )
    total = len(views.dataset)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    last = [0.0]
    shown = not args.quiet and show_progress(args)

    def progress(done: int, n: int) -> None:
        now = time.perf_counter()
        if not shown or (now - last[0] < 2.0 and done < n):
            return
        last[0] = now
        print(
            f"\r  {done}/{n} images x {len(views.zooms)} zooms ({now - t0:.0f}s)",
            end="" if done < n else "\n",
            file=sys.stderr,
            flush=True,
        )

    name = info.get("model") or getattr(model, "model_name", type(model).__name__)
    if not args.quiet:
        print(
            f"analysing {name} on {total} images ({views.description}), zooms "
            f"{', '.join(f'{z:g}' for z in views.zooms)}",
            file=sys.stderr,
        )
    result, files = run_analysis(
        model,
        views,
        args.out,
        meta={"source": str(args.source), "model": str(name), "deployed": not args.no_deploy},
        channel_units=args.units,
        class_units=args.class_units,
        bin_size=args.channel_bin,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
        progress=progress,
    )
    acc = result.accuracy()
    print(
        f"{result.num_images} images in {result.meta.get('seconds', 0):.1f}s; top-1 accuracy "
        + ", ".join(f"{k}x {100 * v:.1f}%" for k, v in acc.items())
    )
    for u in result.units:
        diffs = " ".join(f"{v:+.4f}" for v in result.mean_diff(u))
        print(f"  {u:<8} mean attention difference {diffs}  ({result.trend(u)})")
    print(f"wrote {len(files)} files to {args.out} (report.md, attention.json, plots)")
    return 0

"""``sknet eval``: single-centre-crop top-1/top-5 error of a run, checkpoint or weights file.

As in Table 2 of the SKNet paper, ImageNet-style data is evaluated at 224 (resize 256) and 320
(resize 366); synthetic and CIFAR data at their native size (add others with ``--sizes``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sknet._device import resolve_device
from sknet._files import atomic_write_text, check_out_arg, check_output
from sknet._limits import check_image_side
from sknet.cli import AMP_CHOICES, DEVICE_HELP, add_progress, examples, show_progress
from sknet.cli._source import add_checkpoint_path, checkpoint_path_of, standing_in
from sknet.data import DATASET_NAMES, DENSE_DATASET_NAMES
from sknet.dense import is_dense_source
from sknet.errors import ConfigError
from sknet.hub.load import is_random_source, random_weights_hint, resolve_source
from sknet.hub.load import looks_like_path as _looks_like_path
from sknet.train import evaluate_dense_source, evaluate_source


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="top-1/top-5 error of a run directory, checkpoint or safetensors file",
        description=(
            "Evaluate a trained model with a single centre crop (the paper's Table 2 "
            "protocol): 224 and 320 for ImageNet-style data, the native size for synthetic and "
            "CIFAR data. Prints a table and writes JSON (default: RUN_DIR/eval.json)."
        ),
        epilog=examples(
            "sknet eval runs/demo",
            "sknet eval sknet50.safetensors --data imagefolder --data-dir /data/imagenet "
            "--out eval.json",
        ),
    )
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="run directory, checkpoint .pt, .safetensors, or published weights (sknet50.ra_in1k)",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="allow a bare model name (random weights, for smoke tests)",
    )
    p.add_argument(
        "--data",
        default=None,
        choices=DATASET_NAMES + DENSE_DATASET_NAMES,
        help="dataset (default: the run's)",
    )
    p.add_argument("--data-dir", default=None, help="folder of the data (default: the run's)")
    p.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="evaluation sizes, each from the model's minimum input (its total stride) to 4096",
    )
    p.add_argument("--batch-size", type=int, default=100, help="images per forward pass")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument(
        "--val-samples", type=int, default=None, help="synthetic val images (default: the run's)"
    )
    p.add_argument(
        "--amp", default="none", choices=AMP_CHOICES, help="autocast precision of the forward"
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="FILE.json",
        help="where to write the JSON (default: RUN_DIR/eval.json for a run directory)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument(
        "--size-bins",
        default="data",
        choices=("data", "coco"),
        help="detectors: object-size bins of the per-size AP: terciles of the validation "
        "objects' sqrt(area) (default), or COCO's fixed 32/96 px",
    )
    # issue 17: CLI parity with the Python API
    add_checkpoint_path(p)
    add_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_out_arg(args.out, "--out")
    if args.sizes:  # before any work: --sizes 100000 would ask for tens of GiB
        args.sizes = [check_image_side(s, "--sizes", config=True) for s in args.sizes]
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be positive, got {args.batch_size}")
    if args.threads < 0:
        raise ConfigError(f"--threads must be >= 0, got {args.threads}")
    if args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}")
    if args.val_samples is not None and args.val_samples < 1:
        raise ConfigError(f"--val-samples must be positive, got {args.val_samples}")
    resolve_device(args.device)  # an unknown device is an error before any work
    # A file source is protected from being overwritten, and so is every existing file of the
    # run directory it belongs to (RUN, RUN/model.safetensors or RUN/checkpoints/last.pt alike);
    # a registry name has no file here.
    checkpoint_path_of(args)  # checked first: it needs SOURCE to be a tag
    if not args.random_weights and is_random_source(args.source):
        raise ConfigError(random_weights_hint(args.source))
    sources = []
    if (copy := checkpoint_path_of(args)) is not None:
        sources.append(copy)
    if _looks_like_path(args.source):
        sources = [Path(args.source), resolve_source(args.source)[0]]
    run_dir = Path(args.source) if Path(args.source).is_dir() else None
    out = None
    if args.out is not None:
        out = check_output(
            args.out,
            sources=sources,
            protected_dirs=[run_dir] if run_dir else [],
            force=args.force,
            suffixes=(".json",),
            what="--out",
        )
    elif run_dir is not None:
        out = run_dir / "eval.json"  # the command's own product: replaced on each evaluation
    if is_dense_source(args.source):
        return _report(args, out, _evaluate_dense(args), _print_dense)
    with standing_in(args):  # --checkpoint-path: read instead of downloading
        res = evaluate_source(
            args.source,
            data=args.data,
            data_dir=args.data_dir,
            sizes=args.sizes,
            batch_size=args.batch_size,
            workers=args.workers,
            device=args.device,
            val_samples=args.val_samples,
            amp=args.amp,
            progress=not args.json and show_progress(args),
            threads=args.threads,
            random_weights=args.random_weights,
        )
    return _report(args, out, res, _print_classifier)


def _report(args: argparse.Namespace, out: Path | None, res: dict, table: Any) -> int:
    """Write the JSON (``--out``), then print it (``--json``) or the table."""
    text = json.dumps(res, indent=2)
    if out is not None:
        atomic_write_text(out, text + "\n")
    if args.json:
        print(text)
        return 0
    table(res)
    if out is not None:
        print(f"wrote {out}")
    return 0


def _print_classifier(res: dict) -> None:
    print(f"{res['model']} on {res['data']} ({res['num_classes']} classes), {res['protocol']}")
    print(f"{'size':>6} {'resize':>7} {'top-1 err':>10} {'top-5 err':>10} {'n':>8}")
    for r in res["results"]:
        resize = str(r["resize"]) if r["resize"] else "-"
        print(
            f"{r['size']:>6} {resize:>7} {r['top1_err']:>9.2f}% {_pct(r['top5_err']):>10} "
            f"{r['n']:>8}"
        )


def _evaluate_dense(args: argparse.Namespace) -> dict:
    """A detector's COCO metrics (overall and per size bin) or a segmenter's mIoU."""
    return evaluate_dense_source(
        args.source,
        data=args.data,
        data_dir=args.data_dir,
        val_samples=args.val_samples,
        batch_size=min(args.batch_size, 32),
        device=args.device,
        threads=args.threads,
        size_bins=args.size_bins,
    )


def _print_dense(res: dict) -> None:
    print(
        f"{res['task']} {res['head']} over {res['model']} on {res['data']} "
        f"({len(res['classes'])} classes, {res['n_images']} images at {res['image_size']}px)"
    )

    def f(key: str) -> str:
        v = res.get(key)
        return "n/a" if v is None else f"{v:.2f}"

    if res["task"] == "segment":
        print(f"mIoU {f('miou')}%   pixel accuracy {f('pixel_acc')}%")
    else:
        print(f"mAP {f('map')}   AP50 {f('ap50')}   AP75 {f('ap75')}")
        for name, lo, hi in res["bins"]:
            n = res.get(f"n_objects_{name}", "?")
            top = "inf" if hi is None else f"{hi:g}"
            print(
                f"  AP {name:<7} sqrt(area) [{lo:g}, {top}) px: {f('ap_' + name):>6} ({n} objects)"
            )


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}%"

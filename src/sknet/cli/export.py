"""``sknet export SOURCE --format onnx|pt2 --out FILE``: ONNX or torch.export, dynamic batch."""

from __future__ import annotations

import argparse
from pathlib import Path

from sknet._files import check_out_arg, check_output
from sknet.cli import examples
from sknet.cli._source import add_checkpoint_path, checkpoint_path_of
from sknet.errors import ConfigError
from sknet.export import export_model
from sknet.hub.load import is_random_source, load, random_weights_hint, resolve_source
from sknet.hub.load import looks_like_path as _looks_like_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX or a torch.export archive (.pt2), batch axis dynamic",
        description="Export SOURCE (a model name for a randomly initialised model, a .safetensors "
        "weights file, a checkpoint or a run directory) with BatchNorm folded (sknet.deploy). "
        "The written file is loaded back and compared with PyTorch at batch sizes 1 and 3.",
        epilog=examples(
            "sknet export runs/demo --out sknet_tiny.onnx",
            "sknet export sknet50.safetensors --format pt2 --out sknet50.pt2 --input-size 224",
        ),
    )
    p.add_argument("source", help="model name, weights file (.safetensors), checkpoint or run dir")
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="allow a bare model name (random weights, for smoke tests)",
    )
    p.add_argument(
        "--format", choices=["onnx", "pt2"], default=None, help="file format (default: from --out)"
    )
    p.add_argument("--out", default=None, help="output file (default: MODEL.FORMAT)")
    p.add_argument(
        "--input-size", type=int, default=None, help="H = W of the graph (default: native)"
    )
    p.add_argument("--num-classes", type=int, default=None, help="classifier width (names only)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: exporter's)")
    p.add_argument("--no-fuse", action="store_true", help="export without folding BatchNorm")
    p.add_argument("--no-check", action="store_true", help="skip the round-trip comparison")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    # issue 17: CLI parity with the Python API
    add_checkpoint_path(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.out is not None:  # '' is an error, not "the current folder"
        args.out = Path(check_out_arg(args.out, "--out") or "")
    fmt = args.format
    if fmt is None:
        suffix = args.out.suffix.lstrip(".").lower() if args.out is not None else ""
        if suffix not in ("onnx", "pt2"):
            raise ConfigError("give --format onnx|pt2 (or an --out file ending in .onnx / .pt2)")
        fmt = suffix
    copy = checkpoint_path_of(args)  # checked first: it needs SOURCE to be a tag
    if not args.random_weights and is_random_source(args.source):
        raise ConfigError(random_weights_hint(args.source))
    sources, protected = [], []
    if copy is not None:
        sources.append(copy)
    if _looks_like_path(args.source):
        if args.num_classes is not None:
            raise ConfigError("--num-classes applies to model names only; a file sets its own")
        sources += [Path(args.source), resolve_source(args.source)[0]]  # and their run dir
        if Path(args.source).is_dir():
            protected.append(Path(args.source))
    out = args.out
    if out is None:
        name = Path(args.source).name if sources else args.source
        out = Path(f"{name.removesuffix('.safetensors').removesuffix('.pt')}.{fmt}")
    out = check_output(
        out,
        sources=sources,
        protected_dirs=protected,
        force=args.force,
        suffixes=(f".{fmt}",),
        what="--out",
    )
    model, record = load(
        args.source, num_classes=args.num_classes, checkpoint_path=copy, random_weights=True
    )
    size = args.input_size or record.image_size
    result = export_model(
        model,
        out,
        format=fmt,
        input_size=size,
        fuse=not args.no_fuse,
        opset=args.opset,
        check=not args.no_check,
    )
    print(result.describe())
    return 0

"""``sknet convert --from timm|torchvision|caffe SRC DST``: other implementations' weights to a
self-describing safetensors file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import cast

from sknet._files import check_out_arg, check_output
from sknet.cli import examples
from sknet.hub.convert import Source
from sknet.hub.load import convert_file
from sknet.hub.metadata import save_weights


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert timm, torchvision or official Caffe SKNet weights to sknet safetensors",
        description="Map timm's skresnext50_32x4d / skresnet18 / skresnet34 / resnext50_32x4d "
        "/ seresnext50_32x4d / resnext101_32x4d weights and torchvision's resnext50_32x4d "
        "(.pth/.pt/.bin via torch.load(weights_only=True), or .safetensors) onto sknet50 / "
        "skresnet18 / skresnet34 / resnext50_32x4d / senet50 / resnext101_32x4d, and the "
        "official Caffe release (SKNet-50.caffemodel, SKNet-101.caffemodel) onto sknet50 / "
        "sknet101 with Caffe's stem pooling and preprocessing recorded.",
        epilog=examples(
            "sknet convert --from timm skresnext50_32x4d.pth sknet50.safetensors",
            "sknet convert --from torchvision resnext50_32x4d-7cdf4587.pth resnext50.safetensors",
            "sknet convert --from caffe SKNet-50.caffemodel sknet50_caffe.safetensors",
        ),
    )
    p.add_argument("src", help="source weights file (state dict or .caffemodel)")
    p.add_argument("dst", help="output .safetensors file")
    p.add_argument(
        "--from",
        dest="source",
        choices=["timm", "torchvision", "caffe"],
        default=None,
        help="layout of SRC (default: caffe for a .caffemodel, else timm)",
    )
    p.add_argument("--model", default=None, help="sknet model name (guessed from the keys)")
    p.add_argument("--force", action="store_true", help="replace an existing DST file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    args.src = Path(check_out_arg(args.src, "SRC") or "")  # '' is an error, not "here"
    args.dst = Path(check_out_arg(args.dst, "DST") or "")
    check_output(
        args.dst, sources=[args.src], force=args.force, suffixes=(".safetensors",), what="DST"
    )
    # args.source is one of the parser's choices, which are the values of Source
    source = cast(Source, args.source or ("caffe" if args.src.suffix == ".caffemodel" else "timm"))
    conv = convert_file(args.src, source, args.model)
    model, name = conv.model, conv.name
    save_weights(model, args.dst, name=name, overrides=conv.overrides, extra=conv.metadata)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.dst} ({name}, {n:,} parameters, {model.num_classes} classes)")
    return 0

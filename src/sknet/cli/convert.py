"""``sknet convert --from timm|torchvision|caffe SRC DST``: other implementations' weights to a
self-describing safetensors file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import cast

from sknet._files import check_out_arg, check_output
from sknet.cli import examples
from sknet.errors import ConfigError
from sknet.hub.convert import Source
from sknet.hub.load import convert_file
from sknet.hub.metadata import save_weights
from sknet.hub.table import PretrainedCfg, class_names, get_pretrained_cfg, list_pretrained


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
            "sknet convert --from timm model.safetensors sknet50.safetensors --tag sknet50.ra_in1k",
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
    # issue 17: CLI parity with the Python API
    p.add_argument(
        "--tag",
        default=None,
        metavar="MODEL.TAG",
        help="the published weights SRC is a copy of (e.g. sknet50.ra_in1k, or timm's "
        "skresnext50_32x4d.ra_in1k): DST records that tag's class names and preprocessing",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    args.src = Path(check_out_arg(args.src, "SRC") or "")  # '' is an error, not "here"
    args.dst = Path(check_out_arg(args.dst, "DST") or "")
    check_output(
        args.dst, sources=[args.src], force=args.force, suffixes=(".safetensors",), what="DST"
    )
    # args.source is one of the parser's choices, which are the values of Source
    source = cast(Source, args.source or ("caffe" if args.src.suffix == ".caffemodel" else "timm"))
    tag = get_pretrained_cfg(args.tag) if args.tag is not None else None  # before any work
    conv = convert_file(args.src, source, args.model)
    model, name = conv.model, conv.name
    if tag is None:
        save_weights(model, args.dst, name=name, overrides=conv.overrides, extra=conv.metadata)
    else:
        _check_tag(tag, name, model.num_classes)
        save_weights(
            model,
            args.dst,
            name=name,
            overrides=conv.overrides,
            classes=class_names(tag.classes),
            preprocess=tag.preprocess.to_preprocess(),
            provenance={"tag": tag.name, "source": tag.source, "license": tag.license},
            extra=conv.metadata,
        )
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.dst} ({name}, {n:,} parameters, {model.num_classes} classes)")
    if tag is not None:
        print(f"  with the class names and preprocessing of {tag.name}")
    else:
        known = [
            t for t in list_pretrained(f"{name}.*") if get_pretrained_cfg(t).converter == source
        ]
        if known:
            copies = " or ".join(known)
            print(
                f"  no class names or preprocessing recorded: if SRC is a copy of {copies}, "
                "convert with --tag to keep them"
            )
    return 0


def _check_tag(tag: PretrainedCfg, name: str, num_classes: int) -> None:
    if tag.model != name:
        raise ConfigError(
            f"--tag {tag.name} is weights for {tag.model}, but SRC converts to {name}: name the "
            f"tag SRC is a copy of (`sknet info {name}` lists {name}'s)"
        )
    if tag.num_classes != num_classes:
        raise ConfigError(
            f"--tag {tag.name} has {tag.num_classes} classes, but SRC has {num_classes}: SRC is "
            "not a copy of those weights"
        )

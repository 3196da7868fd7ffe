"""``sknet convert --from timm SRC DST``: timm weights to a self-describing safetensors file."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert timm (or torchvision) ResNeXt/SENet/SKNet weights to sknet safetensors",
        description="Map timm's skresnext50_32x4d / resnext50_32x4d / seresnext50_32x4d "
        "weights (.pth/.pt/.bin via torch.load(weights_only=True), or .safetensors) onto "
        "sknet50 / resnext50_32x4d / senet50.",
    )
    p.add_argument("src", type=Path, help="timm state dict file")
    p.add_argument("dst", type=Path, help="output .safetensors file")
    p.add_argument("--from", dest="source", choices=["timm"], default="timm")
    p.add_argument("--model", default=None, help="sknet model name (guessed from the keys)")
    p.set_defaults(func=run)


def _read_state_dict(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable torch state dict: {exc}") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return obj


def run(args: argparse.Namespace) -> int:
    from sknet.convert import guess_timm_model, load_timm
    from sknet.weights import save_weights

    if args.dst.suffix != ".safetensors":
        raise ValueError(f"destination must end in .safetensors, got {args.dst}")
    state = _read_state_dict(args.src)
    name = args.model or guess_timm_model(state)
    model = load_timm(state, name)
    save_weights(model, args.dst, name=name, extra={"converted_from": f"timm:{args.src.name}"})
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.dst} ({name}, {n:,} parameters, {model.num_classes} classes)")
    return 0

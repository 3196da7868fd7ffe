"""Weights from other implementations: timm (and torchvision) ResNeXt / SE-ResNeXt / SKNet.

``from_timm(state_dict, name)`` maps the state dict of timm's ``skresnext50_32x4d``,
``resnext50_32x4d`` or ``seresnext50_32x4d`` (and the 101-layer counterparts; torchvision's
``resnext50_32x4d`` uses the same keys) onto sknet's ``sknet50`` / ``resnext50_32x4d`` /
``senet50``. Every key and shape is checked; nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from sknet.models import SKNetModel, create_model, get_entry

__all__ = ["TIMM_NAMES", "from_timm", "guess_timm_model", "load_timm"]

# timm name -> sknet name
TIMM_NAMES: dict[str, str] = {
    "skresnext50_32x4d": "sknet50",
    "resnext50_32x4d": "resnext50_32x4d",
    "seresnext50_32x4d": "senet50",
    "resnext101_32x4d": "resnext101_32x4d",
    "seresnext101_32x4d": "senet101",
}

_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^conv1\.weight$"), "stem.conv.weight"),
    (re.compile(r"^bn1\.(.+)$"), r"stem.bn.\1"),
    (re.compile(r"^fc\.(.+)$"), r"head.fc.\1"),
]
_BLOCK_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^conv([123])\.weight$"), r"conv\1.conv.weight"),
    (re.compile(r"^bn([123])\.(.+)$"), r"conv\1.bn.\2"),
    (re.compile(r"^conv2\.paths\.(\d+)\.(.+)$"), r"conv2.branches.\1.\2"),
    (re.compile(r"^downsample\.0\.(.+)$"), r"downsample.conv.\1"),
    (re.compile(r"^downsample\.1\.(.+)$"), r"downsample.bn.\1"),
]
_LAYER = re.compile(r"^layer(\d+)\.(\d+)\.(.+)$")


def _map_key(key: str) -> str:
    m = _LAYER.match(key)
    if m is None:
        for pat, rep in _RULES:
            if pat.match(key):
                return pat.sub(rep, key)
        return key
    stage, unit, rest = int(m.group(1)) - 1, m.group(2), m.group(3)
    for pat, rep in _BLOCK_RULES:
        if pat.match(rest):
            rest = pat.sub(rep, rest)
            break
    return f"stages.{stage}.{unit}.{rest}"


def guess_timm_model(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The sknet name matching a timm/torchvision ResNeXt-family state dict."""
    keys = list(state_dict)
    units3 = {int(k.split(".")[1]) for k in keys if k.startswith("layer3.")}
    depth = 101 if len(units3) == 23 else 50 if len(units3) == 6 else None
    if depth is None:
        raise ValueError(
            "cannot tell the model from this state dict (expected timm/torchvision ResNeXt-50 "
            "or -101 keys such as 'layer3.5.conv1...'); pass the sknet model name"
        )
    if any(".conv2.paths." in k for k in keys):
        if depth != 50:
            raise ValueError("only timm's skresnext50_32x4d has an SK counterpart in timm")
        return "sknet50"
    if any(".se.fc1." in k for k in keys):
        return f"senet{depth}"
    return f"resnext{depth}_32x4d"


def from_timm(
    state_dict: Mapping[str, torch.Tensor], name: str | None = None
) -> dict[str, torch.Tensor]:
    """Map a timm state dict onto the keys of sknet model ``name`` (guessed when None).

    Raises ``ValueError`` naming the keys that are missing, left over or of the wrong shape.
    """
    name = name or guess_timm_model(state_dict)
    get_entry(name)
    num_classes = int(state_dict["fc.weight"].shape[0]) if "fc.weight" in state_dict else 1000
    target = create_model(name, num_classes=num_classes).state_dict()
    out = {_map_key(k): v for k, v in state_dict.items()}
    missing = sorted(set(target) - set(out))
    unexpected = sorted(set(out) - set(target))
    bad = sorted(k for k in set(out) & set(target) if out[k].shape != target[k].shape)
    if missing or unexpected or bad:
        raise ValueError(
            f"state dict does not fit {name}: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(bad)} with other "
            f"shapes (e.g. {bad[:3]})"
        )
    return out


def load_timm(state_dict: Mapping[str, torch.Tensor], name: str | None = None) -> SKNetModel:
    """Build the sknet model for a timm state dict and load it (eval mode)."""
    name = name or guess_timm_model(state_dict)
    mapped = from_timm(state_dict, name)
    model = create_model(name, num_classes=int(mapped["head.fc.weight"].shape[0]))
    model.load_state_dict(mapped, strict=True)
    return model.eval()

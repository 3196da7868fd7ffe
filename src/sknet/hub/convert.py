"""Weights from other implementations: timm and torchvision ResNeXt / SE-ResNeXt / SKNet.

``from_timm(state_dict, name)`` maps the state dict of timm's ``skresnext50_32x4d``,
``skresnet18``, ``skresnet34``, ``resnext50_32x4d``, ``seresnext50_32x4d`` (and the 101-layer
ResNeXt / SE-ResNeXt 32x4d) onto sknet's ``sknet50`` / ``skresnet18`` / ``skresnet34`` /
``resnext50_32x4d`` / ``senet50`` (/ ``resnext101_32x4d`` / ``senet101``).
``from_torchvision(state_dict, name)`` does the same for torchvision's ``resnext50_32x4d``
(``IMAGENET1K_V1`` / ``V2``), whose keys are timm's. Every key and shape is checked; nothing is
dropped silently. The official Caffe release is mapped by :mod:`sknet.hub.caffe`.

The key maps are **pure functions over state dicts**: they return the mapped state dict and
never build a model (a model on the ``meta`` device, which allocates nothing, is what the keys
and shapes are checked against). Building and loading is :mod:`sknet.hub.load`
(:func:`~sknet.hub.load.load_timm`, :func:`~sknet.hub.load.load_torchvision`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

import torch

import sknet._limits as _limits
from sknet.errors import ConfigError, FileFormatError
from sknet.hub.read import check_state_dtypes
from sknet.models import create_model, get_entry

__all__ = [
    "SOURCES",
    "TIMM_NAMES",
    "TORCHVISION_NAMES",
    "from_timm",
    "from_torchvision",
    "guess_model",
    "guess_timm_model",
    "guess_torchvision_model",
    "map_state",
]

Source = Literal["timm", "torchvision", "caffe"]
SOURCES: tuple[str, ...] = ("timm", "torchvision", "caffe")

# timm name -> sknet name
TIMM_NAMES: dict[str, str] = {
    "skresnext50_32x4d": "sknet50",
    "skresnet18": "skresnet18",
    "skresnet34": "skresnet34",
    "resnext50_32x4d": "resnext50_32x4d",
    "seresnext50_32x4d": "senet50",
    "resnext101_32x4d": "resnext101_32x4d",
    "seresnext101_32x4d": "senet101",
}
# torchvision name -> sknet name (torchvision has no 101-layer 32x4d ResNeXt)
TORCHVISION_NAMES: dict[str, str] = {"resnext50_32x4d": "resnext50_32x4d"}

_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^conv1\.weight$"), "stem.conv.weight"),
    (re.compile(r"^bn1\.(.+)$"), r"stem.bn.\1"),
    (re.compile(r"^fc\.(.+)$"), r"head.fc.\1"),
]
_BLOCK_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^conv([123])\.weight$"), r"conv\1.conv.weight"),
    (re.compile(r"^bn([123])\.(.+)$"), r"conv\1.bn.\2"),
    # SK convolutions: conv2 of timm's SK bottleneck, conv1 of its SK basic block
    (re.compile(r"^conv([12])\.paths\.(\d+)\.(.+)$"), r"conv\1.branches.\2.\3"),
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


def _units(keys: list[str], layer: int) -> int:
    return len({k.split(".")[1] for k in keys if k.startswith(f"layer{layer}.")})


def guess_timm_model(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The sknet name matching a timm (or torchvision) ResNet-family state dict.

    Raises :class:`~sknet.errors.ConfigError` (a ``ValueError``) when the keys fit none of
    the models in :data:`TIMM_NAMES`.
    """
    keys = list(state_dict)
    units3 = _units(keys, 3)
    if any(".conv1.paths." in k for k in keys):  # timm's SK basic block (skresnet18/34)
        basic = {2: "skresnet18", 6: "skresnet34"}
        if units3 not in basic:
            raise ConfigError(
                f"an SK-ResNet state dict with {units3} units in layer3 fits neither "
                "skresnet18 (2) nor skresnet34 (6); pass the sknet model name"
            )
        return basic[units3]
    depth = 101 if units3 == 23 else 50 if units3 == 6 else None
    if depth is None:
        raise ConfigError(
            "cannot tell the model from this state dict (expected timm/torchvision ResNeXt-50 "
            "or -101 keys such as 'layer3.5.conv1...'); pass the sknet model name"
        )
    if any(".conv2.paths." in k for k in keys):
        if depth != 50:
            raise ConfigError("only timm's skresnext50_32x4d has an SK counterpart in timm")
        return "sknet50"
    if any(".se.fc1." in k for k in keys):
        return f"senet{depth}"
    return f"resnext{depth}_32x4d"


def guess_torchvision_model(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The sknet name matching a torchvision ResNeXt state dict (see :data:`TORCHVISION_NAMES`).

    Raises :class:`~sknet.errors.ConfigError` (a ``ValueError``) for torchvision models
    without an sknet counterpart.
    """
    keys = list(state_dict)
    if any(".paths." in k or ".se." in k for k in keys):
        raise ConfigError(
            "this state dict has SK or SE keys, which torchvision models do not have: "
            "convert it with --from timm"
        )
    units3 = _units(keys, 3)
    if units3 != 6 or "layer1.0.conv3.weight" not in state_dict:
        raise ConfigError(
            f"not a torchvision ResNeXt-50 state dict (layer3 has {units3} bottleneck units, "
            "expected 6); sknet takes torchvision's resnext50_32x4d only"
        )
    return "resnext50_32x4d"


def _map_checked(
    state_dict: Mapping[str, torch.Tensor], name: str, source: str
) -> dict[str, torch.Tensor]:
    """The state dict mapped onto sknet model ``name``'s keys, checked against the model.

    The model is built on the ``meta`` device only (no memory) with the classifier width of
    ``fc.weight`` (at most ``MAX_CLASSES``): its size is checked (``SKNET_MAX_PARAMS``), and every
    key, shape and dtype kind (floating weights only) must fit. A state dict that does not fit
    raises :class:`~sknet.errors.FileFormatError` naming the keys.
    """
    get_entry(name)
    fc = state_dict.get("fc.weight")
    num_classes = int(fc.shape[0]) if fc is not None and fc.ndim else 1000
    num_classes = _limits.bounded_int(
        num_classes, f"{source} classifier width (fc.weight)", lo=0, hi=_limits.MAX_CLASSES
    )
    with torch.device("meta"):
        meta = create_model(name, num_classes=num_classes)
    _limits.check_param_count(sum(p.numel() for p in meta.parameters()), f"{source} {name}")
    target = meta.state_dict()
    out = {_map_key(k): v for k, v in state_dict.items()}
    missing = sorted(set(target) - set(out))
    unexpected = sorted(set(out) - set(target))
    bad = sorted(k for k in set(out) & set(target) if out[k].shape != target[k].shape)
    if missing or unexpected or bad:
        raise FileFormatError(
            f"{source} state dict does not fit {name}: {len(missing)} missing (e.g. "
            f"{missing[:3]}), {len(unexpected)} unexpected (e.g. {[u[:60] for u in unexpected[:3]]}"
            f"), {len(bad)} with other shapes (e.g. {bad[:3]})"
        )
    check_state_dtypes(target, out, f"{source} state dict")
    return out


def from_timm(
    state_dict: Mapping[str, torch.Tensor], name: str | None = None
) -> dict[str, torch.Tensor]:
    """Map a timm state dict onto the keys of sknet model ``name`` (guessed when None).

    Raises :class:`~sknet.errors.FileFormatError` (a ``ValueError``) naming the keys that are
    missing, left over or of the wrong shape.
    """
    name = name or guess_timm_model(state_dict)
    return _map_checked(state_dict, name, "timm")


def from_torchvision(
    state_dict: Mapping[str, torch.Tensor], name: str | None = None
) -> dict[str, torch.Tensor]:
    """Map a torchvision ``resnext50_32x4d`` state dict onto sknet's ``resnext50_32x4d`` keys.

    Raises :class:`~sknet.errors.FileFormatError` (a ``ValueError``) naming the keys that are
    missing, left over or of the wrong shape.
    """
    name = name or guess_torchvision_model(state_dict)
    return _map_checked(state_dict, name, "torchvision")


def guess_model(state_dict: Mapping[str, torch.Tensor], source: str) -> str:
    """The sknet name for a state dict of ``source`` (``"timm"`` or ``"torchvision"``)."""
    return guess_timm_model(state_dict) if source == "timm" else guess_torchvision_model(state_dict)


def map_state(
    state_dict: Mapping[str, torch.Tensor], source: str, name: str | None = None
) -> dict[str, torch.Tensor]:
    """:func:`from_timm` or :func:`from_torchvision` by ``source``."""
    if source == "timm":
        return from_timm(state_dict, name)
    if source == "torchvision":
        return from_torchvision(state_dict, name)
    raise ConfigError(f"unknown source {source!r}: expected timm or torchvision")

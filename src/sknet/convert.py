"""Weights from other implementations: timm and torchvision ResNeXt / SE-ResNeXt / SKNet.

``from_timm(state_dict, name)`` maps the state dict of timm's ``skresnext50_32x4d``,
``skresnet18``, ``skresnet34``, ``resnext50_32x4d``, ``seresnext50_32x4d`` (and the 101-layer
ResNeXt / SE-ResNeXt 32x4d) onto sknet's ``sknet50`` / ``skresnet18`` / ``skresnet34`` /
``resnext50_32x4d`` / ``senet50`` (/ ``resnext101_32x4d`` / ``senet101``).
``from_torchvision(state_dict, name)`` does the same for torchvision's ``resnext50_32x4d``
(``IMAGENET1K_V1`` / ``V2``), whose keys are timm's. Every key and shape is checked; nothing is
dropped silently. The official Caffe release is converted by :mod:`sknet.convert_caffe`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from sknet.models import SKNetModel, create_model, get_entry

__all__ = [
    "SOURCES",
    "TIMM_NAMES",
    "TORCHVISION_NAMES",
    "Converted",
    "convert_file",
    "from_timm",
    "from_torchvision",
    "guess_timm_model",
    "guess_torchvision_model",
    "load_timm",
    "load_torchvision",
    "read_state_dict",
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

    Raises ``ValueError`` when the keys fit none of the models in :data:`TIMM_NAMES`.
    """
    keys = list(state_dict)
    units3 = _units(keys, 3)
    if any(".conv1.paths." in k for k in keys):  # timm's SK basic block (skresnet18/34)
        basic = {2: "skresnet18", 6: "skresnet34"}
        if units3 not in basic:
            raise ValueError(
                f"an SK-ResNet state dict with {units3} units in layer3 fits neither "
                "skresnet18 (2) nor skresnet34 (6); pass the sknet model name"
            )
        return basic[units3]
    depth = 101 if units3 == 23 else 50 if units3 == 6 else None
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


def guess_torchvision_model(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The sknet name matching a torchvision ResNeXt state dict (see :data:`TORCHVISION_NAMES`).

    Raises ``ValueError`` for torchvision models without an sknet counterpart.
    """
    keys = list(state_dict)
    if any(".paths." in k or ".se." in k for k in keys):
        raise ValueError(
            "this state dict has SK or SE keys, which torchvision models do not have: "
            "convert it with --from timm"
        )
    units3 = _units(keys, 3)
    if units3 != 6 or "layer1.0.conv3.weight" not in state_dict:
        raise ValueError(
            f"not a torchvision ResNeXt-50 state dict (layer3 has {units3} bottleneck units, "
            "expected 6); sknet takes torchvision's resnext50_32x4d only"
        )
    return "resnext50_32x4d"


def _map_checked(
    state_dict: Mapping[str, torch.Tensor], name: str, source: str
) -> tuple[dict[str, torch.Tensor], SKNetModel]:
    """The mapped state dict and the (randomly initialised) sknet model it fits exactly.

    The model is first built on the ``meta`` device (no memory) with the classifier width of
    ``fc.weight`` (at most ``MAX_CLASSES``): its size is checked (``SKNET_MAX_PARAMS``), and every
    key, shape and dtype kind (floating weights only) must fit before it is allocated.
    """
    from sknet import _limits
    from sknet.errors import FileFormatError
    from sknet.loading import check_state_dtypes

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
        raise ValueError(
            f"{source} state dict does not fit {name}: {len(missing)} missing (e.g. "
            f"{missing[:3]}), {len(unexpected)} unexpected (e.g. {[u[:60] for u in unexpected[:3]]}"
            f"), {len(bad)} with other shapes (e.g. {bad[:3]})"
        )
    try:
        check_state_dtypes(target, out, f"{source} state dict")
    except FileFormatError as exc:
        raise ValueError(str(exc)) from None
    return out, create_model(name, num_classes=num_classes)


def from_timm(
    state_dict: Mapping[str, torch.Tensor], name: str | None = None
) -> dict[str, torch.Tensor]:
    """Map a timm state dict onto the keys of sknet model ``name`` (guessed when None).

    Raises ``ValueError`` naming the keys that are missing, left over or of the wrong shape.
    """
    name = name or guess_timm_model(state_dict)
    return _map_checked(state_dict, name, "timm")[0]


def from_torchvision(
    state_dict: Mapping[str, torch.Tensor], name: str | None = None
) -> dict[str, torch.Tensor]:
    """Map a torchvision ``resnext50_32x4d`` state dict onto sknet's ``resnext50_32x4d`` keys.

    Raises ``ValueError`` naming the keys that are missing, left over or of the wrong shape.
    """
    name = name or guess_torchvision_model(state_dict)
    return _map_checked(state_dict, name, "torchvision")[0]


def _loaded(model: SKNetModel, mapped: Mapping[str, torch.Tensor]) -> SKNetModel:
    model.load_state_dict(mapped, strict=True)  # copies: the source tensors stay untouched
    return model.eval()


def load_timm(state_dict: Mapping[str, torch.Tensor], name: str | None = None) -> SKNetModel:
    """Build the sknet model for a timm state dict and load it (eval mode)."""
    name = name or guess_timm_model(state_dict)
    mapped, model = _map_checked(state_dict, name, "timm")
    return _loaded(model, mapped)


def load_torchvision(state_dict: Mapping[str, torch.Tensor], name: str | None = None) -> SKNetModel:
    """Build the sknet model for a torchvision state dict and load it (eval mode)."""
    name = name or guess_torchvision_model(state_dict)
    mapped, model = _map_checked(state_dict, name, "torchvision")
    return _loaded(model, mapped)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict of tensors safely: ``.safetensors``, or a torch file through
    ``torch.load(weights_only=True)`` (a checkpoint's ``"state_dict"`` entry is unwrapped).

    Bounded: a zip-format torch file is checked first (nothing compressed, sizes within the
    file) and memory-mapped, and its tensors may not describe more bytes than the file has
    (:func:`sknet.loading.read_torch_file`); floating tensors must be finite.

    Raises ``FileNotFoundError`` or ``ValueError`` naming the file.
    """
    from sknet.errors import SKNetError
    from sknet.loading import check_state_finite, read_torch_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: object = load_file(str(path))
        except Exception as exc:
            raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc
    else:
        try:
            obj = read_torch_file(path)
        except SKNetError:
            raise
        except Exception as exc:
            text = str(exc).strip()
            first = text.splitlines()[0][:200] if text else type(exc).__name__
            raise ValueError(f"{path} is not a readable torch state dict: {first}") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    check_state_finite(obj, path)
    return obj


@dataclass
class Converted:
    """A converted model with what a weights file should record about it.

    ``overrides`` are the ``create_model`` overrides the model was built with (the Caffe models
    need :data:`sknet.convert_caffe.CAFFE_OVERRIDES`); ``metadata`` holds string metadata:
    ``converted_from`` (``"<source>:<file name>"``) and, for Caffe, ``sknet_preprocess`` /
    ``caffe_preprocess`` (JSON).
    """

    model: SKNetModel
    name: str
    overrides: dict[str, object] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)


def convert_file(path: str | os.PathLike, source: Source, name: str | None = None) -> Converted:
    """Convert a weights file of ``source`` (``"timm"``, ``"torchvision"`` or ``"caffe"``) into
    the sknet model ``name`` (guessed from the file when None).

    Raises ``FileNotFoundError``, or ``ValueError`` naming the file and the problem.
    """
    path = Path(path)
    if source == "caffe":
        from sknet.convert_caffe import CAFFE_OVERRIDES, caffe_metadata, load_caffe

        model = load_caffe(path, name)
        return Converted(model, model.model_name, dict(CAFFE_OVERRIDES), caffe_metadata(path))
    if source not in ("timm", "torchvision"):
        raise ValueError(f"unknown source {source!r}: expected one of {', '.join(SOURCES)}")
    state = read_state_dict(path)
    loader = load_timm if source == "timm" else load_torchvision
    try:
        model = loader(state, name)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return Converted(model, model.model_name, {}, {"converted_from": f"{source}:{path.name}"})

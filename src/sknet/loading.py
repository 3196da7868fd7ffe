"""One loading path: :func:`load` turns any model source into a model and a record of what it is.

Sources:

* a registry name (``"sknet50"``): a randomly initialised model;
* a registry name with a weights tag (``"sknet50.ra_in1k"``): published weights (downloaded once
  into the cache, see :mod:`sknet.hub`);
* a ``.safetensors`` weights file (written by sknet, or converted with ``sknet convert``);
* a training checkpoint (``.pt``) or a run directory (its ``model.safetensors``, else its last
  checkpoint).

The model is rebuilt from the **full architecture config** recorded in the file and its tensors
must fit that network exactly: a file of another architecture is refused with a message naming
the first tensor that does not fit. Nothing is unpickled beyond tensors and plain values
(safetensors, or ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from sknet.errors import ConfigError, FileFormatError

__all__ = ["ModelRecord", "Preprocess", "check_state_fits", "load", "resolve_source"]

log = logging.getLogger("sknet")

SourceKind = Literal["registry", "pretrained", "weights", "checkpoint"]


@dataclass(frozen=True)
class Preprocess:
    """How images must be prepared for a model (applied by eval, analyze and predict).

    The image is resized so that its short side is ``resize`` (``None``: used at its own size,
    as for the built-in data), centre-cropped to ``input_size``, converted to floats in [0, 1],
    put in ``channel_order`` and normalised with ``mean``/``std`` (in [0, 1] units). Caffe-style
    ``(x * 255 - m) * s`` is the same as ``mean = m / 255``, ``std = 1 / (255 s)``.
    """

    input_size: int
    resize: int | None = None
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    channel_order: Literal["RGB", "BGR"] = "RGB"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k in ("mean", "std"):
            if k in known:
                known[k] = tuple(float(x) for x in known[k])
        if "input_size" not in known:
            raise ValueError("preprocess needs input_size")
        known["input_size"] = int(known["input_size"])
        if known.get("resize") is not None:
            known["resize"] = int(known["resize"])
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


@dataclass(frozen=True)
class ModelRecord:
    """What a loaded model is: architecture, classes, preprocessing and where it came from.

    ``classes`` are the readable class names in label order; ``class_ids``, when set, the
    identifiers data folders use for the same classes (ImageNet's WordNet ids, ``n01440764``):
    evaluation matches folder names against either.
    """

    name: str
    arch: dict[str, Any]
    num_classes: int
    in_chans: int
    preprocess: Preprocess
    source: str
    source_kind: SourceKind
    classes: tuple[str, ...] | None = None
    class_ids: tuple[str, ...] | None = None
    data: str | None = None
    data_dir: str | None = None
    train_config: dict[str, Any] | None = None
    model_overrides: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        return self.preprocess.input_size

    def info(self) -> dict[str, Any]:
        """The record as the plain dict that eval/analyze reports carry."""
        return {
            "model": self.name,
            "model_overrides": self.model_overrides,
            "num_classes": self.num_classes,
            "image_size": self.preprocess.input_size,
            "data": self.data,
            "data_dir": self.data_dir,
            "mean": tuple(self.preprocess.mean),
            "std": tuple(self.preprocess.std),
            "classes": list(self.classes) if self.classes is not None else None,
            "class_ids": list(self.class_ids) if self.class_ids is not None else None,
            "config": self.train_config,
            "source": self.source,
            "source_kind": self.source_kind,
            "provenance": self.provenance,
        }


# ----------------------------------------------------------------------------------- sources


def resolve_source(source: str | os.PathLike) -> tuple[Path, Literal["weights", "checkpoint"]]:
    """The file behind a path source: a run directory's weights (else its last checkpoint), a
    ``.safetensors`` file or a checkpoint."""
    path = Path(source).expanduser()
    if path.is_dir():
        for cand, kind in (
            (path / "model.safetensors", "weights"),
            (path / "checkpoints" / "last.pt", "checkpoint"),
        ):
            if cand.is_file():
                return cand, kind  # type: ignore[return-value]
        raise FileNotFoundError(
            f"{path} is not a finished or checkpointed run directory "
            "(no model.safetensors or checkpoints/last.pt)"
        )
    if not path.exists():
        raise FileNotFoundError(f"no run directory, checkpoint or weights file at {path}")
    if path.suffix == ".safetensors":
        return path, "weights"
    if path.suffix in (".pt", ".pth", ".ckpt"):
        return path, "checkpoint"
    raise FileFormatError(
        f"{path}: expected a run directory, a checkpoint (.pt) or a weights file (.safetensors)"
    )


def _looks_like_path(text: str) -> bool:
    return (
        os.sep in text
        or text.endswith((".safetensors", ".pt", ".pth", ".ckpt"))
        or Path(text).exists()
    )


def load(
    source: str | os.PathLike,
    *,
    name: str | None = None,
    num_classes: int | None = None,
    checkpoint_path: str | os.PathLike | None = None,
) -> tuple[nn.Module, ModelRecord]:
    """Load a model from any source (see the module docs); returns ``(model.eval(), record)``.

    Args:
        source: registry name (optionally ``name.tag`` for published weights), weights file,
            checkpoint or run directory.
        name: the registry name, only for weights files without sknet metadata.
        num_classes: for a registry name, the classifier width. For weights, a value other
            than the file's keeps the backbone and gives a fresh classifier (logged).
        checkpoint_path: for published weights, a local copy of the file (no download).

    Raises:
        FileNotFoundError: no such file or run directory.
        FileFormatError: a corrupt, unsafe or foreign file, or tensors that do not fit the
            recorded architecture (naming the first one).
        ConfigError: an unknown model name or invalid metadata.
    """
    text = os.fspath(source)
    if not _looks_like_path(text):
        return _load_registry(text, num_classes=num_classes, checkpoint_path=checkpoint_path)
    path, kind = resolve_source(text)
    if kind == "checkpoint":
        model, record = _load_checkpoint(path)
    else:
        model, record = _load_weights_file(path, name=name)
    if num_classes is not None and num_classes != record.num_classes:
        model, record = _new_head(model, record, num_classes)
    return model.eval(), record


def _load_registry(
    text: str, *, num_classes: int | None, checkpoint_path: str | os.PathLike | None
) -> tuple[nn.Module, ModelRecord]:
    from sknet.models import create_model, get_entry, list_models

    if "." in text and text not in list_models():
        from sknet.hub import load_pretrained

        return load_pretrained(text, num_classes=num_classes, checkpoint_path=checkpoint_path)
    entry = get_entry(text)  # unknown names raise with suggestions
    model = create_model(text, num_classes=num_classes)
    record = ModelRecord(
        name=text,
        arch=_arch(model),
        num_classes=int(model.num_classes),
        in_chans=int(model.in_chans),
        preprocess=default_preprocess(entry.input_size, None),
        source=text,
        source_kind="registry",
        provenance={"init": "random"},
    )
    return model.eval(), record


def _arch(model: nn.Module) -> dict[str, Any]:
    from sknet.weights import arch_config_of

    return arch_config_of(model) or {}


def default_preprocess(
    input_size: int,
    data: str | None,
    mean: Any = None,
    std: Any = None,
) -> Preprocess:
    """The preprocessing of sknet-trained models (and foreign ImageNet weights without any)."""
    from sknet.data import eval_resize_size, normalization

    if mean is None or std is None:
        kind = {"imagefolder": "imagenet", None: "imagenet"}.get(data, data)
        try:
            mean, std = normalization(kind or "imagenet")
        except ValueError:
            mean, std = normalization("imagenet")
    imagenet_like = data in ("imagefolder", "imagenet") or (data is None and input_size >= 128)
    return Preprocess(
        input_size=int(input_size),
        resize=eval_resize_size(input_size) if imagenet_like else None,
        mean=tuple(float(x) for x in mean),  # type: ignore[arg-type]
        std=tuple(float(x) for x in std),  # type: ignore[arg-type]
    )


# ----------------------------------------------------------------------------------- files


def _json_meta(meta: dict[str, str], key: str, path: Path, default: Any = None) -> Any:
    if key not in meta:
        return default
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as exc:
        raise FileFormatError(
            f"{path}: metadata {key!r} is not valid JSON ({exc.msg} at position {exc.pos}); "
            "the file is corrupt or was edited by hand"
        ) from None


def _int_meta(meta: dict[str, str], key: str, path: Path, default: int | None) -> int | None:
    if key not in meta:
        return default
    try:
        value = int(meta[key])
    except ValueError:
        raise FileFormatError(
            f"{path}: metadata {key!r} = {meta[key]!r} is not an integer; the file is corrupt"
        ) from None
    if value < 0:
        raise FileFormatError(f"{path}: metadata {key!r} = {value} is negative")
    return value


def build_from_config(
    name: str,
    arch: dict[str, Any] | None,
    overrides: dict[str, Any],
    num_classes: int | None,
    in_chans: int,
    where: Path | str,
) -> nn.Module:
    """Rebuild a registry model from its recorded config (``arch``: every field), falling back
    to the build-time overrides for files written before the full config was recorded."""
    from sknet.models import create_model, list_models

    if name not in list_models():
        raise FileFormatError(
            f"{where}: records model {name!r}, which this version of sknet does not know"
        )
    fields = arch if arch else overrides
    if not isinstance(fields, dict):
        raise FileFormatError(f"{where}: the recorded model config is not a table")
    try:
        return create_model(name, num_classes=num_classes, in_chans=in_chans, **fields)
    except (TypeError, ValueError) as exc:
        raise FileFormatError(
            f"{where}: the recorded config does not build {name!r}: {exc}"
        ) from None


def check_state_fits(model: nn.Module, state: dict[str, torch.Tensor], where: Path | str) -> None:
    """Raise :class:`FileFormatError` naming the first tensor of ``state`` that does not fit
    ``model`` (missing, unexpected or of another shape), with the count of the others."""
    own = model.state_dict()
    problems: list[str] = []
    for key, value in own.items():
        if key not in state:
            problems.append(f"missing tensor {key!r} {tuple(value.shape)}")
        elif tuple(state[key].shape) != tuple(value.shape):
            problems.append(
                f"tensor {key!r} has shape {tuple(state[key].shape)}, the model needs "
                f"{tuple(value.shape)}"
            )
    problems += [f"unexpected tensor {k!r}" for k in state if k not in own]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        name = getattr(model, "model_name", type(model).__name__)
        raise FileFormatError(
            f"{where} does not fit {name}: {problems[0]}{more}; the weights belong to "
            "another architecture"
        )


def _load_weights_file(path: Path, *, name: str | None) -> tuple[nn.Module, ModelRecord]:
    from safetensors.torch import load_file

    from sknet.models import get_entry
    from sknet.weights import read_metadata

    meta = read_metadata(path)
    name = name or meta.get("sknet_model")
    if not name:
        raise FileFormatError(
            f"{path} has no 'sknet_model' metadata (not written by sknet): pass the model name, "
            "or convert it with `sknet convert`"
        )
    overrides = _json_meta(meta, "model_overrides", path, {})
    arch = _json_meta(meta, "sknet_arch", path)
    num_classes = _int_meta(meta, "num_classes", path, None)
    in_chans = _int_meta(meta, "in_chans", path, 3) or 3
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise FileFormatError(f"cannot read tensors from {path}: {exc}") from None
    model = build_from_config(name, arch, overrides, num_classes, in_chans, path)
    check_state_fits(model, state, path)
    model.load_state_dict(state)
    cfg = _json_meta(meta, "sknet_train_config", path)
    data = meta.get("sknet_data") or (cfg or {}).get("data")
    pre = _json_meta(meta, "sknet_preprocess", path)
    if pre:
        try:
            preprocess = Preprocess.from_dict(pre)
        except (TypeError, ValueError) as exc:
            raise FileFormatError(f"{path}: invalid 'sknet_preprocess' metadata: {exc}") from None
    else:
        size = _int_meta(meta, "sknet_image_size", path, None) or get_entry(name).input_size
        preprocess = default_preprocess(
            size, data, _json_meta(meta, "sknet_mean", path), _json_meta(meta, "sknet_std", path)
        )
    classes = _classes(_json_meta(meta, "sknet_classes", path), model, path)
    provenance = _json_meta(meta, "sknet_provenance", path, {}) or {}
    if "converted_from" in meta:
        provenance.setdefault("converted_from", meta["converted_from"])
    record = ModelRecord(
        name=name,
        arch=_arch(model),
        num_classes=int(model.num_classes),
        in_chans=int(model.in_chans),
        preprocess=preprocess,
        source=str(path),
        source_kind="weights",
        classes=classes,
        data=data,
        data_dir=(cfg or {}).get("data_dir") or None,
        train_config=cfg,
        model_overrides=overrides,
        provenance=provenance,
    )
    _attach(model, record)
    return model, record


def _classes(value: Any, model: nn.Module, where: Path) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != int(model.num_classes):
        raise FileFormatError(
            f"{where}: recorded class names do not match the model's {model.num_classes} classes"
        )
    return tuple(str(c) for c in value)


def _load_checkpoint(path: Path) -> tuple[nn.Module, ModelRecord]:
    from sknet.train.checkpoint import load_checkpoint

    ck = load_checkpoint(path)
    meta = ck.get("meta")
    if not isinstance(meta, dict) or "model" not in meta or "model" not in ck:
        raise FileFormatError(f"{path} is an sknet checkpoint without model metadata")
    try:
        num_classes = int(meta["num_classes"])
        in_chans = int(meta.get("in_chans", 3))
    except (TypeError, ValueError):
        raise FileFormatError(f"{path}: invalid num_classes/in_chans in the metadata") from None
    model = build_from_config(
        str(meta["model"]),
        meta.get("arch"),
        dict(meta.get("model_overrides", {})),
        num_classes,
        in_chans,
        path,
    )
    check_state_fits(model, ck["model"], path)
    model.load_state_dict(ck["model"])
    cfg = ck.get("config") or {}
    data = meta.get("data") or cfg.get("data")
    size = int(meta.get("image_size") or getattr(model, "default_input_size", 224))
    record = ModelRecord(
        name=str(meta["model"]),
        arch=_arch(model),
        num_classes=num_classes,
        in_chans=in_chans,
        preprocess=default_preprocess(size, data, meta.get("mean"), meta.get("std")),
        source=str(path),
        source_kind="checkpoint",
        classes=_classes(meta.get("classes"), model, path),
        data=data,
        data_dir=cfg.get("data_dir") or None,
        train_config=cfg or None,
        model_overrides=dict(meta.get("model_overrides", {})),
        provenance=dict(meta.get("provenance", {}) or {}),
    )
    _attach(model, record)
    return model, record


def _attach(model: nn.Module, record: ModelRecord) -> None:
    model.model_overrides = dict(record.model_overrides)  # type: ignore[assignment]
    model.class_names = record.classes  # type: ignore[assignment]


def _new_head(
    model: nn.Module, record: ModelRecord, num_classes: int
) -> tuple[nn.Module, ModelRecord]:
    from dataclasses import replace

    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ConfigError(f"num_classes must be an int >= 0, got {num_classes!r}")
    log.info(
        "%s: weights have %d classes, %d asked: keeping the backbone, new classifier",
        record.source,
        record.num_classes,
        num_classes,
    )
    model.reset_classifier(num_classes)
    model.class_names = None  # type: ignore[assignment]
    record = replace(record, num_classes=num_classes, classes=None, class_ids=None)
    return model, record

"""The one metadata schema of sknet's files: one writer, one reader for weights and checkpoints.

A weights file (safetensors) is self-describing: :func:`sknet.load` rebuilds the model it came
from. Its metadata (all values are strings, JSON where structured), written by
:func:`save_weights` through :func:`weights_metadata`:

* ``sknet_format`` = ``"sknet-weights"``, ``sknet_format_version`` (2 since the full config);
* ``sknet_model`` (registry name), ``num_classes``, ``in_chans``;
* ``sknet_arch``: the **full resolved architecture config** (every field of the family's config
  dataclass, branch specs as text). Loading rebuilds from it, so a model built with overrides
  never comes back as the default network;
* ``model_overrides``: the overrides given at build time (kept for older readers);
* ``sknet_classes``: the class names, in label order (when known);
* ``sknet_preprocess``: how inputs must be prepared (:class:`sknet.Preprocess` fields);
* ``sknet_provenance``: where the weights came from (training run, conversion, init weights);
* training runs add ``sknet_train_config``, ``sknet_data``, ``sknet_image_size``,
  ``sknet_mean``/``sknet_std``.

A training checkpoint (:mod:`sknet.train.checkpoint`) records the same facts in its ``meta``
table under shorter names (``model``, ``arch``, ``model_overrides``, ``num_classes``,
``in_chans``, ``classes``, ``data``, ``image_size``, ``mean``, ``std``, ``provenance``) and the
training config under ``config``. :func:`read_weights_meta` and :func:`read_checkpoint_meta`
read either dialect into the one :class:`FileMeta`, checking every value (bounded sizes and
depths, see :mod:`sknet._limits`) before anything is built.

Files written before the full config existed (format 1: name and overrides only) keep loading.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn

import sknet._limits as _limits
from sknet._files import atomic_save
from sknet._json import jsonable
from sknet.errors import ConfigError, FileFormatError
from sknet.hub.read import read_metadata
from sknet.hub.record import arch_config_of
from sknet.models import get_entry, list_models
from sknet.preprocess import DataConfig, Preprocess, _guard_int, _show, _triple, default_preprocess

__all__ = [
    "WEIGHTS_FORMAT",
    "WEIGHTS_FORMAT_VERSION",
    "FileMeta",
    "arch_config_of",
    "check_name",
    "checkpoint_meta",
    "read_checkpoint_meta",
    "read_metadata",
    "read_weights_meta",
    "save_weights",
    "weights_metadata",
]

WEIGHTS_FORMAT = "sknet-weights"
WEIGHTS_FORMAT_VERSION = 2


# ----------------------------------------------------------------------------------- writing


def weights_metadata(
    model: nn.Module,
    *,
    name: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    classes: list[str] | tuple[str, ...] | None = None,
    preprocess: Mapping[str, Any] | Preprocess | None = None,
    provenance: Mapping[str, Any] | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The metadata of a weights file of ``model`` (see the module docs); arguments as
    :func:`save_weights`."""
    m: Any = model
    if getattr(model, "sknet_deployed", False):  # sknet.deploy marks the models it folds
        raise ConfigError(
            "save_weights: this model came out of sknet.deploy (BatchNorm folded, "
            "inference-only) and cannot be reloaded as a trainable network; save the model "
            "before deploying it, and deploy again after loading"
        )
    name = name or getattr(model, "model_name", None)
    if not name:
        raise ConfigError("save_weights needs the registry name of the model (name=...)")
    arch = arch_config_of(model)
    own = getattr(model, "data_config", None)  # what the model carries (sknet.DataConfig)
    own = own if isinstance(own, DataConfig) else None
    if classes is None:
        classes = own.classes if own is not None else getattr(model, "class_names", None)
    if preprocess is None and own is not None:
        preprocess = own.preprocess
    if classes is not None:
        classes = [str(c) for c in classes]
        if len(classes) != int(m.num_classes):
            raise ConfigError(
                f"save_weights: {len(classes)} class names for a model with "
                f"{model.num_classes} classes"
            )
    if overrides is None:
        overrides = getattr(model, "model_overrides", None) or {}
    meta = {
        "sknet_format": WEIGHTS_FORMAT,
        "sknet_format_version": str(WEIGHTS_FORMAT_VERSION),
        "sknet_model": str(name),
        "num_classes": str(int(m.num_classes)),
        "in_chans": str(int(m.in_chans)),
        "model_overrides": json.dumps(jsonable(dict(overrides))),
    }
    if arch is not None:
        meta["sknet_arch"] = json.dumps(arch)
    if classes is not None:
        meta["sknet_classes"] = json.dumps(classes)
    if isinstance(preprocess, Preprocess):
        preprocess = preprocess.to_dict()
    if preprocess is not None:
        meta["sknet_preprocess"] = json.dumps(jsonable(dict(preprocess)))
    if provenance is not None:
        meta["sknet_provenance"] = json.dumps(jsonable(dict(provenance)))
    meta.update(extra or {})
    return meta


def save_weights(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    name: str | None = None,
    overrides: dict[str, Any] | None = None,
    classes: list[str] | tuple[str, ...] | None = None,
    preprocess: Mapping[str, Any] | Preprocess | None = None,
    provenance: dict[str, Any] | None = None,
    extra: dict[str, str] | None = None,
) -> Path:
    """Save ``model``'s state dict as safetensors (atomically) with its full build metadata.

    Args:
        model: a model built by :func:`sknet.create_model` (or loaded by :func:`sknet.load`).
            Deployed models (:func:`sknet.deploy`) are refused: their BN is folded away and they
            are inference-only; save the model before deploying it.
        name: registry name (default: the model's own).
        overrides: the build-time overrides, recorded for information (the full config is what
            loading uses).
        classes: class names in label order; default: the model's ``data_config.classes``.
        preprocess: input preparation (a :class:`sknet.Preprocess` or its fields); default:
            the model's ``data_config.preprocess``.
        provenance: where the weights come from (JSON-able dict).
        extra: further string metadata.
    """
    meta = weights_metadata(
        model,
        name=name,
        overrides=overrides,
        classes=classes,
        preprocess=preprocess,
        provenance=provenance,
        extra=extra,
    )
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return atomic_save(lambda tmp: save_file(state, tmp, metadata=meta), path)


def checkpoint_meta(
    model: nn.Module,
    *,
    name: str,
    overrides: Mapping[str, Any],
    classes: list[str] | tuple[str, ...] | None,
    image_size: int,
    data: str | None,
    mean: Any,
    std: Any,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``meta`` table a training checkpoint records about its network and inputs (the
    checkpoint dialect of the schema, read back by :func:`read_checkpoint_meta`)."""
    m: Any = model
    meta: dict[str, Any] = {
        "model": name,
        "num_classes": int(m.num_classes),
        "in_chans": int(m.in_chans),
        "model_overrides": jsonable(dict(overrides)),
        "arch": arch_config_of(model),
        "classes": list(classes) if classes else None,
        "image_size": int(image_size),
        "data": data,
        "mean": [float(x) for x in mean],
        "std": [float(x) for x in std],
    }
    if provenance:  # fine-tuned runs only: earlier checkpoints have no such key
        meta["provenance"] = dict(provenance)
    return meta


# ----------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class FileMeta:
    """What a weights file or a checkpoint says about its model, every value checked."""

    name: str
    arch: dict[str, Any] | None
    overrides: dict[str, Any]
    num_classes: int | None
    in_chans: int
    preprocess: Preprocess
    classes: Any = None  # the raw list; checked against the model once it is built
    data: str | None = None
    data_dir: str | None = None
    train_config: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


def check_name(name: Any, where: Path | str) -> str:
    """``name`` if it is a registry model, else a :class:`FileFormatError`."""
    if not isinstance(name, str) or name not in list_models():
        raise FileFormatError(
            f"{where}: records model {_show(name)!r}, which this version of sknet does not know"
        )
    return name


def _json_meta(meta: Mapping[str, str], key: str, path: Path, default: Any = None) -> Any:
    """Metadata entry ``key`` parsed as JSON with bounded size and depth
    (:func:`sknet._limits.parse_json`)."""
    if key not in meta:
        return default
    try:
        return _limits.parse_json(meta[key], key, path)
    except FileFormatError:
        raise
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise FileFormatError(
            f"{path}: metadata {key!r} cannot be read: {str(exc)[:120]}; the file is corrupt or "
            "hostile"
        ) from None


def _int_meta(
    meta: Mapping[str, str], key: str, path: Path, default: int | None, *, lo: int = 0, hi: int
) -> int | None:
    """Metadata entry ``key`` as an integer in ``[lo, hi]``, or ``default`` when absent."""
    if key not in meta:
        return default
    try:
        value = int(meta[key])
    except ValueError:
        raise FileFormatError(
            f"{path}: metadata {key!r} = {meta[key][:40]!r} is not an integer; the file is corrupt"
        ) from None
    if not lo <= value <= hi:
        raise FileFormatError(
            f"{path}: metadata {key!r} = {str(value)[:40]} is outside [{lo}, {hi}]; the file is "
            "corrupt or hostile"
        )
    return value


def check_counts(num_classes: Any, in_chans: Any, where: Path | str) -> tuple[int | None, int]:
    """``num_classes`` (None, or in ``[0, MAX_CLASSES]``) and ``in_chans`` (in
    ``[1, MAX_IN_CHANS]``) recorded by ``where``."""
    _guard_int(num_classes, "num_classes", where, FileFormatError)
    _guard_int(in_chans, "in_chans", where, FileFormatError)
    if num_classes is not None:
        num_classes = _limits.bounded_int(
            num_classes, "num_classes", lo=0, hi=_limits.MAX_CLASSES, where=where
        )
    in_chans = _limits.bounded_int(in_chans, "in_chans", lo=1, hi=_limits.MAX_IN_CHANS, where=where)
    return num_classes, in_chans


def _or(value: Any, default: Any) -> Any:
    """``value or default`` for a value from a file, which may be a tensor (whose truth value
    raises)."""
    if value is None:
        return default
    if isinstance(value, (str, bytes, list, tuple, dict, int, float)) and not value:
        return default
    return value


def _table(value: Any, key: str, where: Path) -> dict[str, Any]:
    """A metadata value that must be a table (None: an empty one)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FileFormatError(f"{where}: metadata {key!r} is not a table")
    return value


def _text(value: Any, key: str, where: Path) -> str | None:
    """A metadata value that must be a short string (or None)."""
    if value is None or (isinstance(value, str) and not value):
        return None
    if not isinstance(value, str) or len(value) > 4096:
        raise FileFormatError(f"{where}: metadata {key!r} is not a short string")
    return value


def _default_size(name: str, fields: Any) -> Any:
    """The input size a model was built for: its recorded ``default_input_size``, else its
    registry entry's."""
    if isinstance(fields, dict) and fields.get("default_input_size") is not None:
        return fields["default_input_size"]
    return get_entry(name).input_size


def _file_preprocess(
    pre: Any,
    size: Any,
    data: str | None,
    mean: Any,
    std: Any,
    where: Path,
    key: str,
) -> Preprocess:
    """A file's preprocessing: its ``sknet_preprocess`` table when present (every field checked,
    :meth:`Preprocess.from_dict`), else the default for its image size, data and mean/std (also
    checked)."""
    if pre:
        return Preprocess.from_dict(pre, where=f"{where}: invalid {key!r} metadata")
    label = f"{where}: invalid preprocessing metadata"
    _guard_int(size, "image size", label, FileFormatError)
    size = _limits.check_image_side(size, "image size", where=label)
    if mean is not None and std is not None:
        mean = _triple(mean, "mean", label, FileFormatError)
        std = _triple(std, "std", label, FileFormatError, positive=True)
    return default_preprocess(size, data, mean, std)


def classes_of(value: Any, num_classes: int, where: Path) -> tuple[str, ...] | None:
    """Recorded class names, which must be one per class of the model."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != num_classes:
        raise FileFormatError(
            f"{where}: recorded class names do not match the model's {num_classes} classes"
        )
    return tuple(_show(c, 1000) for c in value)


def read_weights_meta(path: Path, *, name: str | None = None) -> FileMeta:
    """The checked metadata of a safetensors weights file (``name``: for files without sknet
    metadata). Nothing but the header is read."""
    meta = read_metadata(path)
    name = name or meta.get("sknet_model")
    if not name and "sknet_dense" in meta:  # sknet.dense.io.DENSE_METADATA_KEY
        raise FileFormatError(
            f"{path} is an sknet detector or segmenter, not a classifier: sknet eval, predict "
            "and analyze take it (in Python: sknet.dense.load_dense); this command takes "
            "classifiers"
        )
    if not name:
        raise FileFormatError(
            f"{path} has no 'sknet_model' metadata (not written by sknet): pass the model name, "
            "or convert it with `sknet convert`"
        )
    check_name(name, path)
    overrides = _table(_json_meta(meta, "model_overrides", path, {}), "model_overrides", path)
    arch = _json_meta(meta, "sknet_arch", path)
    if arch is not None and not isinstance(arch, dict):
        raise FileFormatError(f"{path}: metadata 'sknet_arch' is not a table")
    num_classes = _int_meta(meta, "num_classes", path, None, hi=_limits.MAX_CLASSES)
    in_chans = _int_meta(meta, "in_chans", path, 3, hi=_limits.MAX_IN_CHANS) or 3
    cfg = _json_meta(meta, "sknet_train_config", path)
    if cfg is not None and not isinstance(cfg, dict):
        raise FileFormatError(f"{path}: metadata 'sknet_train_config' is not a table")
    cfg = cfg or {}
    data = _text(meta.get("sknet_data") or cfg.get("data"), "sknet_data", path)
    preprocess = _file_preprocess(
        _json_meta(meta, "sknet_preprocess", path),
        meta.get("sknet_image_size") or _default_size(name, None),
        data,
        _json_meta(meta, "sknet_mean", path),
        _json_meta(meta, "sknet_std", path),
        path,
        "sknet_preprocess",
    )
    classes = _json_meta(meta, "sknet_classes", path)
    provenance = _table(_json_meta(meta, "sknet_provenance", path, {}), "sknet_provenance", path)
    if "converted_from" in meta:
        provenance.setdefault("converted_from", meta["converted_from"])
    return FileMeta(
        name=name,
        arch=arch,
        overrides=overrides,
        num_classes=num_classes,
        in_chans=in_chans,
        preprocess=preprocess,
        classes=classes,
        data=data,
        data_dir=_text(cfg.get("data_dir"), "sknet_train_config.data_dir", path),
        train_config=cfg or None,
        provenance=provenance,
    )


def read_checkpoint_meta(ck: Mapping[str, Any], path: Path) -> FileMeta:
    """The checked model metadata of a training checkpoint read by
    :func:`sknet.hub.read.read_checkpoint`."""
    meta = ck.get("meta")
    if not isinstance(meta, dict) or "model" not in meta or "model" not in ck:
        raise FileFormatError(f"{path} is an sknet checkpoint without model metadata")
    name = check_name(meta["model"], path)
    num_classes, in_chans = check_counts(meta.get("num_classes"), meta.get("in_chans", 3), path)
    overrides = _or(meta.get("model_overrides"), {})
    if not isinstance(overrides, dict):
        raise FileFormatError(f"{path}: the checkpoint's model_overrides is not a table")
    arch = meta.get("arch")
    if arch is not None and not isinstance(arch, dict):
        raise FileFormatError(f"{path}: the checkpoint's arch is not a table")
    cfg = _or(ck.get("config"), {})
    if not isinstance(cfg, dict):
        raise FileFormatError(f"{path}: the checkpoint's config is not a table")
    data = _text(_or(meta.get("data"), cfg.get("data")), "data", path)
    size = _or(meta.get("image_size"), None)
    if size is None:
        size = _default_size(name, arch or overrides)
    preprocess = _file_preprocess(None, size, data, meta.get("mean"), meta.get("std"), path, "")
    provenance = _table(meta.get("provenance"), "provenance", path)
    return FileMeta(
        name=name,
        arch=arch,
        overrides=dict(overrides),
        num_classes=num_classes,
        in_chans=in_chans,
        preprocess=preprocess,
        classes=meta.get("classes"),
        data=data,
        data_dir=_text(cfg.get("data_dir"), "config.data_dir", path),
        train_config=cfg or None,
        provenance=dict(provenance),
    )

"""Weights files: safetensors whose metadata says exactly which network they belong to.

A weights file is self-describing: :func:`sknet.load` (or :func:`load_weights`) rebuilds the
model it came from. Metadata (all values are strings, JSON where structured):

* ``sknet_format`` = ``"sknet-weights"``, ``sknet_format_version`` (2 since the full config);
* ``sknet_model`` (registry name), ``num_classes``, ``in_chans``;
* ``sknet_arch``: the **full resolved architecture config** (every field of the family's config
  dataclass, branch specs as text). Loading rebuilds from it, so a model built with overrides
  never comes back as the default network;
* ``model_overrides``: the overrides given at build time (kept for older readers);
* ``sknet_classes``: the class names, in label order (when known);
* ``sknet_preprocess``: how inputs must be prepared (see :class:`sknet.loading.Preprocess`);
* ``sknet_provenance``: where the weights came from (training run, conversion, init weights);
* training runs add ``sknet_train_config``, ``sknet_data``, ``sknet_image_size``,
  ``sknet_mean``/``sknet_std``.

Files written before the full config existed (format 1: name and overrides only) keep loading.
Files from strangers are checked before anything is allocated on their say-so (bounded metadata,
the model sized on the ``meta`` device against the header, floating and finite tensors only):
see :mod:`sknet.loading` and :mod:`sknet._limits`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from sknet._files import atomic_save
from sknet._json import jsonable
from sknet.errors import ConfigError

__all__ = [
    "WEIGHTS_FORMAT",
    "arch_config_of",
    "atomic_save",
    "load_weights",
    "read_metadata",
    "save_weights",
]

WEIGHTS_FORMAT = "sknet-weights"
WEIGHTS_FORMAT_VERSION = 2


def arch_config_of(model: nn.Module) -> dict[str, Any] | None:
    """The full resolved architecture config of a model built by ``create_model`` (as JSON
    values), or None for a model built another way."""
    cfg = getattr(model, "model_config", None)
    if cfg is None or not dataclasses.is_dataclass(cfg):
        return None
    return {f.name: jsonable(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def save_weights(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    name: str | None = None,
    overrides: dict[str, Any] | None = None,
    classes: list[str] | tuple[str, ...] | None = None,
    preprocess: dict[str, Any] | None = None,
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
        classes: class names in label order; default: ``model.class_names`` when set.
        preprocess: input preparation (``sknet.loading.Preprocess`` fields).
        provenance: where the weights come from (JSON-able dict).
        extra: further string metadata.
    """
    from safetensors.torch import save_file

    from sknet.deploy import is_deployed

    if is_deployed(model):
        raise ConfigError(
            "save_weights: this model came out of sknet.deploy (BatchNorm folded, "
            "inference-only) and cannot be reloaded as a trainable network; save the model "
            "before deploying it, and deploy again after loading"
        )
    name = name or getattr(model, "model_name", None)
    if not name:
        raise ConfigError("save_weights needs the registry name of the model (name=...)")
    arch = arch_config_of(model)
    if classes is None:
        classes = getattr(model, "class_names", None)
    if classes is not None:
        classes = [str(c) for c in classes]
        if len(classes) != int(model.num_classes):
            raise ConfigError(
                f"save_weights: {len(classes)} class names for a model with "
                f"{model.num_classes} classes"
            )
    if overrides is None:
        overrides = getattr(model, "model_overrides", None) or {}
    meta = {
        "sknet_format": WEIGHTS_FORMAT,
        "sknet_format_version": str(WEIGHTS_FORMAT_VERSION),
        "sknet_model": name,
        "num_classes": str(int(model.num_classes)),
        "in_chans": str(int(model.in_chans)),
        "model_overrides": json.dumps(jsonable(dict(overrides))),
    }
    if arch is not None:
        meta["sknet_arch"] = json.dumps(arch)
    if classes is not None:
        meta["sknet_classes"] = json.dumps(classes)
    if preprocess is not None:
        meta["sknet_preprocess"] = json.dumps(jsonable(preprocess))
    if provenance is not None:
        meta["sknet_provenance"] = json.dumps(jsonable(provenance))
    meta.update(extra or {})
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return atomic_save(lambda tmp: save_file(state, tmp, metadata=meta), path)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file (empty dict when it has none)."""
    from safetensors import safe_open

    from sknet.errors import FileFormatError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise FileFormatError(f"{path} is not a readable safetensors file: {exc}") from None


def load_weights(
    path: str | os.PathLike, *, name: str | None = None, num_classes: int | None = None
) -> nn.Module:
    """Rebuild a model from a weights file written by :func:`save_weights` (or
    ``sknet convert``); the same as ``sknet.load(path)``.

    ``name``/``num_classes`` are needed only for files without sknet metadata.
    """
    from sknet.loading import load

    model, _ = load(path, name=name, num_classes=num_classes)
    return model

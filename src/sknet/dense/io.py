"""Saving and loading SK detectors and segmenters (safetensors with their build, checked).

A dense model file is a safetensors state dict whose metadata ``sknet_dense`` records the build
(:meth:`DenseModel.build_args`: backbone, task, head, classes count, image size, object sizes,
FPN width, BN mode, backbone overrides), next to the usual ``sknet_classes`` and
``sknet_preprocess``. :func:`load_dense` reads a run directory, its ``model.safetensors`` or a
checkpoint of the run, and treats the file as a stranger's: the metadata is parsed with bounds
(size, nesting, integer ranges, known names), the model is built only from validated values, and
every tensor's shape and dtype is compared with the model before any tensor data is read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from sknet._files import atomic_save
from sknet._limits import MAX_ARCH_STR, bounded_int, check_image_side, parse_json
from sknet.dense.models import (
    DETECTION_HEADS,
    SEGMENTATION_HEADS,
    DenseModel,
    build_dense_model,
)
from sknet.errors import FileFormatError, MissingFileError
from sknet.hub.read import (
    check_state_finite,
    check_state_fits,
    read_checkpoint,
    read_metadata,
    read_safetensors,
    safetensors_specs,
)
from sknet.models import list_models
from sknet.preprocess import Preprocess

__all__ = ["DENSE_METADATA_KEY", "is_dense_source", "load_dense", "save_dense"]

#: The safetensors metadata entry that marks (and describes) a dense model.
DENSE_METADATA_KEY = "sknet_dense"
_MAX_CLASSES = 100_000


def save_dense(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    classes: list[str] | tuple[str, ...],
    preprocess: dict[str, Any],
    provenance: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (a :class:`DenseModel`) to ``path`` atomically with its build."""
    if not isinstance(model, DenseModel):
        raise TypeError(f"save_dense needs a DenseModel, got {type(model).__name__}")
    meta = {
        DENSE_METADATA_KEY: json.dumps(model.build_args()),
        "sknet_classes": json.dumps(list(classes)),
        "sknet_preprocess": json.dumps(preprocess),
        "sknet_provenance": json.dumps(provenance or {}),
    }
    if train_config is not None:
        meta["sknet_train_config"] = json.dumps(train_config)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return atomic_save(lambda tmp: save_file(state, tmp, metadata=meta), path)


def _weights_file(source: str | os.PathLike) -> Path:
    path = Path(source)
    if path.is_dir():
        path = path / "model.safetensors"
        if not path.is_file():
            last = Path(source) / "checkpoints" / "last.pt"
            if last.is_file():
                return last
            raise MissingFileError(
                f"{source} holds no model.safetensors and no checkpoints/last.pt: not a "
                "finished (or started) detection/segmentation run"
            )
    elif not path.is_file():
        raise MissingFileError(f"no such file or run directory: {source}")
    return path


def is_dense_source(source: str | os.PathLike) -> bool:
    """Whether ``source`` (run directory, ``.safetensors`` file or checkpoint) holds a dense
    model (False for classifiers and for anything unreadable: the classifier path then reports
    the problem)."""
    try:
        path = _weights_file(source)
        if path.suffix == ".pt":
            meta = read_checkpoint(path).get("meta") or {}
            return isinstance(meta, dict) and "dense" in meta
        return DENSE_METADATA_KEY in read_metadata(path)
    except Exception:
        return False


def _checked_args(raw: Any, where: object) -> dict[str, Any]:
    """The build arguments recorded in a file, validated before anything is built."""
    if not isinstance(raw, dict):
        raise FileFormatError(f"{where}: the dense build is not a table")

    def name(key: str, allowed: tuple[str, ...] | list[str]) -> str:
        v = raw.get(key)
        if not isinstance(v, str) or len(v) > MAX_ARCH_STR or v not in allowed:
            raise FileFormatError(f"{where}: {key} = {str(v)[:60]!r} is not one of sknet's")
        return v

    task = name("task", ("detect", "segment"))
    heads = DETECTION_HEADS if task == "detect" else SEGMENTATION_HEADS
    sizes = raw.get("object_sizes")
    if not (isinstance(sizes, list) and len(sizes) == 2):
        raise FileFormatError(f"{where}: object_sizes must be two numbers")
    overrides = raw.get("backbone_overrides") or {}
    if not isinstance(overrides, dict) or len(json.dumps(overrides)) > 4096:
        raise FileFormatError(f"{where}: backbone_overrides must be a small table")
    return {
        "backbone": name("backbone", list_models()),
        "task": task,
        "head": name("head", heads),
        "num_classes": bounded_int(
            raw.get("num_classes"), "num_classes", hi=_MAX_CLASSES, where=where
        ),
        "image_size": check_image_side(raw.get("image_size"), "image_size", where=where),
        "object_sizes": tuple(
            float(bounded_int(round(float(s)), "object_sizes", hi=4096, where=where)) for s in sizes
        ),
        "fpn_channels": bounded_int(raw.get("fpn_channels"), "fpn_channels", hi=4096, where=where),
        "frozen_bn": bool(raw.get("frozen_bn", False)),
        "backbone_overrides": overrides,
        "mean": tuple(float(x) for x in raw.get("mean", (0.5, 0.5, 0.5)))[:3],
        "std": tuple(float(x) for x in raw.get("std", (0.5, 0.5, 0.5)))[:3],
    }


def load_dense(source: str | os.PathLike) -> tuple[DenseModel, dict[str, Any]]:
    """The dense model of ``source`` (eval mode, CPU) and its record: ``classes``,
    ``preprocess`` (:class:`sknet.Preprocess`), ``provenance``, ``path``, ``build`` and
    ``train_config`` (the run's config as a dict, None when the file records none)."""
    path = _weights_file(source)
    if path.suffix == ".pt":
        ckpt = read_checkpoint(path)
        meta = ckpt.get("meta") or {}
        if not isinstance(meta, dict) or "dense" not in meta:
            raise FileFormatError(f"{path} is not a detection/segmentation checkpoint")
        args = _checked_args(meta["dense"], path)
        classes = list(meta.get("classes") or [])
        pre = {
            "input_size": meta.get("image_size"),
            "mean": meta.get("mean"),
            "std": meta.get("std"),
        }
        provenance = dict(meta.get("provenance") or {})
        train_config = ckpt.get("config")
        state: dict[str, torch.Tensor] = dict(ckpt["model"])
        model = _build(args)
        check_state_fits(model, state, path)
    else:
        md = read_metadata(path)
        if DENSE_METADATA_KEY not in md:
            raise FileFormatError(
                f"{path} holds no {DENSE_METADATA_KEY!r} entry: it is not an sknet detector or "
                "segmenter (classifiers load with sknet.load)"
            )
        args = _checked_args(parse_json(md[DENSE_METADATA_KEY], DENSE_METADATA_KEY, path), path)
        classes = parse_json(md.get("sknet_classes", "[]"), "sknet_classes", path)
        pre = parse_json(md.get("sknet_preprocess", "{}"), "sknet_preprocess", path)
        provenance = parse_json(md.get("sknet_provenance", "{}"), "sknet_provenance", path)
        train_config = parse_json(md.get("sknet_train_config", "null"), "sknet_train_config", path)
        model = _build(args)
        specs = safetensors_specs(path)  # shapes from the header: nothing read yet
        check_state_fits(model, specs, path)
        state = read_safetensors(path)
    if (
        not isinstance(classes, list)
        or len(classes) != args["num_classes"]
        or not all(isinstance(c, str) and len(c) <= MAX_ARCH_STR for c in classes)
    ):
        raise FileFormatError(
            f"{path}: the class names do not match num_classes = {args['num_classes']}"
        )
    check_state_finite(state, path)
    model.load_state_dict(state)
    model.eval()
    preprocess = Preprocess(
        input_size=args["image_size"],
        resize=None,
        interpolation="bilinear",
        mean=tuple(pre.get("mean") or args["mean"]),
        std=tuple(pre.get("std") or args["std"]),
    )
    record = {
        "path": str(path),
        "classes": classes,
        "preprocess": preprocess,
        "provenance": provenance if isinstance(provenance, dict) else {},
        "build": args,
        "train_config": train_config if isinstance(train_config, dict) else None,
    }
    return model, record


def _build(args: dict[str, Any]) -> DenseModel:
    return build_dense_model(
        args["backbone"],
        task=args["task"],
        head=args["head"],
        num_classes=args["num_classes"],
        image_size=args["image_size"],
        object_sizes=args["object_sizes"],
        fpn_channels=args["fpn_channels"],
        frozen_bn=args["frozen_bn"],
        backbone_overrides=args["backbone_overrides"],
        mean=args["mean"],
        std=args["std"],
    )

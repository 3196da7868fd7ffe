"""Datasets and transforms for SKNet experiments.

* :class:`SyntheticShapes` - the built-in, download-free default: shape classes at widely varying
  object scales, where adaptive receptive fields help (see :mod:`sknet.data.synthetic`).
* :func:`build_cifar`, :func:`build_imagefolder` - real data from local files, never downloaded.
* :func:`train_transform`, :func:`eval_transform` - named augmentation presets.
* :func:`build_dataset` - one entry point by name.
* :class:`SyntheticDense`, :class:`CocoFolder` - detection / segmentation data (boxes, instance
  masks, semantic maps): built-in scenes of several shapes, or a COCO-format folder
  (see :mod:`sknet.data.dense`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset

from sknet.data.names import DATASET_NAMES, DEFAULT_SCALE_RANGE, DENSE_DATASET_NAMES, TASKS
from sknet.errors import ConfigError

from .dense import BadSample, CocoFolder, SyntheticDense, dense_collate, write_coco_folder
from .real import (
    CIFAR_SPECS,
    CIFARDataset,
    CorruptImageError,
    PathLike,
    RobustImageFolder,
    align_classes,
    build_cifar,
    build_imagefolder,
    load_image,
    to_rgb,
)
from .synthetic import SHAPE_CLASSES, SYNTHETIC_MEAN, SYNTHETIC_STD, SyntheticShapes
from .transforms import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TRANSFORM_KINDS,
    eval_resize_size,
    eval_transform,
    normalization,
    train_transform,
)

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "CIFAR_SPECS",
    "DATASET_NAMES",
    "DEFAULT_TRANSFORM",
    "DENSE_DATASET_NAMES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SHAPE_CLASSES",
    "SYNTHETIC_MEAN",
    "SYNTHETIC_STD",
    "TASKS",
    "TRANSFORM_KINDS",
    "BadSample",
    "CIFARDataset",
    "CocoFolder",
    "CorruptImageError",
    "RobustImageFolder",
    "SyntheticDense",
    "SyntheticShapes",
    "align_classes",
    "build_cifar",
    "build_dataset",
    "build_imagefolder",
    "dense_collate",
    "eval_resize_size",
    "eval_transform",
    "load_image",
    "normalization",
    "to_rgb",
    "train_transform",
    "write_coco_folder",
]


#: Sentinel for :func:`build_dataset`'s ``transform``: use the preset for the dataset and split.
DEFAULT_TRANSFORM = "default"

_SYNTHETIC_DEFAULT_SIZE = {"train": 10_000, "val": 2_000, "test": 2_000}
_SPLITS = ("train", "val", "test")


def build_dataset(
    name: str,
    *,
    data_dir: PathLike | None = None,
    split: str = "train",
    image_size: int | None = None,
    transform: Callable[[Any], Any] | str | None = DEFAULT_TRANSFORM,
    num_samples: int | None = None,
    seed: int = 0,
    scale_range: tuple[float, float] = DEFAULT_SCALE_RANGE,
    zoom: float = 1.0,
    max_bad: int = 50,
) -> Dataset:
    """Build a dataset by name; the result always has ``num_classes`` and ``classes``.

    Args:
        name: One of :data:`DATASET_NAMES`.
        data_dir: Root folder for ``cifar10``/``cifar100``/``imagefolder`` (required there,
            ignored for ``synthetic``). Nothing is ever downloaded.
        split: ``"train"`` or ``"val"``; ``"test"`` is accepted for ``synthetic`` (a third
            stream) and for CIFAR (same as ``"val"``: the official test batch).
        image_size: Image side. ``synthetic``: canvas size (default 48). Real data: size
            used by the default transform (default 224 imagenet-style, 32 CIFAR).
        transform: ``"default"`` (:data:`DEFAULT_TRANSFORM`) picks :func:`train_transform` for
            ``split="train"`` and :func:`eval_transform` otherwise, normalised with the dataset's
            statistics; ``None`` applies no transform (``synthetic`` then yields ``[0, 1]``
            tensors, real datasets PIL images); any callable is used as is.
        num_samples: ``synthetic`` only: dataset length (default 10000 train, 2000 val/test).
        seed: ``synthetic`` only: base seed of the deterministic sample stream.
        scale_range: ``synthetic`` only: log-uniform object-size range (fraction of the canvas).
        zoom: ``synthetic`` only: object enlargement factor (see :meth:`SyntheticShapes.render`).
        max_bad: ``imagefolder`` only: unreadable images tolerated before ``RuntimeError``.

    Raises:
        ValueError: Unknown ``name`` (the message lists the valid names) or ``split``, or a
            missing ``data_dir`` for real data.
    """
    if name not in DATASET_NAMES:
        raise ConfigError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    if split not in _SPLITS:
        raise ConfigError(f"split must be one of {_SPLITS}, got {split!r}")
    train = split == "train"
    if isinstance(transform, str) and transform != DEFAULT_TRANSFORM:
        raise ConfigError(f"transform must be a callable, None or {DEFAULT_TRANSFORM!r}")
    kind = {"synthetic": "synthetic", "imagefolder": "imagenet"}.get(name, name)

    tf: Callable[[Any], Any] | None
    if transform == DEFAULT_TRANSFORM:
        tf_size = None if name == "synthetic" else image_size
        tf = train_transform(kind, tf_size) if train else eval_transform(kind, tf_size)
    else:
        tf = transform  # type: ignore[assignment]

    if name == "synthetic":
        n = _SYNTHETIC_DEFAULT_SIZE[split] if num_samples is None else num_samples
        return SyntheticShapes(
            num_samples=n,
            image_size=48 if image_size is None else image_size,
            seed=seed,
            split=split,
            scale_range=scale_range,
            zoom=zoom,
            transform=tf,
        )

    if data_dir is None:
        raise ConfigError(
            f"dataset {name!r} needs data_dir (a local folder; nothing is downloaded)"
        )
    if name in ("cifar10", "cifar100"):
        return build_cifar(name, data_dir, train=train, transform=tf)
    if split == "test":
        raise ConfigError("imagefolder supports split 'train' or 'val'")
    return build_imagefolder(data_dir, split=split, transform=tf, max_bad=max_bad)

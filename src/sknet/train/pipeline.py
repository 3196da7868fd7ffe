"""Data pipeline for training and evaluation on top of :mod:`sknet.data`.

Reproducibility: the random augmentation of a training sample is a pure function of
``(seed, epoch, index)`` — each sample's transform runs under a private torch generator seed —
and the sample order of an epoch is a pure function of ``(seed, epoch)``
(:class:`torch.utils.data.DistributedSampler`). Neither depends on the number of DataLoader
workers or on where a run was interrupted, which is what makes mid-epoch resume exact.

Unreadable images (imagefolder) are skipped by :class:`sknet.data.RobustImageFolder`; the file
names travel with each batch to the main process, so the count is complete even with workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from sknet.data import (
    DEFAULT_SCALE_RANGE,
    align_classes,
    build_dataset,
    eval_transform,
    normalization,
    train_transform,
)
from sknet.errors import ConfigError
from sknet.train.config import TrainConfig

__all__ = [
    "DataBundle",
    "PositionedSampler",
    "SeededTransformDataset",
    "build_data",
    "eval_loader",
    "make_eval_dataset",
    "sample_seed",
]

log = logging.getLogger("sknet.train")

# Pre-render the synthetic split in memory when it takes at most this many bytes.
_CACHE_LIMIT_BYTES = 2 * 1024**3


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Augmentation seed of sample ``index`` in ``epoch`` (a well-mixed 63-bit integer)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint64)[0] >> 1)


class _RenderedSynthetic(Dataset):
    """All images of a synthetic split rendered once and held as one float32 tensor."""

    def __init__(self, base: Any) -> None:
        n = len(base)
        first, _ = base[0] if n else (torch.zeros(3, 1, 1), 0)
        self.images = torch.empty((n, *first.shape), dtype=torch.float32)
        self.labels = torch.empty(n, dtype=torch.int64)
        for i in range(n):
            img, label = base[i]
            self.images[i] = img
            self.labels[i] = label
        self.num_classes = base.num_classes
        self.classes = getattr(base, "classes", None)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


class SeededTransformDataset(Dataset):
    """Apply ``transform`` to ``base`` samples; returns ``(image, label, bad_files)``.

    A key is either an index (evaluation: the transform is deterministic) or
    ``(index, seed)`` (training: the transform runs with torch's CPU generator seeded by
    ``seed``; the generator's previous state is restored afterwards).
    ``bad_files`` is a newline-joined string of unreadable files first met while loading this
    sample (imagefolder only; empty otherwise).
    """

    def __init__(self, base: Any, transform: Callable[[Any], Any] | None) -> None:
        self.base = base
        self.transform = transform
        self.num_classes = int(base.num_classes)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, int, str]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        bad = getattr(self.base, "bad_files", None)
        n_bad = len(bad) if bad is not None else 0
        image, label = self.base[index]
        if self.transform is not None:
            if seed is None:
                image = self.transform(image)
            else:
                # Seed the CPU generator for this sample only (its state is restored after);
                # torchvision's random transforms draw from it.
                gen = torch.default_generator
                saved = gen.get_state()
                gen.manual_seed(seed)
                try:
                    image = self.transform(image)
                finally:
                    gen.set_state(saved)
        new_bad = "\n".join(bad[n_bad:]) if bad is not None and len(bad) > n_bad else ""
        return image, int(label), new_bad


class PositionedSampler(DistributedSampler):
    """A :class:`DistributedSampler` that can start mid-epoch and yields ``(index, seed)``.

    :meth:`set_position` selects the epoch (the shuffle order) and how many of this rank's
    samples of that epoch were already consumed (they are skipped without being loaded).
    """

    def __init__(
        self, dataset: Dataset, num_replicas: int, rank: int, seed: int, shuffle: bool = True
    ) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
            drop_last=True,
        )  # fmt: skip
        self.start = 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        self.set_epoch(epoch)
        self.start = int(start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())
        for i in indices[self.start :]:
            yield (int(i), sample_seed(self.seed, self.epoch, int(i)))

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


class _ShardSampler(torch.utils.data.Sampler[int]):
    """Every ``world``-th index starting at ``rank``: an exact partition (no padding)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.n, self.rank, self.world = n, rank, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


@dataclass
class DataBundle:
    """Datasets of a run and what the model and evaluation need to know about them."""

    train: SeededTransformDataset
    val: SeededTransformDataset
    num_classes: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    kind: str  # transform kind: synthetic | cifar10 | cifar100 | imagenet
    classes: tuple[str, ...] | None = None  # class names in label order


def _stats(cfg_data: str) -> tuple[str, tuple[Any, Any]]:
    kind = {"imagefolder": "imagenet"}.get(cfg_data, cfg_data)
    return kind, normalization(kind)


def make_eval_dataset(
    data: str,
    *,
    data_dir: str | None,
    image_size: int,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    num_samples: int = 2000,
    seed: int = 0,
    scale_range: tuple[float, float] = DEFAULT_SCALE_RANGE,
    max_bad: int = 50,
    split: str = "val",
    cache: bool = False,
    channel_order: str = "RGB",
    crop_ratio: float = 0.875,
    interpolation: str = "bilinear",
) -> SeededTransformDataset:
    """The validation split of ``data`` with the evaluation transform at ``image_size``.

    ImageNet-style data: resize the short side to ``image_size / crop_ratio`` (0.875: 224 ->
    256, 320 -> 366; ``interpolation`` as the weights were trained), then centre-crop
    ``image_size``. CIFAR: the 32x32 image (resized for another size). Synthetic: rendered
    natively at ``image_size``.
    """
    kind, (d_mean, d_std) = _stats(data)
    mean = tuple(d_mean if mean is None else mean)
    std = tuple(d_std if std is None else std)
    if data != "synthetic" and not data_dir:
        raise ConfigError(f"data={data!r} needs a data directory (--data-dir DIR)")
    base = build_dataset(
        data,
        data_dir=data_dir or None,
        split=split,
        image_size=image_size,
        transform=None,
        num_samples=num_samples if data == "synthetic" else None,
        seed=seed,
        scale_range=scale_range,
        max_bad=max_bad,
    )
    if data == "synthetic" and cache:
        base = _maybe_cache(base, image_size)
    tf = eval_transform(
        kind,
        image_size if data != "synthetic" else None,
        crop_ratio=crop_ratio,
        mean=mean,
        std=std,
        interpolation=interpolation,
    )
    if channel_order == "BGR":  # Caffe weights: flip before Normalize (mean/std are BGR)
        tf.transforms.insert(len(tf.transforms) - 1, _to_bgr)
    elif channel_order != "RGB":
        raise ConfigError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
    return SeededTransformDataset(base, tf)


def _to_bgr(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-3)


# The most recently rendered synthetic splits, so that repeated in-process runs (ablations) do
# not render the same images again. Keyed by everything a sample depends on; read-only use.
_RENDERED: dict[tuple[Any, ...], _RenderedSynthetic] = {}
_RENDERED_MAX = 4


def _maybe_cache(base: Any, image_size: int) -> Any:
    nbytes = len(base) * 3 * image_size * image_size * 4
    if nbytes > _CACHE_LIMIT_BYTES:
        log.info(
            "synthetic split too large to cache (%.1f GiB): rendering on the fly", nbytes / 2**30
        )
        return base
    key = (
        type(base).__qualname__,
        len(base),
        base.image_size,
        base.seed,
        base.split,
        tuple(base.scale_range),
        base.zoom,
    )
    hit = _RENDERED.pop(key, None)
    if hit is None:
        hit = _RenderedSynthetic(base)
    _RENDERED[key] = hit  # most recent last
    while len(_RENDERED) > _RENDERED_MAX:
        _RENDERED.pop(next(iter(_RENDERED)))
    return hit


def build_data(cfg: TrainConfig) -> DataBundle:
    """Train and val datasets of ``cfg`` (raises ``ValueError``/``FileNotFoundError`` for user
    errors such as a missing data directory)."""
    size = cfg.resolved_image_size()
    kind, (mean, std) = _stats(cfg.data)
    mean, std = cfg.mean or mean, cfg.std or std  # e.g. the fine-tuning init weights' own
    if cfg.data != "synthetic" and not cfg.data_dir:
        raise ConfigError(
            f"data={cfg.data!r} needs a data directory: pass --data-dir DIR (nothing is downloaded)"
        )
    base = build_dataset(
        cfg.data,
        data_dir=cfg.data_dir or None,
        split="train",
        image_size=size,
        transform=None,
        num_samples=cfg.num_samples if cfg.data == "synthetic" else None,
        seed=cfg.seed,
        scale_range=cfg.scale_range,
        max_bad=cfg.max_bad,
    )
    if cfg.data == "synthetic" and cfg.cache_data:
        base = _maybe_cache(base, size)
    if kind == "imagenet":
        tf = train_transform(
            kind,
            size,
            crop_scale=cfg.crop_scale,
            mean=mean,
            std=std,
            auto_augment=cfg.auto_augment,
        )
    else:
        tf = train_transform(
            kind,
            size if kind != "synthetic" else None,
            mean=mean,
            std=std,
            auto_augment=cfg.auto_augment,
        )
    train = SeededTransformDataset(base, tf)
    val = make_eval_dataset(
        cfg.data,
        data_dir=cfg.data_dir,
        image_size=size,
        mean=mean,
        std=std,
        num_samples=cfg.val_samples,
        seed=cfg.seed,
        scale_range=cfg.scale_range,
        max_bad=cfg.max_bad,
        cache=cfg.cache_data,
    )
    classes = tuple(str(c) for c in getattr(base, "classes", None) or ())
    if cfg.data == "imagefolder":
        if len(classes) < 2:
            raise ConfigError(
                f"{cfg.data_dir}/train has {len(classes)} class folder "
                f"({', '.join(classes)}): a classifier needs at least 2 classes"
            )
        align_classes(val.base, classes, f"{cfg.data_dir}/val")
        val.num_classes = int(val.base.num_classes)
    if val.num_classes != train.num_classes:
        raise ConfigError(
            f"train and val splits disagree on the number of classes "
            f"({train.num_classes} vs {val.num_classes}); check the class folders"
        )
    return DataBundle(
        train, val, train.num_classes, size, tuple(mean), tuple(std), kind, classes or None
    )


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    import random

    random.seed(seed)


def loader_kwargs(workers: int, device: torch.device) -> dict[str, Any]:
    kw: dict[str, Any] = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers > 0:
        kw.update(persistent_workers=False, worker_init_fn=_worker_init, prefetch_factor=4)
    return kw


def eval_loader(
    ds: Dataset, batch_size: int, rank: int, world: int, workers: int, device: torch.device
) -> DataLoader:
    """Loader over this rank's exact shard of ``ds`` (no padding, keeps the last batch)."""
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=_ShardSampler(len(ds), rank, world),  # type: ignore[arg-type]
        drop_last=False,
        **loader_kwargs(workers, device),
    )

"""Evaluation: top-1/top-5 error, loading trained models, and the paper's Table 2 protocol.

Table 2 of the SKNet paper reports single-crop top-1 error at 224x224 and 320x320. We follow the
usual protocol for the single centre crop: resize the short side to ``size / 0.875`` (256 for 224,
366 for 320) and crop the centre ``size x size``. For the synthetic data the images are rendered
natively at each size and CIFAR images are resized.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from sknet._device import autocast
from sknet._limits import check_image_side
from sknet.data import DATASET_NAMES, DEFAULT_SCALE_RANGE, align_classes, eval_resize_size
from sknet.errors import ConfigError, DataError
from sknet.hub.load import load
from sknet.hub.record import ModelRecord
from sknet.train.distributed import DistInfo, all_reduce_sum, resolve_device
from sknet.train.pipeline import eval_loader, make_eval_dataset

log = logging.getLogger("sknet")

__all__ = ["default_eval_sizes", "evaluate", "evaluate_source"]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset | DataLoader | Iterable[Any],
    *,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    amp: str = "none",
    channels_last: bool = False,
    workers: int = 0,
    dist_info: DistInfo | None = None,
    progress: bool = False,
    desc: str = "eval",
) -> dict[str, Any]:
    """Top-1/top-5 error (in %) and mean cross-entropy of ``model`` on ``data``.

    Args:
        model: a classifier returning logits; evaluated in ``eval()`` mode (restored after).
        data: a dataset of ``(image, label, ...)`` items or any iterable of such batches
            (e.g. a :class:`~torch.utils.data.DataLoader`).
        batch_size, workers: loader settings when ``data`` is a dataset.
        device: defaults to the device of the model's parameters.
        dist_info: when distributed, ``data`` must be this rank's shard; sums are all-reduced
            so every rank returns the metrics of the whole set, and ``n_local`` is this rank's
            own count.

    Returns:
        ``{"top1_err", "top5_err", "loss", "n", "top1_acc"}``; ``top5_err`` is None for models
        with 5 classes or fewer (it would always be 0). Samples labelled -1 (unreadable
        images) are not counted. ``"bad_files"`` lists unreadable images the data skipped (sknet
        imagefolder data), when there were any.
    """
    if device is None:
        try:
            device = next(model.parameters()).device
        except StopIteration:  # pragma: no cover - parameterless model
            device = torch.device("cpu")
    device = torch.device(device)
    batches: Iterable[Any]
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        batches = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=workers)
    else:
        batches = data  # a DataLoader or any iterable of batches
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=desc, leave=False, dynamic_ncols=True)
    was_training = model.training
    model.eval()
    try:
        sums, num_classes, bad = _sums(model, batches, device, amp, channels_last)
    finally:
        model.train(was_training)
    n_local = round(float(sums[3]))
    if dist_info is not None:
        all_reduce_sum(sums, dist_info)
    out = _metrics(sums, num_classes)
    if dist_info is not None and dist_info.distributed:
        out["n_local"] = n_local
    if bad:
        out["bad_files"] = bad  # this process's share when distributed
    return out


def _sums(
    model: nn.Module, data: Iterable[Any], device: torch.device, amp: str, channels_last: bool
) -> tuple[torch.Tensor, int, list[str]]:
    """Loss sum, top-1 hits, top-5 hits and count over ``data``; the class count; the
    unreadable files the data reported."""
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, n
    num_classes = 0
    bad: list[str] = []  # unreadable files reported by the data (imagefolder)
    for batch in data:
        images, labels = batch[0], batch[1]
        if len(batch) > 2 and isinstance(batch[2], (list, tuple)):
            bad.extend(n for entry in batch[2] if entry for n in str(entry).split("\n"))
        labels = torch.as_tensor(labels)
        keep = labels >= 0  # -1 marks an unreadable image: not counted (see RobustImageFolder)
        if not bool(keep.all()):
            images, labels = images[keep], labels[keep]
            if labels.numel() == 0:
                continue
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(images)
        logits = logits.float()
        num_classes = logits.shape[1]
        hit = logits.topk(min(5, num_classes), dim=1).indices.eq(labels[:, None])
        sums[0] += nn.functional.cross_entropy(logits, labels, reduction="sum").double()
        sums[1] += hit[:, 0].sum()
        sums[2] += hit.any(dim=1).sum()
        sums[3] += labels.numel()
    return sums, num_classes, bad


def _metrics(sums: torch.Tensor, num_classes: int) -> dict[str, Any]:
    loss, c1, c5, n = (float(x) for x in sums.cpu())
    n_int = round(n)
    if n_int == 0:
        raise DataError("evaluate: the data is empty (or every image was unreadable)")
    return {
        "top1_err": 100.0 * (1.0 - c1 / n),
        # With 5 classes or fewer every label is in the top 5: the figure says nothing.
        "top5_err": 100.0 * (1.0 - c5 / n) if num_classes > 5 else None,
        "top1_acc": 100.0 * c1 / n,
        "loss": loss / n,
        "n": n_int,
    }


# ---------------------------------------------------------------------------------------------
# Table 2 protocol
# ---------------------------------------------------------------------------------------------


def default_eval_sizes(data: str | None, image_size: int) -> list[int]:
    """ImageNet-scale models on ImageNet-style data (trained at 224 or more): the native size
    and 320/224 of it, the paper's Table 2 protocol (224 and 320). Anything else, e.g. a 48 px
    model on a folder of small images: the native size only (a 320/224 row would be a size
    nobody asked for)."""
    if data in ("imagefolder", "imagenet") and image_size >= 224:
        return [image_size, round(image_size * 320 / 224)]
    return [image_size]


def evaluate_source(
    source: str | os.PathLike,
    *,
    data: str | None = None,
    data_dir: str | None = None,
    sizes: list[int] | None = None,
    batch_size: int = 100,
    workers: int = 0,
    device: str = "auto",
    val_samples: int | None = None,
    amp: str = "none",
    progress: bool = False,
    threads: int = 0,
    random_weights: bool = False,
) -> dict[str, Any]:
    """Single-centre-crop top-1/top-5 error of a trained model at one or more sizes.

    ``sizes`` are checked before any work: each in ``[model.min_input_size,``
    :data:`sknet._limits.MAX_IMAGE_SIDE` ``]`` (else :class:`~sknet.errors.ConfigError`).
    ``data``/``data_dir`` default to the run's own; for synthetic data the run's val split
    (same seed, sample count and object-scale range) is used. ``threads`` > 0 sets torch's CPU
    threads for the call (restored after). A bare registry name (random weights) warns unless
    ``random_weights``.

    Returns:
        ``{"source", "model", "data", "num_classes", "results": [{"size", "resize", "top1_err",
        "top5_err", "loss", "n"}, ...]}``.
    """
    if threads < 0:
        raise ConfigError(f"threads must be >= 0, got {threads}")
    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _evaluate_source(
            source,
            data,
            data_dir,
            sizes,
            batch_size,
            workers,
            device,
            val_samples,
            amp,
            progress,
            random_weights,
        )
    finally:
        torch.set_num_threads(saved_threads)


def _evaluate_source(
    source: str | os.PathLike,
    data: str | None,
    data_dir: str | None,
    sizes: list[int] | None,
    batch_size: int,
    workers: int,
    device: str,
    val_samples: int | None,
    amp: str,
    progress: bool,
    random_weights: bool = False,
) -> dict[str, Any]:
    if sizes is not None:  # before loading anything: a huge size would ask for tens of GiB
        sizes = [check_image_side(s, "sizes", config=True) for s in sizes]
    model, record = load(source, random_weights=random_weights)
    data, data_dir, same_data = _eval_data(source, record, data, data_dir)
    native = record.image_size if same_data else (32 if data.startswith("cifar") else 224)
    if sizes is None:
        sizes = default_eval_sizes(data, native)
    for s in sizes:
        if s < getattr(model, "min_input_size", 1):
            raise ConfigError(
                f"evaluation size {s} is smaller than the model's minimum input "
                f"{model.min_input_size} (its total stride)"
            )
    dev = resolve_device(device)
    model.to(dev)
    channels_last = dev.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    results = []
    for size in sizes:
        ds = _eval_dataset(record, data, data_dir, size, same_data, val_samples)
        if ds.num_classes != model.num_classes:
            raise ConfigError(
                f"the model has {model.num_classes} classes but {data} has {ds.num_classes}"
            )
        loader = eval_loader(ds, batch_size, 0, 1, workers, dev)
        r = evaluate(
            model,
            loader,
            device=dev,
            amp=amp,
            channels_last=channels_last,
            progress=progress,
            desc=f"eval {size}px",
        )
        ratio = crop_ratio(record) if _own_preprocessing(record, data, same_data) else 0.875
        resize = eval_resize_size(size, ratio) if data == "imagefolder" else None
        results.append({"size": size, "resize": resize, **r})
    return {
        "source": record.source,
        "model": record.name,
        "model_overrides": record.model_overrides,
        "data": data,
        "data_dir": data_dir,
        "num_classes": record.num_classes,
        "protocol": "single centre crop"
        + (" (resize short side to size / crop ratio)" if data == "imagefolder" else ""),
        "results": [
            {
                k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v)
                for k, v in r.items()
            }
            for r in results
        ],
    }


def _eval_data(
    source: str | os.PathLike, record: ModelRecord, data: str | None, data_dir: str | None
) -> tuple[str, str | None, bool]:
    """The data to evaluate on (default: the weights' own), its folder, and whether it is the
    data the weights were trained on."""
    cfg = record.train_config or {}
    data = data or record.data or ("imagefolder" if record.preprocess.resize else None)
    if not data:
        raise ConfigError(
            f"{source}: the weights do not say which data they were trained on; pass --data"
        )
    if data not in DATASET_NAMES:
        raise ConfigError(f"unknown data {data!r}; expected {', '.join(DATASET_NAMES)}")
    same_data = data == record.data
    if data_dir is None and same_data:
        data_dir = record.data_dir or cfg.get("data_dir") or None
    if data != "synthetic" and not data_dir:
        raise ConfigError(f"data={data!r} needs a data directory: pass --data-dir DIR")
    return data, data_dir, same_data


def _eval_dataset(
    record: ModelRecord,
    data: str,
    data_dir: str | None,
    size: int,
    same_data: bool,
    val_samples: int | None,
) -> Any:
    """The evaluation split at ``size``, prepared as the weights expect, classes matched."""
    cfg = record.train_config or {}
    own_pre = _own_preprocessing(record, data, same_data)
    ds = make_eval_dataset(
        data,
        data_dir=data_dir,
        image_size=size,
        mean=tuple(record.preprocess.mean) if own_pre else None,
        std=tuple(record.preprocess.std) if own_pre else None,
        num_samples=val_samples or int(cfg.get("val_samples", 2000)),
        seed=int(cfg.get("seed", 0)),
        scale_range=tuple(cfg.get("scale_range", DEFAULT_SCALE_RANGE)),
        max_bad=int(cfg.get("max_bad", 50)),
        channel_order=record.preprocess.channel_order if own_pre else "RGB",
        crop_ratio=crop_ratio(record) if own_pre else 0.875,
        interpolation=record.preprocess.interpolation if own_pre else "bilinear",
    )
    _match_classes(ds, record, data, data_dir)
    return ds


def _own_preprocessing(record: ModelRecord, data: str, same_data: bool) -> bool:
    """Whether the weights' own preprocessing applies: to their own kind of data (foreign
    ImageNet weights carry no data name: theirs is imagefolder)."""
    return same_data or (record.data is None and data == "imagefolder")


def crop_ratio(record: ModelRecord) -> float:
    """The weights' centre-crop ratio (crop / short-side resize; timm's crop_pct), 0.875 when
    they do not say."""
    pre = record.preprocess
    return pre.input_size / pre.resize if pre.resize else 0.875


def _match_classes(ds: Any, record: ModelRecord, data: str, data_dir: str | None) -> None:
    """Match the evaluation folder's classes to the model's by name (imagefolder data)."""
    if data != "imagefolder":
        return

    if record.classes is None:
        log.warning(
            "%s records no class names: labels of %s/val are assumed to follow the model's "
            "class order (sorted folder names), which cannot be checked",
            record.source,
            data_dir,
        )
        return
    reference = list(record.classes)
    if record.class_ids and set(ds.base.classes) <= set(record.class_ids):
        reference = list(record.class_ids)  # folders named by id (ImageNet: n01440764, ...)
    align_classes(ds.base, reference, f"{data_dir}/val")
    ds.num_classes = int(ds.base.num_classes)

"""Evaluation: top-1/top-5 error, loading trained models, and the paper's Table 2 protocol.

Table 2 of the SKNet paper reports single-crop top-1 error at 224x224 and 320x320. We follow the
usual protocol for the single centre crop: resize the short side to ``size / 0.875`` (256 for 224,
366 for 320) and crop the centre ``size x size``. For the synthetic data the images are rendered
natively at each size and CIFAR images are resized.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from sknet.train.distributed import DistInfo, all_reduce_sum

__all__ = ["default_eval_sizes", "evaluate", "evaluate_source", "load_model"]


def _amp_context(amp: str, device: torch.device) -> Any:
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


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
            so every rank returns the metrics of the whole set.

    Returns:
        ``{"top1_err", "top5_err", "loss", "n", "top1_acc"}``; top-5 becomes top-``C`` for models
        with ``C < 5`` classes. ``"bad_files"`` lists unreadable images the data skipped (sknet
        imagefolder data), when there were any.
    """
    if device is None:
        try:
            device = next(model.parameters()).device
        except StopIteration:  # pragma: no cover - parameterless model
            device = torch.device("cpu")
    device = torch.device(device)
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        data = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=workers)
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, n
    bad: list[str] = []  # unreadable files reported by the data (imagefolder)
    try:
        it = data
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(data, desc=desc, leave=False, dynamic_ncols=True)
        for batch in it:
            images, labels = batch[0], batch[1]
            if len(batch) > 2 and isinstance(batch[2], (list, tuple)):
                bad.extend(n for entry in batch[2] if entry for n in str(entry).split("\n"))
            images = images.to(device, non_blocking=True)
            labels = torch.as_tensor(labels).to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with _amp_context(amp, device):
                logits = model(images)
            logits = logits.float()
            k = min(5, logits.shape[1])
            topk = logits.topk(k, dim=1).indices
            hit = topk.eq(labels[:, None])
            sums[0] += nn.functional.cross_entropy(logits, labels, reduction="sum").double()
            sums[1] += hit[:, 0].sum()
            sums[2] += hit.any(dim=1).sum()
            sums[3] += labels.numel()
    finally:
        model.train(was_training)
    if dist_info is not None:
        all_reduce_sum(sums, dist_info)
    loss, c1, c5, n = (float(x) for x in sums.cpu())
    n_int = round(n)
    if n_int == 0:
        raise ValueError("evaluate: the data is empty")
    out: dict[str, Any] = {
        "top1_err": 100.0 * (1.0 - c1 / n),
        "top5_err": 100.0 * (1.0 - c5 / n),
        "top1_acc": 100.0 * c1 / n,
        "loss": loss / n,
        "n": n_int,
    }
    if bad:
        out["bad_files"] = bad  # this process's share when distributed
    return out


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------


def _info_from_config(cfg: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    info = {
        "model": cfg.get("model"),
        "model_overrides": cfg.get("model_overrides", {}),
        "data": cfg.get("data"),
        "data_dir": cfg.get("data_dir") or None,
        "config": cfg,
    }
    info.update(extra)
    return info


def _resolve_source(source: str | os.PathLike) -> tuple[Path, str]:
    path = Path(source)
    if path.is_dir():
        for cand, kind in (
            (path / "model.safetensors", "safetensors"),
            (path / "checkpoints" / "last.pt", "checkpoint"),
        ):
            if cand.is_file():
                return cand, kind
        raise FileNotFoundError(
            f"{path} is not a finished or checkpointed run directory "
            "(no model.safetensors or checkpoints/last.pt)"
        )
    if not path.exists():
        raise FileNotFoundError(f"no run directory, checkpoint or weights file at {path}")
    if path.suffix == ".safetensors":
        return path, "safetensors"
    if path.suffix in (".pt", ".pth", ".ckpt"):
        return path, "checkpoint"
    raise ValueError(
        f"{path}: expected a run directory, a checkpoint (.pt) or a weights file (.safetensors)"
    )


def load_model(source: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained model from a run directory, a checkpoint or a safetensors file.

    Returns ``(model.eval(), info)``; ``info`` has ``model``, ``num_classes``, ``image_size``,
    ``data``, ``mean``, ``std``, ``model_overrides``, ``source`` and, when known, ``config``
    (the run's :class:`~sknet.train.TrainConfig` as a dict). Weights converted from timm by
    ``sknet convert`` carry no training metadata: they are taken as ImageNet models (native
    size, ImageNet mean/std) unless they have fewer input pixels than 128.
    """
    from sknet.models import create_model, get_entry

    path, kind = _resolve_source(source)
    if kind == "checkpoint":
        from sknet.train.checkpoint import load_checkpoint

        ck = load_checkpoint(path)
        meta = ck["meta"]
        model = create_model(
            meta["model"],
            num_classes=int(meta["num_classes"]),
            in_chans=int(meta.get("in_chans", 3)),
            **meta.get("model_overrides", {}),
        )
        model.load_state_dict(ck["model"])
        info = _info_from_config(ck.get("config", {}), dict(meta))
    else:
        from sknet.weights import load_weights, read_metadata

        meta = read_metadata(path)
        model = load_weights(path)
        cfg = json.loads(meta["sknet_train_config"]) if "sknet_train_config" in meta else {}
        extra: dict[str, Any] = {
            "model": meta.get("sknet_model"),
            "num_classes": int(model.num_classes),
            "model_overrides": json.loads(meta.get("model_overrides", "{}")),
        }
        if "sknet_image_size" in meta:
            extra["image_size"] = int(meta["sknet_image_size"])
        if "sknet_data" in meta:
            extra["data"] = meta["sknet_data"]
        if "sknet_mean" in meta:
            extra["mean"] = tuple(json.loads(meta["sknet_mean"]))
            extra["std"] = tuple(json.loads(meta["sknet_std"]))
        info = _info_from_config(cfg, extra)
        if not cfg:
            info["config"] = None
    entry = get_entry(info["model"])
    info.setdefault("image_size", entry.input_size)
    if not info.get("data"):
        # Foreign weights (e.g. converted from timm): ImageNet models by their native size.
        info["data"] = "imagefolder" if entry.input_size >= 128 else None
    if "mean" not in info:
        from sknet.data import IMAGENET_MEAN, IMAGENET_STD, normalization

        if info["data"]:
            kind = {"imagefolder": "imagenet"}.get(info["data"], info["data"])
            info["mean"], info["std"] = normalization(kind)
        else:
            info["mean"], info["std"] = IMAGENET_MEAN, IMAGENET_STD
    info["mean"] = tuple(float(x) for x in info["mean"])
    info["std"] = tuple(float(x) for x in info["std"])
    info["num_classes"] = int(model.num_classes)
    info["source"] = str(path)
    info["source_kind"] = kind
    return model.eval(), info


# ---------------------------------------------------------------------------------------------
# Table 2 protocol
# ---------------------------------------------------------------------------------------------


def default_eval_sizes(data: str | None, image_size: int) -> list[int]:
    """ImageNet-style data: the native size and 320/224 of it (224 and 320 as in the paper's
    Table 2 for a model trained at 224); otherwise the native size only."""
    if data in ("imagefolder", "imagenet"):
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
) -> dict[str, Any]:
    """Single-centre-crop top-1/top-5 error of a trained model at one or more sizes.

    ``data``/``data_dir`` default to the run's own; for synthetic data the run's val split
    (same seed, sample count and object-scale range) is used. ``threads`` > 0 sets torch's CPU
    threads for the call (restored after).

    Returns:
        ``{"source", "model", "data", "num_classes", "results": [{"size", "resize", "top1_err",
        "top5_err", "loss", "n"}, ...]}``.
    """
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _evaluate_source(
            source, data, data_dir, sizes, batch_size, workers, device, val_samples, amp, progress
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
) -> dict[str, Any]:
    from sknet.data import eval_resize_size
    from sknet.train.distributed import resolve_device
    from sknet.train.pipeline import eval_loader, make_eval_dataset

    model, info = load_model(source)
    cfg = info.get("config") or {}
    data = data or info.get("data")
    if not data:
        raise ValueError(
            f"{source}: the weights do not say which data they were trained on; pass --data"
        )
    if data not in ("synthetic", "cifar10", "cifar100", "imagefolder"):
        raise ValueError(
            f"unknown data {data!r}; expected synthetic, cifar10, cifar100 or imagefolder"
        )
    same_data = data == info.get("data")
    if data_dir is None and same_data:
        data_dir = info.get("data_dir") or cfg.get("data_dir") or None
    if data != "synthetic" and not data_dir:
        raise ValueError(f"data={data!r} needs a data directory: pass --data-dir DIR")
    native = int(info["image_size"]) if same_data else (32 if data.startswith("cifar") else 224)
    if sizes is None:
        sizes = default_eval_sizes(data, native)
    for s in sizes:
        if s < getattr(model, "min_input_size", 1):
            raise ValueError(
                f"size {s} is smaller than the model's minimum input {model.min_input_size}"
            )
    dev = resolve_device(device)
    model.to(dev)
    channels_last = dev.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    mean = info["mean"] if same_data else None
    std = info["std"] if same_data else None
    n_val = val_samples or int(cfg.get("val_samples", 2000))
    results = []
    for size in sizes:
        ds = make_eval_dataset(
            data,
            data_dir=data_dir,
            image_size=size,
            mean=mean,
            std=std,
            num_samples=n_val,
            seed=int(cfg.get("seed", 0)),
            scale_range=tuple(cfg.get("scale_range", (0.15, 0.9))),
            max_bad=int(cfg.get("max_bad", 50)),
        )
        if ds.num_classes != model.num_classes:
            raise ValueError(
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
        resize = eval_resize_size(size) if data == "imagefolder" else None
        results.append({"size": size, "resize": resize, **r})
    return {
        "source": info["source"],
        "model": info["model"],
        "model_overrides": info.get("model_overrides", {}),
        "data": data,
        "data_dir": data_dir,
        "num_classes": info["num_classes"],
        "protocol": "single centre crop"
        + (" (resize short side to size/0.875)" if data == "imagefolder" else ""),
        "results": [
            {
                k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v)
                for k, v in r.items()
            }
            for r in results
        ],
    }

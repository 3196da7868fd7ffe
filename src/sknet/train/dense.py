"""Training of SK detectors and segmenters (``task = "detect" | "segment"``; beyond the paper).

The run machinery is the classifier's (:class:`sknet.train.trainer._Trainer`): run directory,
``config.toml``, atomic checkpoints, exact resume, DDP (with ``sync_bn``), TensorBoard, CSV,
progress bars and the non-finite-loss guard. What differs is overridden here:

* data: :class:`sknet.data.dense.SyntheticDense` (``data = "synthetic-dense"``) or
  :class:`sknet.data.dense.CocoFolder` (``data = "coco"``), batched by ``dense_collate``; the
  only training augmentation is a horizontal flip (boxes, masks and the semantic map flipped
  alike), seeded per sample as the classifier's transforms are;
* model: :func:`sknet.dense.build_dense_model` over the ``features_only`` stages of ``model``;
  ``init`` weights (a classifier run, file or tag) load into the backbone; BatchNorm trains from
  scratch and is frozen from ``init`` weights (``dense_bn = "auto"``);
* loss: the sum of the detector's (or segmenter's) loss terms;
* evaluation: :func:`sknet.dense.evaluate_dense` (COCO mAP, AP50, AP75 and AP per object-size
  bin, bins chosen from the validation objects; mIoU for segmentation); the best epoch is the
  one with the highest mAP (mIoU);
* outputs: ``model.safetensors`` carries the dense build (:func:`sknet.dense.save_dense`),
  ``metrics.csv`` has the dense columns, ``summary.json`` the dense metrics.

Under DDP every rank evaluates the whole validation split (COCO evaluation needs all
predictions in one place; validation splits here are small).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sknet._device import resolve_device
from sknet.data.dense import CocoFolder, SyntheticDense, dense_collate
from sknet.dense import (
    COCO_SIZE_BINS,
    DenseModel,
    build_dense_model,
    dense_complexity,
    evaluate_dense,
    load_backbone_weights,
    load_dense,
    save_dense,
)
from sknet.errors import ConfigError, DataError
from sknet.preprocess import default_preprocess
from sknet.train import rundir
from sknet.train.config import TrainConfig
from sknet.train.distributed import seed_everything
from sknet.train.finetune import _load_source
from sknet.train.pipeline import loader_kwargs
from sknet.train.trainer import TRAINER_CLASSES, _clean_loader_error, _on_main, _Trainer

__all__ = [
    "DENSE_CSV_FIELDS",
    "DenseData",
    "build_dense_data",
    "dense_val_loader",
    "evaluate_dense_source",
]

log = logging.getLogger("sknet.train")

#: Columns of a dense run's ``metrics.csv`` (numbers only).
DENSE_CSV_FIELDS = (
    "epoch",
    "step",
    "lr",
    "train_loss",
    "val_map",
    "val_ap50",
    "val_ap75",
    "val_ap_small",
    "val_ap_medium",
    "val_ap_large",
    "val_miou",
    "epoch_seconds",
    "img_per_s",
    "elapsed_seconds",
)

#: Mean and std the dense models normalise with when the backbone records none: the built-in
#: shapes' (0.5, 0.5) and ImageNet's for COCO-format photographs.
_DENSE_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "synthetic-dense": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "coco": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


class _Keyed(Dataset):
    """A dense dataset addressed by the sampler's ``(index, seed)`` keys (training: a seeded
    horizontal flip) or by plain indices (evaluation)."""

    def __init__(self, base: Any, flip: bool) -> None:
        self.base = base
        self.flip = flip
        self.classes = tuple(base.classes)
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        index, seed = key if isinstance(key, tuple) else (key, None)
        item = self.base[index]
        if not self.flip or seed is None or not isinstance(item, tuple):
            return item  # a bad sample (unreadable image) passes through to the collate
        if _coin(seed):
            return _hflip(*item)
        return item


def _coin(seed: int) -> bool:
    g = torch.Generator().manual_seed(int(seed) % 2**63)
    return bool(torch.rand((), generator=g) < 0.5)


def _hflip(image: torch.Tensor, target: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
    w = image.shape[-1]
    t = dict(target)
    if "boxes" in t and t["boxes"].numel():
        b = t["boxes"].clone()
        b[:, 0], b[:, 2] = w - target["boxes"][:, 2], w - target["boxes"][:, 0]
        t["boxes"] = b
    for key in ("masks", "semantic"):
        if key in t and t[key].numel():
            t[key] = t[key].flip(-1)
    return image.flip(-1), t


class _Memo(Dataset):
    """Synthetic canvases rendered once and kept (as uint8 images) for the whole run."""

    def __init__(self, base: SyntheticDense) -> None:
        self.base = base
        self.classes = base.classes
        self.cache: dict[int, tuple[torch.Tensor, dict[str, Any]]] = {}

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        hit = self.cache.get(index)
        if hit is None:
            image, target = self.base[index]
            hit = ((image * 255).round().to(torch.uint8), target)
            self.cache[index] = hit
        return hit[0].float() / 255, hit[1]


class DenseData:
    """Train and val datasets of a dense run and what the model needs to know about them."""

    def __init__(self, train: _Keyed, val: _Keyed, image_size: int, mean: Any, std: Any) -> None:
        self.train, self.val = train, val
        self.classes = train.classes
        self.num_classes = len(self.classes)
        self.image_size = image_size
        self.mean: tuple[float, ...] = tuple(mean)
        self.std: tuple[float, ...] = tuple(std)


def build_dense_data(cfg: TrainConfig, splits: tuple[str, ...] = ("train", "val")) -> DenseData:
    """The train and val splits of a dense ``cfg`` (``synthetic-dense`` or ``coco``); with
    ``splits=("val",)`` only the validation split is built (its train stands in for both)."""
    size = cfg.resolved_image_size()
    d_mean, d_std = _DENSE_STATS[cfg.data]
    mean, std = cfg.mean or d_mean, cfg.std or d_std
    bases: list[Any] = []
    if cfg.data == "synthetic-dense":
        sizes = {"train": cfg.num_samples, "val": cfg.val_samples}
        for split in splits:
            n = sizes[split]
            ds = SyntheticDense(
                n,
                image_size=size,
                seed=cfg.seed,
                split=split,
                object_sizes=(int(cfg.object_sizes[0]), int(cfg.object_sizes[1])),
                max_objects=cfg.max_objects,
            )
            bases.append(_Memo(ds) if cfg.cache_data else ds)
    else:
        if not cfg.data_dir:
            raise ConfigError("data='coco' needs --data-dir DIR (a COCO-format folder)")
        bases = [CocoFolder(cfg.data_dir, split, image_size=size) for split in splits]
        if len(bases) == 2 and tuple(bases[0].classes) != tuple(bases[1].classes):
            raise DataError(
                f"{cfg.data_dir}: the train and val annotation files list different categories "
                f"({len(bases[0].classes)} vs {len(bases[1].classes)})"
            )
    if len(bases) == 1:  # validation only
        bases = [bases[0], bases[0]]
    if len(bases[1]) == 0:
        raise DataError(f"the validation split of {cfg.data} is empty")
    return DenseData(_Keyed(bases[0], flip=True), _Keyed(bases[1], flip=False), size, mean, std)


def _bn_frozen(cfg: TrainConfig) -> bool:
    return cfg.dense_bn == "frozen" or (cfg.dense_bn == "auto" and bool(cfg.init))


class DenseTrainer(_Trainer):
    """:class:`_Trainer` for ``task = "detect" | "segment"`` (see the module docstring)."""

    collate_fn = staticmethod(dense_collate)
    csv_fields = DENSE_CSV_FIELDS
    best_key, best_higher = "map", True

    def build_data(self) -> Any:
        return build_dense_data(self.cfg)

    def build_val_loader(self, batch_size: int) -> DataLoader:
        # every rank evaluates the whole split: COCO evaluation needs all predictions at once
        return DataLoader(
            self.data.val,
            batch_size=batch_size,
            shuffle=False,
            collate_fn=dense_collate,
            **loader_kwargs(self.workers, self.device),
        )

    def build_model(self, ckpt: dict[str, Any] | None) -> None:
        cfg, dist, data = self.cfg, self.dist, self.data
        seed_everything(cfg.seed)
        frozen = _bn_frozen(cfg)
        model = build_dense_model(
            cfg.model,
            task=cfg.task,
            head=cfg.resolved_head(),
            num_classes=self.num_classes,
            image_size=data.image_size,
            object_sizes=(float(cfg.object_sizes[0]), float(cfg.object_sizes[1])),
            fpn_channels=cfg.fpn_channels,
            frozen_bn=frozen,
            backbone_overrides=dict(cfg.model_overrides),
            mean=data.mean,
            std=data.std,
        )
        self.cx: Any = dense_complexity(model, data.image_size)
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            self.provenance = dict(ckpt["meta"].get("provenance") or {})
        elif cfg.init:
            self.provenance = _on_main(lambda: _init_backbone(cfg, model), dist)
        self.meta = {
            "dense": model.build_args(),
            "classes": list(data.classes),
            "image_size": data.image_size,
            "data": cfg.data,
            "mean": list(data.mean),
            "std": list(data.std),
            "provenance": self.provenance,
            "model_overrides": dict(cfg.model_overrides),
        }
        model.to(self.device)
        if cfg.sync_bn and dist.distributed and not frozen:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model: nn.Module = model
        self.net: nn.Module = model
        if dist.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DDP(model, device_ids=ids, find_unused_parameters=True)
        seed_everything(cfg.seed + dist.rank)

    def loader_generator(self) -> torch.Generator:
        # Creating a DataLoader iterator draws a seed from its generator. From torch's global
        # one, that draw would sit between a mid-epoch checkpoint's RNG state and the next
        # step of a resumed run, shifting the stream the R-CNN samplers draw from: resume
        # would then not repeat the uninterrupted run.
        return torch.Generator().manual_seed(self.cfg.seed * 100_003 + self.state.epoch)

    def build_ingredients(self) -> None:
        super().build_ingredients()
        self.mix = None  # MixUp / CutMix are refused for dense tasks by the config

    def forward_backward(self, images: Any, targets: Any, *, sync: bool) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        targets = [
            {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in t.items()}
            for t in targets
        ]

        def forward() -> tuple[torch.Tensor, None]:
            losses = self.net(images, targets)  # torchvision's dict of the head's losses
            loss = sum(v.float() for v in losses.values())
            assert isinstance(loss, torch.Tensor)
            return loss, None

        ld, _ = self.backward(forward, sync=sync)
        with torch.no_grad():
            n = images.shape[0]
            self.state.partial[0] += ld.double() * n
            self.state.partial[2] += n
        return ld

    def train_stats(self) -> dict[str, float]:
        stats = super().train_stats()
        return {"loss": stats["loss"]}

    def evaluate(self) -> dict[str, Any]:
        try:
            val = evaluate_dense(self.eval_model(), self.val_loader, self.device)
        except Exception as exc:
            raise _clean_loader_error(exc) from None
        self.val_shard_n = val.get("n_images")
        if "miou" in val:
            val["map"] = val["miou"]  # the segmenter's best epoch: the highest mIoU
        return val

    def metric_columns(self, train_stats: dict[str, float], val: dict[str, Any]) -> dict[str, Any]:
        def v(key: str) -> Any:
            x = val.get(key)
            return "" if x is None else x

        keys = ("ap50", "ap75", "ap_small", "ap_medium", "ap_large", "miou")
        return {
            "val_map": v("map") if self.cfg.task == "detect" else "",
            **{f"val_{k}": v(k) for k in keys},
        }

    def log_epoch(
        self, row: dict[str, Any], train_stats: dict[str, float], val: dict[str, Any]
    ) -> None:
        epoch = self.state.epoch
        if self.tb is not None:
            self.tb.add_scalar("train/loss", train_stats["loss"], epoch)
            for key in ("map", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "miou"):
                if isinstance(val.get(key), (int, float)):
                    self.tb.add_scalar(f"val/{key}", val[key], epoch)
            self.tb.flush()
        log.info(
            "epoch %d/%d: train loss %.4f | val %s | %.0f img/s, %.1fs",
            epoch,
            self.cfg.epochs,
            train_stats["loss"],
            _val_text(self.cfg.task, val) if val else "-",
            row["img_per_s"],
            row["epoch_seconds"],
        )

    def log_setup(self) -> None:
        cfg, data = self.cfg, self.data
        log.info(
            "%s %s over %s: %s params, %.1f MMACs at %dpx | %s: %d train / %d val images, %d "
            "classes | BN %s",
            cfg.task,
            cfg.resolved_head(),
            cfg.model,
            f"{self.cx['params']:,}",
            self.cx["macs"] / 1e6,
            data.image_size,
            cfg.data,
            len(data.train),
            len(data.val),
            self.num_classes,
            "frozen" if _bn_frozen(cfg) else "trained",
        )
        geometry = getattr(self.model, "geometry", None)
        if geometry is not None:
            log.info(
                "geometry: FPN strides %s, anchor sizes %s px for objects of %g-%g px (the rule: "
                "sknet.dense.GEOMETRY_RULE)",
                "/".join(str(s) for s in geometry.strides),
                "/".join(f"{a:g}" for a in geometry.anchor_sizes),
                *geometry.object_sizes,
            )
        log.info(
            "%d epochs x %d steps, global batch %d, lr %.4g (%s), device %s, %d thread(s)",
            cfg.epochs,
            self.steps_per_epoch,
            cfg.batch_size,
            cfg.effective_lr(),
            cfg.schedule,
            self.device,
            self.threads,
        )

    def counts(self) -> tuple[int, int]:
        return int(self.cx["params"]), int(self.cx["macs"])

    def summary_results(self, val: dict[str, Any], train_stats: dict[str, float]) -> dict[str, Any]:
        cfg = self.cfg
        metrics = ("map", "ap50", "ap75", "miou", "pixel_acc")
        return {
            "task": cfg.task,
            "head": cfg.resolved_head(),
            "val": val,
            **{k: val[k] for k in metrics if k in val},
        }

    def write_final(self, summary: dict[str, Any]) -> None:
        cfg, meta = self.cfg, self.meta
        preprocess = default_preprocess(meta["image_size"], cfg.data, meta["mean"], meta["std"])
        save_dense(
            self.eval_model(),
            self.run_dir / "model.safetensors",
            classes=meta["classes"],
            preprocess=preprocess.to_dict(),
            provenance={"trained_in": str(self.run_dir), **self.provenance},
            train_config=cfg.to_dict(),
        )
        rundir.write_dense_summary(self.run_dir, summary)
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        log.info("finished: val %s; wrote %s", _val_text(cfg.task, summary["val"]), self.run_dir)


def _val_text(task: str, val: dict[str, Any]) -> str:
    def f(key: str) -> str:
        x = val.get(key)
        return f"{x:.1f}" if isinstance(x, (int, float)) else "n/a"

    if task == "segment":
        return f"mIoU {f('miou')} pixel acc {f('pixel_acc')}"
    bins = " ".join(f"{b}={f('ap_' + b)}" for b in ("small", "medium", "large"))
    return f"mAP {f('map')} AP50 {f('ap50')} AP75 {f('ap75')} ({bins})"


def _init_backbone(cfg: TrainConfig, model: DenseModel) -> dict[str, Any]:
    """Load ``cfg.init``'s classifier weights into the backbone; returns the provenance."""
    source, record = _load_source(cfg.init)
    missing, _ = load_backbone_weights(model, source.state_dict())
    if missing:
        raise ConfigError(
            f"--init {cfg.init}: its weights do not cover the backbone {cfg.model} "
            f"({len(missing)} tensors missing, first {missing[0]}); start from weights of the "
            "same architecture"
        )
    return {"init": cfg.init, "init_model": record.name}


TRAINER_CLASSES["detect"] = DenseTrainer
TRAINER_CLASSES["segment"] = DenseTrainer


def evaluate_dense_source(
    source: str | os.PathLike,
    *,
    data: str | None = None,
    data_dir: str | None = None,
    val_samples: int | None = None,
    batch_size: int = 16,
    device: str = "auto",
    threads: int = 0,
    size_bins: str = "data",
) -> dict[str, Any]:
    """Evaluate a detector or segmenter (run directory, ``model.safetensors`` or checkpoint) on
    the validation split of its own data (or ``data``/``data_dir``).

    ``size_bins``: ``"data"`` (terciles of the validation objects' sqrt(area), the default) or
    ``"coco"`` (COCO's fixed 32 / 96 px bins). Returns the metrics of
    :func:`sknet.dense.evaluate_dense` with ``model``, ``task``, ``head``, ``data``, ``classes``.
    """
    if size_bins not in ("data", "coco"):
        raise ConfigError(f"size_bins must be 'data' or 'coco', got {size_bins!r}")
    dev = resolve_device(device)
    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model, record, loader = dense_val_loader(
            source, batch_size, data=data, data_dir=data_dir, val_samples=val_samples
        )
        model.to(dev)
        bins = COCO_SIZE_BINS if size_bins == "coco" else None
        res = evaluate_dense(model, loader, dev, bins=bins)
    finally:
        torch.set_num_threads(saved_threads)
    build = record["build"]
    return {
        "model": build["backbone"],
        "task": build["task"],
        "head": build["head"],
        "data": data or (record["train_config"] or {}).get("data", "synthetic-dense"),
        "image_size": build["image_size"],
        "classes": list(record["classes"]),
        "source": str(source),
        "size_bins": size_bins,
        **res,
    }


def dense_val_loader(
    source: str | os.PathLike,
    batch_size: int = 16,
    *,
    data: str | None = None,
    data_dir: str | None = None,
    val_samples: int | None = None,
) -> tuple[DenseModel, dict[str, Any], DataLoader]:
    """A dense model (:func:`sknet.dense.load_dense`), its record, and a loader over the
    validation split of its own data (as its run's config recorded it) or of ``data``."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    model, record = load_dense(source)
    saved = record["train_config"] or {}
    build = record["build"]
    changes: dict[str, Any] = {
        "model": build["backbone"],
        "task": build["task"],
        "head": build["head"],
        "image_size": build["image_size"],
        "object_sizes": list(build["object_sizes"]),
    }
    for key in ("data", "data_dir", "seed", "max_objects", "val_samples", "num_samples"):
        if key in saved:
            changes[key] = saved[key]
    if data is not None:
        changes["data"] = data
    if data_dir is not None:
        changes["data_dir"] = data_dir
    if val_samples is not None:
        changes["val_samples"] = val_samples
    changes.setdefault("data", "synthetic-dense")
    cfg = TrainConfig(**changes).replace(num_samples=1)
    ds = build_dense_data(cfg, splits=("val",)).val
    if tuple(ds.classes) != tuple(record["classes"]):
        raise DataError(
            f"{cfg.data} has classes {list(ds.classes)[:5]}... but the model was trained on "
            f"{list(record['classes'])[:5]}...; evaluate it on data with its classes"
        )
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=dense_collate)
    return model, record, loader

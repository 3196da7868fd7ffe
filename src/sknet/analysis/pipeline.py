"""End-to-end object-scale analysis: build the zoomed views, collect, write JSON, plots, report.

:func:`build_views` turns a dataset name (as ``sknet train --data`` takes it) into the zoomed
views of :mod:`sknet.analysis.attention`; :func:`run_analysis` runs a model over them and writes
``attention.json``, the figures and ``report.md`` into a folder.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from sknet.analysis.attention import (
    AttentionResult,
    PhotoZoomSet,
    SyntheticZoomSet,
    check_zooms,
    collect_attention,
    default_units,
    select_synthetic,
    unit_infos,
)
from sknet.analysis.plots import plot_all
from sknet.analysis.report import paper_pattern, write_report
from sknet.data import (
    DEFAULT_SCALE_RANGE,
    SyntheticShapes,
    build_dataset,
    eval_resize_size,
    normalization,
)
from sknet.errors import ConfigError, DataError

__all__ = ["DEFAULT_ZOOMS", "Views", "build_views", "run_analysis"]

#: The paper's zoom factors (Fig. 3).
DEFAULT_ZOOMS: tuple[float, ...] = (1.0, 1.5, 2.0)

# Pool of synthetic validation samples scanned per requested image (selection keeps ~60%).
_SYNTHETIC_POOL_FACTOR = 20


@dataclass
class Views:
    """Zoomed views ready for :func:`~sknet.analysis.attention.collect_attention`."""

    dataset: Dataset
    classes: list[str]
    zooms: tuple[float, ...]
    protocol: dict[str, Any]
    description: str


def build_views(
    data: str,
    *,
    zooms: Sequence[float] = DEFAULT_ZOOMS,
    num_images: int = 1000,
    data_dir: str | Path | None = None,
    split: str = "val",
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
    train_scale_range: tuple[float, float] | None = DEFAULT_SCALE_RANGE,
    selection: str = "in-range",
    crop_ratio: float = 0.875,
) -> Views:
    """Zoomed views of ``num_images`` images of a dataset.

    Args:
        data: ``"synthetic"`` (objects re-rendered at each zoom), ``"imagefolder"``,
            ``"cifar10"`` or ``"cifar100"`` (centre crop and resize).
        zooms: ascending zoom factors; the first is the reference (1.0 in the paper).
        num_images: how many images to probe (photos: evenly spaced over the split, so every
            class is represented; synthetic: the first that pass ``selection``).
        data_dir: root folder of real data.
        split: which split to probe (``"val"`` by default; never the training images).
        image_size: network input side (default: the dataset's).
        mean, std: normalisation (default: the dataset's statistics).
        seed: synthetic only: the data seed the model was trained with (the validation stream
            of that seed is probed).
        train_scale_range: synthetic only: object-size range the model was trained on.
        selection: synthetic only: ``"in-range"`` or ``"all"`` (see
            :func:`~sknet.analysis.attention.select_synthetic`).
        crop_ratio: photos: evaluation crop ratio (224 of 256).
    """
    zs = check_zooms(zooms, allow_below_one=data == "synthetic")
    if num_images < 1:
        raise ConfigError(f"num_images must be >= 1, got {num_images}")
    if data == "synthetic":
        return _synthetic_views(
            zs, num_images, split, image_size, mean, std, seed, train_scale_range, selection
        )
    if data not in ("imagefolder", "cifar10", "cifar100"):
        raise ConfigError(
            f"unknown dataset {data!r} for analysis; use synthetic, imagefolder, cifar10 or "
            "cifar100"
        )
    if data_dir is None:
        raise ConfigError(f"--data {data} needs --data-dir (a local folder; nothing is downloaded)")
    return _photo_views(data, zs, num_images, data_dir, split, image_size, mean, std, crop_ratio)


def _synthetic_views(
    zs: tuple[float, ...],
    num_images: int,
    split: str,
    image_size: int | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    seed: int,
    train_scale_range: tuple[float, float] | None,
    selection: str,
) -> Views:
    """:func:`build_views` for ``data="synthetic"``: objects re-rendered at each zoom."""
    lo, hi = train_scale_range if train_scale_range is not None else DEFAULT_SCALE_RANGE
    pool = SyntheticShapes(
        num_samples=max(num_images * _SYNTHETIC_POOL_FACTOR, 1000),
        image_size=48 if image_size is None else int(image_size),
        seed=seed,
        split=split,
        scale_range=(lo, hi),
    )
    d_mean, d_std = normalization("synthetic")
    indices, sel = select_synthetic(pool, num_images, zs, (lo, hi), selection)
    if len(indices) < num_images:
        sel["shortfall"] = num_images - len(indices)
    ds: Dataset = SyntheticZoomSet(pool, indices, zs, mean or d_mean, std or d_std)
    protocol = {
        "zoom_method": "render",
        "image_size": pool.image_size,
        "selection": sel,
        "split": split,
        "seed": seed,
    }
    return Views(ds, list(pool.classes), zs, protocol, f"built-in synthetic shapes ({split})")


def _photo_views(
    data: str,
    zs: tuple[float, ...],
    num_images: int,
    data_dir: str | Path,
    split: str,
    image_size: int | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    crop_ratio: float,
) -> Views:
    """:func:`build_views` for photos (imagefolder / CIFAR): centre crop and resize per zoom."""
    raw = build_dataset(data, data_dir=data_dir, split=split, transform=None)
    kind = "imagenet" if data == "imagefolder" else data
    d_mean, d_std = normalization(kind)
    if data == "imagefolder":
        size = 224 if image_size is None else int(image_size)
        resize = eval_resize_size(size, crop_ratio)
    else:
        size = 32 if image_size is None else int(image_size)
        resize = size  # CIFAR is evaluated uncropped
    n = len(raw)  # type: ignore[arg-type]
    if n == 0:
        raise DataError(f"no images in {data_dir} ({split})")
    count = min(num_images, n)
    # Evenly spaced over the (class-sorted) split, so that every class is represented.
    indices = sorted({int(i * n / count) for i in range(count)})
    ds = PhotoZoomSet(raw, indices, zs, size, resize, mean or d_mean, std or d_std)
    protocol = {
        "zoom_method": "center-crop-resize",
        "image_size": size,
        "resize_size": resize,
        "selection": {
            "selection": "spaced",
            "description": f"{len(indices)} of {n} {split} images, evenly spaced over the split "
            "(all object sizes; the photos' own scale variation covers the zooms, as in the "
            "paper)",
        },
        "split": split,
    }
    classes = [str(c) for c in getattr(raw, "classes", range(raw.num_classes))]  # type: ignore[attr-defined]
    return Views(ds, classes, zs, protocol, f"{data} {split} split at {data_dir}")


def run_analysis(
    model: nn.Module,
    views: Views,
    out_dir: str | Path,
    *,
    meta: dict[str, Any] | None = None,
    channel_units: Sequence[str] | None = None,
    class_units: Sequence[str] | None = None,
    bin_size: int | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str = "cpu",
    progress: Any = None,
) -> tuple[AttentionResult, list[Path]]:
    """Collect attention over ``views`` and write ``attention.json``, plots and ``report.md``.

    ``channel_units`` (Fig. 3 a, b) and ``class_units`` (Fig. 4) default to one early, one middle
    and the last unit. Returns the result and the written files.
    """
    out = Path(out_dir)
    names = list(unit_infos(model))  # fails early for models without SK attention
    ch_units = list(channel_units) if channel_units else default_units(names)
    cl_units = list(class_units) if class_units else default_units(names)
    for u in [*ch_units, *cl_units]:
        if u not in names:
            raise ConfigError(f"unknown SK unit {u!r}; this model has {', '.join(names)}")
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and num_classes != len(views.classes):
        raise DataError(
            f"the model has {num_classes} classes but the dataset {len(views.classes)}; analyse "
            "it on the data it was trained on (--data/--data-dir)"
        )
    info = dict(meta or {})
    info.setdefault("model", getattr(model, "model_name", type(model).__name__))
    info.setdefault("data", views.description)
    info["protocol"] = views.protocol
    info["channel_units"] = ch_units
    info["class_units"] = cl_units
    t0 = time.perf_counter()
    result = collect_attention(
        model,
        views.dataset,
        views.zooms,
        views.classes,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        progress=progress,
        meta=info,
    )
    result.meta["seconds"] = round(time.perf_counter() - t0, 2)
    result.meta["paper_pattern"] = paper_pattern(result)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "attention.json"]
    result.save_json(files[0])
    files += plot_all(result, out, channel_units=ch_units, class_units=cl_units, bin_size=bin_size)
    files.append(write_report(result, out / "report.md", class_units=cl_units))
    return result, files

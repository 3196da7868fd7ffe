"""Dense-prediction metrics: COCO box/mask AP per object-size bin, semantic-segmentation mIoU.

The study asks whether selective kernels help objects of some sizes more than others, so every
metric is also reported per size bin. A bin is a range of ``sqrt(area)`` in pixels (area = the
object's COCO "area": its visible mask pixel count). Bins come from :func:`size_bins_for` (the
terciles of the evaluation set's own objects) or :data:`COCO_SIZE_BINS` (COCO's fixed 32/96 px).

Like COCO's area ranges, a bin's edges are inclusive on both sides: an object whose
``sqrt(area)`` is exactly an edge counts in both neighbouring bins (COCO's 32x32 object is both
"small" and "medium").

Values are percentages (0-100), as COCO papers report them. A metric that has nothing to measure
(a bin without ground-truth objects, a class absent from both prediction and target) is ``None``.

pycocotools is an optional dependency, imported when :func:`coco_metrics` runs.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from sknet._device import autocast
from sknet.errors import ConfigError, DataError, DependencyError, InputError

__all__ = [
    "COCO_SIZE_BINS",
    "SegmentationMeter",
    "SizeBin",
    "coco_metrics",
    "evaluate_dense",
    "size_bins_for",
]

#: COCO's "all" area range (the upper end is COCO's own 1e5**2).
_ALL_AREAS = (0.0, 1e10)
#: Ignore value in semantic maps.
IGNORE_INDEX = 255


@dataclass(frozen=True)
class SizeBin:
    """Objects with ``lo <= sqrt(area) <= hi`` (pixels); ``hi`` may be ``math.inf``."""

    name: str
    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not self.name or self.name == "all":
            raise ConfigError(f"a size bin needs a name other than '' and 'all', got {self.name!r}")
        if not (math.isfinite(self.lo) and self.lo >= 0 and self.hi >= self.lo):
            raise ConfigError(
                f"size bin {self.name!r} needs 0 <= lo <= hi, got lo={self.lo}, hi={self.hi}"
            )

    @property
    def area_range(self) -> tuple[float, float]:
        """``(lo**2, hi**2)`` in square pixels, the infinite end capped at COCO's 1e10."""
        return (self.lo**2, min(self.hi**2, _ALL_AREAS[1]))

    def contains_area(self, area: float) -> bool:
        """Whether an object of this area (px^2) is in the bin (COCOeval's inclusive rule)."""
        lo, hi = self.area_range
        return lo <= area <= hi

    def as_list(self) -> list[Any]:
        """``[name, lo, hi]`` for JSON (``hi`` = ``inf`` becomes ``None``)."""
        return [self.name, self.lo, self.hi if math.isfinite(self.hi) else None]


#: COCO's fixed bins: small < 32 px, medium 32-96 px, large >= 96 px (sqrt of the area).
COCO_SIZE_BINS: tuple[SizeBin, ...] = (
    SizeBin("small", 0.0, 32.0),
    SizeBin("medium", 32.0, 96.0),
    SizeBin("large", 96.0, math.inf),
)


def size_bins_for(
    sqrt_areas: Iterable[float] | torch.Tensor | np.ndarray, n: int = 3
) -> tuple[SizeBin, ...]:
    """``n`` size bins with edges at the ``n``-quantiles of the ground-truth ``sqrt(area)`` values.

    Why not COCO's fixed 32/96 px bins: they were set for ~640 px photographs. On the study's
    small canvases (e.g. 128 px images with 8-64 px objects) no object reaches 96 px, so "large"
    is empty, and most objects crowd into "small": the per-size reading disappears. Bins at the
    evaluation set's own terciles hold about a third of the objects each, whatever the canvas.

    Rule: edges are ``numpy.quantile(sqrt_areas, k / n)`` for ``k = 1 .. n-1`` (linear
    interpolation), rounded to 0.1 px; the first bin starts at 0 and the last ends at ``inf``.
    For ``n == 3`` the bins are named small/medium/large, otherwise ``bin0``, ``bin1``, ... Edges
    may coincide when many objects share one size.

    Raises :class:`~sknet.errors.DataError` when there are no objects (or a value is negative or
    not finite) and :class:`~sknet.errors.ConfigError` when ``n < 1``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"size_bins_for needs n >= 1 bins, got {n!r}")
    if isinstance(sqrt_areas, torch.Tensor):
        values = sqrt_areas.detach().cpu().double().reshape(-1).numpy()
    else:
        values = np.asarray(
            list(sqrt_areas) if not isinstance(sqrt_areas, np.ndarray) else sqrt_areas,
            dtype=np.float64,
        ).reshape(-1)
    if values.size == 0:
        raise DataError(
            "size bins need at least one ground-truth object; the evaluation set has none"
        )
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise DataError("object sizes (sqrt of the area) must be finite and >= 0")
    inner = [round(float(np.quantile(values, k / n)), 1) for k in range(1, n)]
    edges = [0.0, *inner, math.inf]
    names = ("small", "medium", "large") if n == 3 else tuple(f"bin{i}" for i in range(n))
    return tuple(SizeBin(names[i], edges[i], edges[i + 1]) for i in range(n))


# ------------------------------------------------------------------------------------ COCO AP


def _pycocotools() -> tuple[Any, Any, Any]:
    try:
        from pycocotools import mask as mask_utils
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DependencyError(
            "COCO metrics need the 'pycocotools' package (pip install pycocotools)"
        ) from exc
    return COCO, COCOeval, mask_utils


def _np(x: Any, dtype: Any = None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def _object_areas(target: Mapping[str, Any]) -> np.ndarray:
    """The COCO area of each ground-truth object: ``target["area"]``, else the mask pixel count,
    else the box area."""
    if "area" in target:
        return _np(target["area"], np.float64).reshape(-1)
    if "masks" in target:
        return _np(target["masks"], np.float64).reshape(len(target["masks"]), -1).sum(1)
    boxes = _np(target["boxes"], np.float64).reshape(-1, 4)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _crowd(target: Mapping[str, Any], n: int) -> np.ndarray:
    if "iscrowd" in target:
        return _np(target["iscrowd"], np.int64).reshape(-1).astype(bool)
    return np.zeros(n, dtype=bool)


def _image_hw(target: Mapping[str, Any]) -> tuple[int, int]:
    for key in ("masks", "semantic"):
        if key in target:
            shape = tuple(target[key].shape)
            return int(shape[-2]), int(shape[-1])
    return 0, 0


def _xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = boxes.reshape(-1, 4).astype(np.float64)
    return np.stack(
        [boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1
    )


def _rles(masks: np.ndarray, mask_utils: Any) -> list[dict[str, Any]]:
    """RLE-encode binary masks (N, H, W)."""
    if len(masks) == 0:
        return []
    return list(mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))))


def _check_bins(bins: Sequence[SizeBin]) -> tuple[SizeBin, ...]:
    bins = tuple(bins)
    if not all(isinstance(b, SizeBin) for b in bins):
        raise ConfigError("bins must be SizeBin objects (see size_bins_for / COCO_SIZE_BINS)")
    names = [b.name for b in bins]
    if len(set(names)) != len(names):
        raise ConfigError(f"size bin names must be unique, got {names}")
    return bins


def coco_metrics(
    targets: Sequence[Mapping[str, Any]],
    predictions: Sequence[Mapping[str, Any]],
    num_classes: int,
    bins: Sequence[SizeBin] = COCO_SIZE_BINS,
    iou_type: str = "bbox",
) -> dict[str, Any]:
    """COCO AP of ``predictions`` against ``targets`` (one dict each per image, same order).

    The ground truth is built in memory as a COCO data set: boxes (xyxy -> xywh), labels as
    category ids 1..``num_classes``, ``iscrowd``, and the object's ``area`` (``target["area"]``:
    COCOeval bins ground truth by the annotation's area, for boxes and masks alike). Every target
    is an image (images without objects count: their detections are false positives).
    Detections are the prediction dicts' boxes/labels/scores; for ``iou_type="segm"`` their
    ``masks`` (probabilities) thresholded at 0.5 and RLE-encoded. COCOeval runs with the area
    ranges ``all`` + one per bin (``[lo**2, hi**2]``) and maxDets 1/10/100.

    Returns percentages: ``map`` (AP@[.5:.95], all sizes), ``ap50``, ``ap75``, ``ar100``,
    ``ap_<bin>`` per bin, and the non-crowd object counts ``n_objects`` and
    ``n_objects_<bin>``. An AP with no ground truth to measure (COCOeval's -1) is ``None``; no
    detections at all give AP 0.
    """
    if iou_type not in ("bbox", "segm"):
        raise ConfigError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
    if len(targets) != len(predictions):
        raise InputError(
            f"coco_metrics needs one prediction per target, got {len(predictions)} predictions "
            f"for {len(targets)} targets"
        )
    bins = _check_bins(bins)
    COCO, COCOeval, mask_utils = _pycocotools()
    segm = iou_type == "segm"

    images: list[dict[str, Any]] = []
    gts: list[dict[str, Any]] = []
    dts: list[dict[str, Any]] = []
    counted_areas: list[float] = []
    for index, (target, pred) in enumerate(zip(targets, predictions)):
        image_id = index + 1  # positional ids: unique even if two targets share an image_id
        height, width = _image_hw(target)
        images.append({"id": image_id, "height": height, "width": width})
        new = _gt_annotations(target, index, image_id, num_classes, len(gts), segm, mask_utils)
        gts += new
        counted_areas += [a["area"] for a in new if not a["iscrowd"]]
        dts += _detections(pred, index, image_id, len(dts), segm, mask_utils)
    evaluator = _run_cocoeval(images, gts, dts, num_classes, bins, iou_type, COCO, COCOeval)
    out = _summary(evaluator, bins)
    out["n_objects"] = len(counted_areas)
    for b in bins:
        out[f"n_objects_{b.name}"] = sum(b.contains_area(x) for x in counted_areas)
    return out


def _gt_annotations(
    target: Mapping[str, Any],
    index: int,
    image_id: int,
    num_classes: int,
    first_id: int,
    segm: bool,
    mask_utils: Any,
) -> list[dict[str, Any]]:
    """One target's objects as COCO annotations (ids from ``first_id + 1``)."""
    labels = _np(target["labels"], np.int64).reshape(-1)
    if labels.size and (labels.min() < 1 or labels.max() > num_classes):
        raise DataError(
            f"target {index}: labels must be in 1..{num_classes} (0 is background), "
            f"got {sorted(set(labels.tolist()))}"
        )
    boxes = _xywh(_np(target["boxes"], np.float64))
    areas = _object_areas(target)
    crowd = _crowd(target, len(labels))
    if not len(boxes) == len(areas) == len(crowd) == len(labels):
        raise DataError(f"target {index}: boxes, labels, area and iscrowd differ in length")
    rles: list[dict[str, Any]] = []
    if segm:
        if "masks" not in target:
            raise DataError(f"target {index}: iou_type='segm' needs the target's 'masks'")
        rles = _rles(_np(target["masks"], np.uint8), mask_utils)
    out = []
    for j in range(len(labels)):
        ann: dict[str, Any] = {
            "id": first_id + j + 1,
            "image_id": image_id,
            "category_id": int(labels[j]),
            "bbox": boxes[j].tolist(),
            "area": float(areas[j]),
            "iscrowd": int(crowd[j]),
        }
        if segm:
            ann["segmentation"] = rles[j]
        out.append(ann)
    return out


def _detections(
    pred: Mapping[str, Any],
    index: int,
    image_id: int,
    first_id: int,
    segm: bool,
    mask_utils: Any,
) -> list[dict[str, Any]]:
    """One prediction dict as COCO detections (ids from ``first_id + 1``)."""
    scores = _np(pred.get("scores", np.zeros(0)), np.float64).reshape(-1)
    if scores.size == 0:
        return []
    labels = _np(pred["labels"], np.int64).reshape(-1)
    boxes = _xywh(_np(pred["boxes"], np.float64))
    rles: list[dict[str, Any]] = []
    if segm:
        if "masks" not in pred:
            raise InputError(f"prediction {index}: iou_type='segm' needs the prediction's 'masks'")
        masks = _np(pred["masks"], np.float32)
        masks = masks.reshape(len(scores), *masks.shape[-2:])
        rles = _rles((masks > 0.5).astype(np.uint8), mask_utils)
    out = []
    for j in range(len(scores)):
        det: dict[str, Any] = {
            "id": first_id + j + 1,
            "image_id": image_id,
            "category_id": int(labels[j]),
            "score": float(scores[j]),
            "iscrowd": 0,
        }
        if segm:
            det["segmentation"] = rles[j]
            det["area"] = float(mask_utils.area(rles[j]))
            det["bbox"] = mask_utils.toBbox(rles[j]).tolist()
        else:
            det["bbox"] = boxes[j].tolist()
            det["area"] = float(boxes[j, 2] * boxes[j, 3])
        out.append(det)
    return out


def _run_cocoeval(
    images: list[dict[str, Any]],
    gts: list[dict[str, Any]],
    dts: list[dict[str, Any]],
    num_classes: int,
    bins: Sequence[SizeBin],
    iou_type: str,
    COCO: Any,
    COCOeval: Any,
) -> Any:
    """COCOeval over in-memory data sets with one area range per bin (its prints silenced)."""
    categories = [{"id": k, "name": str(k)} for k in range(1, num_classes + 1)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": gts, "categories": categories}
        coco_gt.createIndex()
        coco_dt = COCO()
        coco_dt.dataset = {"images": images, "annotations": dts, "categories": categories}
        coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        params = evaluator.params
        params.imgIds = [im["id"] for im in images]
        params.catIds = [c["id"] for c in categories]
        params.areaRng = [list(_ALL_AREAS)] + [list(b.area_range) for b in bins]
        params.areaRngLbl = ["all"] + [b.name for b in bins]
        params.maxDets = [1, 10, 100]
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def _summary(evaluator: Any, bins: Sequence[SizeBin]) -> dict[str, Any]:
    """map, ap50, ap75, ar100 and ap_<bin> in percent (None where nothing was measured)."""
    precision = evaluator.eval["precision"]  # (T iou thresholds, R recall, K, A areas, M maxDets)
    recall = evaluator.eval["recall"]  # (T, K, A, M)
    iou_thrs = evaluator.params.iouThrs

    def mean_or_none(values: np.ndarray) -> float | None:
        valid = values[values > -1]
        return None if valid.size == 0 else float(100.0 * valid.mean())

    def ap(area: int, iou: float | None = None) -> float | None:
        s = precision[..., area, -1]
        if iou is not None:
            s = s[np.flatnonzero(np.isclose(iou_thrs, iou))]
        return mean_or_none(s)

    out: dict[str, Any] = {
        "map": ap(0),
        "ap50": ap(0, 0.5),
        "ap75": ap(0, 0.75),
        "ar100": mean_or_none(recall[:, :, 0, -1]),
    }
    for a, b in enumerate(bins, start=1):
        out[f"ap_{b.name}"] = ap(a)
    return out


# ----------------------------------------------------------------------------- segmentation


class SegmentationMeter:
    """Confusion matrix of semantic maps over ``num_classes`` foreground classes + background.

    ``update`` adds prediction/target maps (class 0 = background, 1..K = classes, target 255 =
    ignored). ``update_objects`` also records, for every non-crowd ground-truth instance, the
    fraction of its mask's pixels predicted as its class (per-object recall), which ``compute``
    reports per size bin.
    """

    def __init__(self, num_classes: int) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes + 1, num_classes + 1, dtype=torch.int64)
        #: (area, recall) of each measured ground-truth object.
        self.objects: list[tuple[float, float]] = []

    def _check(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
            raise InputError("SegmentationMeter takes tensors (semantic maps of class indices)")
        if pred.shape != target.shape:
            raise InputError(
                f"prediction and target maps differ in shape: {tuple(pred.shape)} vs "
                f"{tuple(target.shape)}"
            )
        if pred.is_floating_point() or target.is_floating_point():
            raise InputError(
                "semantic maps must hold integer class indices (argmax the logits first)"
            )
        return pred.detach().cpu().long(), target.detach().cpu().long()

    def update(self, pred_semantic: torch.Tensor, target_semantic: torch.Tensor) -> None:
        """Add one map (H, W) or a batch (B, H, W) of predicted and target class indices."""
        pred, target = self._check(pred_semantic, target_semantic)
        c = self.num_classes + 1
        valid = target != IGNORE_INDEX
        pred, target = pred[valid], target[valid]
        if target.numel() and (target.min() < 0 or target.max() >= c):
            raise DataError(f"target classes must be in 0..{c - 1} or {IGNORE_INDEX} (ignore)")
        if pred.numel() and (pred.min() < 0 or pred.max() >= c):
            raise InputError(f"predicted classes must be in 0..{c - 1}")
        self.confusion += torch.bincount(target * c + pred, minlength=c * c).reshape(c, c)

    def update_objects(self, pred_semantic: torch.Tensor, target: Mapping[str, Any]) -> None:
        """Record per-object recall for one image: ``pred_semantic`` (H, W) against the target
        dict's instance ``masks``/``labels`` (``area`` and ``iscrowd`` if present). Crowd regions
        and empty masks are skipped."""
        pred = pred_semantic.detach().cpu()
        masks = torch.as_tensor(target["masks"]).detach().cpu().bool()
        if masks.ndim != 3 or masks.shape[-2:] != pred.shape[-2:] or pred.ndim != 2:
            raise InputError(
                f"update_objects needs a (H, W) prediction and (N, H, W) masks, got "
                f"{tuple(pred.shape)} and {tuple(masks.shape)}"
            )
        labels = torch.as_tensor(target["labels"]).reshape(-1).tolist()
        areas = _object_areas(target)
        crowd = _crowd(target, len(labels))
        for mask, label, area, is_crowd in zip(masks, labels, areas, crowd):
            pixels = int(mask.sum())
            if is_crowd or pixels == 0:
                continue
            hit = int((pred[mask] == label).sum())
            self.objects.append((float(area), hit / pixels))

    def compute(self, bins: Sequence[SizeBin] | None = None) -> dict[str, Any]:
        """``miou`` (mean IoU over the classes present in target or prediction), ``pixel_acc``,
        ``iou_per_class`` (index = class, 0 = background; ``None`` where absent), all percent.

        With objects recorded: ``seg_recall`` (mean per-object recall) and ``n_objects``; with
        ``bins`` also ``seg_recall_<bin>`` and ``n_objects_<bin>``.
        """
        conf = self.confusion.double()
        tp = conf.diag()
        union = conf.sum(0) + conf.sum(1) - tp
        iou = [
            None if u == 0 else float(100.0 * t / u) for t, u in zip(tp.tolist(), union.tolist())
        ]
        present = [x for x in iou if x is not None]
        total = float(conf.sum())
        out: dict[str, Any] = {
            "miou": float(np.mean(present)) if present else None,
            "pixel_acc": float(100.0 * tp.sum() / total) if total else None,
            "iou_per_class": iou,
        }
        if self.objects or bins is not None:
            out["seg_recall"] = _mean_pct([r for _, r in self.objects])
            out["n_objects"] = len(self.objects)
        for b in _check_bins(bins or ()):
            inside = [r for a, r in self.objects if b.contains_area(a)]
            out[f"seg_recall_{b.name}"] = _mean_pct(inside)
            out[f"n_objects_{b.name}"] = len(inside)
        return out


def _mean_pct(values: Sequence[float]) -> float | None:
    return float(100.0 * np.mean(values)) if len(values) else None


# ------------------------------------------------------------------------------- evaluation


def _object_sqrt_areas(targets: Sequence[Mapping[str, Any]]) -> list[float]:
    out: list[float] = []
    for target in targets:
        areas = _object_areas(target)
        crowd = _crowd(target, len(areas))
        out.extend(math.sqrt(max(float(a), 0.0)) for a, c in zip(areas, crowd) if not c)
    return out


def _to_cpu(pred: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pred.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if key == "masks":  # probabilities -> binary, 4x smaller to hold for the whole set
                value = (value.float() > 0.5).to(torch.uint8)
            elif value.is_floating_point():
                value = value.float()
        out[key] = value
    return out


def evaluate_dense(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, list[dict[str, Any]], list[str]]],
    device: torch.device | str,
    *,
    bins: Sequence[SizeBin] | None = None,
    max_images: int | None = None,
    amp: str = "none",
) -> dict[str, Any]:
    """Evaluate a dense model over a loader of ``dense_collate`` batches ``(images, targets, bad)``.

    The model runs in eval mode under ``no_grad`` (its train/eval mode is restored afterwards),
    with autocast ``amp`` ("none", "fp32", "bf16", "fp16"); ``model(images)`` returns one
    prediction dict per image. ``model.task`` picks the metrics:

    * ``"detect"``: :func:`coco_metrics` on boxes (keys ``map``, ``ap50``, ``ap75``, ``ar100``,
      ``ap_<bin>``, ``n_objects[_<bin>]``) and, when the predictions carry ``masks``, on masks
      too (the same AP keys prefixed ``mask_``).
    * ``"segment"``: :class:`SegmentationMeter` (``miou``, ``pixel_acc``, ``iou_per_class``,
      ``seg_recall[_<bin>]``, ``n_objects[_<bin>]``).

    ``bins`` default: :func:`size_bins_for` over the evaluated targets' non-crowd objects. At most
    ``max_images`` images are evaluated. Also returned: ``bins`` (``[[name, lo, hi], ...]``, an
    infinite ``hi`` as ``None``), ``n_images``, ``bad_files`` (unreadable images the loader
    dropped), ``seconds`` (the loop over the loader) and ``images_per_s``.
    """
    task = getattr(model, "task", None)
    if task not in ("detect", "segment"):
        raise ConfigError(
            f"evaluate_dense needs a model with task 'detect' or 'segment', got {task!r}"
        )
    if max_images is not None and (isinstance(max_images, bool) or max_images < 1):
        raise ConfigError(f"max_images must be a positive int or None, got {max_images!r}")
    device = torch.device(device)
    num_classes = int(model.num_classes)  # type: ignore[arg-type]
    meter = SegmentationMeter(num_classes) if task == "segment" else None
    targets_all: list[dict[str, Any]] = []
    preds_all: list[dict[str, Any]] = []
    bad_files: list[str] = []
    sqrt_areas: list[float] = []
    n_images = 0
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        with torch.no_grad():
            for images, targets, bad in loader:
                if max_images is not None and n_images >= max_images:
                    break
                bad_files.extend(bad)
                if max_images is not None and n_images + len(targets) > max_images:
                    keep = max_images - n_images
                    images, targets = images[:keep], targets[:keep]
                if len(targets) == 0:
                    continue
                with autocast(device, amp):
                    preds = model(images.to(device))
                for pred, target in zip(preds, targets):
                    pred = _to_cpu(pred)
                    sqrt_areas.extend(_object_sqrt_areas([target]))
                    if meter is not None:
                        meter.update(pred["semantic"], target["semantic"])
                        if "masks" in target:
                            meter.update_objects(pred["semantic"], target)
                    else:
                        # Held for the whole set: GT masks only where mask AP will need them.
                        boxes_only = "masks" not in pred and len(pred.get("scores", ())) > 0
                        drop = {"semantic", "masks"} if boxes_only else {"semantic"}
                        targets_all.append({k: v for k, v in target.items() if k not in drop})
                        preds_all.append(pred)
                n_images += len(targets)
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start

    if bins is None:
        bins = size_bins_for(sqrt_areas)
    bins = _check_bins(bins)
    if meter is not None:
        metrics = meter.compute(bins)
    else:
        metrics = coco_metrics(targets_all, preds_all, num_classes, bins, iou_type="bbox")
        if preds_all and any("masks" in p for p in preds_all):
            segm = coco_metrics(targets_all, preds_all, num_classes, bins, iou_type="segm")
            metrics.update(
                {f"mask_{k}": v for k, v in segm.items() if not k.startswith("n_objects")}
            )
    metrics.update(
        {
            "bins": [b.as_list() for b in bins],
            "n_images": n_images,
            "bad_files": bad_files,
            "seconds": seconds,
            "images_per_s": n_images / seconds if seconds > 0 else None,
        }
    )
    return metrics

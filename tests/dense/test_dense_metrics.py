"""sknet.dense.metrics: COCO AP per size bin, size bins, segmentation meter, evaluate_dense.

Targets and predictions are built by hand (rectangular objects), and evaluate_dense runs a fake
model that returns given predictions, so these tests depend on no detector or data set.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from sknet.dense.metrics import (
    COCO_SIZE_BINS,
    SegmentationMeter,
    SizeBin,
    coco_metrics,
    evaluate_dense,
    size_bins_for,
)
from sknet.errors import ConfigError, DataError, InputError

pytest.importorskip("pycocotools")  # the COCO metrics' optional dependency

SIZE = 128


def make_target(
    boxes: list[tuple[int, int, int, int]],
    labels: list[int],
    image_id: int = 0,
    size: int = SIZE,
    iscrowd: list[int] | None = None,
) -> dict[str, Any]:
    """A target dict of filled rectangles (xyxy, integer pixels): masks, area, semantic map."""
    n = len(boxes)
    masks = torch.zeros(n, size, size, dtype=torch.uint8)
    semantic = torch.zeros(size, size, dtype=torch.int64)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        masks[i, y1:y2, x1:x2] = 1
        semantic[y1:y2, x1:x2] = labels[i]
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": masks,
        "area": masks.flatten(1).sum(1).float(),
        "iscrowd": torch.tensor(iscrowd or [0] * n, dtype=torch.int64),
        "semantic": semantic,
        "image_id": torch.tensor(image_id),
    }


def oracle(target: dict[str, Any], keep: list[int] | None = None, shift: int = 0) -> dict[str, Any]:
    """Ground truth as detections with score 1 (the objects in ``keep``; boxes/masks shifted)."""
    idx = list(range(len(target["labels"]))) if keep is None else keep
    boxes = target["boxes"][idx] + shift
    masks = torch.roll(target["masks"][idx].float(), shifts=(shift, shift), dims=(1, 2))
    return {
        "boxes": boxes,
        "labels": target["labels"][idx],
        "scores": torch.ones(len(idx)),
        "masks": masks[:, None],
    }


# Two images with 10 px, 20 px (small), 40 px (medium) and 100 px (large) squares by COCO's bins.
TARGETS = [
    make_target([(5, 5, 15, 15), (20, 20, 60, 60)], [1, 2], image_id=0),
    make_target([(0, 0, 20, 20), (25, 25, 125, 125)], [2, 1], image_id=1),
]


def test_oracle_detections_score_100_in_every_bin_with_objects() -> None:
    m = coco_metrics(TARGETS, [oracle(t) for t in TARGETS], num_classes=2, bins=COCO_SIZE_BINS)
    for key in ("map", "ap50", "ap75", "ar100", "ap_small", "ap_medium", "ap_large"):
        assert m[key] == pytest.approx(100.0), key
    assert (m["n_objects"], m["n_objects_small"], m["n_objects_medium"], m["n_objects_large"]) == (
        4,
        2,
        1,
        1,
    )


def test_bin_without_objects_is_none_and_shifted_boxes_score_lower() -> None:
    bins = (*COCO_SIZE_BINS, SizeBin("huge", 200.0, math.inf))
    m = coco_metrics(TARGETS, [oracle(t) for t in TARGETS], num_classes=2, bins=bins)
    assert m["ap_huge"] is None and m["n_objects_huge"] == 0
    shifted = coco_metrics(
        TARGETS, [oracle(t, shift=3) for t in TARGETS], num_classes=2, bins=COCO_SIZE_BINS
    )
    assert 0.0 < shifted["map"] < 100.0
    assert shifted["ap_small"] < shifted["ap_large"]  # 3 px hurts a 10 px box more


def test_detector_missing_small_objects() -> None:
    preds = [oracle(TARGETS[0], keep=[1]), oracle(TARGETS[1], keep=[1])]
    m = coco_metrics(TARGETS, preds, num_classes=2, bins=COCO_SIZE_BINS)
    assert m["ap_small"] == 0.0
    assert m["ap_medium"] == pytest.approx(100.0)
    assert m["ap_large"] == pytest.approx(100.0)
    assert 0.0 < m["map"] < 100.0


def test_no_predictions_give_zero_ap_and_images_without_objects_count() -> None:
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    empty["scores"] = torch.zeros(0)
    m = coco_metrics(TARGETS, [empty, empty], num_classes=2, bins=COCO_SIZE_BINS)
    assert m["map"] == 0.0 and m["ap_small"] == 0.0 and m["ar100"] == 0.0
    # A false positive on an image without objects lowers AP: that image is evaluated.
    targets = [*TARGETS, make_target([], [], image_id=2)]
    fp = {"boxes": torch.tensor([[0.0, 0, 50, 50]]), "labels": torch.tensor([1])}
    fp["scores"] = torch.tensor([2.0])  # ranked above every true detection
    preds = [oracle(t) for t in TARGETS] + [fp]
    assert coco_metrics(targets, preds, num_classes=2, bins=())["map"] < 100.0


def test_crowd_objects_are_not_counted_or_required() -> None:
    target = make_target([(5, 5, 15, 15), (40, 40, 100, 100)], [1, 1], iscrowd=[0, 1])
    m = coco_metrics([target], [oracle(target, keep=[0])], num_classes=1, bins=COCO_SIZE_BINS)
    assert m["map"] == pytest.approx(100.0)
    assert m["n_objects"] == 1 and m["n_objects_medium"] == 0 and m["ap_medium"] is None


def test_segm_exact_masks_score_100_and_shifted_lower() -> None:
    m = coco_metrics(TARGETS, [oracle(t) for t in TARGETS], 2, COCO_SIZE_BINS, iou_type="segm")
    assert m["map"] == pytest.approx(100.0) and m["ap_small"] == pytest.approx(100.0)
    m = coco_metrics(
        TARGETS, [oracle(t, shift=3) for t in TARGETS], 2, COCO_SIZE_BINS, iou_type="segm"
    )
    assert 0.0 < m["map"] < 100.0


def test_coco_metrics_rejects_bad_input() -> None:
    preds = [oracle(t) for t in TARGETS]
    with pytest.raises(ConfigError):
        coco_metrics(TARGETS, preds, 2, COCO_SIZE_BINS, iou_type="keypoints")
    with pytest.raises(InputError):
        coco_metrics(TARGETS, preds[:1], 2, COCO_SIZE_BINS)
    with pytest.raises(DataError, match=r"1\.\.1"):
        coco_metrics(TARGETS, preds, 1, COCO_SIZE_BINS)  # label 2 > num_classes
    with pytest.raises(ConfigError, match="unique"):
        coco_metrics(TARGETS, preds, 2, (COCO_SIZE_BINS[0], COCO_SIZE_BINS[0]))


def test_size_bins_for_terciles() -> None:
    bins = size_bins_for([float(x) for x in range(1, 10)])  # 1..9: terciles 3.667, 6.333
    assert [b.name for b in bins] == ["small", "medium", "large"]
    assert [(b.lo, b.hi) for b in bins] == [(0.0, 3.7), (3.7, 6.3), (6.3, math.inf)]
    four = size_bins_for(torch.tensor([1.0, 2.0, 3.0, 4.0]), n=4)
    assert [b.name for b in four] == ["bin0", "bin1", "bin2", "bin3"]
    assert four[0].lo == 0.0 and four[-1].hi == math.inf
    with pytest.raises(DataError, match="no"):
        size_bins_for([])
    with pytest.raises(ConfigError):
        size_bins_for([1.0], n=0)
    with pytest.raises(ConfigError):
        SizeBin("x", 5.0, 1.0)


def test_coco_bins_leave_large_empty_on_small_canvases_tercile_bins_do_not() -> None:
    # 8-64 px objects on 128 px canvases (the study's synthetic setting): nothing reaches 96 px,
    # so COCO's "large" is empty, which is why size_bins_for exists.
    sides = [8, 12, 16, 24, 32, 40, 48, 56, 64]
    targets = [make_target([(0, 0, s, s)], [1], image_id=i) for i, s in enumerate(sides)]
    preds = [oracle(t) for t in targets]
    coco = coco_metrics(targets, preds, 1, COCO_SIZE_BINS)
    assert coco["n_objects_large"] == 0 and coco["ap_large"] is None
    bins = size_bins_for([float(s) for s in sides])
    own = coco_metrics(targets, preds, 1, bins)
    assert [own[f"n_objects_{b.name}"] for b in bins] == [3, 3, 3]
    assert all(own[f"ap_{b.name}"] == pytest.approx(100.0) for b in bins)


def test_segmentation_meter_hand_computed() -> None:
    target = torch.tensor([[0, 0, 1, 1], [0, 2, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 2, 0, 2]])
    meter = SegmentationMeter(num_classes=3)
    meter.update(pred, target)
    out = meter.compute()
    # 7 counted pixels (one ignored), 5 right. IoU: bg 2/(3+3-2)=0.5, class 1 2/3, class 2 1/2,
    # class 3 absent -> None; mIoU over the three present classes.
    assert out["pixel_acc"] == pytest.approx(100 * 5 / 7)
    assert out["iou_per_class"][:3] == pytest.approx([50.0, 100 * 2 / 3, 50.0])
    assert out["iou_per_class"][3] is None
    assert out["miou"] == pytest.approx((50 + 200 / 3 + 50) / 3)
    meter.update(pred[None], target[None])  # a batch accumulates like single maps
    assert meter.compute()["miou"] == pytest.approx(out["miou"])
    with pytest.raises(InputError):
        meter.update(pred, target[:1])
    with pytest.raises(DataError):
        meter.update(pred, torch.full_like(target, 7))


def test_segmentation_meter_object_recall_per_bin() -> None:
    target = make_target([(0, 0, 10, 10), (20, 20, 60, 60)], [1, 2], size=64)
    pred = target["semantic"].clone()
    pred[0:5, 0:10] = 0  # half the small object missed
    meter = SegmentationMeter(2)
    meter.update(pred, target["semantic"])
    meter.update_objects(pred, target)
    out = meter.compute(COCO_SIZE_BINS)
    assert out["seg_recall_small"] == pytest.approx(50.0)
    assert out["seg_recall_medium"] == pytest.approx(100.0)
    assert out["seg_recall_large"] is None and out["n_objects_large"] == 0
    assert out["seg_recall"] == pytest.approx(75.0) and out["n_objects"] == 2


class FakeModel(nn.Module):
    """Returns the next given predictions on every call (a DenseModel's eval interface)."""

    def __init__(self, task: str, outputs: list[dict[str, Any]], num_classes: int = 2) -> None:
        super().__init__()
        self.task = task
        self.num_classes = num_classes
        self.outputs = outputs
        self.scale = nn.Parameter(torch.ones(()))
        self.calls: list[tuple[int, bool, bool]] = []

    def forward(self, images: torch.Tensor) -> list[dict[str, Any]]:
        start = sum(c[0] for c in self.calls)
        self.calls.append((len(images), self.training, torch.is_grad_enabled()))
        return self.outputs[start : start + len(images)]


def batches(targets: list[dict[str, Any]], batch_size: int) -> list[Any]:
    """A list-based loader of dense_collate-style (images, targets, bad) batches."""
    out = []
    for i in range(0, len(targets), batch_size):
        chunk = targets[i : i + batch_size]
        out.append((torch.zeros(len(chunk), 3, SIZE, SIZE), chunk, [f"bad{i}.png"]))
    return out


def test_evaluate_dense_detect_with_fake_model() -> None:
    targets = [*TARGETS, make_target([(30, 30, 70, 70)], [1], image_id=2)]
    model = FakeModel("detect", [oracle(t) for t in targets])
    model.train()
    m = evaluate_dense(model, batches(targets, 2), "cpu")
    assert model.training  # mode restored
    assert all(not training and not grad for _, training, grad in model.calls)
    assert m["map"] == pytest.approx(100.0) and m["mask_map"] == pytest.approx(100.0)
    assert m["n_images"] == 3 and m["bad_files"] == ["bad0.png", "bad2.png"]
    assert [b[0] for b in m["bins"]] == ["small", "medium", "large"] and m["bins"][-1][2] is None
    assert sum(m[f"n_objects_{b[0]}"] for b in m["bins"]) >= m["n_objects"] == 5
    assert m["seconds"] > 0 and m["images_per_s"] > 0
    # max_images cuts inside a batch; given bins are used as they are.
    model = FakeModel("detect", [oracle(t) for t in targets])
    m = evaluate_dense(model, batches(targets, 2), "cpu", bins=COCO_SIZE_BINS, max_images=1)
    assert m["n_images"] == 1 and m["n_objects"] == 2 and m["ap_large"] is None
    assert m["bins"][0] == ["small", 0.0, 32.0]


def test_evaluate_dense_segment_with_fake_model() -> None:
    outputs = [{"semantic": t["semantic"]} for t in TARGETS]
    model = FakeModel("segment", outputs)
    m = evaluate_dense(model, batches(TARGETS, 1), "cpu", bins=COCO_SIZE_BINS)
    assert m["miou"] == pytest.approx(100.0) and m["pixel_acc"] == pytest.approx(100.0)
    assert m["seg_recall_small"] == pytest.approx(100.0) and m["n_objects_small"] == 2
    assert m["n_images"] == 2
    with pytest.raises(ConfigError):
        evaluate_dense(nn.Identity(), batches(TARGETS, 1), "cpu")


def test_evaluate_dense_amp_and_bad_options() -> None:
    outputs = [{"semantic": t["semantic"]} for t in TARGETS]
    m = evaluate_dense(FakeModel("segment", outputs), batches(TARGETS, 2), "cpu", amp="bf16")
    assert m["miou"] == pytest.approx(100.0)
    assert [b[0] for b in m["bins"]] == ["small", "medium", "large"]  # terciles of the targets
    with pytest.raises(ConfigError):
        evaluate_dense(FakeModel("segment", outputs), batches(TARGETS, 2), "cpu", amp="fp8")
    with pytest.raises(ConfigError):
        evaluate_dense(FakeModel("segment", outputs), batches(TARGETS, 2), "cpu", max_images=0)

"""Dense-prediction data: SyntheticDense, CocoFolder, dense_collate, write_coco_folder."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.ops import box_iou

from sknet.data.dense import (
    MAX_BOX_IOU,
    MIN_VISIBLE_FRACTION,
    BadSample,
    CocoFolder,
    SyntheticDense,
    dense_collate,
    write_coco_folder,
)
from sknet.data.synthetic import SHAPE_CLASSES
from sknet.errors import DataError, DependencyError, MissingFileError

HAS_COCO = importlib.util.find_spec("pycocotools") is not None
requires_coco = pytest.mark.skipif(not HAS_COCO, reason="needs pycocotools")
if HAS_COCO:
    from pycocotools import mask as mask_utils

SIZE = 64
SIZES = (6.0, 32.0)


@pytest.fixture(scope="module")
def ds() -> SyntheticDense:
    return SyntheticDense(24, image_size=SIZE, seed=3, object_sizes=SIZES, max_objects=5)


def _box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """IoU by torchvision (an oracle independent of the generator's own check)."""
    return float(box_iou(torch.tensor([a]), torch.tensor([b]))[0, 0])


# ------------------------------------------------------------------ SyntheticDense


def test_synthetic_attributes_and_shapes(ds: SyntheticDense) -> None:
    assert ds.classes == SHAPE_CLASSES and ds.num_classes == 10
    assert ds.image_size == SIZE and ds.object_sizes == SIZES and len(ds) == 24
    image, t = ds[0]
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    n = len(t["labels"])
    assert t["boxes"].shape == (n, 4) and t["boxes"].dtype == torch.float32
    assert t["labels"].dtype == torch.int64
    assert t["masks"].shape == (n, SIZE, SIZE) and t["masks"].dtype == torch.uint8
    assert t["area"].dtype == torch.float32 and t["iscrowd"].dtype == torch.int64
    assert t["semantic"].shape == (SIZE, SIZE) and t["semantic"].dtype == torch.int64
    assert t["image_id"].dtype == torch.int64 and int(t["image_id"]) == 0
    counts = [len(ds[i][1]["labels"]) for i in range(len(ds))]
    assert min(counts) >= 1 and max(counts) <= 5 and len(set(counts)) > 1


def test_synthetic_deterministic_and_splits_disjoint() -> None:
    kw = {"image_size": SIZE, "object_sizes": SIZES}
    a, b = SyntheticDense(4, seed=1, **kw), SyntheticDense(4, seed=1, **kw)  # type: ignore[arg-type]
    for i in range(4):
        (ia, ta), (ib, tb) = a[i], b[i]
        assert torch.equal(ia, ib)
        for key in ta:
            assert torch.equal(ta[key], tb[key]), key
    val = SyntheticDense(4, seed=1, split="val", **kw)  # type: ignore[arg-type]
    other_seed = SyntheticDense(4, seed=2, **kw)  # type: ignore[arg-type]
    train_images = [a[i][0] for i in range(4)]
    for other in (val, other_seed):
        for i in range(4):
            assert all(not torch.equal(other[i][0], im) for im in train_images)
    assert torch.equal(a[-1][0], a[3][0])
    with pytest.raises(IndexError):
        a[4]


def test_synthetic_targets_consistent(ds: SyntheticDense) -> None:
    for i in range(len(ds)):
        _, t = ds[i]
        masks, sem = t["masks"].bool(), t["semantic"]
        union = torch.zeros_like(sem)
        for k in range(len(t["labels"])):
            m = masks[k]
            assert int(m.sum()) == int(t["area"][k]) > 0
            # the masks are disjoint (visible parts) and the semantic map is their labels
            assert not (union[m] > 0).any()
            union[m] = t["labels"][k]
            rows = torch.nonzero(m.any(dim=1)).flatten()
            cols = torch.nonzero(m.any(dim=0)).flatten()
            tight = [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
            assert t["boxes"][k].tolist() == [float(v) for v in tight]
        assert torch.equal(union, sem)
        assert set(sem.unique().tolist()) <= set(range(11))


def test_synthetic_object_sizes_in_range() -> None:
    lo, hi = 10.0, 24.0
    ds = SyntheticDense(30, image_size=SIZE, seed=5, object_sizes=(lo, hi), max_objects=3)
    sizes = []
    for i in range(len(ds)):
        for o in ds.objects(i):
            assert lo <= o["size"] <= hi
            sizes.append(o["size"])
            x0, y0, x1, y1 = o["full_box"]
            side = max(x1 - x0, y1 - y0)
            # a shape's box spans 0.8..1.27 of its size, at any rotation (checker corners)
            assert 0.75 * o["size"] - 2 <= side <= 1.3 * o["size"] + 2, (i, o["label"], side)
    assert min(sizes) < 12 and max(sizes) > 20  # the range is covered


def test_synthetic_overlap_rules(ds: SyntheticDense) -> None:
    for i in range(len(ds)):
        objs = ds.objects(i)
        _, t = ds[i]
        assert len(objs) == len(t["labels"])
        for j, o in enumerate(objs):
            vis = int(o["visible_mask"].sum())
            assert vis >= MIN_VISIBLE_FRACTION * o["full_area"]
            assert vis == int(t["area"][j])
            for later in objs[j + 1 :]:
                assert _box_iou(o["full_box"], later["full_box"]) <= MAX_BOX_IOU
            # the visible mask is the full mask minus what later objects cover
            covered = np.zeros_like(o["full_mask"])
            for later in objs[j + 1 :]:
                covered |= later["full_mask"]
            assert np.array_equal(o["visible_mask"], o["full_mask"] & ~covered)


def test_synthetic_contrast(ds: SyntheticDense) -> None:
    image, t = ds[1]
    for k in range(len(t["labels"])):
        m = t["masks"][k].bool()
        inside = image[:, m].mean(dim=1)
        ring = torch.nn.functional.max_pool2d(m[None, None].float(), 5, 1, 2)[0, 0].bool() & ~m
        ring &= t["semantic"] == 0
        if int(ring.sum()) >= 10:
            assert float((inside - image[:, ring].mean(dim=1)).abs().mean()) > 0.1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image_size": 0},
        {"object_sizes": (0, 8)},
        {"object_sizes": (16, 8)},
        {"object_sizes": (8, 65)},
        {"max_objects": 0},
        {"split": "dev"},
        {"seed": -1},
        {"max_objects": 1000},
        {"image_size": "big"},
        {"num_samples": 2.5},
    ],
)
def test_synthetic_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(DataError):
        SyntheticDense(**{"num_samples": 2, "image_size": 64, **kwargs})


# ------------------------------------------------------------------ write / read COCO


@requires_coco
def test_round_trip(tmp_path: Path, ds: SyntheticDense) -> None:
    small = torch.utils.data.Subset(ds, range(6))
    root = write_coco_folder(small, tmp_path / "coco", "val")
    assert (root / "annotations" / "instances_val.json").is_file()
    coco = CocoFolder(root, "val", image_size=SIZE)
    assert coco.classes == SHAPE_CLASSES and coco.category_ids == tuple(range(1, 11))
    assert len(coco) == 6 and coco.bad_annotations == []
    for i in range(6):
        item = coco[i]
        assert not isinstance(item, BadSample)
        image, t = item
        src_image, src = ds[i]
        assert (image - src_image).abs().max() <= 1 / 255 + 1e-6
        assert torch.equal(t["labels"], src["labels"])
        assert (t["boxes"] - src["boxes"]).abs().max() <= 1.0 if len(src["boxes"]) else True
        assert torch.equal(t["masks"], src["masks"])
        assert torch.equal(t["semantic"], src["semantic"])
        assert torch.allclose(t["area"], src["area"])
        assert int(t["image_id"]) == i


def _write_image(path: Path, w: int, h: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 200, dtype=np.uint8)).save(path)


def _write_json(root: Path, split: str, doc: dict) -> Path:
    p = root / "annotations" / f"instances_{split}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc))
    return p


CATS = [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}]


@requires_coco
def test_letterbox_non_square(tmp_path: Path) -> None:
    _write_image(tmp_path / "train" / "a.png", 100, 60)
    doc = {
        "images": [{"id": 42, "file_name": "a.png", "width": 100, "height": 60}],
        "annotations": [
            {"id": 1, "image_id": 42, "category_id": 7, "bbox": [10, 20, 30, 20], "area": 600,
             "iscrowd": 0, "segmentation": [[10, 20, 40, 20, 40, 40, 10, 40]]},
            {"id": 2, "image_id": 42, "category_id": 3, "bbox": [50, 0, 50, 60], "iscrowd": 1},
        ],
        "categories": CATS,
    }  # fmt: skip
    _write_json(tmp_path, "train", doc)
    ds = CocoFolder(tmp_path, "train", image_size=50)
    assert ds.classes == ("dog", "cat") and ds.category_ids == (3, 7)
    image, t = ds[0]  # type: ignore[misc]
    assert image.shape == (3, 50, 50)
    # 100x60 -> 50x30, padded at the bottom with zeros
    assert torch.allclose(image[:, :30, :], torch.full((3, 30, 50), 200 / 255))
    assert float(image[:, 30:, :].abs().max()) == 0.0
    assert torch.allclose(t["boxes"], torch.tensor([[5.0, 10.0, 20.0, 20.0], [25, 0, 50, 30]]))
    assert t["labels"].tolist() == [2, 1]
    assert t["iscrowd"].tolist() == [0, 1]
    assert float(t["area"][0]) == pytest.approx(600 * 0.25)
    assert int(t["image_id"]) == 42
    # polygon mask: rows 10..19, cols 5..19 in the letterboxed image
    m = t["masks"][0].bool()
    rows = torch.nonzero(m.any(dim=1)).flatten()
    cols = torch.nonzero(m.any(dim=0)).flatten()
    assert abs(int(rows[0]) - 10) <= 1 and abs(int(rows[-1]) - 19) <= 1
    assert abs(int(cols[0]) - 5) <= 1 and abs(int(cols[-1]) - 19) <= 1
    # no segmentation: the box, filled; crowd regions and the padding are "ignore" (255)
    assert int(t["masks"][1].sum()) == 25 * 30
    assert (t["semantic"][:30, 25:] == 255).all() and (t["semantic"][30:] == 255).all()
    assert (t["semantic"][m] == 2).all()


@requires_coco
def test_bad_annotations_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write_image(tmp_path / "train" / "a.png", 40, 40)
    _write_image(tmp_path / "train" / "empty.png", 40, 40)
    rle = mask_utils.encode(np.asfortranarray(np.ones((40, 40), dtype=np.uint8)))
    good = {"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 10, 10]}
    doc = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 40, "height": 40},
            {"id": 2, "file_name": "empty.png", "width": 40, "height": 40},
            {"id": 3, "file_name": "../evil.png", "width": 40, "height": 40},
            {"id": 4, "file_name": "bomb.png", "width": 100_000, "height": 100_000},
        ],
        "annotations": [
            good,
            {**good, "id": 2, "bbox": [1, 1, -5, 10]},
            {**good, "id": 3, "category_id": 99},
            {**good, "id": 4, "bbox": [30, 30, 20, 20]},
            {**good, "id": 5, "segmentation": [[1, 2]]},
            {**good, "id": 6, "segmentation": {"size": [40, 40], "counts": "garbage"}},
            {**good, "id": 7, "segmentation": {"size": [40, 40], "counts": [5, 5]}},
            {**good, "id": 8, "image_id": 77},
            {**good, "id": 9, "bbox": [1, 1, float("nan"), 3]},
            {**good, "id": 10, "segmentation": {"size": [40, 40],
                                                "counts": rle["counts"].decode()}},
            {**good, "id": 11, "bbox": [1, 1, 10**400, 3]},
            {**good, "id": 12, "bbox": [1, 1, 3, 1e400]},
            {**good, "id": 13, "category_id": [7]},
        ],
        "categories": CATS,
    }  # fmt: skip
    p = tmp_path / "annotations" / "instances_train.json"
    p.parent.mkdir()
    p.write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING, logger="sknet.data.dense"):
        ds = CocoFolder(tmp_path, "train", image_size=40)
    bad = ds.bad_annotations
    assert len(bad) == 13, bad
    for ann_id in (2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13):
        assert any(f"annotation {ann_id}:" in b for b in bad), (ann_id, bad)
    assert any("a.png" in b and "annotation 2:" in b and "width" in b for b in bad)
    assert any("unknown category_id 99" in b for b in bad)
    assert any("evil" in b and "leaves" in b for b in bad)
    assert any("bomb.png" in b and "pixels" in b for b in bad)
    summary = [r for r in caplog.records if "bad annotation" in r.getMessage()]
    assert len(summary) == 1
    assert len(ds) == 2
    _, t = ds[0]  # type: ignore[misc]
    assert t["labels"].tolist() == [2, 2]  # annotations 1 and 10
    assert int(t["masks"][1].sum()) == 40 * 40
    _, t = ds[1]  # type: ignore[misc]
    assert t["boxes"].shape == (0, 4) and t["masks"].shape == (0, 40, 40)
    assert (t["semantic"] == 0).all()


@requires_coco
def test_corrupt_image_reported_by_collate(tmp_path: Path) -> None:
    _write_image(tmp_path / "train" / "good.png", 32, 32)
    (tmp_path / "train" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    doc = {
        "images": [
            {"id": 1, "file_name": "good.png", "width": 32, "height": 32},
            {"id": 2, "file_name": "bad.png", "width": 32, "height": 32},
            {"id": 3, "file_name": "missing.png", "width": 32, "height": 32},
            {"id": 4, "file_name": "good.png", "width": 30, "height": 32},  # not its size
        ],
        "annotations": [{"id": 1, "image_id": 2, "category_id": 3, "bbox": [0, 0, 4, 4]}],
        "categories": CATS,
    }
    _write_json(tmp_path, "train", doc)
    ds = CocoFolder(tmp_path, "train", image_size=32)
    assert isinstance(ds[1], BadSample) and ds[1].name == "bad.png"  # type: ignore[union-attr]
    assert "30x32" in ds[3].reason  # type: ignore[union-attr]
    loader = DataLoader(ds, batch_size=4, collate_fn=dense_collate)
    images, targets, bad = next(iter(loader))
    assert images.shape == (1, 3, 32, 32) and len(targets) == 1
    assert bad == ["bad.png", "missing.png", "good.png"]
    assert ds.bad_files == ["bad.png", "good.png", "missing.png"]  # in the order found
    images, targets, bad = dense_collate([None, BadSample("x.png")])
    assert images.shape[0] == 0 and targets == [] and bad == ["<unnamed sample>", "x.png"]


@requires_coco
def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="does not exist"):
        CocoFolder(tmp_path / "nope")
    (tmp_path / "train").mkdir()
    with pytest.raises(MissingFileError, match=r"instances_train\.json.*expected layout"):
        CocoFolder(tmp_path, "train")
    p = tmp_path / "annotations" / "instances_train.json"
    p.parent.mkdir()
    p.write_text("{not json")
    with pytest.raises(DataError, match="instances_train.json: not valid JSON"):
        CocoFolder(tmp_path, "train")
    p.write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="categories"):
        CocoFolder(tmp_path, "train")


@requires_coco
def test_2017_names(tmp_path: Path) -> None:
    _write_image(tmp_path / "val2017" / "a.png", 16, 16)
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 16, "height": 16}],
           "annotations": [], "categories": CATS}  # fmt: skip
    _write_json(tmp_path, "val2017", doc)
    ds = CocoFolder(tmp_path, "val", image_size=16)
    assert len(ds) == 1 and ds.image_dir.name == "val2017"


@requires_coco
def test_json_size_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sknet.data.dense as dense

    (tmp_path / "train").mkdir()
    _write_json(tmp_path, "train", {"images": [], "annotations": [], "categories": CATS})
    monkeypatch.setattr(dense, "MAX_COCO_JSON_BYTES", 10)
    with pytest.raises(DataError, match="more than"):
        CocoFolder(tmp_path, "train")


@requires_coco
def test_iscrowd_round_trip(tmp_path: Path) -> None:
    _write_image(tmp_path / "train" / "a.png", 20, 20)
    m = np.zeros((20, 20), dtype=np.uint8)
    m[2:8, 3:9] = 1
    # crowd regions come as uncompressed RLE: run lengths over the column-major pixels
    flat = m.flatten(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    assert flat[0] == 0
    doc = {
        "images": [{"id": 5, "file_name": "a.png", "width": 20, "height": 20}],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 7, "bbox": [3, 2, 6, 6], "iscrowd": 1,
             "segmentation": {"size": [20, 20], "counts": counts}},
        ],
        "categories": CATS,
    }  # fmt: skip
    _write_json(tmp_path, "train", doc)
    ds = CocoFolder(tmp_path, "train", image_size=20)
    _, t = ds[0]  # type: ignore[misc]
    assert t["iscrowd"].tolist() == [1] and torch.equal(t["masks"][0], torch.from_numpy(m))
    assert (t["semantic"][2:8, 3:9] == 255).all() and int((t["semantic"] == 255).sum()) == 36
    out = write_coco_folder(ds, tmp_path / "copy", "train")
    back = CocoFolder(out, "train", image_size=20)
    _, t2 = back[0]  # type: ignore[misc]
    assert t2["iscrowd"].tolist() == [1] and back.category_ids == (3, 7)
    assert t2["labels"].tolist() == [2] and torch.equal(t2["boxes"], t["boxes"])


def test_without_pycocotools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    monkeypatch.setitem(sys.modules, "pycocotools.mask", None)
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    ds = SyntheticDense(2, image_size=32, object_sizes=(4, 16))
    images, targets, bad = dense_collate([ds[0], ds[1]])
    assert images.shape == (2, 3, 32, 32) and len(targets) == 2 and bad == []
    with pytest.raises(DependencyError, match="pycocotools"):
        write_coco_folder(ds, tmp_path, "train")

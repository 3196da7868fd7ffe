"""Tests for sknet.data: synthetic shapes, local CIFAR batches, robust ImageFolder, transforms."""

from __future__ import annotations

import logging
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms as T

from sknet.data import (
    DATASET_NAMES,
    IMAGENET_MEAN,
    SHAPE_CLASSES,
    SyntheticShapes,
    build_cifar,
    build_dataset,
    build_imagefolder,
    eval_resize_size,
    eval_transform,
    train_transform,
)

# --------------------------------------------------------------------------------------------
# Synthetic shapes
# --------------------------------------------------------------------------------------------


def test_synthetic_basic_properties() -> None:
    ds = SyntheticShapes(num_samples=30, image_size=40)
    assert len(ds) == 30
    assert ds.num_classes == 10 == len(ds.classes) == len(SHAPE_CLASSES)
    image, label = ds[7]
    assert image.dtype == torch.float32
    assert image.shape == (3, 40, 40)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert isinstance(label, int) and 0 <= label < 10
    assert ds[-1][1] == ds[29][1]
    with pytest.raises(IndexError):
        ds[30]


def test_synthetic_deterministic_and_split_disjoint() -> None:
    a = SyntheticShapes(num_samples=20, seed=3)
    b = SyntheticShapes(num_samples=20, seed=3)
    val = SyntheticShapes(num_samples=20, seed=3, split="val")
    other_seed = SyntheticShapes(num_samples=20, seed=4)
    for i in (0, 5, 19):
        assert torch.equal(a[i][0], b[i][0])
        assert a[i][1] == b[i][1]
        assert not torch.equal(a[i][0], val[i][0])
        assert not torch.equal(a[i][0], other_seed[i][0])
    # Access order does not matter (pure function of the index).
    assert torch.equal(a[5][0], SyntheticShapes(num_samples=20, seed=3)[5][0])


def test_synthetic_all_classes_balanced() -> None:
    ds = SyntheticShapes(num_samples=50)
    labels = [ds.sample_info(i)["label"] for i in range(len(ds))]
    assert sorted(set(labels)) == list(range(10))
    assert np.bincount(labels).tolist() == [5] * 10
    assert [ds[i][1] for i in range(10)] == list(range(10))


def test_synthetic_zoom_one_is_identity() -> None:
    ds = SyntheticShapes(num_samples=20)
    for i in range(0, 20, 3):
        img, label = ds[i]
        rimg, rlabel = ds.render(i, zoom=1.0)
        assert torch.equal(img, rimg) and label == rlabel
    zoomed = SyntheticShapes(num_samples=20, zoom=2.0)
    assert torch.equal(zoomed[4][0], ds.render(4, zoom=2.0)[0])
    assert not torch.equal(zoomed[4][0], ds[4][0])


def test_synthetic_zoom_enlarges_object_about_its_centre() -> None:
    ds = SyntheticShapes(num_samples=200, image_size=48)
    # Small filled objects (circle, square) so that zoom 2 still fits inside the canvas.
    picks = [
        i
        for i in range(len(ds))
        if ds.sample_info(i)["class_name"] in ("circle", "square")
        and ds.sample_info(i)["base_scale"] < 0.35
    ][:4]
    assert picks
    for i in picks:
        area1 = float(ds.object_mask(i, zoom=1.0).sum())
        area2 = float(ds.object_mask(i, zoom=2.0).sum())
        assert 3.3 < area2 / area1 < 4.7, (i, area1, area2)
        # The pixels that change versus an (almost) object-free rendering are the object.
        empty = ds.render(i, zoom=1e-3)[0]
        fg1 = ((ds.render(i, 1.0)[0] - empty).abs().amax(0) > 0.1).sum().item()
        fg2 = ((ds.render(i, 2.0)[0] - empty).abs().amax(0) > 0.1).sum().item()
        assert 3.0 < fg2 / fg1 < 5.0, (i, fg1, fg2)
        info1, info2 = ds.sample_info(i, zoom=1.0), ds.sample_info(i, zoom=2.0)
        assert info2["scale"] == pytest.approx(2 * info1["scale"])
        # Centre moves at most as much as needed to keep the bigger object inside.
        half2 = info2["size_px"] / 2
        for c1, c2 in zip(info1["centre"], info2["centre"], strict=True):
            assert half2 - 1e-6 <= c2 <= 48 - half2 + 1e-6
            assert c2 == pytest.approx(min(max(c1, half2), 48 - half2))


def test_synthetic_scale_is_log_uniform_and_objects_inside() -> None:
    lo, hi = 0.15, 0.9
    ds = SyntheticShapes(num_samples=2000, scale_range=(lo, hi))
    infos = [ds.sample_info(i) for i in range(len(ds))]
    scales = np.array([d["scale"] for d in infos])
    assert scales.min() >= lo and scales.max() <= hi
    below_geo_mean = float(np.mean(scales < math.sqrt(lo * hi)))
    assert 0.45 < below_geo_mean < 0.55  # log-uniform: half the mass below the geometric mean
    for d in infos[:200]:
        half = d["size_px"] / 2
        assert all(half - 1e-6 <= c <= 48 - half + 1e-6 for c in d["centre"])


def test_synthetic_transform_and_build_dataset() -> None:
    ds = build_dataset("synthetic", split="val", num_samples=12, image_size=32)
    assert isinstance(ds, SyntheticShapes) and ds.num_classes == 10 and len(ds) == 12
    x, _ = ds[0]
    raw = SyntheticShapes(num_samples=12, image_size=32, split="val")[0][0]
    assert torch.allclose(x, (raw - 0.5) / 0.5)  # eval preset: normalisation only
    raw_ds = build_dataset("synthetic", num_samples=4, transform=None)
    assert float(raw_ds[0][0].min()) >= 0.0
    loader = DataLoader(build_dataset("synthetic", num_samples=8), batch_size=4)
    xb, yb = next(iter(loader))
    assert xb.shape == (4, 3, 48, 48) and yb.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="imagefolder"):
        build_dataset("imagenet-1k")


# --------------------------------------------------------------------------------------------
# CIFAR (tiny files in the real pickled-batch format)
# --------------------------------------------------------------------------------------------


def _py2_style_pickle(obj: object) -> bytes:
    """Protocol-2 pickle referencing ``numpy.core`` like the original Python 2 CIFAR files."""
    return pickle.dumps(obj, protocol=2).replace(b"numpy._core.", b"numpy.core.")


def _write_cifar10(root: Path, per_batch: int = 4) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        batch = {b"batch_label": name.encode(), b"data": data, b"labels": labels}
        (folder / name).write_bytes(_py2_style_pickle(batch))
        written[name] = (data, labels)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    meta = {b"label_names": names, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(_py2_style_pickle(meta))
    return written


def test_cifar10_loads_real_format(tmp_path: Path) -> None:
    written = _write_cifar10(tmp_path)
    train = build_cifar("cifar10", tmp_path, train=True, transform=None)
    test = build_cifar("cifar10", tmp_path, train=False, transform=None)
    assert len(train) == 20 and len(test) == 4
    assert train.num_classes == 10 and train.classes[0] == "airplane"
    data, labels = written["data_batch_2"]
    img, label = train[4]  # first image of the second batch
    assert isinstance(img, Image.Image) and img.size == (32, 32)
    arr = np.asarray(img)
    assert label == labels[0]
    assert arr[0, 0].tolist() == [data[0, 0], data[0, 1024], data[0, 2048]]
    assert arr[31, 31, 2] == data[0, 3071]
    _, tlabels = written["test_batch"]
    assert [test[i][1] for i in range(4)] == tlabels

    # The folder itself is accepted; default eval transform yields normalised tensors.
    ds = build_dataset("cifar10", data_dir=tmp_path / "cifar-10-batches-py", split="val")
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == tlabels[0]
    xb, _ = next(iter(DataLoader(build_dataset("cifar10", data_dir=tmp_path), batch_size=8)))
    assert xb.shape == (8, 3, 32, 32)


def test_cifar100_loads_real_format(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (("train", 6), ("test", 3)):
        batch = {
            "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            "fine_labels": [99, 0, 50, 1, 2, 3][:n],
            "coarse_labels": [0] * n,
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": ["x"] * 20}
    (folder / "meta").write_bytes(pickle.dumps(meta))
    ds = build_cifar("cifar100", tmp_path, train=True, transform=eval_transform("cifar100"))
    assert len(ds) == 6 and ds.num_classes == 100 and ds.classes[99] == "c99"
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and y == 99
    assert len(build_cifar("cifar100", tmp_path, train=False, transform=None)) == 3


def test_cifar_missing_files_message(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        build_cifar("cifar10", tmp_path / "nowhere", train=True, transform=None)
    msg = str(info.value)
    assert "cifar-10-batches-py" in msg and "data_batch_1..5" in msg and "test_batch" in msg
    assert "CIFAR-10 python version" in msg
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python.*train"):
        build_cifar("cifar100", tmp_path, train=True, transform=None)
    _write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_5").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_5"):
        build_cifar("cifar10", tmp_path, train=True, transform=None)


def test_cifar_corrupt_or_malformed_batches(tmp_path: Path) -> None:
    _write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    good = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(os.urandom(300))
    with pytest.raises(ValueError, match=r"data_batch_3.*corrupt"):
        build_cifar("cifar10", tmp_path, train=True, transform=None)
    (folder / "data_batch_3").write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(ValueError, match="data_batch_3"):
        build_cifar("cifar10", tmp_path, train=True, transform=None)
    bad_shape = {"data": np.zeros((4, 100), np.uint8), "labels": [0, 1, 2, 3]}
    (folder / "data_batch_3").write_bytes(pickle.dumps(bad_shape))
    with pytest.raises(ValueError, match=r"shape \(4, 100\)"):
        build_cifar("cifar10", tmp_path, train=True, transform=None)
    bad_labels = {"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 10]}
    (folder / "data_batch_3").write_bytes(pickle.dumps(bad_labels))
    with pytest.raises(ValueError, match="labels"):
        build_cifar("cifar10", tmp_path, train=True, transform=None)
    # Arbitrary globals are refused rather than executed.
    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": os.getcwd}))
    with pytest.raises(ValueError, match="refusing"):
        build_cifar("cifar10", tmp_path, train=True, transform=None)


# --------------------------------------------------------------------------------------------
# ImageFolder with a corrupt file
# --------------------------------------------------------------------------------------------


def _write_image_tree(root: Path) -> Path:
    rng = np.random.default_rng(2)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            d = root / split / cls
            d.mkdir(parents=True)
            for k, ext in enumerate(("png", "jpg")):
                arr = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{cls}{k}.{ext}")
    bad = root / "train" / "dog" / "dog_bad.jpg"
    bad.write_bytes(os.urandom(200))
    return bad


def test_imagefolder_skips_and_reports_corrupt_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = _write_image_tree(tmp_path)
    tf = T.Compose([T.Resize((8, 8)), T.ToTensor()])
    ds = build_imagefolder(tmp_path, split="train", transform=tf)
    assert ds.num_classes == 2 and ds.classes == ["cat", "dog"] and len(ds) == 5
    with caplog.at_level(logging.WARNING, logger="sknet.data"):
        batches = list(DataLoader(ds, batch_size=2, num_workers=0))
    assert sum(len(y) for _, y in batches) == 5  # the bad sample was replaced, not dropped
    assert all(x.shape[1:] == (3, 8, 8) for x, _ in batches)
    assert ds.bad_files == [str(bad)]
    assert any("dog_bad.jpg" in r.getMessage() for r in caplog.records)
    # A second epoch skips the known-bad file without counting it again.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sknet.data"):
        list(DataLoader(ds, batch_size=2, num_workers=0))
    assert ds.bad_files == [str(bad)] and not caplog.records
    val = build_imagefolder(tmp_path, split="val", transform=tf)
    assert len(val) == 4 and val.bad_files == []


def test_imagefolder_max_bad_raises_naming_file(tmp_path: Path) -> None:
    _write_image_tree(tmp_path)
    ds = build_imagefolder(tmp_path, split="train", transform=T.ToTensor(), max_bad=0)
    with pytest.raises(RuntimeError, match=r"1 unreadable.*dog_bad\.jpg"):
        list(DataLoader(ds, batch_size=5, num_workers=0))


def test_imagefolder_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"train.*DIR/train/<class_name>"):
        build_imagefolder(tmp_path, split="train", transform=None)
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="no class sub-folders"):
        build_imagefolder(tmp_path, split="train", transform=None)
    (tmp_path / "train" / "empty_class").mkdir()
    with pytest.raises(FileNotFoundError, match="empty_class"):
        build_imagefolder(tmp_path, split="train", transform=None)
    with pytest.raises(ValueError, match="data_dir"):
        build_dataset("imagefolder")


# --------------------------------------------------------------------------------------------
# Transforms and build_dataset
# --------------------------------------------------------------------------------------------


def test_transform_presets() -> None:
    assert eval_resize_size(224) == 256 and eval_resize_size(320) == 366
    img = Image.fromarray(np.full((300, 400, 3), 128, np.uint8))
    x = eval_transform("imagenet", 224)(img)
    assert x.shape == (3, 224, 224)
    assert torch.allclose(x[:, 0, 0], (128 / 255 - torch.tensor(IMAGENET_MEAN)) / 0.229, atol=0.02)
    steps = eval_transform("imagenet", 320).transforms
    assert isinstance(steps[0], T.Resize) and steps[0].size == 366
    assert isinstance(steps[1], T.CenterCrop)
    assert train_transform("imagenet", 64, crop_scale=(0.5, 1.0))(img).shape == (3, 64, 64)
    rrc = train_transform("imagenet", 64, crop_scale=(0.5, 1.0)).transforms[0]
    assert isinstance(rrc, T.RandomResizedCrop) and tuple(rrc.scale) == (0.5, 1.0)
    small = Image.fromarray(np.zeros((32, 32, 3), np.uint8))
    cifar = train_transform("cifar")
    assert isinstance(cifar.transforms[0], T.RandomCrop) and cifar.transforms[0].padding == 4
    assert cifar(small).shape == (3, 32, 32)
    syn = train_transform("synthetic")(torch.full((3, 8, 8), 0.5))
    assert torch.allclose(syn, torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="synthetic"):
        train_transform("mnist")


def test_build_dataset_names() -> None:
    assert DATASET_NAMES == ("synthetic", "cifar10", "cifar100", "imagefolder")
    with pytest.raises(ValueError) as info:
        build_dataset("mnist")
    assert all(n in str(info.value) for n in DATASET_NAMES)
    with pytest.raises(ValueError, match="split"):
        build_dataset("synthetic", split="training")

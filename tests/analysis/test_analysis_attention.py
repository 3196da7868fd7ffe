"""Tests of the object-scale attention protocol (sknet.analysis: attention, plots, report)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sknet
from sknet.analysis import (
    AttentionResult,
    SyntheticZoomSet,
    UnitInfo,
    bin_channels,
    build_views,
    check_zooms,
    collect_attention,
    default_units,
    paper_pattern,
    photo_zoom_transform,
    render_report,
    run_analysis,
    select_synthetic,
    unit_infos,
    zoom_tensor,
)
from sknet.data import SyntheticShapes, eval_resize_size, eval_transform

# --------------------------------------------------------------------------------------------
# Zoomed views
# --------------------------------------------------------------------------------------------


def test_zoom_tensor_one_is_identity_and_two_enlarges_the_centre() -> None:
    x = torch.zeros(3, 40, 40)
    x[:, 15:25, 15:25] = 1.0  # a 10x10 square in the centre
    assert zoom_tensor(x, 1.0) is x
    batch = x.unsqueeze(0).repeat(2, 1, 1, 1)
    assert torch.equal(zoom_tensor(batch, 1.0), batch)
    z2 = zoom_tensor(x, 2.0)
    assert z2.shape == x.shape
    # The square covers 4x the area (up to antialiasing at the border).
    assert float(z2[0].sum()) == pytest.approx(4 * float(x[0].sum()), rel=0.05)
    with pytest.raises(ValueError, match="enlarges only"):
        zoom_tensor(x, 0.5)


def test_photo_zoom_one_is_the_evaluation_transform() -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8))
    size = 56
    ref = eval_transform("imagenet", size)(img)
    from sknet.data import IMAGENET_MEAN, IMAGENET_STD

    t1 = photo_zoom_transform(size, 1.0, eval_resize_size(size), IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(t1(img), ref)
    t2 = photo_zoom_transform(size, 2.0, eval_resize_size(size), IMAGENET_MEAN, IMAGENET_STD)
    assert t2(img).shape == ref.shape
    assert not torch.allclose(t2(img), ref)


def test_synthetic_zoom_one_is_the_dataset_image() -> None:
    ds = SyntheticShapes(num_samples=6, image_size=32, seed=3, split="val")
    views = SyntheticZoomSet(ds, [0, 4], (1.0, 1.5, 2.0))
    v, label, index = views[1]
    assert v.shape == (3, 3, 32, 32) and index == 4
    image, lab = ds[4]
    assert label == lab
    assert torch.equal(v[0], (image - 0.5) / 0.5)
    assert not torch.equal(v[0], v[2])


def test_check_zooms() -> None:
    assert check_zooms([1, 1.5, 2]) == (1.0, 1.5, 2.0)
    with pytest.raises(ValueError, match="ascending"):
        check_zooms([2.0, 1.0])
    with pytest.raises(ValueError, match="positive"):
        check_zooms([0.0, 1.0])
    with pytest.raises(ValueError, match="enlarged"):
        check_zooms([0.5, 1.0], allow_below_one=False)


def test_select_synthetic_keeps_zoomed_objects_in_the_training_range() -> None:
    ds = SyntheticShapes(num_samples=400, image_size=48, split="val", scale_range=(0.15, 0.9))
    idx, info = select_synthetic(ds, 50, (1.0, 1.5, 2.0), (0.15, 0.9))
    assert len(idx) == 50
    scales = [ds.sample_info(i)["base_scale"] for i in idx]
    assert max(scales) * 2.0 <= 0.9 + 1e-9
    assert min(scales) >= 0.15 - 1e-9
    # Some objects were skipped, because they would grow beyond the training range.
    assert info["scanned"] > 50 and 0 < info["eligible_fraction"] < 1
    all_idx, _ = select_synthetic(ds, 50, (1.0, 2.0), (0.15, 0.9), selection="all")
    assert all_idx == list(range(50))
    with pytest.raises(ValueError, match="no object can stay"):
        select_synthetic(ds, 5, (1.0, 4.0), (0.3, 0.9))
    with pytest.raises(ValueError, match="selection"):
        select_synthetic(ds, 5, (1.0,), (0.15, 0.9), selection="some")


# --------------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------------


def test_unit_infos_and_clear_errors_without_attention() -> None:
    m = sknet.create_model("sknet_tiny", sk_branches=(3, "5x5 G16", 7))
    infos = unit_infos(m)
    assert list(infos) == ["SK_2_1", "SK_3_1", "SK_4_1"]
    assert infos["SK_2_1"].effective_sizes == (3, 5, 7)
    assert (infos["SK_2_1"].small, infos["SK_2_1"].large) == (0, 2)
    with pytest.raises(ValueError, match="no SK units"):
        unit_infos(sknet.create_model("resnext_tiny"))
    with pytest.raises(ValueError, match="no Select attention"):
        unit_infos(sknet.create_model("sknet_tiny", sk_aggregation="sum"))


def test_default_units_pick_early_middle_last() -> None:
    names = list(sknet.create_model("sknet50").sk_units())
    assert default_units(names) == ["SK_2_3", "SK_3_4", "SK_5_3"]  # the paper's Fig. 4
    assert default_units(["SK_2_1", "SK_3_1", "SK_4_1"]) == ["SK_2_1", "SK_3_1", "SK_4_1"]
    assert default_units(["a", "b"]) == ["a", "b"]


# --------------------------------------------------------------------------------------------
# Collection
# --------------------------------------------------------------------------------------------


def test_collected_attention_is_finite_sums_to_one_and_matches_a_direct_forward() -> None:
    torch.manual_seed(0)
    model = sknet.create_model("sknet_tiny", sk_branches=(3, 5, 7)).eval()
    ds = SyntheticShapes(num_samples=40, image_size=32, seed=1, split="val")
    zooms = (1.0, 2.0)
    views = SyntheticZoomSet(ds, list(range(11)), zooms)
    res = collect_attention(model, views, zooms, ds.classes, batch_size=4)  # uneven batches
    assert res.num_images == 11 and model.training is False
    for u, info in res.units.items():
        cm = res.channel_mean[u]
        assert cm.shape == (2, 3, info.channels)
        assert np.isfinite(cm).all()
        np.testing.assert_allclose(cm.sum(axis=1), 1.0, atol=1e-6)
        cb = res.class_branch_mean[u]
        present = np.bincount(res.labels, minlength=10) > 0
        np.testing.assert_allclose(cb[:, present].sum(axis=2), 1.0, atol=1e-6)
        assert np.isnan(cb[:, ~present]).all()
        bm = res.branch_mean(u)
        np.testing.assert_allclose(res.mean_diff(u), bm[:, 2] - bm[:, 0], atol=1e-6)
    # The same numbers as one direct forward pass over all images at zoom 2.
    x = torch.stack([views[j][0][1] for j in range(11)])
    with sknet.capture_attention(model) as att, torch.inference_mode():
        logits = model(x)
        direct = {u: att[u].mean(dim=0).double().numpy() for u in res.units}
    for u in res.units:
        np.testing.assert_allclose(res.channel_mean[u][1], direct[u], atol=1e-6)
    labels = torch.tensor([views[j][1] for j in range(11)])
    acc = float((logits.argmax(1) == labels).float().mean())
    assert res.accuracy()["2"] == pytest.approx(acc)


def test_collect_rejects_labels_outside_the_classifier() -> None:
    model = sknet.create_model("sknet_tiny", num_classes=3).eval()
    ds = SyntheticShapes(num_samples=20, image_size=32, split="val")
    views = SyntheticZoomSet(ds, list(range(8)), (1.0,))
    with pytest.raises(ValueError, match="out of range"):
        collect_attention(model, views, (1.0,), ["a", "b", "c"], batch_size=8)


def _fake_result(early_delta: float, last_delta: float, n: int = 200) -> AttentionResult:
    """Hand-made statistics: early units change by ``early_delta``, the last by ``last_delta``."""
    rng = np.random.default_rng(0)
    units = {
        name: UnitInfo(name, 4, ("3x3 D1", "3x3 D2"), (3, 5), 1, 0, "channel")
        for name in ("SK_2_1", "SK_3_1", "SK_4_1")
    }
    zooms = (1.0, 1.5, 2.0)
    image_diff = {}
    for name in units:
        delta = last_delta if name == "SK_4_1" else early_delta
        base = rng.normal(0.0, 0.05, n)
        image_diff[name] = np.stack(
            [base + f * delta + rng.normal(0, 0.01, n) for f in (0.0, 0.5, 1.0)]
        )
    k = 2
    return AttentionResult(
        zooms=zooms,
        units=units,
        classes=["a", "b"],
        labels=np.arange(n) % k,
        indices=np.arange(n),
        correct=np.ones((3, n), dtype=bool),
        channel_mean={u: np.full((3, 2, 4), 0.5) for u in units},
        class_branch_mean={u: np.full((3, k, 2), 0.5) for u in units},
        image_diff=image_diff,
        meta={"model": "fake", "source": "test"},
    )


def test_trend_and_paper_pattern_judgement() -> None:
    res = _fake_result(early_delta=0.05, last_delta=0.0)
    assert [res.trend(u) for u in res.units] == ["rises", "rises", "flat"]
    assert paper_pattern(res)["verdict"] == "matches" and paper_pattern(res)["matches"] is True
    text = render_report(res)
    assert "**matches**" in text and "raises** the large-kernel attention in 2 of 3" in text
    weaker = _fake_result(early_delta=0.05, last_delta=0.02)
    assert paper_pattern(weaker)["verdict"] == "partly"
    assert "**partly matches**" in render_report(weaker)
    rev = _fake_result(early_delta=-0.05, last_delta=0.05)
    assert [rev.trend(u) for u in rev.units] == ["falls", "falls", "rises"]
    assert paper_pattern(rev)["matches"] is False and paper_pattern(rev)["verdict"] == "differs"
    assert "does not match" in render_report(rev)
    flat = _fake_result(early_delta=0.0, last_delta=0.0)
    assert paper_pattern(flat)["matches"] is not True
    assert "No unit's attention changes measurably" in render_report(flat)


def test_bin_channels() -> None:
    v = np.arange(10, dtype=float)
    np.testing.assert_allclose(bin_channels(v, 1), v)
    np.testing.assert_allclose(bin_channels(v, 4), [1.5, 5.5, 8.5])
    np.testing.assert_allclose(bin_channels(np.stack([v, 2 * v]), 5), [[2, 7], [4, 14]])


# --------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------


def _check_outputs(out: Path, units: list[str], zooms: list[float], k: int) -> dict:
    doc = json.loads((out / "attention.json").read_text())
    assert doc["format"] == "sknet-attention/1"
    assert doc["zooms"] == zooms and set(doc["accuracy"]) == {f"{z:g}" for z in zooms}
    assert doc["unit_order"] == units
    for u in units:
        unit = doc["units"][u]
        m = len(unit["branches"])
        for z in zooms:
            entry = unit["zooms"][f"{z:g}"]
            assert len(entry["branch_mean"]) == m
            assert math.isclose(sum(entry["branch_mean"]), 1.0, abs_tol=1e-5)
            assert len(entry["channel_attention"]) == m
            assert all(len(row) == unit["channels"] for row in entry["channel_attention"])
            assert len(entry["per_class_diff"]) == k == len(entry["per_class_branch_mean"])
            assert math.isfinite(entry["mean_diff"])
    for stem in ("fig3_channel_attention", "fig3_depth", "fig4_classes"):
        png = (out / f"{stem}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
        assert "<svg" in (out / f"{stem}.svg").read_text()[:2000]
    report = (out / "report.md").read_text()
    assert "top-1 accuracy" in report and all(u in report for u in units)
    return doc


def test_run_analysis_synthetic_writes_complete_json_plots_and_report(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = sknet.create_model("sknet_tiny")
    views = build_views("synthetic", num_images=24, image_size=32, zooms=(1.0, 1.5, 2.0))
    assert views.protocol["selection"]["selection"] == "in-range"
    _, files = run_analysis(model, views, tmp_path, batch_size=16, meta={"source": "init"})
    assert all(f.is_file() for f in files) and len(files) == 8
    doc = _check_outputs(tmp_path, ["SK_2_1", "SK_3_1", "SK_4_1"], [1.0, 1.5, 2.0], 10)
    assert doc["num_images"] == 24 == sum(doc["class_counts"])
    assert doc["protocol"]["zoom_method"] == "render"
    assert doc["paper_pattern"]["last_units"] == ["SK_4_1"]


def test_run_analysis_on_an_image_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            d = tmp_path / "data" / split / c
            d.mkdir(parents=True)
            for i in range(3):
                arr = rng.integers(0, 255, (40 + 5 * i, 50, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    views = build_views("imagefolder", data_dir=tmp_path / "data", image_size=32, num_images=5)
    assert len(views.dataset) == 5 and views.classes == ["cat", "dog"]
    model = sknet.create_model("sknet_tiny", num_classes=2, sk_attention="shared")
    run_analysis(model, views, tmp_path / "out", batch_size=4, class_units=["SK_3_1"])
    doc = _check_outputs(tmp_path / "out", ["SK_2_1", "SK_3_1", "SK_4_1"], [1.0, 1.5, 2.0], 2)
    assert doc["protocol"]["zoom_method"] == "center-crop-resize"
    assert doc["class_units"] == ["SK_3_1"]
    with pytest.raises(ValueError, match="enlarged"):
        build_views("imagefolder", data_dir=tmp_path / "data", zooms=(0.5, 1.0))


def test_run_analysis_rejects_a_class_mismatch_and_unknown_units(tmp_path: Path) -> None:
    views = build_views("synthetic", num_images=4, image_size=32)
    with pytest.raises(ValueError, match="1000 classes"):
        run_analysis(sknet.create_model("sknet_tiny", num_classes=1000), views, tmp_path)
    with pytest.raises(ValueError, match="unknown SK unit"):
        run_analysis(sknet.create_model("sknet_tiny"), views, tmp_path, channel_units=["SK_9_9"])


def test_a_single_image_gives_valid_json(tmp_path: Path) -> None:
    views = build_views("synthetic", num_images=1, image_size=32)
    run_analysis(sknet.create_model("sknet_tiny"), views, tmp_path)
    doc = json.loads((tmp_path / "attention.json").read_text())
    change = doc["units"]["SK_2_1"]["zooms"]["2"]["change_from_reference"]
    assert doc["num_images"] == 1 and change["sem"] is None


@pytest.mark.parametrize("attention", ["channel", "shared"])
def test_the_deployed_model_records_the_same_attention(tmp_path: Path, attention: str) -> None:
    # `sknet analyze` probes the sknet.deploy form (BN folded) unless --no-deploy: same numbers.
    torch.manual_seed(0)
    model = sknet.create_model("sknet_tiny", sk_attention=attention)
    for m in model.modules():  # non-trivial BN statistics, so a wrong folding would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    views = build_views("synthetic", num_images=12, image_size=48)
    eager, _ = run_analysis(model.eval(), views, tmp_path / "eager", batch_size=5)
    fused, _ = run_analysis(sknet.deploy(model), views, tmp_path / "fused", batch_size=5)
    assert list(fused.units) == list(eager.units)
    for u in eager.units:
        np.testing.assert_allclose(fused.mean_diff(u), eager.mean_diff(u), atol=1e-5)
    a = json.loads((tmp_path / "eager" / "attention.json").read_text())["units"]
    b = json.loads((tmp_path / "fused" / "attention.json").read_text())["units"]
    for u in a:
        assert b[u]["attention"] == a[u]["attention"] == attention
        ca = np.array(a[u]["zooms"]["2"]["channel_attention"])
        cb = np.array(b[u]["zooms"]["2"]["channel_attention"])
        np.testing.assert_allclose(cb, ca, atol=1e-5)

"""sknet.analysis.dense_scale: per-object attention vs object size, forced-branch evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import sknet
from sknet.analysis.dense_scale import (
    FORMAT,
    PERMUTATION_MAX_N,
    ObjectAttention,
    force_branch,
    forced_branch_table,
    load_object_attention,
    object_attention,
    plot_object_attention,
    spearman,
)
from sknet.errors import ConfigError, DataError, InputError, InputTypeError

SIZE = 64


class Features(nn.Module):
    """A features_only backbone as a dense model stand-in: forward returns the feature maps."""

    def __init__(self, name: str = "sknet_tiny") -> None:
        super().__init__()
        self.backbone = sknet.create_model(name, features_only=True)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone(images)


@pytest.fixture(scope="module")
def model() -> Features:
    torch.manual_seed(0)
    m = Features()
    # non-trivial attention: random BN statistics and select weights
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            assert mod.running_mean is not None and mod.running_var is not None
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
        if isinstance(mod, sknet.layers.SKAttention):
            nn.init.normal_(mod.fc_select.weight, std=0.5)
    return m.eval()


def _batches(n_batches: int = 2, b: int = 2, seed: int = 0) -> list[Any]:
    g = torch.Generator().manual_seed(seed)
    out: list[Any] = []
    for _ in range(n_batches):
        images = torch.rand(b, 3, SIZE, SIZE, generator=g)
        targets = []
        for _ in range(b):
            boxes = torch.tensor(
                [[0.0, 0.0, 64.0, 64.0], [4.0, 6.0, 20.0, 30.0], [40.0, 40.0, 42.0, 41.0]]
            )
            targets.append(
                {
                    "boxes": boxes,
                    "labels": torch.tensor([1, 2, 3]),
                    "area": torch.tensor([4096.0, 300.0, 2.0]),
                    "iscrowd": torch.zeros(3, dtype=torch.int64),
                }
            )
        out.append((images, targets, []))
    return out


@pytest.fixture(scope="module")
def result(model: Features) -> ObjectAttention:
    return object_attention(model, _batches(), image_size=SIZE, keep_channels=True)


def test_shapes_and_normalisation(result: ObjectAttention) -> None:
    assert list(result.units) == ["SK_2_1", "SK_3_1", "SK_4_1"]
    assert result.num_images == 4 and result.num_objects == 12
    assert result.image_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    np.testing.assert_allclose(result.sqrt_area[:3], [64.0, math.sqrt(300.0), math.sqrt(2.0)])
    np.testing.assert_allclose(result.box_size[1], [16.0, 24.0])
    assert result.strides == {"SK_2_1": 2.0, "SK_3_1": 4.0, "SK_4_1": 8.0}
    for u, info in result.units.items():
        assert result.channels[u].shape == (12, 2, info.channels)
        np.testing.assert_allclose(result.channels[u].sum(axis=1), 1.0, atol=1e-5)
        assert result.branch_mean[u].shape == (12, 2)
        np.testing.assert_allclose(result.branch_mean[u].sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(result.large[u], result.branch_mean[u][:, info.large])
        assert result.image_large[u].shape == (4,)
        assert np.isfinite(result.large[u]).all()


def test_whole_image_box_equals_image_level_attention(
    model: Features, result: ObjectAttention
) -> None:
    """Validates the definition: pooling over the whole image is the unit's own GAP."""
    whole = result.sqrt_area == 64.0
    assert whole.sum() == 4
    images = torch.cat([b[0] for b in _batches()])
    with torch.no_grad(), sknet.capture_attention(model) as att:
        model(images)
        real = {u: att[u].clone() for u in result.units}
    for u, info in result.units.items():
        # the recorded image-level value is the unit's real attention in that pass
        np.testing.assert_allclose(
            result.image_large[u], real[u][:, info.large].mean(-1).numpy(), atol=1e-6
        )
        np.testing.assert_allclose(
            result.large[u][whole], result.image_large_per_object(u)[whole], atol=1e-5
        )
        # full (M, C) too, channel by channel
        np.testing.assert_allclose(result.channels[u][whole], real[u].numpy(), atol=1e-5)
    # and a smaller box is not the image-level value
    part = result.sqrt_area == math.sqrt(300.0)
    assert not np.allclose(
        result.large["SK_2_1"][part], result.image_large_per_object("SK_2_1")[part]
    )


def test_max_images_crowd_and_default_image_size(model: Features) -> None:
    batches = _batches()
    batches[0][1][0]["iscrowd"] = torch.tensor([0, 1, 0])
    r = object_attention(model, batches, max_images=3, units=["SK_4_1"])
    assert r.num_images == 3 and r.image_size == SIZE
    assert r.num_objects == 2 + 3 + 3  # the crowd region is skipped
    assert list(r.units) == ["SK_4_1"]
    r2 = object_attention(model, [(b[0], b[1]) for b in batches], include_crowd=True, max_images=1)
    assert r2.num_objects == 3
    assert model.training is False


class Padded(nn.Module):
    """Pads the batch bottom/right to a multiple of 32 before the backbone, as detectors do."""

    def __init__(self, features: Features) -> None:
        super().__init__()
        self.backbone = features.backbone

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        h, w = images.shape[-2:]
        pad = (0, -w % 32, 0, -h % 32)
        return self.backbone(nn.functional.pad(images, pad))


def test_strides_from_the_padded_backbone_input(model: Features) -> None:
    images = torch.rand(2, 3, 40, 40)
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 40.0, 40.0]]), "labels": torch.tensor([1])}] * 2
    r = object_attention(Padded(model), [(images, targets)])
    # 40 px padded to 64: the units see 32/16/8 cells, strides 2/4/8 (40 / 8 would say 5 -> 4)
    assert r.strides == {"SK_2_1": 2.0, "SK_3_1": 4.0, "SK_4_1": 8.0}
    assert r.meta["stride_from"] == "backbone input width"
    assert np.isfinite(r.large["SK_4_1"]).all()


class Twice(Features):
    def __init__(self, features: Features) -> None:
        nn.Module.__init__(self)
        self.backbone = features.backbone

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        self.backbone(images)
        return self.backbone(images)


def test_unit_run_twice_is_an_error_and_hooks_are_removed(model: Features) -> None:
    with pytest.raises(InputError, match="more than once"):
        object_attention(Twice(model), _batches(1), image_size=SIZE)
    for unit in sknet.sk_units(model).values():
        assert not unit._forward_hooks and not unit.record_attention
        assert all(not br._forward_hooks for br in unit.branches)
    assert not model.backbone._forward_pre_hooks


def test_mode_restored_and_errors(model: Features) -> None:
    model.train()
    try:
        object_attention(model, _batches(1), image_size=SIZE)
        assert model.training
    finally:
        model.eval()
    with pytest.raises(ConfigError):
        object_attention(model, _batches(1), units=["SK_9_9"])
    with pytest.raises(DataError):
        object_attention(model, [(torch.rand(2, 3, SIZE, SIZE), [{"boxes": torch.zeros(1, 4)}])])
    with pytest.raises(InputTypeError):
        object_attention(model, [torch.rand(2, 3, SIZE, SIZE)])


def test_no_sk_units_is_config_error() -> None:
    plain = Features("resnext_tiny").eval()
    with pytest.raises(ConfigError):
        object_attention(plain, _batches(1), image_size=SIZE)
    with pytest.raises(ConfigError), force_branch(plain, "large"):
        pass


def test_spearman_known_data() -> None:
    x = np.arange(10.0)
    rho, p, n = spearman(x, x**3)
    assert rho == pytest.approx(1.0) and n == 10 and p < 0.01
    rho, p, _ = spearman(x, -np.exp(x))
    assert rho == pytest.approx(-1.0) and p < 0.01
    # ties: average ranks; value from the Pearson correlation of the ranks
    a = [1.0, 2.0, 2.0, 3.0]
    b = [1.0, 3.0, 2.0, 4.0]
    ra, rb = np.array([1, 2.5, 2.5, 4]), np.array([1, 3, 2, 4.0])
    expected = np.corrcoef(ra, rb)[0, 1]
    assert spearman(a, b)[0] == pytest.approx(expected)
    # NaN pairs dropped, too few points, constant input
    assert spearman([1, 2, np.nan, 3], [1, 2, 5, 3])[2] == 3
    assert math.isnan(spearman([1, 2], [2, 1])[0])
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])[0])
    # reproducible p-value; independent data gives a large p
    rng = np.random.default_rng(1)
    u, v = rng.random(40), rng.random(40)
    assert spearman(u, v) == spearman(u, v)
    assert spearman(u, v)[1] > 0.05
    # the permutation p agrees with its normal limit, which takes over for large n
    rng2 = np.random.default_rng(5)
    w = rng2.random(400)
    rho, p, n = spearman(w, w + 10.0 * rng2.random(400))  # weak: p about 0.2
    assert 0.1 < p < 0.3
    assert p == pytest.approx(math.erfc(abs(rho) * math.sqrt((n - 1) / 2)), abs=0.02)
    big = rng.random(PERMUTATION_MAX_N + 1)
    rho, p, n = spearman(big, big + 30.0 * rng.random(big.size))
    assert p == math.erfc(abs(rho) * math.sqrt((n - 1) / 2))


def test_binned_and_json(result: ObjectAttention, tmp_path: Path) -> None:
    bins = result.binned("SK_3_1", 3)
    assert [b["name"] for b in bins] == ["small", "medium", "large"]
    assert sum(b["n"] for b in bins) == 12
    edges = result.binned("SK_3_1", [0.0, 10.0, 100.0])
    assert [b["n"] for b in edges] == [4, 8]
    small = result.large["SK_3_1"][result.sqrt_area < 10]
    assert edges[0]["mean"] == pytest.approx(small.mean())
    assert edges[0]["sd"] == pytest.approx(small.std())
    named = result.binned("SK_3_1", [("tiny", 0, 5), ("huge", 100, 200)])
    assert [b["n"] for b in named] == [4, 0] and named[1]["mean"] is None
    path = result.save_json(tmp_path / "oa.json")
    doc = json.loads(path.read_text())
    assert doc["format"] == FORMAT and doc["num_objects"] == 12
    assert doc["units"]["SK_2_1"]["spearman"]["n"] == 12
    back = load_object_attention(path)
    np.testing.assert_allclose(back.large["SK_4_1"], result.large["SK_4_1"])
    assert back.spearman("SK_4_1") == result.spearman("SK_4_1")


def test_plot_writes_files(result: ObjectAttention, tmp_path: Path) -> None:
    paths = plot_object_attention(result, tmp_path / "plots")
    assert [p.suffix for p in paths] == [".png", ".svg"]
    assert all(p.stat().st_size > 1000 for p in paths)
    with pytest.raises(ConfigError):
        plot_object_attention(result, tmp_path, units=["nope"])


def test_force_branch_exact_and_restored(model: Features) -> None:
    unit = sknet.sk_units(model)["SK_3_1"]
    x = torch.randn(2, unit.in_channels, 8, 8)
    with torch.no_grad():
        normal = unit(x).clone()
        u0, u1 = unit.branch_outputs(x)
        for which, expected in (("small", u0), ("large", u1), (0, u0), (1, u1)):
            with force_branch(model, which) as chosen:
                assert set(chosen) == {"SK_2_1", "SK_3_1", "SK_4_1"}
                assert torch.equal(unit(x), expected)
            assert torch.equal(unit(x), normal)
        with pytest.raises(RuntimeError, match="boom"), force_branch(model, "large"):
            raise RuntimeError("boom")
        assert torch.equal(unit(x), normal)
        assert all(
            u.attn is None or not u.attn._forward_hooks for u in sknet.sk_units(model).values()
        )
    with pytest.raises(ConfigError), force_branch(model, 2):
        pass
    with pytest.raises(ConfigError), force_branch(model, "medium"):
        pass


def test_forced_branch_table(model: Features) -> None:
    images = torch.rand(2, 3, SIZE, SIZE)

    def evaluate() -> dict:
        with torch.no_grad():
            out = model(images)[-1]
        return {"map": float(out.mean()), "ap_small": None, "other": 1.0}

    table = forced_branch_table(evaluate, model, ["map", "ap_small"])
    assert set(table) == {"normal", "small", "large", "delta_small", "delta_large"}
    assert table["delta_small"]["ap_small"] is None
    assert table["delta_large"]["map"] == pytest.approx(
        table["large"]["map"] - table["normal"]["map"]
    )
    assert table["small"]["map"] != table["large"]["map"]
    assert evaluate()["map"] == table["normal"]["map"]  # restored afterwards

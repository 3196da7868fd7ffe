"""Tests generated from the registry: every model builds, runs, trains and has its recorded size."""

from __future__ import annotations

import pytest
import torch

import sknet

# Parameter counts with a 50-way classifier, recorded when each model was added. A change here
# is a change of architecture (and of checkpoint compatibility): update it deliberately.
RECORDED_PARAMS_50 = {
    "resnext101_32x4d": 42231154,
    "resnext26_32x4d": 13442930,
    "resnext29_16x32d": 25177970,
    "resnext29_16x64d": 68196210,
    "resnext29_8x64d": 34467698,
    "resnext50_32x4d": 23082354,
    "resnext50_36x4d": 25602802,
    "resnext50_wide": 26171890,
    "resnext56_32x4d": 25335154,
    "resnext_tiny": 147178,
    "se_shufflenetv2_x0_5": 422922,
    "se_shufflenetv2_x1_0": 1475430,
    "senet101": 47008866,
    "senet29": 34989506,
    "senet50": 25613346,
    "senet_tiny": 158406,
    "shufflenetv2_x0_5": 393042,
    "shufflenetv2_x1_0": 1304854,
    "sk_resnet_18": 25160018,
    "sk_resnet_34": 45408162,
    "sk_resnet_50": 55126818,
    "sk_resnext_50_32x4d": 27328210,
    "sk_shufflenetv2_x0_5": 504682,
    "sk_shufflenetv2_x1_0": 1569290,
    "skresnet18": 11470706,
    "skresnet34": 21795026,
    "sknet101": 46740210,
    "sknet26": 14799858,
    "sknet29": 28297394,
    "sknet50": 25533234,
    "sknet_tiny": 182666,
}

REQUIRED_NAMES = {
    "resnext26_32x4d", "resnext50_32x4d", "resnext101_32x4d", "senet50", "senet101",
    "sknet26", "sknet50", "sknet101", "resnext50_wide", "resnext56_32x4d", "resnext50_36x4d",
    "resnext29_16x32d", "resnext29_8x64d", "resnext29_16x64d", "senet29", "sknet29",
    "shufflenetv2_x0_5", "shufflenetv2_x1_0", "se_shufflenetv2_x0_5", "se_shufflenetv2_x1_0",
    "sk_shufflenetv2_x0_5", "sk_shufflenetv2_x1_0", "sk_resnet_18", "sk_resnet_34",
    "sk_resnet_50", "sk_resnext_50_32x4d",
}  # fmt: skip


def test_registry_has_every_family_and_recorded_sizes() -> None:
    names = set(sknet.list_models())
    assert names >= REQUIRED_NAMES
    assert names == set(RECORDED_PARAMS_50), "record the parameter count of every new model"


def test_list_models_wildcards() -> None:
    assert sknet.list_models("sknet*") == [
        "sknet101",
        "sknet26",
        "sknet29",
        "sknet50",
        "sknet_tiny",
    ]
    assert "sk_shufflenetv2_x1_0" in sknet.list_models("sk*")
    assert sknet.list_models("nothing*") == []


_FAST = {n for n in RECORDED_PARAMS_50 if n.endswith("_tiny") or "shufflenet" in n}


@pytest.mark.parametrize(
    "name",
    [
        n if n in _FAST else pytest.param(n, marks=pytest.mark.slow)
        for n in sorted(RECORDED_PARAMS_50)
    ],
)
def test_model_contract(name: str) -> None:
    torch.manual_seed(0)
    model = sknet.create_model(name, num_classes=50)
    assert sum(p.numel() for p in model.parameters()) == RECORDED_PARAMS_50[name]
    size = sknet.get_entry(name).input_size
    assert model.default_input_size == size

    model.eval()
    with torch.no_grad():
        x1 = torch.randn(1, 3, size, size)
        out = model(x1)
        feats = model.forward_features(x1)
        pooled = model.forward_head(feats, pre_logits=True)
    assert out.shape == (1, 50) and torch.isfinite(out).all()
    assert feats.dim() == 4 and feats.shape[1] == model.feature_info[-1]["num_chs"]
    assert pooled.shape == (1, model.head.in_features)
    assert [f["reduction"] for f in model.feature_info] == sorted(
        f["reduction"] for f in model.feature_info
    )

    model.train()
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 50) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"

    model.reset_classifier(7)
    assert model.eval()(torch.randn(1, 3, size, size)).shape == (1, 7)
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, size, size)).shape == (1, model.head.in_features)


@pytest.mark.parametrize(
    "name,expected",
    [("sknet50", 16), ("sknet101", 33), ("sknet29", 9), ("sk_shufflenetv2_x1_0", 19),
     ("sknet_tiny", 3), ("resnext50_32x4d", 0), ("senet50", 0)],
)  # fmt: skip
def test_sk_unit_names(name: str, expected: int) -> None:
    units = sknet.create_model(name).sk_units()
    assert len(units) == expected
    if name == "sknet50":
        assert list(units)[:4] == ["SK_2_1", "SK_2_2", "SK_2_3", "SK_3_1"]
        assert list(units)[-1] == "SK_5_3"
        # attention widths d of SKNet-50: 32 / 32 / 32 / 64 by stage (paper, official release)
        assert [units[f"SK_{s}_1"].attn_dim for s in (2, 3, 4, 5)] == [32, 32, 32, 64]
    if name == "sknet101":
        # the official release's quirk: d = 16 in conv3_x
        assert [units[f"SK_{s}_1"].attn_dim for s in (2, 3, 4, 5)] == [32, 16, 32, 64]


def test_overrides_are_typed_and_checked() -> None:
    m = sknet.create_model("sknet_tiny", sk_branches=[3, 5, 7], sk_aggregation="sum")
    unit = m.sk_units()["SK_2_1"]
    assert unit.num_branches == 3 and unit.attn is None
    with pytest.raises(TypeError, match="sk_brnaches.*did you mean 'sk_branches'"):
        sknet.create_model("sknet_tiny", sk_brnaches=(3, 5))
    with pytest.raises(TypeError, match="sk_reduction"):
        sknet.create_model("sknet_tiny", sk_reduction="16")
    with pytest.raises(TypeError, match="sk_attention"):
        sknet.create_model("sknet_tiny", sk_attention="spatial")

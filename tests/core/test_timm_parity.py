"""timm parity: timm's model names as aliases, and timm's create_model knobs (drop_rate,
drop_path_rate, global_pool, set_grad_checkpointing, pretrained_cfg)."""

from __future__ import annotations

import pytest
import torch

import sknet
from sknet.errors import ConfigError
from sknet.hub import get_pretrained_cfg
from sknet.hub.table import resolve_pretrained
from sknet.layers import DropPath
from sknet.models import aliases_of, get_entry, list_aliases, resolve_alias

TIMM_ALIASES = {
    "skresnext50_32x4d": "sknet50",
    "seresnext50_32x4d": "senet50",
    "seresnext101_32x4d": "senet101",
}


def test_aliases_resolve_to_our_models() -> None:
    assert list_aliases() == dict(sorted(TIMM_ALIASES.items()))
    for alias, name in TIMM_ALIASES.items():
        assert resolve_alias(alias) == name
        assert get_entry(alias) is get_entry(name)
        assert alias in aliases_of(name)
        assert alias not in sknet.list_models()  # ours are listed; aliases documented
    # timm's names that are ours already
    for name in ("resnext50_32x4d", "resnext101_32x4d", "skresnet18", "skresnet34"):
        assert name in sknet.list_models()


def test_create_model_by_alias_is_the_same_architecture() -> None:
    a = sknet.create_model("skresnext50_32x4d", num_classes=0)
    b = sknet.create_model("sknet50", num_classes=0)
    assert a.model_name == "sknet50"
    assert {k: v.shape for k, v in a.state_dict().items()} == {
        k: v.shape for k, v in b.state_dict().items()
    }


def test_unknown_name_suggests_timm_alias_first() -> None:
    with pytest.raises(ConfigError) as err:
        sknet.create_model("skresnext50_32x4")
    msg = str(err.value)
    assert msg.index("skresnext50_32x4d") < msg.index("sk_resnext_50_32x4d")
    assert "sknet info --list" in msg


def test_weights_tags_accept_aliases() -> None:
    assert get_pretrained_cfg("skresnext50_32x4d.ra_in1k") is get_pretrained_cfg("sknet50.ra_in1k")
    assert get_pretrained_cfg("seresnext50_32x4d").model == "senet50"
    assert resolve_pretrained("skresnext50_32x4d", True) is get_pretrained_cfg("sknet50")
    assert resolve_pretrained("skresnext50_32x4d", "ra_in1k").model == "sknet50"
    assert resolve_pretrained("sknet50", "skresnext50_32x4d.ra_in1k").tag == "ra_in1k"


def test_drop_path_schedule_and_eval_identity() -> None:
    m = sknet.create_model("sknet_tiny", drop_path_rate=0.2)
    rates = [
        blk.drop_path.p if isinstance(blk.drop_path, DropPath) else 0.0
        for stage in m.stages
        for blk in stage
    ]
    assert rates == pytest.approx([0.0, 0.1, 0.2])  # linear over the blocks, as timm
    ref = sknet.create_model("sknet_tiny")
    ref.load_state_dict(m.state_dict())  # no new parameters
    x = torch.randn(2, 3, 48, 48)
    m.eval(), ref.eval()
    torch.testing.assert_close(m(x), ref(x))  # identity in eval mode
    m.train()
    torch.manual_seed(0)
    y1 = m(x)
    torch.manual_seed(1)
    y2 = m(x)
    assert not torch.allclose(y1, y2)  # random in training


def test_drop_path_layer() -> None:
    d = DropPath(0.5).train()
    x = torch.ones(1000, 4)
    y = d(x)
    assert set(y[:, 0].tolist()) <= {0.0, 2.0}
    assert (y == y[:, :1]).all()  # per sample
    assert torch.equal(d.eval()(x), x)
    with pytest.raises(ConfigError):
        DropPath(1.0)


def test_drop_rate_and_global_pool() -> None:
    x = torch.randn(2, 3, 48, 48)
    m = sknet.create_model("resnext_tiny", drop_rate=0.5, global_pool="max").eval()
    feats = m.forward_features(x)
    torch.testing.assert_close(m.forward_head(feats, pre_logits=True), feats.amax(dim=(2, 3)))
    m.train()
    torch.manual_seed(0)
    pooled = m.forward_head(feats, pre_logits=True)
    assert (pooled == 0).any()  # dropout in training
    nopool = sknet.create_model("resnext_tiny", num_classes=0, global_pool="").eval()
    assert nopool(x).dim() == 4
    with pytest.raises(ConfigError, match="num_classes=0"):
        sknet.create_model("resnext_tiny", global_pool="")
    with pytest.raises(ConfigError, match="global_pool"):
        sknet.create_model("resnext_tiny", global_pool="mean")
    m.reset_classifier(0, global_pool="avgmax")
    assert m.eval()(x).shape == (2, feats.shape[1])
    m.reset_classifier(7)
    assert m.head.global_pool == "avgmax" and m(x).shape == (2, 7)


def test_shufflenet_accepts_drop_rate_refuses_drop_path() -> None:
    m = sknet.create_model("shufflenetv2_x0_5", drop_rate=0.1, global_pool="max")
    assert m.head.drop_rate == 0.1
    with pytest.raises(ConfigError, match="no residual branch"):
        sknet.create_model("shufflenetv2_x0_5", drop_path_rate=0.1)


@pytest.mark.parametrize("name", ["sknet_tiny", "senet_tiny", "shufflenetv2_x0_5"])
def test_grad_checkpointing_identical(name: str) -> None:
    torch.manual_seed(0)
    a = sknet.create_model(name, num_classes=5)
    b = sknet.create_model(name, num_classes=5)
    b.load_state_dict(a.state_dict())
    b.set_grad_checkpointing()
    assert b.grad_checkpointing
    size = a.default_input_size
    x = torch.randn(2, 3, size, size)
    ya, yb = a.train()(x), b.train()(x)
    torch.testing.assert_close(ya, yb, rtol=0, atol=0)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=n)


def test_grad_checkpointing_with_drop_path_same_masks() -> None:
    torch.manual_seed(0)
    a = sknet.create_model("sknet_tiny", drop_path_rate=0.5)
    b = sknet.create_model("sknet_tiny", drop_path_rate=0.5)
    b.load_state_dict(a.state_dict())
    b.set_grad_checkpointing(True)
    x = torch.randn(4, 3, 48, 48)
    torch.manual_seed(3)
    ya = a.train()(x)
    torch.manual_seed(3)
    yb = b.train()(x)
    torch.testing.assert_close(ya, yb)
    ya.sum().backward()
    yb.sum().backward()
    torch.testing.assert_close(a.stem.conv.weight.grad, b.stem.conv.weight.grad)


def test_pretrained_cfg_has_timm_keys() -> None:
    m = sknet.create_model("skresnext50_32x4d", num_classes=10)
    cfg = m.pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224)
    assert cfg["num_classes"] == 10
    assert cfg["first_conv"] == "stem.conv" and cfg["classifier"] == "head.fc"
    assert cfg["crop_pct"] == pytest.approx(0.875)
    assert dict(m.named_modules())[cfg["first_conv"]] is m.stem.conv
    assert dict(m.named_modules())[cfg["classifier"]] is m.head.fc
    with pytest.raises(AttributeError):
        m.pretrained_cfg = {}  # type: ignore[misc]


def test_pretrained_cfg_keys_match_timm() -> None:
    timm = pytest.importorskip("timm")
    theirs = timm.create_model("skresnext50_32x4d", pretrained=False).pretrained_cfg
    ours = sknet.create_model("skresnext50_32x4d").pretrained_cfg
    needed = {
        "input_size",
        "interpolation",
        "mean",
        "std",
        "crop_pct",
        "num_classes",
        "first_conv",
        "classifier",
        "architecture",
        "crop_mode",
    }
    assert needed <= set(theirs) and needed <= set(ours)
    for key in ("input_size", "mean", "std", "crop_pct", "num_classes", "crop_mode"):
        assert ours[key] == pytest.approx(theirs[key]), key


def test_pretrained_cfg_follows_data_config() -> None:
    from sknet.preprocess import DataConfig, Preprocess

    m = sknet.create_model("resnext_tiny")
    m.data_config = DataConfig(Preprocess(input_size=64, resize=80, interpolation="bicubic"))
    cfg = m.pretrained_cfg
    assert cfg["input_size"] == (3, 64, 64)
    assert cfg["crop_pct"] == pytest.approx(0.8)
    assert cfg["interpolation"] == "bicubic"


def test_timm_kwargs_with_features_only_and_bad_values() -> None:
    f = sknet.create_model("sknet_tiny", features_only=True, drop_path_rate=0.1)
    assert len(f.eval()(torch.randn(1, 3, 48, 48))) == 3
    with pytest.raises(ConfigError, match="drop_path_rate"):
        sknet.create_model("sknet_tiny", drop_path_rate=1.5)
    with pytest.raises(ConfigError, match="drop_rate"):
        sknet.create_model("sknet_tiny", drop_rate=-0.1)


def test_load_of_an_alias_records_our_name() -> None:
    model, record = sknet.load("skresnext50_32x4d", random_weights=True)
    assert record.name == model.model_name == "sknet50"
    assert record.source == "skresnext50_32x4d"


def test_a_backbone_carries_its_models_preprocessing() -> None:
    full = sknet.create_model("sknet_tiny")
    f = sknet.create_model("sknet_tiny", features_only=True)
    assert f.data_config is not None and full.data_config is not None
    assert f.data_config.preprocess == full.data_config.preprocess
    assert f.data_config.classes is None

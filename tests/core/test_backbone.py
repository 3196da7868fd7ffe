"""Backbone mode: features_only, forward_intermediates, FX tracing, output_stride (dilation),
frozen stages, norm_eval, frozen BatchNorm, empty batches and the errors for bad arguments."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops import FrozenBatchNorm2d as TVFrozenBatchNorm2d

import sknet
from sknet import BranchSpec, FrozenBatchNorm2d, SKConv
from sknet.layers.sk import _Branch


def _randomize_bn(module: nn.Module) -> None:
    gen = torch.Generator().manual_seed(3)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.rand(c, generator=gen) * 0.6 - 0.3)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(c, generator=gen) * 0.4 - 0.2)


# ----------------------------------------------------------------------------- features_only


def test_sknet50_features_only_channels_strides_and_shapes() -> None:
    torch.manual_seed(0)
    body = sknet.create_model("sknet50", features_only=True, out_indices=(1, 2, 3, 4)).eval()
    assert body.feature_info.channels() == [256, 512, 1024, 2048]
    assert body.feature_info.reduction() == [4, 8, 16, 32]
    assert body.feature_info.module_name() == ["stages.0", "stages.1", "stages.2", "stages.3"]
    with torch.no_grad():
        feats = body(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [
        (2, 256, 16, 16),
        (2, 512, 8, 8),
        (2, 1024, 4, 4),
        (2, 2048, 2, 2),
    ]
    # the stem level, when asked for, is the stem before its max-pool, at stride 2
    stem = sknet.create_model("sknet50", features_only=True, out_indices=(0,))
    assert stem.feature_info.channels() == [64] and stem.feature_info.reduction() == [2]
    assert len(stem.stages) == 0  # nothing after the last requested level is kept
    assert stem.eval()(torch.randn(1, 3, 64, 64))[0].shape == (1, 64, 32, 32)


def test_features_only_defaults_tiny_and_shufflenet_levels() -> None:
    tiny = sknet.create_model("sknet_tiny", features_only=True)  # default: one level per stage
    assert tiny.out_indices == (1, 2, 3)
    assert tiny.feature_info.channels() == [64, 128, 256]
    assert tiny.feature_info.reduction() == [2, 4, 8]
    feats = tiny.eval()(torch.randn(2, 3, 48, 48))
    assert [tuple(f.shape) for f in feats] == [(2, 64, 24, 24), (2, 128, 12, 12), (2, 256, 6, 6)]
    last2 = sknet.create_model("sknet_tiny", features_only=True, out_indices=2)  # the last two
    assert last2.out_indices == (2, 3)
    neg = sknet.create_model("sknet_tiny", features_only=True, out_indices=(-1,))
    assert neg.out_indices == (3,)

    shuffle = sknet.create_model("sk_shufflenetv2_x0_5", features_only=True)
    assert shuffle.feature_info.reduction() == [4, 8, 16, 32]
    assert shuffle.feature_info.channels() == [24, 48, 96, 192]
    outs = shuffle.eval()(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in outs] == [(24, 16, 16), (48, 8, 8), (96, 4, 4), (192, 2, 2)]
    last = sknet.create_model("shufflenetv2_x0_5", features_only=True, out_indices=(5,))
    assert last.feature_info.channels() == [1024]  # conv_last, also at stride 32


def test_features_only_state_dict_is_the_classifier_s_without_head() -> None:
    torch.manual_seed(0)
    full = sknet.create_model("sknet_tiny").eval()
    _randomize_bn(full)
    body = sknet.create_model("sknet_tiny", features_only=True).eval()
    missing, unexpected = body.load_state_dict(full.state_dict(), strict=False)
    assert not missing and unexpected == ["head.fc.weight", "head.fc.bias"]
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        _, levels = full.forward_intermediates(x, indices=(1, 2, 3))
        feats = body(x)
    for a, b in zip(levels, feats, strict=True):
        assert torch.equal(a, b)


def test_forward_intermediates_follows_timm() -> None:
    torch.manual_seed(0)
    model = sknet.create_model("sknet_tiny").eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        final, levels = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        assert [f.shape[1] for f in levels] == [24, 64, 128, 256]  # stem + 3 stages
        only = model.forward_intermediates(x, indices=2, intermediates_only=True)
        early, _ = model.forward_intermediates(x, indices=[1], stop_early=True)
    assert len(only) == 2 and torch.equal(only[0], levels[2]) and torch.equal(only[1], levels[3])
    assert torch.equal(early, levels[1])
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")


def test_deployed_models_keep_their_feature_levels() -> None:
    """sknet.deploy fuses the tiny model's conv-BN-ReLU stem into one module: the stem level
    (``stem.act``) is then that module's output."""
    torch.manual_seed(0)
    model = sknet.create_model("sknet_tiny").eval()
    _randomize_bn(model)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        want = model.forward_intermediates(x, intermediates_only=True)
        fast = sknet.deploy(model, memory_format="contiguous")
        got = fast.forward_intermediates(x, intermediates_only=True)
        got_body = sknet.deploy(sknet.FeatureNet(model, (0, 3)), memory_format="contiguous")(x)
    assert not isinstance(fast.stem, nn.Sequential)
    assert len(got) == len(want) == 4
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert torch.allclose(got_body[0], want[0], atol=1e-5, rtol=1e-4)
    assert torch.allclose(got_body[1], want[3], atol=1e-5, rtol=1e-4)


def test_feature_extractor_returns_the_same_tensors_as_features_only() -> None:
    torch.manual_seed(0)
    model = sknet.create_model("sknet26", num_classes=0).eval()
    _randomize_bn(model)
    body = sknet.create_model("sknet26", features_only=True).eval()
    body.load_state_dict(model.state_dict(), strict=True)
    nodes = {f"stages.{i}": f"c{i + 2}" for i in range(4)}
    extractor = create_feature_extractor(model, return_nodes=nodes)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got = list(extractor(x).values())
        want = body(x)
    assert len(got) == 4
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------- FX: every model


# torchvision's create_feature_extractor is slow on deep graphs (its node naming is quadratic):
# run it on one model of each kind; symbolic_trace, which it builds on, runs on every model.
_EXTRACTOR_MODELS = {
    "resnext26_32x4d",
    "senet_tiny",
    "sknet50",
    "sknet29",
    "sk_resnet_18",
    "sk_shufflenetv2_x0_5",
    "skresnet18",
}


@pytest.mark.parametrize("name", sknet.list_models())
def test_every_registry_model_traces_with_fx(name: str) -> None:
    torch.manual_seed(0)
    model = sknet.create_model(name, num_classes=3).eval()
    size = max(8, model.min_input_size)  # small: CIFAR models run at full resolution
    x = torch.randn(1, 3, size, size)
    traced = torch.fx.symbolic_trace(model)
    body = sknet.FeatureNet(model, out_indices=None)
    traced_body = torch.fx.symbolic_trace(body)
    with torch.no_grad():
        ref = model(x)
        final, levels = model.forward_intermediates(x)
        assert torch.allclose(traced(x), ref, atol=1e-5, rtol=1e-4)
        assert torch.allclose(model.forward_head(final), ref, atol=1e-6)
        got_body = traced_body(x)
    assert len(levels) == len(model.feature_info)
    for info, level in zip(model.feature_info, levels, strict=True):
        assert level.shape[1] == info["num_chs"]
        assert level.shape[-1] == -(-size // info["reduction"])
    for i, a in zip(body.out_indices, got_body, strict=True):
        assert torch.allclose(a, levels[i], atol=1e-5, rtol=1e-4)
    if name in _EXTRACTOR_MODELS:
        modules = [f["module"] for f in model.feature_info]
        extractor = create_feature_extractor(model, return_nodes=modules)  # train + eval traces
        with torch.no_grad():
            got = list(extractor(x).values())
        for a, b in zip(got, levels, strict=True):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_extractor_model_names_exist() -> None:
    assert set(sknet.list_models()) >= _EXTRACTOR_MODELS


def test_eager_input_checks_still_raise() -> None:
    model = sknet.create_model("sknet_tiny")
    body = sknet.create_model("sknet_tiny", features_only=True)
    for net in (model, body):
        with pytest.raises(ValueError, match="4-D image batch"):
            net(torch.randn(3, 48, 48))
        with pytest.raises(ValueError, match="input channels"):
            net(torch.randn(2, 1, 48, 48))
        with pytest.raises(TypeError, match="torch.Tensor"):
            net([1.0])


def test_empty_batch_gives_empty_outputs() -> None:
    model = sknet.create_model("sknet_tiny")
    x = torch.randn(0, 3, 48, 48)
    for mode in (True, False):
        assert model.train(mode)(x).shape == (0, 10)
    body = sknet.create_model("sknet_tiny", features_only=True).eval()
    assert [tuple(f.shape) for f in body(x)] == [(0, 64, 24, 24), (0, 128, 12, 12), (0, 256, 6, 6)]
    assert sknet.deploy(model)(x).shape == (0, 10)
    shuffle = sknet.create_model("sk_shufflenetv2_x0_5", num_classes=4).eval()
    assert shuffle(torch.randn(0, 3, 64, 64)).shape == (0, 4)


# ----------------------------------------------------------------------------- output stride


def _reference_sk(sk: SKConv, x: torch.Tensor) -> torch.Tensor:
    """SKConv written out with plain convolutions at the dilation the spec says:
    branch dilation = the branch's own dilation times the SKConv's ``dilation``."""
    feats = []
    for spec, branch in zip(sk.specs, sk.branches, strict=True):
        d = spec.dilation * sk.dilation
        conv = branch.conv
        u = F.conv2d(
            x, conv.weight, None, sk.stride, d * (spec.kernel_size - 1) // 2, d, conv.groups
        )
        bn = branch.bn
        u = F.relu(F.batch_norm(u, bn.running_mean, bn.running_var, bn.weight, bn.bias))
        feats.append(u)
    s = sum(f.mean((2, 3)) for f in feats)
    attn = sk.attn
    z = F.linear(s, attn.fc_reduce.weight.flatten(1))
    z = F.relu(
        F.batch_norm(z, attn.bn.running_mean, attn.bn.running_var, attn.bn.weight, attn.bn.bias)
    )
    a = F.linear(z, attn.fc_select.weight.flatten(1)).view(x.shape[0], len(feats), -1).softmax(1)
    return sum(a[:, m, :, None, None] * feats[m] for m in range(len(feats)))


@pytest.mark.parametrize(
    "stride,dilation,branches,size",
    [
        (1, 2, (3, 5), (9, 11)),
        (2, 2, (3, 5), (9, 11)),  # stride-2 dilated branches: the subsampled fast path
        (2, 1, (3, 5, 7), (10, 10)),
        (1, 4, (3, 5), (12, 12)),
        (2, 2, ("3x3", "5x5 D1", "3x3 D3"), (11, 8)),
    ],
)
def test_dilated_skconv_matches_naive_reference(
    stride: int, dilation: int, branches: tuple, size: tuple[int, int]
) -> None:
    torch.manual_seed(0)
    sk = SKConv(16, 16, branches=branches, groups=4, stride=stride, dilation=dilation)
    sk.attn.fc_reduce.weight.data.mul_(8)  # attention far from uniform
    _randomize_bn(sk)
    sk.eval()
    for spec, branch in zip(sk.specs, sk.branches, strict=True):
        assert branch.conv.dilation == (spec.dilation * dilation,) * 2
        pad = spec.dilation * dilation * (spec.kernel_size - 1) // 2
        assert branch.conv.padding == (pad, pad)
    x = torch.randn(2, 16, *size)
    with torch.no_grad():
        out = sk(x)
        ref = _reference_sk(sk, x)
        fused = sknet.deploy(sk, memory_format="contiguous")(x)
    expect = (2, 16, -(-size[0] // stride), -(-size[1] // stride))
    assert out.shape == ref.shape == expect
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)
    assert torch.allclose(fused, ref, atol=1e-4, rtol=1e-4)


def test_branch_fast_path_is_kept_only_where_exact() -> None:
    spec = BranchSpec(3, 2)
    assert _Branch(8, 8, spec, 2, 2, True, dilation=1)._shortcut == (2, 1, 1)
    assert _Branch(8, 8, spec, 2, 2, True, dilation=2)._shortcut == (2, 2, 2)
    assert _Branch(8, 8, spec, 2, 1, True, dilation=2)._shortcut is None  # stride 1: no subsample
    assert _Branch(8, 8, BranchSpec(3, 1), 2, 2, True, dilation=1)._shortcut is None


@pytest.mark.parametrize("output_stride", [8, 16])
def test_sknet50_output_stride_dilates_sk_branches(output_stride: int) -> None:
    model = sknet.create_model("sknet50", output_stride=output_stride)
    assert model.min_input_size == output_stride
    assert [f["reduction"] for f in model.feature_info] == [2, 4, 8] + (
        [8, 8] if output_stride == 8 else [16, 16]
    )
    units = model.sk_units()

    def branch_dilations(unit: str) -> list[int]:
        return [b.conv.dilation[0] for b in units[unit].branches]

    def strides(unit: str) -> int:
        return units[unit].stride

    assert branch_dilations("SK_3_1") == [1, 2] and strides("SK_3_1") == 2
    if output_stride == 16:
        assert branch_dilations("SK_4_6") == [1, 2] and strides("SK_4_1") == 2
        # the stride moved out of the first conv5 unit, which keeps the dilation of conv4
        assert branch_dilations("SK_5_1") == [1, 2] and strides("SK_5_1") == 1
        assert branch_dilations("SK_5_2") == branch_dilations("SK_5_3") == [2, 4]
    else:
        assert branch_dilations("SK_4_1") == [1, 2] and strides("SK_4_1") == 1
        assert branch_dilations("SK_4_2") == branch_dilations("SK_4_6") == [2, 4]
        assert branch_dilations("SK_5_1") == [2, 4] and strides("SK_5_1") == 1
        assert branch_dilations("SK_5_3") == [4, 8]
    for unit in units.values():
        for b in unit.branches:
            assert b.conv.padding == b.conv.dilation  # 3x3 kernels: padding keeps the size
    body = sknet.create_model("sknet50", features_only=True, output_stride=output_stride).eval()
    with torch.no_grad():
        feats = body(torch.randn(2, 3, 64, 64))
    side = 64 // output_stride
    assert [tuple(f.shape[1:]) for f in feats] == [
        (256, 16, 16),
        (512, 8, 8),
        (1024, max(side, 4), max(side, 4)),
        (2048, side, side),
    ]
    # same parameters, same names: weights load at any output stride
    assert model.state_dict().keys() == sknet.create_model("sknet50").state_dict().keys()


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("resnext26_32x4d", {}),
        ("sknet26", {"sk_aggregation": "sum"}),  # SK without the global-pool attention
        ("sk_resnet_18", {"sk_aggregation": "sum"}),  # true 5x5 kernels (kernel_mode="full")
    ],
)
@pytest.mark.parametrize("output_stride", [8, 16])
def test_dilated_network_equals_strided_one_on_the_subsampled_grid(
    name: str, overrides: dict, output_stride: int
) -> None:
    """Without global pooling inside the network, output stride s computes the stride-32
    features at every (32/s)-th position exactly: the dilation convention is right."""
    torch.manual_seed(0)
    ref = sknet.create_model(name, num_classes=0, **overrides).eval()
    _randomize_bn(ref)
    dense = sknet.create_model(name, num_classes=0, output_stride=output_stride, **overrides)
    dense.load_state_dict(ref.state_dict())
    dense.eval()
    x = torch.randn(1, 3, 64, 64)
    step = 32 // output_stride
    with torch.no_grad():
        want = ref.forward_features(x)
        got = dense.forward_features(x)
    assert got.shape[-1] == 64 // output_stride
    err = (got[..., ::step, ::step] - want).abs().max()
    assert err <= 1e-5 * want.abs().max()  # float rounding only (the Lucid model runs to ~400)


# ----------------------------------------------------------------------------- freezing


def test_frozen_stages_keep_weights_and_statistics() -> None:
    torch.manual_seed(0)
    model = sknet.create_model("sknet_tiny", frozen_stages=1).train()
    frozen = [model.stem, model.stages[0]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in model.stages[1].parameters())
    assert all(not m.training for part in frozen for m in part.modules())
    assert model.stages[1].training and model.head.training
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(4, 3, 48, 48)).logsumexp(1).sum().backward()
    opt.step()
    after = model.state_dict()
    for k, v in before.items():
        if k.startswith(("stem.", "stages.0.")):
            assert torch.equal(v, after[k]), k
    assert not torch.equal(
        before["stages.1.0.conv1.bn.running_mean"], after["stages.1.0.conv1.bn.running_mean"]
    )
    model.set_frozen_stages(-1)
    assert all(p.requires_grad for p in model.parameters())
    assert model.train().stem.training
    body = sknet.create_model("sknet_tiny", features_only=True, frozen_stages=2).train()
    assert body.frozen_stages == 2 and not body.stages[1].training and body.stages[2].training


def test_norm_eval_keeps_bn_in_eval_and_trains_at_batch_one() -> None:
    torch.manual_seed(0)
    model = sknet.create_model("sknet_tiny", norm_eval=True).train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert model.training and model.stages[0][0].conv2.training
    stats = [m.running_mean.clone() for m in bns]
    out = model(torch.randn(1, 3, 48, 48))  # batch 1 trains: every BN uses its statistics
    out.sum().backward()
    assert all(torch.equal(s, m.running_mean) for s, m in zip(stats, bns, strict=True))
    grad = model.stages[0][0].conv2.attn.fc_select.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_batch_one_error_names_the_ways_out() -> None:
    model = sknet.create_model("sknet_tiny").train()
    with pytest.raises(ValueError, match="batch of at least 2") as info:
        model(torch.randn(1, 3, 48, 48))
    msg = str(info.value)
    for hint in ("attn_norm=False", "attn.bn.eval()", "freeze_batchnorm", "norm_eval", "per GPU"):
        assert hint in msg
    for unit in model.sk_units().values():  # the hint works: only those BNs in eval mode
        unit.attn.bn.eval()
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, 10)


def test_freeze_batchnorm_converts_every_bn_and_trains_at_batch_one() -> None:
    torch.manual_seed(0)
    model = sknet.create_model("sknet_tiny")
    _randomize_bn(model)
    model.eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        want = model(x)
    reference_state = model.state_dict()
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sknet.freeze_batchnorm(model) is model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in model.modules()) == n_bn
    assert isinstance(model.stages[0][0].conv2.attn.bn, FrozenBatchNorm2d)
    model.train()
    with torch.no_grad():
        assert torch.allclose(model(x), want, atol=1e-5, rtol=1e-4)  # eval maths in train()
    model.load_state_dict(reference_state)  # a BN checkpoint loads (num_batches_tracked dropped)
    out = model(torch.randn(1, 3, 48, 48))
    out.sum().backward()
    grad = model.stages[0][0].conv2.attn.fc_select.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    with torch.no_grad():
        assert torch.allclose(sknet.deploy(model)(x), want, atol=1e-4, rtol=1e-4)


def test_frozen_batchnorm_matches_torchvision_and_bn_eval() -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(6, eps=1e-3)
    _randomize_bn(bn)
    bn.eval()
    mine = FrozenBatchNorm2d.from_batchnorm(bn)
    tv = TVFrozenBatchNorm2d(6, eps=1e-3)
    tv.load_state_dict(bn.state_dict())
    x = torch.randn(3, 6, 4, 5)
    assert torch.allclose(mine(x), bn(x), atol=1e-6)
    assert torch.allclose(mine(x), tv(x), atol=1e-6)
    assert not list(mine.parameters())
    assert isinstance(sknet.freeze_batchnorm(bn), FrozenBatchNorm2d)
    with pytest.raises(ValueError, match="track_running_stats"):
        sknet.freeze_batchnorm(nn.Sequential(nn.BatchNorm2d(3, track_running_stats=False)))


# ----------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"features_only": True, "out_indices": (1, 2, 3, 4, 5)}, ValueError, "out of range"),
        ({"features_only": True, "out_indices": (-6,)}, ValueError, "out of range"),
        ({"features_only": True, "out_indices": 6}, ValueError, "last n levels"),
        ({"features_only": True, "out_indices": (2, 2)}, ValueError, "twice"),
        ({"features_only": True, "out_indices": ()}, ValueError, "empty"),
        ({"features_only": True, "out_indices": ("1",)}, TypeError, "ints"),
        ({"out_indices": (1, 2)}, ValueError, "features_only"),
        ({"output_stride": 4}, ValueError, "output_stride must be 8, 16 or 32"),
        ({"output_stride": 12}, ValueError, "output_stride must be 8, 16 or 32"),
        ({"frozen_stages": 5}, ValueError, r"frozen_stages must be an int in -1\.\.4"),
        ({"frozen_stages": -2}, ValueError, "frozen_stages"),
    ],
)
def test_bad_backbone_arguments_raise_clear_errors(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        sknet.create_model("sknet50", **kwargs)


def test_output_stride_on_shufflenet_is_rejected() -> None:
    with pytest.raises(ValueError, match="supports only output_stride=32"):
        sknet.create_model("sk_shufflenetv2_x0_5", output_stride=16)
    assert sknet.create_model("shufflenetv2_x0_5", output_stride=32).min_input_size == 32
    with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32"):
        sknet.models.ResNeXtConfig(output_stride=64).validate()
    with pytest.raises(ValueError, match="dilation must be an int >= 1"):
        SKConv(8, 8, groups=2, dilation=0)

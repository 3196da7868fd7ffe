"""sknet.deploy: folded, fused inference models that compute what the originals compute."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sknet
from sknet.deploy import deploy, is_deployed
from sknet.layers.fused import (
    FusedBottleneck,
    FusedConv2d,
    FusedSKConv,
    fold_bn,
    set_fast_kernels,
)

# CI runs these natively and with the ISA capped to AVX2: deployed models pick oneDNN kernels (and
# bf16 support) by ISA.
pytestmark = pytest.mark.machine_sensitive

MODELS = [
    ("sknet_tiny", 48),
    ("resnext_tiny", 48),
    ("senet_tiny", 48),
    ("sk_resnet_18", 64),  # Lucid: plain-conv branches, shared attention, BN after the SK conv
    ("sk_shufflenetv2_x0_5", 64),  # depthwise SK branches
]


def _pair(name: str, randomize_bn):
    torch.manual_seed(0)
    model = randomize_bn(sknet.create_model(name, num_classes=10)).eval()
    return model


@pytest.mark.parametrize(("name", "size"), MODELS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_deploy_matches_eval_model(name, size, layout, randomize_bn) -> None:
    model = _pair(name, randomize_bn)
    fast = deploy(model, memory_format=layout)
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        ref_f, ref = model.forward_features(x), model(x)
        got_f, got = fast.forward_features(x), fast(x)
        previous = set_fast_kernels(False)  # the portable conv2d + relu path
        try:
            port = fast(x)
        finally:
            set_fast_kernels(previous)
    scale = max(1.0, float(ref_f.abs().max()))
    assert (got_f - ref_f).abs().max() <= 1e-4 * scale
    assert (got - ref).abs().max() <= 1e-4
    assert (port - ref).abs().max() <= 1e-4
    if layout == "channels_last":
        assert got_f.is_contiguous(memory_format=torch.channels_last)


def test_deploy_structure_and_flags(randomize_bn) -> None:
    model = _pair("sknet_tiny", randomize_bn).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = deploy(model)
    assert model.training, "the original keeps its mode"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert is_deployed(fast) and not is_deployed(model)
    assert not fast.training
    assert not any(p.requires_grad for p in fast.parameters())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert sum(isinstance(m, FusedBottleneck) for m in fast.modules()) == 3
    assert sum(isinstance(m, FusedSKConv) for m in fast.modules()) == 3
    # the stride-2 dilated branches run as plain convolutions on subsampled inputs
    subsampled = [m for m in fast.modules() if isinstance(m, FusedConv2d) and m.subsample > 1]
    assert len(subsampled) == 2


def test_attention_capture_on_deployed_model(randomize_bn) -> None:
    model = _pair("sknet_tiny", randomize_bn)
    fast = deploy(model)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad(), sknet.capture_attention(model) as a, sknet.capture_attention(fast) as b:
        model(x)
        fast(x)
        assert set(a) == set(b) == set(sknet.sk_units(model))
        for k in a:
            assert (a[k] - b[k]).abs().max() <= 1e-5


def test_bf16_deploy_and_autocast(randomize_bn) -> None:
    model = _pair("sknet_tiny", randomize_bn)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        ref = model(x)
        fast = deploy(model)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y1 = fast(x)
        y2 = deploy(model, dtype=torch.bfloat16)(x.bfloat16())
    for y in (y1, y2):
        assert y.dtype == torch.bfloat16
        assert (y.float() - ref).abs().max() <= 0.05 * max(1.0, float(ref.abs().max()))


def test_deployed_model_compiles_fullgraph(randomize_bn) -> None:
    fast = deploy(_pair("sknet_tiny", randomize_bn))
    compiled = torch.compile(fast, fullgraph=True, backend="eager")
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert (compiled(x) - fast(x)).abs().max() <= 1e-5


def test_input_gradients_through_deployed_model(randomize_bn) -> None:
    model = _pair("sknet_tiny", randomize_bn)
    fast = deploy(model)
    x1 = torch.randn(2, 3, 48, 48, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    model(x1)[:, 0].sum().backward()
    fast(x2)[:, 0].sum().backward()
    assert (x1.grad - x2.grad).abs().max() <= 1e-4 * max(1.0, float(x1.grad.abs().max()))


def test_fold_bn_exact_in_float64() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=True).double()
    bn = nn.BatchNorm2d(6).double().eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    w, b = fold_bn(conv.weight, conv.bias, bn)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        ref = bn(conv(x))
    assert torch.allclose(nn.functional.conv2d(x, w, b, padding=1), ref, atol=1e-12)


def test_deploy_errors() -> None:
    with pytest.raises(TypeError, match="nn.Module"):
        deploy("sknet50")  # type: ignore[arg-type]
    model = sknet.create_model("sknet_tiny")
    with pytest.raises(ValueError, match="memory_format"):
        deploy(model, memory_format="nhwc")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dtype"):
        deploy(model, dtype=torch.int8)
    bn = nn.BatchNorm2d(4, track_running_stats=False)
    with pytest.raises(ValueError, match="running statistics"):
        fold_bn(torch.randn(4, 4, 1, 1), None, bn)
    with pytest.raises(TypeError, match="zero-padded"):
        FusedConv2d.from_conv_bn(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))

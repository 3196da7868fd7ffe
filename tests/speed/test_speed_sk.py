"""The fast eager SKConv paths compute what the plain formulas compute."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import sknet
from sknet.layers.sk import SKConv, strided_dilation_shortcut

# CI runs these natively and with the ISA capped to AVX2: the SK fast path and compiled code run
# ISA-specific kernels.
pytestmark = pytest.mark.machine_sensitive


CONFIGS = [
    {},
    {"branches": (3, 5, 7)},
    {"branches": (3,)},
    {"attention": "shared"},
    {"aggregation": "sum"},
    {"split_input": True},
    {"branch_norm": False},
    {"kernel_mode": "full"},
    {"stride": 2},
    {"stride": 2, "branches": (3, 5, 9)},
    {"attn_norm": False},
]


def _sk(**kw) -> SKConv:
    torch.manual_seed(0)
    return SKConv(32, 32, groups=8, reduction=4, min_attn_dim=8, **kw)


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_fast_path_matches_reference_eval_and_train(kw, reference_sk, randomize_bn) -> None:
    sk = randomize_bn(_sk(**kw)).eval()
    x = torch.randn(4, 32, 13, 13)  # odd size: the stride-2 shortcut must keep the output size
    with torch.no_grad():
        ref = reference_sk(sk, x)
        got = sk(x)
    assert got.shape == ref.shape
    assert (got - ref).abs().max() <= 1e-5
    with torch.inference_mode():
        assert (sk(x) - ref).abs().max() <= 1e-5
    # training: outputs and gradients (input and every parameter), in float64: train-mode BN
    # over 4 samples amplifies fp32 summation-order noise in some gradients to ~1e-4 relative,
    # which would hide a real difference of that size
    sk.train().double()
    x = x.double()
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    y1 = sk(x1)
    g = torch.randn_like(y1)
    grads1 = torch.autograd.grad(y1, [x1, *sk.parameters()], g)
    y2 = reference_sk(sk, x2)
    grads2 = torch.autograd.grad(y2, [x2, *sk.parameters()], g)
    assert (y1 - y2).abs().max() <= 1e-10
    for a, b in zip(grads1, grads2):
        assert (a - b).abs().max() <= 1e-10 * max(1.0, float(b.abs().max()))


def test_channels_last_and_autograd_leaves_branch_outputs_intact(reference_sk) -> None:
    sk = _sk().eval()
    x = torch.randn(2, 32, 10, 10).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = reference_sk(sk, x)
        assert (sk(x) - ref).abs().max() <= 1e-5
    # with autograd on, Select must not write into tensors autograd saved
    xg = x.clone().requires_grad_()
    sk(xg).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


@pytest.mark.parametrize(
    ("stride", "dilation", "kernel", "size"),
    [(2, 2, 3, 14), (2, 2, 3, 7), (2, 4, 3, 9), (3, 3, 3, 10), (2, 2, 5, 11)],
)
def test_strided_dilation_shortcut_is_exact(stride, dilation, kernel, size) -> None:
    torch.manual_seed(0)
    pad = dilation * (kernel - 1) // 2
    sc = strided_dilation_shortcut(stride, dilation, pad)
    assert sc is not None
    s, d, p = sc
    x = torch.randn(2, 8, size, size)
    w = torch.randn(8, 2, kernel, kernel)
    ref = F.conv2d(x, w, None, stride, pad, dilation, 4)
    got = F.conv2d(x[:, :, ::s, ::s], w, None, 1, p, d, 4)
    assert got.shape == ref.shape
    assert torch.equal(got, ref)


def test_hooks_on_a_shortcut_branch_conv_still_fire() -> None:
    sk = _sk(stride=2).eval()
    seen = []
    sk.branches[1].conv.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        y = sk(torch.randn(2, 32, 12, 12))
    assert seen == [y.shape]


@pytest.mark.parametrize(
    ("stride", "dilation", "pad"), [(1, 2, 2), (2, 1, 1), (2, 3, 3), ((2, 1), 2, 2), (2, 2, 1)]
)
def test_strided_dilation_shortcut_declines(stride, dilation, pad) -> None:
    assert strided_dilation_shortcut(stride, dilation, pad) is None


def test_attention_capture_unchanged() -> None:
    model = sknet.create_model("sknet_tiny").eval()
    x = torch.randn(3, 3, 48, 48)
    with sknet.capture_attention(model) as att, torch.no_grad():
        model(x)
        assert len(att) == 3
        for a in att.values():
            assert a.shape[:2] == (3, 2)
            assert torch.allclose(a.sum(1), torch.ones(()), atol=1e-5)


def test_bf16_autocast_keeps_branch_dtype() -> None:
    sk = _sk().eval()
    x = torch.randn(2, 32, 10, 10)
    with torch.no_grad():
        ref = sk(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = sk(x)
    assert y.dtype == torch.bfloat16
    assert (y.float() - ref).abs().max() <= 0.1 * ref.abs().max()


def test_half_precision_pooling_does_not_overflow() -> None:
    # GAP is taken as a sum divided once: in fp16 the sum must accumulate in fp32 (like mean)
    sk = _sk().eval()
    x = torch.rand(1, 32, 96, 96) * 30
    with torch.no_grad():
        ref = sk(x)
        y = sk.half()(x.half())
    assert torch.isfinite(y).all()
    assert (y.float() - ref).abs().max() <= 0.01 * ref.abs().max()


def test_compiles_without_graph_breaks() -> None:
    sk = _sk(stride=2)
    sk.record_attention = True
    compiled = torch.compile(sk, fullgraph=True, backend="eager")
    x = torch.randn(2, 32, 12, 12)
    sk.eval()
    with torch.no_grad():
        assert (compiled(x) - sk(x)).abs().max() <= 1e-6
    assert sk.last_attention is not None and sk.last_attention.shape == (2, 2, 32)
    sk.train()
    compiled(x.requires_grad_()).sum().backward()


def test_inductor_compile_matches_eager() -> None:
    sk = _sk().eval()
    compiled = torch.compile(sk, fullgraph=True)
    x = torch.randn(2, 32, 12, 12)
    with torch.no_grad():
        assert (compiled(x) - sk(x)).abs().max() <= 1e-5

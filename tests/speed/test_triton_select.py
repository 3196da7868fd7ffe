"""The Triton Fuse/Select epilogue (off by default) against the plain formulas, on the CPU
through Triton's interpreter (``TRITON_INTERPRET=1``)."""

from __future__ import annotations

import pytest
import torch

from sknet.layers import sk as sk_module
from sknet.layers import triton_select as ts
from sknet.layers.sk import SKConv

# CI runs these natively and with the ISA capped to AVX2: the select kernel's CPU fallback and
# bf16 rounding depend on the ISA.
pytestmark = pytest.mark.machine_sensitive


LAYOUTS = {"nchw": torch.contiguous_format, "cl": torch.channels_last}


@pytest.fixture
def interpret(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("triton", reason="the kernels need Triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def _branches(layout: str, dtype: torch.dtype, shape=(2, 40, 5, 7)):
    gen = torch.Generator().manual_seed(0)
    u0, u1 = (torch.randn(shape, generator=gen) for _ in range(2))
    fmt = LAYOUTS[layout]
    return [u.to(dtype=dtype, memory_format=fmt).requires_grad_() for u in (u0, u1)]


@pytest.mark.parametrize("layout", ["nchw", "cl"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("width", [40, 1], ids=["channel", "shared"])
def test_kernels_match_the_formulas(interpret, layout, dtype, width) -> None:
    u0, u1 = _branches(layout, dtype)
    a0 = torch.rand(2, width, generator=torch.Generator().manual_seed(1)).to(dtype)
    a0.requires_grad_()
    assert ts._usable(u0, u1), "the interpreter path must really run here"
    s = ts.fused_pool(u0, u1)
    out = ts.fused_select(u0, u1, a0)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    grads = torch.autograd.grad(out, (u0, u1, a0), g)
    # the plain formulas in float64: s = GAP(U0 + U1), V = a0 U0 + (1 - a0) U1
    x0, x1, w, gd = (t.detach().double() for t in (u0, u1, a0, g))
    wb = w[:, :, None, None]
    ref_s = (x0 + x1).mean(dim=(2, 3))
    ref_out = wb * x0 + (1 - wb) * x1
    ref_grads = (gd * wb, gd * (1 - wb), (gd * (x0 - x1)).sum(dim=(2, 3)).sum(1, keepdim=True))
    if width != 1:
        ref_grads = (*ref_grads[:2], (gd * (x0 - x1)).sum(dim=(2, 3)))
    tol = 1e-5 if dtype == torch.float32 else 2e-2  # bf16: the output's rounding (8 bits)
    assert s.dtype == torch.float32 and (s.double() - ref_s).abs().max() <= 1e-5
    assert out.dtype == dtype and out.is_contiguous(memory_format=LAYOUTS[layout])
    scale = float(ref_out.abs().max())
    assert (out.double() - ref_out).abs().max() <= tol * scale
    for got, ref in zip(grads, ref_grads):
        assert got.shape == ref.shape and got.dtype == dtype
        assert (got.double() - ref).abs().max() <= tol * max(1.0, float(ref.abs().max()))
    # the pooled sum's gradient is the broadcast 1/HW
    d0, d1 = torch.autograd.grad(s.sum(), (u0, u1))
    assert torch.allclose(d0.double(), torch.full_like(x0, 1 / 35), atol=1e-3)
    assert torch.equal(d0, d1)


def test_inference_select_writes_into_the_second_branch(interpret) -> None:
    u0, u1 = (u.detach() for u in _branches("cl", torch.float32))
    a0 = torch.rand(2, 40)
    ref = torch.lerp(u1, u0, a0[:, :, None, None])
    with torch.inference_mode():
        out = ts.fused_select(u0, u1, a0, inplace=True)
    assert out.data_ptr() == u1.data_ptr()
    assert (out - ref).abs().max() <= 1e-6


@pytest.mark.parametrize("kw", [{}, {"attention": "shared"}, {"stride": 2}], ids=str)
def test_skconv_with_the_switch_matches_the_reference(
    interpret, kw, reference_sk, randomize_bn, monkeypatch
) -> None:
    calls = []
    pool = ts.fused_pool
    monkeypatch.setattr(ts, "fused_pool", lambda *a: calls.append(1) or pool(*a))
    torch.manual_seed(0)
    sk = randomize_bn(SKConv(32, 32, groups=8, reduction=4, min_attn_dim=8, **kw))
    x = torch.randn(2, 32, 9, 9).contiguous(memory_format=torch.channels_last)
    sk.eval()
    with torch.no_grad():
        ref = reference_sk(sk, x)
        sk.record_attention = True
        with ts.fused_epilogue():
            got = sk(x)
        assert sk.last_attention is not None and sk.last_attention.shape == (2, 2, 32)
    assert (got - ref).abs().max() <= 1e-5
    # training: outputs, input and parameter gradients
    sk.train()
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1 = reference_sk(sk, x1)
    g1 = torch.autograd.grad(y1.square().sum(), [x1, *sk.parameters()])
    with ts.fused_epilogue():
        y2 = sk(x2)
        g2 = torch.autograd.grad(y2.square().sum(), [x2, *sk.parameters()])
    assert (y1 - y2).abs().max() <= 1e-5
    for a, b in zip(g1, g2):
        assert (a - b).abs().max() <= 1e-4 * max(1.0, float(a.abs().max()))
    assert len(calls) == 2, "the switch routes both forward passes through the kernels"


def test_switch_is_off_by_default_and_falls_back_without_the_interpreter(monkeypatch) -> None:
    assert not ts.fused_epilogue_enabled() and sk_module._EPILOGUE_HOOK is None
    with pytest.raises(TypeError, match="bool"):
        ts.set_fused_epilogue(1)  # type: ignore[arg-type]
    u0, u1 = (u.detach() for u in _branches("nchw", torch.float32))
    with pytest.raises(ValueError, match="a0 must be"):
        ts.fused_select(u0, u1, torch.rand(2, 3))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not ts._usable(u0, u1)  # CPU tensors, no interpreter: the torch code runs
    a0 = torch.rand(2, 40)
    assert torch.equal(ts.fused_select(u0, u1, a0), torch.lerp(u1, u0, a0[:, :, None, None]))
    if not ts.triton_available():
        with pytest.raises(RuntimeError, match="Triton"):
            ts.set_fused_epilogue(True)
        return
    torch.manual_seed(0)
    sk = SKConv(32, 32, groups=8, reduction=4, min_attn_dim=8).eval()
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        ref = sk(x)
        with ts.fused_epilogue():
            assert ts.fused_epilogue_enabled() and sk_module._EPILOGUE_HOOK is not None
            got = sk(x)
    assert not ts.fused_epilogue_enabled() and sk_module._EPILOGUE_HOOK is None
    assert torch.equal(got, ref)


def test_compiled_skconv_with_the_switch_uses_the_torch_code(interpret) -> None:
    torch.manual_seed(0)
    sk = SKConv(32, 32, groups=8, reduction=4, min_attn_dim=8).eval()
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        ref = sk(x)
        with ts.fused_epilogue():
            compiled = torch.compile(sk, fullgraph=True, backend="eager")
            got = compiled(x)
    assert (got - ref).abs().max() <= 1e-6

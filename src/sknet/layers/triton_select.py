"""Fuse/Select epilogue of a two-branch SK unit as Triton kernels, behind a switch (off).

What it replaces. For M = 2 branch outputs ``U0, U1`` of shape (N, C, H, W), SKConv's epilogue
(see :mod:`sknet.layers.sk`) is

    s = GAP(U0 + U1)                   Fuse: one (N, C) vector
    a = attention(s)                   (N, 2, C'): two small matrix products, BN, softmax
    V = U1 + a0 (U0 - U1)              Select (a1 = 1 - a0), i.e. lerp(U1, U0, a0)

With the switch on (:func:`set_fused_epilogue`), the two full-size passes run as Triton kernels:

* **pool**: ``s`` from one kernel that reads ``U0`` and ``U1`` once each and sums them in fp32
  (torch: two reductions and an add; its backward, a broadcast, stays autograd's);
* **select**: the forward in one pass (as torch's ``lerp``), and the backward in one pass that
  reads ``dV, U0, U1`` once and writes ``dU0 = dV a0``, ``dU1 = dV - dU0`` and the reduction
  ``da0 = sum_hw dV (U0 - U1)`` (torch's ``lerp`` backward: separate kernels for each product,
  a full-size temporary and a reduction). No atomics: every program owns a block of channels of
  one sample and loops over the pixels, so results are deterministic.

The attention itself (tiny) runs as before, through the module's own ``attn``. Layouts: NCHW and
channels_last (any layout in which H and W flatten to one strided axis); dtypes fp32, fp16,
bf16, with fp32 arithmetic inside. Applies to SK units with M = 2 and attention (every SKNet in
the registry), on CUDA tensors, or on CPU tensors when ``TRITON_INTERPRET=1`` (Triton's
interpreter: for tests, slow). Everywhere else (no Triton, other M, ``aggregation="sum"``, CPU
without the interpreter, and under ``torch.compile``/FX/JIT/ONNX tracing, where inductor fuses
the epilogue itself) the unit runs its ordinary torch code: that is the fallback.

The switch stays off by default: on the GPU it has not been measured yet
(``benchmarks/gpu_check.sh`` times SKNet-50 with and without it). No deviation from the paper:
the kernels compute the same formulas (to float rounding; fp32 accumulation).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from sknet.errors import DeviceError, InputError, OverrideError
from sknet.layers import sk as _sk

__all__ = [
    "fused_epilogue",
    "fused_epilogue_enabled",
    "fused_pool",
    "fused_select",
    "kernels_run_on",
    "set_fused_epilogue",
    "triton_available",
]

_ENABLED = False
_BLOCK_C = 32
_BLOCK_HW = 64

try:  # optional: Triton ships with CUDA builds of torch
    import triton
    import triton.language as tl

    # The kernels use Triton's builtins only (tl.full, not tl.zeros; tl.reduce with tl.sum's
    # own combine function, not tl.sum): the jitted helpers of triton.language cannot be called
    # by Triton's interpreter when Triton was imported before TRITON_INTERPRET was set, while
    # the interpreter recognises this combine function (a NumPy sum).
    _sum_combine = tl.standard._sum_combine
    _TRITON = True
except ImportError:  # pragma: no cover - depends on the installation
    triton = None
    tl = None
    _sum_combine = None
    _TRITON = False


def triton_available() -> bool:
    """True if Triton can be imported (the kernels still need CUDA or ``TRITON_INTERPRET=1``)."""
    return _TRITON


def fused_epilogue_enabled() -> bool:
    return _ENABLED


def kernels_run_on(device: torch.device | str) -> bool:
    """True if the kernels (not the torch fallback) run for tensors on ``device``: CUDA with
    Triton, or the CPU under ``TRITON_INTERPRET=1``."""
    return _usable(torch.empty(1, 1, 1, 1, device=device))


def set_fused_epilogue(enabled: bool) -> bool:
    """Switch the Triton Fuse/Select epilogue on or off for every SK unit; returns the previous
    setting. Raises ``RuntimeError`` when switching on without Triton installed."""
    global _ENABLED
    if not isinstance(enabled, bool):
        raise OverrideError(f"enabled must be a bool, got {type(enabled).__name__}")
    if enabled and not _TRITON:
        raise DeviceError("the fused SK epilogue needs Triton (pip install triton)")
    previous = _ENABLED
    _ENABLED = enabled
    _sk._EPILOGUE_HOOK = _epilogue if enabled else None
    return previous


@contextlib.contextmanager
def fused_epilogue(enabled: bool = True) -> Iterator[None]:
    """Context manager form of :func:`set_fused_epilogue` (restores the previous setting)."""
    previous = set_fused_epilogue(enabled)
    try:
        yield
    finally:
        set_fused_epilogue(previous)


# ----------------------------------------------------------------------------- kernels


# A Triton kernel: only its tl.constexpr parameters are annotated (triton.jit reads the
# annotations; pointer and size arguments stay bare as Triton expects).
def _pool_kernel(  # type: ignore[no-untyped-def]
    u0, u1, s, hw, c, s_n, s_c, s_hw, inv_hw, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr
):
    """s[n, c] = (sum_hw u0 + u1) * inv_hw, fp32; one program per (n, block of channels)."""
    n = tl.program_id(0)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cs < c
    base = n * s_n + cs * s_c
    acc = tl.full((BLOCK_HW, BLOCK_C), 0.0, tl.float32)
    for start in range(0, hw, BLOCK_HW):
        p = start + tl.arange(0, BLOCK_HW)
        mask = (p < hw)[:, None] & cmask[None, :]
        off = base[None, :] + p[:, None] * s_hw
        x0 = tl.load(u0 + off, mask=mask, other=0.0).to(tl.float32)
        x1 = tl.load(u1 + off, mask=mask, other=0.0).to(tl.float32)
        acc += x0 + x1
    tot = tl.reduce(acc, 0, _sum_combine) * inv_hw
    tl.store(s + n * c + cs, tot, mask=cmask)


# A Triton kernel: only its tl.constexpr parameters are annotated (triton.jit reads the
# annotations; pointer and size arguments stay bare as Triton expects).
def _select_fwd_kernel(  # type: ignore[no-untyped-def]
    u0, u1, a, out, hw, c, s_n, s_c, s_hw, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr
):
    """out = u1 + a (u0 - u1), a[n, c] broadcast over the pixels."""
    n = tl.program_id(0)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cs < c
    w = tl.load(a + n * c + cs, mask=cmask, other=0.0).to(tl.float32)
    base = n * s_n + cs * s_c
    for start in range(0, hw, BLOCK_HW):
        p = start + tl.arange(0, BLOCK_HW)
        mask = (p < hw)[:, None] & cmask[None, :]
        off = base[None, :] + p[:, None] * s_hw
        x0 = tl.load(u0 + off, mask=mask, other=0.0).to(tl.float32)
        x1 = tl.load(u1 + off, mask=mask, other=0.0).to(tl.float32)
        y = x1 + w[None, :] * (x0 - x1)
        tl.store(out + off, y.to(out.dtype.element_ty), mask=mask)


# A Triton kernel: only its tl.constexpr parameters are annotated (triton.jit reads the
# annotations; pointer and size arguments stay bare as Triton expects).
def _select_bwd_kernel(  # type: ignore[no-untyped-def]
    g,
    u0,
    u1,
    a,
    d0,
    d1,
    da,
    hw,
    c,
    s_n,
    s_c,
    s_hw,
    BLOCK_HW: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """d0 = g a, d1 = g - d0, da[n, c] = sum_hw g (u0 - u1) (fp32), in one pass."""
    n = tl.program_id(0)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cs < c
    w = tl.load(a + n * c + cs, mask=cmask, other=0.0).to(tl.float32)
    base = n * s_n + cs * s_c
    acc = tl.full((BLOCK_HW, BLOCK_C), 0.0, tl.float32)
    for start in range(0, hw, BLOCK_HW):
        p = start + tl.arange(0, BLOCK_HW)
        mask = (p < hw)[:, None] & cmask[None, :]
        off = base[None, :] + p[:, None] * s_hw
        gv = tl.load(g + off, mask=mask, other=0.0).to(tl.float32)
        x0 = tl.load(u0 + off, mask=mask, other=0.0).to(tl.float32)
        x1 = tl.load(u1 + off, mask=mask, other=0.0).to(tl.float32)
        g0 = gv * w[None, :]
        tl.store(d0 + off, g0.to(d0.dtype.element_ty), mask=mask)
        tl.store(d1 + off, (gv - g0).to(d1.dtype.element_ty), mask=mask)
        acc += gv * (x0 - x1)
    tl.store(da + n * c + cs, tl.reduce(acc, 0, _sum_combine), mask=cmask)


_COMPILED: dict[bool, tuple[Any, Any, Any]] = {}


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def _kernels() -> tuple[Any, Any, Any]:
    """The jitted kernels; built on first use, so that ``TRITON_INTERPRET`` set after import
    (by a test) still selects Triton's interpreter."""
    key = _interpreting()
    if key not in _COMPILED:
        # No specialisation on the sizes and strides (divisibility by 16, == 1): one compile
        # per kernel and dtype instead of one per layer shape of the network.
        sizes = ["hw", "c", "s_n", "s_c", "s_hw"]
        _COMPILED[key] = (
            triton.jit(_pool_kernel, do_not_specialize=sizes),
            triton.jit(_select_fwd_kernel, do_not_specialize=sizes),
            triton.jit(_select_bwd_kernel, do_not_specialize=sizes),
        )
    return _COMPILED[key]


def _strides(x: torch.Tensor) -> tuple[int, int, int] | None:
    """``(stride_n, stride_c, stride_hw)`` when H and W flatten into one strided axis."""
    _, _, h, w = x.shape
    sn, sc, sh, sw = x.stride()
    if h > 1 and sh != w * sw:
        return None
    return sn, sc, sw


def _like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``x`` with ``ref``'s strides (a copy only when they differ)."""
    if x.stride() == ref.stride():
        return x
    fmt = (
        torch.channels_last
        if ref.is_contiguous(memory_format=torch.channels_last) and not ref.is_contiguous()
        else torch.contiguous_format
    )
    out = x.contiguous(memory_format=fmt)
    if out.stride() != ref.stride():
        out = torch.empty_like(ref).copy_(x)
    return out


def _usable(*ts: torch.Tensor) -> bool:
    """Whether the kernels can run on these tensors here."""
    if not _TRITON:
        return False
    t = ts[0]
    if t.dim() != 4 or t.numel() == 0 or t.dtype not in _DTYPES:
        return False
    if any(u.shape != t.shape or u.dtype != t.dtype or u.device != t.device for u in ts[1:]):
        return False
    if t.device.type == "cpu":
        return _interpreting()
    return t.device.type == "cuda"


_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _grid(n: int, c: int) -> tuple[int, int]:
    return (n, triton.cdiv(c, _BLOCK_C))


class _Pool(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, u0: torch.Tensor, u1: torch.Tensor) -> torch.Tensor:
        n, c, h, w = u0.shape
        u1 = _like(u1, u0)
        st = _strides(u0)
        if st is None:
            u0 = u0.contiguous()
            u1 = u1.contiguous()
            st = _strides(u0)
            assert st is not None
        s = torch.empty(n, c, device=u0.device, dtype=torch.float32)
        pool, _, _ = _kernels()
        pool[_grid(n, c)](
            u0, u1, s, h * w, c, *st, 1.0 / (h * w), BLOCK_HW=_BLOCK_HW, BLOCK_C=_BLOCK_C
        )
        ctx.shape = (n, c, h, w)
        return s

    @staticmethod
    def backward(ctx: Any, ds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = ctx.shape
        g = (ds * (1.0 / (h * w)))[:, :, None, None].expand(n, c, h, w)
        return g, g


def _select_launch(
    u0: torch.Tensor, u1: torch.Tensor, a0: torch.Tensor, inplace: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the select kernel: ``(out, u0, u1, a)`` with the tensors as the kernel read them."""
    n, c, h, w = u0.shape
    u1 = _like(u1, u0)
    st = _strides(u0)
    if st is None:
        u0, u1 = u0.contiguous(), u1.contiguous()
        st = _strides(u0)
        assert st is not None
    a = a0.expand(n, c).contiguous()  # (N, C') with C' in {C, 1}
    out = u1 if inplace else torch.empty_like(u0)
    _, fwd, _ = _kernels()
    fwd[_grid(n, c)](u0, u1, a, out, h * w, c, *st, BLOCK_HW=_BLOCK_HW, BLOCK_C=_BLOCK_C)
    return out, u0, u1, a


class _Select(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, u0: torch.Tensor, u1: torch.Tensor, a0: torch.Tensor) -> torch.Tensor:
        out, u0, u1, a = _select_launch(u0, u1, a0, inplace=False)
        ctx.save_for_backward(u0, u1, a)
        ctx.a_width = a0.shape[1]
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        u0, u1, a = ctx.saved_tensors
        n, c, h, w = u0.shape
        g = _like(g, u0)
        st = _strides(u0)
        assert st is not None
        d0, d1 = torch.empty_like(u0), torch.empty_like(u0)
        da = torch.empty(n, c, device=u0.device, dtype=torch.float32)
        _, _, bwd = _kernels()
        bwd[_grid(n, c)](
            g, u0, u1, a, d0, d1, da, h * w, c, *st, BLOCK_HW=_BLOCK_HW, BLOCK_C=_BLOCK_C
        )
        if ctx.a_width == 1:  # shared attention: one weight for all channels
            da = da.sum(dim=1, keepdim=True)
        return d0, d1, da.to(a.dtype)


def fused_pool(u0: torch.Tensor, u1: torch.Tensor) -> torch.Tensor:
    """``GAP(u0 + u1)`` as an (N, C) fp32 tensor; Triton where usable, else torch (fallback)."""
    if _usable(u0, u1):
        return _Pool.apply(u0, u1)
    s = u0.sum(dim=(2, 3), dtype=torch.float32) + u1.sum(dim=(2, 3), dtype=torch.float32)
    return s * (1.0 / (u0.shape[2] * u0.shape[3]))


def fused_select(
    u0: torch.Tensor, u1: torch.Tensor, a0: torch.Tensor, *, inplace: bool = False
) -> torch.Tensor:
    """``u1 + a0 (u0 - u1)`` with ``a0`` of shape (N, C) or (N, 1) broadcast over the pixels;
    Triton where usable, else ``torch.lerp`` (fallback). ``inplace`` writes into ``u1`` (only
    where autograd does not need it)."""
    if a0.dim() != 2 or a0.shape[0] != u0.shape[0] or a0.shape[1] not in (1, u0.shape[1]):
        raise InputError(
            f"a0 must be (N, C) or (N, 1) for branch outputs {tuple(u0.shape)}, "
            f"got {tuple(a0.shape)}"
        )
    if _usable(u0, u1):
        a0 = a0.to(u0.dtype)
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (u0, u1, a0))
        if grad:
            return _Select.apply(u0, u1, a0)
        return _select_launch(u0, u1, a0, inplace)[0]
    w = a0.to(u0.dtype)[:, :, None, None]
    return u1.lerp_(u0, w) if inplace else torch.lerp(u1, u0, w)


def _tracing() -> bool:
    return bool(
        torch.compiler.is_compiling()
        or torch.jit.is_scripting()
        or torch.jit.is_tracing()
        or _sk_is_fx_tracing()
        or _onnx_exporting()
    )


def _sk_is_fx_tracing() -> bool:
    check = getattr(_sk, "is_fx_tracing", None)
    return bool(check()) if check is not None else False


def _onnx_exporting() -> bool:
    try:
        return bool(torch.onnx.is_in_onnx_export())
    except Exception:  # pragma: no cover - very old or stripped-down torch builds
        return False


def _epilogue(module: nn.Module, feats: list[torch.Tensor]) -> torch.Tensor | None:
    """The hook SKConv calls first in its Fuse/Select step; None: run the torch code."""
    attn = getattr(module, "attn", None)
    if attn is None or len(feats) != 2 or _tracing() or not _usable(feats[0], feats[1]):
        return None
    u0, u1 = feats
    dtype = u0.dtype
    inplace = not (torch.is_grad_enabled() and (u0.requires_grad or u1.requires_grad))
    s = fused_pool(u0, u1).to(dtype)[:, :, None, None]
    a = attn(s)  # (N, 2, C') soft-maxed over the branches
    if getattr(module, "record_attention", False):
        module.last_attention = a.detach().expand(-1, -1, module.out_channels)
    return fused_select(u0, u1, a[:, 0].to(dtype), inplace=inplace)

"""Inference-only fused modules: convolutions with BatchNorm folded in, fused activations.

These modules are produced by :func:`sknet.deploy` from trained (or freshly built) models; they
are not meant to be trained. Each computes what the module it replaces computes in eval mode
(to float rounding: folding BN changes the order of the float operations, typically 1e-6
relative).

Kernel paths. On CPU with oneDNN (``torch.backends.mkldnn``), a :class:`FusedConv2d` runs as
one ``mkldnn._convolution_pointwise`` call: convolution + bias (the folded BN) + ReLU, and for
the last convolution of a bottleneck also the residual addition + ReLU, in one pass over the
output. That is the op ``torch.compile``'s inductor emits for the same pattern on CPU; calling it
directly gives the fusion in eager mode without a compile. Everywhere else (CUDA, other dtypes,
inputs that require grad, under ``torch.compile``/``torch.export``/ONNX export, where the
standard ops let the compiler or exporter see plain convolutions) the same maths runs as
``conv2d(+bias)`` then ``relu``. Parameters are frozen (``requires_grad=False``); gradients with
respect to the input (saliency maps) still work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sknet.errors import ConfigError, InputTypeError
from sknet.layers.norm import FrozenBatchNorm2d
from sknet.layers.sk import SKAttention, SKConv, _Branch, strided_dilation_shortcut

__all__ = [
    "FusedBottleneck",
    "FusedConv2d",
    "FusedSKAttention",
    "FusedSKConv",
    "fold_bn",
    "set_fast_kernels",
]

_FAST_KERNELS = True
_FOLDABLE_NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)  # eval-mode BN maths, foldable
_MKLDNN = torch.backends.mkldnn.is_available()
try:  # oneDNN's bf16 convolutions need AVX-512 (BW/VL/DQ) or AVX-NE-CONVERT
    _MKLDNN_BF16 = _MKLDNN and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
except (AttributeError, RuntimeError):  # pragma: no cover - torch without the query
    _MKLDNN_BF16 = False


def _onednn_dtype_ok(x: torch.Tensor) -> bool:
    """Whether oneDNN can run this input's (or autocast's) dtype on this CPU; bf16 falls back
    to the portable path on CPUs without the instructions oneDNN needs for it."""
    dt = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
    return dt == torch.float32 or (dt == torch.bfloat16 and _MKLDNN_BF16)


def set_fast_kernels(enabled: bool) -> bool:
    """Switch the oneDNN fused-kernel path on or off (returns the previous setting).

    Off, fused modules run the portable ``conv2d`` + ``relu`` path everywhere; used by the
    equivalence tests and to measure what the oneDNN fusion itself buys.
    """
    global _FAST_KERNELS
    previous = _FAST_KERNELS
    _FAST_KERNELS = bool(enabled)
    return previous


def _onnx_exporting() -> bool:
    try:
        return bool(torch.onnx.is_in_onnx_export())
    except Exception:  # pragma: no cover - very old or stripped-down torch builds
        return False


def _portable() -> bool:
    """True where only standard ops may run (compiler/exporter tracing, fast path switched off)."""
    return (
        not _FAST_KERNELS
        or torch.compiler.is_compiling()
        or torch.jit.is_scripting()
        or torch.jit.is_tracing()
        or _onnx_exporting()
    )


def fold_bn(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d | FrozenBatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm into the preceding convolution: ``(weight', bias')``.

    ``BN(conv(x, W) + b) = conv(x, W * k) + (b - mean) * k + beta`` with
    ``k = gamma / sqrt(var + eps)``, computed in float64 and cast back.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ConfigError(
            "cannot fold a BatchNorm without running statistics (track_running_stats=False)"
        )
    dtype = weight.dtype
    w = weight.detach().double()
    mean = bn.running_mean.detach().double()
    var = bn.running_var.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    b = bias.detach().double() if bias is not None else torch.zeros_like(mean)
    k = gamma / torch.sqrt(var + bn.eps)
    w = w * k.reshape(-1, *([1] * (w.dim() - 1)))
    b = (b - mean) * k + beta
    return w.to(dtype), b.to(dtype)


class FusedConv2d(nn.Module):
    """``act(conv(x) + bias)``, optionally ``relu(conv(x) + bias + residual)``, inference only.

    Built by :meth:`from_conv_bn` from a ``Conv2d`` (+ ``BatchNorm2d``) (+ ``ReLU``).
    ``memory_format`` (optional) converts the input first: set on the first layer of a deployed
    network it puts every following activation in that layout.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        *,
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
        groups: int,
        relu: bool,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.bias = (
            nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None
        )
        self.stride = tuple(stride)
        self.padding = tuple(padding)
        self.dilation = tuple(dilation)
        self.groups = groups
        self.relu = relu
        self.subsample = 1
        shortcut = strided_dilation_shortcut(self.stride, self.dilation, self.padding)
        if shortcut is not None:  # run as a stride-1 convolution on x[..., ::s, ::s]
            s, d, p = shortcut
            self.subsample = s
            self.stride, self.dilation, self.padding = (1, 1), (d, d), (p, p)
        self.memory_format: torch.memory_format | None = None
        self._cast: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor | None]] = {}

    @classmethod
    def from_conv_bn(
        cls, conv: nn.Conv2d, bn: nn.Module | None = None, *, relu: bool = False
    ) -> FusedConv2d:
        if not isinstance(conv, nn.Conv2d) or conv.padding_mode != "zeros":
            raise InputTypeError(f"cannot fuse {conv!r}: a zero-padded nn.Conv2d is required")
        if isinstance(conv.padding, str):
            raise InputTypeError(f"cannot fuse {conv!r}: string padding is not supported")
        b: torch.Tensor | None
        if isinstance(bn, _FOLDABLE_NORMS):
            w, b = fold_bn(conv.weight, conv.bias, bn)
        elif bn is None or isinstance(bn, nn.Identity):
            w, b = conv.weight, conv.bias
        else:
            raise InputTypeError(f"cannot fold {type(bn).__name__} into a convolution")
        return cls(
            w,
            b,
            stride=(conv.stride[0], conv.stride[1]),
            padding=(conv.padding[0], conv.padding[1]),
            dilation=(conv.dilation[0], conv.dilation[1]),
            groups=conv.groups,
            relu=relu,
        )

    def extra_repr(self) -> str:
        o, i, kh, kw = self.weight.shape
        s = f"{i * self.groups}, {o}, kernel_size=({kh}, {kw}), stride={self.stride}"
        if self.subsample > 1:
            s += f", subsample={self.subsample}"
        if any(p for p in self.padding):
            s += f", padding={self.padding}"
        if any(d != 1 for d in self.dilation):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + f", bias={self.bias is not None}, relu={self.relu}"

    def _params(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        if dtype == self.weight.dtype:
            return self.weight, self.bias
        cached = self._cast.get(dtype)
        if cached is None or cached[0].device != self.weight.device:
            b = self.bias.to(dtype) if self.bias is not None else None
            cached = (self.weight.to(dtype), b)
            self._cast[dtype] = cached
        return cached

    def _apply(self, fn, recurse=True):  # moving/casting the module drops the cast copies
        self._cast = {}
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)
        if self.subsample > 1:
            x = x[:, :, :: self.subsample, :: self.subsample]
        dev = x.device.type
        if (
            not _portable()
            and dev == "cpu"
            and _MKLDNN
            and x.dtype in (torch.float32, torch.bfloat16)
            and (_MKLDNN_BF16 or _onednn_dtype_ok(x))  # only CPUs without bf16 kernels check
            and not (x.requires_grad and torch.is_grad_enabled())  # oneDNN op: no autograd
        ):
            if torch.is_autocast_enabled("cpu"):
                dt = torch.get_autocast_dtype("cpu")
                x = x.to(dt)
                if residual is not None:
                    residual = residual.to(dt)
            w, b = self._params(x.dtype)
            if residual is not None:
                if residual.dtype != x.dtype:
                    residual = residual.to(x.dtype)
                return torch.ops.mkldnn._convolution_pointwise.binary(
                    x,
                    residual,
                    w,
                    b,
                    self.padding,
                    self.stride,
                    self.dilation,
                    self.groups,
                    "add",
                    None,
                    "relu",
                    [],
                    "",
                )
            return torch.ops.mkldnn._convolution_pointwise(
                x,
                w,
                b,
                self.padding,
                self.stride,
                self.dilation,
                self.groups,
                "relu" if self.relu else "none",
                [],
                "",
            )
        if x.dtype == self.weight.dtype or torch.is_autocast_enabled(dev):
            w, b = self.weight, self.bias
        else:
            w, b = self._params(x.dtype)
        y = F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)
        if residual is not None:
            return torch.relu(y + residual)
        return torch.relu(y) if self.relu else y


class FusedSKAttention(nn.Module):
    """:class:`~sknet.layers.sk.SKAttention` with its BN folded: two small matrix products."""

    def __init__(
        self,
        w_reduce: torch.Tensor,
        b_reduce: torch.Tensor | None,
        w_select: torch.Tensor,
        m: int,
        attention: str = "channel",
    ) -> None:
        super().__init__()
        self.attention = attention  # "channel" or "shared", as in SKAttention
        self.w_reduce = nn.Parameter(w_reduce.detach().clone(), requires_grad=False)
        self.b_reduce = (
            nn.Parameter(b_reduce.detach().clone(), requires_grad=False)
            if b_reduce is not None
            else None
        )
        self.w_select = nn.Parameter(w_select.detach().clone(), requires_grad=False)
        self.num_branches = m

    @classmethod
    def from_attention(cls, attn: SKAttention) -> FusedSKAttention:
        w = attn.fc_reduce.weight
        if isinstance(attn.bn, _FOLDABLE_NORMS):
            w, b = fold_bn(w, None, attn.bn)
        elif isinstance(attn.bn, nn.Identity):
            b = None
        else:
            raise InputTypeError(f"cannot fold {type(attn.bn).__name__} in an SK attention path")
        return cls(
            w.flatten(1), b, attn.fc_select.weight.flatten(1), attn.num_branches, attn.attention
        )

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        # s: (N, C, 1, 1) -> (N, M, C') soft-maxed over M
        z = torch.relu(F.linear(s.flatten(1), self.w_reduce, self.b_reduce))
        width = self.w_select.shape[0] // self.num_branches  # explicit: empty batches work
        logits = F.linear(z, self.w_select).view(s.shape[0], self.num_branches, width)
        return logits.softmax(dim=1)


class FusedSKConv(SKConv):
    """An :class:`~sknet.layers.sk.SKConv` with every BN folded, for inference.

    Branch m is one fused ``conv + bias + ReLU`` (no separate BN and ReLU passes), the attention
    is two small matrix products, and Select is the same single ``lerp`` pass as the eager path.
    Attention capture (``record_attention``, ``last_attention``, :func:`sknet.capture_attention`)
    works as on the module it was built from.
    """

    @classmethod
    def from_skconv(cls, sk: SKConv) -> FusedSKConv:
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        for attr in (
            "in_channels",
            "out_channels",
            "stride",
            "split_input",
            "aggregation",
            "specs",
            "attn_dim",
            "record_attention",
            "unit_name",
        ):
            setattr(new, attr, getattr(sk, attr))
        new.dilation = getattr(sk, "dilation", 1)
        new.last_attention = None
        branches = []
        for b in sk.branches:
            if not isinstance(b, _Branch):
                raise InputTypeError(f"cannot fuse SKConv branch of type {type(b).__name__}")
            branches.append(FusedConv2d.from_conv_bn(b.conv, b.bn, relu=isinstance(b.act, nn.ReLU)))
        new.branches = nn.ModuleList(branches)
        fused_attn = FusedSKAttention.from_attention(sk.attn) if sk.attn is not None else None
        # The folded attention stands in for SKAttention: the same call, (N, C, 1, 1) ->
        # (N, M, C'), which is all SKConv's forward uses of it.
        new.attn = fused_attn  # type: ignore[assignment]
        return new  # forward: SKConv's (Split through the fused branches, then _fuse_select)


class FusedBottleneck(nn.Module):
    """A ResNeXt/SENet/SKNet bottleneck with folded BNs and the residual add + ReLU fused into
    the last convolution (when there is no SE gate between them)."""

    def __init__(
        self,
        conv1: nn.Module,
        conv2: nn.Module,
        conv3: FusedConv2d,
        se: nn.Module,
        downsample: nn.Module,
    ) -> None:
        super().__init__()
        self.conv1 = conv1
        self.conv2 = conv2
        self.conv3 = conv3
        self.se = se
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x)
        out = self.conv2(self.conv1(x))
        if isinstance(self.se, nn.Identity):
            return self.conv3(out, residual=shortcut)
        return torch.relu(self.se(self.conv3(out)) + shortcut)

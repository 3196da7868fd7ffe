"""Selective Kernel convolution (Split - Fuse - Select).

Paper: Li, Wang, Hu, Yang, "Selective Kernel Networks", CVPR 2019 (arXiv:1903.06586), Sec. 3.1.

Split
    M branches on the same input X. Branch m is a (grouped) convolution, then BN, then ReLU.
    Effective kernel sizes 3, 5, 7, ... are realised by default as 3x3 convolutions with
    dilation 1, 2, 3 (as the paper and its official release do); ``kernel_mode="full"`` uses true
    k x k kernels instead. Every branch carries the stride.
Fuse
    U = sum_m U_m;  s = GAP(U) (C values);  z = ReLU(BN(W s)), W is d x C without bias,
    d = max(C / r, L) (defaults r = 16, L = 32), or an explicit ``attn_dim``.
Select
    One 1x1 convolution d -> M*C without bias, reshaped to (N, M, C) and soft-maxed over M;
    V_c = sum_m a_{m,c} U_{m,c}.

Options beyond the paper, each a typed keyword:

* ``attention="shared"``: one weight per branch for all channels (the Lucid library's variant);
  the select convolution then maps d -> M.
* ``aggregation="sum"``: no attention, V = U (the "without SK" rows of the paper's Table 7).
  The attention parameters are not created.
* ``split_input=True``: timm's variant, where branch m sees only the m-th slice of the input
  channels.
* ``branch_norm=False``: plain convolutions in the branches (no BN, no ReLU), as Lucid does.

Deviations from the paper: none in the default configuration. Training with a per-device batch
of one is rejected with a clear error, because the BN inside the attention path sees a single
value per channel there (every public implementation fails in the same place, from inside torch).

The attention of the last forward pass is kept in ``last_attention`` when ``record_attention`` is
set (see :func:`sknet.capture_attention`); recording stores a detached reference to a tensor the
forward pass computes anyway, so it costs no extra computation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from sknet.errors import ConfigError, InputError, OverrideError
from sknet.layers._tracing import is_fx_tracing

__all__ = [
    "BranchSpec",
    "SKAttention",
    "SKConv",
    "resolve_branches",
    "strided_dilation_shortcut",
]

_SPEC_RE = re.compile(r"(\d+)\s*x\s*(\d+)(?:\s*[Dd]\s*(\d+))?(?:\s*[Gg]\s*(\d+))?")

AttentionKind = Literal["channel", "shared"]
AggregationKind = Literal["attention", "sum"]
KernelMode = Literal["dilated", "full"]

# Optional replacement of the Fuse/Select step, ``hook(sk_conv, feats) -> output or None`` (None:
# not applicable, run the torch code). Set only by sknet.layers.triton_select's switch (off).
_EPILOGUE_HOOK: Callable[[nn.Module, list[torch.Tensor]], torch.Tensor | None] | None = None


@dataclass(frozen=True)
class BranchSpec:
    """One Split branch: a ``kernel_size`` x ``kernel_size`` convolution with ``dilation``.

    ``groups=None`` takes the SKConv's default groups. The effective kernel size (receptive
    field of the branch) is ``dilation * (kernel_size - 1) + 1``.
    """

    kernel_size: int = 3
    dilation: int = 1
    groups: int | None = None

    @property
    def effective_size(self) -> int:
        return self.dilation * (self.kernel_size - 1) + 1

    def describe(self) -> str:
        g = "" if self.groups is None else f" G{self.groups}"
        return f"{self.kernel_size}x{self.kernel_size} D{self.dilation}{g}"

    @classmethod
    def parse(cls, text: str) -> BranchSpec:
        """Parse the paper's notation, e.g. ``"3x3 D2 G32"``, ``"5x5 G64"``, ``"3x3"``."""
        m = _SPEC_RE.fullmatch(text.strip())
        if m is None:
            raise ConfigError(
                f"cannot parse branch {text!r}: expected e.g. '3x3', '3x3 D2' or '5x5 D1 G64'"
            )
        k1, k2, d, g = m.groups()
        if k1 != k2:
            raise ConfigError(f"branch {text!r}: only square kernels are supported")
        return cls(int(k1), int(d) if d else 1, int(g) if g else None)


def resolve_branches(
    branches: Sequence[int | str | BranchSpec], kernel_mode: KernelMode = "dilated"
) -> tuple[BranchSpec, ...]:
    """Turn effective kernel sizes (3, 5, 7, ...), specs and their text into ``BranchSpec``s.

    Text uses the paper's notation (``"3x3 D2 G32"``, see :meth:`BranchSpec.parse`).

    With ``kernel_mode="dilated"`` an effective size k > 1 becomes a 3x3 kernel with dilation
    (k - 1) / 2; with ``"full"`` it becomes a true k x k kernel. Size 1 is a 1x1 convolution.
    """
    if kernel_mode not in ("dilated", "full"):
        raise ConfigError(f"kernel_mode must be 'dilated' or 'full', got {kernel_mode!r}")
    if len(branches) < 1:
        raise ConfigError("SKConv needs at least one branch (M >= 1), got none")
    specs = []
    for b in branches:
        if isinstance(b, BranchSpec):
            spec = b
        elif isinstance(b, str):
            spec = BranchSpec.parse(b)
        elif isinstance(b, int) and not isinstance(b, bool):
            if b < 1 or b % 2 == 0:
                raise ConfigError(f"kernel sizes must be odd and positive, got {b}")
            if b == 1:
                spec = BranchSpec(1, 1)
            elif kernel_mode == "dilated":
                spec = BranchSpec(3, (b - 1) // 2)
            else:
                spec = BranchSpec(b, 1)
        else:
            raise OverrideError(
                f"a branch is an odd int kernel size, a BranchSpec or its text, got {b!r}"
            )
        if spec.kernel_size < 1 or spec.kernel_size % 2 == 0:
            raise ConfigError(f"kernel sizes must be odd and positive, got {spec.kernel_size}")
        if spec.dilation < 1:
            raise ConfigError(f"dilation must be >= 1, got {spec.dilation}")
        specs.append(spec)
    return tuple(specs)


class SKAttention(nn.Module):
    """Fuse and Select weights: ``s (N, C, 1, 1) -> a (N, M, C')`` soft-maxed over M.

    ``C' = C`` for channel-wise attention (paper) and ``1`` for shared attention (Lucid).

    Args:
        channels: C, the width of the branch outputs.
        num_branches: M.
        attn_dim: d, the width of the compact feature z.
        attention: ``"channel"`` or ``"shared"``.
        use_norm: BN + ReLU after the reduction (paper: True).
    """

    def __init__(
        self,
        channels: int,
        num_branches: int,
        attn_dim: int,
        *,
        attention: AttentionKind = "channel",
        use_norm: bool = True,
    ) -> None:
        super().__init__()
        if attention not in ("channel", "shared"):
            raise ConfigError(f"attention must be 'channel' or 'shared', got {attention!r}")
        if attn_dim < 1:
            raise ConfigError(f"attention width d must be >= 1, got {attn_dim}")
        self.channels = channels
        self.num_branches = num_branches
        self.attention = attention
        out = num_branches * channels if attention == "channel" else num_branches
        self.fc_reduce = nn.Conv2d(channels, attn_dim, 1, bias=False)
        self.bn = nn.BatchNorm2d(attn_dim) if use_norm else nn.Identity()
        self.act = nn.ReLU(inplace=True)
        self.fc_select = nn.Conv2d(attn_dim, out, 1, bias=False)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        # s: (N, C, 1, 1) -> logits (N, M*C', 1, 1) -> (N, M, C')
        bn = self.bn
        if (
            isinstance(bn, nn.modules.batchnorm._BatchNorm)
            and bn.training
            and not is_fx_tracing()
            and s.shape[0] == 1
        ):
            raise InputError(
                "SKConv in training mode needs a per-device batch of at least 2: the BatchNorm "
                "in its attention path normalises one value per channel per sample, which is "
                "undefined for a batch of 1. Use a larger batch or model.eval(); build with "
                "attn_norm=False; or keep that BN in eval mode (module.attn.bn.eval(), "
                "create_model(..., norm_eval=True)) or frozen (sknet.freeze_batchnorm(model)). "
                "Detectors and segmenters train at 1-2 images per GPU: use "
                "sknet.freeze_batchnorm or norm_eval=True there."
            )
        z = self.act(self.bn(self.fc_reduce(s)))
        width = self.channels if self.attention == "channel" else 1
        # explicit sizes (no -1): an empty batch gives an empty (0, M, C') result
        logits = self.fc_select(z).view(s.shape[0], self.num_branches, width)
        return logits.softmax(dim=1)


class SKConv(nn.Module):
    """Selective Kernel convolution ``(N, C_in, H, W) -> (N, C_out, H/stride, W/stride)``.

    Args:
        in_channels: C_in.
        out_channels: C (default: ``in_channels``).
        branches: effective kernel sizes (odd ints) or ``BranchSpec``s; M = len(branches).
            Default ``(3, 5)`` as in SK[2, G, r].
        kernel_mode: how int sizes are realised, ``"dilated"`` (paper) or ``"full"``.
        groups: G, default groups for every branch (a ``BranchSpec`` may override it).
        stride: stride of every branch.
        dilation: a multiplier on every branch's own dilation, padding keeping sizes (dense
            prediction at output stride 8/16: with ``dilation=2`` the 3x3 D1 / D2 branches
            become D2 / D4). Not in the paper, which only classifies.
        reduction: r in d = max(C / r, L).
        min_attn_dim: L in d = max(C / r, L).
        attn_dim: explicit d, overrides r and L (the official SKNet-101 uses d = 16 in
            conv3_x, where r and L would give 32).
        attention: ``"channel"`` (paper) or ``"shared"`` (Lucid).
        aggregation: ``"attention"`` (paper) or ``"sum"`` (no selection, Table 7).
        split_input: timm's split input: branch m convolves the m-th of M input slices.
        branch_norm: BN + ReLU after each branch convolution (paper: True; Lucid: False).
        attn_norm: BN + ReLU in the attention path (paper: True; a BN-free variant allows
            training at batch 1).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        *,
        branches: Sequence[int | str | BranchSpec] = (3, 5),
        kernel_mode: KernelMode = "dilated",
        groups: int = 32,
        stride: int = 1,
        dilation: int = 1,
        reduction: int = 16,
        min_attn_dim: int = 32,
        attn_dim: int | None = None,
        attention: AttentionKind = "channel",
        aggregation: AggregationKind = "attention",
        split_input: bool = False,
        branch_norm: bool = True,
        attn_norm: bool = True,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        specs = resolve_branches(branches, kernel_mode)
        m = len(specs)
        if in_channels < 1 or out_channels < 1:
            raise ConfigError(
                f"channels must be positive, got in={in_channels}, out={out_channels}"
            )
        if stride < 1:
            raise ConfigError(f"stride must be >= 1, got {stride}")
        if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
            raise ConfigError(f"dilation must be an int >= 1, got {dilation!r}")
        if reduction < 1:
            raise ConfigError(f"reduction r must be >= 1, got {reduction}")
        if aggregation not in ("attention", "sum"):
            raise ConfigError(f"aggregation must be 'attention' or 'sum', got {aggregation!r}")
        if attention not in ("channel", "shared"):
            raise ConfigError(f"attention must be 'channel' or 'shared', got {attention!r}")
        branch_in = in_channels
        if split_input:
            if in_channels % m:
                raise ConfigError(
                    f"split_input needs in_channels ({in_channels}) divisible by the number "
                    f"of branches ({m})"
                )
            branch_in = in_channels // m
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.dilation = dilation
        self.split_input = split_input
        self.aggregation = aggregation
        self.specs = specs
        self.branches = nn.ModuleList()
        for spec in specs:
            g = groups if spec.groups is None else spec.groups
            if g < 1 or branch_in % g or out_channels % g:
                raise ConfigError(
                    f"branch {spec.describe()} with groups={g}: input channels ({branch_in}) and "
                    f"output channels ({out_channels}) must both be divisible by groups"
                )
            self.branches.append(
                _Branch(branch_in, out_channels, spec, g, stride, branch_norm, dilation)
            )
        if aggregation == "attention":
            d = attn_dim if attn_dim is not None else max(out_channels // reduction, min_attn_dim)
            self.attn_dim = d
            self.attn: SKAttention | None = SKAttention(
                out_channels, m, d, attention=attention, use_norm=attn_norm
            )
        else:
            self.attn_dim = 0
            self.attn = None
        self.record_attention = False
        self.last_attention: torch.Tensor | None = None
        self.unit_name = ""  # set by the model assembler, e.g. "SK_3_2"

    @property
    def num_branches(self) -> int:
        return len(self.branches)

    def extra_repr(self) -> str:
        kinds = ", ".join(s.describe() for s in self.specs)
        dil = getattr(self, "dilation", 1)
        extra = f", dilation x{dil}" if dil != 1 else ""
        return f"branches=[{kinds}]{extra}, d={self.attn_dim}, aggregation={self.aggregation}"

    def _check_input(self, x: torch.Tensor) -> None:
        if is_fx_tracing():  # a Proxy has no concrete shape; eager calls keep the checks
            return
        if x.dim() != 4:
            raise InputError(f"SKConv expects a 4-D input (N, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise InputError(f"SKConv expects {self.in_channels} input channels, got {x.shape[1]}")

    def branch_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The Split step: the M branch outputs U_m, each (N, C, H', W')."""
        if self.split_input:
            xs = torch.chunk(x, self.num_branches, dim=1)
            return [b(xs[i]) for i, b in enumerate(self.branches)]  # indexed: FX-traceable
        return [b(x) for b in self.branches]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        feats = self.branch_outputs(x)  # M x (N, C, H', W')
        return self._fuse_select(feats)

    def _fuse_select(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Fuse and Select on the branch outputs (shared by the eager and the deployed paths).

        Computes exactly the formulas of the module docstring, arranged to touch the large
        (N, C, H, W) tensors as few times as possible: ``GAP(sum_m U_m)`` is taken as
        ``sum_m GAP(U_m)`` (no full-size sum is formed), and for M = 2 the selection
        ``a_0 U_0 + a_1 U_1`` with ``a_1 = 1 - a_0`` is one ``lerp`` pass. Where autograd does not
        need the branch outputs (inference, ``no_grad``) the result is written into the last
        branch output instead of a new tensor.
        """
        tracing = is_fx_tracing()  # FX Proxies go through the torch code below, not the hook
        if (
            _EPILOGUE_HOOK is not None
            and not tracing
            and (out := _EPILOGUE_HOOK(self, feats)) is not None
        ):
            return out
        inplace = not tracing and not (
            torch.is_grad_enabled() and any(f.requires_grad for f in feats)
        )
        if self.attn is None:
            u = feats[0]
            for f in feats[1:]:
                u = u.add_(f) if inplace else u + f
            return u
        # GAP(U) = sum_m GAP(U_m): (N, C, 1, 1). Sums, divided once on the small result: the
        # backward of a sum is a broadcast view where a mean's would write a full-size tensor.
        # fp16 sums are kept in fp32 until divided (a sum can exceed fp16's range where the
        # mean does not); bf16 has fp32's range, and its sum, like its mean, accumulates in fp32.
        dtype = feats[0].dtype
        if tracing:  # FX: the dtype is symbolic; a mean accumulates fp16 in fp32 anyway
            s = feats[0].mean(dim=(2, 3), keepdim=True)
            for f in feats[1:]:
                s = s + f.mean(dim=(2, 3), keepdim=True)
        else:
            acc = torch.float32 if dtype == torch.float16 else None
            s = feats[0].sum(dim=(2, 3), keepdim=True, dtype=acc)
            for f in feats[1:]:
                s = s + f.sum(dim=(2, 3), keepdim=True, dtype=acc)
            s = (s * (1.0 / (feats[0].shape[2] * feats[0].shape[3]))).to(dtype)
        a = self.attn(s)  # (N, M, C') with C' in {C, 1}, soft-maxed over M
        if self.record_attention and not tracing:
            self.last_attention = a.detach().expand(-1, -1, self.out_channels)
        # Under autocast the attention comes out in fp32: select in the branches' dtype.
        a = a.to(dtype).unsqueeze(-1).unsqueeze(-1)  # (N, M, C', 1, 1)
        if len(feats) == 2:
            # a0 + a1 = 1, so V = U_1 + a0 (U_0 - U_1) = lerp(U_1, U_0, a0): one pass.
            if inplace:
                return feats[1].lerp_(feats[0], a[:, 0])
            return torch.lerp(feats[1], feats[0], a[:, 0])
        out = feats[0].mul_(a[:, 0]) if inplace else feats[0] * a[:, 0]
        for i in range(1, len(feats)):
            out = (
                out.addcmul_(feats[i], a[:, i])
                if inplace
                else torch.addcmul(out, feats[i], a[:, i])
            )
        return out


def strided_dilation_shortcut(
    stride: int | Sequence[int], dilation: int | Sequence[int], padding: int | Sequence[int]
) -> tuple[int, int, int] | None:
    """``(s, dilation / s, padding / s)`` where a strided dilated convolution can run on
    ``x[..., ::s, ::s]`` with stride 1 instead, or None.

    With ``dilation`` and ``padding`` both multiples of ``stride = s``, every tap of a
    ``stride s, dilation d, padding p`` convolution reads input rows (and columns)
    ``s*y - p + d*k``, all multiples of s: the same sums as a stride-1 convolution with
    dilation ``d/s`` and padding ``p/s`` over the subsampled input, with the same output size,
    bit for bit. (SKNet's stride-2 "5x5" branch, 3x3 with dilation 2, becomes a plain 3x3 on
    the even pixels.) oneDNN runs the plain form about twice as fast in training (forward and
    backward, channels_last); the multiply-adds are the same.
    """

    def pair(v: int | Sequence[int]) -> tuple[int, int]:
        return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))

    (sh, sw), (dh, dw), (ph, pw) = pair(stride), pair(dilation), pair(padding)
    if sh != sw or dh != dw or ph != pw or sh < 2 or dh % sh or ph % sh:
        return None
    return sh, dh // sh, ph // sh


class _Branch(nn.Module):
    """conv -> BN -> ReLU (or a plain conv when ``norm`` is False).

    A strided dilated convolution runs in its equivalent stride-1 form on the subsampled input
    (see :func:`strided_dilation_shortcut`); ``conv`` keeps its declared stride and dilation,
    and is called as declared whenever hooks are registered on it.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        spec: BranchSpec,
        groups: int,
        stride: int,
        norm: bool,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        dil = spec.dilation * dilation  # the branch's own dilation times the stage's
        pad = dil * (spec.kernel_size - 1) // 2
        self.conv = nn.Conv2d(
            cin,
            cout,
            spec.kernel_size,
            stride=stride,
            padding=pad,
            dilation=dil,
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(cout) if norm else nn.Identity()
        self.act = nn.ReLU(inplace=True) if norm else nn.Identity()
        self._shortcut = strided_dilation_shortcut(stride, dil, pad)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        shortcut = self._shortcut
        if shortcut is None or c._forward_hooks or c._forward_pre_hooks:
            return c(x)  # hooks on the convolution (pruning, feature taps) see its real call
        s, d, p = shortcut
        return F.conv2d(x[:, :, ::s, ::s], c.weight, c.bias, 1, p, d, c.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self._conv(x)))

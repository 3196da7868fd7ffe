"""ResNeXt-family assembler: ResNeXt, SENet (SE-ResNeXt) and SKNet, ImageNet and CIFAR.

Papers: Li et al., "Selective Kernel Networks", CVPR 2019 (Tables 1-3, 5); Xie et al.,
"Aggregated Residual Transformations" (ResNeXt), CVPR 2017; Hu et al., "Squeeze-and-Excitation
Networks", CVPR 2018.

One assembler, :class:`ResNeXt`, builds every variant; they differ only in the block
(``"plain"``, ``"se"``, ``"sk"``, ``"lucid_sk"``) and the numbers of a frozen
:class:`ResNeXtConfig`.

Unit (paper Table 1): 1x1 conv + BN + ReLU -> 3x3 stage -> 1x1 conv + BN (-> SE) -> add ->
ReLU, with a 1x1 conv + BN projection shortcut where the shape changes. The stride sits in the
3x3 stage (for SK: on every branch), as in the official release.

Deviations from the paper:

* SKNet-101 follows the official release, which uses d = 16 (not max(C/r, 32) = 32) in
  ``conv3_x`` (its B_fc1 layers have 16 outputs); the paper's text gives no exception.
  Override with ``sk_attn_dims=None``.
* SKNet-29 (CIFAR): the paper does not give its SK setting. We use 32 groups of 16 channels in
  each branch (the 16x32d backbone's 3x3 conv has 16 groups of 32), r = 16, L = 32: 28.35M
  parameters against the paper's 27.7M (+2.3%); 16 groups per branch would give 37.6M.
* The ``lucid_sk`` block reproduces the Lucid library: true 3x3 and 5x5 kernels without BN/ReLU
  in the branches, one attention weight per branch shared by all channels, d = C // r without
  the L floor, then BN + ReLU after the SK convolution.

Dense prediction (not in the paper): ``output_stride`` 8 or 16 keeps the resolution of the last
stages, replacing their stride by dilation as timm and torchvision do (DeepLab's recipe): the
first unit of such a stage runs with the previous dilation (its stride used to apply at its
output), the following units with the stage dilation, and in an SK unit that dilation
multiplies each branch's own (3x3 D1 / D2 become D2 / D4 at dilation 2). Parameters and their
names do not change, so weights load at any output stride.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from sknet.errors import ConfigError
from sknet.layers.drop import DropPath, drop_path_rates
from sknet.layers.se import SEModule
from sknet.layers.sk import BranchSpec, SKConv
from sknet.models._timm import PoolHead, TimmModel

__all__ = ["ConvNormAct", "ResNeXt", "ResNeXtBlock", "ResNeXtConfig"]

BlockKind = Literal["plain", "se", "sk", "lucid_sk"]


@dataclass(frozen=True)
class ResNeXtConfig:
    """Architecture of a ResNeXt-family model (all fields can be overridden in create_model).

    Stage i (0-based) has ``layers[i]`` units, output width ``stage_out[i]`` and bottleneck
    (3x3) width ``mid_widths[i]`` or, when that is None, ``cardinality * base_width * 2**i``.
    ``stem_pool`` is the ImageNet stem's 3x3/2 max pool: ``"pad"`` (padding 1, as torchvision
    and timm) or ``"ceil"`` (no padding, output size rounded up: Caffe's pooling, which the
    official SKNet release uses; the windows sit one pixel further right and down).
    """

    layers: tuple[int, ...] = (3, 4, 6, 3)
    block: BlockKind = "plain"
    cardinality: int = 32
    base_width: int = 4
    mid_widths: tuple[int, ...] | None = None
    stage_out: tuple[int, ...] = (256, 512, 1024, 2048)
    stem: Literal["imagenet", "cifar", "small"] = "imagenet"
    stem_width: int = 64
    stem_pool: Literal["pad", "ceil"] = "pad"  # "ceil": Caffe's max pool (official release)
    default_input_size: int = 224
    se_reduction: int = 16
    sk_branches: tuple[int | str | BranchSpec, ...] = (3, 5)
    sk_kernel_mode: Literal["dilated", "full"] = "dilated"
    sk_groups: int | None = None  # default: cardinality
    sk_reduction: int = 16
    sk_min_attn_dim: int = 32
    sk_attn_dims: tuple[int | None, ...] | None = None  # per-stage d override
    sk_attention: Literal["channel", "shared"] = "channel"
    sk_aggregation: Literal["attention", "sum"] = "attention"
    sk_split_input: bool = False
    output_stride: int = 32  # 8 or 16: the last stages dilate instead of striding

    def mid_width(self, stage: int) -> int:
        if self.mid_widths is not None:
            return self.mid_widths[stage]
        return self.cardinality * self.base_width * 2**stage

    def validate(self) -> None:
        n = len(self.layers)
        if n < 1 or any(u < 1 for u in self.layers):
            raise ConfigError(f"layers must be positive unit counts, got {self.layers}")
        if len(self.stage_out) != n:
            raise ConfigError(f"stage_out needs {n} widths (one per stage), got {self.stage_out}")
        if self.mid_widths is not None and len(self.mid_widths) != n:
            raise ConfigError(f"mid_widths needs {n} widths, got {self.mid_widths}")
        if self.sk_attn_dims is not None and len(self.sk_attn_dims) != n:
            raise ConfigError(f"sk_attn_dims needs {n} entries, got {self.sk_attn_dims}")
        if self.stem_pool not in ("pad", "ceil"):
            raise ConfigError(f"stem_pool must be 'pad' or 'ceil', got {self.stem_pool!r}")
        if self.block not in ("plain", "se", "sk", "lucid_sk"):
            raise ConfigError(f"unknown block {self.block!r}")
        if isinstance(self.output_stride, bool) or self.output_stride not in (8, 16, 32):
            raise ConfigError(f"output_stride must be 8, 16 or 32, got {self.output_stride!r}")
        for i in range(n):
            mid = self.mid_width(i)
            if mid % self.cardinality:
                raise ConfigError(
                    f"stage {i + 2}: bottleneck width {mid} is not divisible by cardinality "
                    f"{self.cardinality}"
                )


class ConvNormAct(nn.Sequential):
    """conv (no bias, padding keeping the size) -> BN -> optional ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
        dilation: int = 1,
    ) -> None:
        pad = dilation * (kernel_size // 2)
        super().__init__(
            OrderedDict(
                conv=nn.Conv2d(
                    cin, cout, kernel_size, stride, pad, dilation, groups=groups, bias=False
                ),
                bn=nn.BatchNorm2d(cout),
                act=nn.ReLU(inplace=True) if act else nn.Identity(),
            )
        )


class ResNeXtBlock(nn.Module):
    """Bottleneck unit; ``kind`` picks what fills the 3x3 stage and whether SE gates it.

    Submodule names (part of the checkpoint format): ``conv1``, ``conv2`` (the 3x3 stage:
    ``ConvNormAct`` or ``SKConv``), ``conv3``, ``se``, ``downsample``. ``dilation`` applies to
    the 3x3 stage (for SK: a multiplier on each branch's dilation); ``project`` forces the
    projection shortcut (a unit whose stride became dilation keeps its projection).
    """

    def __init__(
        self,
        cin: int,
        mid: int,
        cout: int,
        stride: int,
        cfg: ResNeXtConfig,
        stage: int,
        kind: BlockKind,
        dilation: int = 1,
        project: bool = False,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(cin, mid, 1)
        if kind in ("plain", "se"):
            self.conv2: nn.Module = ConvNormAct(
                mid, mid, 3, stride, groups=cfg.cardinality, dilation=dilation
            )
        else:
            lucid = kind == "lucid_sk"
            sk = SKConv(
                mid,
                mid,
                branches=cfg.sk_branches,
                kernel_mode=cfg.sk_kernel_mode,
                groups=cfg.sk_groups or cfg.cardinality,
                stride=stride,
                dilation=dilation,
                reduction=cfg.sk_reduction,
                min_attn_dim=cfg.sk_min_attn_dim,
                attn_dim=cfg.sk_attn_dims[stage] if cfg.sk_attn_dims is not None else None,
                attention=cfg.sk_attention,
                aggregation=cfg.sk_aggregation,
                split_input=cfg.sk_split_input,
                branch_norm=not lucid,
            )
            if lucid:
                self.conv2 = nn.Sequential(
                    OrderedDict(sk=sk, bn=nn.BatchNorm2d(mid), act=nn.ReLU(inplace=True))
                )
            else:
                self.conv2 = sk
        self.conv3 = ConvNormAct(mid, cout, 1, act=False)
        self.se: nn.Module = SEModule(cout, cfg.se_reduction) if kind == "se" else nn.Identity()
        self.downsample: nn.Module = (
            ConvNormAct(cin, cout, 1, stride, act=False)
            if project or stride != 1 or cin != cout
            else nn.Identity()
        )
        self.act = nn.ReLU(inplace=True)
        # stochastic depth on the residual branch (no parameters; the identity in eval mode)
        self.drop_path: nn.Module = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop_path(self.se(self.conv3(self.conv2(self.conv1(x)))))
        return self.act(out + self.downsample(x))


class ResNeXt(TimmModel):
    """Generic ResNeXt-family network: stem, stages of :class:`ResNeXtBlock`, pooled linear head.

    Args:
        cfg: the architecture.
        num_classes: classifier width (0: no classifier).
        in_chans: input channels.
        drop_rate: dropout before the classifier (training only).
        drop_path_rate: stochastic depth of the last block, rising linearly from 0 (timm's).
        global_pool: ``"avg"``, ``"max"``, ``"avgmax"`` or ``""`` (none, with 0 classes).
    """

    def __init__(
        self,
        cfg: ResNeXtConfig,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        cfg.validate()
        dpr = iter(drop_path_rates(drop_path_rate, sum(cfg.layers)))
        self.cfg = cfg
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.default_input_size = cfg.default_input_size
        if cfg.stem == "imagenet":
            self.stem = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_chans, cfg.stem_width, 7, 2, 3, bias=False),
                    bn=nn.BatchNorm2d(cfg.stem_width),
                    act=nn.ReLU(inplace=True),
                    pool=nn.MaxPool2d(3, 2, 1)
                    if cfg.stem_pool == "pad"
                    else nn.MaxPool2d(3, 2, 0, ceil_mode=True),
                )
            )
            stem_reduction, reduction = 2, 4
        else:  # "cifar": one 3x3 conv; "small": the same with stride 2 (demo-sized models)
            reduction = 1 if cfg.stem == "cifar" else 2
            stem_reduction = reduction
            self.stem = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_chans, cfg.stem_width, 3, reduction, 1, bias=False),
                    bn=nn.BatchNorm2d(cfg.stem_width),
                    act=nn.ReLU(inplace=True),
                )
            )
        # level 0: the stem before its max-pool (timm's convention)
        self.feature_info = [
            {"num_chs": cfg.stem_width, "reduction": stem_reduction, "module": "stem.act"}
        ]
        cin = cfg.stem_width
        stages = []
        dilation = 1
        for i, (units, cout) in enumerate(zip(cfg.layers, cfg.stage_out)):
            nominal = stride = 1 if i == 0 else 2
            first_dilation = dilation
            if reduction * stride > cfg.output_stride:  # keep the resolution, dilate instead
                dilation *= stride
                stride = 1
            reduction *= stride
            blocks = []
            for u in range(units):
                blk = ResNeXtBlock(
                    cin,
                    cfg.mid_width(i),
                    cout,
                    stride if u == 0 else 1,
                    cfg,
                    i,
                    cfg.block,
                    dilation=first_dilation if u == 0 else dilation,
                    project=u == 0 and nominal != 1,
                    drop_path=next(dpr),
                )
                for mod in blk.modules():
                    if isinstance(mod, SKConv):
                        mod.unit_name = f"SK_{i + 2}_{u + 1}"
                blocks.append(blk)
                cin = cout
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(
                {"num_chs": cout, "reduction": reduction, "module": f"stages.{i}"}
            )
        self.stages = nn.Sequential(*stages)
        self.min_input_size = reduction
        self.num_features = cin
        self.head = PoolHead(cin, num_classes, global_pool, drop_rate)
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(self.stem(x))  # (N, C_last, H / stride, W / stride)


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)

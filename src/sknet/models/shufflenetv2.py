"""ShuffleNetV2 with SE or SK units (paper Table 4).

Papers: Ma et al., "ShuffleNet V2", ECCV 2018; Li et al., "Selective Kernel Networks", CVPR 2019.

One assembler, :class:`ShuffleNetV2`, takes the unit kind (``"plain"``, ``"se"``, ``"sk"``).
The plain network is the reference architecture (same layers and parameter count as
torchvision's ``shufflenet_v2_x0_5`` / ``x1_0``).

Deviations from the paper, which does not spell out these settings:

* ``sk``: SKConv (two depthwise branches, 3x3 and 3x3 dilation 2, d = max(C/16, 32)) replaces
  every 3x3 depthwise convolution and its BN, in both branches of the down-sampling units.
  Each SK branch is conv -> BN -> ReLU as the SK definition says, although the plain
  ShuffleNetV2 has no ReLU after its depthwise convolution.
* ``se``: an SE gate with r = 4 on the output of the main branch of every unit, before the
  concatenation.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from sknet.errors import ConfigError
from sknet.layers.se import SEModule
from sknet.layers.sk import SKConv
from sknet.models._timm import PoolHead, TimmModel, check_rate

__all__ = ["ShuffleNetV2", "ShuffleNetV2Config", "ShuffleUnit"]

UnitKind = Literal["plain", "se", "sk"]


@dataclass(frozen=True)
class ShuffleNetV2Config:
    """Architecture of a ShuffleNetV2 variant."""

    stage_repeats: tuple[int, ...] = (4, 8, 4)
    stage_out: tuple[int, ...] = (24, 116, 232, 464, 1024)  # stem, stages..., last conv
    unit: UnitKind = "plain"
    se_reduction: int = 4
    sk_branches: tuple[int | str, ...] = (3, 5)
    sk_kernel_mode: Literal["dilated", "full"] = "dilated"
    sk_reduction: int = 16
    sk_min_attn_dim: int = 32
    sk_attention: Literal["channel", "shared"] = "channel"
    sk_aggregation: Literal["attention", "sum"] = "attention"
    default_input_size: int = 224

    def validate(self) -> None:
        if len(self.stage_out) != len(self.stage_repeats) + 2:
            raise ConfigError(
                f"stage_out needs {len(self.stage_repeats) + 2} widths (stem, one per stage, "
                f"last conv), got {self.stage_out}"
            )
        if self.unit not in ("plain", "se", "sk"):
            raise ConfigError(f"unknown unit {self.unit!r}")
        for c in self.stage_out[1:-1]:
            if c % 2:
                raise ConfigError(f"stage widths must be even (channel split), got {c}")


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    # written without reading the shape into Python ints: traceable by torch.fx
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


def _dw(c: int, stride: int, cfg: ShuffleNetV2Config, kind: UnitKind) -> nn.Module:
    """The 3x3 depthwise step: conv + BN, or an SK convolution."""
    if kind == "sk":
        return SKConv(
            c,
            c,
            branches=cfg.sk_branches,
            kernel_mode=cfg.sk_kernel_mode,
            groups=c,
            stride=stride,
            reduction=cfg.sk_reduction,
            min_attn_dim=cfg.sk_min_attn_dim,
            attention=cfg.sk_attention,
            aggregation=cfg.sk_aggregation,
        )
    return nn.Sequential(
        OrderedDict(conv=nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False), bn=nn.BatchNorm2d(c))
    )


def _pw(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(cin, cout, 1, bias=False),
            bn=nn.BatchNorm2d(cout),
            act=nn.ReLU(inplace=True),
        )
    )


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit. Submodules: ``branch1`` (down-sampling units only), ``branch2``."""

    def __init__(
        self, cin: int, cout: int, stride: int, cfg: ShuffleNetV2Config, kind: UnitKind
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ConfigError(f"stride must be 1 or 2, got {stride}")
        self.stride = stride
        half = cout // 2
        if stride == 1 and cin != cout:
            raise ConfigError("a stride-1 unit needs equal input and output widths")
        self.branch1: nn.Module = (
            nn.Sequential(OrderedDict(dw=_dw(cin, stride, cfg, kind), pw=_pw(cin, half)))
            if stride == 2
            else nn.Identity()
        )
        b2_in = cin if stride == 2 else half
        parts: OrderedDict[str, nn.Module] = OrderedDict(
            pw1=_pw(b2_in, half), dw=_dw(half, stride, cfg, kind), pw2=_pw(half, half)
        )
        if kind == "se":
            parts["se"] = SEModule(half, cfg.se_reduction)
        self.branch2 = nn.Sequential(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(TimmModel):
    """Generic ShuffleNetV2: stem, stages of :class:`ShuffleUnit`, 1x1 conv, pooled head.

    Feature levels: the stem before (stride 2) and after (4) its max-pool, the three stages
    (8, 16, 32) and the last 1x1 convolution (``conv_last``, 32); ``features_only`` returns
    levels 1-4 by default. No ``output_stride`` other than 32. ``drop_rate`` and ``global_pool``
    as the ResNeXt family; its units have no residual branch to drop, so ``drop_path_rate`` must
    be 0.
    """

    _tail = ("conv_last",)

    def __init__(
        self,
        cfg: ShuffleNetV2Config,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        if check_rate(drop_path_rate, "drop_path_rate") != 0.0:
            raise ConfigError(
                f"drop_path_rate={drop_path_rate}: ShuffleNetV2 units have no residual branch "
                "to drop (stochastic depth applies to the ResNeXt family and SK-ResNets); "
                "use drop_rate for dropout before the classifier"
            )
        cfg.validate()
        self.cfg = cfg
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.default_input_size = cfg.default_input_size
        c0 = cfg.stage_out[0]
        self.stem = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(in_chans, c0, 3, 2, 1, bias=False),
                bn=nn.BatchNorm2d(c0),
                act=nn.ReLU(inplace=True),
                pool=nn.MaxPool2d(3, 2, 1),
            )
        )
        reduction = 4
        # levels 0 and 1: the stem before and after its max-pool (timm's convention)
        self.feature_info = [
            {"num_chs": c0, "reduction": 2, "module": "stem.act"},
            {"num_chs": c0, "reduction": reduction, "module": "stem.pool"},
        ]
        cin = c0
        stages = []
        for i, (reps, cout) in enumerate(zip(cfg.stage_repeats, cfg.stage_out[1:-1])):
            reduction *= 2
            units = []
            for u in range(reps):
                unit = ShuffleUnit(cin, cout, 2 if u == 0 else 1, cfg, cfg.unit)
                sks = [m for m in unit.modules() if isinstance(m, SKConv)]
                for j, sk in enumerate(sks):
                    # the paper's stage numbering (stage2..stage4); a down-sampling unit holds
                    # two SK convolutions: "b1" (shortcut branch) and the main one.
                    suffix = "_b1" if len(sks) == 2 and j == 0 else ""
                    sk.unit_name = f"SK_{i + 2}_{u + 1}{suffix}"
                units.append(unit)
                cin = cout
            stages.append(nn.Sequential(*units))
            self.feature_info.append(
                {"num_chs": cout, "reduction": reduction, "module": f"stages.{i}"}
            )
        self.stages = nn.Sequential(*stages)
        self.conv_last = _pw(cin, cfg.stage_out[-1])
        self.feature_info.append(
            {"num_chs": cfg.stage_out[-1], "reduction": reduction, "module": "conv_last"}
        )
        self.min_input_size = reduction
        self.num_features = cfg.stage_out[-1]
        self.head = PoolHead(cfg.stage_out[-1], num_classes, global_pool, drop_rate)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_last(self.forward_stages(self.stem(x)))

    def default_out_indices(self) -> tuple[int, ...]:
        return (1, 2, 3, 4)  # strides 4, 8, 16, 32 (conv_last repeats stride 32)

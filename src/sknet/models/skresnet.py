"""SK-ResNet-18/34 with timm's layout: basic blocks whose first 3x3 is an SK convolution.

Papers: Li et al., "Selective Kernel Networks", CVPR 2019; He et al., "Deep Residual Learning
for Image Recognition" (ResNet), CVPR 2016. The architecture reproduces timm's ``skresnet18`` /
``skresnet34`` (``timm.models.sknet``), so timm's ImageNet weights (``skresnet18.ra_in1k``,
``skresnet34.ra_in1k``) load into it with a key rename (:func:`sknet.hub.from_timm`).

Unit: SKConv (stride on every branch) -> 3x3 conv + BN -> add -> ReLU, with a 1x1 conv + BN
projection shortcut where the shape changes; ImageNet stem (7x7/2 conv, BN, ReLU, 3x3/2 max pool).

Deviations from the paper (all taken from timm, whose weights this family exists to load):

* The paper defines SK units inside ResNeXt bottlenecks only; here the SK convolution replaces
  the first 3x3 of a ResNet basic block, with no groups (G = 1).
* Split input: branch m convolves only the m-th half of the input channels (timm's
  ``split_input=True``), which halves the branch parameters.
* Attention width d = make_divisible(C / 8, 16) (timm's ``rd_ratio=1/8, rd_divisor=16``), not
  max(C / 16, 32): 16 / 16 / 32 / 64 by stage for C = 64 / 128 / 256 / 512.
* The second path is a 3x3 convolution with dilation 2 (effective 5x5), as in the paper's
  official release.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from sknet.errors import ConfigError
from sknet.layers.drop import DropPath, drop_path_rates
from sknet.layers.sk import BranchSpec, SKConv
from sknet.models._timm import PoolHead, TimmModel
from sknet.models.resnext import ConvNormAct, _init_weights

__all__ = ["SKBasicBlock", "SKResNet", "SKResNetConfig", "make_divisible"]


def make_divisible(value: float, divisor: int, round_limit: float = 0.9) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``), raised by
    one ``divisor`` where rounding would lose more than ``1 - round_limit`` of it (timm's rule).
    """
    if divisor < 1:
        raise ConfigError(f"divisor must be >= 1, got {divisor}")
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if out < round_limit * value:
        out += divisor
    return out


@dataclass(frozen=True)
class SKResNetConfig:
    """Architecture of an SK-ResNet with basic blocks (every field can be overridden).

    Stage i (0-based) has ``layers[i]`` units of width ``stage_out[i]``; its SK attention width is
    ``make_divisible(stage_out[i] * sk_attn_ratio, sk_attn_divisor)``.
    """

    layers: tuple[int, ...] = (2, 2, 2, 2)
    stage_out: tuple[int, ...] = (64, 128, 256, 512)
    stem_width: int = 64
    default_input_size: int = 224
    sk_branches: tuple[int | str | BranchSpec, ...] = (3, 5)
    sk_kernel_mode: Literal["dilated", "full"] = "dilated"
    sk_groups: int = 1
    sk_attn_ratio: float = 1 / 8
    sk_attn_divisor: int = 16
    sk_split_input: bool = True
    sk_attention: Literal["channel", "shared"] = "channel"
    sk_aggregation: Literal["attention", "sum"] = "attention"

    def validate(self) -> None:
        n = len(self.layers)
        if n < 1 or any(u < 1 for u in self.layers):
            raise ConfigError(f"layers must be positive unit counts, got {self.layers}")
        if len(self.stage_out) != n:
            raise ConfigError(f"stage_out needs {n} widths (one per stage), got {self.stage_out}")
        if self.stem_width < 1 or any(c < 1 for c in self.stage_out):
            raise ConfigError(
                f"widths must be positive, got stem {self.stem_width}, stages {self.stage_out}"
            )
        if self.sk_attn_ratio <= 0:
            raise ConfigError(f"sk_attn_ratio must be > 0, got {self.sk_attn_ratio}")

    def attn_dim(self, stage: int) -> int:
        return make_divisible(self.stage_out[stage] * self.sk_attn_ratio, self.sk_attn_divisor)


class SKBasicBlock(nn.Module):
    """Basic residual unit: ``conv1`` (SKConv) -> ``conv2`` (3x3 conv + BN) -> add -> ReLU.

    Submodule names (part of the checkpoint format): ``conv1``, ``conv2``, ``downsample``.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        cfg: SKResNetConfig,
        stage: int,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv1 = SKConv(
            cin,
            cout,
            branches=cfg.sk_branches,
            kernel_mode=cfg.sk_kernel_mode,
            groups=cfg.sk_groups,
            stride=stride,
            attn_dim=cfg.attn_dim(stage),
            attention=cfg.sk_attention,
            aggregation=cfg.sk_aggregation,
            split_input=cfg.sk_split_input,
        )
        self.conv2 = ConvNormAct(cout, cout, 3, act=False)
        self.downsample: nn.Module = (
            ConvNormAct(cin, cout, 1, stride, act=False)
            if stride != 1 or cin != cout
            else nn.Identity()
        )
        self.act = nn.ReLU(inplace=True)
        # stochastic depth on the residual branch (no parameters; the identity in eval mode)
        self.drop_path: nn.Module = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop_path(self.conv2(self.conv1(x))) + self.downsample(x))


class SKResNet(TimmModel):
    """SK-ResNet with basic blocks: ImageNet stem, stages of :class:`SKBasicBlock`, linear head.

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
        cfg: SKResNetConfig,
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
        self.stem = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(in_chans, cfg.stem_width, 7, 2, 3, bias=False),
                bn=nn.BatchNorm2d(cfg.stem_width),
                act=nn.ReLU(inplace=True),
                pool=nn.MaxPool2d(3, 2, 1),
            )
        )
        reduction = 4
        # level 0: the stem before its max-pool (timm's convention)
        self.feature_info = [{"num_chs": cfg.stem_width, "reduction": 2, "module": "stem.act"}]
        cin = cfg.stem_width
        stages = []
        for i, (units, cout) in enumerate(zip(cfg.layers, cfg.stage_out)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            blocks = []
            for u in range(units):
                blk = SKBasicBlock(cin, cout, stride if u == 0 else 1, cfg, i, next(dpr))
                blk.conv1.unit_name = f"SK_{i + 2}_{u + 1}"
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
        return self.forward_stages(self.stem(x))  # (N, C_last, H / 32, W / 32)

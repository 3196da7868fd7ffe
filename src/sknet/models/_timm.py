"""What timm users rely on, for every sknet model family: ``drop_rate`` (dropout before the
classifier), ``global_pool`` (``"avg"``, ``"max"``, ``"avgmax"`` or ``""``), stochastic depth
(``drop_path_rate``, in the family's blocks), ``set_grad_checkpointing`` and a timm-style
``pretrained_cfg`` dict."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from sknet.errors import ConfigError
from sknet.models._base import ClassifierHead, SKNetModel
from sknet.preprocess import Preprocess, default_preprocess

__all__ = ["GLOBAL_POOLS", "PoolHead", "TimmModel"]

GLOBAL_POOLS = ("avg", "max", "avgmax", "")


def check_pool(global_pool: Any, num_classes: int) -> str:
    if global_pool not in GLOBAL_POOLS:
        raise ConfigError(
            f"global_pool must be one of {', '.join(repr(p) for p in GLOBAL_POOLS)}, "
            f"got {global_pool!r}"
        )
    if global_pool == "" and num_classes > 0:
        raise ConfigError(
            "global_pool='' (no pooling) needs num_classes=0: a linear classifier needs "
            "pooled features (as in timm)"
        )
    return str(global_pool)


def check_rate(rate: Any, name: str) -> float:
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate < 1.0:
        raise ConfigError(f"{name} must be a number in [0, 1), got {rate!r}")
    return float(rate)


class PoolHead(ClassifierHead):
    """Global pooling (``global_pool``), dropout (``drop_rate``, training only), then the linear
    classifier ``fc``. Same parameters (``fc.*``) as :class:`ClassifierHead`."""

    def __init__(
        self, in_features: int, num_classes: int, global_pool: str = "avg", drop_rate: float = 0.0
    ) -> None:
        super().__init__(in_features, num_classes)
        self.global_pool = check_pool(global_pool, num_classes)
        self.drop_rate = check_rate(drop_rate, "drop_rate")

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        elif self.global_pool == "max":
            x = x.amax(dim=(2, 3))
        elif self.global_pool == "avgmax":
            x = 0.5 * (x.mean(dim=(2, 3)) + x.amax(dim=(2, 3)))
        if self.drop_rate > 0.0:
            x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)

    def extra_repr(self) -> str:
        return f"global_pool={self.global_pool!r}, drop_rate={self.drop_rate}"


class TimmModel(SKNetModel):
    """An :class:`SKNetModel` with timm's training knobs (see the module docs)."""

    head: PoolHead
    grad_checkpointing: bool = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them
        (``torch.utils.checkpoint``, in training with gradients on). Outputs and gradients are
        the same; BatchNorm running statistics see each training batch twice (as in timm)."""
        self.grad_checkpointing = bool(enable)

    def forward_stages(self, x: torch.Tensor) -> torch.Tensor:
        """``self.stages(x)``, block by block under checkpointing when it is on."""
        if not (self.grad_checkpointing and self.training and torch.is_grad_enabled()):
            return self.stages(x)
        for stage in self.stages:
            blocks = stage if isinstance(stage, nn.Sequential) else [stage]
            for block in blocks:
                x = checkpoint(block, x, use_reentrant=False)
        return x

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh classifier for ``num_classes`` (0 removes it); ``global_pool`` also changes
        the pooling (``""``: none, with ``num_classes=0``), as timm's ``reset_classifier``."""
        pool = self.head.global_pool if global_pool is None else global_pool
        check_pool(pool, num_classes)
        super().reset_classifier(num_classes)
        self.head.global_pool = pool

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """timm's ``pretrained_cfg`` keys, from the model's data config when it has one (the
        preprocessing of its weights), else from the defaults for its input size."""
        data = getattr(self, "data_config", None)
        pre = getattr(data, "preprocess", None)
        if not isinstance(pre, Preprocess):
            pre = default_preprocess(self.default_input_size, None)
        size = pre.input_size
        return {
            "architecture": getattr(self, "model_name", type(self).__name__),
            "input_size": (self.in_chans, size, size),
            "interpolation": pre.interpolation,
            "crop_pct": size / pre.resize if pre.resize else 1.0,
            "crop_mode": "center",
            "mean": tuple(pre.mean),
            "std": tuple(pre.std),
            "num_classes": self.num_classes,
            "first_conv": "stem.conv",
            "classifier": "head.fc",
        }

"""Stochastic depth (timm's ``DropPath``): drop a residual branch per sample in training."""

from __future__ import annotations

import torch
from torch import nn

from sknet.errors import ConfigError

__all__ = ["DropPath", "drop_path_rates"]


class DropPath(nn.Module):
    """Zero the residual branch of each sample with probability ``p`` in training and scale the
    kept ones by ``1 / (1 - p)``; the identity in eval mode (no parameters)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p < 1.0:
            raise ConfigError(f"drop path rate must be a number in [0, 1), got {p!r}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def drop_path_rates(rate: float, blocks: int) -> list[float]:
    """timm's schedule: rates rising linearly from 0 (first block) to ``rate`` (last block)."""
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate < 1.0:
        raise ConfigError(f"drop_path_rate must be a number in [0, 1), got {rate!r}")
    if blocks <= 1:
        return [0.0] * blocks
    return [float(rate) * i / (blocks - 1) for i in range(blocks)]

"""Squeeze-and-Excitation (Hu et al., CVPR 2018), as used by the paper's SENet baselines.

``x * sigmoid(W2 ReLU(W1 GAP(x)))`` with 1x1 convolutions that carry a bias (as the SENet
release and timm do), hidden width ``channels // reduction``.
"""

from __future__ import annotations

import torch
from torch import nn

from sknet.errors import ConfigError

__all__ = ["SEModule"]


class SEModule(nn.Module):
    """Squeeze-and-Excitation gate.

    Args:
        channels: C.
        reduction: r; the hidden width is ``max(C // r, 1)``.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        if reduction < 1:
            raise ConfigError(f"SE reduction must be >= 1, got {reduction}")
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
        return x * self.fc2(self.act(self.fc1(s))).sigmoid()

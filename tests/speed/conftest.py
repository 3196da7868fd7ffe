"""Shared helpers of the speed tests: the plain reference SK forward, BN randomisation."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from sknet.layers.sk import SKConv


def _reference_sk_forward(sk: SKConv, x: torch.Tensor) -> torch.Tensor:
    """V = sum_m a_m U_m, a = softmax_M(fc_select(ReLU(BN(fc_reduce(GAP(sum_m U_m)))))).

    Written as plainly as possible (stack, full-size sum, mean, product, sum), with the branch
    convolutions called as declared (no strided-dilation shortcut).
    """
    xs = torch.chunk(x, sk.num_branches, dim=1) if sk.split_input else [x] * sk.num_branches
    feats = torch.stack([b.act(b.bn(b.conv(xi))) for b, xi in zip(sk.branches, xs)], dim=1)
    u = feats.sum(dim=1)
    if sk.attn is None:
        return u
    s = u.mean(dim=(2, 3), keepdim=True)
    z = sk.attn.act(sk.attn.bn(sk.attn.fc_reduce(s)))
    logits = sk.attn.fc_select(z).view(x.shape[0], sk.num_branches, -1)
    a = logits.softmax(dim=1)[..., None, None]  # (N, M, C', 1, 1)
    return (feats * a).sum(dim=1)


def _randomize_bn(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters (as after training)."""
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_((torch.rand(n, generator=gen) - 0.5) * 0.6)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_((torch.rand(n, generator=gen) - 0.5) * 0.4)
    return module


@pytest.fixture
def reference_sk() -> Callable[[SKConv, torch.Tensor], torch.Tensor]:
    return _reference_sk_forward


@pytest.fixture
def randomize_bn() -> Callable[..., torch.nn.Module]:
    return _randomize_bn

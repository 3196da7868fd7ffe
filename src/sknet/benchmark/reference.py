"""The SK unit written as plainly as the paper's equations, for correctness checks.

Used by the tests (``tests/speed``) and by ``benchmarks/gpu_check.py`` to check sknet's fast
paths (pooled branch sums, one-pass Select, the strided dilated shortcut, fused kernels) against
the formulas, and to give BatchNorms the non-trivial statistics of a trained model.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from sknet.layers.sk import SKConv

__all__ = ["randomize_bn", "reference_model", "reference_sk_forward"]


def reference_sk_forward(sk: SKConv, x: torch.Tensor) -> torch.Tensor:
    """V = sum_m a_m U_m, a = softmax_M(fc_select(ReLU(BN(fc_reduce(GAP(sum_m U_m)))))).

    Written as plainly as possible (stack, full-size sum, mean, product, sum), with the branch
    convolutions called as declared (no strided-dilation shortcut).
    """
    xs = torch.chunk(x, sk.num_branches, dim=1) if sk.split_input else [x] * sk.num_branches
    branches: list[Any] = list(sk.branches)  # conv, bn, act each (nn.Module attributes)
    feats = torch.stack([b.act(b.bn(b.conv(xi))) for b, xi in zip(branches, xs)], dim=1)
    u = feats.sum(dim=1)
    if sk.attn is None:
        return u
    s = u.mean(dim=(2, 3), keepdim=True)
    z = sk.attn.act(sk.attn.bn(sk.attn.fc_reduce(s)))
    logits = sk.attn.fc_select(z).view(x.shape[0], sk.num_branches, -1)
    a = logits.softmax(dim=1)[..., None, None]  # (N, M, C', 1, 1)
    return (feats * a.to(feats.dtype)).sum(dim=1)


def reference_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose SK units compute :func:`reference_sk_forward`."""
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, SKConv):
            m.forward = reference_sk_forward.__get__(m)  # type: ignore[method-assign]
    return ref


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters (as after training)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                for t, values in (
                    (m.running_mean, (torch.rand(n, generator=gen) - 0.5) * 0.6),
                    (m.running_var, torch.rand(n, generator=gen) + 0.5),
                    (m.weight, torch.rand(n, generator=gen) + 0.5),
                    (m.bias, (torch.rand(n, generator=gen) - 0.5) * 0.4),
                ):
                    if t is not None:  # no affine parameters / statistics: nothing to set
                        t.copy_(values)
    return model

"""Fixtures of the speed tests: the plain reference SK forward and BN randomisation
(:mod:`sknet.benchmark.reference`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from sknet.benchmark import reference
from sknet.layers.sk import SKConv


@pytest.fixture
def reference_sk() -> Callable[[SKConv, torch.Tensor], torch.Tensor]:
    return reference.reference_sk_forward


@pytest.fixture
def randomize_bn() -> Callable[..., torch.nn.Module]:
    return reference.randomize_bn

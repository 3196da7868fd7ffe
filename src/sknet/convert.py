"""Compatibility: the timm / torchvision converters, now :mod:`sknet.hub.convert` (pure key
maps) and :mod:`sknet.hub.load` (building the model).

Kept for code that imports ``sknet.convert`` (tests, benchmarks, sknet's CLI). ``load_timm`` /
``load_torchvision`` here return the model alone, as they always did; those of
:mod:`sknet.hub` return ``(model, record)``.
"""

from collections.abc import Mapping

import torch

from sknet.hub import load as _load
from sknet.hub.convert import (
    SOURCES,
    TIMM_NAMES,
    TORCHVISION_NAMES,
    from_timm,
    from_torchvision,
    guess_timm_model,
    guess_torchvision_model,
)
from sknet.hub.load import Converted, convert_file
from sknet.hub.read import read_state_dict
from sknet.models import SKNetModel

__all__ = [
    "SOURCES",
    "TIMM_NAMES",
    "TORCHVISION_NAMES",
    "Converted",
    "convert_file",
    "from_timm",
    "from_torchvision",
    "guess_timm_model",
    "guess_torchvision_model",
    "load_timm",
    "load_torchvision",
    "read_state_dict",
]


def load_timm(state_dict: Mapping[str, torch.Tensor], name: str | None = None) -> SKNetModel:
    """The sknet model (eval mode) of a timm state dict (:func:`sknet.hub.load_timm`'s model)."""
    return _load.load_timm(state_dict, name)[0]


def load_torchvision(state_dict: Mapping[str, torch.Tensor], name: str | None = None) -> SKNetModel:
    """The sknet model (eval mode) of a torchvision state dict."""
    return _load.load_torchvision(state_dict, name)[0]

"""Compatibility: weights files, now :mod:`sknet.hub.metadata` (writer and schema) and
:mod:`sknet.hub.load` (reader).

Kept for code that imports ``sknet.weights`` (README, tests, sknet's train / analysis / CLI
modules). :func:`load_weights` here returns the model alone, as it always did;
:func:`sknet.hub.load_weights` returns ``(model, record)`` like every loader of
:mod:`sknet.hub`.
"""

import os

from torch import nn

from sknet._files import atomic_save
from sknet.hub import load as _load
from sknet.hub.metadata import (
    WEIGHTS_FORMAT,
    WEIGHTS_FORMAT_VERSION,
    arch_config_of,
    read_metadata,
    save_weights,
)

__all__ = [
    "WEIGHTS_FORMAT",
    "WEIGHTS_FORMAT_VERSION",
    "arch_config_of",
    "atomic_save",
    "load_weights",
    "read_metadata",
    "save_weights",
]


def load_weights(
    path: str | os.PathLike, *, name: str | None = None, num_classes: int | None = None
) -> nn.Module:
    """The model of a weights file (``sknet.load(path)[0]``); ``name``/``num_classes`` are
    needed only for files without sknet metadata."""
    return _load.load_weights(path, name=name, num_classes=num_classes)[0]

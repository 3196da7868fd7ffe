"""Devices and mixed precision: which device a run uses, and the autocast context for it."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from sknet.errors import ConfigError

__all__ = ["autocast", "resolve_device"]

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager[Any]:
    """A fresh autocast context for ``precision`` on ``device``.

    ``"bf16"``/``"fp16"``: ``torch.autocast`` to that dtype; ``"none"``/``"fp32"``: no autocast.
    Other values raise :class:`~sknet.errors.ConfigError` (a ``ValueError``).
    """
    if precision in ("none", "fp32"):
        return contextlib.nullcontext()
    if precision not in _AUTOCAST_DTYPES:
        raise ConfigError(f"precision must be none, fp32, bf16 or fp16, got {precision!r}")
    return torch.autocast(device_type=torch.device(device).type, dtype=_AUTOCAST_DTYPES[precision])


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto``: the local GPU if CUDA is available, else the CPU; ``cuda`` needs CUDA.

    Accepted: ``auto``, ``cpu``, ``cuda`` and ``cuda:N``; anything else is a ``ConfigError``.
    """
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "cuda" or (preference.startswith("cuda:") and preference[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={preference!r} but CUDA is not available on this machine")
        if preference == "cuda":
            return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        if int(preference[5:]) >= torch.cuda.device_count():
            raise ConfigError(
                f"device={preference!r} but this machine has {torch.cuda.device_count()} GPU(s)"
            )
        return torch.device(preference)
    if preference != "auto":
        raise ConfigError(f"unknown device {preference!r}; expected auto, cpu, cuda or cuda:N")
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")

"""Small helpers shared by several sknet packages (one copy each; private API).

File writes (atomic saves, output checks, run locks) live in :mod:`sknet._files`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "DATA_NAMES",
    "DEFAULT_SCALE_RANGE",
    "autocast",
    "jsonable",
    "resolve_device",
]

#: Data set names understood by the data, training and evaluation code.
DATA_NAMES: tuple[str, ...] = ("synthetic", "cifar10", "cifar100", "imagefolder")

#: Default object-size range of the synthetic shapes (fraction of the canvas side,
#: log-uniform): small to large objects, the setting where adaptive receptive fields matter.
DEFAULT_SCALE_RANGE: tuple[float, float] = (0.15, 0.9)

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager[Any]:
    """A fresh autocast context for ``precision`` on ``device``.

    ``"bf16"``/``"fp16"``: ``torch.autocast`` to that dtype; ``"none"``/``"fp32"``: no autocast.
    Other values raise ``ValueError``.
    """
    if precision in ("none", "fp32"):
        return contextlib.nullcontext()
    if precision not in _AUTOCAST_DTYPES:
        raise ValueError(f"precision must be none, fp32, bf16 or fp16, got {precision!r}")
    return torch.autocast(device_type=torch.device(device).type, dtype=_AUTOCAST_DTYPES[precision])


def jsonable(v: Any) -> Any:
    """``v`` as plain JSON/TOML values: tuples become lists, dict keys strings, branch specs
    (anything with ``describe()``) their text, dataclasses dicts and paths strings; other
    non-JSON values become their ``str``."""
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if callable(getattr(v, "describe", None)):  # sknet.layers.BranchSpec
        return v.describe()
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return jsonable(dataclasses.asdict(v))
    if isinstance(v, Path):
        return str(v)
    return str(v)


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto``: the local GPU if CUDA is available, else the CPU; ``cuda`` needs CUDA.

    Accepted: ``auto``, ``cpu``, ``cuda`` and ``cuda:N``; anything else is a ``ConfigError``.
    """
    from sknet.errors import ConfigError

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

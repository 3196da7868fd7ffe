"""Small helpers shared by several sknet packages (one copy each; private API).

File writes (atomic saves, output checks, run locks) live in :mod:`sknet._files`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "DATA_NAMES",
    "DEFAULT_SCALE_RANGE",
    "autocast",
    "coerce_field",
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


def coerce_field(name: str, value: Any, hint: Any, where: str = "config key") -> Any:
    """Check ``value`` against the dataclass field type ``hint`` and return it in that type.

    The one type checker of sknet's config dataclasses (model configs and ``TrainConfig``):
    ``bool`` is not an ``int``; ints are accepted for floats and integral floats for ints (TOML
    and JSON write ``3.0``); lists become tuples (fixed-length or ``tuple[X, ...]``, each item
    checked); ``Literal`` values must be one of the choices; unions take the first member that
    fits; classes need an instance. A mismatch raises :class:`sknet.errors.OverrideError`
    naming ``where`` and ``name``.
    """
    from sknet.errors import OverrideError

    def bad() -> OverrideError:
        return OverrideError(
            f"{where} {name!r}: expected {_type_name(hint)}, got {value!r} ({type(value).__name__})"
        )

    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if hint is type(None):
        if value is None:
            return None
        raise bad()
    if origin is typing.Literal:
        if value in typing.get_args(hint) and not isinstance(value, bool):
            return value
        choices = ", ".join(repr(a) for a in typing.get_args(hint))
        raise OverrideError(f"{where} {name!r}: expected one of {choices}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        for member in typing.get_args(hint):
            try:
                return coerce_field(name, value, member, where)
            except OverrideError:
                continue
        raise bad()
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad()
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad()
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad()
        args = typing.get_args(hint)
        if not args:
            return tuple(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce_field(name, v, args[0], where) for v in value)
        if len(value) != len(args):
            raise OverrideError(f"{where} {name!r}: expected {len(args)} values, got {value!r}")
        return tuple(coerce_field(name, v, a, where) for v, a in zip(value, args))
    if origin is dict:
        if not isinstance(value, dict):
            raise bad()
        return dict(value)
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise bad()
    return value


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")

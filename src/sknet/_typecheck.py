"""The one type checker for config dataclass fields (model overrides and training settings),
and the one "did you mean" hint for a mistyped name."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from typing import Any

from sknet.errors import OverrideError

__all__ = ["coerce_field", "suggest"]


def suggest(
    name: str, candidates: Iterable[str], *, n: int = 1, cutoff: float = 0.6, quote: bool = True
) -> str:
    """``"did you mean 'a'?"`` (``"... 'a' or 'b'?"`` for ``n`` > 1) naming the ``candidates``
    closest to the mistyped ``name``, or ``""`` when none is close (``difflib``'s ratio under
    ``cutoff``). ``quote=False`` leaves the names bare: ``"did you mean sknet50?"``."""
    close = difflib.get_close_matches(name, list(candidates), n=n, cutoff=cutoff)
    if not close:
        return ""
    shown = [repr(c) if quote else c for c in close]
    return f"did you mean {' or '.join(shown)}?"


def coerce_field(name: str, value: Any, hint: Any, where: str = "config key") -> Any:
    """Check ``value`` against the dataclass field type ``hint`` and return it in that type.

    The one type checker of sknet's config dataclasses (model configs and ``TrainConfig``):
    ``bool`` is not an ``int``; ints are accepted for floats and integral floats for ints (TOML
    and JSON write ``3.0``); lists become tuples (fixed-length or ``tuple[X, ...]``, each item
    checked); ``Literal`` values must be one of the choices; unions take the first member that
    fits; classes need an instance. A mismatch raises :class:`sknet.errors.OverrideError`
    naming ``where`` and ``name``.
    """

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

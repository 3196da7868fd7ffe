"""The one "did you mean" helper of sknet's messages (unknown model names, overrides, config
keys, presets). A base module: the standard library only."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["close_names", "with_suggestion"]


def close_names(name: str, names: Iterable[str], n: int = 1, cutoff: float = 0.6) -> list[str]:
    """Up to ``n`` of ``names`` that look like ``name`` (``difflib``), best first."""
    return difflib.get_close_matches(name, list(names), n=n, cutoff=cutoff)


def with_suggestion(name: str, names: Iterable[str], cutoff: float = 0.6) -> str:
    """``'name'``, followed by `` (did you mean 'x'?)`` when one of ``names`` is close."""
    close = close_names(name, names, n=1, cutoff=cutoff)
    return f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")

"""Plain JSON values from sknet's objects (dataclasses, paths, tensors, tuples)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

__all__ = ["jsonable"]


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

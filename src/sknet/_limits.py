"""Bounds on what a file or an argument from a stranger can make sknet do.

Weights files, checkpoints, caffemodels and images are what people download and share. Before
sknet allocates anything on their say-so (a model of the recorded architecture, a tensor of the
recorded shape, an image of the recorded size), the numbers are checked here: integers are
positive and bounded, products are computed in Python integers (no wrap-around) and compared
with the bytes that are really there, and the model's size is computed on the ``meta`` device
(no memory) and refused above a limit.

The limits, and how to raise them:

* :data:`DEFAULT_MAX_PARAMS` (1e9 parameters, 4 GB of float32; the largest model of the paper,
  SKNet-101, has 49M): raise with the environment variable ``SKNET_MAX_PARAMS``.
* :data:`MAX_CLASSES` (1,000,000): no public classifier has more outputs.
* :data:`MAX_IMAGE_SIDE` (4096 px): the largest input size, resize size or evaluation size
  accepted from a file or the command line.
* :data:`MAX_JSON_DEPTH` (32) and :data:`MAX_JSON_CHARS` (16 MiB): metadata values.
* :data:`MAX_IN_CHANS` (1024), and for a recorded architecture (:func:`check_arch`)
  :data:`MAX_ARCH_INT` (2**20), :data:`MAX_ARCH_ITEMS` (64), :data:`MAX_ARCH_STR` (256) and
  :data:`MAX_ARCH_UNITS` (256 residual units).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

from sknet.errors import ConfigError, FileFormatError

__all__ = [
    "DEFAULT_MAX_PARAMS",
    "MAX_ARCH_INT",
    "MAX_ARCH_ITEMS",
    "MAX_ARCH_STR",
    "MAX_ARCH_UNITS",
    "MAX_CLASSES",
    "MAX_IMAGE_SIDE",
    "MAX_IN_CHANS",
    "MAX_JSON_CHARS",
    "MAX_JSON_DEPTH",
    "MAX_PARAMS_ENV",
    "bounded_int",
    "check_arch",
    "check_image_side",
    "check_param_count",
    "json_depth",
    "max_params",
    "parse_json",
]

MAX_PARAMS_ENV = "SKNET_MAX_PARAMS"
DEFAULT_MAX_PARAMS = 1_000_000_000
MAX_CLASSES = 1_000_000
MAX_IMAGE_SIDE = 4096
MAX_JSON_DEPTH = 32
MAX_JSON_CHARS = 16 * 2**20

E = TypeVar("E", bound=Exception)


def max_params() -> int:
    """The largest model (in parameters) sknet builds from a file: ``SKNET_MAX_PARAMS`` or
    :data:`DEFAULT_MAX_PARAMS`."""
    raw = os.environ.get(MAX_PARAMS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PARAMS
    try:
        value = int(float(raw))
    except (ValueError, OverflowError):
        raise ConfigError(
            f"{MAX_PARAMS_ENV}={raw!r} is not a number of parameters (e.g. 2e9)"
        ) from None
    if value <= 0:
        raise ConfigError(f"{MAX_PARAMS_ENV}={raw!r} must be positive")
    return value


def check_param_count(n: int, where: object) -> None:
    """Refuse a model of ``n`` parameters above :func:`max_params` (``where``: the file)."""
    limit = max_params()
    if n > limit:
        raise FileFormatError(
            f"{where}: the recorded model has {n:,} parameters, more than the limit of "
            f"{limit:,} ({n * 4 / 2**30:.1f} GiB of float32); if you trust the file, raise the "
            f"limit with {MAX_PARAMS_ENV}={n}"
        )


def _show(value: Any) -> str:
    """``value`` for an error message: at most 40 characters; an integer too long for ``str``
    (Python refuses over 4300 digits) is described by its size."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"a {value.bit_length()}-bit integer"
    try:
        return repr(value)[:40] if isinstance(value, str) else str(value)[:40]
    except ValueError:
        return type(value).__name__


def bounded_int(
    value: Any,
    name: str,
    *,
    lo: int = 1,
    hi: int,
    where: object = None,
    error: Callable[[str], E] = FileFormatError,  # type: ignore[assignment]
) -> int:
    """``value`` as an int in ``[lo, hi]``, else ``error`` naming ``name`` (and ``where``).

    Bools and floats with a fraction are refused; so are strings that are not integers.
    """
    prefix = f"{where}: " if where is not None else ""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise error(f"{prefix}{name} = {_show(value)} is not an integer")
    if isinstance(value, str) and len(value.strip()) > 40:
        raise error(f"{prefix}{name} = {_show(value)}... is not a sane integer")
    try:
        as_int = int(value)
    except (TypeError, ValueError, OverflowError):
        raise error(f"{prefix}{name} = {_show(value)} is not an integer") from None
    if not lo <= as_int <= hi:
        raise error(f"{prefix}{name} = {_show(as_int)} is outside [{lo}, {hi}]")
    return as_int


def check_image_side(value: Any, name: str, *, where: object = None, config: bool = False) -> int:
    """An image side (input, resize or evaluation size) in ``[1, MAX_IMAGE_SIDE]``.

    ``config=True`` raises :class:`ConfigError` (a bad argument), else :class:`FileFormatError`
    (a bad file).
    """
    return bounded_int(
        value,
        name,
        lo=1,
        hi=MAX_IMAGE_SIDE,
        where=where,
        error=ConfigError if config else FileFormatError,
    )


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of a parsed JSON value, counting stops at ``limit + 1``."""
    depth, level = 0, [value]
    while level:
        depth += 1
        if depth > limit:
            return depth
        nxt: list[Any] = []
        for v in level:
            if isinstance(v, dict):
                nxt.extend(v.values())
            elif isinstance(v, list):
                nxt.extend(v)
        level = nxt
    return depth - 1


def parse_json(text: str, key: str, where: object) -> Any:
    """``json.loads(text)`` for the metadata entry ``key`` of ``where``, refusing (with a
    :class:`FileFormatError`) invalid JSON, text over :data:`MAX_JSON_CHARS` and values nested
    deeper than :data:`MAX_JSON_DEPTH` (which would otherwise exhaust the recursion limit)."""
    if len(text) > MAX_JSON_CHARS:
        raise FileFormatError(
            f"{where}: metadata {key!r} is {len(text):,} characters, more than "
            f"{MAX_JSON_CHARS:,}; the file is corrupt or hostile"
        )
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FileFormatError(
            f"{where}: metadata {key!r} is not valid JSON ({exc.msg} at position {exc.pos}); "
            "the file is corrupt or was edited by hand"
        ) from None
    except RecursionError:
        raise FileFormatError(
            f"{where}: metadata {key!r} is nested too deeply; the file is corrupt or hostile"
        ) from None
    except ValueError as exc:  # an integer over Python's 4300-digit conversion limit
        raise FileFormatError(
            f"{where}: metadata {key!r} cannot be read ({str(exc)[:80]}); the file is corrupt "
            "or hostile"
        ) from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise FileFormatError(
            f"{where}: metadata {key!r} is nested deeper than {MAX_JSON_DEPTH} levels; the file "
            "is corrupt or hostile"
        )
    return value


# ------------------------------------------------------------------------ recorded architectures
# Added for weights files and checkpoints (issue 15): the architecture a file records is checked
# before a model is built from it, even on the ``meta`` device, where building costs time alone.

MAX_IN_CHANS = 1024
"""Input channels accepted from a file (RGB is 3; multispectral data has tens, not thousands)."""
MAX_ARCH_INT = 2**20
"""Largest integer in a recorded architecture (widths, unit counts, kernel sizes)."""
MAX_ARCH_ITEMS = 64
"""Longest list in a recorded architecture (one entry per stage or branch)."""
MAX_ARCH_STR = 256
"""Longest string in a recorded architecture (a branch spec such as ``"3x3 D2"``)."""
MAX_ARCH_UNITS = 256
"""Most residual units (sum of ``layers`` / ``stage_repeats``) in a recorded architecture; the
deepest published network of the family (ResNeXt-152) has 50. Building on the ``meta`` device
takes a few milliseconds per unit, so this bounds the time spent before the size check."""

_UNIT_KEYS = ("layers", "stage_repeats")


def check_arch(value: Any, key: str, where: object) -> dict[str, Any]:
    """The recorded architecture (or overrides) ``value`` of metadata entry ``key`` of ``where``,
    checked before anything is built from it; a :class:`FileFormatError` names the field.

    Checks: a table of named fields; every integer in ``[0, MAX_ARCH_INT]`` (bools are fine);
    every float finite and at most ``MAX_ARCH_INT`` in size; strings at most ``MAX_ARCH_STR``
    characters; lists at most ``MAX_ARCH_ITEMS`` long and of plain values; the unit counts
    (``layers``, ``stage_repeats``) summing to at most :data:`MAX_ARCH_UNITS`. The model's real
    size is then counted on the ``meta`` device (:func:`check_param_count`).
    """
    if not isinstance(value, dict):
        raise FileFormatError(f"{where}: metadata {key!r} is not a table of model fields")

    def check(v: Any, name: str, depth: int) -> None:
        if v is None or isinstance(v, bool):
            return
        if isinstance(v, int):
            if not 0 <= v <= MAX_ARCH_INT:
                shown = str(v)[:40] if v.bit_length() <= 64 else f"a {v.bit_length()}-bit integer"
                raise FileFormatError(
                    f"{where}: {key} field {name} = {shown} is outside [0, {MAX_ARCH_INT}]; "
                    "the file is corrupt or hostile"
                )
        elif isinstance(v, float):
            if not (v == v and abs(v) <= MAX_ARCH_INT):
                raise FileFormatError(
                    f"{where}: {key} field {name} = {v!r} is not a finite number of sane size"
                )
        elif isinstance(v, str):
            if len(v) > MAX_ARCH_STR:
                raise FileFormatError(
                    f"{where}: {key} field {name} is a string of {len(v):,} characters, more "
                    f"than {MAX_ARCH_STR}"
                )
        elif isinstance(v, list) and depth == 0:
            if len(v) > MAX_ARCH_ITEMS:
                raise FileFormatError(
                    f"{where}: {key} field {name} has {len(v):,} entries, more than "
                    f"{MAX_ARCH_ITEMS}"
                )
            for i, item in enumerate(v):
                check(item, f"{name}[{i}]", depth + 1)
        else:
            raise FileFormatError(
                f"{where}: {key} field {name} is a {type(v).__name__}, not a number, string or "
                "list of them"
            )

    for name, v in value.items():
        check(v, str(name)[:40], 0)
    for name in _UNIT_KEYS:
        units = value.get(name)
        if not isinstance(units, list) or not all(type(u) is int for u in units):
            continue
        if sum(units) > MAX_ARCH_UNITS:
            raise FileFormatError(
                f"{where}: {key} records {sum(units):,} residual units ({name}), more than "
                f"the {MAX_ARCH_UNITS} sknet builds from a file; the file is corrupt or hostile"
            )
    return value

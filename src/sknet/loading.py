"""Compatibility: the loading names now in :mod:`sknet.hub` (and :mod:`sknet.preprocess`).

Kept for code that imports ``sknet.loading`` (sknet's CLI, predict and train modules, tests);
new code imports :func:`sknet.load`, :class:`sknet.Preprocess` and :mod:`sknet.hub`.
"""

from sknet.hub.load import build_from_config, load, looks_like_path, resolve_source
from sknet.hub.read import (
    check_state_dtypes,
    check_state_finite,
    check_state_fits,
    check_tensor_bytes,
    read_torch_file,
)
from sknet.hub.read import check_torch_zip as _check_torch_zip
from sknet.hub.record import ModelRecord, SourceKind
from sknet.hub.record import with_new_head as _new_head
from sknet.preprocess import Preprocess, default_preprocess

_looks_like_path = looks_like_path

__all__ = [
    "ModelRecord",
    "Preprocess",
    "SourceKind",
    "_check_torch_zip",
    "_looks_like_path",
    "_new_head",
    "build_from_config",
    "check_state_dtypes",
    "check_state_finite",
    "check_state_fits",
    "check_tensor_bytes",
    "default_preprocess",
    "load",
    "read_torch_file",
    "resolve_source",
]

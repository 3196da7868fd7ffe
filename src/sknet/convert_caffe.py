"""Compatibility: the Caffe converter, now :mod:`sknet.hub.caffe`.

Kept for code that imports ``sknet.convert_caffe`` (tests, the Caffe fixture script).
:func:`from_caffe` here returns ``(sknet name, state dict)`` and :func:`load_caffe` the model,
as they always did; :func:`sknet.hub.caffe.from_caffe` returns the state dict (a pure key map)
and :func:`sknet.hub.load_caffe` ``(model, record)``.
"""

from collections.abc import Sequence

import torch

from sknet.hub.caffe import (
    CAFFE_NAMES,
    CAFFE_OVERRIDES,
    CAFFE_PREPROCESS,
    CAFFE_PREPROCESS_RAW,
    MAX_BLOB_AXES,
    MAX_BLOBS,
    MAX_CAFFEMODEL_BYTES,
    MAX_LAYERS,
    CaffeBlob,
    CaffeLayer,
    caffe_blob_map,
    caffe_metadata,
    guess_caffe_model,
    parse_caffemodel,
    read_caffemodel,
    serialize_caffemodel,
    to_caffe_layers,
    write_caffemodel,
)
from sknet.hub.caffe import caffe_model as load_caffe
from sknet.hub.caffe import from_caffe as _state_of

__all__ = [
    "CAFFE_NAMES",
    "CAFFE_OVERRIDES",
    "CAFFE_PREPROCESS",
    "CAFFE_PREPROCESS_RAW",
    "MAX_BLOBS",
    "MAX_BLOB_AXES",
    "MAX_CAFFEMODEL_BYTES",
    "MAX_LAYERS",
    "CaffeBlob",
    "CaffeLayer",
    "caffe_blob_map",
    "caffe_metadata",
    "from_caffe",
    "guess_caffe_model",
    "load_caffe",
    "parse_caffemodel",
    "read_caffemodel",
    "serialize_caffemodel",
    "to_caffe_layers",
    "write_caffemodel",
]


def from_caffe(
    layers: Sequence[CaffeLayer], name: str | None = None
) -> tuple[str, dict[str, torch.Tensor]]:
    """``(sknet name, state dict)`` of official SKNet caffemodel layers (see
    :func:`sknet.hub.caffe.from_caffe`)."""
    name = name or guess_caffe_model(layers)
    return name, _state_of(layers, name)

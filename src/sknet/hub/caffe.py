"""The official Caffe release of SKNet (``SKNet-50.caffemodel``, ``SKNet-101.caffemodel``) in sknet.

A ``.caffemodel`` is a serialised Caffe ``NetParameter`` protocol buffer. It is read here without
Caffe and without generated protobuf code: a small reader of the protobuf wire format decodes
the few messages that hold weights, with the field numbers of Caffe's ``caffe.proto``:

* ``NetParameter``: ``name`` = 1, ``layer`` = 100 (``LayerParameter``), and the legacy
  ``layers`` = 2 (``V1LayerParameter``);
* ``LayerParameter``: ``name`` = 1, ``type`` = 2 (string), ``blobs`` = 7;
* ``V1LayerParameter``: ``name`` = 4, ``type`` = 5 (enum), ``blobs`` = 6;
* ``BlobProto``: ``shape`` = 7 (``BlobShape``: ``dim`` = 1, int64, packed), ``data`` = 5
  (float, packed), ``double_data`` = 8 (double, packed), and the legacy 4-D shape ``num`` /
  ``channels`` / ``height`` / ``width`` = 1 / 2 / 3 / 4.

Every other field is skipped. Packed and unpacked encodings of repeated fields are both read.

This module is the wire-format reader / writer (:func:`read_caffemodel`, :func:`parse_caffemodel`,
:func:`write_caffemodel`) and the Caffe key map: :func:`from_caffe` maps layers onto sknet's
state dict (pure: the model is built on the ``meta`` device only, to check against);
:func:`caffe_state` does the same for a file, :func:`caffe_model` builds the model once and
loads it. :func:`sknet.hub.load_caffe` gives ``(model, record)`` like every loader. The Caffe
input convention (BGR, mean 104/117/123 on 0-255 pixels, std 1) is
:func:`sknet.preprocess.caffe_preprocess`.

A caffemodel is a file from a stranger, so nothing is allocated on its say-so before it is
checked (see :func:`parse_caffemodel` and :func:`from_caffe`): varints of at most 10 bytes and
below 2**64, valid field numbers and wire types (groups refused), lengths within the bytes that
remain, blob shapes of positive dimensions whose product (a Python int, no wrap-around) equals
the number of values really present (packed or unpacked, counted before they are copied), finite
values, and a model whose classifier width (at most :data:`sknet._limits.MAX_CLASSES`) and
parameter count (at most :func:`sknet._limits.max_params`, raised with ``SKNET_MAX_PARAMS``) are
checked on the ``meta`` device before the real one is built. Limits: :data:`MAX_CAFFEMODEL_BYTES`
(Caffe's own, 2 GiB - 1), :data:`MAX_LAYERS`, :data:`MAX_BLOBS`, :data:`MAX_BLOB_AXES`. Every
refusal is a :class:`~sknet.errors.FileFormatError` (a ``ValueError``) with a one-line message
naming the file and what is wrong.

Layers are mapped by the names of the official prototxts (github.com/implus/SKNet), for stage
``s`` (2..5) and unit ``u`` (1..): ``conv{s}_{u}/1x1_reduce``, ``/3x3g32`` (branch 1),
``/3x3g32d2`` (branch 2, dilation 2), ``/B_fc1`` (Fuse, d x C), ``/B_fc2`` (Select, 2C x d),
``/1x1_increase``, ``/1x1_proj`` (shortcut), each followed by a ``.../bn`` ``CuDNNBatchNorm``
with four blobs [scale, bias, running mean, running variance] (eps 1e-5, no moving-average
scale factor); the stem ``conv1/7x7_s2`` (+ ``/bn``) and the ``classifier`` (weight, bias).

The official networks differ from sknet's default ``sknet50`` / ``sknet101`` in one place: the
stem's 3x3/2 max pool is Caffe's (no padding, output size rounded up), so converted models are
built with ``stem_pool="ceil"``. At 224x224 the official final 7x7 average pool is the global
average pool sknet uses; at other sizes sknet pools globally (as a fully convolutional
evaluation at 320x320 must).

Preprocessing: the release does not state it. SKNet's README says training follows SENet's
release, whose authors give BGR images in [0, 255] minus the means (104, 117, 123) and no std
(hujie-frank/SENet, issue 53). :data:`CAFFE_PREPROCESS` records that, marked unconfirmed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from sknet._files import atomic_save
from sknet._limits import MAX_CLASSES, bounded_int, check_param_count
from sknet.errors import ConfigError, FileFormatError, MissingFileError
from sknet.layers.sk import SKConv
from sknet.models import SKNetModel, create_model, get_entry
from sknet.models.resnext import ResNeXt
from sknet.preprocess import CAFFE_MEAN_255, caffe_preprocess

__all__ = [
    "CAFFE_NAMES",
    "CAFFE_OVERRIDES",
    "CAFFE_PREPROCESS",
    "MAX_BLOBS",
    "MAX_BLOB_AXES",
    "MAX_CAFFEMODEL_BYTES",
    "MAX_LAYERS",
    "CaffeBlob",
    "CaffeLayer",
    "caffe_blob_map",
    "caffe_metadata",
    "caffe_model",
    "caffe_state",
    "from_caffe",
    "guess_caffe_model",
    "parse_caffemodel",
    "read_caffemodel",
    "serialize_caffemodel",
    "to_caffe_layers",
    "write_caffemodel",
]

# official file name -> sknet name
CAFFE_NAMES: dict[str, str] = {"SKNet-50": "sknet50", "SKNet-101": "sknet101"}
# the config overrides that make sknet50 / sknet101 compute what the Caffe networks compute
CAFFE_OVERRIDES: dict[str, Any] = {"stem_pool": "ceil"}
# Input preparation of the Caffe models, in the fields of sknet.Preprocess: mean and std in
# [0, 1] units and in the network's channel order (BGR), i.e. (255 x - (104, 117, 123)) / 1.
CAFFE_PREPROCESS: dict[str, Any] = caffe_preprocess().to_dict()
# The same, as Caffe states it, with where it comes from.
CAFFE_PREPROCESS_RAW: dict[str, Any] = {
    "channel_order": "BGR",
    "pixel_range": [0, 255],
    "mean_values": [int(m) for m in CAFFE_MEAN_255],
    "scale": 1.0,
    "resize_shorter": 256,
    "crop": 224,
    "confirmed": False,
    "source": "not stated by the SKNet release; SENet's release (which SKNet's README says it "
    "follows for training) uses BGR means 104, 117, 123 and no std (hujie-frank/SENet #53)",
}

_BN_BLOBS = ("weight", "bias", "running_mean", "running_var")  # CuDNNBatchNorm blob order
_V1_TYPES = {4: "Convolution", 14: "InnerProduct", 17: "Pooling", 18: "ReLU", 25: "Eltwise"}


@dataclass
class CaffeBlob:
    """One weight blob: its shape as stored and its values (float32, C order)."""

    shape: tuple[int, ...]
    data: np.ndarray


@dataclass
class CaffeLayer:
    """A layer of a caffemodel: name, type (string; V1 enums mapped where known) and blobs."""

    name: str
    type: str
    blobs: list[CaffeBlob] = field(default_factory=list)


# ------------------------------------------------------------------------ protobuf wire format
#
# Limits on what a caffemodel can make the reader do. Every count below is checked before the
# memory it implies is allocated, so a file of N bytes costs O(N) time and at most a few times N
# bytes of memory, whatever its content.

#: Largest caffemodel read (bytes): ``INT_MAX``, the limit of Caffe's own reader
#: (``kProtoReadBytesLimit`` in caffe/src/caffe/util/io.cpp), so no file Caffe can load is refused.
#: The official SKNet-101 caffemodel is ~195 MB.
MAX_CAFFEMODEL_BYTES = 2**31 - 1
#: Most layers (with or without weights) in one file; SKNet-101 has 906.
MAX_LAYERS = 100_000
#: Most weight blobs in one file; SKNet-101 has 885.
MAX_BLOBS = 100_000
#: Most dimensions of a blob shape: Caffe's ``kMaxBlobAxes``.
MAX_BLOB_AXES = 32
#: Largest protobuf field number (2**29 - 1).
_MAX_FIELD_NUMBER = (1 << 29) - 1

_F32_KEY = 5 << 3 | 5  # BlobProto.data, one unpacked float (wire type 5): key byte 0x2D
_F64_KEY = 8 << 3 | 1  # BlobProto.double_data, one unpacked double (wire type 1): key byte 0x41
_WIRE_TYPES = {0: "varint", 1: "64-bit", 2: "length-delimited", 5: "32-bit"}


class _WireError(FileFormatError):
    """Bytes that are not a well-formed caffemodel protobuf."""


class _BlobError(FileFormatError):
    """A well-formed blob whose values cannot be weights (bad shape, no values, NaN/Inf)."""


def _show(text: str, limit: int = 60) -> str:
    """``repr`` of a name from the file, cut to ``limit`` characters (one line, bounded)."""
    return repr(text[:limit] + "...") if len(text) > limit else repr(text)


def _fmt_shape(dims: Sequence[int]) -> str:
    shown = ", ".join(str(d) for d in dims[:8])
    return f"[{shown}, ... {len(dims)} dims]" if len(dims) > 8 else f"[{shown}]"


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``pos``: ``(value, next position)``; at most 10 bytes and below 2**64."""
    if pos >= end:
        raise _WireError(f"truncated varint at byte {pos}")
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    start, result, shift = pos, 0, 0
    while True:
        if pos >= end:
            raise _WireError(f"truncated varint at byte {start}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift >= 70:
            raise _WireError(f"varint longer than 10 bytes at byte {start}")
    if result >> 64:
        raise _WireError(f"varint at byte {start} does not fit in 64 bits")
    return result, pos


def _field(buf: bytes, pos: int, end: int) -> tuple[int, int, Any, int]:
    """The field at ``pos``: ``(number, wire type, value, next position)``.

    The value is an int (varint), the start offset (32- and 64-bit fields) or ``(start, end)``
    (length-delimited). Field numbers must be in [1, 2**29 - 1]; groups (wire types 3 and 4,
    deprecated and never written by Caffe) and the invalid wire types 6 and 7 are refused; every
    value must end within ``end``.
    """
    at = pos
    key, pos = _varint(buf, pos, end)
    num, wt = key >> 3, key & 7
    if not 1 <= num <= _MAX_FIELD_NUMBER:
        raise _WireError(f"invalid field number {num} at byte {at}")
    if wt == 0:
        value, pos = _varint(buf, pos, end)
        return num, wt, value, pos
    if wt == 2:
        n, pos = _varint(buf, pos, end)
        if n > end - pos:
            raise _WireError(
                f"field {num} at byte {at} is {n} bytes long but only {end - pos} bytes remain "
                "in its message"
            )
        return num, wt, (pos, pos + n), pos + n
    if wt in (1, 5):
        size = 8 if wt == 1 else 4
        if size > end - pos:
            raise _WireError(f"truncated {size * 8}-bit field {num} at byte {at}")
        return num, wt, pos, pos + size
    if wt in (3, 4):
        raise _WireError(
            f"field {num} at byte {at} is a protobuf group (wire type {wt}), which caffemodels "
            "never contain"
        )
    raise _WireError(f"invalid wire type {wt} (field {num}) at byte {at}")


def _expect(num: int, wt: int, want: int, what: str, at: int) -> None:
    """Refuse a known field (``what``) with another wire type than ``want``."""
    if wt != want:
        raise _WireError(
            f"{what} (field {num}) at byte {at} has wire type {wt} ({_WIRE_TYPES.get(wt)}), "
            f"expected {want} ({_WIRE_TYPES[want]})"
        )


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _string(buf: bytes, span: tuple[int, int]) -> str:
    try:
        return bytes(buf[span[0] : span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise _WireError(f"invalid UTF-8 in a string at byte {span[0]}") from None


def _run_length(buf: bytes, pos: int, end: int, key: int, size: int) -> int:
    """How many complete ``size``-byte records from ``pos`` on start with the byte ``key``.

    A run of unpacked repeated floats (or doubles) is read this way in bulk, with numpy, in
    O(run length) time and no per-value Python objects; chunks double from 64 records so that
    short runs cost little.
    """
    n, chunk = 0, 64
    avail = (end - pos) // size
    while n < avail:
        k = min(chunk, avail - n)
        keys = np.ndarray((k,), dtype=np.uint8, buffer=buf, offset=pos + n * size, strides=(size,))
        other = np.flatnonzero(keys != key)
        if other.size:
            return n + int(other[0])
        n += k
        chunk *= 2
    return n


def _parse_shape(buf: bytes, span: tuple[int, int], label: str) -> list[int]:
    """The ``dim`` values of a ``BlobShape`` (packed or not), at most :data:`MAX_BLOB_AXES`."""
    dims: list[int] = []

    def add(value: int) -> None:
        if len(dims) >= MAX_BLOB_AXES:
            raise _WireError(f"{label} has a shape of more than {MAX_BLOB_AXES} dimensions")
        dims.append(_signed(value))

    pos, end = span
    while pos < end:
        at = pos
        num, wt, value, pos = _field(buf, pos, end)
        if num != 1:
            continue
        if wt == 2:
            p, q = value
            while p < q:
                v, p = _varint(buf, p, q)
                add(v)
        else:
            _expect(num, wt, 0, f"{label}: shape dim", at)
            add(value)
    return dims


@dataclass
class _BlobScan:
    """What a first pass over a ``BlobProto`` found, before anything is allocated."""

    floats: int = 0
    doubles: int = 0
    shape: list[int] | None = None
    legacy: list[int] = field(default_factory=lambda: [0, 0, 0, 0])


def _scan_blob(
    buf: bytes, span: tuple[int, int], label: str, out: np.ndarray | None = None
) -> _BlobScan:
    """One pass over a ``BlobProto``: count its float and double values (``out is None``), or
    copy them into ``out`` (the second pass, once the counts have been checked).

    Packed data must be a multiple of 4 (float) or 8 (double) bytes; runs of unpacked values are
    counted and copied in bulk (:func:`_run_length`); every value is counted against the bytes
    that hold it, so no count exceeds what the file can hold.
    """
    scan = _BlobScan()
    filled = 0
    pos, end = span
    while pos < end:
        first = buf[pos]
        if first in (_F32_KEY, _F64_KEY):  # a run of unpacked values, read in bulk
            size = 5 if first == _F32_KEY else 9
            n = _run_length(buf, pos, end, first, size)
            if n:
                if out is not None:
                    dtype = "<f4" if size == 5 else "<f8"
                    view = np.ndarray(
                        (n,), dtype=dtype, buffer=buf, offset=pos + 1, strides=(size,)
                    )
                    out[filled : filled + n] = view
                    filled += n
                if size == 5:
                    scan.floats += n
                else:
                    scan.doubles += n
                pos += n * size
                continue
        at = pos
        num, wt, value, pos = _field(buf, pos, end)
        if num in (5, 8):
            width, dtype = (4, "<f4") if num == 5 else (8, "<f8")
            what = f"{label}: {'data' if num == 5 else 'double_data'}"
            if wt == 2:
                a, b = value
                if (b - a) % width:
                    raise _WireError(
                        f"{what} at byte {at} is packed in {b - a} bytes, not a multiple of {width}"
                    )
                n = (b - a) // width
                if out is not None and n:
                    out[filled : filled + n] = np.frombuffer(buf, dtype=dtype, count=n, offset=a)
            else:
                _expect(num, wt, 5 if num == 5 else 1, what, at)
                n = 1
                if out is not None:
                    out[filled] = np.frombuffer(buf, dtype=dtype, count=1, offset=value)[0]
            filled += n if out is not None else 0
            if num == 5:
                scan.floats += n
            else:
                scan.doubles += n
        elif num == 7:
            _expect(num, wt, 2, f"{label}: shape", at)
            if scan.shape is not None:
                raise _WireError(f"{label} has two shape fields (byte {at})")
            scan.shape = _parse_shape(buf, value, label)
        elif num in (1, 2, 3, 4):  # legacy num / channels / height / width
            _expect(num, wt, 0, f"{label}: legacy dimension", at)
            scan.legacy[num - 1] = _signed(value)
    return scan


def _parse_blob(buf: bytes, span: tuple[int, int], label: str) -> CaffeBlob:
    """A ``BlobProto`` as a :class:`CaffeBlob`, after these checks, in this order:

    * the wire format (see :func:`_field`, :func:`_scan_blob`) and at most one kind of values
      (``data``, float, or ``double_data``, double);
    * the shape (``shape``, else the legacy 4-D dims, else the number of values) has at most
      :data:`MAX_BLOB_AXES` dimensions, each positive;
    * the blob holds at least one value and its shape's product, computed with Python ints
      (no wrap-around), equals the number of values present;

    only then are the values copied (``number of values x 4`` bytes, or ``x 8`` for doubles,
    which the file's own bytes bound), and they must all be finite once in float32.
    """
    scan = _scan_blob(buf, span, label)
    if scan.floats and scan.doubles:
        raise _WireError(f"{label} has both float and double data")
    n = scan.floats or scan.doubles
    if scan.shape is not None:
        shape = scan.shape
    elif any(scan.legacy):
        shape = scan.legacy
    else:
        shape = [n]
    if any(d <= 0 for d in shape):
        raise _BlobError(
            f"{label} has shape {_fmt_shape(shape)}: a dimension is not positive (weight blobs "
            "have positive dimensions)"
        )
    if n == 0:
        raise _BlobError(f"{label} has shape {_fmt_shape(shape)} but holds no values")
    count = math.prod(shape)
    if count != n:
        shown = str(count) if count < 10**30 else f"about 10^{len(str(count)) - 1}"
        raise _BlobError(f"{label} has shape {_fmt_shape(shape)} ({shown} values) but {n} values")
    values = np.empty(n, dtype=np.float32 if scan.floats else np.float64)
    _scan_blob(buf, span, label, values)
    if values.dtype != np.float32:
        with np.errstate(over="ignore", invalid="ignore"):
            values = values.astype(np.float32)
    _check_finite(values, label)
    return CaffeBlob(tuple(shape), values)


def _check_finite(values: np.ndarray, label: str) -> None:
    """Refuse NaN and infinite values (in float32), naming the blob."""
    bad = values.size - int(np.count_nonzero(np.isfinite(values)))
    if bad:
        raise _BlobError(
            f"{label} holds {bad} non-finite values (NaN or infinity, in float32) of "
            f"{values.size}; weights must be finite"
        )


class _Budget:
    """Counts the layers and blobs of one file against :data:`MAX_LAYERS` / :data:`MAX_BLOBS`."""

    def __init__(self) -> None:
        self.layers = 0
        self.blobs = 0

    def layer(self) -> None:
        self.layers += 1
        if self.layers > MAX_LAYERS:
            raise _WireError(f"more than {MAX_LAYERS} layers (SKNet-101 has 906)")

    def blob(self) -> None:
        self.blobs += 1
        if self.blobs > MAX_BLOBS:
            raise _WireError(f"more than {MAX_BLOBS} weight blobs (SKNet-101 has 885)")


def _parse_layer(buf: bytes, span: tuple[int, int], v1: bool, budget: _Budget) -> CaffeLayer:
    """A ``LayerParameter`` (or V1 ``V1LayerParameter``): name and type first, then the blobs,
    so that every error about a blob names its layer."""
    name_f, type_f, blobs_f = (4, 5, 6) if v1 else (1, 2, 7)
    name, kind, spans = "", "", []
    pos, end = span
    while pos < end:
        at = pos
        num, wt, value, pos = _field(buf, pos, end)
        if num == name_f:
            _expect(num, wt, 2, "layer name", at)
            name = _string(buf, value)
        elif num == type_f:
            _expect(num, wt, 0 if v1 else 2, "layer type", at)
            kind = _V1_TYPES.get(value, f"V1LayerType{value}") if v1 else _string(buf, value)
        elif num == blobs_f:
            _expect(num, wt, 2, "layer blob", at)
            budget.blob()
            spans.append(value)
    blobs = [
        _parse_blob(buf, s, f"layer {_show(name)} blob {i} (byte {s[0]})")
        for i, s in enumerate(spans)
    ]
    return CaffeLayer(name, kind, blobs)


def _parse(buf: bytes) -> tuple[str, list[CaffeLayer]]:
    """:func:`parse_caffemodel`, raising :class:`_WireError` / :class:`_BlobError`.

    Only ``NetParameter`` -> ``layer``/``layers`` -> ``blobs`` -> ``shape`` are descended into
    (a fixed nesting depth of four); every other field is checked for its wire format and
    length, then skipped without being parsed.
    """
    if len(buf) > MAX_CAFFEMODEL_BYTES:
        raise _WireError(
            f"{len(buf):,} bytes, more than the {MAX_CAFFEMODEL_BYTES:,} bytes Caffe itself reads"
        )
    budget = _Budget()
    name, layers = "", []
    pos, end = 0, len(buf)
    while pos < end:
        at = pos
        num, wt, value, pos = _field(buf, pos, end)
        if num == 1:
            _expect(num, wt, 2, "net name", at)
            name = _string(buf, value)
        elif num in (100, 2):
            _expect(num, wt, 2, "layer", at)
            budget.layer()
            layers.append(_parse_layer(buf, value, num == 2, budget))
    return name, layers


def parse_caffemodel(data: bytes | bytearray | memoryview) -> tuple[str, list[CaffeLayer]]:
    """Decode a serialised ``NetParameter``: ``(net name, layers)``; layers of both the current
    (``layer``) and the legacy V1 (``layers``) fields, in file order.

    Checked before anything is allocated on the file's say-so: varints (at most 10 bytes, below
    2**64), field numbers and wire types (groups refused), every length against the bytes that
    remain, at most :data:`MAX_LAYERS` layers, :data:`MAX_BLOBS` blobs and
    :data:`MAX_BLOB_AXES` dimensions per shape, and each blob's shape (positive dimensions whose
    product equals the number of float or double values present). Values are then read in bulk
    (packed or not) as float32 and must be finite.

    Raises :class:`~sknet.errors.FileFormatError` (a ``ValueError``) with a one-line message for
    bytes that are not a well-formed caffemodel.
    """
    buf = data if isinstance(data, bytes) else bytes(data)
    try:
        return _parse(buf)
    except _WireError as exc:
        raise FileFormatError(f"not a valid caffemodel (protobuf): {exc}") from None
    except _BlobError as exc:
        raise FileFormatError(f"caffemodel with unusable weights: {exc}") from None


def read_caffemodel(path: str | os.PathLike) -> tuple[str, list[CaffeLayer]]:
    """Read a ``.caffemodel`` file; see :func:`parse_caffemodel`.

    Files over :data:`MAX_CAFFEMODEL_BYTES` (Caffe's own limit) are refused before they are read.
    Raises ``FileNotFoundError`` for a missing file and
    :class:`~sknet.errors.FileFormatError` naming the file for one that is not a caffemodel.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no such file: {path}")
    limit = MAX_CAFFEMODEL_BYTES
    size = path.stat().st_size
    if size > limit:
        raise FileFormatError(
            f"{path} is {size:,} bytes, more than the {limit:,} bytes that Caffe itself reads "
            "(kProtoReadBytesLimit); it is not a caffemodel"
        )
    with open(path, "rb") as fh:
        data = fh.read(size + 1)  # read(n) allocates n bytes: the size stat() gave, not more
    if len(data) > size:
        raise FileFormatError(f"{path} grew while it was read; read it again once it is written")
    try:
        name, layers = _parse(data)
    except _WireError as exc:
        raise FileFormatError(f"{path} is not a valid caffemodel (protobuf): {exc}") from None
    except _BlobError as exc:
        raise FileFormatError(f"{path}: {exc}") from None
    if not any(layer.blobs for layer in layers):
        raise FileFormatError(f"{path} is not a caffemodel with weights: it holds no layer blobs")
    return name, layers


def _key(num: int, wt: int) -> bytes:
    return _enc_varint(num << 3 | wt)


def _enc_varint(v: int) -> bytes:
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(num: int, payload: bytes) -> bytes:
    return _key(num, 2) + _enc_varint(len(payload)) + payload


def serialize_caffemodel(layers: Sequence[CaffeLayer], name: str = "") -> bytes:
    """Encode layers as a ``NetParameter`` (current ``layer`` field, packed data, new-style
    blob shapes): the format Caffe itself writes."""
    parts = [_len_field(1, name.encode())] if name else []
    for layer in layers:
        body = [_len_field(1, layer.name.encode()), _len_field(2, layer.type.encode())]
        for blob in layer.blobs:
            dims = b"".join(_enc_varint(int(d)) for d in blob.shape)
            shape = _len_field(1, dims)
            values = np.ascontiguousarray(blob.data, dtype="<f4").tobytes()
            body.append(_len_field(7, _len_field(5, values) + _len_field(7, shape)))
        parts.append(_len_field(100, b"".join(body)))
    return b"".join(parts)


def write_caffemodel(layers: Sequence[CaffeLayer], path: str | os.PathLike, name: str = "") -> Path:
    """Write layers as a ``.caffemodel`` (atomically); see :func:`serialize_caffemodel`."""
    data = serialize_caffemodel(layers, name)
    return atomic_save(lambda tmp: Path(tmp).write_bytes(data), path)


# --------------------------------------------------------------------------- name mapping


def _branch_name(conv: torch.nn.Conv2d) -> str:
    k, d = conv.kernel_size[0], conv.dilation[0]
    return f"{k}x{k}g{conv.groups}" + (f"d{d}" if d > 1 else "")


def caffe_blob_map(model: torch.nn.Module) -> dict[tuple[str, int], str]:
    """``{(caffe layer name, blob index): state-dict key}`` for an sknet ResNeXt-family SK model
    (``sknet50``, ``sknet101``, ...) under the official release's layer names.

    Raises ``ValueError`` for models without the official release's structure (an ImageNet stem,
    SK units with BN'd branches and channel-wise attention).
    """
    if not isinstance(model, ResNeXt) or model.cfg.stem != "imagenet":
        raise ConfigError(
            "the official Caffe layout exists only for ImageNet ResNeXt-family models"
        )
    out: dict[tuple[str, int], str] = {}

    def conv(layer: str, key: str) -> None:
        out[(layer, 0)] = f"{key}.weight"

    def bn(layer: str, key: str) -> None:
        for i, blob in enumerate(_BN_BLOBS):
            out[(layer, i)] = f"{key}.{blob}"

    conv("conv1/7x7_s2", "stem.conv")
    bn("conv1/7x7_s2/bn", "stem.bn")
    for s, stage in enumerate(model.stages):
        blocks: list[Any] = list(cast(Any, stage))
        for u, block in enumerate(blocks):
            pre, key = f"conv{s + 2}_{u + 1}", f"stages.{s}.{u}"
            sk = block.conv2
            if not isinstance(sk, SKConv) or sk.attn is None or sk.attn.attention != "channel":
                raise ConfigError(
                    f"{key}: the official Caffe layout needs SK units with channel-wise "
                    "attention (block 'sk')"
                )
            if not isinstance(sk.attn.bn, torch.nn.BatchNorm2d):
                raise ConfigError(f"{key}: the official Caffe layout has BN in the attention")
            for name, part in (("1x1_reduce", "conv1"), ("1x1_increase", "conv3")):
                conv(f"{pre}/{name}", f"{key}.{part}.conv")
                bn(f"{pre}/{name}/bn", f"{key}.{part}.bn")
            for b, branch in enumerate(sk.branches):
                if not isinstance(branch.bn, torch.nn.BatchNorm2d):
                    raise ConfigError(f"{key}: the official Caffe layout has BN in every branch")
                name = _branch_name(cast(Any, branch).conv)
                conv(f"{pre}/{name}", f"{key}.conv2.branches.{b}.conv")
                bn(f"{pre}/{name}/bn", f"{key}.conv2.branches.{b}.bn")
            conv(f"{pre}/B_fc1", f"{key}.conv2.attn.fc_reduce")
            bn(f"{pre}/B_fc1/bn", f"{key}.conv2.attn.bn")
            conv(f"{pre}/B_fc2", f"{key}.conv2.attn.fc_select")
            if not isinstance(block.downsample, torch.nn.Identity):
                conv(f"{pre}/1x1_proj", f"{key}.downsample.conv")
                bn(f"{pre}/1x1_proj/bn", f"{key}.downsample.bn")
    if model.num_classes > 0:
        out[("classifier", 0)] = "head.fc.weight"
        out[("classifier", 1)] = "head.fc.bias"
    return out


def _squeeze(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(d) for d in shape if d != 1)


def guess_caffe_model(layers: Sequence[CaffeLayer]) -> str:
    """``sknet50`` or ``sknet101`` from the number of ``conv4_*`` units; else
    :class:`~sknet.errors.FileFormatError` (a ``ValueError``)."""
    names = {layer.name for layer in layers}
    if "conv2_1/B_fc1" not in names:
        raise FileFormatError(
            "not an SKNet caffemodel: it has no layer 'conv2_1/B_fc1' (the official release's "
            "first SK attention layer)"
        )
    units = sum(1 for n in names if n.startswith("conv4_") and n.endswith("/1x1_reduce"))
    by_units = {6: "sknet50", 23: "sknet101"}
    if units not in by_units:
        raise FileFormatError(
            f"an SKNet caffemodel with {units} conv4_x units fits neither SKNet-50 (6) nor "
            "SKNet-101 (23); pass the sknet model name"
        )
    return by_units[units]


def _at(where: object, msg: str) -> FileFormatError:
    return FileFormatError(f"{where}: {msg}" if where is not None else msg)


def _blob_values(blob: CaffeBlob, want: tuple[int, ...], label: str, where: object) -> torch.Tensor:
    """The values of ``blob`` as a float32 tensor of shape ``want``: only floating-point data
    of exactly ``prod(want)`` finite values is accepted (blobs built by hand, not parsed, are
    checked here too)."""
    data = np.asarray(blob.data)
    if not np.issubdtype(data.dtype, np.floating):
        raise _at(where, f"{label} holds {data.dtype} values; weights must be floating-point")
    if data.size != math.prod(want):
        raise _at(
            where,
            f"{label} holds {data.size} values, its shape {list(want)} needs {math.prod(want)}",
        )
    values = np.ascontiguousarray(data, dtype=np.float32).reshape(want)
    try:
        _check_finite(values, label)
    except _BlobError as exc:
        raise _at(where, str(exc)) from None
    return torch.from_numpy(values)


def _num_classes(by_name: dict[str, CaffeLayer], where: object) -> int:
    """The classifier's width (0 without one), in [1, :data:`~sknet._limits.MAX_CLASSES`]."""
    classifier = by_name.get("classifier")
    if classifier is None or not classifier.blobs:
        return 0
    shape = classifier.blobs[0].shape
    if not shape:
        raise _at(where, "the classifier's weight blob has no dimensions")
    return bounded_int(
        shape[0],
        "the number of classes (classifier blob 0, dimension 0)",
        lo=1,
        hi=MAX_CLASSES,
        where=where,
    )


def _convert(
    layers: Sequence[CaffeLayer], name: str | None, where: object = None, build: bool = True
) -> tuple[str, dict[str, torch.Tensor], SKNetModel | None]:
    """:func:`from_caffe`, and the model (eval mode) loaded with the state dict.

    Nothing of the file's size is allocated before it is checked: the classifier width is
    bounded by :data:`~sknet._limits.MAX_CLASSES`, the model is first built on the ``meta``
    device (no memory), its parameter count checked against
    :func:`~sknet._limits.max_params` (``SKNET_MAX_PARAMS``), every blob compared with the
    tensor it fills; only then is the model given real storage (``to_empty``) and every tensor
    loaded from the blobs. ``where`` (the file) prefixes errors.
    """
    try:
        name = name or guess_caffe_model(layers)
    except FileFormatError as exc:
        raise _at(where, str(exc)) from None
    get_entry(name)
    by_name: dict[str, CaffeLayer] = {}
    for layer in layers:
        if layer.blobs:
            if layer.name in by_name:
                raise _at(where, f"layer {_show(layer.name)} appears twice with weights")
            by_name[layer.name] = layer
    num_classes = _num_classes(by_name, where)
    with torch.device("meta"):
        meta = create_model(name, num_classes=num_classes, **CAFFE_OVERRIDES)
    assert isinstance(meta, SKNetModel)  # no features_only
    check_param_count(
        sum(p.numel() for p in meta.parameters()), where if where is not None else "caffemodel"
    )
    target = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    mapping = caffe_blob_map(meta)
    expected: dict[str, int] = {}
    for layer_name, idx in mapping:
        expected[layer_name] = max(expected.get(layer_name, 0), idx + 1)
    missing = sorted(n for n in expected if n not in by_name)
    unexpected = sorted(_show(n) for n in by_name if n not in expected)
    wrong_count = sorted(
        f"{n} ({len(by_name[n].blobs)} blobs, expected {k})"
        for n, k in expected.items()
        if n in by_name and len(by_name[n].blobs) != k
    )
    if missing or unexpected or wrong_count:
        raise _at(
            where,
            f"caffemodel does not fit {name}: {len(missing)} layers missing (e.g. "
            f"{missing[:3]}), {len(unexpected)} unexpected layers with weights (e.g. "
            f"[{', '.join(unexpected[:3])}]), {len(wrong_count)} with another number of blobs "
            f"(e.g. {wrong_count[:3]})",
        )
    bad = []
    for (layer_name, idx), key in mapping.items():
        blob = by_name[layer_name].blobs[idx]
        if _squeeze(blob.shape) != _squeeze(target[key]):
            bad.append(f"{layer_name}[{idx}] {_fmt_shape(blob.shape)} vs {key} {list(target[key])}")
    if bad:
        raise _at(
            where,
            f"caffemodel does not fit {name}: {len(bad)} blobs of another shape (e.g. {bad[:3]})",
        )
    out: dict[str, torch.Tensor] = {}
    for (layer_name, idx), key in mapping.items():
        label = f"layer {_show(layer_name)} blob {idx} ({key})"
        out[key] = _blob_values(by_name[layer_name].blobs[idx], target[key], label, where)
    for key in target:
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros((), dtype=torch.long)
    left = sorted(set(target) - set(out))
    if left:  # pragma: no cover - caffe_blob_map covers every tensor of the supported models
        raise _at(where, f"no caffe blob for {len(left)} tensors of {name} (e.g. {left[:3]})")
    if not build:
        return name, out, None
    if set(dict(meta.named_buffers())) <= set(target):
        model = meta.to_empty(device="cpu")  # every tensor is filled from the file just below
    else:  # pragma: no cover - a buffer outside the state dict needs the model's own init
        built = create_model(name, num_classes=num_classes, **CAFFE_OVERRIDES)
        assert isinstance(built, SKNetModel)
        model = built
    model.load_state_dict(out, strict=True)
    model.model_overrides = dict(CAFFE_OVERRIDES)  # type: ignore[assignment]
    return name, out, model.eval()


def from_caffe(layers: Sequence[CaffeLayer], name: str | None = None) -> dict[str, torch.Tensor]:
    """Map the layers of an official SKNet caffemodel onto sknet's state dict (a pure key map:
    the model is built on the ``meta`` device only, to check against).

    The state dict is for ``create_model(name, **CAFFE_OVERRIDES)`` (``name`` guessed from the
    layers when None, :func:`guess_caffe_model`). Every blob must map to exactly one tensor of
    the right shape, hold floating-point finite values, and every tensor must be filled (BN's
    ``num_batches_tracked``, which Caffe does not have, is set to 0); the model's size is checked
    on the ``meta`` device first (see :func:`_convert`). Otherwise
    :class:`~sknet.errors.FileFormatError` (a ``ValueError``) names the layers.
    """
    return _convert(layers, name, build=False)[1]


def caffe_state(
    path: str | os.PathLike, name: str | None = None
) -> tuple[str, dict[str, torch.Tensor]]:
    """``(sknet name, state dict)`` of a caffemodel file: :func:`read_caffemodel`, then the
    checks and key map of :func:`from_caffe` (errors name the file); no model is built."""
    path = Path(path)
    _, layers = read_caffemodel(path)
    name, state, _ = _convert(layers, name, where=path, build=False)
    return name, state


def caffe_model(
    source: str | os.PathLike | Sequence[CaffeLayer], name: str | None = None
) -> SKNetModel:
    """The sknet model of an official SKNet caffemodel (a path or parsed layers), built once
    and loaded (eval mode); it carries ``model_overrides`` (:data:`CAFFE_OVERRIDES`).

    A path is read with :func:`read_caffemodel` and converted with the checks of
    :func:`from_caffe`. Raises :class:`~sknet.errors.FileFormatError` (a ``ValueError``) with a
    one-line message naming the file for a corrupt, hostile or foreign caffemodel.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        _, layers = read_caffemodel(path)
        model = _convert(layers, name, where=path)[2]
    else:
        model = _convert(source, name)[2]
    assert model is not None  # built: build=True
    return model


def caffe_metadata(src: str | os.PathLike) -> dict[str, str]:
    """String metadata for weights converted from a caffemodel: provenance and preprocessing."""
    return {
        "converted_from": f"caffe:{Path(src).name}",
        "sknet_preprocess": json.dumps(CAFFE_PREPROCESS),
        "caffe_preprocess": json.dumps(CAFFE_PREPROCESS_RAW),
    }


def to_caffe_layers(model: torch.nn.Module) -> list[CaffeLayer]:
    """The weights of an sknet SK model as official-release Caffe layers (the inverse of
    :func:`from_caffe`): convolutions, ``CuDNNBatchNorm`` blobs of shape (1, C, 1, 1) and the
    ``InnerProduct`` classifier, in the order of :func:`caffe_blob_map`."""
    state = model.state_dict()
    layers: dict[str, CaffeLayer] = {}
    for (layer_name, _idx), key in caffe_blob_map(model).items():
        if layer_name == "classifier":
            kind = "InnerProduct"
        elif layer_name.endswith("/bn"):
            kind = "CuDNNBatchNorm"
        else:
            kind = "Convolution"
        layer = layers.setdefault(layer_name, CaffeLayer(layer_name, kind))
        t = state[key].detach().to(torch.float32).cpu().numpy()
        shape = (1, t.size, 1, 1) if kind == "CuDNNBatchNorm" else t.shape
        layer.blobs.append(CaffeBlob(tuple(shape), t.reshape(shape)))
    return list(layers.values())

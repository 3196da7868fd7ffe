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
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sknet.layers.sk import SKConv
from sknet.models import SKNetModel, create_model, get_entry

__all__ = [
    "CAFFE_NAMES",
    "CAFFE_OVERRIDES",
    "CAFFE_PREPROCESS",
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

# official file name -> sknet name
CAFFE_NAMES: dict[str, str] = {"SKNet-50": "sknet50", "SKNet-101": "sknet101"}
# the config overrides that make sknet50 / sknet101 compute what the Caffe networks compute
CAFFE_OVERRIDES: dict[str, Any] = {"stem_pool": "ceil"}
# Input preparation of the Caffe models, in the fields of sknet.loading.Preprocess: mean and std
# in [0, 1] units and in the network's channel order (BGR), i.e. (255 x - (104, 117, 123)) / 1.
CAFFE_PREPROCESS: dict[str, Any] = {
    "input_size": 224,
    "resize": 256,
    "interpolation": "bilinear",
    "mean": [104 / 255, 117 / 255, 123 / 255],
    "std": [1 / 255, 1 / 255, 1 / 255],
    "channel_order": "BGR",
}
# The same, as Caffe states it, with where it comes from.
CAFFE_PREPROCESS_RAW: dict[str, Any] = {
    "channel_order": "BGR",
    "pixel_range": [0, 255],
    "mean_values": [104, 117, 123],
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


class _WireError(ValueError):
    pass


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _WireError(f"truncated varint at byte {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _WireError(f"varint longer than 10 bytes at byte {pos}")


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, Any]]:
    """``(field number, wire type, value)``; a length-delimited value is ``(start, end)``."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise _WireError(f"field number 0 at byte {pos}")
        if wt == 0:
            value, pos = _varint(buf, pos, end)
        elif wt == 1:
            if pos + 8 > end:
                raise _WireError(f"truncated 64-bit field at byte {pos}")
            value, pos = buf[pos : pos + 8], pos + 8
        elif wt == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise _WireError(f"field {num} runs {pos + n - end} bytes past its message end")
            value, pos = (pos, pos + n), pos + n
        elif wt == 5:
            if pos + 4 > end:
                raise _WireError(f"truncated 32-bit field at byte {pos}")
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise _WireError(f"unsupported wire type {wt} (field {num}) at byte {pos}")
        yield num, wt, value


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _packed_varints(buf: bytes, span: tuple[int, int]) -> list[int]:
    out, pos = [], span[0]
    while pos < span[1]:
        v, pos = _varint(buf, pos, span[1])
        out.append(_signed(v))
    return out


def _string(buf: bytes, span: tuple[int, int]) -> str:
    try:
        return buf[span[0] : span[1]].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _WireError(f"invalid UTF-8 in a string at byte {span[0]}") from exc


def _parse_shape(buf: bytes, span: tuple[int, int]) -> list[int]:
    dims: list[int] = []
    for num, wt, value in _fields(buf, *span):
        if num == 1 and wt == 2:
            dims.extend(_packed_varints(buf, value))
        elif num == 1 and wt == 0:
            dims.append(_signed(value))
    return dims


def _parse_blob(buf: bytes, span: tuple[int, int]) -> CaffeBlob:
    shape: list[int] | None = None
    legacy = [0, 0, 0, 0]
    chunks: list[np.ndarray] = []
    doubles: list[np.ndarray] = []
    for num, wt, value in _fields(buf, *span):
        if num == 7 and wt == 2:
            shape = _parse_shape(buf, value)
        elif num == 5 and wt == 2:
            a, b = value
            if (b - a) % 4:
                raise _WireError(f"packed float data of {b - a} bytes at byte {a}")
            chunks.append(np.frombuffer(buf, dtype="<f4", count=(b - a) // 4, offset=a))
        elif num == 5 and wt == 5:
            chunks.append(np.frombuffer(value, dtype="<f4"))
        elif num == 8 and wt == 2:
            a, b = value
            if (b - a) % 8:
                raise _WireError(f"packed double data of {b - a} bytes at byte {a}")
            doubles.append(np.frombuffer(buf, dtype="<f8", count=(b - a) // 8, offset=a))
        elif num == 8 and wt == 1:
            doubles.append(np.frombuffer(value, dtype="<f8"))
        elif num in (1, 2, 3, 4) and wt == 0:
            legacy[num - 1] = _signed(value)
    if chunks and doubles:
        raise _WireError(f"blob at byte {span[0]} has both float and double data")
    parts = chunks or doubles
    data = (np.concatenate(parts) if len(parts) > 1 else parts[0]) if parts else np.zeros(0)
    if shape is None:
        shape = legacy if any(legacy) else [int(data.size)]
    if any(d < 0 for d in shape):
        raise _WireError(f"negative blob dimension {shape} at byte {span[0]}")
    if int(np.prod(shape, dtype=np.int64)) != data.size:
        raise _WireError(
            f"blob at byte {span[0]} has shape {shape} ({int(np.prod(shape))} values) but "
            f"{data.size} values"
        )
    return CaffeBlob(tuple(int(d) for d in shape), data.astype(np.float32))


def _parse_layer(buf: bytes, span: tuple[int, int], v1: bool) -> CaffeLayer:
    name_f, type_f, blobs_f = (4, 5, 6) if v1 else (1, 2, 7)
    name, kind, blobs = "", "", []
    for num, wt, value in _fields(buf, *span):
        if num == name_f and wt == 2:
            name = _string(buf, value)
        elif num == type_f and wt == 2 and not v1:
            kind = _string(buf, value)
        elif num == type_f and wt == 0 and v1:
            kind = _V1_TYPES.get(value, f"V1LayerType{value}")
        elif num == blobs_f and wt == 2:
            blobs.append(_parse_blob(buf, value))
    return CaffeLayer(name, kind, blobs)


def parse_caffemodel(data: bytes) -> tuple[str, list[CaffeLayer]]:
    """Decode a serialised ``NetParameter``: ``(net name, layers)``; layers of both the current
    (``layer``) and the legacy V1 (``layers``) fields, in file order.

    Raises ``ValueError`` for bytes that are not a well-formed protobuf message.
    """
    name, layers = "", []
    for num, wt, value in _fields(data, 0, len(data)):
        if num == 1 and wt == 2:
            name = _string(data, value)
        elif num == 100 and wt == 2:
            layers.append(_parse_layer(data, value, v1=False))
        elif num == 2 and wt == 2:
            layers.append(_parse_layer(data, value, v1=True))
    return name, layers


def read_caffemodel(path: str | os.PathLike) -> tuple[str, list[CaffeLayer]]:
    """Read a ``.caffemodel`` file; see :func:`parse_caffemodel`.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file for one
    that is not a caffemodel.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    data = path.read_bytes()
    try:
        name, layers = parse_caffemodel(data)
    except _WireError as exc:
        raise ValueError(f"{path} is not a valid caffemodel (protobuf): {exc}") from None
    if not any(layer.blobs for layer in layers):
        raise ValueError(f"{path} is not a caffemodel with weights: it holds no layer blobs")
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
    from sknet.weights import atomic_save

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
    from sknet.models.resnext import ResNeXt

    if not isinstance(model, ResNeXt) or model.cfg.stem != "imagenet":
        raise ValueError("the official Caffe layout exists only for ImageNet ResNeXt-family models")
    out: dict[tuple[str, int], str] = {}

    def conv(layer: str, key: str) -> None:
        out[(layer, 0)] = f"{key}.weight"

    def bn(layer: str, key: str) -> None:
        for i, blob in enumerate(_BN_BLOBS):
            out[(layer, i)] = f"{key}.{blob}"

    conv("conv1/7x7_s2", "stem.conv")
    bn("conv1/7x7_s2/bn", "stem.bn")
    for s, stage in enumerate(model.stages):
        for u, block in enumerate(stage):
            pre, key = f"conv{s + 2}_{u + 1}", f"stages.{s}.{u}"
            sk = block.conv2
            if not isinstance(sk, SKConv) or sk.attn is None or sk.attn.attention != "channel":
                raise ValueError(
                    f"{key}: the official Caffe layout needs SK units with channel-wise "
                    "attention (block 'sk')"
                )
            if not isinstance(sk.attn.bn, torch.nn.BatchNorm2d):
                raise ValueError(f"{key}: the official Caffe layout has BN in the attention")
            for name, part in (("1x1_reduce", "conv1"), ("1x1_increase", "conv3")):
                conv(f"{pre}/{name}", f"{key}.{part}.conv")
                bn(f"{pre}/{name}/bn", f"{key}.{part}.bn")
            for b, branch in enumerate(sk.branches):
                if not isinstance(branch.bn, torch.nn.BatchNorm2d):
                    raise ValueError(f"{key}: the official Caffe layout has BN in every branch")
                name = _branch_name(branch.conv)
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
    """``sknet50`` or ``sknet101`` from the number of ``conv4_*`` units; ``ValueError`` else."""
    names = {layer.name for layer in layers}
    if "conv2_1/B_fc1" not in names:
        raise ValueError(
            "not an SKNet caffemodel: it has no layer 'conv2_1/B_fc1' (the official release's "
            "first SK attention layer)"
        )
    units = sum(1 for n in names if n.startswith("conv4_") and n.endswith("/1x1_reduce"))
    by_units = {6: "sknet50", 23: "sknet101"}
    if units not in by_units:
        raise ValueError(
            f"an SKNet caffemodel with {units} conv4_x units fits neither SKNet-50 (6) nor "
            "SKNet-101 (23); pass the sknet model name"
        )
    return by_units[units]


def _convert(
    layers: Sequence[CaffeLayer], name: str | None
) -> tuple[str, dict[str, torch.Tensor], SKNetModel]:
    """:func:`from_caffe`, and the model (eval mode) loaded with the state dict."""
    name = name or guess_caffe_model(layers)
    get_entry(name)
    by_name: dict[str, CaffeLayer] = {}
    for layer in layers:
        if layer.blobs:
            if layer.name in by_name:
                raise ValueError(f"layer {layer.name!r} appears twice with weights")
            by_name[layer.name] = layer
    classifier = by_name.get("classifier")
    num_classes = classifier.blobs[0].shape[0] if classifier and classifier.blobs else 0
    model = create_model(name, num_classes=int(num_classes), **CAFFE_OVERRIDES)
    target = model.state_dict()
    mapping = caffe_blob_map(model)
    expected = {}
    for layer_name, idx in mapping:
        expected[layer_name] = max(expected.get(layer_name, 0), idx + 1)
    missing = sorted(n for n in expected if n not in by_name)
    unexpected = sorted(n for n in by_name if n not in expected)
    wrong_count = sorted(
        f"{n} ({len(by_name[n].blobs)} blobs, expected {k})"
        for n, k in expected.items()
        if n in by_name and len(by_name[n].blobs) != k
    )
    if missing or unexpected or wrong_count:
        raise ValueError(
            f"caffemodel does not fit {name}: {len(missing)} layers missing (e.g. "
            f"{missing[:3]}), {len(unexpected)} unexpected layers with weights (e.g. "
            f"{unexpected[:3]}), {len(wrong_count)} with another number of blobs (e.g. "
            f"{wrong_count[:3]})"
        )
    out: dict[str, torch.Tensor] = {}
    bad = []
    for (layer_name, idx), key in mapping.items():
        blob = by_name[layer_name].blobs[idx]
        want = tuple(target[key].shape)
        if _squeeze(blob.shape) != _squeeze(want):
            bad.append(f"{layer_name}[{idx}] {list(blob.shape)} vs {key} {list(want)}")
            continue
        out[key] = torch.from_numpy(blob.data.reshape(want))
    if bad:
        raise ValueError(
            f"caffemodel does not fit {name}: {len(bad)} blobs of another shape (e.g. {bad[:3]})"
        )
    for key, value in target.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros((), dtype=value.dtype)
    left = sorted(set(target) - set(out))
    if left:  # pragma: no cover - caffe_blob_map covers every tensor of the supported models
        raise ValueError(f"no caffe blob for {len(left)} tensors of {name} (e.g. {left[:3]})")
    model.load_state_dict(out, strict=True)
    model.model_overrides = dict(CAFFE_OVERRIDES)  # type: ignore[assignment]
    return name, out, model.eval()


def from_caffe(
    layers: Sequence[CaffeLayer], name: str | None = None
) -> tuple[str, dict[str, torch.Tensor]]:
    """Map the layers of an official SKNet caffemodel onto sknet's state dict.

    Returns ``(sknet name, state dict)`` for ``create_model(name, **CAFFE_OVERRIDES)``. Every
    blob must map to exactly one tensor of the right shape and every tensor must be filled
    (BN's ``num_batches_tracked``, which Caffe does not have, is set to 0); otherwise
    ``ValueError`` names the layers.
    """
    name, state, _ = _convert(layers, name)
    return name, state


def load_caffe(
    source: str | os.PathLike | Sequence[CaffeLayer], name: str | None = None
) -> SKNetModel:
    """Build the sknet model of an official SKNet caffemodel (a path or parsed layers) and load
    its weights (eval mode). The model carries ``model_overrides`` (:data:`CAFFE_OVERRIDES`).

    Raises ``ValueError`` naming the file for a corrupt or foreign caffemodel.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        _, layers = read_caffemodel(path)
        try:
            return _convert(layers, name)[2]
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return _convert(source, name)[2]


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

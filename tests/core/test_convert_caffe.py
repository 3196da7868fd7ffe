"""The official Caffe SKNet release: caffemodel reading, layer mapping and equivalence.

The real caffemodels cannot be downloaded here, so:

* ``data/sknet_caffe_nets.json`` holds the official prototxts' inference graphs (layer names,
  types, connections, parameters, weight-blob shapes), made once by
  ``data/make_caffe_fixture.py`` from implus/SKNet's ``sknet50.prototxt`` / ``sknet101.prototxt``;
* caffemodels are written in the real protobuf wire format by Google's ``protobuf`` runtime,
  from message classes built here from the field numbers of Caffe's ``caffe.proto`` (an encoder
  independent of sknet's reader);
* a small interpreter of Caffe's layer semantics runs the official graph on those weights, and
  the converted sknet model must give the same logits.
"""

from __future__ import annotations

import itertools
import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import sknet
from sknet.cli.main import main
from sknet.convert_caffe import (
    CAFFE_OVERRIDES,
    CAFFE_PREPROCESS,
    CaffeBlob,
    CaffeLayer,
    caffe_blob_map,
    from_caffe,
    load_caffe,
    parse_caffemodel,
    read_caffemodel,
    to_caffe_layers,
    write_caffemodel,
)
from sknet.weights import load_weights, read_metadata

NETS = json.loads((Path(__file__).parent / "data" / "sknet_caffe_nets.json").read_text())


# ------------------------------------------------------- Caffe messages via Google's protobuf


@cache
def _caffe_pb(packed: bool = True) -> dict[str, Any]:
    """Message classes for the subset of caffe.proto that holds weights (field numbers from
    BVLC Caffe's caffe.proto); ``packed=False`` encodes repeated numbers one by one."""
    pb = pytest.importorskip("google.protobuf")
    del pb
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F_ = descriptor_pb2.FieldDescriptorProto
    pkg = f"caffe_subset_{int(packed)}"
    fdp = descriptor_pb2.FileDescriptorProto(name=f"{pkg}.proto", package=pkg, syntax="proto2")

    def message(name: str, *fields: tuple[str, int, int, int, str | None]) -> None:
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = f".{pkg}.{type_name}"
            numeric = ftype in (F_.TYPE_INT64, F_.TYPE_FLOAT, F_.TYPE_DOUBLE)
            if label == F_.LABEL_REPEATED and numeric:
                f.options.packed = packed

    rep, opt = F_.LABEL_REPEATED, F_.LABEL_OPTIONAL
    message("BlobShape", ("dim", 1, F_.TYPE_INT64, rep, None))
    message(
        "BlobProto",
        ("shape", 7, F_.TYPE_MESSAGE, opt, "BlobShape"),
        ("data", 5, F_.TYPE_FLOAT, rep, None),
        ("double_data", 8, F_.TYPE_DOUBLE, rep, None),
        ("num", 1, F_.TYPE_INT32, opt, None),
        ("channels", 2, F_.TYPE_INT32, opt, None),
        ("height", 3, F_.TYPE_INT32, opt, None),
        ("width", 4, F_.TYPE_INT32, opt, None),
    )
    message(
        "LayerParameter",
        ("name", 1, F_.TYPE_STRING, opt, None),
        ("type", 2, F_.TYPE_STRING, opt, None),
        ("bottom", 3, F_.TYPE_STRING, rep, None),
        ("top", 4, F_.TYPE_STRING, rep, None),
        ("blobs", 7, F_.TYPE_MESSAGE, rep, "BlobProto"),
    )
    message(  # the enum 'type' = 5 is declared as int32: the same varint on the wire
        "V1LayerParameter",
        ("bottom", 2, F_.TYPE_STRING, rep, None),
        ("top", 3, F_.TYPE_STRING, rep, None),
        ("name", 4, F_.TYPE_STRING, opt, None),
        ("type", 5, F_.TYPE_INT32, opt, None),
        ("blobs", 6, F_.TYPE_MESSAGE, rep, "BlobProto"),
    )
    message(
        "NetParameter",
        ("name", 1, F_.TYPE_STRING, opt, None),
        ("layers", 2, F_.TYPE_MESSAGE, rep, "V1LayerParameter"),
        ("layer", 100, F_.TYPE_MESSAGE, rep, "LayerParameter"),
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{pkg}.{m.name}"))
        for m in fdp.message_type
    }


def _protobuf_caffemodel(net: str, blobs: dict[str, list[np.ndarray]], upto: int) -> bytes:
    """Serialise with Google's protobuf runtime a NetParameter holding the official graph's
    first ``upto`` layers and their blobs, the way Caffe writes a trained model (bottoms and
    tops kept, new-style shapes, packed data)."""
    pb = _caffe_pb()
    msg = pb["NetParameter"](name=NETS[net]["name"])
    for layer in NETS[net]["layers"][:upto]:
        lp = msg.layer.add(name=layer["name"], type=layer["type"])
        lp.bottom.extend(layer["bottom"])
        lp.top.extend(layer["top"])
        for arr in blobs.get(layer["name"], []):
            bp = lp.blobs.add()
            bp.shape.dim.extend(arr.shape)
            bp.data.extend(arr.ravel().tolist())
    return msg.SerializeToString()


@cache
def _official_blobs(net: str) -> dict[str, list[np.ndarray]]:
    """Random weights of the official shapes: He-scaled convolutions, BN with non-trivial
    statistics (a mapping mistake in any blob shows in the logits). The last BN of each residual
    branch gets a small scale, as a trained network has, so activations stay O(10) through
    the depth (with scales ~1 they reach ~1e4 and fp32 rounding is amplified to ~1e-3)."""
    rng = np.random.default_rng(0)
    out: dict[str, list[np.ndarray]] = {}
    for layer in NETS[net]["layers"]:
        shapes = [tuple(s) for s in layer.get("blobs", [])]
        if not shapes:
            continue
        if layer["type"] == "CuDNNBatchNorm":
            lo_hi = [(0.5, 1.5), (-0.2, 0.2), (-0.2, 0.2), (0.5, 2.0)]  # scale bias mean var
            if layer["name"].endswith("/1x1_increase/bn"):
                lo_hi[0] = (0.1, 0.3)
            arrs = [_uniform(rng, lo, hi, s) for (lo, hi), s in zip(lo_hi, shapes)]
        else:
            fan_in = math.prod(shapes[0][1:])
            arrs = [rng.standard_normal(shapes[0], dtype=np.float32)]
            arrs[0] *= np.float32(math.sqrt(2.0 / fan_in))
            arrs += [_uniform(rng, -0.1, 0.1, s) for s in shapes[1:]]
        out[layer["name"]] = arrs
    return out


def _uniform(rng: np.random.Generator, lo: float, hi: float, shape: tuple[int, ...]) -> np.ndarray:
    return rng.random(shape, dtype=np.float32) * np.float32(hi - lo) + np.float32(lo)


# ------------------------------------------------------------ Caffe's layers, interpreted


def _caffe_pool(x: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    if p["global_pooling"]:
        assert p["pool"] == "AVE"
        return x.mean(dim=(2, 3), keepdim=True)
    k, s, pad = p["kernel_size"], p["stride"], p["pad"]
    h = x.shape[-1]
    assert x.shape[-2] == h
    pooled = math.ceil((h + 2 * pad - k) / s) + 1  # Caffe rounds the output size up
    if pad and (pooled - 1) * s >= h + pad:
        pooled -= 1
    if p["pool"] == "MAX":  # windows past the input are clipped: pad with -inf to cover them
        right = (pooled - 1) * s + k - h - pad
        x = F.pad(x, (pad, right, pad, right), value=-math.inf)
        return F.max_pool2d(x, k, s)
    assert p["pool"] == "AVE" and pad == 0 and (pooled - 1) * s + k == h  # no clipped window
    return F.avg_pool2d(x, k, s)


def _caffe_reshape(x: torch.Tensor, dims: list[int]) -> torch.Tensor:
    shape = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    if -1 in shape:
        known = math.prod(d for d in shape if d != -1)
        shape[shape.index(-1)] = x.numel() // known
    return x.reshape(shape)


def _run_caffe_graph(
    net: str, blobs: dict[str, list[np.ndarray]], x: torch.Tensor, global_last_pool: bool = False
) -> torch.Tensor:
    """Forward pass of the official graph with Caffe's layer semantics (inference mode).

    The official last pool is a 7x7 average, the global average at 224x224 only;
    ``global_last_pool`` makes it global at any input size (what sknet does)."""
    env: dict[str, torch.Tensor] = {}
    for layer in NETS[net]["layers"]:
        kind, p = layer["type"], layer["param"]
        ins = [env[b] for b in layer["bottom"]]
        w = [torch.from_numpy(a) for a in blobs.get(layer["name"], [])]
        if kind == "Input":
            outs = [x]
        elif kind == "Convolution":
            bias = w[1] if p["bias_term"] else None
            outs = [F.conv2d(ins[0], w[0], bias, p["stride"], p["pad"], p["dilation"], p["group"])]
        elif kind == "CuDNNBatchNorm":  # blobs: scale, bias, running mean, running variance
            scale, bias, mean, var = w
            outs = [(ins[0] - mean) / torch.sqrt(var + p["eps"]) * scale + bias]
        elif kind == "ReLU":
            outs = [ins[0].clamp_min(0)]
        elif kind == "Pooling":
            if global_last_pool and layer["top"] == [NETS[net]["layers"][-1]["bottom"][0]]:
                p = {**p, "global_pooling": True}
            outs = [_caffe_pool(ins[0], p)]
        elif kind == "Eltwise":
            assert p["operation"] == "SUM" and "coeff" not in p
            outs = [sum(ins[1:], ins[0])]
        elif kind == "Reshape":
            outs = [_caffe_reshape(ins[0], p["dim"])]
        elif kind == "Softmax":
            outs = [ins[0].softmax(dim=p["axis"])]
        elif kind == "Slice":
            points = [0, *p["slice_point"], ins[0].shape[p["axis"]]]
            outs = [ins[0].narrow(p["axis"], a, b - a) for a, b in itertools.pairwise(points)]
        elif kind == "Scale":  # two bottoms: x * s, s covering x's axes from 'axis' on
            xin, s = ins
            trailing = xin.dim() - p["axis"] - s.dim()
            outs = [xin * s.reshape(*s.shape, *([1] * trailing))]
        elif kind == "Axpy":  # SENet's layer: a * x + y, a of shape (N, C, 1, 1)
            a, xin, y = ins
            outs = [a * xin + y]
        elif kind == "InnerProduct":
            outs = [F.linear(ins[0].flatten(1), w[0], w[1] if p["bias_term"] else None)]
        else:  # pragma: no cover - the fixture holds no other types
            raise AssertionError(f"unexpected layer type {kind}")
        for top, out in zip(layer["top"], outs):
            env[top] = out
    return env["classifier"]


# -------------------------------------------------------------------------------- tests


def _fixture_blobs(net: str) -> dict[tuple[str, int], tuple[int, ...]]:
    return {
        (layer["name"], i): tuple(shape)
        for layer in NETS[net]["layers"]
        for i, shape in enumerate(layer.get("blobs", []))
    }


def _official_layers(net: str) -> list[CaffeLayer]:
    """The official graph's layers that hold weights, with :func:`_official_blobs`."""
    blobs = _official_blobs(net)
    return [
        CaffeLayer(la["name"], la["type"], [CaffeBlob(a.shape, a) for a in blobs[la["name"]]])
        for la in NETS[net]["layers"]
        if la["name"] in blobs
    ]


def _spatial_size_before_last_pool(net: str, size: int) -> int:
    """Walk the official graph with Caffe's output-size rules for an input of ``size``."""
    hw: dict[str, int] = {}
    layers = NETS[net]["layers"]
    for layer in layers[:-2]:  # the last two: the last pool and the classifier
        kind, p = layer["type"], layer["param"]
        # the largest input: Axpy's first bottom, for one, is the (N, C, 1, 1) attention
        h = max((hw[b] for b in layer["bottom"]), default=size)
        if kind == "Convolution":
            k_eff = p["dilation"] * (p["kernel_size"] - 1) + 1
            h = (h + 2 * p["pad"] - k_eff) // p["stride"] + 1
        elif kind == "Pooling":
            h = 1 if p["global_pooling"] else math.ceil((h - p["kernel_size"]) / p["stride"]) + 1
        for top in layer["top"]:
            hw[top] = h
    return hw[layers[-2]["bottom"][0]]


@pytest.mark.parametrize("net", ["sknet50", "sknet101"])
def test_every_official_blob_maps_to_exactly_one_tensor(net: str) -> None:
    official = _fixture_blobs(net)
    model = sknet.create_model(net, **CAFFE_OVERRIDES)
    state = model.state_dict()
    mapping = caffe_blob_map(model)
    assert set(mapping) == set(official)  # every official blob, and nothing else
    assert len(set(mapping.values())) == len(mapping)  # no tensor filled twice
    assert set(mapping.values()) == {k for k in state if not k.endswith("num_batches_tracked")}
    for blob, key in mapping.items():
        ours, theirs = tuple(state[key].shape), official[blob]
        if len(theirs) == 4 and len(ours) == 1:  # CuDNNBatchNorm: (1, C, 1, 1) per blob
            assert theirs == (1, ours[0], 1, 1), (blob, key)
        else:
            assert ours == theirs, (blob, key)
    # the official parameter counts (README: 27.5M / 48.9M): BN mean/var are not parameters
    n_official = sum(
        math.prod(s) for (layer, i), s in official.items() if not (layer.endswith("/bn") and i > 1)
    )
    assert n_official == sum(p.numel() for p in model.parameters())
    assert n_official == {"sknet50": 27_479_784, "sknet101": 48_686_760}[net]
    # Caffe's stem max pool (no padding, rounding up) is what sknet builds for these weights
    pool = next(layer for layer in NETS[net]["layers"] if layer["name"] == "pool1/3x3_s2")
    assert pool["param"] == {"pool": "MAX", "global_pooling": False, "kernel_size": 3,
                             "stride": 2, "pad": 0}  # fmt: skip
    assert model.stem.pool.padding == 0 and model.stem.pool.ceil_mode
    # the last pool, 7x7 average with stride 1, covers the whole map at 224x224: the global
    # average pool sknet's head uses
    last = NETS[net]["layers"][-2]
    assert last["type"] == "Pooling" and last["param"]["pool"] == "AVE"
    assert last["param"]["kernel_size"] == _spatial_size_before_last_pool(net, 224) == 7


def test_protobuf_written_caffemodel_is_read_exactly(tmp_path: Path) -> None:
    """Google's protobuf runtime writes the official SKNet-50 layers up to conv2_2 (the whole
    file would take ~5 s to encode); sknet reads back every name, type, shape and value."""
    blobs = _official_blobs("sknet50")
    upto = next(i for i, la in enumerate(NETS["sknet50"]["layers"]) if la["name"] == "conv2_2")
    path = tmp_path / "part.caffemodel"
    path.write_bytes(_protobuf_caffemodel("sknet50", blobs, upto))
    name, layers = read_caffemodel(path)
    assert name == "sknet50_basic"
    assert [la.name for la in layers] == [la["name"] for la in NETS["sknet50"]["layers"][:upto]]
    assert [la.type for la in layers] == [la["type"] for la in NETS["sknet50"]["layers"][:upto]]
    with_blobs = [la for la in layers if la.blobs]
    assert [la.name for la in with_blobs] == [
        la["name"] for la in NETS["sknet50"]["layers"][:upto] if "blobs" in la
    ]
    assert len(with_blobs) == 26  # the stem, conv2_1 (with its projection) and conv2_2
    for la in with_blobs:
        assert len(la.blobs) == len(blobs[la.name])
        for got, want in zip(la.blobs, blobs[la.name]):
            assert got.shape == want.shape and got.data.dtype == np.float32
            np.testing.assert_array_equal(got.data.reshape(want.shape), want)


@pytest.mark.parametrize("net", ["sknet50", "sknet101"])
def test_converted_model_computes_the_official_graph(net: str, tmp_path: Path) -> None:
    """The official graph run by the interpreter above and the converted sknet model agree.

    64x64 inputs keep this fast; the official 7x7 last pool is then taken as global, which it
    is at 224x224 (checked above)."""
    path = write_caffemodel(_official_layers(net), tmp_path / f"{net}.caffemodel", name=net)
    model = load_caffe(path)
    assert model.model_name == net and model.model_overrides == CAFFE_OVERRIDES
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = _run_caffe_graph(net, _official_blobs(net), x, global_last_pool=True)
        out = model(x)
    assert ref.shape == out.shape == (2, 1000)
    assert ref.abs().max().item() > 5  # logits of a size where a wrong tensor would show
    assert (ref - out).abs().max().item() <= 1e-4
    if net == "sknet50":  # sknet's default stem pool (padding 1) is another network
        default = sknet.create_model(net)
        default.load_state_dict(model.state_dict())
        with torch.no_grad():
            assert (default.eval()(x) - ref).abs().max().item() > 0.1


@pytest.fixture(scope="module")
def sknet101_random() -> torch.nn.Module:
    torch.manual_seed(0)
    model = sknet.create_model("sknet101", **CAFFE_OVERRIDES)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_round_trip_through_a_caffemodel_is_exact(
    sknet101_random: torch.nn.Module, tmp_path: Path
) -> None:
    path = write_caffemodel(to_caffe_layers(sknet101_random), tmp_path / "SKNet-101.caffemodel")
    # the file sknet writes is what Google's protobuf runtime reads as a Caffe NetParameter
    msg = _caffe_pb()["NetParameter"].FromString(path.read_bytes())
    written = {(lp.name, i): tuple(b.shape.dim) for lp in msg.layer for i, b in enumerate(lp.blobs)}
    assert written == _fixture_blobs("sknet101")
    fc = next(lp for lp in msg.layer if lp.name == "classifier")
    np.testing.assert_array_equal(
        np.asarray(fc.blobs[1].data, dtype=np.float32), sknet101_random.head.fc.bias.detach()
    )
    model = load_caffe(path)
    ref_state, state = sknet101_random.state_dict(), model.state_dict()
    assert set(ref_state) == set(state)
    assert all(torch.equal(ref_state[k], state[k]) for k in state)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(sknet101_random(x), model(x))


def test_cli_convert_caffe_records_preprocessing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    ref = sknet.create_model("sknet50", **CAFFE_OVERRIDES).eval()
    src = write_caffemodel(to_caffe_layers(ref), tmp_path / "SKNet-50.caffemodel")
    dst = tmp_path / "sknet50_caffe.safetensors"
    assert main(["convert", "--from", "caffe", str(src), str(dst)]) == 0
    assert "sknet50" in capsys.readouterr().out
    meta = read_metadata(dst)
    assert meta["sknet_model"] == "sknet50"
    assert meta["converted_from"] == "caffe:SKNet-50.caffemodel"
    assert json.loads(meta["model_overrides"]) == {"stem_pool": "ceil"}
    assert json.loads(meta["sknet_preprocess"]) == CAFFE_PREPROCESS
    raw = json.loads(meta["caffe_preprocess"])
    assert raw["channel_order"] == "BGR" and raw["mean_values"] == [104, 117, 123]
    assert raw["scale"] == 1.0 and raw["confirmed"] is False
    model = load_weights(dst)
    assert model.stem.pool.ceil_mode
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ref(x), model(x))
    # without --from, a .caffemodel goes to the Caffe converter
    foreign = tmp_path / "other.caffemodel"
    foreign.write_bytes(b"")
    assert main(["convert", str(foreign), str(tmp_path / "o.safetensors")]) == 1
    assert "other.caffemodel is not a caffemodel with weights" in capsys.readouterr().err


def test_legacy_encodings_are_read(tmp_path: Path) -> None:
    """V1 ``layers``, unpacked repeated numbers, 4-D legacy dims and double data."""
    pb = _caffe_pb(packed=False)
    msg = pb["NetParameter"](name="legacy")
    v1 = msg.layers.add(name="conv1", type=4)  # V1 CONVOLUTION
    v1.blobs.add(num=2, channels=3, height=1, width=1, data=[1, 2, 3, 4, 5, 6])
    new = msg.layer.add(name="fc", type="InnerProduct")
    new.blobs.add(double_data=[0.5, -1.5]).shape.dim.extend([1, 2])
    name, layers = parse_caffemodel(msg.SerializeToString())
    assert name == "legacy" and [(la.name, la.type) for la in layers] == [
        ("conv1", "Convolution"),
        ("fc", "InnerProduct"),
    ]
    assert layers[0].blobs[0].shape == (2, 3, 1, 1)
    np.testing.assert_array_equal(layers[0].blobs[0].data, np.arange(1, 7, dtype=np.float32))
    assert layers[1].blobs[0].shape == (1, 2)
    np.testing.assert_array_equal(layers[1].blobs[0].data, [0.5, -1.5])
    assert layers[1].blobs[0].data.dtype == np.float32


def test_corrupt_or_foreign_caffemodels_are_refused_naming_the_file(
    sknet101_random: torch.nn.Module, tmp_path: Path
) -> None:
    good = write_caffemodel(to_caffe_layers(sknet101_random), tmp_path / "good.caffemodel")
    data = good.read_bytes()
    cases = {
        "truncated.caffemodel": (data[: len(data) // 2], "not a valid caffemodel"),
        "garbage.caffemodel": (b"\xff" * 64, "not a valid caffemodel"),
        "empty.caffemodel": (b"", "holds no layer blobs"),
        "prototxt.caffemodel": (b'name: "sknet50"\nlayer { name: "x" }\n', "not a valid"),
    }
    for fname, (content, match) in cases.items():
        path = tmp_path / fname
        path.write_bytes(content)
        with pytest.raises(ValueError, match=f"{fname}.*{match}"):
            load_caffe(path)
    pb = _caffe_pb()
    other = pb["NetParameter"](name="alexnet")
    other.layer.add(name="conv1", type="Convolution").blobs.add(data=[1.0]).shape.dim.append(1)
    (tmp_path / "alexnet.caffemodel").write_bytes(other.SerializeToString())
    with pytest.raises(ValueError, match="alexnet.caffemodel.*not an SKNet caffemodel"):
        load_caffe(tmp_path / "alexnet.caffemodel")
    bad_blob = pb["NetParameter"]()
    bad_blob.layer.add(name="x").blobs.add(data=[1.0, 2.0]).shape.dim.append(3)
    with pytest.raises(ValueError, match=r"shape \[3\] \(3 values\) but 2 values"):
        parse_caffemodel(bad_blob.SerializeToString())
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_caffemodel(tmp_path / "missing.caffemodel")


def test_mismatched_layers_are_named(sknet101_random: torch.nn.Module) -> None:
    layers = to_caffe_layers(sknet101_random)
    dropped = [la for la in layers if la.name != "conv3_2/B_fc2"]
    with pytest.raises(ValueError, match=r"1 layers missing \(e.g. \['conv3_2/B_fc2'\]\)"):
        from_caffe(dropped, "sknet101")
    with pytest.raises(ValueError, match="sknet50.*missing.*unexpected"):
        from_caffe(layers, "sknet50")  # a SKNet-101 file is not a SKNet-50
    # SKNet-101's d = 16 in conv3_x: the same names with SKNet-50's shapes are refused
    layers50 = to_caffe_layers(sknet.create_model("sknet50", **CAFFE_OVERRIDES))
    fc1 = next(la for la in layers50 if la.name == "conv3_1/B_fc1")
    fc1.blobs[0].data = np.zeros((16, 256, 1, 1), np.float32)
    fc1.blobs[0].shape = (16, 256, 1, 1)
    with pytest.raises(ValueError, match=r"conv3_1/B_fc1\[0\] \[16, 256, 1, 1\] vs"):
        from_caffe(layers50, "sknet50")

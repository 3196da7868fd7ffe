"""One-off generator of ``sknet_caffe_nets.json`` from the official SKNet prototxts.

Not a test and not run by the test suite (the tests read only the JSON it writes). Run it by
hand with the two prototxts of the official release (github.com/implus/SKNet):

    python tests/core/data/make_caffe_fixture.py sknet50.prototxt sknet101.prototxt

For every layer that the inference graph needs it records the name, type, bottoms, tops, the
parameters that define its computation, and the shapes of its weight blobs, computed the way
Caffe allocates them: Convolution (num_output, C_in / group, k, k) (+ bias (num_output,) when
``bias_term``, which defaults to true), InnerProduct (num_output, C_in) (+ bias), and the
authors' CuDNNBatchNorm four blobs of shape (1, C, 1, 1) (scale, bias, running mean, running
variance). Loss and accuracy layers are left out.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([{}:])|([^\s{}:"#]+))')


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip():
                raise ValueError(f"cannot tokenise at {text[pos : pos + 30]!r}")
            break
        pos = m.end()
        if m.group(1):
            continue
        out.append(m.group(2) or m.group(3) or m.group(4))
    return out


def _value(tok: str) -> Any:
    if tok.startswith('"'):
        return tok[1:-1]
    if tok in ("true", "false"):
        return tok == "true"
    try:
        return int(tok)
    except ValueError:
        try:
            return float(tok)
        except ValueError:
            return tok  # enum name


def _parse(tokens: list[str], i: int = 0) -> tuple[dict[str, list[Any]], int]:
    """Text-format message -> {field: [values]} (every field repeated, in order)."""
    msg: dict[str, list[Any]] = {}
    while i < len(tokens) and tokens[i] != "}":
        key = tokens[i]
        i += 1
        if tokens[i] == ":":
            i += 1
        if tokens[i] == "{":
            sub, i = _parse(tokens, i + 1)
            msg.setdefault(key, []).append(sub)
            i += 1  # '}'
        else:
            msg.setdefault(key, []).append(_value(tokens[i]))
            i += 1
    return msg, i


def _one(msg: dict[str, list[Any]], key: str, default: Any = None) -> Any:
    vals = msg.get(key)
    return vals[0] if vals else default


def _net(path: Path) -> dict[str, Any]:
    root, _ = _parse(_tokens(path.read_text()))
    channels: dict[str, int] = {}
    layers = []
    for layer in root["layer"]:
        name, kind = _one(layer, "name"), _one(layer, "type")
        bottom, top = layer.get("bottom", []), layer.get("top", [])
        param: dict[str, Any] = {}
        blobs: list[list[int]] = []
        if kind == "Input":
            shape = _one(layer, "input_param")["shape"][0]["dim"]
            channels[top[0]] = int(shape[1])
            param = {"shape": [int(d) for d in shape[1:]]}
        elif kind == "Convolution":
            p = _one(layer, "convolution_param")
            cin, cout = channels[bottom[0]], int(_one(p, "num_output"))
            k, g = int(_one(p, "kernel_size")), int(_one(p, "group", 1))
            param = {
                "num_output": cout,
                "kernel_size": k,
                "stride": int(_one(p, "stride", 1)),
                "pad": int(_one(p, "pad", 0)),
                "dilation": int(_one(p, "dilation", 1)),
                "group": g,
                "bias_term": bool(_one(p, "bias_term", True)),
            }
            blobs = [[cout, cin // g, k, k]] + ([[cout]] if param["bias_term"] else [])
            channels[top[0]] = cout
        elif kind == "CuDNNBatchNorm":
            p = _one(layer, "batch_norm_param", {})
            c = channels[bottom[0]]
            param = {"eps": float(_one(p, "eps", 1e-5))}
            blobs = [[1, c, 1, 1]] * 4
            channels[top[0]] = c
        elif kind == "InnerProduct":
            p = _one(layer, "inner_product_param")
            cout = int(_one(p, "num_output"))
            param = {"num_output": cout, "bias_term": bool(_one(p, "bias_term", True))}
            blobs = [[cout, channels[bottom[0]]]] + ([[cout]] if param["bias_term"] else [])
            channels[top[0]] = cout
        elif kind == "Pooling":
            p = _one(layer, "pooling_param")
            param = {
                "pool": _one(p, "pool", "MAX"),
                "global_pooling": bool(_one(p, "global_pooling", False)),
                "kernel_size": int(_one(p, "kernel_size", 0)),
                "stride": int(_one(p, "stride", 1)),
                "pad": int(_one(p, "pad", 0)),
            }
            channels[top[0]] = channels[bottom[0]]
        elif kind == "Eltwise":
            p = _one(layer, "eltwise_param", {})
            param = {"operation": _one(p, "operation", "SUM")}
            if "coeff" in p:
                param["coeff"] = p["coeff"]
            channels[top[0]] = channels[bottom[0]]
        elif kind == "Reshape":
            param = {"dim": [int(d) for d in _one(layer, "reshape_param")["shape"][0]["dim"]]}
        elif kind == "Softmax":
            param = {"axis": int(_one(_one(layer, "softmax_param", {}), "axis", 1))}
        elif kind == "Slice":
            p = _one(layer, "slice_param")
            param = {"axis": int(_one(p, "axis", 1)), "slice_point": p.get("slice_point", [])}
        elif kind == "Scale":
            p = _one(layer, "scale_param", {})
            if bool(_one(p, "bias_term", False)) or len(bottom) != 2:
                raise ValueError(f"{name}: only two-bottom Scale layers without bias expected")
            param = {"axis": int(_one(p, "axis", 1))}
            channels[top[0]] = channels[bottom[0]]
        elif kind == "Axpy":
            channels[top[0]] = channels[bottom[1]]
        elif kind == "ReLU":
            channels[top[0]] = channels[bottom[0]]
        elif kind in ("SoftmaxWithLoss", "Accuracy"):
            continue
        else:
            raise ValueError(f"{name}: unexpected layer type {kind}")
        layers.append(
            {"name": name, "type": kind, "bottom": bottom, "top": top, "param": param}
            | ({"blobs": blobs} if blobs else {})
        )
    return {"name": _one(root, "name"), "layers": layers}


def main(argv: list[str]) -> None:
    nets = {}
    for arg in argv:
        path = Path(arg)
        nets[path.stem] = _net(path)
    out = Path(__file__).with_name("sknet_caffe_nets.json")
    lines = ["{"]
    for i, (key, net) in enumerate(nets.items()):
        lines.append(f'"{key}": {{"name": {json.dumps(net["name"])}, "layers": [')
        body = [json.dumps(layer, separators=(",", ":")) for layer in net["layers"]]
        lines.append(",\n".join(body))
        lines.append("]}" + ("," if i < len(nets) - 1 else ""))
    lines.append("}")
    out.write_text("\n".join(lines) + "\n")
    counts = ", ".join(f"{k}: {len(v['layers'])} layers" for k, v in nets.items())
    print(f"wrote {out} ({counts})")


if __name__ == "__main__":
    main(sys.argv[1:])

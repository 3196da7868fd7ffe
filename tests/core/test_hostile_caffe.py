"""Hostile caffemodels (issue 15, finding 2): the Caffe reader cannot be turned against a user.

Every refusal is a :class:`sknet.errors.FileFormatError` with a one-line message, raised before
anything of the size the file claims is allocated. The cases that made the old reader allocate
gigabytes (a classifier blob of shape ``[3000000, 0]``, a model width from the file, millions of
unpacked floats) run in a child process whose address space is capped at what it had after its
imports plus :data:`CHILD_AS_BUDGET`: a 24.6 GB allocation there fails at once instead of
taking the machine down, and the child reports its peak resident memory (``ru_maxrss``).

Files are written in the protobuf wire format by the small encoder below, independent of
sknet's reader (and of its writer, except for the valid fuzz base written by
:func:`sknet.convert_caffe.serialize_caffemodel`).
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sknet
from sknet.convert_caffe import (
    CAFFE_OVERRIDES,
    CaffeBlob,
    CaffeLayer,
    from_caffe,
    load_caffe,
    parse_caffemodel,
    read_caffemodel,
    serialize_caffemodel,
    to_caffe_layers,
)
from sknet.errors import FileFormatError
from sknet.hub import caffe as convert_caffe

ROOT = Path(__file__).resolve().parents[2]
linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="caps memory with RLIMIT_AS and /proc/self/status"
)

#: Address space (bytes) a child may add to what it holds after importing torch and sknet.
CHILD_AS_BUDGET = 1 << 30
#: Peak resident memory (MiB) a child may add while refusing the small hostile files.
SMALL_RSS_MIB = 100
#: Peak resident memory (MiB) for parsing the 20 MB file of 4M unpacked floats (the old reader
#: took 740 MiB): the file's bytes, the 16 MB of float32 values and numpy temporaries.
UNPACKED_RSS_MIB = 96
#: Peak resident memory (MiB) a child may add over the whole fuzz run.
FUZZ_RSS_MIB = 200
#: Seconds one file may take to be refused (generous: the machine runs other tests too).
CASE_SECONDS = 3.0
#: Seconds the whole fuzz run (all cases, imports excluded) may take.
FUZZ_SECONDS = 15.0


# ------------------------------------------------------------------- a small protobuf encoder


def varint(v: int) -> bytes:
    """Base-128 varint of ``v``; negative as 64-bit two's complement; values of 2**64 and more
    (which no valid file holds) are encoded too, as hostile files do."""
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        if not v:
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def key(num: int, wt: int) -> bytes:
    return varint(num << 3 | wt)


def ld(num: int, payload: bytes, length: int | None = None) -> bytes:
    """A length-delimited field; ``length`` overrides the true length (a lying prefix)."""
    return key(num, 2) + varint(len(payload) if length is None else length) + payload


def shape(*dims: int) -> bytes:
    """``BlobProto.shape`` with packed ``dim`` values."""
    return ld(7, ld(1, b"".join(varint(d) for d in dims)))


def packed(values: Sequence[float] | np.ndarray, double: bool = False) -> bytes:
    """``BlobProto.data`` (or ``double_data``), packed."""
    return ld(8 if double else 5, np.asarray(values, "<f8" if double else "<f4").tobytes())


def unpacked(values: Sequence[float] | np.ndarray, double: bool = False) -> bytes:
    """``BlobProto.data`` (or ``double_data``), one field per value (built in bulk)."""
    arr = np.asarray(values, "<f8" if double else "<f4")
    rec = np.empty((arr.size, 1 + arr.itemsize), np.uint8)
    rec[:, 0] = 8 << 3 | 1 if double else 5 << 3 | 5
    rec[:, 1:] = arr.view(np.uint8).reshape(arr.size, arr.itemsize)
    return rec.tobytes()


def blob(*parts: bytes) -> bytes:
    """``LayerParameter.blobs``."""
    return ld(7, b"".join(parts))


def layer(name: str, *blobs: bytes, kind: str = "Convolution") -> bytes:
    """``NetParameter.layer`` (a current ``LayerParameter``)."""
    return ld(100, ld(1, name.encode()) + ld(2, kind.encode()) + b"".join(blobs))


def sknet50_skeleton() -> bytes:
    """The layers that make :func:`guess_caffe_model` take a file for SKNet-50, one float each."""
    names = ["conv2_1/B_fc1"] + [f"conv4_{u}/1x1_reduce" for u in range(1, 7)]
    return b"".join(layer(n, blob(shape(1), packed([0.5]))) for n in names)


def classifier(*parts: bytes) -> bytes:
    return layer("classifier", blob(*parts), kind="InnerProduct")


def hostile_classifier_file(path: Path, dims: Sequence[int] = (3_000_000, 0)) -> Path:
    """The reported file: an SKNet-50 look-alike whose classifier blob claims ``dims`` and holds
    no values (the old reader built a 3,000,000-class model: 24.6 GB)."""
    path.write_bytes(sknet50_skeleton() + classifier(shape(*dims)))
    return path


# ------------------------------------------------------------ child process with capped memory

_CHILD = r'''
"""Run jobs [route, path] on caffemodels with the address space capped; print one JSON line."""
import contextlib
import io
import json
import resource
import sys
import time

import torch

torch.set_num_threads(1)
import sknet
from sknet.cli.main import main
from sknet.convert_caffe import load_caffe, parse_caffemodel, read_caffemodel
from sknet.errors import FileFormatError


def vm_size():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def summary(layers):
    blobs = [b for la in layers for b in la.blobs]
    return {"shapes": [list(b.shape) for b in blobs],
            "sums": [float(b.data.sum(dtype="float64")) for b in blobs]}


def run(route, path):
    if route == "parse":
        with open(path, "rb") as fh:
            data = fh.read()
        return summary(parse_caffemodel(data)[1])
    if route == "read":
        return summary(read_caffemodel(path)[1])
    if route == "load_caffe":
        return type(load_caffe(path)).__name__
    if route == "load":
        return type(sknet.load("sknet50.caffe_in1k", checkpoint_path=path)[0]).__name__
    if route == "create_model":
        model = sknet.create_model("sknet50", pretrained="caffe_in1k", checkpoint_path=path)
        return type(model).__name__
    if route == "cli":
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["convert", "--from", "caffe", path, path + ".safetensors"])
        return {"rc": rc, "stderr": err.getvalue(), "stdout": out.getvalue()}
    raise ValueError(route)


budget, jobs_file = int(sys.argv[1]), sys.argv[2]
with open(jobs_file) as fh:
    jobs = json.load(fh)
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
cap = vm_size() + budget
if hard != resource.RLIM_INFINITY:
    cap = min(cap, hard)
resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
with torch.device("meta"):  # warm up lazy imports and caches: cases are timed alone
    sknet.create_model("sknet50")
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
results = []
for route, path in jobs:
    t0 = time.perf_counter()
    value = error = None
    message, refused = "", False
    try:
        value = run(route, path)
    except Exception as exc:  # MemoryError, RuntimeError (allocation refused), OverflowError...
        error, message, refused = type(exc).__name__, str(exc), isinstance(exc, FileFormatError)
    results.append({"route": route, "path": path, "value": value, "error": error,
                    "message": message, "refused": refused,
                    "seconds": time.perf_counter() - t0})
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"results": results, "rss_growth_mib": (rss - rss0) / 1024,
                  "rss_before_mib": rss0 / 1024, "rss_peak_mib": rss / 1024}))
'''


def run_child(tmp_path: Path, jobs: Sequence[tuple[str, Path]], timeout: float = 180) -> dict:
    """Run ``jobs`` in a child (address space capped, see :data:`CHILD_AS_BUDGET`)."""
    script = tmp_path / "hostile_child.py"
    script.write_text(_CHILD)
    jobs_file = tmp_path / "hostile_jobs.json"
    jobs_file.write_text(json.dumps([[route, str(path)] for route, path in jobs]))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    for var in ("SKNET_MAX_PARAMS", "SKNET_DEBUG"):
        env.pop(var, None)
    proc = subprocess.run(
        [sys.executable, str(script), str(CHILD_AS_BUDGET), str(jobs_file)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_one_line(message: str) -> None:
    assert message and "\n" not in message and "\r" not in message, repr(message[:500])
    assert len(message) < 1000, message[:500]


def assert_refused(result: dict, *fragments: str) -> None:
    """A child result that is a one-line FileFormatError containing ``fragments``, in time."""
    assert result["refused"], result
    assert_one_line(result["message"])
    for fragment in fragments:
        assert fragment in result["message"], (fragment, result["message"])
    assert result["seconds"] < CASE_SECONDS, result


def refused(fn: Callable[[], Any], *fragments: str) -> str:
    """Call ``fn`` in this process; it must raise a one-line FileFormatError with ``fragments``."""
    with pytest.raises(FileFormatError) as info:
        fn()
    message = str(info.value)
    assert_one_line(message)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# ------------------------------------------------------------------ the three reported findings


@linux_only
def test_zero_size_classifier_is_refused_before_any_allocation(tmp_path: Path) -> None:
    """Finding 1: a classifier blob of shape [3000000, 0] (or [2**62, 4], whose product wraps to
    0 in int64) and no values passed the size check, then sknet built a 24.6 GB classifier."""
    reported = hostile_classifier_file(tmp_path / "zero.caffemodel")
    assert len(reported.read_bytes()) < 400  # the report's file was 205 bytes
    wraps = hostile_classifier_file(tmp_path / "wraps.caffemodel", (2**62, 4))
    wraps32 = hostile_classifier_file(tmp_path / "wraps32.caffemodel", (2**32, 2**32))
    jobs = [(route, f) for f in (reported, wraps, wraps32) for route in ("read", "load_caffe")]
    jobs.append(("parse", reported))
    out = run_child(tmp_path, jobs)
    for result in out["results"]:
        name = Path(result["path"]).name
        where = name if result["route"] != "parse" else "caffemodel with unusable weights"
        if name == "zero.caffemodel":
            what = "has shape [3000000, 0]: a dimension is not positive"
        else:  # the product is not taken modulo 2**64: no values for a shape that needs some
            what = "but holds no values"
        assert_refused(result, where, "layer 'classifier' blob 0", what)
    assert out["rss_growth_mib"] < SMALL_RSS_MIB, out["rss_growth_mib"]


def test_oversized_varints_are_one_line_errors() -> None:
    """Finding 2: a varint of 2**69 gave an OverflowError traceback. Varints are at most 10
    bytes and below 2**64, wherever they are (key, length, shape dim, legacy dim, value)."""
    too_big = varint(2**69)
    eleven = b"\xff" * 10 + b"\x01"
    reported = ld(100, ld(7, ld(7, key(1, 0) + too_big)))  # an unpacked shape dim of 2**69
    cases = {
        "reported": reported,
        "packed dim": layer("a", blob(ld(7, ld(1, too_big)), packed([1.0]))),
        "legacy dim": layer("a", blob(key(1, 0) + too_big, packed([1.0]))),
        "key": too_big + b"\x00",
        "length": key(100, 2) + too_big,
        "unknown field": key(3, 0) + too_big,
        "2**64": key(3, 0) + varint(2**64),
        "11 bytes": key(3, 0) + eleven,
        "truncated": key(3, 0) + b"\xff\xff",
    }
    for name, data in cases.items():
        message = refused(partial(parse_caffemodel, data), "varint")
        assert "not a valid caffemodel" in message, name
    # the largest valid varint is read (an unknown field, skipped) and the rest of the file too
    ok = key(3, 0) + varint(2**64 - 1) + layer("a", blob(shape(1), packed([2.0])))
    assert parse_caffemodel(ok)[1][0].blobs[0].shape == (1,)


@linux_only
def test_unpacked_floats_are_counted_against_the_bytes(tmp_path: Path) -> None:
    """Finding 3: 4M unpacked float fields in a 20 MB file took 0.74 GB (a numpy array per
    value). They are now counted first, refused if the shape disagrees, and read in bulk."""
    n = 4_000_000
    values = np.arange(n, dtype=np.float32) / n
    body = unpacked(values)
    good = tmp_path / "unpacked.caffemodel"
    good.write_bytes(layer("fc", blob(shape(n), body)))
    assert good.stat().st_size > 20_000_000
    more = tmp_path / "claims_more.caffemodel"
    more.write_bytes(layer("fc", blob(shape(n + 1), body)))
    wraps = tmp_path / "wraps.caffemodel"
    wraps.write_bytes(layer("fc", blob(shape(2**62, 4), body)))
    out = run_child(tmp_path, [("parse", good), ("read", more), ("read", wraps)])
    parsed, fewer, wrapped = out["results"]
    assert parsed["error"] is None, parsed
    assert parsed["value"]["shapes"] == [[n]]
    assert parsed["value"]["sums"][0] == pytest.approx(float(values.sum(dtype=np.float64)))
    assert parsed["seconds"] < CASE_SECONDS
    assert_refused(fewer, "claims_more.caffemodel", f"shape [{n + 1}] ({n + 1} values) but {n}")
    assert_refused(wrapped, "wraps.caffemodel", f"{2**64} values) but {n} values")
    assert out["rss_growth_mib"] < UNPACKED_RSS_MIB, out["rss_growth_mib"]


# ------------------------------------------------------------------------- the other routes


@linux_only
def test_checkpoint_path_route_refuses_the_hostile_file(tmp_path: Path) -> None:
    """``sknet.load(..., checkpoint_path=f)`` and ``create_model(pretrained=..., checkpoint_path=
    f)`` reach the reader through the hub; the same file tried 24.6 GB there."""
    path = hostile_classifier_file(tmp_path / "SKNet-50.caffemodel")
    out = run_child(tmp_path, [("load", path), ("create_model", path)])
    for result in out["results"]:
        assert_refused(result, str(path), "[3000000, 0]", "not positive")
    assert out["rss_growth_mib"] < SMALL_RSS_MIB, out["rss_growth_mib"]


@linux_only
def test_cli_convert_prints_one_line(tmp_path: Path) -> None:
    """``sknet convert --from caffe`` exits 1 with exactly one line on stderr."""
    path = hostile_classifier_file(tmp_path / "SKNet-50.caffemodel")
    out = run_child(tmp_path, [("cli", path)])
    (result,) = out["results"]
    assert result["error"] is None, result
    assert result["value"]["rc"] == 1
    err = result["value"]["stderr"]
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("sknet convert: error: ") and str(path) in err and "[3000000, 0]" in err
    assert not (tmp_path / "SKNet-50.caffemodel.safetensors").exists()
    assert out["rss_growth_mib"] < SMALL_RSS_MIB, out["rss_growth_mib"]


@linux_only
def test_model_size_is_checked_on_the_meta_device(tmp_path: Path) -> None:
    """A classifier whose blob really holds its values still decides the model's width: more
    than MAX_CLASSES outputs, or a model over the parameter limit (SKNET_MAX_PARAMS), is refused
    before the model is allocated (the old reader built 7.0 and 7.7 GiB models here)."""
    over_limit = tmp_path / "over_limit.caffemodel"  # 900,000 classes: 1.87e9 parameters
    over_limit.write_bytes(
        sknet50_skeleton() + classifier(shape(900_000, 1), packed(np.ones(900_000)))
    )
    too_wide = tmp_path / "too_wide.caffemodel"
    too_wide.write_bytes(
        sknet50_skeleton() + classifier(shape(1_000_001, 1), packed(np.ones(1_000_001)))
    )
    out = run_child(
        tmp_path, [("load_caffe", over_limit), ("load", over_limit), ("load_caffe", too_wide)]
    )
    for result in out["results"][:2]:
        assert_refused(
            result,
            "over_limit.caffemodel",
            "1,869,530,784 parameters",
            "limit of 1,000,000,000",
            "SKNET_MAX_PARAMS=",
        )
    assert_refused(out["results"][2], "too_wide.caffemodel", "= 1000001 is outside [1, 1000000]")
    assert out["rss_growth_mib"] < SMALL_RSS_MIB, out["rss_growth_mib"]


def test_param_limit_is_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "small.caffemodel"
    path.write_bytes(sknet50_skeleton() + classifier(shape(10, 1), packed(np.ones(10))))
    monkeypatch.setenv("SKNET_MAX_PARAMS", "1e6")
    refused(lambda: load_caffe(path), "small.caffemodel", "limit of 1,000,000", "SKNET_MAX_PARAMS")
    monkeypatch.delenv("SKNET_MAX_PARAMS")  # within the limit: on to the layer check
    refused(lambda: load_caffe(path), "small.caffemodel", "does not fit sknet50", "layers missing")


# ------------------------------------------------------------------ wire format and blob checks

_WIRE_CASES: dict[str, tuple[bytes, str]] = {
    "group start": (key(100, 3) + key(100, 4), "group (wire type 3)"),
    "group end": (key(7, 4), "group (wire type 4)"),
    "wire type 6": (key(100, 6), "invalid wire type 6"),
    "wire type 7": (key(3, 7), "invalid wire type 7"),
    "field number 0": (key(0, 0) + b"\x00", "invalid field number 0"),
    "field number 2**29": (key(2**29, 0) + b"\x00", f"invalid field number {2**29}"),
    "length past the end": (ld(100, b"\x00" * 10, length=11), "11 bytes long but only 10"),
    "length past the layer": (
        ld(100, key(7, 2) + varint(3)),
        "3 bytes long but only 0",
    ),
    "huge length": (ld(100, b"", length=2**64 - 1), "but only 0 bytes remain"),
    "truncated 32-bit": (key(3, 5) + b"\x00\x00", "truncated 32-bit"),
    "truncated 64-bit": (key(3, 1) + b"\x00" * 7, "truncated 64-bit"),
    "packed floats % 4": (layer("a", blob(shape(1), ld(5, b"\x00" * 5))), "not a multiple of 4"),
    "packed doubles % 8": (layer("a", blob(shape(1), ld(8, b"\x00" * 12))), "not a multiple of 8"),
    "33 dims": (layer("a", blob(shape(*[1] * 33), packed([1.0]))), "more than 32 dimensions"),
    "two shapes": (layer("a", blob(shape(1), shape(1), packed([1.0]))), "two shape fields"),
    "floats and doubles": (
        layer("a", blob(shape(2), packed([1.0]), packed([1.0], double=True))),
        "both float and double data",
    ),
    "name as varint": (ld(100, key(1, 0) + b"\x05"), "layer name (field 1)"),
    "data as varint": (layer("a", blob(key(5, 0) + b"\x01")), "data (field 5)"),
    "shape as 32-bit": (layer("a", blob(key(7, 5) + b"\x00" * 4)), "shape (field 7)"),
    "invalid UTF-8": (ld(100, ld(1, b"\xff\xfe")), "invalid UTF-8"),
}
_BLOB_CASES: dict[str, tuple[bytes, str, str]] = {  # file, the blob named, what is wrong
    "unpacked fewer": (
        layer("conv1", blob(shape(5), unpacked([1, 2, 3, 4]))),
        "layer 'conv1' blob 0",
        "has shape [5] (5 values) but 4 values",
    ),
    "packed more": (
        layer("conv1", blob(shape(1), packed([0])), blob(shape(2, 2), packed(np.ones(5)))),
        "layer 'conv1' blob 1",
        "has shape [2, 2] (4 values) but 5 values",
    ),
    "legacy dims": (
        layer("c", blob(b"\x08\x02\x10\x03\x18\x01\x20\x01", packed([1]))),
        "layer 'c' blob 0",
        "has shape [2, 3, 1, 1] (6 values) but 1 values",
    ),
    "negative dim": (
        layer("c", blob(shape(-2, -3), packed(np.ones(6)))),
        "layer 'c' blob 0",
        "[-2, -3]: a dimension is not positive",
    ),
    "zero dim with data": (
        layer("c", blob(shape(0, 3), packed([1.0]))),
        "layer 'c' blob 0",
        "[0, 3]: a dimension is not positive",
    ),
    "empty blob": (layer("c", blob()), "layer 'c' blob 0", "has shape [0]: a dimension is not"),
    "scalar without value": (
        layer("c", blob(ld(7, b""))),
        "layer 'c' blob 0",
        "has shape [] but holds no values",
    ),
    "huge product": (
        layer("c", blob(shape(*[2**63 - 1] * 32), packed([1.0]))),
        "layer 'c' blob 0",
        "... 32 dims] (about 10^606 values) but 1 values",
    ),
    "NaN": (
        layer("conv1", blob(shape(1), packed([1.0])), blob(shape(2), packed([1.0, math.nan]))),
        "layer 'conv1' blob 1",
        "holds 1 non-finite values (NaN or infinity, in float32) of 2",
    ),
    "infinity unpacked": (
        layer("bn", blob(shape(3), unpacked([1.0, math.inf, 2.0]))),
        "layer 'bn' blob 0",
        "holds 1 non-finite values",
    ),
    "double beyond float32": (
        layer("fc", blob(shape(2), packed([1e300, 1.0], double=True))),
        "layer 'fc' blob 0",
        "holds 1 non-finite values (NaN or infinity, in float32)",
    ),
    "long name": (
        layer("n" * 100_000, blob(shape(2), packed([1.0]))),
        "layer '" + "n" * 60 + "...' blob 0",
        "(2 values) but 1 values",
    ),
}


@pytest.mark.parametrize("case", sorted(_WIRE_CASES))
def test_wire_format_violations_are_refused(case: str, tmp_path: Path) -> None:
    data, fragment = _WIRE_CASES[case]
    refused(lambda: parse_caffemodel(data), "not a valid caffemodel (protobuf): ", fragment)
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(data)
    refused(lambda: read_caffemodel(path), f"{path} is not a valid caffemodel", fragment)


@pytest.mark.parametrize("case", sorted(_BLOB_CASES))
def test_blob_shapes_and_values_are_checked(case: str, tmp_path: Path) -> None:
    """Dims positive, counts equal to the values present, values finite: the blob is named."""
    data, label, fragment = _BLOB_CASES[case]
    message = refused(lambda: parse_caffemodel(data), "unusable weights: ", label, fragment)
    assert len(message) < 400  # names from the file are cut
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(data)
    refused(lambda: read_caffemodel(path), f"{path}: {label}", fragment)


def test_valid_encodings_are_read_in_order() -> None:
    """Packed and unpacked runs, interrupted by skipped fields, a non-canonical key for an
    unpacked float, unpacked doubles and a scalar shape all read as Caffe would."""
    nonc = b"\xad\x00" + np.float32(9.0).tobytes()  # field 5, wire type 5, key in two bytes
    diff = ld(6, np.zeros(3, "<f4").tobytes())  # BlobProto.diff, skipped
    floats = blob(shape(2, 4), unpacked([1, 2]), diff, packed([3, 4]), nonc, unpacked([5, 6, 7]))
    doubles = blob(shape(1, 3), unpacked([0.5, -1.5], double=True), packed([2.5], double=True))
    scalar = blob(ld(7, b""), packed([4.0]))
    name, layers = parse_caffemodel(ld(1, b"net") + layer("a", floats, doubles, scalar))
    assert name == "net" and len(layers) == 1
    got = layers[0].blobs
    assert [b.shape for b in got] == [(2, 4), (1, 3), ()]
    np.testing.assert_array_equal(got[0].data, [1, 2, 3, 4, 9, 5, 6, 7])
    np.testing.assert_array_equal(got[1].data, [0.5, -1.5, 2.5])
    np.testing.assert_array_equal(got[2].data, [4.0])
    assert all(b.data.dtype == np.float32 for b in got)


def test_size_limits_are_stated_and_adjustable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file-size limit is Caffe's own (INT_MAX bytes); layers and blobs are counted."""
    assert convert_caffe.MAX_CAFFEMODEL_BYTES == 2**31 - 1
    assert convert_caffe.MAX_BLOB_AXES == 32
    data = b"".join(layer(f"l{i}", blob(shape(1), packed([1.0]))) for i in range(4))
    path = tmp_path / "four.caffemodel"
    path.write_bytes(data)
    assert len(read_caffemodel(path)[1]) == 4
    monkeypatch.setattr(convert_caffe, "MAX_CAFFEMODEL_BYTES", len(data) - 1)
    refused(lambda: read_caffemodel(path), str(path), f"{len(data):,} bytes", "Caffe itself reads")
    refused(lambda: parse_caffemodel(data), "Caffe itself reads")
    monkeypatch.undo()
    monkeypatch.setattr(convert_caffe, "MAX_LAYERS", 3)
    refused(lambda: read_caffemodel(path), str(path), "more than 3 layers")
    monkeypatch.undo()
    monkeypatch.setattr(convert_caffe, "MAX_BLOBS", 3)
    refused(lambda: read_caffemodel(path), str(path), "more than 3 weight blobs")


@pytest.fixture(scope="module")
def sknet50_layers() -> list[CaffeLayer]:
    return to_caffe_layers(sknet.create_model("sknet50", **CAFFE_OVERRIDES))


def test_hand_built_layers_need_finite_floating_values(sknet50_layers: list[CaffeLayer]) -> None:
    """``from_caffe`` takes layers built in Python too: only floating, finite values fit."""
    fc1 = next(la for la in sknet50_layers if la.name == "conv3_1/B_fc1")
    original = fc1.blobs[0]
    try:
        fc1.blobs[0] = CaffeBlob(original.shape, original.data.astype(np.int64))
        refused(
            lambda: from_caffe(sknet50_layers, "sknet50"),
            "layer 'conv3_1/B_fc1' blob 0",
            "stages.1.0.conv2.attn.fc_reduce.weight",
            "int64",
            "floating-point",
        )
        bad = original.data.copy()
        bad.flat[3] = np.inf
        fc1.blobs[0] = CaffeBlob(original.shape, bad)
        refused(
            lambda: from_caffe(sknet50_layers, "sknet50"),
            "conv3_1/B_fc1",
            "fc_reduce.weight",
            "1 non-finite values",
        )
        fc1.blobs[0] = CaffeBlob(original.shape, original.data.ravel()[:-1])
        refused(lambda: from_caffe(sknet50_layers, "sknet50"), "holds 8191 values", "needs 8192")
    finally:
        fc1.blobs[0] = original
    name, state = from_caffe(sknet50_layers)
    assert name == "sknet50" and all(
        t.dtype.is_floating_point for k, t in state.items() if not k.endswith("num_batches_tracked")
    )


# ---------------------------------------------------------------------------------------- fuzz

_DIMS = [0, 1, 2, 3, 7, -1, -5, 2**31, 2**32, 2**62, 2**63 - 1, 2**64 - 1, 2**64, 2**69]


def _fuzz_base() -> bytes:
    """A small valid caffemodel that :func:`guess_caffe_model` takes for SKNet-50 (so that
    mutations reach the conversion), written by sknet's writer."""
    rng = np.random.default_rng(0)
    names = ["conv2_1/B_fc1"] + [f"conv4_{u}/1x1_reduce" for u in range(1, 7)]
    layers = [
        CaffeLayer(n, "Convolution", [CaffeBlob((2, 1), rng.standard_normal((2, 1)))])
        for n in names
    ]
    fc = [CaffeBlob((3, 4), rng.standard_normal((3, 4))), CaffeBlob((3,), np.zeros(3))]
    layers.append(CaffeLayer("classifier", "InnerProduct", fc))
    return serialize_caffemodel(layers, name="fuzz")


def _legacy_base() -> bytes:
    """A V1 layer with legacy dims and unpacked floats, and a layer with unpacked doubles."""
    v1 = ld(4, b"conv1") + key(5, 0) + varint(4)
    v1 += ld(6, b"\x08\x02\x10\x01\x18\x01\x20\x02" + unpacked([1, 2, 3, 4]))
    return ld(2, v1) + layer("fc", blob(shape(3), unpacked([0.5, 1.5, -2], double=True)))


def _random_blob(rng: random.Random) -> bytes:
    """A blob with random (often hostile) dims, value count, encoding and wire types; half
    are valid (positive dims, as many finite values, packed or not)."""
    if rng.random() < 0.5:
        dims = [rng.randrange(1, 4) for _ in range(rng.randrange(1, 4))]
        values = [rng.uniform(-1, 1) for _ in range(math.prod(dims))]
        encode = rng.choice([packed, unpacked])
        return blob(shape(*dims), encode(values, rng.random() < 0.3))
    ndims = rng.choice([0, 1, 2, 4, 33, rng.randrange(40)])
    dims = [rng.choice(_DIMS) for _ in range(ndims)]
    small = math.prod(d for d in dims if 0 < d < 8)  # the count the dims that fit would need
    count = small if small <= 64 and rng.random() < 0.5 else rng.randrange(9)
    values = [rng.choice([0.0, 1.5, -2.0, 1e30, float("nan"), float("inf")]) for _ in range(count)]
    parts = []
    if rng.random() < 0.8:
        dim_bytes = b"".join(varint(d) for d in dims)
        parts.append(
            ld(
                7,
                ld(1, dim_bytes)
                if rng.random() < 0.7
                else b"".join(key(1, 0) + varint(d) for d in dims),
            )
        )
    else:
        parts.append(b"".join(key(i + 1, 0) + varint(d) for i, d in enumerate(dims[:4])))
    how = rng.choice(["packed", "unpacked", "double", "double unpacked", "mixed"])
    if how == "mixed":
        half = len(values) // 2
        parts.append(unpacked(values[:half]) + packed(values[half:]))
    else:
        parts.append((unpacked if "unpacked" in how else packed)(values, "double" in how))
    if rng.random() < 0.2:  # a field with a random wire type, or a lying length
        parts.insert(rng.randrange(len(parts) + 1), key(rng.choice([5, 7, 8, 9]), rng.randrange(8)))
    body = b"".join(parts)
    lie = rng.choice([len(body), len(body) + 1, len(body) - 1, 2**64 - 1, 2**40])
    return ld(7, body, length=lie if rng.random() < 0.15 else None)


def _structured(rng: random.Random, base: bytes) -> bytes:
    """Random layers around random blobs, sometimes V1, sometimes with hostile varints."""
    out = [base if rng.random() < 0.5 else b""]
    for _ in range(rng.randrange(1, 4)):
        blobs = b"".join(_random_blob(rng) for _ in range(rng.randrange(1, 3)))
        name = rng.choice([b"classifier", b"conv1", b"conv2_1/B_fc1", b"\xff\xfe", b"x" * 300])
        if rng.random() < 0.3:
            out.append(ld(2, ld(4, name) + key(5, 0) + varint(rng.choice([4, 14, 2**63])) + blobs))
        else:
            out.append(ld(100, ld(1, name) + blobs))
    if rng.random() < 0.2:
        out.insert(
            rng.randrange(len(out) + 1),
            key(rng.randrange(1, 200), rng.randrange(8))
            + rng.choice([varint(2**69), b"\xff" * 11, b"\x80", b""]),
        )
    return b"".join(out)


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    op = rng.choice(["flip", "flip", "set", "delete", "duplicate", "insert", "truncate"])
    if not buf:
        return bytes(rng.randbytes(rng.randrange(64)))
    if op == "flip":
        for _ in range(rng.randrange(1, 9)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    elif op == "set":
        for _ in range(rng.randrange(1, 4)):
            buf[rng.randrange(len(buf))] = rng.choice([0x00, 0x7F, 0x80, 0xFF, 0x2D, 0x41, 0x0B])
    elif op == "delete":
        i = rng.randrange(len(buf))
        del buf[i : i + rng.randrange(1, 16)]
    elif op == "duplicate":
        i = rng.randrange(len(buf))
        j = min(len(buf), i + rng.randrange(1, 64))
        buf[j:j] = buf[i:j] * rng.randrange(1, 4)
    elif op == "insert":
        buf[rng.randrange(len(buf) + 1) : 0] = rng.randbytes(rng.randrange(1, 16))
    else:
        del buf[rng.randrange(len(buf)) :]
    return bytes(buf)


def fuzz_cases(seed: int = 15) -> list[tuple[str, bytes]]:
    """420 cases from fixed seeds: random bytes, truncations and mutations of two small valid
    caffemodels, and files built field by field with hostile varints, lengths, wire types,
    shapes and packed / unpacked value counts (and mutations of those)."""
    rng = random.Random(seed)
    base, legacy = _fuzz_base(), _legacy_base()
    cases = [("base", base), ("legacy", legacy)]
    cases += [(f"random{i}", rng.randbytes(rng.randrange(400))) for i in range(48)]
    cases += [(f"truncated{i}", base[: rng.randrange(len(base))]) for i in range(40)]
    cases += [(f"mutated{i}", _mutate(rng, rng.choice([base, legacy]))) for i in range(130)]
    cases += [(f"structured{i}", _structured(rng, base)) for i in range(120)]
    cases += [(f"both{i}", _mutate(rng, _structured(rng, legacy))) for i in range(80)]
    return cases


def test_fuzz_cases_are_fixed() -> None:
    a, b = fuzz_cases(), fuzz_cases()
    assert len(a) == 420 and a == b
    assert len({data for _, data in a}) > 380  # mostly distinct files


@linux_only
def test_fuzz_one_line_errors_bounded_time_and_memory(tmp_path: Path) -> None:
    """Every fuzz case is read (``read_caffemodel``) and, for the cases built on the SKNet-50
    look-alike base, converted (``load_caffe``): each either succeeds or raises a one-line
    FileFormatError, within CASE_SECONDS; the whole run within FUZZ_SECONDS and FUZZ_RSS_MIB."""
    folder = tmp_path / "fuzz"
    folder.mkdir()
    jobs: list[tuple[str, Path]] = []
    for i, (kind, data) in enumerate(fuzz_cases()):
        path = folder / f"{i:03d}_{kind}.caffemodel"
        path.write_bytes(data)
        jobs.append(("read", path))
        if kind.startswith(("base", "truncated", "structured")) or i % 3 == 0:
            jobs.append(("load_caffe", path))
    out = run_child(tmp_path, jobs)
    results = out["results"]
    assert len(results) == len(jobs)
    bad = [r for r in results if r["error"] is not None and not r["refused"]]
    assert not bad, bad[:3]
    for r in results:
        if r["error"] is not None:
            assert_one_line(r["message"])
            assert Path(r["path"]).name in r["message"], r
        assert r["seconds"] < CASE_SECONDS, r
    total = sum(r["seconds"] for r in results)
    assert total < FUZZ_SECONDS, total
    assert out["rss_growth_mib"] < FUZZ_RSS_MIB, out["rss_growth_mib"]
    read = [r for r in results if r["route"] == "read"]
    parsed = sum(r["error"] is None for r in read)
    assert results[0]["error"] is None and results[0]["value"]["shapes"][-1] == [3]  # the base
    assert 20 < parsed < len(read) - 100, parsed  # both outcomes are exercised
    converted = [r for r in results if r["route"] == "load_caffe"]
    reached_model = [r for r in converted if "does not fit sknet50" in r["message"]]
    assert reached_model, "no case reached the meta-device model check"
    print(
        f"fuzz: {len(read)} files, {parsed} parsed, {len(converted)} converted "
        f"({len(reached_model)} up to the model check); {total:.2f} s, "
        f"max {max(r['seconds'] for r in results):.3f} s per case, "
        f"peak RSS {out['rss_peak_mib']:.0f} MiB (+{out['rss_growth_mib']:.0f} MiB over the "
        f"{out['rss_before_mib']:.0f} MiB after imports)"
    )

"""Weights files from strangers can't hurt a user (issue 15, findings 1, 3, 7 and 8).

Every hostile file here starts from a real ``sknet_tiny`` weights file (or checkpoint) and
changes one thing. It must be refused with one line naming the file and the field or tensor,
quickly and without allocating what the file claims (the model is sized on the ``meta`` device
and compared with the file's header first). A fuzz test runs a few hundred random and mutated
files in a child process and bounds its time and peak memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import sknet
from sknet import hub
from sknet.cli.main import main
from sknet.errors import ConfigError, FileFormatError
from sknet.hub import ChecksumError, PretrainedCfg
from sknet.loading import Preprocess
from sknet.train.checkpoint import save_checkpoint
from sknet.weights import read_metadata, save_weights

FAST_S = 2.0  # a refusal takes milliseconds; the bound leaves room for a busy machine


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], dict[str, Any]]:
    """The metadata and tensors of a real ``sknet_tiny`` weights file (10 classes); loading it
    once imports what loading needs, so that the timings below measure the checks alone."""
    path = tmp_path_factory.mktemp("base") / "w.safetensors"
    save_weights(sknet.create_model("sknet_tiny", num_classes=10), path)
    sknet.load(path)
    meta = read_metadata(path)
    # save_weights records the model's data config; the checks of the older fields
    # (sknet_image_size, sknet_mean/std) need a file without that table, as files had before
    meta.pop("sknet_preprocess", None)
    return meta, load_file(str(path))


def _write(
    tmp_path: Path,
    base: tuple[dict[str, str], dict[str, Any]],
    meta: dict[str, str] | None = None,
    arch: dict[str, Any] | None = None,
    state: dict[str, torch.Tensor] | None = None,
    name: str = "hostile.safetensors",
) -> Path:
    """The base file with ``meta`` entries, ``arch`` fields and ``state`` tensors replaced."""
    m, s = dict(base[0]), dict(base[1])
    if arch is not None:
        m["sknet_arch"] = json.dumps({**json.loads(m["sknet_arch"]), **arch})
    m.update(meta or {})
    s.update(state or {})
    path = tmp_path / name
    save_file(s, str(path), metadata=m)
    return path


def _refused(path: Path, match: str, *, limit_s: float = FAST_S) -> str:
    """``sknet.load(path)`` raises a one-line FileFormatError naming the file, within limit_s."""
    start = time.perf_counter()
    with pytest.raises(FileFormatError, match=match) as info:
        sknet.load(path)
    elapsed = time.perf_counter() - start
    msg = str(info.value)
    assert "\n" not in msg and path.name in msg, msg
    assert elapsed < limit_s, f"refused after {elapsed:.1f} s: {msg}"
    return msg


def _checkpoint(path: Path, state: dict[str, torch.Tensor], **meta: Any) -> Path:
    """An sknet training checkpoint of ``sknet_tiny`` holding ``state``."""
    model = sknet.create_model("sknet_tiny", num_classes=10)
    from sknet.weights import arch_config_of

    record = {
        "model": "sknet_tiny",
        "num_classes": 10,
        "in_chans": 3,
        "model_overrides": {},
        "arch": arch_config_of(model),
        "classes": None,
        "image_size": 48,
        "data": "synthetic",
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        **meta,
    }
    return save_checkpoint({"meta": record, "model": state}, path)


# ------------------------------------------------------------------ finding 1: sizes first


def test_a_huge_class_count_is_refused_before_anything_is_built(tmp_path: Path, base) -> None:
    """3,000,000 classes in a 700 KB file: was 3.6 GB and 15 s before "does not fit"."""
    path = _write(tmp_path, base, meta={"num_classes": "3000000"})
    assert path.stat().st_size < 1_000_000
    msg = _refused(path, r"'num_classes' = 3000000 is outside \[0, 1000000\]", limit_s=1.0)
    assert "hostile" in msg
    # the same file through create_model(checkpoint_path=...)
    with pytest.raises(FileFormatError, match="num_classes"):
        sknet.create_model("sknet_tiny", checkpoint_path=path)
    _refused(_write(tmp_path, base, meta={"num_classes": "400000000"}), "num_classes")


@pytest.mark.parametrize(
    ("meta", "arch", "match"),
    [
        ({}, {"layers": [100000, 1, 1]}, r"100,002 residual units .*more than the 256"),
        ({}, {"stage_out": [-5, 128, 256]}, r"stage_out\[0\] = -5 is outside"),
        ({}, {"stage_out": [2**40, 128, 256]}, r"stage_out\[0\] = 1099511627776 is outside"),
        ({}, {"stage_out": [2**20] * 3}, r"parameters, more than the limit .*SKNET_MAX_PARAMS="),
        ({}, {"cardinality": 0}, "does not build 'sknet_tiny'"),
        ({}, {"sk_branches": ["99999999x99999999"]}, "does not build|parameters"),
        ({}, {"layers": [1] * 100000}, "100,000 entries"),
        ({"in_chans": "100000"}, None, r"'in_chans' = 100000 is outside"),
        ({"num_classes": "-3"}, None, r"'num_classes' = -3 is outside"),
        ({"num_classes": "9" * 5000}, None, "is not an integer"),
        ({"sknet_arch": "[" * 100000}, None, "'sknet_arch' is nested too deeply"),
        ({"sknet_provenance": "[" * 50 + "]" * 50}, None, "nested deeper than 32"),
        ({"sknet_classes": '[{"a": ' * 20000}, None, "'sknet_classes' is nested too deeply"),
        ({"sknet_arch": "[1, 2]"}, None, "'sknet_arch' is not a table"),
        ({"sknet_train_config": "[1]"}, None, "'sknet_train_config' is not a table"),
        ({"model_overrides": '"x"', "sknet_arch": "null"}, None, "not a table"),
        ({"sknet_provenance": "7"}, None, "'sknet_provenance' is not a table"),
        ({"sknet_classes": '["a"]'}, None, "class names do not match"),
    ],
)
def test_hostile_metadata_is_one_line_and_fast(
    tmp_path: Path, base, meta: dict[str, str], arch: dict[str, Any] | None, match: str
) -> None:
    """Each was a traceback, a MemoryError after 83 s, or a multi-GB allocation."""
    _refused(_write(tmp_path, base, meta=meta, arch=arch), match)


def test_the_size_limit_is_stated_and_can_be_raised(
    tmp_path: Path, base, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_weights(
        sknet.create_model("sknet_tiny", num_classes=10), tmp_path / "ok.safetensors"
    )
    monkeypatch.setenv("SKNET_MAX_PARAMS", "1000")
    msg = _refused(path, "more than the limit of 1,000")
    assert "SKNET_MAX_PARAMS=" in msg
    monkeypatch.setenv("SKNET_MAX_PARAMS", "1e9")
    _, record = sknet.load(path)
    assert record.num_classes == 10


def test_shapes_are_compared_with_the_header_before_the_data_is_read(tmp_path: Path, base) -> None:
    """999,999 classes is within the bound: the model is sized on meta and refused there
    (a real build would allocate 1 GB)."""
    path = _write(tmp_path, base, meta={"num_classes": "999999"})
    msg = _refused(path, "does not fit sknet_tiny: tensor 'head.fc.weight' has shape")
    assert "(999999, 256)" in msg


def test_checkpoints_are_checked_the_same_way(tmp_path: Path, base) -> None:
    state = base[1]
    _refused(_checkpoint(tmp_path / "a.pt", state, num_classes=3_000_000), "num_classes")
    arch = {**json.loads(base[0]["sknet_arch"]), "layers": [100000, 1, 1]}
    _refused(_checkpoint(tmp_path / "b.pt", state, arch=arch), "residual units")
    _refused(_checkpoint(tmp_path / "c.pt", state, image_size=60000), "image size = 60000")
    _refused(_checkpoint(tmp_path / "d.pt", state, mean=[1, 2]), "mean must be 3 numbers")
    _refused(_checkpoint(tmp_path / "e.pt", state, provenance=[1]), "'provenance' is not a table")
    _, record = sknet.load(_checkpoint(tmp_path / "ok.pt", state))
    assert record.num_classes == 10 and record.preprocess.std == (0.25, 0.25, 0.25)


def test_torch_files_cannot_describe_more_than_they_hold(tmp_path: Path, base) -> None:
    """A broadcast view (stride 0) of 10^12 elements over 4 bytes, and a zip bomb."""
    state = dict(base[1])
    state["stem.conv.weight"] = torch.zeros(1).expand(10**6, 10**6)
    msg = _refused(_checkpoint(tmp_path / "view.pt", state), "describe .* bytes, but the file")
    assert "view.pt" in msg
    from sknet.convert import read_state_dict

    torch.save({"w": torch.zeros(1).expand(10**6, 10**6)}, tmp_path / "view.pth")
    with pytest.raises(FileFormatError, match="bytes, but the file has only"):
        read_state_dict(tmp_path / "view.pth")
    with pytest.raises(FileFormatError, match="bytes, but the file has only"):
        hub.load_pretrained_state("sknet50.ra_in1k", checkpoint_path=tmp_path / "view.pth")

    good = _checkpoint(tmp_path / "good.pt", base[1])
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    _refused(bomb, "is compressed, which torch.save never does")


def test_checkpoint_path_classifier_width_is_bounded(
    tmp_path: Path, base, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hub.load_pretrained(checkpoint_path=...) of a file in sknet's layout: the classifier
    width comes from the file's head.fc.weight, which costs nothing if one dimension is 0."""
    monkeypatch.setattr(hub.table, "_REGISTRY", dict(hub.table._REGISTRY))
    monkeypatch.setattr(hub.table, "_DEFAULT_TAGS", dict(hub.table._DEFAULT_TAGS))
    hub.register_pretrained(
        PretrainedCfg("sknet_tiny", "t", "sknet", "test", "w", "mit", 0, url="http://x.invalid/w")
    )
    state = dict(base[1])
    for width, match in [
        (2_000_000, r"classifier width \(head.fc.weight\) = 2000000 is outside"),
        (999_999, r"does not fit sknet_tiny: tensor 'head.fc.weight' has shape \(999999, 0\)"),
    ]:
        state["head.fc.weight"] = torch.zeros(width, 0)
        path = tmp_path / f"fc{width}.safetensors"
        save_file(state, str(path))
        start = time.perf_counter()
        with pytest.raises(FileFormatError, match=match) as info:
            hub.load_pretrained("sknet_tiny.t", checkpoint_path=path)
        assert time.perf_counter() - start < FAST_S and "\n" not in str(info.value)
    _, record = hub.load_pretrained("sknet_tiny.t", checkpoint_path=_write(tmp_path, base))
    assert record.num_classes == 10 and record.provenance["sha256_verified"] is False


# ------------------------------------------------------------------ finding 3: preprocessing


@pytest.mark.parametrize(
    ("pre", "match"),
    [
        ({"input_size": 60000}, r"input_size = 60000 is outside \[1, 4096\]"),
        ({"input_size": 224, "resize": 1000000}, r"resize = 1000000 is outside \[1, 4096\]"),
        ({"input_size": 0}, r"input_size = 0 is outside"),
        ({"input_size": "big"}, "input_size = 'big' is not an integer"),
        ({"resize": 256}, "needs input_size"),
        ({"input_size": 224, "std": [0, 1, 1]}, "std must be 3 positive finite numbers"),
        ({"input_size": 224, "mean": [float("nan"), 0, 0]}, "mean must be 3 finite numbers"),
        ({"input_size": 224, "mean": [0.5, 0.5]}, "mean must be 3 numbers"),
        ({"input_size": 224, "std": [1e400, 1, 1]}, "std must be 3 positive finite"),
        ({"input_size": 224, "interpolation": "lanczos"}, "interpolation = 'lanczos' is not"),
        ({"input_size": 224, "channel_order": "GBR"}, "channel_order = 'GBR' is not"),
        ([224], "expected a table of fields"),
    ],
)
def test_preprocessing_metadata_is_checked_at_load_time(
    tmp_path: Path, base, pre: Any, match: str
) -> None:
    """Was "cannot preprocess the image: " with an empty reason after a huge allocation."""
    text = json.dumps(pre).replace("Infinity", "1e400")
    msg = _refused(_write(tmp_path, base, meta={"sknet_preprocess": text}), match)
    assert "invalid 'sknet_preprocess' metadata" in msg
    with pytest.raises(ConfigError, match=match):  # an argument, not a file: ConfigError
        Preprocess.from_dict(pre)


def test_the_other_preprocessing_fields_are_checked_too(tmp_path: Path, base) -> None:
    _refused(_write(tmp_path, base, meta={"sknet_image_size": "60000"}), "image size = 60000")
    both = {"sknet_mean": "[0.5, 0.5, 0.5]", "sknet_std": "[0.5, -1, 0.5]"}
    _refused(_write(tmp_path, base, meta=both), "std must be 3 positive finite numbers")
    good = {"input_size": 48, "resize": 56, "interpolation": "bicubic", "channel_order": "BGR"}
    _, record = sknet.load(_write(tmp_path, base, meta={"sknet_preprocess": json.dumps(good)}))
    assert (record.preprocess.resize, record.preprocess.channel_order) == (56, "BGR")


# ------------------------------------------------------------------ finding 7: cache re-verified


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Private caches, no network, a private registry."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    # a cache miss would fail (nobody listens there): only cache hits are tested. Not
    # HF_HUB_OFFLINE, which huggingface_hub reads once, at import, for the whole process.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setattr(hub.table, "_REGISTRY", dict(hub.table._REGISTRY))
    monkeypatch.setattr(hub.table, "_DEFAULT_TAGS", dict(hub.table._DEFAULT_TAGS))
    return tmp_path


def test_a_tampered_url_cache_file_is_refused(caches: Path, base) -> None:
    good = _write(caches, base, name="good.safetensors").read_bytes()
    hub.register_pretrained(
        PretrainedCfg(
            "sknet_tiny",
            "pinned",
            "sknet",
            "test",
            "w",
            "mit",
            0,
            url="http://127.0.0.1:9/w.safetensors",
            sha256=hashlib.sha256(good).hexdigest(),
        )
    )
    cached = caches / "torch" / "hub" / "checkpoints" / "w.safetensors"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(good)
    _, record = hub.load_pretrained("sknet_tiny.pinned", progress=False)
    assert record.provenance["sha256_verified"] is True

    other = base[1] | {"head.fc.bias": torch.ones(10)}  # a different file at the cache path
    save_file(other, str(cached), metadata=base[0])
    for call in (
        lambda: hub.fetch_pretrained("sknet_tiny.pinned", progress=False),
        lambda: hub.load_pretrained("sknet_tiny.pinned", progress=False),
        lambda: sknet.load("sknet_tiny.pinned"),
    ):
        with pytest.raises(ChecksumError) as info:
            call()
        msg = str(info.value)
        assert str(cached) in msg and "delete it" in msg and "\n" not in msg
    assert cached.exists()  # kept for inspection; the message says to delete it

    # the real torchvision entry: a random file placed at its cache path
    real = hub.get_pretrained_cfg("resnext50_32x4d.tv_in1k")
    (cached.parent / real.file_name).write_bytes(b"not the published file")
    with pytest.raises(ChecksumError, match=f"{real.file_name}.*publishes 7cdf4587"):
        hub.fetch_pretrained("resnext50_32x4d.tv_in1k", progress=False)


def test_a_tampered_hub_cache_blob_is_refused(caches: Path, base) -> None:
    """A Hub file without a recorded sha256 is checked against its LFS id (the blob name)."""
    good = _write(caches, base, name="good.safetensors").read_bytes()
    sha = hashlib.sha256(good).hexdigest()
    repo = caches / "hf" / "hub" / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / sha).write_bytes(good)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    os.symlink(f"../../blobs/{sha}", snap / "w.safetensors")
    hub.register_pretrained(
        PretrainedCfg(
            "sknet_tiny",
            "hubbed",
            "sknet",
            "t",
            "w",
            "mit",
            0,
            hf_hub_id="org/tiny",
            hf_filename="w.safetensors",
        )
    )
    assert hub.fetch_pretrained("sknet_tiny.hubbed", progress=False) == snap / "w.safetensors"
    (repo / "blobs" / sha).write_bytes(good[:-4] + b"\0\0\0\0")
    with pytest.raises(ChecksumError, match=f"cached file .*w.safetensors .*{sha[:16]}"):
        hub.fetch_pretrained("sknet_tiny.hubbed", progress=False)


# ------------------------------------------------------------------ finding 8: dtypes, NaN


@pytest.mark.parametrize(
    ("key", "make", "match"),
    [
        ("stem.conv.weight", lambda t: t.to(torch.int64), "is torch.int64, but it must be floa"),
        ("stem.conv.weight", lambda t: t > 0, "is torch.bool, but it must be floating point"),
        ("stem.bn.running_var", lambda t: t.to(torch.int32), "is torch.int32, but it must"),
        (
            "stem.bn.num_batches_tracked",
            lambda t: t.float(),
            r"is torch.float32, but it must be an integer tensor \(torch.int64\)",
        ),
        ("stem.conv.weight", lambda t: torch.full_like(t, float("nan")), "non-finite values"),
        ("head.fc.bias", lambda t: t.index_fill(0, torch.tensor([3]), float("inf")), "non-fin"),
    ],
)
def test_only_finite_floating_weights_are_accepted(tmp_path: Path, base, key, make, match) -> None:
    """Were cast silently; all-NaN weights predicted "nan%" with exit 0."""
    bad = {key: make(base[1][key])}
    msg = _refused(_write(tmp_path, base, state=bad), match)
    assert repr(key) in msg
    _refused(_checkpoint(tmp_path / "c.pt", base[1] | bad), match)  # and in a checkpoint


def test_double_precision_and_integer_buffers_still_load(tmp_path: Path, base) -> None:
    double = {k: v.double() for k, v in base[1].items() if v.is_floating_point()}
    model, _ = sknet.load(_write(tmp_path, base, state=double))
    assert model.stem.conv.weight.dtype == torch.float32
    assert model.stem.bn.num_batches_tracked.dtype == torch.int64


def test_the_cli_refuses_nan_weights_in_one_line(tmp_path: Path, base, capsys) -> None:
    nan = {k: torch.full_like(v, float("nan")) for k, v in base[1].items() if v.is_floating_point()}
    path = _write(tmp_path, base, state=nan)
    image = tmp_path / "img.png"
    Image.new("RGB", (64, 64), (120, 30, 200)).save(image)
    assert main(["predict", str(path), str(image)]) != 0
    err = capsys.readouterr().err.strip()
    assert "non-finite" in err and "hostile.safetensors" in err
    assert "\n" not in err and "Traceback" not in err
    assert (
        main(["predict", str(_write(tmp_path, base, meta={"num_classes": "3000000"})), str(image)])
        != 0
    )
    err = capsys.readouterr().err.strip()
    assert "num_classes" in err and "\n" not in err and "Traceback" not in err


# ------------------------------------------------------------------ fuzz

FUZZ = r"""
import copy, io, json, os, random, resource, sys, time, zipfile
import torch
import sknet
from safetensors.torch import load_file, save_file
from sknet.errors import SKNetError
from sknet.train.checkpoint import save_checkpoint
from sknet.weights import arch_config_of, read_metadata, save_weights

work, n_cases, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = sknet.create_model("sknet_tiny", num_classes=10)
w = save_weights(model, work + "/base.safetensors", classes=[str(i) for i in range(10)])
META, STATE = read_metadata(w), load_file(str(w))
ST_BYTES = w.read_bytes()
CK_META = {"model": "sknet_tiny", "num_classes": 10, "in_chans": 3, "model_overrides": {},
           "arch": arch_config_of(model), "classes": None, "image_size": 48,
           "data": "synthetic", "mean": [0.5] * 3, "std": [0.25] * 3}
ck = save_checkpoint({"meta": CK_META, "model": STATE}, work + "/base.pt")
PT_BYTES = ck.read_bytes()
for p in (w, ck):  # warm up: what a good load costs is the baseline
    sknet.load(p)
base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

INTS = [-1, 0, 1, 2, 3, 5, 48, 255, 4097, 60000, 999999, 2**20, 2**20 + 1, 2**31, 2**63,
        10**30, -2**63, 3000000, 400000000]
ODD = [None, True, "", "x" * 300, [], {}, [[[]]], 1.5, 1e308, float("nan"), float("inf"),
       "3x3 D99999", "99999999x3", "9" * 5000, [1] * 1000]
STRS = ["", "0", "-1", "3000000", "nan", "1e400", "[", "{}", "[]", "null", "true", "sknet50",
        "[" * 20000, json.dumps([[[[[[[[1]]]]]]]] * 3), "9" * 5000]


def mutate(rng, v):
    r = rng.random()
    if isinstance(v, bool) or v is None or r < 0.15:
        return copy.deepcopy(rng.choice(INTS + ODD))
    if isinstance(v, int):
        return rng.choice(INTS)
    if isinstance(v, float):
        return rng.choice([float("nan"), float("inf"), -1.0, 0.0, 1e308, 1e-308])
    if isinstance(v, str):
        return rng.choice(STRS + ["3x3 D2", "3x3", "sk", "plain", "BGR", "bicubic"])
    if isinstance(v, list):
        v = list(v)
        if v and r < 0.6:
            i = rng.randrange(len(v)); v[i] = mutate(rng, v[i])
        elif r < 0.8:
            v = v * rng.choice([0, 2, 50])
        else:
            v.append(rng.choice(INTS))
        return v
    if isinstance(v, dict):
        v = dict(v)
        if v and r < 0.7:
            k = rng.choice(sorted(v)); v[k] = mutate(rng, v[k])
        elif v and r < 0.85:
            del v[rng.choice(sorted(v))]
        else:
            v[rng.choice(["layers", "stage_out", "x", "input_size", "resize"])] = rng.choice(INTS)
        return v
    return copy.deepcopy(rng.choice(INTS + ODD))


def st_meta(rng, path):
    meta = dict(META)
    meta.setdefault("sknet_preprocess", json.dumps({"input_size": 48, "resize": None}))
    for _ in range(rng.choice([1, 1, 2, 3])):
        key = rng.choice(sorted(meta) + ["sknet_image_size", "sknet_mean", "sknet_std",
                                         "sknet_train_config", "sknet_provenance"])
        try:
            value = json.loads(meta.get(key, "null"))
        except (ValueError, RecursionError):
            value = meta.get(key)
        if rng.random() < 0.15:
            meta[key] = rng.choice(STRS)
        elif rng.random() < 0.05:
            meta.pop(key, None)
        else:
            meta[key] = json.dumps(mutate(rng, value))
    save_file(STATE, path, metadata=meta)


def st_state(rng, path):
    state = dict(STATE)
    key = rng.choice(sorted(state))
    t = state[key]
    op = rng.randrange(6)
    if op == 0:
        state[key] = t.to(rng.choice([torch.int8, torch.int64, torch.bool, torch.float16,
                                      torch.float64, torch.uint8]))
    elif op == 1:
        state[key] = t.reshape(-1)[: max(0, t.numel() - rng.randrange(1, 3))].clone()
    elif op == 2:
        state[key] = t.float().fill_(rng.choice([float("nan"), float("inf")]))
    elif op == 3:
        del state[key]
    elif op == 4:
        state["extra." + key] = t.clone()
    else:
        state[key] = torch.zeros(rng.choice([0, 1, 10**6]), 0)
    save_file(state, path, metadata=META)


def flip(rng, data, lo, hi, n):
    data = bytearray(data)
    for _ in range(n):
        i = rng.randrange(lo, max(lo + 1, min(hi, len(data))))
        data[i] = rng.choice([0, 0xFF, rng.randrange(256), data[i] ^ (1 << rng.randrange(8))])
    return bytes(data)


def pt_meta(rng, path):
    meta = mutate(rng, dict(CK_META))
    if not isinstance(meta, dict) or rng.random() < 0.3:
        meta = dict(CK_META, **{rng.choice(sorted(CK_META)): mutate(rng, None)})
    if rng.random() < 0.3:  # values JSON cannot hold: huge integers, tensors
        meta[rng.choice(sorted(CK_META))] = rng.choice(
            [10**5000, -(10**5000), torch.zeros(3), torch.zeros(2, 2), [10**5000] * 3]
        )
    state = dict(STATE)
    if rng.random() < 0.3:
        k = rng.choice(sorted(state))
        state[k] = torch.zeros(1).expand(*([rng.choice([1, 10**6])] * 2))
    extra = {}
    if rng.random() < 0.1:
        extra[rng.choice(["config", "version"])] = rng.choice([torch.zeros(2), 10**5000, "x"])
    save_checkpoint({"meta": meta, "model": state, **extra}, path)


def bomb(rng, path):
    with zipfile.ZipFile(io.BytesIO(PT_BYTES)) as src, zipfile.ZipFile(
        path, "w", zipfile.ZIP_DEFLATED
    ) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))


def put(path, data):
    with open(path, "wb") as fh:
        fh.write(data)


hlen = 8 + int.from_bytes(ST_BYTES[:8], "little")
pkl = PT_BYTES.find(b"data.pkl")
KINDS = [
    ("random", ".safetensors", lambda r, p: put(p,
        (r.randrange(1, 2**20)).to_bytes(8, "little") + b"{" + r.randbytes(r.randrange(400)))),
    ("random", ".pt", lambda r, p: put(p, r.randbytes(r.randrange(2000)))),
    ("truncated", ".safetensors", lambda r, p: put(p,
        ST_BYTES[: r.randrange(len(ST_BYTES))])),
    ("truncated", ".pt", lambda r, p: put(p, PT_BYTES[: r.randrange(len(PT_BYTES))])),
    ("header", ".safetensors", lambda r, p: put(p,
        flip(r, ST_BYTES, 0, hlen, r.choice([1, 2, 4])))),
    ("meta", ".safetensors", st_meta),
    ("meta", ".safetensors", st_meta),
    ("meta", ".safetensors", st_meta),
    ("state", ".safetensors", st_state),
    ("zip", ".pt", lambda r, p: put(p,
        flip(r, PT_BYTES, max(0, pkl - 64), pkl + 3000, r.choice([1, 2, 8])))),
    ("zip", ".pt", lambda r, p: put(p,
        flip(r, PT_BYTES, 0, len(PT_BYTES), r.choice([1, 4, 16])))),
    ("ckmeta", ".pt", pt_meta),
    ("ckmeta", ".pt", pt_meta),
    ("bomb", ".pt", bomb),
]

rng = random.Random(seed)
results, worst, start = {}, (0.0, ""), time.perf_counter()
for i in range(n_cases):
    kind, suffix, make = KINDS[i % len(KINDS)] if i < len(KINDS) else rng.choice(KINDS)
    path = f"{work}/case{i}{suffix}"
    make(rng, path)
    t0 = time.perf_counter()
    try:
        sknet.load(path)
        outcome = "loaded"
    except SKNetError as exc:
        outcome = "refused" if "\n" not in str(exc) and str(exc) else "multiline: " + repr(exc)
    except Exception as exc:
        outcome = f"BUG {type(exc).__name__}: {str(exc)[:300]}"
    dt = time.perf_counter() - t0
    worst = max(worst, (dt, f"case {i} ({kind})"))
    results.setdefault(kind, []).append(outcome)
    os.remove(path)
print(json.dumps({
    "seconds": time.perf_counter() - start,
    "worst_case": worst,
    "base_kib": base_kib,
    "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "bugs": [(k, o) for k, outs in results.items() for o in outs if o not in ("loaded", "refused")],
    "counts": {k: {o: outs.count(o) for o in set(outs)} for k, outs in results.items()},
}))
"""

FUZZ_CASES = 300
FUZZ_CASE_S = 5.0  # seconds for any one case (a good load of sknet_tiny takes ~0.05 s)
FUZZ_TOTAL_S = 40.0
FUZZ_EXTRA_KIB = 1024 * 1024  # peak memory above the baseline (a good load): 1 GiB


@pytest.mark.parametrize("seed", [15])
def test_fuzz_random_and_mutated_files(tmp_path: Path, seed: int) -> None:
    """A few hundred random, truncated, bit-flipped and mutated files (fixed seed), in a child
    process: every one loads or is refused with one line, in bounded time and memory."""
    env = {**os.environ, "SKNET_MAX_PARAMS": "1e9", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", FUZZ, str(tmp_path), str(FUZZ_CASES), str(seed)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["bugs"] == [], report["bugs"][:10]
    counts = report["counts"]
    assert sum(sum(c.values()) for c in counts.values()) == FUZZ_CASES
    assert sum(c.get("refused", 0) for c in counts.values()) > FUZZ_CASES // 2, counts
    assert report["worst_case"][0] < FUZZ_CASE_S, report["worst_case"]
    assert report["seconds"] < FUZZ_TOTAL_S, report["seconds"]
    extra = report["peak_kib"] - report["base_kib"]
    assert extra < FUZZ_EXTRA_KIB, f"peak memory {extra / 1024:.0f} MiB above the baseline"

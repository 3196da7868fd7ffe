"""Layering of weights I/O: models never import sknet.hub; weights are loaded into a model
built once; every loader of sknet.hub returns (model, record)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import torch

import sknet
from sknet.errors import DependencyError
from sknet.hub import load_model, load_timm, load_weights, save_weights
from sknet.hub.metadata import checkpoint_meta, read_checkpoint_meta, read_weights_meta
from sknet.models import _registry
from sknet.train.checkpoint import save_checkpoint

SRC = Path(sknet.__file__).parent


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_models_never_import_weights_io() -> None:
    banned = ("sknet.hub", "sknet.loading", "sknet.weights", "sknet.convert", "sknet.train")
    for path in sorted((SRC / "models").glob("*.py")):
        bad = [m for m in _imports(path) if m.startswith(banned)]
        assert not bad, f"{path.name} imports {bad}"
    for path in sorted((SRC / "hub").glob("*.py")):
        up = ("sknet.train", "sknet.predict", "sknet.analysis", "sknet.cli", "sknet.data")
        bad = [m for m in _imports(path) if m.startswith(up)]
        assert not bad, f"hub/{path.name} imports {bad}"


def test_create_model_builds_once_and_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    src = sknet.create_model("sknet_tiny", num_classes=7)
    path = save_weights(src, tmp_path / "w.safetensors", classes=[str(i) for i in range(7)])
    entry = _registry.get_entry("sknet_tiny")
    real = []

    def counting(*args: object, **kw: object) -> torch.nn.Module:
        if torch.empty(0).device.type != "meta":
            real.append(1)
        return entry.builder(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setitem(
        _registry._REGISTRY, "sknet_tiny", dataclasses.replace(entry, builder=counting)
    )
    model = sknet.create_model("sknet_tiny", checkpoint_path=path)
    assert len(real) == 1  # the model is built once; the checks run on the meta device
    for a, b in zip(model.state_dict().values(), src.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert model.class_names == tuple(str(i) for i in range(7))
    assert model.pretrained_record.num_classes == 7
    fresh = sknet.create_model("sknet_tiny", checkpoint_path=path, num_classes=3)
    assert fresh.num_classes == 3 and fresh.class_names is None


def test_create_model_without_a_weights_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_registry, "_WEIGHTS_LOADER", [])
    with pytest.raises(DependencyError, match="import sknet"):
        sknet.create_model("sknet_tiny", checkpoint_path=tmp_path / "w.safetensors")
    assert sknet.create_model("sknet_tiny").num_classes > 0  # no weights: no loader needed


def test_every_loader_returns_model_and_record(tmp_path: Path) -> None:
    src = sknet.create_model("sknet_tiny", num_classes=5)
    path = save_weights(src, tmp_path / "w.safetensors")
    for model, record in (load_model(path), load_weights(path), load_model("sknet_tiny")):
        assert isinstance(model, torch.nn.Module) and isinstance(record, sknet.ModelRecord)
        assert record.image_size == record.preprocess.input_size
    timm = pytest.importorskip("timm")
    ref = timm.create_model("skresnet18", pretrained=False, num_classes=4)
    model, record = load_timm(ref.state_dict(), "skresnet18")
    assert isinstance(model, sknet.SKNetModel) and record.source_kind == "converted"
    assert record.num_classes == 4 and record.name == "skresnet18"


def test_one_metadata_schema_for_weights_and_checkpoints(tmp_path: Path) -> None:
    model = sknet.create_model("sknet_tiny", num_classes=3)
    classes = ["a", "b", "c"]
    meta = checkpoint_meta(
        model,
        name="sknet_tiny",
        overrides={},
        classes=classes,
        image_size=32,
        data="synthetic",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )
    ck = tmp_path / "c.pt"
    save_checkpoint({"model": model.state_dict(), "meta": meta}, ck)
    from_ck = read_checkpoint_meta(torch.load(ck, weights_only=True), ck)
    w = save_weights(model, tmp_path / "w.safetensors", preprocess=from_ck.preprocess)
    from_w = read_weights_meta(w)
    for f in ("name", "arch", "num_classes", "in_chans", "preprocess"):
        assert getattr(from_ck, f) == getattr(from_w, f), f
    assert from_ck.classes == classes and from_w.classes is None

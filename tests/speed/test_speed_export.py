"""ONNX and torch.export round trips with a dynamic batch axis, and export's errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import sknet
from sknet.cli.main import main as cli
from sknet.export import export_model, load_pt2

# CI runs these natively and with the ISA capped to AVX2: exported graphs are checked against
# eager at a tolerance set by the ISA's kernels.
pytestmark = pytest.mark.machine_sensitive


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = sknet.create_model("sknet_tiny", num_classes=10).eval()
    for m in model.modules():  # non-trivial BN statistics, so folding is really exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
    return model


def test_onnx_runs_in_onnxruntime_at_two_batch_sizes(tiny, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path / "tiny.onnx"
    res = export_model(tiny, out)
    assert res.format == "onnx" and out.is_file()
    assert set(res.max_abs_diff) == {1, 3} and max(res.max_abs_diff.values()) <= 1e-4
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    assert inp.name == "images" and not isinstance(inp.shape[0], int)  # dynamic batch
    for batch in (2, 5):
        x = torch.randn(batch, 3, 48, 48)
        got = sess.run(None, {"images": x.numpy()})[0]
        with torch.no_grad():
            ref = tiny(x).numpy()
        assert got.shape == (batch, 10)
        assert np.abs(got - ref).max() <= 1e-4


def test_pt2_round_trip_at_two_batch_sizes(tiny, tmp_path: Path) -> None:
    out = tmp_path / "tiny.pt2"
    res = export_model(tiny, out, format="pt2")
    assert max(res.max_abs_diff.values()) <= 1e-4
    loaded = load_pt2(out)
    for batch in (2, 6):
        x = torch.randn(batch, 3, 48, 48)
        with torch.no_grad():
            assert (loaded(x) - tiny(x)).abs().max() <= 1e-4
    # without folding, too (the graph then holds the BNs)
    res = export_model(tiny, tmp_path / "raw.pt2", fuse=False)
    assert not res.fused and max(res.max_abs_diff.values()) <= 1e-4


def test_cli_exports_a_weights_file(tiny, tmp_path: Path, capsys) -> None:
    from sknet.weights import save_weights

    weights = save_weights(tiny, tmp_path / "w.safetensors", name="sknet_tiny")
    _, record = sknet.load(weights)
    assert record.image_size == 48
    out = tmp_path / "deep" / "w.pt2"
    assert cli(["export", str(weights), "--out", str(out)]) == 0
    assert out.is_file() and "max |exported - torch|" in capsys.readouterr().out
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert (load_pt2(out)(x) - tiny(x)).abs().max() <= 1e-4


def test_load_model_name() -> None:
    model, record = sknet.load("sknet_tiny", num_classes=7)
    assert (record.name, record.image_size, record.source_kind) == ("sknet_tiny", 48, "registry")
    assert record.provenance == {"init": "random"}
    assert model.num_classes == 7 and not model.training


def test_export_errors(tiny, tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="unknown export format"):
        export_model(tiny, tmp_path / "x.tflite")
    with pytest.raises(ValueError, match="too small"):
        export_model(tiny, tmp_path / "x.pt2", input_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        export_model(tiny, tmp_path / "x.pt2", batch_size=1)
    (tmp_path / "d.pt2").mkdir()
    with pytest.raises(ValueError, match="directory"):
        export_model(tiny, tmp_path / "d.pt2")
    with pytest.raises(FileNotFoundError):
        sknet.load(tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError):
        load_pt2(tmp_path / "missing.pt2")
    assert not list(tmp_path.glob("x.*")), "no partial files are left behind"
    # the CLI turns them into one-line errors
    assert cli(["export", "no_such_model", "--format", "onnx"]) == 1
    assert "sknet export: error:" in capsys.readouterr().err
    assert cli(["export", "sknet_tiny", "--out", str(tmp_path / "m.bin")]) == 1
    assert "--format" in capsys.readouterr().err

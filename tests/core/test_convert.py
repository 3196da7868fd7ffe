"""timm interoperability: converted weights give timm's outputs (max abs logit diff <= 1e-4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import sknet
from sknet.cli.main import main
from sknet.convert import from_timm, guess_timm_model, load_timm
from sknet.weights import load_weights, read_metadata

timm = pytest.importorskip("timm")

PAIRS = [
    ("skresnext50_32x4d", "sknet50"),
    ("resnext50_32x4d", "resnext50_32x4d"),
    ("seresnext50_32x4d", "senet50"),
]


def _timm_model(name: str, num_classes: int = 1000) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    for m in model.modules():  # non-trivial BN statistics, so a wrong mapping shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("timm_name,ours", PAIRS)
def test_outputs_equal_timm(timm_name: str, ours: str) -> None:
    ref = _timm_model(timm_name)
    assert guess_timm_model(ref.state_dict()) == ours
    model = load_timm(ref.state_dict(), ours)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        diff = (ref(x) - model(x)).abs().max().item()
    assert diff <= 1e-4
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters())


def test_wrong_model_is_rejected_with_names() -> None:
    state = _timm_model("resnext50_32x4d", num_classes=10).state_dict()
    with pytest.raises(ValueError, match="does not fit sknet50.*missing"):
        from_timm(state, "sknet50")
    with pytest.raises(ValueError, match="cannot tell the model"):
        guess_timm_model({"foo.weight": torch.zeros(1)})


def test_cli_convert_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = _timm_model("skresnext50_32x4d", num_classes=10)
    src = tmp_path / "timm.pth"
    torch.save(ref.state_dict(), src)
    dst = tmp_path / "sknet50.safetensors"
    assert main(["convert", "--from", "timm", str(src), str(dst)]) == 0
    assert "sknet50" in capsys.readouterr().out
    meta = read_metadata(dst)
    assert meta["sknet_model"] == "sknet50" and meta["num_classes"] == "10"
    model = load_weights(dst)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (ref(x) - model(x)).abs().max().item() <= 1e-4
    assert isinstance(model, sknet.SKNetModel)


def test_cli_convert_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    assert main(["convert", str(bad), str(tmp_path / "o.safetensors")]) == 1
    assert "not a readable torch state dict" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "missing.pth"), str(tmp_path / "o.safetensors")]) == 1
    assert "no such file" in capsys.readouterr().err
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_weights(bad_st)


def test_atomic_save_gives_ordinary_permissions_and_leaves_nothing_on_failure(
    tmp_path: Path,
) -> None:
    import os
    import stat

    from sknet.weights import atomic_save

    mask = os.umask(0o027)
    try:
        out = atomic_save(lambda tmp: Path(tmp).write_text("ok"), tmp_path / "a.txt")
    finally:
        os.umask(mask)
    assert out.read_text() == "ok"
    assert stat.S_IMODE(out.stat().st_mode) == 0o640  # 0666 minus the umask, not mkstemp's 0600

    def fail(tmp: str) -> None:
        Path(tmp).write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save(fail, tmp_path / "a.txt")
    assert out.read_text() == "ok" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]

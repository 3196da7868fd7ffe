"""timm/torchvision interoperability: converted weights give the source model's outputs.

Every source model is randomly initialised with randomised BN statistics (so a wrong mapping of
any tensor shows), converted, and compared in fp32 eval mode: max |logit diff| <= 1e-4.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import sknet
from sknet.cli.main import main
from sknet.convert import (
    from_timm,
    from_torchvision,
    guess_timm_model,
    guess_torchvision_model,
    load_timm,
    load_torchvision,
)
from sknet.weights import load_weights, read_metadata

PAIRS = [
    ("skresnext50_32x4d", "sknet50"),
    ("skresnet18", "skresnet18"),
    ("skresnet34", "skresnet34"),
    ("resnext50_32x4d", "resnext50_32x4d"),
    ("seresnext50_32x4d", "senet50"),
    ("resnext101_32x4d", "resnext101_32x4d"),
]


def _randomise_bn(model: torch.nn.Module) -> torch.nn.Module:
    for m in model.modules():  # non-trivial BN statistics, so a wrong mapping shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def _timm_model(name: str, num_classes: int = 1000) -> torch.nn.Module:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return _randomise_bn(timm.create_model(name, pretrained=False, num_classes=num_classes))


@pytest.mark.parametrize("timm_name,ours", PAIRS)
def test_outputs_equal_timm(timm_name: str, ours: str) -> None:
    ref = _timm_model(timm_name)
    assert guess_timm_model(ref.state_dict()) == ours
    model = load_timm(ref.state_dict(), ours)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        diff = (ref(x) - model(x)).abs().max().item()
    assert diff <= 1e-4
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters())


def test_skresnet_matches_timm_architecture() -> None:
    """The facts the SK-ResNet family reproduces: split input, dilated second path, d by stage."""
    model = sknet.create_model("skresnet18")
    units = model.sk_units()
    assert list(units) == [f"SK_{s}_{u}" for s in (2, 3, 4, 5) for u in (1, 2)]
    assert [units[f"SK_{s}_1"].attn_dim for s in (2, 3, 4, 5)] == [16, 16, 32, 64]
    unit = units["SK_3_1"]
    assert unit.split_input and unit.stride == 2
    assert [(s.kernel_size, s.dilation) for s in unit.specs] == [(3, 1), (3, 2)]
    assert unit.branches[1].conv.weight.shape == (128, 32, 3, 3)  # 64 inputs split in two
    params = {
        n: sum(p.numel() for p in sknet.create_model(n).parameters())
        for n in ("skresnet18", "skresnet34")
    }
    assert params == {"skresnet18": 11_958_056, "skresnet34": 22_282_376}  # timm: 11.96M/22.28M


def _torchvision_resnext50() -> torch.nn.Module:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return _randomise_bn(torchvision.models.resnext50_32x4d(weights=None))


def test_outputs_equal_torchvision() -> None:
    ref = _torchvision_resnext50()
    state = ref.state_dict()
    assert guess_torchvision_model(state) == "resnext50_32x4d"
    model = load_torchvision(state)
    assert model.model_name == "resnext50_32x4d"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        diff = (ref(x) - model(x)).abs().max().item()
    assert diff <= 1e-4
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters())


def test_torchvision_models_without_counterpart_are_refused() -> None:
    torchvision = pytest.importorskip("torchvision")
    with pytest.raises(ValueError, match="layer3 has 23 bottleneck units"):
        guess_torchvision_model(torchvision.models.resnext101_32x8d(weights=None).state_dict())
    state = torchvision.models.resnet50(weights=None).state_dict()  # same keys, no groups
    with pytest.raises(ValueError, match="torchvision state dict does not fit.*other shapes"):
        from_torchvision(state)
    with pytest.raises(ValueError, match="SK or SE keys.*--from timm"):
        guess_torchvision_model({"layer1.0.conv2.paths.0.conv.weight": torch.zeros(1)})


def test_cli_convert_torchvision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = _torchvision_resnext50()
    src = tmp_path / "resnext50_32x4d-7cdf4587.pth"
    torch.save(ref.state_dict(), src)
    dst = tmp_path / "resnext50.safetensors"
    assert main(["convert", "--from", "torchvision", str(src), str(dst)]) == 0
    assert "resnext50_32x4d" in capsys.readouterr().out
    assert read_metadata(dst)["converted_from"] == f"torchvision:{src.name}"
    model = load_weights(dst)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (ref(x) - model(x)).abs().max().item() <= 1e-4


def test_cli_convert_timm_skresnet18(tmp_path: Path) -> None:
    ref = _timm_model("skresnet18", num_classes=10)
    src = tmp_path / "skresnet18.pth"
    torch.save(ref.state_dict(), src)
    dst = tmp_path / "skresnet18.safetensors"
    assert main(["convert", "--from", "timm", str(src), str(dst)]) == 0
    assert read_metadata(dst)["sknet_model"] == "skresnet18"
    model = load_weights(dst)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ref(x) - model(x)).abs().max().item() <= 1e-4


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

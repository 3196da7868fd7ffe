"""Nothing lost, nothing silently wrong (issue 8): weights that come back as the same network,
files that are refused with one clear line, outputs that never overwrite their source."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sknet
from sknet._files import RunLock, atomic_save, check_output
from sknet.cli.main import is_user_error, main
from sknet.data import align_classes, load_image
from sknet.errors import FileFormatError, OutputError, RunDirError, SKNetError
from sknet.weights import save_weights

X = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------ weights keep the network


@pytest.mark.parametrize(
    "overrides",
    [
        {"sk_branches": ("3x3", "3x3 D3")},  # same tensor shapes as the default: was silent
        {"sk_kernel_mode": "full"},  # other shapes: was a raw size mismatch
        {"sk_attention": "shared", "sk_reduction": 8},
    ],
)
def test_weights_rebuild_the_network_they_were_saved_from(tmp_path: Path, overrides) -> None:
    model = sknet.create_model("sknet_tiny", num_classes=10, **overrides).eval()
    path = save_weights(model, tmp_path / "w.safetensors")
    loaded, record = sknet.load(path)
    with torch.no_grad():
        assert torch.equal(model(X), loaded(X))
    for key, value in overrides.items():
        got = record.arch[key]
        want = [str(v) for v in value] if isinstance(value, tuple) else value
        assert got == want, key


def test_weights_of_another_architecture_are_refused_naming_the_tensor(tmp_path: Path) -> None:
    path = save_weights(
        sknet.create_model("sknet_tiny", num_classes=10), tmp_path / "w.safetensors"
    )
    from safetensors.torch import load_file, save_file

    from sknet.weights import read_metadata

    meta = read_metadata(path)
    state = load_file(str(path))
    other = sknet.create_model("sknet_tiny", num_classes=10, sk_kernel_mode="full").state_dict()
    state.update({k: v for k, v in other.items() if k in state})  # shapes of another network
    save_file(state, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(FileFormatError) as exc:
        sknet.load(tmp_path / "bad.safetensors")
    msg = str(exc.value)
    assert "bad.safetensors does not fit sknet_tiny" in msg and "has shape" in msg
    assert "more)" in msg and msg.count("\n") == 0


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("model_overrides", "{not json", "'model_overrides' is not valid JSON"),
        ("num_classes", "ten", "'num_classes' = 'ten' is not an integer"),
        ("sknet_arch", "[1, 2", "'sknet_arch' is not valid JSON"),
        ("sknet_model", "sknet_9000", "does not know"),
    ],
)
def test_bad_metadata_is_one_line_naming_the_file(tmp_path: Path, key, value, match) -> None:
    from safetensors.torch import load_file, save_file

    from sknet.weights import read_metadata

    path = save_weights(sknet.create_model("sknet_tiny"), tmp_path / "w.safetensors")
    meta = {**read_metadata(path), key: value}
    save_file(load_file(str(path)), str(tmp_path / "m.safetensors"), metadata=meta)
    with pytest.raises(FileFormatError, match=match) as exc:
        sknet.load(tmp_path / "m.safetensors")
    assert "m.safetensors" in str(exc.value) and "\n" not in str(exc.value)


def test_files_of_the_previous_format_still_load(tmp_path: Path) -> None:
    """Format 1 files record only the name and the overrides."""
    from safetensors.torch import save_file

    model = sknet.create_model("sknet_tiny", num_classes=10, sk_aggregation="sum").eval()
    meta = {
        "sknet_model": "sknet_tiny",
        "num_classes": "10",
        "in_chans": "3",
        "model_overrides": json.dumps({"sk_aggregation": "sum"}),
    }
    save_file(model.state_dict(), str(tmp_path / "old.safetensors"), metadata=meta)
    loaded, record = sknet.load(tmp_path / "old.safetensors")
    assert record.arch["sk_aggregation"] == "sum" and record.classes is None
    with torch.no_grad():
        assert torch.equal(model(X), loaded(X))


def test_class_names_and_preprocessing_travel_with_the_weights(tmp_path: Path) -> None:
    model = sknet.create_model("sknet_tiny", num_classes=3)
    pre = {"input_size": 48, "resize": None, "mean": [0.5] * 3, "std": [0.25] * 3}
    path = save_weights(model, tmp_path / "w.safetensors", classes=["a", "b", "c"], preprocess=pre)
    loaded, record = sknet.load(path)
    assert record.classes == ("a", "b", "c") and loaded.class_names == ("a", "b", "c")
    assert record.preprocess.std == (0.25, 0.25, 0.25)
    with pytest.raises(ValueError, match="2 class names for a model with 3"):
        save_weights(model, tmp_path / "x.safetensors", classes=["a", "b"])


def test_another_num_classes_keeps_the_backbone(tmp_path: Path) -> None:
    model = sknet.create_model("sknet_tiny", num_classes=10).eval()
    path = save_weights(model, tmp_path / "w.safetensors", classes=[str(i) for i in range(10)])
    loaded, record = sknet.load(path, num_classes=4)
    assert record.num_classes == 4 and record.classes is None and loaded.num_classes == 4
    with torch.no_grad():
        assert torch.equal(model.forward_features(X), loaded.forward_features(X))


def test_deployed_models_are_inference_only(tmp_path: Path) -> None:
    fast = sknet.deploy(sknet.create_model("sknet_tiny"))
    with pytest.raises(SKNetError, match="deploy.*inference-only"):
        save_weights(fast, tmp_path / "w.safetensors")
    assert not (tmp_path / "w.safetensors").exists()
    with pytest.raises(SKNetError, match="inference-only"):
        fast.train()
    fast.eval()  # still fine
    assert not fast.training


# ------------------------------------------------------------------ checkpoints


def test_malicious_checkpoint_is_refused_without_unsafe_advice(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "last.pt"
    torch.save({"format": "sknet-train-checkpoint", "x": Evil()}, path)
    with pytest.raises(FileFormatError) as exc:
        sknet.load(path)
    msg = str(exc.value)
    assert "not an sknet checkpoint (corrupt, truncated or unsafe" in msg
    assert "weights_only" not in msg and "\n" not in msg
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------ output safety


def test_check_output_policy(tmp_path: Path) -> None:
    src = tmp_path / "run" / "model.safetensors"
    src.parent.mkdir()
    src.write_bytes(b"weights")
    with pytest.raises(OutputError, match="is the file this command reads"):
        check_output(src, sources=[src], force=True, suffixes=(".safetensors",))
    link = tmp_path / "alias.safetensors"
    link.symlink_to(src)
    with pytest.raises(OutputError, match="is the file this command reads"):
        check_output(link, sources=[src], force=True)
    with pytest.raises(OutputError, match=r"ending in \.json"):
        check_output(tmp_path / "x.safetensors", suffixes=(".json",))
    (tmp_path / "old.json").write_text("{}")
    with pytest.raises(OutputError, match="already exists; pass --force"):
        check_output(tmp_path / "old.json")
    assert check_output(tmp_path / "old.json", force=True) == tmp_path / "old.json"
    (tmp_path / "d.json").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        check_output(tmp_path / "d.json")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a directory"):
        check_output(tmp_path / "afile" / "sub" / "o.json")
    (src.parent / "metrics.csv").write_text("x")
    with pytest.raises(OutputError, match="run directory"):
        check_output(src.parent / "metrics.csv", protected_dirs=[src.parent], force=True)


def test_atomic_save_reports_file_system_faults_naming_the_path(
    tmp_path: Path, monkeypatch
) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OSError) as exc:
        atomic_save(lambda t: Path(t).write_text("y"), tmp_path / "afile" / "out.json")
    assert exc.value.filename == str(tmp_path / "afile" / "out.json") and is_user_error(exc.value)

    def disk_full(tmp: str) -> None:  # what torch.save raises when the disk fills up
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")

    with pytest.raises(OSError, match="cannot write .*w.pt: .*inline_container") as exc:
        atomic_save(disk_full, tmp_path / "w.pt")
    assert is_user_error(exc.value)
    assert list(tmp_path.iterdir()) == [tmp_path / "afile"], "no temporary file is left"

    import errno

    def read_only(src: str, dst: str) -> None:
        raise OSError(errno.EROFS, "Read-only file system", dst)

    monkeypatch.setattr(os, "replace", read_only)
    with pytest.raises(OSError, match="cannot write .*r.json: Read-only file system"):
        atomic_save(lambda t: Path(t).write_text("y"), tmp_path / "r.json")


def test_run_lock_is_exclusive(tmp_path: Path) -> None:
    with (
        RunLock(tmp_path / "run"),
        pytest.raises(RunDirError, match=f"in use by another sknet process \\(pid {os.getpid()}"),
    ):
        RunLock(tmp_path / "run").acquire()
    with RunLock(tmp_path / "run"):  # released on exit
        pass


# ------------------------------------------------------------------ images and classes


def test_16bit_grayscale_png_is_scaled_not_whitened(tmp_path: Path) -> None:
    arr = np.full((20, 20), 30000, dtype=np.uint16)
    arr[:10] = 1000
    Image.fromarray(arr).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    rgb = np.asarray(load_image(tmp_path / "g16.png"))
    assert rgb.shape == (20, 20, 3)
    assert rgb[15, 0, 0] == round(30000 / 257) and rgb[0, 0, 0] == round(1000 / 257)
    # 8-bit and palette/RGBA images convert as before
    Image.fromarray(np.full((4, 4, 4), 200, np.uint8), "RGBA").save(tmp_path / "a.png")
    assert np.asarray(load_image(tmp_path / "a.png"))[0, 0].tolist() == [200, 200, 200]


def test_align_classes_matches_by_name() -> None:
    class Folder:
        classes = ["b", "c"]
        samples = [("x/b/1.png", 0), ("x/c/1.png", 1)]

    ds = Folder()
    align_classes(ds, ["a", "b", "c"], "val")
    assert ds.targets == [1, 2] and ds.classes == ["a", "b", "c"]
    bad = Folder()
    bad.classes = ["b", "zebra"]
    with pytest.raises(SKNetError, match="zebra"):
        align_classes(bad, ["a", "b", "c"], "val")


# ------------------------------------------------------------------ CLI one-line errors


def test_info_counts_huge_inputs_without_running_them(capsys) -> None:
    assert main(["info", "sknet_tiny", "--input-size", "10000", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    row = out[0] if isinstance(out, list) else out
    # 707.4 GMACs at 10000 px (43,403x the 16.3 MMACs at 48 px), counted on the meta device
    assert row["input_size"] == 10000 and 7.0e11 < row["macs"] < 7.1e11


def test_unknown_device_is_refused(tmp_path: Path, capsys) -> None:
    save_weights(sknet.create_model("sknet_tiny"), tmp_path / "w.safetensors")
    assert main(["eval", str(tmp_path / "w.safetensors"), "--device", "tpu"]) == 1
    err = capsys.readouterr().err
    assert "unknown device 'tpu'" in err and "Traceback" not in err


def test_a_bug_gets_a_traceback_and_says_so(capsys, monkeypatch) -> None:
    import sknet.cli.info as info

    def broken(args):  # an error from inside a library, not a user error
        return torch.zeros(2) @ torch.zeros(3)

    monkeypatch.setattr(info, "run", broken)
    assert main(["info", "sknet_tiny"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "this is a bug in sknet" in err


def test_num_classes_must_be_an_int() -> None:
    with pytest.raises(ValueError, match="num_classes must be an int"):
        sknet.create_model("sknet_tiny", num_classes=True)


def test_half_precision_input_to_a_float_model_is_a_clear_error() -> None:
    model = sknet.create_model("sknet_tiny").eval()
    with pytest.raises(TypeError, match="input is torch.bfloat16 but the model's weights are"):
        model(X.to(torch.bfloat16))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(X.to(torch.bfloat16)).shape[0] == 2  # under autocast it is fine
    half = sknet.create_model("sknet_tiny").eval().to(torch.bfloat16)
    with torch.no_grad():
        assert half(X.to(torch.bfloat16)).dtype == torch.bfloat16


def test_model_and_training_overrides_share_one_checker_and_error_type() -> None:
    from sknet.errors import OverrideError
    from sknet.train import load_preset

    with pytest.raises(OverrideError, match="override 'sk_reduction': expected int"):
        sknet.create_model("sknet_tiny", sk_reduction="8")
    with pytest.raises(OverrideError, match="unknown override 'sk_reductoin'"):
        sknet.create_model("sknet_tiny", sk_reductoin=8)
    with pytest.raises(OverrideError, match="config key 'epochs': expected int"):
        load_preset("demo", epochs="3")
    with pytest.raises(OverrideError, match="unknown config key 'epoch'"):
        load_preset("demo", epoch=3)
    # JSON/TOML spell integral numbers as floats: accepted where an int is meant
    assert sknet.create_model("sknet_tiny", sk_reduction=8.0).model_config.sk_reduction == 8

"""Runs and commands that never lose work or report a wrong number (issue 8)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sknet
from sknet._files import RunLock
from sknet.cli.main import main
from sknet.errors import RunDirError, SKNetError
from sknet.train import evaluate_source, train

from .conftest import tiny_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("rel") / "run"
    train(tiny_config(model="sknet_tiny", epochs=1, checkpoint_every=2), run)
    return run


def _copy(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    (dst / ".lock").unlink(missing_ok=True)
    return dst


def _digest(path: Path) -> bytes:
    return path.read_bytes()


# ------------------------------------------------------------------ no output over its source


def test_eval_never_writes_over_the_weights_it_read(finished: Path, tmp_path: Path, capsys) -> None:
    run = _copy(finished, tmp_path / "run")
    before = _digest(run / "model.safetensors")
    for force in ([], ["--force"]):
        rc = main(["eval", str(run), "--out", str(run / "model.safetensors"), *force])
        assert rc == 1
        err = capsys.readouterr().err
        assert "the file this command reads" in err and "Traceback" not in err
    assert _digest(run / "model.safetensors") == before
    assert main(["eval", str(run), "--out", str(run / "metrics.csv"), "--force"]) == 1
    assert "ending in .json" in capsys.readouterr().err
    (tmp_path / "e.json").write_text("{}")
    assert main(["eval", str(run), "--out", str(tmp_path / "e.json")]) == 1
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main(["eval", str(run), "--out", str(tmp_path / "e.json"), "--force", "--json"]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["model"] == "sknet_tiny"


def test_export_and_convert_never_write_over_their_source(
    finished: Path, tmp_path: Path, capsys
) -> None:
    run = _copy(finished, tmp_path / "run")
    weights = run / "model.safetensors"
    before = _digest(weights)
    args = ["export", str(run), "--format", "onnx", "--out", str(weights), "--force"]
    assert main(args) == 1
    assert "the file this command reads" in capsys.readouterr().err
    assert main(["export", str(weights), "--format", "pt2", "--out", str(weights)]) == 1
    assert "the file this command reads" in capsys.readouterr().err
    assert main(["export", str(weights), "--format", "pt2", "--out", str(tmp_path / "m.onnx")]) == 1
    assert "ending in .pt2" in capsys.readouterr().err
    assert main(["convert", "--from", "timm", str(weights), str(weights), "--force"]) == 1
    assert "the file this command reads" in capsys.readouterr().err
    assert _digest(weights) == before
    existing = tmp_path / "x.safetensors"
    existing.write_bytes(b"keep me")
    assert main(["convert", "--from", "timm", str(weights), str(existing)]) == 1
    assert "already exists; pass --force" in capsys.readouterr().err
    assert existing.read_bytes() == b"keep me"


# ------------------------------------------------------------------ resume


def test_resume_is_refused_while_another_process_holds_the_run(
    finished: Path, tmp_path: Path
) -> None:
    run = _copy(finished, tmp_path / "run")
    rows = (run / "metrics.csv").read_text()
    cfg = tiny_config(model="sknet_tiny", epochs=1, checkpoint_every=2)
    with RunLock(run), pytest.raises(RunDirError, match="in use by another sknet process"):
        train(cfg, run, resume=True)
    assert (run / "metrics.csv").read_text() == rows, "the refused resume wrote nothing"
    # once the other process is gone, the resume goes through
    summary = train(cfg, run, resume=True)
    assert summary["epochs_done"] == 1 and summary["resumed"]


def test_resume_without_checkpoint_refuses_to_retrain_over_results(
    finished: Path, tmp_path: Path, capsys
) -> None:
    run = _copy(finished, tmp_path / "run")
    (run / "checkpoints" / "last.pt").unlink()
    before = _digest(run / "model.safetensors")
    with pytest.raises(RunDirError, match="holds results .*model.safetensors.* no checkpoints"):
        train(tiny_config(model="sknet_tiny", epochs=1, checkpoint_every=2), run, resume=True)
    assert _digest(run / "model.safetensors") == before
    assert main(["train", "--resume", str(run), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "would retrain from scratch" in err and "Traceback" not in err


def test_failed_start_leaves_no_run_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        train(tiny_config(data="cifar10", data_dir=str(tmp_path / "none")), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_out_under_a_file_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "f").write_text("x")
    assert main(["train", "--out", str(tmp_path / "f" / "run"), "--epochs", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path / "f") in err and "Not a directory" in err


# ------------------------------------------------------------------ classes by name


def _folder(root: Path, split_classes: dict[str, tuple[str, ...]], n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    levels = {"a": 30, "b": 120, "c": 220}
    for split, classes in split_classes.items():
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                v = levels[c]
                arr = rng.integers(v, v + 20, size=(36, 36, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    return root


def _if_cfg(root: Path, **kw):
    kw = {"epochs": 1, **kw}
    return tiny_config(data="imagefolder", data_dir=str(root), image_size=32, batch_size=6, **kw)


def test_val_classes_that_training_never_saw_are_an_error(tmp_path: Path) -> None:
    data = _folder(tmp_path / "d", {"train": ("a", "b"), "val": ("b", "c")})
    with pytest.raises(SKNetError, match="class.*c.*do not match"):
        train(_if_cfg(data), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_val_with_fewer_classes_is_matched_by_name(tmp_path: Path) -> None:
    data = _folder(tmp_path / "d", {"train": ("a", "b", "c"), "val": ("c",)})
    run = tmp_path / "run"
    train(_if_cfg(data, epochs=2, lr=0.1), run)
    _, record = sknet.load(run)
    assert record.classes == ("a", "b", "c")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["classes"] == ["a", "b", "c"] and summary["top5_err"] is None
    # every val image is of class "c" (index 2): predictions are checked against index 2,
    # not against index 0, the position of "c" in the val folder
    model, _ = sknet.load(run)
    res = evaluate_source(run, sizes=[32])
    assert res["results"][0]["n"] == 6
    preds = _predict(model, data / "val" / "c")
    expected_err = 100.0 * float((preds != 2).float().mean())
    assert res["results"][0]["top1_err"] == pytest.approx(expected_err, abs=1e-3)


def _predict(model, folder: Path) -> torch.Tensor:
    from sknet.data import eval_transform, load_image

    tf = eval_transform("imagenet", 32)
    x = torch.stack([tf(load_image(p)) for p in sorted(folder.iterdir())])
    with torch.no_grad():
        return model.eval()(x).argmax(1)


def test_eval_data_dir_classes_are_checked_against_the_run(tmp_path: Path, capsys) -> None:
    data = _folder(tmp_path / "d", {"train": ("a", "b"), "val": ("a", "b")})
    run = tmp_path / "run"
    train(_if_cfg(data), run)
    other = _folder(tmp_path / "o", {"val": ("b", "c")})
    assert main(["eval", str(run), "--data-dir", str(other), "--sizes", "32"]) == 1
    err = capsys.readouterr().err
    assert "do not match" in err and "Traceback" not in err


def test_one_class_is_refused(tmp_path: Path) -> None:
    data = _folder(tmp_path / "d", {"train": ("a",), "val": ("a",)})
    with pytest.raises(SKNetError, match="at least 2 classes"):
        train(_if_cfg(data), tmp_path / "run")


def test_16bit_images_train_as_what_they_show(tmp_path: Path) -> None:
    """A 16-bit PNG of value 30000 is mid-grey (117), not white."""
    from sknet.data import build_imagefolder

    d = tmp_path / "d" / "train" / "a"
    d.mkdir(parents=True)
    Image.fromarray(np.full((8, 8), 30000, np.uint16)).save(d / "g.png")
    ds = build_imagefolder(tmp_path / "d", "train")
    img, _ = ds[0]
    assert np.asarray(img).max() == 117


def test_checkpoints_carry_class_names_and_the_full_config(finished: Path) -> None:
    from sknet.train import load_checkpoint

    ck = load_checkpoint(finished / "checkpoints" / "last.pt")
    assert ck["meta"]["classes"] == list(sknet.data.SHAPE_CLASSES)
    assert ck["meta"]["arch"]["sk_branches"] == [3, 5]
    _, record = sknet.load(finished / "checkpoints" / "last.pt")
    assert record.classes == tuple(sknet.data.SHAPE_CLASSES)

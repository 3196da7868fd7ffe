"""The ``sknet train`` and ``sknet eval`` command lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sknet
from sknet.cli.main import main
from sknet.train import load_config_file, load_preset
from sknet.weights import save_weights

TINY = [
    "--model", "resnext_tiny", "--image-size", "32", "--num-samples", "64", "--epochs", "1",
    "--batch-size", "16", "--threads", "1", "--no-progress", "--no-tensorboard",
    "--set", "val_samples=30",
]  # fmt: skip


def test_show_config_applies_flags_and_sets(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--show-config", "--epochs", "3", "--lr", "0.05", "--set", "amp=bf16"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "epochs = 3\n" in text and "lr = 0.05\n" in text and 'amp = "bf16"' in text
    assert 'model = "sknet_tiny"' in text  # the demo preset is the default


def test_presets_can_be_listed_printed_and_reused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--list-presets"]) == 0
    listed = capsys.readouterr().out
    for name in ("demo", "cifar", "imagenet", "imagenet-light"):
        assert name in listed
    assert main(["train", "--print-preset", "imagenet"]) == 0
    path = tmp_path / "mine.toml"
    path.write_text(capsys.readouterr().out)
    assert load_config_file(path) == load_preset("imagenet").replace(preset="")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "epoch=3"], "unknown config key 'epoch' (did you mean 'epochs'?)"),
        (["--epochs", "-1"], "epochs must be >= 1"),
        (["--model", "sknet_tiyn"], "did you mean sknet_tiny"),
        (["--preset", "cifar"], "needs a data directory"),
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--config", "/nonexistent/x.toml"], "no config file at"),
        (["--resume", "/nonexistent/run"], "not a run directory"),
    ],
)
def test_user_errors_are_one_line(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = [] if "--resume" in args else ["--out", str(tmp_path / "r")]
    assert main(["train", *args, *out]) == 1
    err = capsys.readouterr().err.strip()
    assert expected in err
    assert err.startswith("sknet train: error:") and len(err.splitlines()) == 1, err


def test_train_then_eval_run_dir_checkpoint_and_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "val top-1 err" in out and str(run) in out
    summary = json.loads((run / "summary.json").read_text())

    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert "top-1 err" in out and "top-5 err" in out
    res = json.loads((run / "eval.json").read_text())
    assert res["model"] == "resnext_tiny" and res["data"] == "synthetic"
    (r,) = res["results"]
    assert r["size"] == 32 and r["n"] == 30
    assert r["top1_err"] == pytest.approx(summary["top1_err"], abs=1e-3)

    out_json = tmp_path / "two.json"
    ck = run / "checkpoints" / "last.pt"
    assert main(["eval", str(ck), "--sizes", "32", "48", "--out", str(out_json)]) == 0
    assert f"wrote {out_json}" in capsys.readouterr().out
    two = json.loads(out_json.read_text())
    assert [x["size"] for x in two["results"]] == [32, 48]
    assert two["results"][0]["top1_err"] == pytest.approx(r["top1_err"], abs=1e-3)

    assert main(["eval", str(run / "model.safetensors"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["results"][0]["top1_err"] == pytest.approx(r["top1_err"], abs=1e-3)

    # Resuming a finished run cannot change what it computes.
    assert main(["train", "--resume", str(run), "--lr", "0.3"]) == 1
    assert "cannot change lr when resuming" in capsys.readouterr().err


def test_eval_foreign_weights_needs_and_takes_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Weights as `sknet convert` writes them: model metadata only, no training metadata.
    model = sknet.create_model("resnext_tiny", num_classes=10)
    path = save_weights(model, tmp_path / "w.safetensors")
    assert main(["eval", str(path)]) == 1
    assert "pass --data" in capsys.readouterr().err
    args = ["eval", str(path), "--data", "synthetic", "--val-samples", "20", "--sizes", "48"]
    assert main([*args, "--out", str(tmp_path / "e.json")]) == 0
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["results"][0]["n"] == 20 and res["results"][0]["size"] == 48
    assert main(["eval", str(tmp_path / "missing.safetensors")]) == 1
    assert "no run directory, checkpoint or weights file" in capsys.readouterr().err

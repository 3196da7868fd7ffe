"""Real-data paths: imagefolder with corrupt images (skipped, counted, limited), missing data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sknet.cli.main import main
from sknet.train import evaluate_source, train

from .conftest import tiny_config


def _image_folder(
    root: Path, n_per_class: int = 12, corrupt: int = 0, corrupt_val: int = 0
) -> list[str]:
    """Two classes (dark / bright) of 36x36 PNGs in train/ and val/, some of them corrupt."""
    rng = np.random.default_rng(0)
    bad: list[str] = []
    for split in ("train", "val"):
        for c, name in enumerate(("dark", "bright")):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n_per_class):
                base = 40 + 150 * c
                arr = rng.integers(base, base + 60, size=(36, 36, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i:03d}.png")
    for i in range(corrupt):
        p = root / "train" / ("dark", "bright")[i % 2] / f"{i:03d}.png"
        p.write_bytes(b"this is not a png" * 4)
        bad.append(str(p))
    for i in range(corrupt_val):
        p = root / "val" / "bright" / f"{i:03d}.png"
        p.write_bytes(b"\x89PNG truncated")
        bad.append(str(p))
    return bad


def _cfg(root: Path, **kw):
    return tiny_config(
        data="imagefolder",
        data_dir=str(root),
        image_size=32,
        epochs=1,
        batch_size=8,
        crop_scale=(0.5, 1.0),
        **kw,
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_images_are_skipped_and_reported(tmp_path: Path, workers: int) -> None:
    bad = _image_folder(tmp_path / "data", corrupt=3, corrupt_val=1)
    run_dir = tmp_path / "run"
    summary = train(_cfg(tmp_path / "data", workers=workers, max_bad=5), run_dir)
    assert summary["bad_images"] == 4
    assert sorted(summary["bad_files"]) == sorted(bad)
    # 24 val images, one unreadable: counted once as missing, never replaced by another image.
    assert summary["num_classes"] == 2 and summary["val_n"] == 23
    log = (run_dir / "train.log").read_text()
    for p in bad:
        assert p in log
    assert "4 unreadable image(s)" in (run_dir / "summary.txt").read_text()
    if workers == 0:
        # a 32 px folder model: its native size only (the 320/224 row is for ImageNet-scale
        # models), resize then centre crop
        res = evaluate_source(run_dir)
        assert [(r["size"], r["resize"], r["n"]) for r in res["results"]] == [(32, 37, 23)]
        res = evaluate_source(run_dir, sizes=[32, 46])  # other sizes on request
        assert [(r["size"], r["resize"], r["n"]) for r in res["results"]] == [
            (32, 37, 23),
            (46, 53, 23),
        ]
        assert res["results"][0]["top1_err"] == pytest.approx(summary["top1_err"], abs=1e-3)


def test_too_many_corrupt_images_fail_clearly(tmp_path: Path) -> None:
    _image_folder(tmp_path / "data", corrupt=4)
    with pytest.raises(RuntimeError, match=r"unreadable image.*max_bad=2") as exc:
        train(_cfg(tmp_path / "data", max_bad=2), tmp_path / "run")
    assert "Traceback" not in str(exc.value)
    assert ".png" in str(exc.value)


def test_cli_reports_corrupt_images_and_missing_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _image_folder(tmp_path / "data", corrupt=2)
    args = [
        "train", "--data", "imagefolder", "--data-dir", str(tmp_path / "data"),
        "--model", "resnext_tiny", "--image-size", "32", "--epochs", "1", "--batch-size", "8",
        "--threads", "1", "--no-progress", "--no-tensorboard", "--workers", "1",
    ]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "ok")]) == 0
    out = capsys.readouterr().out
    assert "skipped 2 unreadable image(s)" in out
    assert json.loads((tmp_path / "ok" / "summary.json").read_text())["bad_images"] == 2

    assert main([*args, "--set", "max_bad=1", "--out", str(tmp_path / "fail")]) == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("sknet train: error:") and "max_bad=1" in last, err
    assert "unreadable image" in last and "Traceback" not in err

    none = ["--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "c10")]
    assert main(["train", "--data", "cifar10", *none]) == 1
    assert not (tmp_path / "c10").exists(), "a failed start leaves no run directory"
    err = capsys.readouterr().err.strip()
    assert "cifar10: missing" in err and "Nothing is downloaded" in err
    assert len(err.splitlines()) == 1

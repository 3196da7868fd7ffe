"""Run directories and checkpoints written by an earlier sknet still resume and evaluate.

The fixtures in ``data/`` were written by sknet at commit 2cfb918 (the trainer before it was
split into short steps) with torch 2.14.1 on the CPU; ``data/make_old_run.py`` says how.
``old_run`` was killed after its mid-epoch checkpoint at global step 8 (epoch 2, step 2 of 6);
``old_run_final`` is the same run uninterrupted.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import sknet
from sknet.cli.main import main
from sknet.train import evaluate_source, load_checkpoint, weights_digest

DATA = Path(__file__).parent / "data"


def _copy(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(DATA / name, tmp_path / name))


def _metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_old_mid_epoch_checkpoint_resumes_to_the_uninterrupted_weights(tmp_path: Path) -> None:
    run = _copy("old_run", tmp_path)
    pos = load_checkpoint(run / "checkpoints" / "last.pt")["position"]
    assert pos == {"epoch": 1, "step_in_epoch": 2, "global_step": 8}  # mid-epoch
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0

    ref_dir = DATA / "old_run_final"
    ref_summary = json.loads((ref_dir / "summary.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed"] and summary["steps"] == ref_summary["steps"] == 12
    ref = load_file(str(ref_dir / "model.safetensors"))
    got = load_file(str(run / "model.safetensors"))
    assert ref.keys() == got.keys()
    # Bit-identical on the torch that wrote the fixture; other versions may round differently.
    same_torch = ref_summary["torch"] == torch.__version__
    for k in ref:
        if same_torch or not ref[k].is_floating_point():
            assert torch.equal(ref[k], got[k]), f"{k} differs from the uninterrupted run"
        else:
            torch.testing.assert_close(got[k], ref[k], rtol=1e-3, atol=1e-4)
    rows, ref_rows = _metrics(run), _metrics(ref_dir)
    assert [(r["epoch"], r["step"]) for r in rows] == [("1", "6"), ("2", "12")]
    assert [(r["epoch"], r["step"]) for r in ref_rows] == [("1", "6"), ("2", "12")]
    if same_torch:
        for key in ("lr", "train_loss", "val_loss", "val_top1_err"):
            assert [r[key] for r in rows] == [r[key] for r in ref_rows], key
    # the weights file written now records the run's classes and full architecture
    model, record = sknet.load(run)
    assert record.classes == tuple(sknet.data.SHAPE_CLASSES)
    assert record.arch["stage_out"] == [8, 16, 16] and len(model.sk_units()) == 3


def test_old_run_directory_and_checkpoint_load_and_evaluate(tmp_path: Path) -> None:
    final = _copy("old_run_final", tmp_path)
    ref_summary = json.loads((final / "summary.json").read_text())
    model, record = sknet.load(final)
    assert record.name == "sknet_tiny" and record.num_classes == 10
    assert record.image_size == 24 and record.data == "synthetic"
    res = evaluate_source(final)
    (r,) = res["results"]
    assert r["size"] == 24 and r["n"] == ref_summary["val_n"] == 16
    assert r["top1_err"] == pytest.approx(ref_summary["top1_err"], abs=1e-3)

    killed = _copy("old_run", tmp_path)
    ck_model, ck_record = sknet.load(killed / "checkpoints" / "last.pt")
    assert ck_record.source_kind == "checkpoint" and ck_record.classes == record.classes
    assert weights_digest(ck_model) != weights_digest(model)  # 4 steps before the end
    assert main(["eval", str(killed / "checkpoints" / "last.pt"), "--json"]) == 0

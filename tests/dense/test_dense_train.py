"""SK detectors and segmenters through the run machinery: train, resume, eval, predict, study.

Tiny settings (64 px canvases, tens of images, one epoch): these check that every path works
and what it writes, not how good the models get (README's "Beyond classification" has that).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import sknet
from sknet.cli.main import main
from sknet.data.dense import SyntheticDense, write_coco_folder
from sknet.dense import load_dense
from sknet.errors import ConfigError, FileFormatError
from sknet.train import load_preset, train
from sknet.train.dense import DenseTrainer

TINY = {
    "image_size": 64,
    "object_sizes": [8.0, 32.0],
    "num_samples": 24,
    "val_samples": 8,
    "epochs": 1,
    "batch_size": 8,
    "fpn_channels": 32,
    "checkpoint_every": 0,
    "tensorboard": False,
    "eval_every": 1,
}


def _sets(d: dict) -> list[str]:
    out = []
    for k, v in d.items():
        out += ["--set", f"{k}={json.dumps(v).lower() if isinstance(v, bool) else json.dumps(v)}"]
    return out


def _scene(tmp_path: Path, index: int = 0) -> Path:
    image, _ = SyntheticDense(4, image_size=64, object_sizes=(8, 32), split="test")[index]
    path = tmp_path / f"scene{index}.png"
    Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy()).save(path)
    return path


def test_dense_tasks_are_checked_in_the_config() -> None:
    with pytest.raises(ConfigError, match="needs data synthetic-dense or coco"):
        load_preset("demo", task="detect")
    with pytest.raises(ConfigError, match="for task detect or segment"):
        load_preset("demo", head="fcos")
    with pytest.raises(ConfigError, match="must be one of fcos"):
        load_preset("detect-demo", head="fpn")
    with pytest.raises(ConfigError, match="mixup_alpha is for classification"):
        load_preset("detect-demo", mixup_alpha=0.2)
    with pytest.raises(ConfigError, match="a dense data set"):
        load_preset("demo", data="coco")
    assert load_preset("segment-demo").resolved_head() == "fpn"
    assert load_preset("detect-demo").resolved_image_size() == 96


def test_detector_trains_evaluates_and_predicts_from_the_cli(tmp_path, capsys) -> None:
    run = tmp_path / "det"
    argv = ["train", "--task", "detect", "--head", "fcos", "--out", str(run), *_sets(TINY)]
    assert main(argv) == 0
    line = capsys.readouterr().out
    assert "fcos over sknet_tiny on synthetic-dense: mAP" in line
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "detect" and summary["head"] == "fcos"
    for key in ("map", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "bins"):
        assert key in summary["val"], key
    assert 0 <= summary["val"]["map"] <= 100
    assert not (run / ".lock").exists()
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,step,lr,train_loss,val_map")
    assert "mAP" in (run / "summary.txt").read_text()

    # eval: the same numbers as the run's own last evaluation (same data, same weights)
    out = tmp_path / "eval.json"
    assert main(["eval", str(run), "--json", "--out", str(out)]) == 0
    capsys.readouterr()
    res = json.loads(out.read_text())
    assert res["map"] == pytest.approx(summary["val"]["map"], abs=1e-6)
    assert res["n_images"] == TINY["val_samples"]
    assert main(["eval", str(run), "--size-bins", "coco", "--json"]) == 0
    coco = json.loads(capsys.readouterr().out)
    assert [b[0] for b in coco["bins"]] == ["small", "medium", "large"]
    assert coco["bins"][1][1] == 32  # COCO's fixed edges

    # predict: boxes in the original image's pixels, a drawing per image with --explain
    img = _scene(tmp_path)
    pred_csv, figs = tmp_path / "pred.csv", tmp_path / "figs"
    code = main(
        ["predict", str(run), str(img), "--score-threshold", "0.0", "--out", str(pred_csv),
         "--explain", str(figs)]
    )  # fmt: skip
    assert code == 0
    rows = pred_csv.read_text().splitlines()
    assert rows[0].startswith("image,label,score,x0,y0,x1,y1")
    assert len(rows) > 1  # threshold 0: the detector returns its top detections
    assert list(figs.glob("*.png"))

    # analyze: the forced-branch test and per-object attention vs size of this run
    an = tmp_path / "analysis"
    assert main(["analyze", str(run), "--out", str(an), "--num-images", "8"]) == 0
    report = (an / "report.md").read_text()
    assert "small branch only" in report and "Spearman" in report
    forced = json.loads((an / "forced_branch.json").read_text())
    assert set(forced) >= {"normal", "small", "large", "delta_small", "delta_large"}
    assert (an / "object_attention.png").is_file()

    # classifier-only commands say what the file is instead of a misleading error
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(tmp_path / "m.onnx")]) != 0
    assert "detector or segmenter, not a classifier" in capsys.readouterr().err


def test_a_detection_run_killed_mid_epoch_resumes_to_the_same_weights(
    tmp_path, monkeypatch
) -> None:
    cfg = load_preset("detect-demo", **{**TINY, "checkpoint_every": 2, "epochs": 2})
    whole = train(cfg, tmp_path / "whole")

    original = DenseTrainer.save_checkpoint

    def save_then_die(self, *, is_best=False):  # the process dies right after a checkpoint
        original(self, is_best=is_best)
        if self.state.global_step == 4:
            raise KeyboardInterrupt

    run = tmp_path / "run"
    monkeypatch.setattr(DenseTrainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run)
    monkeypatch.setattr(DenseTrainer, "save_checkpoint", original)
    assert not (run / "model.safetensors").exists()
    assert (run / "checkpoints" / "last.pt").is_file()
    resumed = train(cfg, run, resume=True)
    assert resumed["epochs_done"] == 2 and resumed["resumed"]
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < 1e-5, worst
    assert resumed["val"]["map"] == pytest.approx(whole["val"]["map"], abs=1e-6)


def test_segmenter_trains_and_reloads_with_its_build(tmp_path) -> None:
    cfg = load_preset("segment-demo", **TINY)
    summary = train(cfg, tmp_path / "seg")
    assert 0 <= summary["val"]["miou"] <= 100
    model, record = load_dense(tmp_path / "seg")
    assert model.task == "segment" and record["classes"] == list(sknet.data.SHAPE_CLASSES)
    assert record["preprocess"].mean == (0.5, 0.5, 0.5)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
    assert out[0]["semantic"].shape == (64, 64)


def test_coco_format_folder_trains_and_evaluates(tmp_path) -> None:
    root = tmp_path / "coco"
    for split, n in (("train", 16), ("val", 6)):
        write_coco_folder(SyntheticDense(n, image_size=64, object_sizes=(8, 32), split=split),
                          root, split)  # fmt: skip
    cfg = load_preset(
        "detect-demo", **{**TINY, "data": "coco", "data_dir": str(root), "num_samples": 1}
    )
    summary = train(cfg.replace(head="retinanet"), tmp_path / "run")
    assert summary["data"] == "coco" and summary["classes"] == list(sknet.data.SHAPE_CLASSES)
    assert summary["val"]["n_images"] == 6


def test_a_hostile_dense_file_is_refused_in_one_line(tmp_path) -> None:
    cfg = load_preset("detect-demo", **TINY)
    train(cfg, tmp_path / "run")
    path = tmp_path / "run" / "model.safetensors"
    tensors = load_file(str(path))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        meta = dict(fh.metadata())
    build = json.loads(meta["sknet_dense"])
    for change, pattern in (
        ({"num_classes": 10**9}, "outside"),
        ({"backbone": "evil; rm -rf"}, "not one of sknet's"),
        ({"image_size": 10**7}, "outside"),
        ({"head": "fpn"}, "not one of sknet's"),
    ):
        bad = tmp_path / "bad.safetensors"
        save_file(
            tensors, str(bad), metadata={**meta, "sknet_dense": json.dumps({**build, **change})}
        )
        with pytest.raises(FileFormatError, match=pattern):
            load_dense(bad)
    nan = {k: v.clone() for k, v in tensors.items()}
    key = next(k for k, v in nan.items() if v.is_floating_point() and v.numel())
    nan[key].view(-1)[0] = float("nan")
    save_file(nan, str(tmp_path / "nan.safetensors"), metadata=meta)
    with pytest.raises(FileFormatError):
        load_dense(tmp_path / "nan.safetensors")


def test_a_detector_starts_from_a_classifier_run_with_frozen_bn(tmp_path) -> None:
    from sknet.layers.norm import FrozenBatchNorm2d

    cls = train(
        load_preset(
            "demo", image_size=32, num_samples=64, val_samples=16, epochs=1, batch_size=16,
            tensorboard=False, checkpoint_every=0,
        ),
        tmp_path / "cls",
    )  # fmt: skip
    cfg = load_preset("detect-demo", **{**TINY, "init": cls["run_dir"]})
    summary = train(cfg, tmp_path / "det")
    assert summary["init"]["init"] == cls["run_dir"]
    model, record = load_dense(tmp_path / "det")
    assert model.frozen_bn and record["build"]["frozen_bn"]
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.backbone.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules())
    # the classifier's BN statistics were carried over and stayed fixed
    clf, _ = sknet.load(tmp_path / "cls")
    mine = model.backbone.state_dict()
    theirs = clf.state_dict()
    key = next(k for k in mine if k.endswith("running_mean"))
    assert torch.equal(mine[key], theirs[key])


def test_segmenter_on_a_coco_folder_evaluates_and_predicts(tmp_path, capsys) -> None:
    root = tmp_path / "coco"
    for split, n in (("train", 16), ("val", 4)):
        write_coco_folder(SyntheticDense(n, image_size=64, object_sizes=(8, 32), split=split),
                          root, split)  # fmt: skip
    run = tmp_path / "seg"
    argv = ["train", "--task", "segment", "--data", "coco", "--data-dir", str(root),
            "--out", str(run), *_sets({**TINY, "num_samples": 1})]  # fmt: skip
    assert main(argv) == 0
    assert "fpn over sknet_tiny on coco: mIoU" in capsys.readouterr().out
    assert main(["eval", str(run), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["task"] == "segment" and res["n_images"] == 4 and 0 <= res["miou"] <= 100
    img = next((root / "val").glob("*.png"))
    out, figs = tmp_path / "seg.json", tmp_path / "figs"
    assert main(["predict", str(run), str(img), "--out", str(out), "--explain", str(figs)]) == 0
    doc = json.loads(out.read_text())
    assert doc["task"] == "segment"
    row = doc["images"][0]
    assert set(row) == {"image", *(f"pixels_{c}" for c in sknet.data.SHAPE_CLASSES)}
    assert len(list(figs.glob("*.png"))) == 1

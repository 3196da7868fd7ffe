"""timm's SKNet-50 weights, converted with `sknet convert`, then `sknet eval` and `sknet analyze`
over an ImageFolder.

This is how a user evaluates and probes the published ImageNet model: convert timm's state dict,
then evaluate at 224 and 320 (Table 2's protocol) and analyse the val split of an ImageNet-style
folder. Random timm weights and a 3-class folder of random
PNGs stand in for both here; the test checks that every one of SKNet-50's 16 SK units is
recorded at every zoom with valid attention.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sknet.cli.main import main

timm = pytest.importorskip("timm")


def test_eval_and_analyze_timm_converted_sknet50_on_an_image_folder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = timm.create_model("skresnext50_32x4d", pretrained=False, num_classes=3).eval()
    src, weights = tmp_path / "timm.pth", tmp_path / "sknet50.safetensors"
    torch.save(ref.state_dict(), src)
    assert main(["convert", "--from", "timm", str(src), str(weights)]) == 0

    rng = np.random.default_rng(0)
    for c in ("ant", "bee", "cat"):
        d = tmp_path / "imagenet" / "val" / c
        d.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(d / f"{i}.png")

    data = ["--data", "imagefolder", "--data-dir", str(tmp_path / "imagenet")]
    assert (
        main(["eval", str(weights), *data, "--threads", "1", "--out", str(tmp_path / "e.json")])
        == 0
    )
    res = json.loads((tmp_path / "e.json").read_text())
    assert [(r["size"], r["n"]) for r in res["results"]] == [(224, 6), (320, 6)]
    # 3 classes: every label is in the top 5, so top-5 error says nothing and is None (n/a)
    assert all(0.0 <= r["top1_err"] <= 100.0 and r["top5_err"] is None for r in res["results"])

    out = tmp_path / "analysis"
    argv = ["analyze", str(weights), "--out", str(out), "--data", "imagefolder"]
    argv += ["--data-dir", str(tmp_path / "imagenet"), "--image-size", "64", "--threads", "1"]
    assert main([*argv, "--num-images", "6", "--batch-size", "3", "--quiet"]) == 0

    doc = json.loads((out / "attention.json").read_text())
    units = doc["unit_order"]
    assert len(units) == 16 and units[0] == "SK_2_1" and units[-1] == "SK_5_3"
    assert doc["num_images"] == 6 and doc["protocol"]["zoom_method"] == "center-crop-resize"
    for u in units:
        for z in ("1", "1.5", "2"):
            entry = doc["units"][u]["zooms"][z]
            assert math.isclose(sum(entry["branch_mean"]), 1.0, abs_tol=1e-5)
            assert math.isfinite(entry["mean_diff"])
    assert (out / "fig3_depth.png").stat().st_size > 2000
    assert "SK_5_3" in (out / "report.md").read_text()

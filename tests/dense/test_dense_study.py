"""The dense study (``sknet ablate dense``): paired statistics, and a tiny grid end to end."""

from __future__ import annotations

import json

import pytest

from sknet.analysis.dense_study import holm, paired_stats, sign_flip_p, study_rows
from sknet.cli.main import main


def test_study_rows_isolate_select() -> None:
    rows = {r.name: r for r in study_rows("sknet_tiny")}
    assert rows["SKNet"].model == "sknet_tiny" and rows["ResNeXt"].model == "resnext_tiny"
    assert rows["SENet"].model == "senet_tiny"
    assert rows["SK-sum"].model == "sknet_tiny"
    assert rows["SK-sum"].overrides["sk_aggregation"] == "sum"


def test_sign_flip_p_is_exact() -> None:
    # all five differences positive: only the all-plus and all-minus patterns are as extreme
    assert sign_flip_p([1, 2, 3, 4, 5]) == pytest.approx(2 / 32)
    assert sign_flip_p([1, -1, 1, -1]) == 1.0
    assert sign_flip_p([1.0]) is None


def test_paired_stats_and_holm() -> None:
    st = paired_stats([3, 4, 5], [1, 2, 3])
    assert st["mean"] == 2 and st["sd"] == 0 and st["ci95"] == [2, 2]
    st = paired_stats([1, 3, 5], [0, 0, 0])
    assert st["mean"] == 3 and st["sd"] == 2
    half = 4.303 * 2 / 3**0.5
    assert st["ci95"] == pytest.approx([3 - half, 3 + half])
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([None, 0.5]) == [None, 0.5]


@pytest.mark.slow
def test_tiny_dense_study_end_to_end(tmp_path, capsys) -> None:
    out = tmp_path / "study"
    sets = {
        "image_size": 64, "object_sizes": [8.0, 32.0], "num_samples": 16, "val_samples": 6,
        "epochs": 1, "batch_size": 8, "fpn_channels": 32, "tensorboard": False,
        "checkpoint_every": 0,
    }  # fmt: skip
    args = ["ablate", "dense", "--preset", "detect-demo", "--seeds", "0", "1", "--out", str(out)]
    for k, v in sets.items():
        args += ["--set", f"{k}={json.dumps(v).lower() if isinstance(v, bool) else json.dumps(v)}"]
    assert main([*args, "--quiet"]) == 0
    doc = json.loads((out / "study.json").read_text())
    assert [r["name"] for r in doc["rows"]] == ["SKNet", "ResNeXt", "SENet", "SK-sum"]
    for r in doc["rows"]:
        assert len(r["map"]) == 2 and r["params"] > 0 and r["macs"] > 0
    comps = doc["comparisons"]["map"]
    assert [c["versus"] for c in comps] == ["ResNeXt", "SENet", "SK-sum"]
    assert all(c["n"] == 2 for c in comps)
    t = doc["timing"]
    assert t["infer_ratio_vs_resnext"]["ResNeXt"] == 1.0
    assert set(t["train_ms_per_image"]) == {"SKNet", "ResNeXt", "SENet", "SK-sum"}
    sk = doc["sk_analysis"]
    assert set(sk["forced_branch_mean"]) >= {"normal", "small", "large"}
    assert sk["spearman_first_seed"]  # one entry per SK unit
    for name in ("study.md", "metrics.png", "object_attention.png"):
        assert (out / name).is_file(), name
    # a repeated command reuses every finished run
    capsys.readouterr()
    assert main([*args, "--quiet"]) == 0
    assert capsys.readouterr().err.count("reused") == 8

"""benchmarks/gpu_check.py: its CPU quick mode runs every section, and its budget skips."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# CI runs these natively and with the ISA capped to AVX2: the quick CPU run exercises bf16,
# torch.compile and the fused paths.
pytestmark = pytest.mark.machine_sensitive


ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
SECTIONS = (
    "environment",
    "correctness",
    "ddp",
    "throughput",
    "train_run",
    "compile",
    "torchrun",
    "summary",
)


def _module(monkeypatch):
    spec = importlib.util.spec_from_file_location("_gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "_gpu_check", mod)  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_quick_cpu_run_measures_every_section(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env_src = str(ROOT / "src")
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": env_src},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    status = {k: report[k]["status"] for k in SECTIONS}
    assert status["torchrun"].startswith("skipped: CPU run")
    assert all(v == "ok" for k, v in status.items() if k != "torchrun"), status
    assert report["meta"]["mode"] == "quick" and report["meta"]["device"] == "cpu"

    env = report["environment"]
    assert env["torch"] and env["device"] == "cpu" and env["gpu_count"] >= 0

    corr = report["correctness"]
    assert corr["all_passed"] is True
    ran = {(c["check"], c["dtype"], c["kind"]) for c in corr["checks"] if c["passed"]}
    for dtype in ("fp32", "bf16"):
        for kind in ("forward", "backward"):
            assert ("sknet_tiny vs SK formulas", dtype, kind) in ran
    assert ("sknet_tiny deploy (channels_last) vs eval model", "fp32", "forward") in ran
    for c in corr["checks"]:
        if c["passed"]:
            assert 0 <= c["error"] <= c["tolerance"]
        else:
            assert c["passed"] is None and c["note"].startswith("skipped")
    fp32_fwd = next(c for c in corr["checks"] if c["check"] == "sknet_tiny vs SK formulas")
    assert fp32_fwd["error"] < 1e-5  # fp32 against the float64 formulas: rounding only
    if importlib.util.find_spec("timm") is not None:
        assert any(c["check"].startswith("sknet50 (timm weights)") for c in corr["checks"])

    ddp = report["ddp"]
    assert ddp["backend"] == "gloo" and ddp["all_reduce_ok"] and ddp["weights_match"]
    assert ddp["passed"] is True

    groups = report["throughput"]["groups"]
    assert {(g["mode"], g["dtype"], g["layout"]) for g in groups} == {
        ("infer", "bf16", "cl"),
        ("train", "fp16", "nchw"),
    }
    for g in groups:
        labels = [r["contender"] for r in g["results"]]
        assert "sknet_tiny" in labels and "resnext_tiny" in labels
        for r in g["results"]:
            assert r["images_per_s"] > 0 and r["note"] == "", r
            assert len(r["times_s"]) == 1 and r["best_images_per_s"] >= r["images_per_s"] * 0.999
        assert g["ratios_vs_resnext"]["resnext_tiny"] == pytest.approx(1.0)
    assert report["throughput"]["branch_activation_mib_per_image"] > 0

    comp = report["compile"]
    assert comp["backend"] == "eager"
    (row,) = comp["groups"][0]["results"]
    assert row["images_per_s"] > 0 and row["compile_s"] > 0

    tr = report["train_run"]
    assert tr["returncode"] == 0 and tr["command"].startswith("sknet train ")
    assert tr["epochs_done"] == tr["planned"]["epochs"] >= 2
    assert tr["images_per_s_median"] > 0
    assert 0 <= tr["loader_wait_s"] < tr["train_seconds"]
    assert tr["loader_batches"] >= tr["planned"]["epochs"] * tr["planned"]["samples"] // 8
    assert tr["loss_fell"] is True and tr["last_loss"] < tr["first_loss"]
    assert (out / "train_run" / "metrics.csv").is_file()

    summ = report["summary"]
    assert summ["device_measured"] is False
    assert all(g["met"] is None for g in summ["goals"])  # no verdict from a CPU run
    md = (out / "gpu_check.md").read_text()
    for title in ("## Correctness", "## DDP", "## Throughput", "## Training run", "## Goals"):
        assert title in md
    assert "Not a GPU measurement" in md
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing else written


def test_budget_skips_sections_and_still_writes_the_report(tmp_path: Path, monkeypatch) -> None:
    mod = _module(monkeypatch)
    rc = mod.main(["--device", "cpu", "--quick", "--out", str(tmp_path), "--budget", "1"])
    assert rc == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    for name in SECTIONS[:-1]:
        assert report[name]["status"] == "skipped: budget", name
    assert report["summary"]["status"] == "ok" and report["summary"]["goals"] == []
    assert "status: skipped: budget" in (tmp_path / "gpu_check.md").read_text()


def test_argument_errors(tmp_path: Path, monkeypatch, capsys) -> None:
    mod = _module(monkeypatch)
    for argv, msg in (
        (["--sections", "bogus"], "--sections"),
        (["--device", "tpu"], "--device"),
        (["--budget", "0"], "--budget"),
    ):
        with pytest.raises(SystemExit) as exc:
            mod.main(["--quick", "--out", str(tmp_path), *argv])
        assert exc.value.code == 2
        assert msg in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            mod.main(["--device", "cuda", "--out", str(tmp_path)])
        assert "no CUDA device" in capsys.readouterr().err

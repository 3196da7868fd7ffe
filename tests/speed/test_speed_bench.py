"""`sknet bench` / benchmarks/throughput.py: a smoke run on demo-sized models, and its errors."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch

from sknet.benchmark import Result
from sknet.cli.main import main as cli

TINY = ["--input-size", "48", "--batch-size", "2", "--rounds", "2", "--warmup", "1"]


def test_bench_smoke_with_memory_and_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench" / "bench.json"
    md = tmp_path / "bench" / "bench.md"
    models = "sknet_tiny,sknet_tiny+deploy,resnext_tiny,resnext_tiny+deploy"
    threads = torch.get_num_threads()
    rc = cli(
        [
            *("bench", "--models", models, "--modes", "infer,train", "--layouts", "cl"),
            *("--memory", "train", "--out", str(tmp_path / "bench"), *TINY),
            *("--threads", str(threads + 1)),
        ]
    )
    assert rc == 0
    assert torch.get_num_threads() == threads, "the bench restores torch's thread count"
    text = capsys.readouterr().out
    assert "Machine:" in text and "torch" in text and "### Inference, fp32" in text
    assert "| sknet_tiny+deploy | cl |" in text
    assert md.read_text().strip() == text.strip()
    data = json.loads(out.read_text())
    res = {(r["mode"], r["contender"]): r for r in data["results"]}
    assert ("train", "sknet_tiny+deploy") not in res  # deploy is inference-only
    assert all(r["images_per_s"] > 0 for r in res.values())
    assert res[("train", "sknet_tiny")]["peak_mem_mib"] is not None
    assert res[("infer", "sknet_tiny")]["peak_mem_mib"] is None
    # sknet_tiny is compared with its ResNeXt counterpart (the "vs own ResNeXt" column)
    row = next(ln for ln in text.splitlines() if ln.startswith("| sknet_tiny | cl |"))
    assert row.split("|")[6].strip().endswith("x)")


def test_bench_errors(capsys) -> None:
    assert cli(["bench", "--modes", "fly", *TINY]) == 1
    assert "--modes" in capsys.readouterr().err
    assert cli(["bench", "--models", "timm:resnext50_32x4d+deploy", *TINY]) == 1
    assert "+deploy" in capsys.readouterr().err
    assert cli(["bench", "--models", "no_such_net", *TINY]) == 1
    assert cli(["bench", "--batch-size", "0"]) == 1


def _throughput_script(monkeypatch):
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "throughput.py"
    spec = importlib.util.spec_from_file_location("_throughput", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "_throughput", mod)  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _res(mode: str, dtype: str, name: str, layout: str, times: list[float]) -> Result:
    return Result(mode, dtype, name, layout, False, 16 / sorted(times)[1], times, 16)


def test_throughput_goals_take_the_best_setting_of_each_side(monkeypatch) -> None:
    mod = _throughput_script(monkeypatch)
    results = [
        _res("infer", "fp32", "sknet50", "cl", [1.0, 1.0, 1.0]),
        _res("infer", "fp32", "sknet50+deploy", "cl", [0.5, 0.5, 0.5]),  # ours: the best
        _res("infer", "fp32", "timm:skresnext50_32x4d", "nchw", [1.0, 1.0, 1.0]),
        _res("infer", "fp32", "timm:skresnext50_32x4d", "cl", [2.0, 2.0, 2.0]),
    ]
    rows = mod.goals_table(results)
    assert len(rows) == 3, rows  # header, rule, the one goal both sides were timed for
    cells = [c.strip() for c in rows[2].split("|")]
    assert cells[1] == "fp32 inference: sknet50 / timm SK"
    assert cells[2] == "sknet50+deploy cl" and cells[3] == "timm:skresnext50_32x4d nchw"
    assert cells[4].startswith("2.000x") and cells[6] == "yes"  # 2x >= 1.7x
    assert mod.goals_table(results[:1]) == []

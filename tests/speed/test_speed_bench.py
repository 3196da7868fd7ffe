"""`sknet bench` / benchmarks/throughput.py: a smoke run on demo-sized models, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

from sknet.cli.main import main as cli

TINY = ["--input-size", "48", "--batch-size", "2", "--rounds", "2", "--warmup", "1"]


def test_bench_smoke_with_memory_and_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    md = tmp_path / "bench.md"
    models = "sknet_tiny,sknet_tiny+deploy,resnext_tiny,resnext_tiny+deploy"
    rc = cli(
        [
            *("bench", "--models", models, "--modes", "infer,train", "--layouts", "cl"),
            *("--memory", "train", "--json", str(out), "--markdown", str(md), *TINY),
        ]
    )
    assert rc == 0
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

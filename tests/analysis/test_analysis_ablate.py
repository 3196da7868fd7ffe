"""Tests of the ablation sweeps (sknet.analysis.ablate) and the ``sknet ablate`` command."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import sknet
from sknet.analysis.ablate import (
    EXPERIMENTS,
    experiment_rows,
    get_experiment,
    markdown_table,
    resolve_base,
    run_ablation,
    summarize,
)
from sknet.cli.main import main

# --------------------------------------------------------------------------------------------
# Row definitions
# --------------------------------------------------------------------------------------------


def test_table6_rows_scale_the_paper_groups_to_the_base() -> None:
    tiny = experiment_rows("table6", "sknet_tiny")
    assert [r.name for r in tiny] == [
        "3x3 D1 G32",
        "3x3 D2 G32",
        "3x3 D3 G32",
        "5x5 G64",
        "7x7 G128",
    ]
    # sknet_tiny has cardinality 8 (a quarter of SKNet-50's 32): G32 -> 8, G64 -> 16, G128 -> 32.
    assert [r.overrides["sk_branches"] for r in tiny] == [
        ("3x3 D1 G8", "3x3 D1 G8"),
        ("3x3 D1 G8", "3x3 D2 G8"),
        ("3x3 D1 G8", "3x3 D3 G8"),
        ("3x3 D1 G8", "5x5 D1 G16"),
        ("3x3 D1 G8", "7x7 D1 G32"),
    ]
    full = experiment_rows("table6", "sknet50")
    assert full[3].overrides["sk_branches"] == ("3x3 D1 G32", "5x5 D1 G64")
    assert full[4].overrides["sk_branches"] == ("3x3 D1 G32", "7x7 D1 G128")


def test_table7_rows() -> None:
    rows = experiment_rows("table7", "sknet_tiny")
    assert len(rows) == 11
    singles = rows[:3]
    assert [r.name for r in singles] == ["K3", "K5", "K7"]
    assert all(r.overrides["sk_aggregation"] == "sum" for r in singles)
    assert [r.overrides["sk_branches"] for r in singles] == [("3x3 D1",), ("3x3 D2",), ("3x3 D3",)]
    names = [r.name for r in rows[3:]]
    assert names == [
        "K3+K5 sum",
        "K3+K5 SK",
        "K3+K7 sum",
        "K3+K7 SK",
        "K5+K7 sum",
        "K5+K7 SK",
        "K3+K5+K7 sum",
        "K3+K5+K7 SK",
    ]
    sk = rows[-1]
    assert sk.overrides == {
        "block": "sk",
        "sk_branches": ("3x3 D1", "3x3 D2", "3x3 D3"),
        "sk_aggregation": "attention",
    }


def test_every_row_builds_and_runs() -> None:
    x = torch.randn(2, 3, 32, 32)
    for name in EXPERIMENTS:
        for row in experiment_rows(name, "sknet_tiny"):
            model = sknet.create_model(row.model, **row.overrides).eval()
            with torch.no_grad():
                assert model(x).shape == (2, 10), row


def test_baselines_and_attention_rows() -> None:
    assert [(r.name, r.model, r.overrides) for r in experiment_rows("baselines", "sknet_tiny")] == [
        ("ResNeXt", "resnext_tiny", {}),
        ("SENet", "senet_tiny", {}),
        ("SKNet", "sknet_tiny", {}),
    ]
    assert [r.model for r in experiment_rows("baselines", "sknet50")] == [
        "resnext50_32x4d",
        "senet50",
        "sknet50",
    ]
    # A base without registered relatives keeps its name with a block override.
    assert resolve_base("sknet_tiny", {"block": "se", "sk_reduction": 8}) == (
        "sknet_tiny",
        {"block": "se", "sk_reduction": 8},
    )
    att = experiment_rows("attention", "sknet_tiny")
    assert [r.name for r in att] == ["channel", "shared", "sum"]
    shared = sknet.create_model(att[1].model, **att[1].overrides)
    assert shared.sk_units()["SK_2_1"].attn.attention == "shared"


def test_unknown_experiment_and_bad_base_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown experiment 'table9'.*table6"):
        get_experiment("table9")
    with pytest.raises(ValueError, match="ResNeXt-family"):
        experiment_rows("table7", "sk_shufflenetv2_x0_5")


def test_summarize() -> None:
    assert summarize([]) == (None, None)
    assert summarize([3.0]) == (3.0, None)
    mean, std = summarize([1.0, 3.0])
    assert mean == 2.0 and std == pytest.approx(math.sqrt(2.0))


# --------------------------------------------------------------------------------------------
# Sweeps (with a counting stand-in trainer)
# --------------------------------------------------------------------------------------------


class FakeTrainer:
    """Records calls; 'trains' by writing a file; error depends on the row and seed."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[tuple[str, int, bool]] = []
        self.fail_on = fail_on

    def __call__(self, cfg: Any, *, run_dir: Path, resume: bool, progress: bool) -> dict:
        self.calls.append((str(run_dir), cfg.seed, resume))
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            (Path(run_dir) / "config.toml").write_text("partial")
            raise KeyboardInterrupt  # the sweep is interrupted mid-run
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        branches = len(cfg.model_overrides.get("sk_branches", (3, 5)))
        err = 10.0 * branches + cfg.seed + (5.0 if cfg.model_overrides.get("block") == "se" else 0)
        return {"run_dir": str(run_dir), "top1_err": err, "top5_err": 1.0, "epochs": cfg.epochs}


def test_sweep_writes_the_table_and_resumes_without_retraining(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    settings = {"epochs": 1, "warmup_epochs": 0.0, "num_samples": 64}
    trainer = FakeTrainer(fail_on=4)  # interrupted during the 4th run (row 2, seed 1)
    with pytest.raises(KeyboardInterrupt):
        run_ablation("attention", out, seeds=[0, 1], settings=settings, train_fn=trainer)
    assert len(trainer.calls) == 4
    partial = json.loads((out / "table.json").read_text())
    assert [len(r["top1_errs"]) for r in partial["rows"]] == [2, 1, 0]

    again = FakeTrainer()
    doc = run_ablation("attention", out, seeds=[0, 1], settings=settings, train_fn=again)
    # Only the interrupted run (resumed from its checkpoint) and the missing ones are trained.
    assert [(Path(d).parts[-2:], s, r) for d, s, r in again.calls] == [
        (("shared", "seed1"), 1, True),
        (("sum", "seed0"), 0, False),
        (("sum", "seed1"), 1, False),
    ]
    rows = {r["name"]: r for r in doc["rows"]}
    assert rows["channel"]["top1_errs"] == [20.0, 21.0]
    assert rows["channel"]["top1_err_mean"] == 20.5
    assert rows["channel"]["top1_err_std"] == pytest.approx(math.sqrt(0.5))
    assert rows["sum"]["params"] < rows["shared"]["params"] < rows["channel"]["params"]
    assert all(r["macs"] > 0 for r in doc["rows"])
    for f in ("table.json", "table.md", "table.png", "table.svg"):
        assert (out / f).is_file()
    md = (out / "table.md").read_text()
    assert "| channel |" in md and "20.50" in md and "2/2" in md

    third = FakeTrainer()
    run_ablation("attention", out, seeds=[0, 1], settings=settings, train_fn=third)
    assert third.calls == []
    # A different budget must not silently reuse these runs.
    with pytest.raises(ValueError, match="different settings.*epochs"):
        run_ablation(
            "attention", out, seeds=[0], settings={**settings, "epochs": 2}, train_fn=FakeTrainer()
        )


def test_sweep_rejects_per_row_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--model"):
        run_ablation("attention", tmp_path, settings={"model": "x"}, train_fn=FakeTrainer())
    with pytest.raises(ValueError, match="--seeds"):
        run_ablation("attention", tmp_path, settings={"seed": 1}, train_fn=FakeTrainer())


def test_markdown_table_without_results() -> None:
    doc = {
        "title": "t",
        "seeds": [0],
        "rows": [
            {
                "name": "a",
                "description": "d",
                "params": 1e6,
                "macs": 2e6,
                "top1_err_mean": None,
                "top1_err_std": None,
                "top1_errs": [],
            },
        ],
    }
    assert "| a | d | 1.000M | 2.00M | - | - | 0/1 |" in markdown_table(doc)


def test_plot_shows_the_settings_used_chance_and_no_negative_errors(tmp_path: Path) -> None:
    from sknet.analysis.ablate import plot_table, plot_title

    row = {"description": "d", "params": 1e6, "macs": 2e6, "top1_err_std": 0.5}
    doc = {
        "title": "Table 7",
        "preset": "demo",
        "base_model": "sknet_tiny",
        "seeds": [0, 1],
        "settings": {"epochs": 3, "num_samples": 600},
        "num_classes": 10,
        "rows": [
            {**row, "name": "a", "top1_err_mean": 0.4, "top1_errs": [0.1, 0.7]},
            {**row, "name": "b", "top1_err_mean": 2.0, "top1_errs": [1.8, 2.2]},
        ],
    }
    title = plot_title(doc)
    assert "preset demo with epochs=3, num_samples=600" in title
    import matplotlib.figure

    captured: list[Any] = []
    orig = matplotlib.figure.Figure.savefig

    def spy(self, *a, **k):
        captured.append(self)
        return orig(self, *a, **k)

    matplotlib.figure.Figure.savefig = spy  # type: ignore[method-assign]
    try:
        paths = plot_table(doc, tmp_path)
    finally:
        matplotlib.figure.Figure.savefig = orig  # type: ignore[method-assign]
    assert all(p.stat().st_size > 0 for p in paths)
    ax = captured[0].axes[0]
    assert ax.get_xlim()[0] >= 0.0
    assert "chance level 90% (off the scale)" in ax.get_xlabel()
    # results near chance: the chance level is drawn as a line
    doc["rows"][1] = {**doc["rows"][1], "top1_err_mean": 85.0, "top1_errs": [84.0, 86.0]}
    captured.clear()
    matplotlib.figure.Figure.savefig = spy  # type: ignore[method-assign]
    try:
        plot_table(doc, tmp_path)
    finally:
        matplotlib.figure.Figure.savefig = orig  # type: ignore[method-assign]
    ax = captured[0].axes[0]
    assert any(abs(line.get_xdata()[0] - 90.0) < 1e-9 for line in ax.get_lines()), "chance line"
    assert ax.get_xlim()[0] >= 0.0 and ax.get_xlim()[1] <= 100.0


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def test_cli_errors_and_listing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["ablate", "table9", "--out", str(tmp_path)]) == 1
    assert "unknown experiment 'table9'" in capsys.readouterr().err
    assert main(["ablate", "--list"]) == 0
    assert "table7" in capsys.readouterr().out
    assert main(["ablate", "table6", "--list"]) == 0
    assert "7x7 G128" in capsys.readouterr().out
    assert main(["ablate", "baselines"]) == 1
    assert "--out" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# End to end with the real trainer (tiny budget)
# --------------------------------------------------------------------------------------------

_TINY_BUDGET = [
    "--set", "epochs=1",
    "--set", "warmup_epochs=0",
    "--set", "num_samples=48",
    "--set", "val_samples=24",
    "--set", "batch_size=16",
    "--set", "image_size=32",
    "--set", "threads=1",
    "--set", "tensorboard=false",
]  # fmt: skip


@pytest.mark.slow
def test_cli_ablate_and_analyze_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sknet.train

    calls: list[str] = []
    real_train = sknet.train.train

    def counting_train(cfg: Any, *args: Any, **kwargs: Any) -> dict:
        calls.append(cfg.model)
        return real_train(cfg, *args, **kwargs)

    out = tmp_path / "sweep"
    argv = ["ablate", "baselines", "--out", str(out), "--quiet", *_TINY_BUDGET]
    # Two runs at a time, in worker processes.
    assert main([*argv, "--jobs", "2"]) == 0, capsys.readouterr().err
    doc = json.loads((out / "table.json").read_text())
    assert [r["name"] for r in doc["rows"]] == ["ResNeXt", "SENet", "SKNet"]
    for r in doc["rows"]:
        assert len(r["top1_errs"]) == 1 and 0.0 <= r["top1_err_mean"] <= 100.0
        assert r["top1_err_std"] is None and r["params"] > 0 and r["macs"] > 0
    assert "| SKNet |" in (out / "table.md").read_text()

    monkeypatch.setattr(sknet.train, "train", counting_train)
    assert main(argv) == 0
    assert calls == []  # everything reused
    # Half-finished sweep: the last run lost its final outputs (as if interrupted after its last
    # checkpoint); only that run is resumed, the others are reused.
    sk_dir = out / "runs" / "sknet" / "seed0"
    for name in ("ablate_run.json", "model.safetensors", "summary.json"):
        (sk_dir / name).unlink()
    assert (sk_dir / "checkpoints" / "last.pt").is_file()
    calls.clear()
    assert main(argv) == 0
    assert calls == ["sknet_tiny"]
    assert json.loads((sk_dir / "ablate_run.json").read_text())["summary"]["resumed"] is True

    # The trained SKNet row, analysed through the CLI (run directory and weights file).
    for source in (sk_dir, sk_dir / "model.safetensors"):
        an = tmp_path / f"an_{source.name}"
        rc = main(["analyze", str(source), "--out", str(an), "--num-images", "12", "--quiet"])
        assert rc == 0, capsys.readouterr().err
        doc = json.loads((an / "attention.json").read_text())
        assert doc["num_images"] == 12 and doc["protocol"]["zoom_method"] == "render"
        assert doc["protocol"]["image_size"] == 32  # the run's resolution
        assert (an / "report.md").is_file() and (an / "fig4_classes.svg").is_file()
    capsys.readouterr()
    # Models without SK attention and missing sources are one-line errors.
    rc = main(["analyze", str(out / "runs" / "resnext" / "seed0"), "--out", str(tmp_path / "x")])
    assert rc == 1 and "no SK units" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "nope"), "--out", str(tmp_path / "y")]) == 1
    assert "no run directory" in capsys.readouterr().err

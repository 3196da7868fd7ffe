"""A 2-process DDP run (torchrun, gloo on CPU) of an SK detector: identical weights on both
ranks, the same evaluation, and a model file that rank 0 wrote with those weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sknet.dense import load_dense
from sknet.train import weights_digest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_torchrun_two_processes_detector(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "sknet.cli.main", "train", "--task", "detect", "--out", str(out),
        "--device", "cpu", "--image-size", "64", "--num-samples", "32", "--epochs", "1",
        "--batch-size", "8", "--threads", "1", "--no-progress", "--no-tensorboard",
        "--set", "object_sizes=[8.0,32.0]", "--set", "val_samples=6",
        "--set", "rank_summaries=true", "--checkpoint-every", "2",
    ]  # fmt: skip
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert ranks[0]["val"]["map"] == ranks[1]["val"]["map"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 32 // 8
    model, _ = load_dense(out)
    assert weights_digest(model) == ranks[0]["weights_sha256"]

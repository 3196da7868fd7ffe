"""A real 2-process DDP run (torchrun, gloo on CPU) of a model with SK units, fine-tuned from
trained weights with a frozen stem: identical weights, sharded and reduced evaluation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sknet

from .conftest import ROOT, subprocess_env

INIT = Path(__file__).parent / "data" / "old_run_final"  # sknet_tiny (small widths), 10 shapes


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "sknet.cli.main", "train", "--out", str(out), "--device", "cpu",
        "--init", str(INIT), "--freeze-stages", "0", "--data", "synthetic", "--workers", "0",
        "--image-size", "32", "--num-samples", "128", "--epochs", "2",
        "--batch-size", "16", "--lr", "0.003", "--threads", "1", "--no-progress",
        "--no-tensorboard", "--set", "val_samples=41", "--set", "rank_summaries=true",
        "--set", "warmup_epochs=0", "--checkpoint-every", "3",
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env=subprocess_env(), cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    ranks = [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 for r in ranks)
    # Gradients are all-reduced and BN statistics synchronised: bit-identical weights.
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    # Each rank evaluated its own share of the 41 val images (sharded: 21 + 20, not 41 each)
    # and reports the metrics of all 41 (reduced: not its own 21 or 20).
    assert [r["val_shard_n"] for r in ranks] == [21, 20]
    assert ranks[0]["val"] == ranks[1]["val"]
    assert ranks[0]["val"]["n"] == 41
    assert ranks[0]["train"] == ranks[1]["train"]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["global_batch"] == 16
    assert summary["steps"] == 2 * (128 // 16)  # 8 images per rank and step, global batch 16
    assert summary["val_n"] == 41
    # Rank 0's saved weights are the weights every rank holds.
    from sknet.train import weights_digest

    model, record = sknet.load(out)
    assert weights_digest(model) == ranks[0]["weights_sha256"]
    assert record.name == "sknet_tiny" and len(model.sk_units()) > 0
    # rank 0 read the init weights and every rank started from them: the frozen stem is theirs
    assert summary["init"]["init"] == str(INIT) and record.provenance["init"] == str(INIT)
    init_model, _ = sknet.load(INIT)
    for k, v in init_model.state_dict().items():
        if k.startswith("stem."):
            assert torch.equal(v, model.state_dict()[k]), k

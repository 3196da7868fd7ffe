"""Kill a training process with SIGKILL mid-epoch, resume it, and get bit-identical weights."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sknet.train import load_checkpoint

from .conftest import ROOT, run_sknet, sknet_cmd, subprocess_env

# 3 epochs x 12 steps of 16 images; a checkpoint every 5 steps (mid-epoch: steps 5 and 10).
ARGS = (
    "--model", "resnext_tiny", "--image-size", "32", "--num-samples", "192", "--epochs", "3",
    "--batch-size", "16", "--lr", "0.003", "--checkpoint-every", "5", "--threads", "1",
    "--deterministic", "--no-tensorboard", "--no-progress",
    "--set", "val_samples=32", "--set", "warmup_epochs=0.5", "--set", "log_every=1",
)  # fmt: skip


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_exact(tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    run_sknet("train", *ARGS, "--out", str(ref))

    run = tmp_path / "killed"
    proc = subprocess.Popen(
        sknet_cmd("train", *ARGS, "--out", str(run)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=subprocess_env(),
        cwd=ROOT,
    )
    last = run / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 240
    try:
        while not last.exists():
            assert proc.poll() is None, "training ended before writing its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.02)
        time.sleep(0.05)  # a step or two past the checkpoint, inside the epoch
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "model.safetensors").exists(), "the run finished before it was killed"
    pos = load_checkpoint(last)["position"]
    assert pos["global_step"] < 36

    res = run_sknet("train", "--resume", str(run), "--no-progress")
    assert "resuming" in res.stderr

    a = load_file(str(ref / "model.safetensors"))
    b = load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    # The metrics CSV has one row per epoch, none duplicated by the restart.
    rows_ref = (ref / "metrics.csv").read_text().splitlines()
    rows_run = (run / "metrics.csv").read_text().splitlines()
    assert len(rows_run) == len(rows_ref) == 4
    assert [r.split(",")[:2] for r in rows_run] == [r.split(",")[:2] for r in rows_ref]

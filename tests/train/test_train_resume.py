"""Kill a training process with SIGKILL mid-epoch, resume it, and get bit-identical weights.

The model has SK units (sknet_tiny: attention, its BatchNorm and the branch selection all
resume exactly), and the kill is checked to have happened inside an epoch.
"""

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

# 2 epochs x 24 steps of 8 images; a checkpoint every 5 steps: 4 mid-epoch checkpoints per
# epoch (steps 5, 10, 15, 20), so a kill soon after the first one is inside epoch 1.
STEPS_PER_EPOCH = 24
ARGS = (
    "--model", "sknet_tiny", "--image-size", "32", "--num-samples", "192", "--epochs", "2",
    "--batch-size", "8", "--lr", "0.003", "--checkpoint-every", "5", "--threads", "1",
    "--deterministic", "--no-tensorboard", "--no-progress",
    "--set", "val_samples=32", "--set", "warmup_epochs=0.5", "--set", "log_every=1",
)  # fmt: skip


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_exact(tmp_path: Path) -> None:
    # The uninterrupted reference runs alongside the run that gets killed (saves time).
    ref = tmp_path / "ref"
    ref_proc = subprocess.Popen(
        sknet_cmd("train", *ARGS, "--out", str(ref)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        cwd=ROOT,
    )
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
            time.sleep(0.01)
        time.sleep(0.05)  # a step or so past the checkpoint: those steps are lost and redone
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "model.safetensors").exists(), "the run finished before it was killed"
    pos = load_checkpoint(last)["position"]
    # killed inside an epoch: the checkpoint it resumes from is a mid-epoch one
    assert 0 < pos["step_in_epoch"] < STEPS_PER_EPOCH, pos
    assert pos["global_step"] % 5 == 0

    _, ref_err = ref_proc.communicate(timeout=300)
    assert ref_proc.returncode == 0, ref_err
    res = run_sknet("train", "--resume", str(run), "--no-progress")
    epoch, step = pos["epoch"] + 1, pos["step_in_epoch"]
    assert f"at epoch {epoch}, step {step}/{STEPS_PER_EPOCH}" in res.stderr

    a = load_file(str(ref / "model.safetensors"))
    b = load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys()
    assert any(".attn." in k for k in a), "the model has no SK attention"
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    # The metrics CSV has one row per epoch, none duplicated by the restart.
    rows_ref = (ref / "metrics.csv").read_text().splitlines()
    rows_run = (run / "metrics.csv").read_text().splitlines()
    assert len(rows_run) == len(rows_ref) == 3
    assert [r.split(",")[:9] for r in rows_run] == [r.split(",")[:9] for r in rows_ref]

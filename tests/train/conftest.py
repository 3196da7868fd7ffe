"""Shared helpers for the training tests: tiny configs that run in seconds on a CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sknet.train import TrainConfig, load_preset

ROOT = Path(__file__).resolve().parents[2]


def tiny_config(**overrides) -> TrainConfig:
    """resnext_tiny on 32x32 synthetic shapes: a few steps per epoch, deterministic, 1 thread."""
    base = dict(
        model="resnext_tiny",
        image_size=32,
        num_samples=96,
        val_samples=40,
        epochs=2,
        batch_size=16,
        optimizer="sgd",
        lr=0.05,
        weight_decay=5e-5,
        warmup_epochs=0.0,
        threads=1,
        deterministic=True,
        tensorboard=False,
        log_every=2,
        checkpoint_every=0,
    )
    base.update(overrides)
    return load_preset("demo", **base)


@pytest.fixture
def tiny() -> type:
    return tiny_config  # type: ignore[return-value]


def sknet_cmd(*args: str) -> list[str]:
    """Command line running ``sknet`` with this interpreter (no reliance on PATH)."""
    return [sys.executable, "-m", "sknet.cli.main", *args]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env.pop("SKNET_DEBUG", None)
    return env


def run_sknet(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        sknet_cmd(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(),
        cwd=ROOT,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"sknet {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc

"""In-process training: run directory, summary, reloading, evaluation, global state, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

import sknet
from sknet.train import (
    NonFiniteLossError,
    evaluate,
    load_checkpoint,
    train,
    weights_digest,
)
from sknet.train.pipeline import make_eval_dataset

from .conftest import tiny_config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("run") / "r"
    cfg = tiny_config(model="sknet_tiny", epochs=2, checkpoint_every=4, tensorboard=True)
    summary = train(cfg, run_dir)
    return run_dir, summary


def test_run_directory_and_summary(finished_run: tuple[Path, dict]) -> None:
    run_dir, summary = finished_run
    for name in (
        "config.toml",
        "metrics.csv",
        "model.safetensors",
        "summary.json",
        "summary.txt",
        "train.log",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tb").iterdir()), "no TensorBoard events"
    assert summary["run_dir"] == str(run_dir)
    assert summary["epochs_done"] == 2 and summary["steps"] == 2 * (96 // 16)
    assert summary["params"] > 0 and summary["macs"] > 0
    assert 0 <= summary["top1_err"] <= 100 and 0 <= summary["top5_err"] <= summary["top1_err"]
    assert summary["val_acc"] == pytest.approx(100 - summary["top1_err"])
    assert summary["val_n"] == 40
    assert summary["best"]["epoch"] in (1, 2)
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[-1]["val_top1_err"]) == pytest.approx(summary["top1_err"], abs=1e-3)
    ck = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert ck["position"] == {"epoch": 2, "step_in_epoch": 0, "global_step": 12}


def test_load_model_from_every_source_gives_the_same_network(
    finished_run: tuple[Path, dict],
) -> None:
    run_dir, summary = finished_run
    m_dir, rec = sknet.load(run_dir)
    m_ckpt, rec_ckpt = sknet.load(run_dir / "checkpoints" / "last.pt")
    m_st, _ = sknet.load(run_dir / "model.safetensors")
    info, info_ckpt = rec.info(), rec_ckpt.info()
    assert weights_digest(m_dir) == weights_digest(m_ckpt) == weights_digest(m_st)
    assert not m_dir.training
    for i in (info, info_ckpt):
        assert i["model"] == "sknet_tiny" and i["num_classes"] == 10
        assert i["image_size"] == 32 and i["data"] == "synthetic"
        assert i["mean"] == (0.5, 0.5, 0.5) and i["std"] == (0.5, 0.5, 0.5)
        assert i["model_overrides"] == {}
    # evaluate() on the run's val split reproduces the final metrics of training.
    cfg = info["config"]
    ds = make_eval_dataset(
        "synthetic", data_dir=None, image_size=32, num_samples=cfg["val_samples"], seed=0
    )
    r = evaluate(m_dir, ds, batch_size=7)
    assert r["n"] == 40
    assert r["top1_err"] == pytest.approx(summary["top1_err"])
    assert r["top5_err"] == pytest.approx(summary["top5_err"])


def test_evaluate_counts_top1_and_top5() -> None:
    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # class scores: 0 > 1 > 2 > ... > 9 for every image
            return torch.arange(10, 0, -1, dtype=torch.float32).repeat(x.shape[0], 1)

    labels = torch.tensor([0, 1, 4, 5, 9])  # top-1 hits: 1 of 5; top-5 hits: 3 of 5
    batches = [(torch.zeros(5, 3, 4, 4), labels)]
    r = evaluate(Fixed(), batches, device="cpu")
    assert r["n"] == 5
    assert r["top1_err"] == pytest.approx(80.0)
    assert r["top5_err"] == pytest.approx(40.0)


def test_train_restores_global_state(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    train(tiny_config(epochs=1, threads=1, deterministic=True), tmp_path / "a")
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == det


def test_same_seed_same_weights_and_repeated_calls(tmp_path: Path) -> None:
    cfg = tiny_config(model="sknet_tiny", epochs=1)
    train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b")
    a, _ = sknet.load(tmp_path / "a")
    b, _ = sknet.load(tmp_path / "b")
    assert len(a.sk_units()) > 0
    assert weights_digest(a) == weights_digest(b)
    train(tiny_config(model="sknet_tiny", epochs=1, seed=1), tmp_path / "c")
    c, _ = sknet.load(tmp_path / "c")
    assert weights_digest(a) != weights_digest(c)


def test_model_overrides_reach_the_model(tmp_path: Path) -> None:
    cfg = tiny_config(model="sknet_tiny", epochs=1, model_overrides={"sk_aggregation": "sum"})
    summary = train(cfg, tmp_path / "sum")
    assert summary["model_overrides"] == {"sk_aggregation": "sum"}
    model, rec = sknet.load(tmp_path / "sum" / "model.safetensors")
    assert rec.model_overrides == {"sk_aggregation": "sum"}
    assert rec.arch["sk_aggregation"] == "sum"
    assert all(u.aggregation == "sum" for u in model.sk_units().values())


def test_existing_run_dir_is_refused_and_resume_needs_same_config(
    finished_run: tuple[Path, dict], tmp_path: Path
) -> None:
    run_dir, _ = finished_run
    with pytest.raises(ValueError, match="already holds a run"):
        train(tiny_config(model="sknet_tiny"), run_dir)
    with pytest.raises(ValueError, match="cannot resume with a different config.*lr"):
        train(
            tiny_config(model="sknet_tiny", epochs=2, checkpoint_every=4, lr=0.5, tensorboard=True),
            run_dir,
            resume=True,
        )
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        train(tiny_config(), tmp_path / "nothing", resume=True)


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "nan"
    cfg = tiny_config(epochs=3, lr=1e12, checkpoint_every=1, label_smoothing=0.0)
    with pytest.raises(NonFiniteLossError, match="non-finite") as exc:
        train(cfg, run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    assert f"the last good checkpoint {last} is kept" in str(exc.value)
    assert not (run_dir / "model.safetensors").exists()
    # Step 1 ran on finite weights and was checkpointed; the loss of step 2 was not finite.
    ck = load_checkpoint(last)
    assert ck["position"]["global_step"] == 1
    assert all(torch.isfinite(t).all() for t in ck["model"].values() if t.is_floating_point())


def test_user_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a data directory"):
        train(tiny_config(data="cifar10"), tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="cifar10: missing"):
        train(tiny_config(data="cifar10", data_dir=str(tmp_path)), tmp_path / "y")
    with pytest.raises(TypeError, match="unknown override 'sk_aggregaton'"):
        train(tiny_config(model_overrides={"sk_aggregaton": "sum"}), tmp_path / "z")
    with pytest.raises(ValueError, match="fp16.* needs a CUDA"):
        train(tiny_config(amp="fp16", device="cpu"), tmp_path / "w")
    with pytest.raises(ValueError, match="no full batch"):
        train(tiny_config(num_samples=10), tmp_path / "v")


@pytest.mark.machine_sensitive  # bf16 kernels exist on AVX-512 BF16 CPUs only
def test_bf16_autocast_and_grad_accumulation_on_cpu(tmp_path: Path) -> None:
    s = train(tiny_config(epochs=1, amp="bf16", grad_accum=2), tmp_path / "bf16")
    assert s["steps"] == 96 // 16
    assert torch.isfinite(torch.tensor(s["train_loss"]))

"""Write the run-directory fixtures ``old_run/`` and ``old_run_final/`` (kept in git).

They were written by sknet at commit 2cfb918 (before the trainer was split into short steps)
with torch 2.14.1 on the CPU, so that tests can check that run directories and checkpoints of
that version still resume and evaluate. Do not regenerate them with a newer sknet: that would
defeat their purpose. Run from the repository root::

    .venv/bin/python tests/train/data/make_old_run.py OUT_DIR

``old_run_final``: the whole run (2 epochs x 6 steps; its checkpoints are dropped to keep the
fixture small); ``old_run_final/machine.json`` records what its bits depend on (torch version,
ATen CPU capability, oneDNN ISA), so that tests compare bit for bit only on a machine that
computes the same bits. ``old_run``: the same run killed right
after its mid-epoch checkpoint at global step 8 (epoch 2, step 2 of 6); resuming it must give
``old_run_final``'s weights.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch

import sknet.train.trainer as trainer
from sknet.train import load_preset, train

CONFIG = dict(
    model="sknet_tiny",
    # ~3.9k parameters: the files stay small (the SK units are all there).
    model_overrides={
        "stage_out": [8, 16, 16],
        "mid_widths": [8, 8, 8],
        "stem_width": 8,
        "cardinality": 2,
        "sk_min_attn_dim": 8,
    },
    image_size=24,
    num_samples=48,
    val_samples=16,
    epochs=2,
    batch_size=8,
    optimizer="sgd",
    lr=0.05,
    weight_decay=5e-5,
    warmup_epochs=0.5,
    threads=1,
    deterministic=True,
    tensorboard=False,
    log_every=2,
    checkpoint_every=4,
)


class _Killed(BaseException):
    pass


def main(out: Path) -> None:
    cfg = load_preset("demo", **CONFIG)
    final = out / "old_run_final"
    train(cfg, final)
    killed = out / "old_run"
    real_save = trainer.save_checkpoint

    def save_then_die(state, path):  # type: ignore[no-untyped-def]
        real_save(state, path)
        if state["position"]["global_step"] == 8:
            raise _Killed

    trainer.save_checkpoint = save_then_die
    try:
        train(cfg, killed)
    except _Killed:
        pass
    finally:
        trainer.save_checkpoint = real_save
    for run in (final, killed):
        for junk in (".lock", "train.log", "checkpoints/best.pt", "summary.txt"):
            (run / junk).unlink(missing_ok=True)
        shutil.rmtree(run / "tb", ignore_errors=True)
    shutil.rmtree(final / "checkpoints")  # old_run's checkpoint is the one the tests load
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: conftest's probe
    from conftest import onednn_isa

    machine = {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_isa": onednn_isa(),
    }
    (final / "machine.json").write_text(json.dumps(machine, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

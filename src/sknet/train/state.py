"""Where a training run stands: :class:`TrainState`, saved in every checkpoint.

Everything the loop changes as it goes, besides the model, optimizer, grad scaler and RNG
states, lives here, so that a checkpoint is complete by construction: the position (epoch, step
in the epoch, global step), the partial sums of the epoch in progress, the best epoch, the
per-epoch history, how many rows of ``metrics.csv`` the checkpoint knows, the elapsed time and
the unreadable files met so far.

:meth:`TrainState.state_dict` gives the checkpoint keys of format version 1 (``position``,
``partial``, ``metrics_rows``, ``elapsed``, ``best``, ``history``, ``bad_files``) unchanged, so
checkpoints written before this class existed load with :meth:`TrainState.load_state_dict`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["TrainState"]


def _no_best() -> dict[str, Any]:
    return {"epoch": None, "top1_err": None}


@dataclass
class TrainState:
    """The changing state of one training run (one instance per process).

    Attributes:
        epoch: epochs completed (the epoch in progress is ``epoch + 1`` in logs).
        step_in_epoch: optimizer steps done in the epoch in progress.
        global_step: optimizer steps done in the whole run.
        partial: this process's ``(loss sum, correct, images)`` of the epoch in progress
            (float64, on the training device).
        best: ``{"epoch", "top1_err", "top5_err"}`` of the epoch with the lowest val top-1 error.
        history: one ``{"epoch", "train", "val"}`` entry per completed epoch.
        metrics_rows: epochs written to ``metrics.csv`` (a resume cuts the file back to these).
        elapsed_before: seconds spent in earlier sessions of the run (before a resume).
        bad_files: unreadable images met so far, in the order they were met.
    """

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    partial: torch.Tensor = field(default_factory=lambda: torch.zeros(3, dtype=torch.float64))
    best: dict[str, Any] = field(default_factory=_no_best)
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics_rows: int = 0
    elapsed_before: float = 0.0
    bad_files: list[str] = field(default_factory=list)
    session_start: float = field(default_factory=time.perf_counter)

    # ------------------------------------------------------------------ derived values

    def elapsed(self) -> float:
        """Seconds spent in the run so far, earlier sessions included."""
        return self.elapsed_before + time.perf_counter() - self.session_start

    def last_val(self) -> dict[str, Any]:
        """The metrics of the latest evaluation (empty before the first one)."""
        return next((dict(h["val"]) for h in reversed(self.history) if h["val"]), {})

    def last_train(self) -> dict[str, float]:
        """Train loss/accuracy of the latest completed epoch (empty before the first)."""
        return dict(self.history[-1]["train"]) if self.history else {}

    def add_bad_files(self, names: list[str] | tuple[str, ...]) -> list[str]:
        """Record unreadable files (entries may hold several names, newline-separated);
        returns the names not seen before."""
        seen = set(self.bad_files)
        new: list[str] = []
        for entry in names:
            for name in entry.split("\n") if entry else ():
                if name and name not in seen:
                    seen.add(name)
                    new.append(name)
        self.bad_files.extend(new)
        return new

    # ------------------------------------------------------------------ epochs

    def finish_epoch(
        self,
        train: dict[str, float],
        val: dict[str, Any],
        *,
        key: str = "top1_err",
        higher: bool = False,
    ) -> bool:
        """Close the epoch in progress: advance the position, reset the partial sums, append
        to the history and update the best epoch (by ``val[key]``, the lowest unless
        ``higher``: detectors keep the highest mAP). Returns whether this epoch is the best."""
        self.epoch += 1
        self.step_in_epoch = 0
        self.partial.zero_()
        self.history.append({"epoch": self.epoch, "train": dict(train), "val": dict(val)})
        score, best = val.get(key), self.best.get(key)
        is_best = score is not None and (best is None or (score > best if higher else score < best))
        if is_best and key == "top1_err":
            self.best = {"epoch": self.epoch, "top1_err": score, "top5_err": val["top5_err"]}
        elif is_best:
            self.best = {"epoch": self.epoch, key: score}
        return is_best

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self, partial: torch.Tensor | None = None) -> dict[str, Any]:
        """The checkpoint entries of this state (plain values and CPU tensors).

        ``partial``: the sums to store instead of this process's own; under DDP the trainer
        passes the sums over all processes, so a resume can put them on one process.
        """
        sums = self.partial if partial is None else partial
        return {
            "position": {
                "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch,
                "global_step": self.global_step,
            },
            "partial": sums.detach().cpu().clone(),
            "metrics_rows": self.metrics_rows,
            "elapsed": self.elapsed(),
            "best": dict(self.best),
            "history": [dict(h) for h in self.history],
            "bad_files": list(self.bad_files),
        }

    def load_state_dict(self, state: dict[str, Any], *, holds_partial: bool = True) -> None:
        """Restore from checkpoint entries (of any sknet version so far).

        ``holds_partial``: take the stored partial sums (they are the sums over all processes:
        exactly one process, rank 0, must take them); the others start the epoch at zero.
        """
        pos = state["position"]
        self.epoch = int(pos["epoch"])
        self.step_in_epoch = int(pos["step_in_epoch"])
        self.global_step = int(pos["global_step"])
        self.partial.zero_()
        if holds_partial:
            self.partial += state["partial"].to(self.partial.device, self.partial.dtype)
        self.metrics_rows = int(state["metrics_rows"])
        self.elapsed_before = float(state["elapsed"])
        self.best = dict(state["best"])
        self.history = list(state.get("history", []))
        self.bad_files = list(state.get("bad_files", []))

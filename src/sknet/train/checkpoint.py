"""Training checkpoints: atomic writes, safe loads, and the RNG states needed for exact resume.

A checkpoint is a ``torch.save``'d dict of tensors and plain Python values only, written through
:func:`sknet._files.atomic_save` (temp file + fsync + rename, so a crash never leaves a partial
file) and read back with ``torch.load(..., weights_only=True)`` (no arbitrary unpickling) by the one
safe reader, :func:`sknet.hub.read.read_checkpoint`.
RNG states are stored as tensors and lists of ints for that reason.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sknet._files import atomic_save
from sknet.hub.read import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, read_checkpoint

__all__ = [
    "CHECKPOINT_FORMAT",
    "capture_rng_state",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "weights_digest",
]


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) generator states, in ``weights_only`` form."""
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["kind"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` (tensors and plain values) atomically to ``path``."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    return atomic_save(lambda tmp: torch.save(payload, tmp), path)


def load_checkpoint(path: str | os.PathLike, *, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` on the CPU (``weights_only=True``):
    :func:`sknet.hub.read.read_checkpoint`, the one safe reader.

    Before anything is read, the zip directory is checked (entries stored uncompressed, their
    sizes within the file's: nothing can inflate); after, the tensors may not describe more
    bytes than the file holds (no broadcast views of huge size). ``mmap=True`` maps the tensors
    from the file instead of reading them (copy-on-write; for loading a model once).
    """
    return read_checkpoint(path, mmap=mmap)


def weights_digest(weights: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over a model's state dict (or a state dict): names, dtypes, shapes and bytes.

    Equal digests mean bit-identical weights (used to compare DDP ranks and resumed runs, and
    recorded as the identity of fine-tuning init weights).
    """
    state = weights.state_dict() if isinstance(weights, nn.Module) else weights
    h = hashlib.sha256()
    for name, t in sorted(state.items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()

"""Process-group plumbing for ``torchrun`` (DDP): NCCL on GPUs, gloo on CPU.

``sknet train`` is launched unchanged under ``torchrun``; the environment variables torchrun sets
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) select distributed
mode. Without them (or with ``WORLD_SIZE=1``) everything runs in one process.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from sknet._device import resolve_device
from sknet.errors import ConfigError, DeviceError

__all__ = [
    "DistInfo",
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "cleanup_distributed",
    "resolve_device",
    "seed_everything",
    "setup_distributed",
]


@dataclass
class DistInfo:
    """Where this process stands: rank, world size, its device, and the process-group backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # noqa: RUF009 - immutable value
    backend: str | None = None
    owns_group: bool = False  # initialised here (and destroyed by cleanup_distributed)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None


def setup_distributed(device_preference: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    world = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    device = resolve_device(device_preference, local_rank)
    if world <= 1:
        return DistInfo(device=device)
    if not dist.is_available():  # pragma: no cover - torch built without distributed
        raise DeviceError("this torch build has no torch.distributed support")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if dist.is_initialized():
        backend = dist.get_backend()
    else:
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(minutes=30)}
        if device.type == "cuda":
            kwargs["device_id"] = device
        try:
            dist.init_process_group(**kwargs)
        except TypeError:  # older torch without device_id
            kwargs.pop("device_id", None)
            dist.init_process_group(**kwargs)
        owns = True
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        device=device,
        backend=str(backend),
        owns_group=owns,
    )


def cleanup_distributed(info: DistInfo) -> None:
    """Destroy the process group if :func:`setup_distributed` created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """In-place sum over ranks (no-op in one process); returns ``t``."""
    if info.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    if info.distributed:
        if info.backend == "nccl":
            dist.barrier(device_ids=[info.device.index or 0])
        else:
            dist.barrier()


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (pickled; keep it small or CPU tensors)."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=info.device)
    return box[0]


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` as a list indexed by rank."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out

"""Frozen BatchNorm for detection and segmentation backbones (torch only).

Detectors and segmenters train at 1-2 images per GPU, where BatchNorm statistics are noise and
the BN in the SK attention path (one value per channel per image) is undefined at batch 1.
The usual cure, used by torchvision's and detectron2's detection backbones, is to freeze every
BN: keep its running statistics and affine parameters as constants. :class:`FrozenBatchNorm2d`
computes exactly what ``nn.BatchNorm2d`` computes in eval mode; :func:`freeze_batchnorm` swaps it
in for every BN of a model, the one inside each SK unit's attention path included.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sknet.errors import ConfigError, InputTypeError

__all__ = ["FrozenBatchNorm2d", "freeze_batchnorm"]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (buffers, not parameters).

    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` in train and eval mode
    alike, the same as torchvision's ``FrozenBatchNorm2d`` and ``nn.BatchNorm2d.eval()``. The
    state dict has the same keys as a BatchNorm2d's (``num_batches_tracked`` is ignored on
    load), so BN checkpoints load into it.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        if num_features < 1:
            raise ConfigError(f"num_features must be >= 1, got {num_features}")
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    @classmethod
    def from_batchnorm(cls, bn: nn.modules.batchnorm._BatchNorm) -> FrozenBatchNorm2d:
        """A frozen copy of ``bn`` (its running statistics and affine parameters)."""
        if bn.running_mean is None or bn.running_var is None:
            raise ConfigError(
                f"cannot freeze {type(bn).__name__}({bn.num_features}): it keeps no running "
                "statistics (track_running_stats=False)"
            )
        out = cls(bn.num_features, bn.eps)
        ref = bn.running_mean
        with torch.no_grad():
            if bn.weight is not None:
                out.weight.copy_(bn.weight.detach())
            if bn.bias is not None:
                out.bias.copy_(bn.bias.detach())
            out.running_mean.copy_(bn.running_mean)
            out.running_var.copy_(bn.running_var)
        return out.to(device=ref.device, dtype=ref.dtype)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        state_dict.pop(prefix + "num_batches_tracked", None)  # a BatchNorm2d checkpoint's
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` / ``SyncBatchNorm`` in ``module`` by ``FrozenBatchNorm2d``.

    Works in place and returns ``module`` (or the frozen BN itself when ``module`` is a BN).
    Every BN is converted, including the one in each SK unit's attention path, so the model
    then trains at batch 1 (detection and segmentation batches); outputs are those of the
    original model in eval mode. Raises ``ValueError`` naming a BN without running statistics.
    """
    if not isinstance(module, nn.Module):
        raise InputTypeError(f"freeze_batchnorm expects an nn.Module, got {type(module).__name__}")
    if isinstance(module, nn.BatchNorm2d | nn.SyncBatchNorm):
        return FrozenBatchNorm2d.from_batchnorm(module)
    for path, parent in list(module.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d | nn.SyncBatchNorm):
                try:
                    frozen = FrozenBatchNorm2d.from_batchnorm(child)
                except ValueError as exc:
                    where = f"{path}.{name}" if path else name
                    raise ConfigError(f"{where}: {exc}") from None
                setattr(parent, name, frozen)
    return module

"""Parameter and multiply-accumulate counts, measured with torch's own FLOP counter.

The paper's "GFLOPs" are multiply-accumulates: ``FlopCounterMode`` total / 2. Like the paper and
timm, only convolutions and matrix products are counted (BN, activations, pooling and the
softmax/weighted sum of the Select step are not).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from sknet.errors import ConfigError

__all__ = ["MAX_COUNTED_SIDE", "Complexity", "complexity"]

#: The largest input side :func:`complexity` counts. The pass runs on the meta device, so memory
#: is not the limit; torch's shape arithmetic is (64-bit: a side of 1e20 overflows in C++).
MAX_COUNTED_SIDE = 2**20


@dataclass(frozen=True)
class Complexity:
    params: int
    macs: int
    input_size: int

    def as_dict(self) -> dict[str, int]:
        return {"params": self.params, "macs": self.macs, "input_size": self.input_size}


def complexity(
    model: nn.Module, input_size: int | None = None, in_chans: int | None = None
) -> Complexity:
    """Count parameters and MACs of one forward pass on a single image.

    Args:
        model: any module taking (N, C, H, W); sknet models supply their native size.
        input_size: square input side (default: the model's ``default_input_size``).
        in_chans: input channels (default: the model's ``in_chans`` or 3).
    """
    size = input_size if input_size is not None else getattr(model, "default_input_size", None)
    if size is None:
        raise ConfigError("input_size is required for a model without default_input_size")
    chans = in_chans if in_chans is not None else getattr(model, "in_chans", 3)
    params = sum(p.numel() for p in model.parameters())
    ref = next(model.parameters(), None)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_COUNTED_SIDE:
        raise ConfigError(
            f"input_size must be an int in [1, {MAX_COUNTED_SIDE}], got {str(size)[:40]}"
        )
    was_training = model.training
    model.eval()
    # The pass runs on the meta device: shapes only, no memory for activations and no compute,
    # so any input size can be counted (a real 10000x10000 pass needs tens of GB).
    meta = {
        k: torch.empty_like(v, device="meta")
        for k, v in (*model.named_parameters(), *model.named_buffers())
    }
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            functional_call(
                model,
                meta,
                (torch.zeros(1, chans, size, size, device="meta", dtype=dtype),),
                tie_weights=False,
                strict=False,
            )
    finally:
        model.train(was_training)
    return Complexity(params=params, macs=int(counter.get_total_flops()) // 2, input_size=size)

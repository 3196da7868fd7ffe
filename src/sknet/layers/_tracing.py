"""Whether a module is being traced symbolically (torch only)."""

from __future__ import annotations

import torch

__all__ = ["is_fx_tracing"]


def is_fx_tracing() -> bool:
    """True while ``torch.fx`` symbolically traces a module (also torchvision's
    ``create_feature_extractor``): input checks that need concrete tensors are skipped then.

    False under ``torch.export`` / ``torch.compile``, which trace with concrete (fake) shapes
    and run the checks as in eager mode.
    """
    fx = torch.fx._symbolic_trace
    probe = getattr(fx, "is_fx_symbolic_tracing", None) or getattr(fx, "is_fx_tracing", None)
    return bool(probe()) if probe is not None else False

"""What full models and their backbone form share: a stem and stages, feature levels, input
checks that survive ``torch.fx`` tracing, and freezing (torch only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from sknet.errors import ConfigError, InputError, InputTypeError, OverrideError
from sknet.layers._tracing import is_fx_tracing

__all__ = ["StagedNet", "check_image_batch", "resolve_out_indices"]


def resolve_out_indices(
    indices: int | Sequence[int] | None, feature_info: Sequence[dict[str, Any]], model: str
) -> list[int]:
    """Absolute, increasing feature-level indices from timm-style ``indices``.

    ``None``: every level; an int ``n``: the last ``n`` levels; a sequence: those levels
    (negative ones count from the end). Raises ``ValueError`` naming the bad index.
    """
    n = len(feature_info)
    levels = ", ".join(
        f"{i}: {f['module']} at stride {f['reduction']}" for i, f in enumerate(feature_info)
    )
    if indices is None:
        return list(range(n))
    if isinstance(indices, bool) or not isinstance(indices, int | Sequence):
        raise OverrideError(f"out_indices must be an int or a sequence of ints, got {indices!r}")
    if isinstance(indices, int):
        if not 0 < indices <= n:
            raise ConfigError(
                f"out_indices={indices} (the last n levels) must be in 1..{n} for {model} "
                f"({levels})"
            )
        return list(range(n - indices, n))
    if len(indices) == 0:
        raise ConfigError("out_indices is empty: give at least one feature level")
    out = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int):
            raise OverrideError(f"out_indices must hold ints, got {i!r} in {tuple(indices)}")
        if not -n <= i < n:
            raise ConfigError(
                f"out_indices {tuple(indices)}: {i} is out of range for {model}, whose "
                f"feature levels are 0..{n - 1} ({levels})"
            )
        out.append(i % n)
    if len(set(out)) != len(out):
        raise ConfigError(f"out_indices {tuple(indices)} names a feature level twice")
    return sorted(out)


def check_image_batch(x: Any, in_chans: int, min_size: int, native_size: int) -> None:
    """Raise ``TypeError``/``ValueError`` naming the problem with an image batch."""
    if not isinstance(x, torch.Tensor):
        raise InputTypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise InputError(
            f"expected a 4-D image batch (N, C, H, W), got a {x.dim()}-D tensor of shape "
            f"{tuple(x.shape)}"
            + (" (add a batch dimension with x.unsqueeze(0))" if x.dim() == 3 else "")
        )
    if not x.is_floating_point():
        raise InputTypeError(
            f"expected a floating-point input, got {x.dtype} (convert images with "
            "x.float() / 255 and normalise them)"
        )
    if x.shape[1] != in_chans:
        raise InputError(
            f"model expects {in_chans} input channels, got {x.shape[1]} "
            f"(input shape {tuple(x.shape)}); build it with in_chans={x.shape[1]}"
        )
    h, w = x.shape[-2:]
    if h < min_size or w < min_size:
        raise InputError(
            f"input {h}x{w} is too small for this model: its total stride is "
            f"{min_size}, so height and width must be at least "
            f"{min_size} (native size {native_size})"
        )


class StagedNet(nn.Module):
    """What full models and their ``features_only`` form share: a ``stem`` (a Sequential),
    ``stages`` (a Sequential of stages), optional tail modules named in ``_tail``; input
    checks; freezing of the first stages and of BN statistics."""

    in_chans: int
    default_input_size: int
    min_input_size: int
    stem: nn.Sequential
    stages: nn.Sequential
    _tail: tuple[str, ...] = ()
    frozen_stages: int = -1  # -1: nothing; 0: the stem; n: the stem and the first n stages
    norm_eval: bool = False  # BN layers stay in eval mode in train()

    def check_input(self, x: Any) -> None:
        """Raise ``TypeError``/``ValueError`` naming the problem with an input batch.

        Skipped while ``torch.fx`` traces the model (a Proxy has no concrete shape).
        """
        if is_fx_tracing():
            return
        check_image_batch(x, self.in_chans, self.min_input_size, self.default_input_size)
        ref = next(self.parameters(), None)
        if ref is None or torch.compiler.is_compiling():
            return
        if x.device != ref.device:
            raise InputTypeError(
                f"the input is on {x.device} but the model is on {ref.device}: move one of them "
                f"(x.to('{ref.device}') or model.to('{x.device}'))"
            )
        if x.dtype != ref.dtype and not torch.is_autocast_enabled(x.device.type):
            raise InputTypeError(
                f"the input is {x.dtype} but the model's weights are {ref.dtype}: cast the "
                f"input (x.to({ref.dtype})), cast the model (model.to({x.dtype})), or run it "
                "under torch.autocast"
            )

    def feature_steps(self) -> list[tuple[str, nn.Module]]:
        """The forward pass up to the features as ``(module path, module)`` steps in order."""
        if isinstance(self.stem, nn.Sequential) and len(self.stem) > 0:
            steps = [(f"stem.{n}", m) for n, m in self.stem.named_children()]
        else:  # e.g. sknet.deploy turned a conv-BN-ReLU stem into one fused convolution
            steps = [("stem", self.stem)]
        steps += [(f"stages.{i}", m) for i, m in enumerate(self.stages)]
        steps += [(n, getattr(self, n)) for n in self._tail if hasattr(self, n)]
        return steps

    def tap_path(self, module: str) -> str:
        """The :meth:`feature_steps` path whose output is the output of ``module``: a container
        such as ``"stem"`` maps to its last step; a module fused into its parent (``"stem.act"``
        after :func:`sknet.deploy`) to the parent."""
        paths = [p for p, _ in self.feature_steps()]
        inside = [p for p in paths if p == module or p.startswith(module + ".")]
        if inside:
            return inside[-1]
        parent = module.rpartition(".")[0]
        while parent:
            if parent in paths:
                return parent
            parent = parent.rpartition(".")[0]
        raise ConfigError(f"{module!r} is not a module on the feature path ({paths})")

    def _frozen_parts(self, n: int) -> list[nn.Module]:
        return [self.stem, *list(self.stages)[:n]] if n >= 0 else []

    def set_frozen_stages(self, n: int) -> StagedNet:
        """Freeze the stem (``n = 0``) and the first ``n`` stages; ``-1`` unfreezes them.

        Frozen parts get ``requires_grad=False`` and stay in eval mode in :meth:`train`, so
        their BN statistics do not move (mmdet's ``frozen_stages``). Returns the module.
        """
        total = len(self.stages)
        if isinstance(n, bool) or not isinstance(n, int) or not -1 <= n <= total:
            raise ConfigError(
                f"frozen_stages must be an int in -1..{total} (-1: nothing, 0: the stem, "
                f"{total}: the stem and all {total} stages), got {n!r}"
            )
        for part in self._frozen_parts(self.frozen_stages):
            part.requires_grad_(True)
        self.frozen_stages = n
        for part in self._frozen_parts(n):
            part.requires_grad_(False)
        return self.train(self.training)

    def set_norm_eval(self, enabled: bool = True) -> StagedNet:
        """Keep every BatchNorm in eval mode (running statistics fixed) in :meth:`train`."""
        self.norm_eval = bool(enabled)
        return self.train(self.training)

    def train(self, mode: bool = True) -> StagedNet:
        super().train(mode)
        if mode:
            for part in self._frozen_parts(self.frozen_stages):
                part.eval()
                part.requires_grad_(False)
            if self.norm_eval:
                for m in self.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

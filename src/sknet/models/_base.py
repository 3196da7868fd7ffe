"""The contract every sknet model follows, and attention capture for SK units."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from sknet.layers.sk import SKConv

__all__ = ["ClassifierHead", "SKNetModel", "attention_of", "capture_attention", "sk_units"]


class ClassifierHead(nn.Module):
    """Global average pool then a linear classifier (``num_classes=0`` gives pooled features)."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.fc: nn.Module = (
            nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()
        )

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))  # (N, C)
        return x if pre_logits else self.fc(x)


class SKNetModel(nn.Module):
    """Base class of all sknet models.

    Subclasses set ``in_chans``, ``num_classes``, ``default_input_size``, ``min_input_size``
    (the total stride: smaller inputs cannot pass the network), ``feature_info`` and ``head``,
    and implement :meth:`forward_features`.
    """

    in_chans: int
    num_classes: int
    default_input_size: int
    min_input_size: int
    feature_info: list[dict[str, Any]]
    head: ClassifierHead

    def check_input(self, x: Any) -> None:
        """Raise ``TypeError``/``ValueError`` naming the problem with an input batch."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(
                f"expected a 4-D image batch (N, C, H, W), got a {x.dim()}-D tensor of shape "
                f"{tuple(x.shape)}"
                + (" (add a batch dimension with x.unsqueeze(0))" if x.dim() == 3 else "")
            )
        if not x.is_floating_point():
            raise TypeError(
                f"expected a floating-point input, got {x.dtype} (convert images with "
                "x.float() / 255 and normalise them)"
            )
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"model expects {self.in_chans} input channels, got {x.shape[1]} "
                f"(input shape {tuple(x.shape)}); build it with in_chans={x.shape[1]}"
            )
        h, w = x.shape[-2:]
        if h < self.min_input_size or w < self.min_input_size:
            raise ValueError(
                f"input {h}x{w} is too small for this model: its total stride is "
                f"{self.min_input_size}, so height and width must be at least "
                f"{self.min_input_size} (native size {self.default_input_size})"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one for ``num_classes`` (0 removes it)."""
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.num_classes = num_classes
        ref = next(self.parameters())
        self.head.fc = (
            nn.Linear(self.head.in_features, num_classes).to(ref.device, ref.dtype)
            if num_classes > 0
            else nn.Identity()
        )

    def sk_units(self) -> dict[str, SKConv]:
        """SK units by their paper name (``SK_<stage>_<unit>``), in forward order."""
        return sk_units(self)


def sk_units(model: nn.Module) -> dict[str, SKConv]:
    """All SKConv modules of ``model`` by unit name (module path where a unit has no name)."""
    out: dict[str, SKConv] = {}
    for path, mod in model.named_modules():
        if isinstance(mod, SKConv):
            out[mod.unit_name or path] = mod
    return out


def attention_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """The attention recorded in the last forward pass, ``{unit: (N, M, C)}``."""
    return {
        name: m.last_attention
        for name, m in sk_units(model).items()
        if m.last_attention is not None
    }


class _AttentionView(Mapping[str, torch.Tensor]):
    """Live read-only view of the attention recorded by the SK units of a model."""

    def __init__(self, units: dict[str, SKConv]) -> None:
        self._units = units

    def __getitem__(self, key: str) -> torch.Tensor:
        a = self._units[key].last_attention
        if a is None:
            raise KeyError(f"{key}: no attention recorded yet (run a forward pass first)")
        return a

    def __iter__(self) -> Iterator[str]:
        return (k for k, m in self._units.items() if m.last_attention is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


@contextmanager
def capture_attention(model: nn.Module) -> Iterator[Mapping[str, torch.Tensor]]:
    """Record the Select weights of every SK unit during normal forward passes.

    >>> with capture_attention(model) as att:
    ...     logits = model(images)
    ...     att["SK_3_1"].shape  # (N, M, C), sums to 1 over M

    The mapping always holds the attention of the latest forward pass. Recording keeps a
    detached reference to a tensor the forward computes anyway, so it adds no computation.
    """
    units = sk_units(model)
    if not units:
        raise ValueError(f"{type(model).__name__} has no SK units to capture attention from")
    previous = {k: m.record_attention for k, m in units.items()}
    for m in units.values():
        m.record_attention = True
        m.last_attention = None
    try:
        yield _AttentionView(units)
    finally:
        for k, m in units.items():
            m.record_attention = previous[k]
            if not previous[k]:
                m.last_attention = None

"""Weights for ``create_model(pretrained=..., checkpoint_path=...)``.

Kept apart from the registry so that building a model imports torch alone: this module reaches
:mod:`sknet.hub` and :mod:`sknet.loading` (safetensors, huggingface_hub) only when weights are
asked for.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

__all__ = ["apply_weights", "fetch_weights"]


def fetch_weights(
    name: str,
    pretrained: bool | str,
    checkpoint_path: str | os.PathLike | None,
    num_classes: int | None,
    overrides: dict[str, Any],
) -> tuple[tuple[dict[str, torch.Tensor], Any], int, dict[str, Any]]:
    """Load the weights; return ``((state_dict, record), num_classes, overrides)`` for the
    model to build: the weights' own classifier width unless ``num_classes`` says otherwise,
    and the architecture overrides the weights need (e.g. the Caffe release's stem pooling)
    under the caller's."""
    from sknet.errors import ConfigError
    from sknet.loading import load

    if pretrained:
        from sknet.hub import resolve_pretrained

        cfg = resolve_pretrained(name, pretrained)
        if cfg is None:  # pragma: no cover - resolve_pretrained raises for unknown tags
            raise ConfigError(f"no pretrained weights for {name!r}")
        needed = cfg.overrides
        clash = {k: v for k, v in overrides.items() if k in needed and needed[k] != v}
        if clash:
            raise ConfigError(
                f"create_model({name!r}, pretrained={cfg.tag!r}): the weights need "
                f"{needed}, which the overrides {clash} contradict"
            )
        source: Any = cfg.name
        kwargs: dict[str, Any] = {"checkpoint_path": checkpoint_path}
        overrides = {**needed, **overrides}
    else:
        source, kwargs = checkpoint_path, {}
    loaded, record = load(source, num_classes=num_classes, **kwargs)
    state = {k: v.detach() for k, v in loaded.state_dict().items()}
    return (state, record), int(record.num_classes), overrides


def apply_weights(model: nn.Module, state: dict[str, torch.Tensor], record: Any) -> None:
    """Copy ``state`` into ``model`` strictly (a tensor that does not fit is named)."""
    from sknet.loading import check_state_fits

    check_state_fits(model, state, record.source)
    model.load_state_dict(state)
    model.class_names = record.classes  # type: ignore[attr-defined]
    model.pretrained_record = record  # type: ignore[attr-defined]

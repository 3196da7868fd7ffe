"""Backbone mode: ``create_model(name, features_only=True)`` (timm's conventions).

>>> body = sknet.create_model("sknet50", features_only=True, out_indices=(1, 2, 3, 4))
>>> [f.shape[1] for f in body(images)]     # [256, 512, 1024, 2048]
>>> body.feature_info.channels(), body.feature_info.reduction()  # ... [4, 8, 16, 32]

:class:`FeatureNet` keeps the stem and the stages a model needs up to its last requested level,
under the model's own module names, so a classifier checkpoint's ``stem.*`` / ``stages.*``
tensors load into it unchanged (``load_state_dict(sd, strict=False)`` skips the head).

Deviation from timm: ``out_indices`` defaults to one level per stage (``(1, 2, 3, 4)`` for the
ImageNet models), not to all levels including the stem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from sknet.errors import InputTypeError
from sknet.models._base import SKNetModel
from sknet.models._staged import StagedNet, resolve_out_indices
from sknet.preprocess import DataConfig

__all__ = ["FeatureInfo", "FeatureNet"]


class FeatureInfo:
    """The feature levels of a backbone and which of them it returns (timm's ``FeatureInfo``).

    As in timm, ``info[i]`` / ``len()`` address all levels of the model, while
    :meth:`channels`, :meth:`reduction` and :meth:`module_name` without ``idx`` give one value
    per returned level (``out_indices``), in output order.
    """

    def __init__(self, info: Sequence[dict[str, Any]], out_indices: Sequence[int]) -> None:
        self.info = [dict(d) for d in info]
        self.out_indices = tuple(out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, int):
            return self.info[idx][key]
        return [self.info[i][key] for i in idx]

    def get_dicts(
        self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None
    ) -> list[dict[str, Any]] | dict[str, Any]:
        def pick(d: dict[str, Any]) -> dict[str, Any]:
            return dict(d) if keys is None else {k: d[k] for k in keys}

        if isinstance(idx, int):
            return pick(self.info[idx])
        return [pick(self.info[i]) for i in (self.out_indices if idx is None else idx)]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        """Channels of the returned levels (or of level ``idx``)."""
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        """Stride w.r.t. the input of the returned levels (or of level ``idx``)."""
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        """Path of the module whose output each returned level is."""
        return self.get("module", idx)

    def __getitem__(self, item: int) -> dict[str, Any]:
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo(out_indices={self.out_indices}, info={self.info})"


class FeatureNet(StagedNet):
    """A model's feature levels as a backbone: ``forward(x)`` returns a list of feature maps.

    Args:
        model: an sknet model; its stem and stages are taken (shared, not copied), the head and
            the stages after the last requested level are left out.
        out_indices: feature levels (see ``model.feature_info``): None for one per stage, an int
            n for the last n levels, or a sequence (negative indices count from the end).

    ``feature_info`` is a :class:`FeatureInfo`; ``frozen_stages`` / ``norm_eval`` are taken
    from the model. Traceable with ``torch.fx`` and exportable to ONNX.
    """

    def __init__(self, model: SKNetModel, out_indices: int | Sequence[int] | None = None) -> None:
        super().__init__()
        if not isinstance(model, SKNetModel):
            raise InputTypeError(f"FeatureNet needs an sknet model, got {type(model).__name__}")
        name = getattr(model, "model_name", type(model).__name__)
        if out_indices is None:
            out_indices = model.default_out_indices()
        take = resolve_out_indices(out_indices, model.feature_info, name)
        self.model_name = name
        self.out_indices = tuple(take)
        self.feature_info = FeatureInfo(model.feature_info, take)
        self.in_chans = model.in_chans
        self.default_input_size = model.default_input_size
        self.min_input_size = int(model.feature_info[take[-1]]["reduction"])
        taps = [model.tap_path(model.feature_info[i]["module"]) for i in take]
        paths = [p for p, _ in model.feature_steps()]
        needed = paths[: paths.index(taps[-1]) + 1]
        self.stem = model.stem
        self.stages = nn.Sequential(
            *list(model.stages)[: sum(p.startswith("stages.") for p in needed)]
        )
        self._tail = tuple(n for n in model._tail if n in needed)
        for n in self._tail:
            setattr(self, n, getattr(model, n))
        self.frozen_stages = min(model.frozen_stages, len(self.stages))
        self.norm_eval = model.norm_eval
        # the input it expects is the model's; a backbone answers feature maps, not classes
        cfg = model.data_config
        self.data_config: DataConfig | None = (
            replace(cfg, classes=None, class_ids=None) if cfg is not None else None
        )
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        out: list[torch.Tensor] = []
        # resolved at each call: sknet.deploy may fuse the tapped modules into their parents
        taps = [self.tap_path(m) for m in self.feature_info.module_name()]
        last = taps[-1]
        for path, module in self.feature_steps():
            x = module(x)
            if path in taps:
                out.append(x)
            if path == last:
                break
        return out

"""The contract every sknet model follows, and attention capture for SK units.

Backbone conventions (timm's): a model is a stem, ``stages`` and (ShuffleNetV2) a last
convolution. ``feature_info`` lists the feature levels, index 0 being the stem before its
max-pool (stride 2 for ImageNet stems), then one per stage; each entry holds ``num_chs``,
``reduction`` (stride w.r.t. the input) and ``module``, the path of the module whose output it
is (usable as a torchvision ``create_feature_extractor`` return node).
:meth:`SKNetModel.forward_intermediates` returns those levels, ``frozen_stages`` /
``norm_eval`` freeze the first stages and the BN statistics as detection backbones do (mmdet's
semantics), and every model traces with ``torch.fx``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from sknet.errors import ConfigError, InputTypeError
from sknet.layers.sk import SKConv
from sknet.models._staged import StagedNet, resolve_out_indices
from sknet.preprocess import DataConfig, default_preprocess

__all__ = [
    "ClassifierHead",
    "SKNetModel",
    "attention_of",
    "capture_attention",
    "family_data_config",
    "sk_units",
]

_DATA_CONFIG = "_sknet_data_config"  # the instance's own data config, in its __dict__


def family_data_config(model: nn.Module) -> DataConfig | None:
    """The data config a registry model's family is defined for, read from its resolved
    architecture (``model.model_config``, set by ``create_model``): the CIFAR stem means
    CIFAR-100 statistics at the native size (32), the demo-sized ``small`` stem the built-in
    synthetic data's 0.5/0.5 at the native size (48), any other model ImageNet statistics with
    a short-side resize (224 -> 256, bilinear). None for a model built another way. Classes
    are unknown (None) and the weights random."""
    config = getattr(model, "model_config", None)
    size = getattr(config, "default_input_size", None)
    if config is None or not isinstance(size, int):
        return None
    stem = getattr(config, "stem", "imagenet")
    data = {"cifar": "cifar100", "small": "synthetic"}.get(stem, "imagenet")
    name = getattr(model, "model_name", None)
    return DataConfig(
        default_preprocess(size, data),
        provenance={"init": "random"},
        source=str(name) if name is not None else None,
    )


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


class SKNetModel(StagedNet):
    """Base class of all sknet models.

    Subclasses set ``in_chans``, ``num_classes``, ``default_input_size``, ``min_input_size``
    (the total stride: smaller inputs cannot pass the network), ``stem``, ``stages``,
    ``feature_info`` and ``head``, and implement :meth:`forward_features` (which must equal
    running :meth:`feature_steps` in order).
    """

    in_chans: int
    num_classes: int
    default_input_size: int
    min_input_size: int
    feature_info: list[dict[str, Any]]
    head: ClassifierHead

    @property
    def data_config(self) -> DataConfig | None:
        """What the model expects and answers (:class:`sknet.DataConfig`): set by every
        loader of :mod:`sknet.hub` (the weights' preprocessing and classes); for a model built
        by ``create_model`` without weights, the preprocessing its family is defined for
        (:func:`family_data_config`); None where unknown."""
        if _DATA_CONFIG in self.__dict__:
            value: DataConfig | None = self.__dict__[_DATA_CONFIG]
            return value
        return family_data_config(self)

    @data_config.setter
    def data_config(self, value: DataConfig | None) -> None:
        if value is not None and not isinstance(value, DataConfig):
            raise InputTypeError(
                f"data_config must be a sknet.DataConfig or None, got {type(value).__name__}"
            )
        self.__dict__[_DATA_CONFIG] = value

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The feature levels of ``feature_info`` on the way to the final features (timm's API).

        Args:
            x: image batch (N, C, H, W).
            indices: levels to return: None (all), an int n (the last n) or a sequence.
            norm: accepted for timm compatibility; these models have no final norm.
            stop_early: stop after the last requested level (the returned final features are
                then that level's).
            output_fmt: only ``"NCHW"``.
            intermediates_only: return only the list of levels (stops early).

        Returns:
            ``(final_features, [levels...])``, or the list alone with ``intermediates_only``.
        """
        if output_fmt != "NCHW":
            raise ConfigError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        self.check_input(x)
        name = getattr(self, "model_name", type(self).__name__)
        take = resolve_out_indices(indices, self.feature_info, name)
        taps = {self.tap_path(self.feature_info[i]["module"]) for i in take}
        last = self.tap_path(self.feature_info[take[-1]]["module"])
        out: list[torch.Tensor] = []
        for path, module in self.feature_steps():
            x = module(x)
            if path in taps:
                out.append(x)
            if path == last and (stop_early or intermediates_only):
                break
        return out if intermediates_only else (x, out)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        # Abstract method: every concrete model overrides it; reaching this is a bug in sknet.
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def default_out_indices(self) -> tuple[int, ...]:
        """The levels ``features_only`` returns by default: one per stage (no stem)."""
        return tuple(range(1, len(self.feature_info)))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one for ``num_classes`` (0 removes it)."""
        if num_classes < 0:
            raise ConfigError(f"num_classes must be >= 0, got {num_classes}")
        self.num_classes = num_classes
        ref = next(self.parameters())
        self.head.fc = (
            nn.Linear(self.head.in_features, num_classes).to(ref.device, ref.dtype)
            if num_classes > 0
            else nn.Identity()
        )
        cfg = self.data_config  # a new head: the preprocessing stays, the class names go
        if cfg is not None and (cfg.classes is not None or cfg.class_ids is not None):
            self.data_config = cfg.without_classes()
        if getattr(self, "class_names", None) is not None:
            self.class_names = None

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
    """Read-only view of the attention recorded by the SK units of a model: live inside the
    ``with`` block, frozen at the last forward pass's values after it."""

    def __init__(self, units: dict[str, SKConv]) -> None:
        self._units = units
        self._frozen: dict[str, torch.Tensor] | None = None

    def freeze(self) -> None:
        self._frozen = {
            k: m.last_attention for k, m in self._units.items() if m.last_attention is not None
        }

    def _current(self, key: str) -> torch.Tensor | None:
        if self._frozen is not None:
            return self._frozen.get(key)
        return self._units[key].last_attention

    def __getitem__(self, key: str) -> torch.Tensor:
        # A Mapping's __getitem__ must raise KeyError: ``in``, ``.get`` and ``dict()`` rely on it.
        if key not in self._units:
            raise KeyError(f"{key}: no such SK unit (units: {', '.join(self._units)})")
        a = self._current(key)
        if a is None:
            raise KeyError(f"{key}: no attention recorded yet (run a forward pass first)")
        return a

    def __iter__(self) -> Iterator[str]:
        return (k for k in self._units if self._current(k) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


@contextmanager
def capture_attention(model: nn.Module) -> Iterator[Mapping[str, torch.Tensor]]:
    """Record the Select weights of every SK unit during normal forward passes.

    >>> with capture_attention(model) as att:
    ...     logits = model(images)
    ...     att["SK_3_1"].shape  # (N, M, C), sums to 1 over M

    The mapping always holds the attention of the latest forward pass; after the block it
    keeps the values of the last pass inside it. Recording keeps a detached reference to a
    tensor the forward computes anyway, so it adds no computation.
    """
    units = sk_units(model)
    if not units:
        raise ConfigError(f"{type(model).__name__} has no SK units to capture attention from")
    previous = {k: m.record_attention for k, m in units.items()}
    for m in units.values():
        m.record_attention = True
        m.last_attention = None
    view = _AttentionView(units)
    try:
        yield view
    finally:
        view.freeze()  # readable after the block: the values of the last forward pass
        for k, m in units.items():
            m.record_attention = previous[k]
            if not previous[k]:
                m.last_attention = None

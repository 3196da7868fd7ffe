"""The model registry: one entry per model name, each a frozen config read by one builder."""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sknet._typecheck import coerce_field, suggest
from sknet.errors import ConfigError, DependencyError, OverrideError
from sknet.models._base import SKNetModel
from sknet.models._features import FeatureNet

__all__ = [
    "ModelEntry",
    "PaperFigures",
    "PreparedWeights",
    "WeightsLoader",
    "create_model",
    "get_entry",
    "list_models",
    "register",
    "set_weights_loader",
]


class PreparedWeights(typing.Protocol):
    """Weights read and checked for a model about to be built (see :class:`WeightsLoader`)."""

    num_classes: int  # the classifier width of the weights: the model is built with it
    overrides: dict[str, Any]  # the config overrides to build the model with

    def load_into(self, model: Any, num_classes: int | None) -> None:
        """Load into the built model; a ``num_classes`` other than the weights' then gives a
        fresh classifier."""


class WeightsLoader(typing.Protocol):
    """``loader(name, pretrained, checkpoint_path, overrides) -> PreparedWeights``: what
    :func:`create_model` calls for ``pretrained=`` / ``checkpoint_path=``. The models package does
    no weights I/O: :mod:`sknet.hub` registers its loader (:func:`set_weights_loader`) when it is
    imported, which ``import sknet`` does."""

    def __call__(
        self,
        name: str,
        pretrained: bool | str,
        checkpoint_path: str | os.PathLike | None,
        overrides: dict[str, Any],
    ) -> PreparedWeights: ...


_WEIGHTS_LOADER: list[WeightsLoader] = []


def set_weights_loader(loader: WeightsLoader) -> None:
    """Register the loader :func:`create_model` uses for weights (the last one registered)."""
    _WEIGHTS_LOADER[:] = [loader]


@dataclass(frozen=True)
class PaperFigures:
    """What the paper reports for a model (ImageNet: 1000 classes; CIFAR: 100 classes).

    ``confirmed`` is False for figures recalled rather than confirmed from a public source.
    """

    params: float | None = None  # in units of 1 (e.g. 27.5e6)
    macs: float | None = None  # multiply-accumulates ("GFLOPs" in the paper)
    top1_err: float | None = None
    source: str = ""
    confirmed: bool = True
    params_confirmed: bool | None = None  # overrides ``confirmed`` for the params figure


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its family builder and its architecture config."""

    name: str
    family: str
    config: Any  # a frozen dataclass specific to the family
    builder: Callable[..., SKNetModel]
    description: str = ""
    paper: PaperFigures | None = None
    paper_num_classes: int = 1000
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def input_size(self) -> int:
        return int(self.config.default_input_size)


_REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> ModelEntry:
    """Add a model; a name can be registered only once."""
    if entry.name in _REGISTRY:
        raise ConfigError(f"model name {entry.name!r} is already registered")
    if not dataclasses.is_dataclass(entry.config):
        raise OverrideError(f"{entry.name}: config must be a dataclass instance")
    _REGISTRY[entry.name] = entry
    return entry


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style wildcard ``pattern`` (e.g. ``"sk*"``)."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; an unknown name raises ``ValueError`` with suggestions."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = suggest(name, _REGISTRY, n=4, cutoff=0.5, quote=False)
        hint = f"; {close}" if close else ""
        raise ConfigError(
            f"unknown model {name!r}{hint} (see sknet.list_models() for all {len(_REGISTRY)} names)"
        ) from None


def apply_overrides(config: Any, overrides: dict[str, Any], name: str) -> Any:
    """``dataclasses.replace`` with a clear error for unknown keys and wrong value types."""
    if not overrides:
        return config
    fields = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        hints = [f"{k!r} ({h})" if (h := suggest(k, fields)) else repr(k) for k in unknown]
        raise OverrideError(
            f"create_model({name!r}): unknown override {', '.join(hints)}; valid overrides "
            f"are {', '.join(sorted(fields))}"
        )
    hints_by_name = typing.get_type_hints(type(config))
    checked = {
        k: coerce_field(k, v, hints_by_name[k], f"create_model({name!r}): override")
        for k, v in overrides.items()
    }
    return dataclasses.replace(config, **checked)


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int = 3,
    features_only: bool = False,
    out_indices: int | Sequence[int] | None = None,
    output_stride: int | None = None,
    frozen_stages: int = -1,
    norm_eval: bool = False,
    pretrained: bool | str = False,
    checkpoint_path: str | os.PathLike | None = None,
    **overrides: Any,
) -> SKNetModel | FeatureNet:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        num_classes: classifier width (default: 1000 for ImageNet models, 100 for CIFAR ones,
            the paper's setting); 0 gives a model without classifier.
        in_chans: input channels.
        features_only: return a :class:`~sknet.models.FeatureNet` backbone whose forward gives
            the list of feature maps named by ``out_indices`` (timm's convention).
        out_indices: feature levels for ``features_only`` (see ``feature_info``: 0 is the stem
            at stride 2, then one per stage); default one per stage, e.g. ``(1, 2, 3, 4)``.
        output_stride: 8, 16 or 32 (ResNeXt family): the last stages dilate instead of
            striding, for dense prediction.
        frozen_stages: -1 freezes nothing, 0 the stem, n the stem and the first n stages
            (``requires_grad=False``, eval mode in ``train()``).
        norm_eval: keep every BatchNorm in eval mode in ``train()``.
        pretrained: ``True`` for the model's default published weights, or a weights tag
            (``"ra_in1k"``, see :func:`sknet.list_pretrained`); downloaded once into the cache
            (:mod:`sknet.hub`). A ``num_classes`` other than the weights' keeps the backbone
            and gives a fresh classifier.
        checkpoint_path: a local file of the weights: with ``pretrained``, a copy of the
            published file (no download); alone, any weights file, checkpoint or run directory
            that :func:`sknet.load` reads, whose tensors must fit the model built here.
        **overrides: fields of the family's config dataclass (e.g. ``sk_branches=(3, 5, 7)``);
            an unknown field or a value of the wrong type raises ``TypeError`` naming it.
    """
    entry = get_entry(name)
    if output_stride is not None:
        if isinstance(output_stride, bool) or output_stride not in (8, 16, 32):
            raise ConfigError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
        if any(f.name == "output_stride" for f in dataclasses.fields(entry.config)):
            overrides["output_stride"] = output_stride
        elif output_stride != 32:
            raise ConfigError(
                f"output_stride={output_stride} needs a ResNeXt-family model; {name} "
                f"({entry.family}) supports only output_stride=32"
            )
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0
    ):
        raise ConfigError(f"num_classes must be an int >= 0, got {num_classes!r}")
    weights = None
    width = entry.paper_num_classes if num_classes is None else num_classes
    if pretrained or checkpoint_path is not None:
        if not _WEIGHTS_LOADER:
            raise DependencyError(
                f"create_model({name!r}, pretrained=..., checkpoint_path=...) needs the weights "
                "loader of sknet.hub: import sknet (or sknet.hub) first"
            )
        weights = _WEIGHTS_LOADER[0](name, pretrained, checkpoint_path, dict(overrides))
        width, overrides = weights.num_classes, dict(weights.overrides)
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise ConfigError(f"in_chans must be an int >= 1, got {in_chans!r}")
    config = apply_overrides(entry.config, dict(overrides), name)
    model = entry.builder(config, num_classes=width, in_chans=in_chans)
    model.model_name = name  # type: ignore[assignment]
    model.model_config = config  # the resolved architecture
    if weights is not None:  # built once, then loaded
        weights.load_into(model, num_classes)
    if frozen_stages != -1:
        model.set_frozen_stages(frozen_stages)
    if norm_eval:
        model.set_norm_eval(True)
    if features_only:
        return FeatureNet(model, out_indices)
    if out_indices is not None:
        raise ConfigError("out_indices applies to features_only=True models only")
    return model

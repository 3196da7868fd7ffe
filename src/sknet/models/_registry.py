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
from sknet.models._timm import TimmModel, check_pool, check_rate

__all__ = [
    "ModelEntry",
    "PaperFigures",
    "PreparedWeights",
    "WeightsLoader",
    "aliases_of",
    "create_model",
    "get_entry",
    "list_aliases",
    "list_models",
    "register",
    "register_alias",
    "resolve_alias",
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
_ALIASES: dict[str, str] = {}  # another library's name (timm's) -> ours


def register(entry: ModelEntry) -> ModelEntry:
    """Add a model; a name can be registered only once."""
    if entry.name in _REGISTRY or entry.name in _ALIASES:
        raise ConfigError(f"model name {entry.name!r} is already registered")
    if not dataclasses.is_dataclass(entry.config):
        raise OverrideError(f"{entry.name}: config must be a dataclass instance")
    _REGISTRY[entry.name] = entry
    return entry


def register_alias(alias: str, name: str) -> None:
    """Make ``alias`` (e.g. timm's name of the same architecture) stand for model ``name``."""
    if name not in _REGISTRY:
        raise ConfigError(f"alias {alias!r}: no model {name!r} is registered")
    if alias in _REGISTRY or _ALIASES.get(alias, name) != name:
        raise ConfigError(f"model name {alias!r} is already registered")
    _ALIASES[alias] = name


def resolve_alias(name: str) -> str:
    """Our model name for ``name``: an alias's model, any other name unchanged."""
    return _ALIASES.get(name, name) if isinstance(name, str) else name


def list_aliases() -> dict[str, str]:
    """Every alias with the model it stands for (``{"skresnext50_32x4d": "sknet50", ...}``)."""
    return dict(sorted(_ALIASES.items()))


def aliases_of(name: str) -> list[str]:
    """The aliases of model ``name`` (timm's names of the same architecture)."""
    name = resolve_alias(name)
    return sorted(a for a, n in _ALIASES.items() if n == name)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style wildcard ``pattern`` (e.g. ``"sk*"``).

    Aliases (timm's names, :func:`list_aliases`) are not listed: they resolve to these names.
    """
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_entry(name: str) -> ModelEntry:
    """The registry entry of ``name`` (or of the model an alias stands for); an unknown name
    raises ``ValueError`` with suggestions."""
    try:
        return _REGISTRY[resolve_alias(name)]
    except (KeyError, TypeError):
        known = [*_REGISTRY, *_ALIASES]
        close = suggest(str(name), known, n=4, cutoff=0.5, quote=False)
        hint = f"; {close}" if close else ""
        raise ConfigError(
            f"unknown model {name!r}{hint} (all {len(_REGISTRY)} names: `sknet info --list`, "
            "or sknet.list_models() in Python)"
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
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    global_pool: str | None = None,
    **overrides: Any,
) -> SKNetModel | FeatureNet:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`, or an alias (timm's name of the same
            architecture, e.g. ``"skresnext50_32x4d"`` for ``sknet50``; see
            :func:`list_aliases`). The model's ``model_name`` is then ours.
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
        drop_rate: dropout before the classifier, in training (timm's ``drop_rate``).
        drop_path_rate: stochastic depth: each residual branch is dropped per sample in
            training, with a rate rising linearly over the blocks from 0 to this value (timm's
            schedule). ShuffleNetV2 models have no residual branch: only 0 there.
        global_pool: ``"avg"`` (default), ``"max"``, ``"avgmax"``, or ``""`` for no pooling
            (with ``num_classes=0``: the head then returns the feature map).
        **overrides: fields of the family's config dataclass (e.g. ``sk_branches=(3, 5, 7)``);
            an unknown field or a value of the wrong type raises ``TypeError`` naming it.
    """
    entry = get_entry(name)
    name = entry.name  # an alias resolved
    timm_args = _timm_args(drop_rate, drop_path_rate)
    _check_build_args(entry, num_classes, in_chans, output_stride, overrides)
    weights = None
    width = entry.paper_num_classes if num_classes is None else num_classes
    if pretrained or checkpoint_path is not None:
        weights = _prepare_weights(name, pretrained, checkpoint_path, overrides)
        width, overrides = weights.num_classes, dict(weights.overrides)
    config = apply_overrides(entry.config, dict(overrides), name)
    model = entry.builder(config, num_classes=width, in_chans=in_chans, **timm_args)
    model.model_name = name  # type: ignore[assignment]
    model.model_config = config  # the resolved architecture
    if weights is not None:  # built once, then loaded
        weights.load_into(model, num_classes)
    return _finish(model, entry, global_pool, frozen_stages, norm_eval, features_only, out_indices)


def _timm_args(drop_rate: float, drop_path_rate: float) -> dict[str, Any]:
    """The builder keywords of timm's training knobs that are set (checked rates)."""
    timm_args: dict[str, Any] = {}
    if check_rate(drop_rate, "drop_rate"):
        timm_args["drop_rate"] = drop_rate
    if check_rate(drop_path_rate, "drop_path_rate"):
        timm_args["drop_path_rate"] = drop_path_rate
    return timm_args


def _check_build_args(
    entry: ModelEntry,
    num_classes: int | None,
    in_chans: int,
    output_stride: int | None,
    overrides: dict[str, Any],
) -> None:
    """Check ``create_model``'s plain arguments; ``output_stride`` becomes an override."""
    if output_stride is not None:
        if isinstance(output_stride, bool) or output_stride not in (8, 16, 32):
            raise ConfigError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
        if any(f.name == "output_stride" for f in dataclasses.fields(entry.config)):
            overrides["output_stride"] = output_stride
        elif output_stride != 32:
            raise ConfigError(
                f"output_stride={output_stride} needs a ResNeXt-family model; {entry.name} "
                f"({entry.family}) supports only output_stride=32"
            )
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0
    ):
        raise ConfigError(f"num_classes must be an int >= 0, got {num_classes!r}")
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise ConfigError(f"in_chans must be an int >= 1, got {in_chans!r}")


def _prepare_weights(
    name: str,
    pretrained: bool | str,
    checkpoint_path: str | os.PathLike | None,
    overrides: dict[str, Any],
) -> Any:
    """The weights to load, prepared (read and checked) by the loader sknet.hub registers."""
    if not _WEIGHTS_LOADER:
        raise DependencyError(
            f"create_model({name!r}, pretrained=..., checkpoint_path=...) needs the weights "
            "loader of sknet.hub: import sknet (or sknet.hub) first"
        )
    return _WEIGHTS_LOADER[0](name, pretrained, checkpoint_path, dict(overrides))


def _finish(
    model: SKNetModel,
    entry: ModelEntry,
    global_pool: str | None,
    frozen_stages: int,
    norm_eval: bool,
    features_only: bool,
    out_indices: int | Sequence[int] | None,
) -> SKNetModel | FeatureNet:
    """Pooling, freezing and the backbone view, after the weights are in."""
    if global_pool is not None:  # after loading: the weights' classifier width may change
        if not isinstance(model, TimmModel):
            raise ConfigError(f"{entry.name} ({entry.family}) does not support global_pool")
        model.head.global_pool = check_pool(global_pool, model.num_classes)
    if frozen_stages != -1:
        model.set_frozen_stages(frozen_stages)
    if norm_eval:
        model.set_norm_eval(True)
    if features_only:
        return FeatureNet(model, out_indices)
    if out_indices is not None:
        raise ConfigError("out_indices applies to features_only=True models only")
    return model

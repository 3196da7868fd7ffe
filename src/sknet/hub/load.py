"""One loading path: any model source becomes ``(model, record)``, the model built once.

The loader contract: every public "source -> model" function of :mod:`sknet.hub` returns
``(model.eval(), record)`` (:class:`~sknet.hub.record.ModelRecord`): :func:`load` (any source),
:func:`load_pretrained` (a published-weights entry), :func:`load_weights` (a weights file),
:func:`load_timm` / :func:`load_torchvision` (a foreign state dict) and :func:`load_caffe` (an
official caffemodel). The key maps (:func:`sknet.hub.convert.from_timm`,
:func:`~sknet.hub.convert.from_torchvision`, :func:`sknet.hub.caffe.from_caffe`) are pure and
return a state dict.

Sources of :func:`load`:

* a registry name (``"sknet50"``): a randomly initialised model;
* a registry name with a weights tag (``"sknet50.ra_in1k"``): published weights (downloaded once
  into the cache, see :mod:`sknet.hub.download`);
* a ``.safetensors`` weights file (written by sknet, or converted with ``sknet convert``);
* a training checkpoint (``.pt``) or a run directory (its ``model.safetensors``, else its last
  checkpoint).

The model is rebuilt from the **full architecture config** recorded in the file and its tensors
must fit that network exactly: a file of another architecture is refused with a message naming
the first tensor that does not fit. Nothing is unpickled beyond tensors and plain values
(:mod:`sknet.hub.read`).

Files come from strangers, so nothing is allocated on their say-so before it is checked (see
:mod:`sknet._limits`): the metadata is parsed with bounded size and depth
(:mod:`sknet.hub.metadata`), the model is first built on the ``meta`` device (no memory) to
count its parameters (``SKNET_MAX_PARAMS``) and to compare its tensor shapes and dtype kinds with
the file's (read from the safetensors header, or from a memory-mapped torch file whose tensor
bytes must not exceed the file's size), and only then are the tensors read, checked to be
floating point where the model's are and finite, and the real model built, once.

Importing this module registers :func:`prepare_weights` as the weights loader of
:func:`sknet.create_model` (``pretrained=`` / ``checkpoint_path=``), so that the models package
never imports weights I/O.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

import sknet._limits as _limits
from sknet.errors import ConfigError, FileFormatError
from sknet.hub import caffe
from sknet.hub.convert import SOURCES, guess_model, map_state
from sknet.hub.download import fetch_pretrained
from sknet.hub.metadata import (
    FileMeta,
    check_counts,
    check_name,
    classes_of,
    read_checkpoint_meta,
    read_weights_meta,
)
from sknet.hub.read import (
    check_state_dtypes,
    check_state_finite,
    check_state_fits,
    read_checkpoint,
    read_safetensors,
    read_state_dict,
    require_file,
    safetensors_specs,
)
from sknet.hub.record import ModelRecord, attach, make_record, num_classes_of, with_new_head
from sknet.hub.table import (
    PretrainedCfg,
    class_names,
    get_pretrained_cfg,
    imagenet_classes,
    list_pretrained,
    resolve_pretrained,
)
from sknet.models import SKNetModel, create_model, get_entry, list_models, set_weights_loader
from sknet.models._base import family_data_config
from sknet.preprocess import Preprocess, default_preprocess

__all__ = [
    "Converted",
    "PreparedWeights",
    "build_from_config",
    "convert_file",
    "load",
    "load_caffe",
    "load_pretrained",
    "load_pretrained_state",
    "load_timm",
    "load_torchvision",
    "load_weights",
    "looks_like_path",
    "prepare_weights",
    "random_weights_hint",
    "resolve_source",
]


# ----------------------------------------------------------------------------------- sources


def resolve_source(source: str | os.PathLike) -> tuple[Path, Literal["weights", "checkpoint"]]:
    """The file behind a path source: a run directory's weights (else its last checkpoint), a
    ``.safetensors`` file or a checkpoint."""
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "model.safetensors").is_file():
            return path / "model.safetensors", "weights"
        if (path / "checkpoints" / "last.pt").is_file():
            return path / "checkpoints" / "last.pt", "checkpoint"
        require_file(
            path,
            "{path} is not a finished or checkpointed run directory "
            "(no model.safetensors or checkpoints/last.pt)",
        )
    require_file(path, "no run directory, checkpoint or weights file at {path}")
    if path.suffix == ".safetensors":
        return path, "weights"
    if path.suffix in (".pt", ".pth", ".ckpt"):
        return path, "checkpoint"
    raise FileFormatError(
        f"{path}: expected a run directory, a checkpoint (.pt) or a weights file (.safetensors)"
    )


def looks_like_path(text: str) -> bool:
    """Whether a source string names a file or folder rather than a registry model."""
    return (
        os.sep in text
        or text.endswith((".safetensors", ".pt", ".pth", ".ckpt"))
        or Path(text).exists()
    )


def is_random_source(source: str | os.PathLike) -> bool:
    """Whether ``source`` is a bare registry name: :func:`load` gives random weights for it."""
    text = os.fspath(source)
    return not looks_like_path(text) and text in list_models()


def random_weights_hint(source: str) -> str:
    """The one line saying that ``source`` has no weights and how to get some."""
    tags = _tags_of(source)[:3]
    example = tags[0] if tags else f"{source}.<tag>"
    more = f" (published: {', '.join(tags)})" if tags else ""
    return (
        f"{source!r} is a model name without weights (random initialisation): give published "
        f"weights as a tag like {example!r}{more}, a weights file, checkpoint or run directory, "
        "or --random-weights for a smoke test"
    )


def _tags_of(name: str) -> list[str]:
    """The published-weights tags of ``name``, its default first."""
    tags = [t for t in list_pretrained(f"{name}.*") if t.split(".", 1)[0] == name]
    try:
        default = get_pretrained_cfg(name).name
    except Exception:  # no published weights: nothing to put first
        return tags
    return sorted(tags, key=lambda t: t != default)


def load(
    source: str | os.PathLike,
    *,
    name: str | None = None,
    num_classes: int | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    random_weights: bool = False,
) -> tuple[nn.Module, ModelRecord]:
    """Load a model from any source (see the module docs); returns ``(model.eval(), record)``.

    Args:
        source: registry name (optionally ``name.tag`` for published weights), weights file,
            checkpoint or run directory.
        name: the registry name, only for weights files without sknet metadata.
        num_classes: for a registry name, the classifier width. For weights, a value other
            than the file's keeps the backbone and gives a fresh classifier (logged).
        checkpoint_path: for published weights, a local copy of the file (no download).
        random_weights: a bare registry name gives a randomly initialised model; it warns
            (``UserWarning``) unless this is True.

    Raises:
        FileNotFoundError: no such file or run directory.
        FileFormatError: a corrupt, unsafe or foreign file, or tensors that do not fit the
            recorded architecture (naming the first one).
        ConfigError: an unknown model name or invalid metadata.
    """
    text = os.fspath(source)
    if not looks_like_path(text):
        return _load_registry(
            text,
            num_classes=num_classes,
            checkpoint_path=checkpoint_path,
            random_weights=random_weights,
        )
    path, kind = resolve_source(text)
    if kind == "checkpoint":
        model, record = _load_checkpoint(path)
    else:
        model, record = _load_weights_file(path, name=name)
    if num_classes is not None and num_classes != record.num_classes:
        model, record = with_new_head(model, record, num_classes)
    return model.eval(), record


def _load_registry(
    text: str,
    *,
    num_classes: int | None,
    checkpoint_path: str | os.PathLike | None,
    random_weights: bool,
) -> tuple[nn.Module, ModelRecord]:
    if "." in text and text not in list_models():
        return load_pretrained(text, num_classes=num_classes, checkpoint_path=checkpoint_path)
    entry = get_entry(text)  # unknown names raise with suggestions
    model = create_model(text, num_classes=num_classes)
    if not random_weights:
        warnings.warn(
            f"sknet.load({text!r}): the weights are random (no tag, file or run given); "
            f"load published weights with a tag (sknet.list_pretrained({text + '*'!r})) or a "
            "file, or pass random_weights=True",
            UserWarning,
            stacklevel=3,
        )
    family = family_data_config(model)
    record = make_record(
        model,
        name=entry.name,  # ours, also for a timm alias (skresnext50_32x4d -> sknet50)
        preprocess=family.preprocess
        if family is not None
        else default_preprocess(entry.input_size, None),
        source=text,
        source_kind="registry",
        provenance={"init": "random"},
    )
    return model.eval(), record


# ----------------------------------------------------------------------------------- files


def build_from_config(
    name: str,
    arch: dict[str, Any] | None,
    overrides: dict[str, Any],
    num_classes: int | None,
    in_chans: int,
    where: Path | str,
) -> nn.Module:
    """Rebuild a registry model from its recorded config (``arch``: every field), falling back
    to the build-time overrides for files written before the full config was recorded.

    The recorded numbers are checked first (``num_classes``, ``in_chans`` and every field, see
    :func:`sknet._limits.check_arch`); any failure to build is a :class:`FileFormatError`. The
    model is built on the current default device: wrap the call in ``torch.device("meta")`` to
    size it without memory (see :func:`_check_on_meta`).
    """
    check_name(name, where)
    fields = arch if arch else overrides
    if not isinstance(fields, dict):
        raise FileFormatError(f"{where}: the recorded model config is not a table")
    _limits.check_arch(fields, "sknet_arch" if arch else "model_overrides", where)
    num_classes, in_chans = check_counts(num_classes, in_chans, where)
    try:
        return create_model(name, num_classes=num_classes, in_chans=in_chans, **fields)
    except Exception as exc:  # anything a hostile config provokes is the file's fault
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise FileFormatError(
            f"{where}: the recorded config does not build {name!r}: {reason}"
        ) from None


def _build(meta: FileMeta, where: Path | str) -> nn.Module:
    return build_from_config(
        meta.name, meta.arch, meta.overrides, meta.num_classes, meta.in_chans, where
    )


def _check_on_meta(meta: FileMeta, where: Path | str, state: Mapping[str, Any]) -> None:
    """Everything that can be checked before memory is spent: the recorded config builds on the
    ``meta`` device, its parameter count is within the limit (``SKNET_MAX_PARAMS``), and
    ``state`` (tensors or header descriptions) fits it in names, shapes and dtype kinds."""
    with torch.device("meta"):
        model = _build(meta, where)
    _limits.check_param_count(sum(p.numel() for p in model.parameters()), where)
    check_state_fits(model, state, where)
    check_state_dtypes(model.state_dict(), state, where)


def _weights_state(path: Path, meta: FileMeta) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, once its header fits the recorded model (on ``meta``)."""
    _check_on_meta(meta, path, safetensors_specs(path))
    state = read_safetensors(path)
    check_state_finite(state, path)
    return state


def _checkpoint_state(path: Path) -> tuple[FileMeta, dict[str, torch.Tensor]]:
    """A checkpoint's metadata and model tensors (memory-mapped), checked against the recorded
    model on ``meta``."""
    ck = read_checkpoint(path, mmap=True)
    meta = read_checkpoint_meta(ck, path)
    state = ck["model"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise FileFormatError(f"{path}: the checkpoint's 'model' entry is not a state dict")
    _check_on_meta(meta, path, state)
    check_state_finite(state, path)
    return meta, state


def _file_record(
    model: nn.Module, meta: FileMeta, path: Path, kind: Literal["weights", "checkpoint"]
) -> ModelRecord:
    return make_record(
        model,
        name=meta.name,
        preprocess=meta.preprocess,
        source=str(path),
        source_kind=kind,
        classes=classes_of(meta.classes, num_classes_of(model), path),
        data=meta.data,
        data_dir=meta.data_dir,
        train_config=meta.train_config,
        model_overrides=meta.overrides,
        provenance=meta.provenance,
    )


def _load_weights_file(path: Path, *, name: str | None) -> tuple[nn.Module, ModelRecord]:
    """A ``.safetensors`` weights file: metadata checked, model sized on ``meta`` and compared
    with the header, then tensors read, checked (floating, finite) and loaded."""
    meta = read_weights_meta(path, name=name)
    state = _weights_state(path, meta)
    model = _build(meta, path)
    check_state_fits(model, state, path)
    model.load_state_dict(state)
    return model, _file_record(model, meta, path, "weights")


def _load_checkpoint(path: Path) -> tuple[nn.Module, ModelRecord]:
    """A training checkpoint: read memory-mapped, its metadata checked, the model sized on
    ``meta`` and compared with the tensors, which must be floating (where the model's are) and
    finite, before the real model is built."""
    meta, state = _checkpoint_state(path)
    model = _build(meta, path)
    model.load_state_dict(state)
    return model, _file_record(model, meta, path, "checkpoint")


def load_weights(
    path: str | os.PathLike, *, name: str | None = None, num_classes: int | None = None
) -> tuple[nn.Module, ModelRecord]:
    """A model and its record from a weights file written by
    :func:`~sknet.hub.metadata.save_weights` (or ``sknet convert``): ``load(path)``.

    ``name``/``num_classes`` are needed only for files without sknet metadata.
    """
    return load(path, name=name, num_classes=num_classes)


# ----------------------------------------------------------------------------------- published


def _layout_of(state: Mapping[str, torch.Tensor]) -> str | None:
    """``"sknet"`` for a state dict already in sknet's layout, else None (the entry's own)."""
    return "sknet" if "stem.conv.weight" in state else None


def load_pretrained_state(
    name_or_tag: str,
    checkpoint_path: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[dict[str, torch.Tensor], PretrainedCfg]:
    """The raw state dict of a registered set of weights, and its entry.

    Reads ``checkpoint_path`` when given (the registry is then only the metadata: preprocessing,
    classes, converter), otherwise the file :func:`fetch_pretrained` returns, with
    :func:`sknet.hub.read.read_state_dict`. The tensors keep the **source's** layout; convert
    them according to the returned ``cfg.converter``, which is ``"sknet"`` when the file already
    has sknet's layout (e.g. the output of ``sknet convert``).

    Raises:
        WeightsUnavailableError, ChecksumError: see :func:`fetch_pretrained`.
        FileNotFoundError: ``checkpoint_path`` does not exist.
        FileFormatError: unreadable, unsafe (arbitrary pickle), or not a state dict; a
            ``.caffemodel`` must go through the Caffe converter.
    """
    cfg = get_pretrained_cfg(name_or_tag)
    if checkpoint_path is not None:
        path = Path(checkpoint_path).expanduser()
    else:
        path = fetch_pretrained(cfg.name, cache_dir=cache_dir, progress=progress)
    state = read_state_dict(path)
    layout = _layout_of(state)
    if layout is not None and layout != cfg.converter:
        cfg = replace(cfg, converter=layout)  # type: ignore[arg-type]
    return state, cfg


def _weights_path(
    cfg: PretrainedCfg,
    checkpoint_path: str | os.PathLike | None,
    cache_dir: str | os.PathLike | None,
    progress: bool,
) -> Path:
    """``checkpoint_path`` (which must exist) when given, else the file of ``cfg`` (fetched)."""
    if checkpoint_path is not None:
        path = Path(checkpoint_path).expanduser()
        require_file(path, "weights file not found: {path}")
        return path
    return fetch_pretrained(cfg.name, cache_dir=cache_dir, progress=progress)


def _pretrained_state(cfg: PretrainedCfg, path: Path) -> tuple[dict[str, torch.Tensor], str, int]:
    """The state dict of ``cfg``'s file in sknet's layout, the layout it was mapped from and
    the classifier width; checked against the model on the ``meta`` device (size, keys, shapes,
    dtype kinds) and finite. No model is allocated."""
    if path.suffix.lower() == ".caffemodel":
        if cfg.converter != "caffe":
            raise FileFormatError(
                f"{path} is a Caffe model, but {cfg.name} are {cfg.source} weights"
            )
        _, state = caffe.caffe_state(path, cfg.model)
        fc = state.get("head.fc.weight")
        return state, "caffe", int(fc.shape[0]) if fc is not None else 0
    state = read_state_dict(path)
    layout = _layout_of(state) or cfg.converter
    if layout == "caffe":
        raise FileFormatError(
            f"{path}: {cfg.name} needs the official .caffemodel or a file converted from it "
            "with `sknet convert --from caffe`"
        )
    if layout in ("timm", "torchvision"):
        try:
            state = map_state(state, layout, cfg.model)
        except FileFormatError as exc:  # a key map naming the keys that do not fit
            raise FileFormatError(f"{path}: {exc}") from None
    fc = state.get("head.fc.weight")
    width = int(fc.shape[0]) if fc is not None and fc.ndim else 0
    width = _limits.bounded_int(
        width, "classifier width (head.fc.weight)", lo=0, hi=_limits.MAX_CLASSES, where=path
    )
    with torch.device("meta"):  # sized and compared first: nothing allocated
        meta = create_model(cfg.model, num_classes=width, **cfg.overrides)
    _limits.check_param_count(sum(p.numel() for p in meta.parameters()), path)
    check_state_fits(meta, state, path)
    check_state_dtypes(meta.state_dict(), state, path)
    return state, layout, width


def _pretrained_record(
    cfg: PretrainedCfg, model: nn.Module, path: Path, layout: str, verified: bool = False
) -> ModelRecord:
    """The record of ``model`` loaded from ``path``: config, classes, provenance.

    ``verified``: the file was fetched and checked against the published sha256 (provenance
    ``sha256_verified``; False for a ``checkpoint_path``, which is not checked).

    Class names (and ImageNet synset ids) are set only when the model keeps the weights' number
    of classes.
    """
    classes = class_names(cfg.classes) if num_classes_of(model) == cfg.num_classes else None
    imagenet = classes is not None and cfg.classes == "imagenet-1k"
    return make_record(
        model,
        name=cfg.model,
        preprocess=cfg.preprocess.to_preprocess(),
        source=cfg.name,
        source_kind="pretrained",
        classes=tuple(classes) if classes is not None else None,
        class_ids=tuple(imagenet_classes()[0]) if imagenet else None,
        data="imagefolder",  # ImageNet-style folders: the data kind these weights were trained on
        model_overrides=cfg.overrides,
        provenance={
            "weights": cfg.name,
            "source": cfg.source,
            "source_model": cfg.source_model,
            "license": cfg.license,
            "location": cfg.location,
            "file": str(path),
            "sha256": cfg.sha256,
            "sha256_verified": verified and cfg.sha256 is not None,
            "converted_from": layout,
            "class_list": cfg.classes,  # imagenet-1k: hub.imagenet_classes() has the synsets
            "preprocess_confirmed": cfg.preprocess.confirmed,
            "reported_accuracy": [asdict(r) for r in cfg.reported],
        },
    )


def _load_into(model: nn.Module, state: Mapping[str, torch.Tensor], where: Path | str) -> None:
    """Copy ``state`` into ``model`` strictly (the first tensor that does not fit is named)."""
    check_state_fits(model, state, where)
    model.load_state_dict(state, strict=True)


def load_pretrained(
    name_or_tag: str,
    *,
    num_classes: int | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[nn.Module, ModelRecord]:
    """The sknet model with the weights of ``name_or_tag`` and its record (``ModelRecord``).

    Downloads the file once (:func:`fetch_pretrained`) unless ``checkpoint_path`` is given (a
    copy of the source file, an official ``.caffemodel``, or the output of ``sknet convert``),
    maps it according to the entry's converter (timm, torchvision, Caffe; a file already in
    sknet's layout is loaded as is), builds the model once and loads it, and builds the record:
    architecture config, ImageNet class names, the weights' preprocessing, and the provenance
    (source, licence, location, sha256, reported accuracy). A ``num_classes`` other than the
    weights' keeps the backbone and gives a fresh classifier (logged). The model is in eval mode.

    Raises:
        WeightsUnavailableError, ChecksumError: see :func:`fetch_pretrained`.
        FileNotFoundError: ``checkpoint_path`` does not exist.
        FileFormatError: an unreadable or unsafe file, or tensors that do not fit the model.
    """
    cfg = get_pretrained_cfg(name_or_tag)
    path = _weights_path(cfg, checkpoint_path, cache_dir, progress)
    state, layout, width = _pretrained_state(cfg, path)
    model: nn.Module = create_model(cfg.model, num_classes=width, **cfg.overrides)
    _load_into(model, state, path)
    record = _pretrained_record(cfg, model, path, layout, verified=checkpoint_path is None)
    if num_classes is not None and num_classes != record.num_classes:
        model, record = with_new_head(model, record, num_classes)
    return model.eval(), record


# ----------------------------------------------------------------------------------- foreign


def _converted_record(model: nn.Module, name: str, source: str, **kw: Any) -> ModelRecord:
    return make_record(
        model,
        name=name,
        preprocess=kw.pop("preprocess", None)
        or default_preprocess(get_entry(name).input_size, None),
        source=source,
        source_kind="converted",
        **kw,
    )


def _load_mapped(
    state: Mapping[str, torch.Tensor], source: str, name: str | None
) -> tuple[SKNetModel, ModelRecord]:
    name = name or guess_model(state, source)
    mapped = map_state(state, source, name)
    fc = mapped.get("head.fc.weight")
    model = create_model(name, num_classes=int(fc.shape[0]) if fc is not None else 0)
    assert isinstance(model, SKNetModel)
    model.load_state_dict(mapped, strict=True)  # copies: the source tensors stay untouched
    record = _converted_record(model, name, source, provenance={"converted_from": source})
    return model.eval(), record


def load_timm(
    state_dict: Mapping[str, torch.Tensor], name: str | None = None
) -> tuple[SKNetModel, ModelRecord]:
    """The sknet model (built once, eval mode) of a timm state dict, and its record."""
    return _load_mapped(state_dict, "timm", name)


def load_torchvision(
    state_dict: Mapping[str, torch.Tensor], name: str | None = None
) -> tuple[SKNetModel, ModelRecord]:
    """The sknet model (built once, eval mode) of a torchvision state dict, and its record."""
    return _load_mapped(state_dict, "torchvision", name)


def load_caffe(
    source: str | os.PathLike | Any, name: str | None = None
) -> tuple[SKNetModel, ModelRecord]:
    """The sknet model of an official SKNet caffemodel (a path or parsed layers; built once,
    eval mode, with ``model_overrides`` :data:`~sknet.hub.caffe.CAFFE_OVERRIDES`) and its
    record (the Caffe preprocessing: BGR, mean 104/117/123 on 0-255 pixels)."""
    model = caffe.caffe_model(source, name)
    where = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "caffemodel layers"
    record = _converted_record(
        model,
        str(model.model_name),
        where,
        preprocess=Preprocess.from_dict(caffe.CAFFE_PREPROCESS),
        model_overrides=dict(caffe.CAFFE_OVERRIDES),
        provenance={"converted_from": "caffe"},
    )
    return model, record


@dataclass
class Converted:
    """A converted model with what a weights file should record about it.

    ``overrides`` are the ``create_model`` overrides the model was built with (the Caffe models
    need :data:`sknet.hub.caffe.CAFFE_OVERRIDES`); ``metadata`` holds string metadata:
    ``converted_from`` (``"<source>:<file name>"``) and, for Caffe, ``sknet_preprocess`` /
    ``caffe_preprocess`` (JSON).
    """

    model: SKNetModel
    name: str
    overrides: dict[str, object] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)


def convert_file(path: str | os.PathLike, source: str, name: str | None = None) -> Converted:
    """Convert a weights file of ``source`` (``"timm"``, ``"torchvision"`` or ``"caffe"``) into
    the sknet model ``name`` (guessed from the file when None).

    Raises ``FileNotFoundError``, or ``ValueError`` naming the file and the problem.
    """
    path = Path(path)
    if source == "caffe":
        model = caffe.caffe_model(path, name)
        meta = caffe.caffe_metadata(path)
        return Converted(model, str(model.model_name), dict(caffe.CAFFE_OVERRIDES), meta)
    if source not in ("timm", "torchvision"):
        raise ConfigError(f"unknown source {source!r}: expected one of {', '.join(SOURCES)}")
    state = read_state_dict(path)
    try:
        model, _ = _load_mapped(state, source, name)
    except ValueError as exc:  # ConfigError / FileFormatError of the key map, naming keys
        raise FileFormatError(f"{path}: {exc}") from None
    return Converted(model, str(model.model_name), {}, {"converted_from": f"{source}:{path.name}"})


# ----------------------------------------------------------------------------------- create_model


@dataclass
class PreparedWeights:
    """Weights read and checked for a model :func:`sknet.create_model` is about to build: the
    classifier width and overrides to build it with, and :meth:`load_into` it once built."""

    state: dict[str, torch.Tensor]
    num_classes: int
    overrides: dict[str, Any]
    where: str
    record: Callable[[nn.Module], ModelRecord]  # the record of the loaded model

    def load_into(self, model: nn.Module, num_classes: int | None) -> None:
        """Load into ``model`` (built with :attr:`num_classes` and :attr:`overrides`); a
        ``num_classes`` other than the weights' then gives a fresh classifier."""
        _load_into(model, self.state, self.where)
        record = self.record(model)
        if num_classes is not None and num_classes != record.num_classes:
            model, record = with_new_head(model, record, num_classes)
        attach(model, record)
        loaded: Any = model
        loaded.pretrained_record = record


def prepare_weights(
    name: str,
    pretrained: bool | str,
    checkpoint_path: str | os.PathLike | None,
    overrides: dict[str, Any],
) -> PreparedWeights:
    """The weights loader of :func:`sknet.create_model`: read and check the weights (published
    ``pretrained`` ones, else the file ``checkpoint_path``: weights file, checkpoint or run
    directory), in sknet's layout, without building any model but on the ``meta`` device.

    The architecture overrides the published weights need (e.g. the Caffe release's stem
    pooling) go under the caller's; a contradiction raises :class:`ConfigError`.
    """
    if pretrained:
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
        path = _weights_path(cfg, checkpoint_path, None, True)
        state, layout, width = _pretrained_state(cfg, path)
        verified = checkpoint_path is None

        def record(model: nn.Module) -> ModelRecord:
            return _pretrained_record(cfg, model, path, layout, verified=verified)

        return PreparedWeights(state, width, {**needed, **overrides}, str(path), record)
    assert checkpoint_path is not None
    file, kind = resolve_source(checkpoint_path)
    if kind == "checkpoint":
        meta, state = _checkpoint_state(file)
    else:
        meta = read_weights_meta(file)
        state = _weights_state(file, meta)
    file_width = meta.num_classes
    if file_width is None:  # a format-1 file without num_classes: its classifier's width
        fc = state.get("head.fc.weight")
        file_width = int(fc.shape[0]) if fc is not None else get_entry(name).paper_num_classes

    def file_record(model: nn.Module) -> ModelRecord:
        return _file_record(model, meta, file, kind)

    return PreparedWeights(state, file_width, dict(overrides), str(file), file_record)


set_weights_loader(prepare_weights)

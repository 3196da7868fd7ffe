"""What a loaded model is: :class:`ModelRecord`, built in one place (:func:`make_record`)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from torch import nn

from sknet._json import jsonable
from sknet.errors import ConfigError
from sknet.preprocess import DataConfig, Preprocess

__all__ = [
    "ModelRecord",
    "SourceKind",
    "arch_config_of",
    "attach",
    "make_record",
    "num_classes_of",
    "with_new_head",
]

log = logging.getLogger("sknet")

SourceKind = Literal["registry", "pretrained", "weights", "checkpoint", "converted"]


@dataclass(frozen=True)
class ModelRecord:
    """What a loaded model is: architecture, classes, preprocessing and where it came from.

    ``classes`` are the readable class names in label order; ``class_ids``, when set, the
    identifiers data folders use for the same classes (ImageNet's WordNet ids, ``n01440764``):
    evaluation matches folder names against either.
    """

    name: str
    arch: dict[str, Any]
    num_classes: int
    in_chans: int
    preprocess: Preprocess
    source: str
    source_kind: SourceKind
    classes: tuple[str, ...] | None = None
    class_ids: tuple[str, ...] | None = None
    data: str | None = None
    data_dir: str | None = None
    train_config: dict[str, Any] | None = None
    model_overrides: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        """The model's input side (``preprocess.input_size``)."""
        return self.preprocess.input_size

    @property
    def data_config(self) -> DataConfig:
        """What the loaded model carries as ``model.data_config``."""
        return DataConfig(
            preprocess=self.preprocess,
            classes=self.classes,
            class_ids=self.class_ids,
            provenance=dict(self.provenance),
            source=self.source,
        )

    def info(self) -> dict[str, Any]:
        """The record as the plain dict that eval/analyze reports carry."""
        return {
            "model": self.name,
            "model_overrides": self.model_overrides,
            "num_classes": self.num_classes,
            "image_size": self.preprocess.input_size,
            "data": self.data,
            "data_dir": self.data_dir,
            "mean": tuple(self.preprocess.mean),
            "std": tuple(self.preprocess.std),
            "classes": list(self.classes) if self.classes is not None else None,
            "class_ids": list(self.class_ids) if self.class_ids is not None else None,
            "config": self.train_config,
            "source": self.source,
            "source_kind": self.source_kind,
            "provenance": self.provenance,
        }


def arch_config_of(model: nn.Module) -> dict[str, Any] | None:
    """The full resolved architecture config of a model built by ``create_model`` (as JSON
    values), or None for a model built another way."""
    cfg = getattr(model, "model_config", None)
    if cfg is None or not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        return None
    return {f.name: jsonable(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def num_classes_of(model: nn.Module) -> int:
    """The classifier width of an sknet model."""
    return int(cast(Any, model).num_classes)


def make_record(
    model: nn.Module,
    *,
    name: str,
    preprocess: Preprocess,
    source: str,
    source_kind: SourceKind,
    classes: tuple[str, ...] | None = None,
    class_ids: tuple[str, ...] | None = None,
    data: str | None = None,
    data_dir: str | None = None,
    train_config: dict[str, Any] | None = None,
    model_overrides: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> ModelRecord:
    """The record of ``model`` (architecture, classes, input channels read from it), attached
    to it as ``model.data_config`` (:class:`sknet.DataConfig`: preprocessing, classes,
    provenance; what predict, evaluation and export read), ``model.model_overrides`` and
    ``model.class_names``."""
    m = cast(Any, model)
    record = ModelRecord(
        name=name,
        arch=arch_config_of(model) or {},
        num_classes=int(m.num_classes),
        in_chans=int(m.in_chans),
        preprocess=preprocess,
        source=source,
        source_kind=source_kind,
        classes=classes,
        class_ids=class_ids,
        data=data,
        data_dir=data_dir,
        train_config=train_config,
        model_overrides=dict(model_overrides or {}),
        provenance=dict(provenance or {}),
    )
    attach(model, record)
    return record


def attach(model: nn.Module, record: ModelRecord) -> None:
    """Set ``model.data_config`` (and ``class_names``, ``model_overrides``) from ``record``."""
    m = cast(Any, model)
    m.data_config = record.data_config
    m.model_overrides = dict(record.model_overrides)
    m.class_names = record.classes


def with_new_head(
    model: nn.Module, record: ModelRecord, num_classes: int
) -> tuple[nn.Module, ModelRecord]:
    """``model`` with a fresh classifier of ``num_classes`` (the backbone kept), and its record."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ConfigError(f"num_classes must be an int >= 0, got {num_classes!r}")
    log.info(
        "%s: weights have %d classes, %d asked: keeping the backbone, new classifier",
        record.source,
        record.num_classes,
        num_classes,
    )
    m = cast(Any, model)
    m.reset_classifier(num_classes)
    record = dataclasses.replace(record, num_classes=num_classes, classes=None, class_ids=None)
    attach(model, record)
    return model, record

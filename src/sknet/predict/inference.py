"""Classify images with a trained SKNet: :func:`predict` and its :class:`Prediction` results.

Explanations (``explain=True``) come from the same forward pass, via
:func:`sknet.capture_attention`: for every SK unit with attention (``SK_2_1`` ... ``SK_5_3`` for
SKNet-50), the Select weights ``(M, C)`` of the image averaged over the C channels, one number
per branch, named by the branch's kernel (:func:`branch_names`, ``BranchSpec.describe()``, e.g.
``"3x3 D2"``; the stage dilation of a dense-prediction model is multiplied in). Units built
without attention (``aggregation="sum"``) have none and are left out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sknet._device import resolve_device
from sknet.errors import ConfigError, InputTypeError
from sknet.hub.load import load
from sknet.hub.record import ModelRecord
from sknet.layers.sk import BranchSpec
from sknet.models import capture_attention, sk_units
from sknet.predict.inputs import ImageInput, _read, expand_inputs, preprocess_transform
from sknet.preprocess import DataConfig, Preprocess

__all__ = [
    "Prediction",
    "ProgressFn",
    "branch_names",
    "create_transform",
    "predict",
    "resolve_data_config",
]

log = logging.getLogger("sknet")

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Prediction:
    """The result for one image.

    Attributes:
        path: the file (as found by :func:`expand_inputs`), or ``"<image i>"`` for an in-memory
            PIL image.
        labels: the top-k class names, best first (``"class <i>"`` where the weights have none).
        indices: the top-k class indices.
        scores: the top-k softmax probabilities.
        error: why the file could not be classified (unreadable, not an image); then the three
            tuples are empty.
        attention: with ``explain=True``, ``{unit: {branch: mean attention}}`` in forward order;
            each unit's values sum to 1.
    """

    path: str
    labels: tuple[str, ...] = ()
    indices: tuple[int, ...] = ()
    scores: tuple[float, ...] = ()
    error: str | None = None
    attention: dict[str, dict[str, float]] | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str | None:
        """The top-1 class name (None for a failed image)."""
        return self.labels[0] if self.labels else None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "path": self.path,
            "labels": list(self.labels),
            "indices": list(self.indices),
            "scores": list(self.scores),
            "error": self.error,
        }
        if self.attention is not None:
            d["attention"] = self.attention
        return d


# ----------------------------------------------------------------------------------- attention


def branch_names(unit: nn.Module) -> list[str]:
    """Names of an SK unit's branches in order (``"3x3 D1"``, ``"3x3 D2"``, ...), with the
    unit's stage dilation multiplied in; repeated names get ``#2``, ``#3``."""
    dil = int(getattr(unit, "dilation", 1) or 1)
    names: list[str] = []
    for spec in unit.specs:  # type: ignore[union-attr]
        if dil != 1:
            spec = BranchSpec(spec.kernel_size, spec.dilation * dil, spec.groups)
        name = spec.describe()
        n = sum(1 for x in names if x == name or x.startswith(name + " #"))
        names.append(name if n == 0 else f"{name} #{n + 1}")
    return names


def _mean_attention(
    units: Mapping[str, nn.Module], att: Any, names: dict[str, list[str]]
) -> list[dict[str, dict[str, float]]]:
    """Per image: ``{unit: {branch: mean over channels}}`` from captured ``(N, M, C)``."""
    per_unit = {}
    for key in units:
        if key in att:
            per_unit[key] = att[key].float().mean(dim=2).cpu().tolist()  # (N, M)
    n = len(next(iter(per_unit.values()))) if per_unit else 0
    return [
        {k: dict(zip(names[k], (float(v) for v in vals[i]))) for k, vals in per_unit.items()}
        for i in range(n)
    ]


# ----------------------------------------------------------------------------------- predict


def resolve_data_config(model_or_source: Any) -> DataConfig:
    """The data config (:class:`sknet.DataConfig`) of a model, of ``(model, record)``, of a
    :class:`~sknet.hub.record.ModelRecord`, or of a source :func:`sknet.load` reads (loaded
    for it). A model's is its ``data_config`` attribute, which every model sknet returns
    carries.

    Raises:
        ConfigError: the model's preprocessing is unknown (a model not built or loaded by
            sknet): set ``model.data_config`` or pass ``preprocess=`` where it is used.
    """
    if isinstance(model_or_source, DataConfig):
        return model_or_source
    if isinstance(model_or_source, ModelRecord):
        return model_or_source.data_config
    if isinstance(model_or_source, tuple) and len(model_or_source) == 2:
        model_or_source = model_or_source[0]
    if isinstance(model_or_source, (str, os.PathLike)):
        model_or_source = load(model_or_source)[0]
    if not isinstance(model_or_source, nn.Module):
        raise InputTypeError(
            "resolve_data_config: expected a model, (model, record), a record or a source, "
            f"got {type(model_or_source).__name__}"
        )
    cfg = getattr(model_or_source, "data_config", None)
    if not isinstance(cfg, DataConfig):
        raise ConfigError(
            f"this {type(model_or_source).__name__} does not say how its inputs are "
            "preprocessed (no data_config): pass preprocess=sknet.Preprocess(...), set "
            "model.data_config, or load the model from its file or run with sknet.load"
        )
    return cfg


def create_transform(data_config_or_model: Any) -> Callable[[Any], torch.Tensor]:
    """The evaluation transform (PIL RGB image -> normalised tensor) of a data config, model,
    record or source: exactly ``resolve_data_config(x).preprocess.transforms()``."""
    if isinstance(data_config_or_model, Preprocess):
        return data_config_or_model.transforms()
    return resolve_data_config(data_config_or_model).preprocess.transforms()


def _resolve(
    model_or_source: Any, preprocess: Any, classes: Sequence[str] | None
) -> tuple[nn.Module, Preprocess, tuple[str, ...] | None, ModelRecord | None]:
    record: ModelRecord | None = None
    if isinstance(model_or_source, tuple) and len(model_or_source) == 2:
        model, record = model_or_source
        if not isinstance(record, ModelRecord):
            raise InputTypeError(
                "predict: a tuple must be (model, record) as returned by sknet.load, got a "
                f"{type(record).__name__} as its second item"
            )
    elif isinstance(model_or_source, nn.Module):
        model = model_or_source
    elif isinstance(model_or_source, (str, os.PathLike)):
        model, record = load(model_or_source)
    else:
        raise InputTypeError(
            "predict: expected a model, (model, record) from sknet.load, or a source (registry "
            f"name, weights file, checkpoint, run directory), got {type(model_or_source).__name__}"
        )
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"predict: expected an nn.Module, got {type(model).__name__}")
    if isinstance(preprocess, dict):
        preprocess = Preprocess.from_dict(preprocess)
    own: DataConfig | None = None
    if record is not None:
        own = record.data_config
    elif preprocess is None or classes is None:
        cfg = getattr(model, "data_config", None)
        own = cfg if isinstance(cfg, DataConfig) else None
    if preprocess is None:
        if own is None:
            raise ConfigError(
                f"predict: this {type(model).__name__} does not say how its inputs are "
                "preprocessed (no data_config): pass preprocess=sknet.Preprocess(...), or load "
                "the model from its weights file or run directory with sknet.load"
            )
        preprocess = own.preprocess
    if not isinstance(preprocess, Preprocess):
        raise InputTypeError(
            f"predict: preprocess must be a sknet.Preprocess or a dict, got "
            f"{type(preprocess).__name__}"
        )
    if classes is None and own is not None:
        classes = own.classes
    return model, preprocess, tuple(str(c) for c in classes) if classes else None, record


def _classify(
    model: nn.Module,
    x: torch.Tensor,
    k: int,
    units: Mapping[str, nn.Module],
    unit_branches: dict[str, list[str]],
    explain: bool,
) -> list[tuple[list[int], list[float], dict[str, dict[str, float]] | None]]:
    """One forward pass: per image the top-k indices, probabilities and (explain) attention."""
    per_image: list[dict[str, dict[str, float]]] = []
    with torch.inference_mode():
        if explain:
            with capture_attention(model) as att:
                logits = model(x)
                per_image = _mean_attention(units, att, unit_branches)
        else:
            logits = model(x)
    top = logits.float().softmax(dim=1).topk(k, dim=1)
    idx, val = top.indices.cpu().tolist(), top.values.cpu().tolist()
    return [(idx[j], val[j], per_image[j] if explain else None) for j in range(len(idx))]


def predict(
    model_or_source: Any,
    images: ImageInput | Iterable[ImageInput],
    *,
    topk: int = 5,
    batch_size: int = 32,
    explain: bool = False,
    device: str | torch.device = "auto",
    preprocess: Preprocess | dict[str, Any] | None = None,
    classes: Sequence[str] | None = None,
    progress: ProgressFn | None = None,
) -> list[Prediction]:
    """Classify images; one :class:`Prediction` per image, in input order.

    Args:
        model_or_source: anything :func:`sknet.load` accepts (registry name, ``name.tag``,
            weights file, checkpoint, run directory), its ``(model, record)`` result, or a
            model. A bare model uses its ``data_config`` (:class:`sknet.DataConfig`, which every
            model sknet builds or loads carries): its preprocessing and class names, unless
            ``preprocess``/``classes`` are given; a model without one needs ``preprocess``
            (``ConfigError`` otherwise: sknet does not guess). The model is moved to
            ``device`` and run in eval mode (its training flag is restored).
        images: file paths, folders, glob patterns (see :func:`expand_inputs`) and/or PIL
            images.
        topk: how many classes to return per image (at most the number of classes).
        batch_size: images per forward pass.
        explain: also record each SK unit's mean attention per branch (same forward pass).
        device: ``"auto"`` (the GPU when there is one, as everywhere in sknet), ``"cpu"``,
            ``"cuda"``, ``"cuda:N"`` or a ``torch.device``.
        preprocess: override the weights' preprocessing.
        classes: override the class names.
        progress: called as ``progress(done, total)`` after each batch.

    Files that cannot be read get a :class:`Prediction` with ``error`` set; the others are
    still classified.

    Raises:
        ConfigError: bad ``topk``/``batch_size``/``device``, a model whose preprocessing is
            unknown and no ``preprocess``, a model without classifier or not
            of 3 input channels, class names that do not match, ``explain`` on a model without
            SK attention (a ``ValueError``).
        InputError, MissingFileError, InputTypeError: from :func:`expand_inputs`.
        InputTypeError: ``model_or_source`` or ``preprocess`` of the wrong type.
        MissingFileError, FileFormatError, ConfigError: from loading the source.
    """
    for name, value in (("topk", topk), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive int, got {value!r}")
    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    items = expand_inputs(images)  # before loading: input errors are cheap to find
    model, pre, names, _ = _resolve(model_or_source, preprocess, classes)
    num_classes = _check_classifier(model, names)
    units = {k_: u for k_, u in sk_units(model).items() if getattr(u, "attn", None) is not None}
    if explain and not units:
        raise ConfigError(
            f"{getattr(model, 'model_name', type(model).__name__)} has no SK units with "
            "attention: there is nothing to explain"
        )
    run = _BatchRun(
        model, dev, min(topk, num_classes), units, explain, names, preprocess_transform(pre)
    )
    was_training = model.training
    model.to(dev).eval()
    results: list[Prediction] = []
    total = len(items)
    try:
        for start in range(0, total, batch_size):
            results += run(items[start : start + batch_size], start)
            if progress is not None:
                progress(min(start + batch_size, total), total)
    finally:
        model.train(was_training)
    return results


def _check_classifier(model: nn.Module, names: Sequence[str] | None) -> int:
    """The model's number of classes, checked: a classifier, RGB input, matching names."""
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    if num_classes < 1:
        raise ConfigError("predict needs a model with a classifier (num_classes >= 1)")
    if int(getattr(model, "in_chans", 3)) != 3:
        raise ConfigError(
            f"predict reads RGB images; this model takes {model.in_chans} input channels"
        )
    if names is not None and len(names) != num_classes:
        raise ConfigError(f"{len(names)} class names for a model with {num_classes} classes")
    return num_classes


class _BatchRun:
    """One batch of inputs -> its predictions (unreadable inputs get an error entry)."""

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        k: int,
        units: Mapping[str, nn.Module],
        explain: bool,
        names: Sequence[str] | None,
        transform: Callable[[Any], torch.Tensor],
    ) -> None:
        self.model, self.device, self.k, self.units, self.explain = model, device, k, units, explain
        self.names, self.transform = names, transform
        self.unit_branches = {key: branch_names(u) for key, u in units.items()}

    def __call__(self, batch: Sequence[Any], start: int) -> list[Prediction]:
        chunk = [_read(im, start + j, self.transform) for j, im in enumerate(batch)]
        good = [x for _, x, _err in chunk if x is not None]  # x is None exactly on error
        outs: list[tuple[list[int], list[float], dict[str, dict[str, float]] | None]] = []
        if good:
            x = torch.stack(good).to(self.device)
            outs = _classify(self.model, x, self.k, self.units, self.unit_branches, self.explain)
        it = iter(outs)
        results: list[Prediction] = []
        for p, _, err in chunk:
            if err is not None:
                results.append(Prediction(path=p, error=err))
                continue
            ids, vals, att_i = next(it)
            names = self.names
            results.append(
                Prediction(
                    path=p,
                    labels=tuple(names[i] if names else f"class {i}" for i in ids),
                    indices=tuple(int(i) for i in ids),
                    scores=tuple(float(v) for v in vals),
                    attention=att_i,
                )
            )
        return results

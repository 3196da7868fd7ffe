"""Training configuration: the :class:`TrainConfig` dataclass, named presets and overrides.

A preset is a plain TOML file (``src/sknet/presets/<name>.toml``) of ``TrainConfig`` fields plus
an optional ``[model_overrides]`` table. Users copy one, edit it and pass it with
``sknet train --config FILE.toml``; any field can also be overridden on the command line
(``--set epochs=3``) or in Python (``load_preset("demo", epochs=3)``). Unknown keys are errors
that name the key and suggest the closest valid one.

Batch semantics: ``batch_size`` is the *global* batch of one optimizer step, summed over all
processes and gradient-accumulation micro-batches (the paper's "batch 256" is a global batch).
Each process runs micro-batches of ``batch_size // (world_size * grad_accum)`` images.
``lr`` is the learning rate at a global batch of ``lr_reference_batch``; the learning rate used is
``lr * batch_size / lr_reference_batch`` (linear scaling rule, Goyal et al. 2017); a reference of
0 turns scaling off.

Fine-tuning: ``init`` names weights to start from (anything :func:`sknet.load` accepts); with
``model = ""`` the architecture is the init weights' own (see :mod:`sknet.train.finetune`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from sknet._json import jsonable
from sknet._typecheck import coerce_field, suggest
from sknet.data import DATASET_NAMES, DEFAULT_SCALE_RANGE, DENSE_DATASET_NAMES, TASKS
from sknet.errors import ConfigError, MissingFileError, OverrideError
from sknet.models import get_entry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "AMP_MODES",
    "AUTO_AUGMENTS",
    "DENSE_BN",
    "DENSE_HEADS",
    "OPTIMIZERS",
    "SCHEDULES",
    "TrainConfig",
    "apply_overrides",
    "list_presets",
    "load_config_file",
    "load_preset",
    "parse_set_options",
    "preset_path",
    "resolve_engine",
]

#: ``schedule`` values. ``step``: divide by ``1 / lr_gamma`` every ``lr_step`` epochs;
#: ``multistep``: at each epoch of ``lr_milestones``; ``cosine``: half-cosine to ``min_lr``;
#: ``constant``. All follow an optional linear warm-up of ``warmup_epochs``.
SCHEDULES: tuple[str, ...] = ("step", "multistep", "cosine", "constant")
#: ``optimizer`` values: SGD with (Nesterov) momentum, or AdamW (decoupled weight decay).
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")
#: ``amp`` values (autocast precision).
AMP_MODES: tuple[str, ...] = ("none", "bf16", "fp16")
#: ``data`` values: :data:`sknet.data.DATASET_NAMES`.
#: ``device`` values (``cuda:N`` is accepted too).
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
#: ``auto_augment`` values: none, or torchvision's RandAugment / TrivialAugmentWide policies.
AUTO_AUGMENTS: tuple[str, ...] = ("none", "randaugment", "trivialaugment")
#: ``head`` values per dense task (the first is the default).
DENSE_HEADS: dict[str, tuple[str, ...]] = {
    "detect": ("fcos", "retinanet", "faster_rcnn", "mask_rcnn"),
    "segment": ("fpn",),
}
#: ``dense_bn`` values: ``auto`` trains the backbone's BatchNorm from scratch and freezes it
#: (statistics and affine) when starting from ``init`` weights; ``train`` / ``frozen`` force one.
DENSE_BN: tuple[str, ...] = ("auto", "train", "frozen")


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved as ``config.toml`` in the run directory).

    Model:
        model: registry name (``sknet.list_models()``); ``""``: the architecture of ``init``.
        model_overrides: fields of the model family's config (e.g. ``{"sk_aggregation": "sum"}``).
        num_classes: classifier width; 0 takes the dataset's number of classes.
        init: weights to start from (fine-tuning): a run directory, ``.safetensors`` file,
            checkpoint or registry ``name.tag``; ``""``: random initialisation. Every tensor must
            fit except the classifier, which is new unless the class names are the same.
        freeze_stages: -1 trains everything; 0 freezes the stem, ``n`` the stem and the first
            ``n`` stages (no gradients, their BatchNorm statistics fixed).
    Task (beyond the paper, see :mod:`sknet.train.dense`):
        task: ``classify`` (the paper's), ``detect`` or ``segment``.
        head: the dense head (:data:`DENSE_HEADS`; empty: the task's first).
        object_sizes: object extent range in pixels of the ``synthetic-dense`` canvases
            (log-uniform); also what the detector's anchor sizes are chosen from.
        max_objects: objects per ``synthetic-dense`` canvas (1 to this many).
        fpn_channels: width of the feature pyramid.
        dense_bn: :data:`DENSE_BN`.
    Data:
        data: ``synthetic`` (built in, generated on the fly), ``cifar10``, ``cifar100`` or
            ``imagefolder`` (``data_dir/train/<class>/*``, ``data_dir/val/<class>/*``); for the
            dense tasks ``synthetic-dense`` or ``coco`` (``data_dir/{train,val}/`` images and
            ``data_dir/annotations/instances_{train,val}.json``).
        data_dir: folder of real data (never downloaded).
        image_size: training resolution; 0 picks the default (synthetic: the model's native
            size, CIFAR: 32, imagefolder: 224).
        num_samples, val_samples: sizes of the synthetic train and val splits.
        scale_range: synthetic object sizes (fraction of the canvas, log-uniform).
        mean, std: input normalisation; empty: the data's own statistics (with ``init``, the
            init weights' when they record one).
        crop_scale: ``RandomResizedCrop`` area range (imagefolder).
        max_bad: unreadable images tolerated (imagefolder) before the run stops.
        cache_data: keep rendered synthetic images in memory (rendered once, not every epoch).
    Optimisation (SGD with momentum as in the paper; ``optimizer="adamw"`` for quick demos):
        optimizer (:data:`OPTIMIZERS`; momentum/nesterov apply to SGD only, AdamW's weight decay
        is decoupled), epochs, batch_size (global), lr, lr_reference_batch, momentum, nesterov,
        weight_decay, wd_exclude_bn_bias (no weight decay on BatchNorm weights/biases and on
        biases, i.e. on every 1-D parameter, as the official SKNet release's ``decay_mult: 0``),
        backbone_lr_scale (learning-rate factor of every parameter outside the classifier),
        label_smoothing, schedule (:data:`SCHEDULES`), lr_step, lr_milestones, lr_gamma,
        warmup_epochs, min_lr.
    Modern ingredients (all off in the paper presets; not in the SKNet paper):
        auto_augment (:data:`AUTO_AUGMENTS`: torchvision's RandAugment / TrivialAugmentWide in
        the train transform), mixup_alpha, cutmix_alpha (0: off; torchvision's MixUp / CutMix on
        each batch, soft-target cross entropy; with both, one of the two per batch),
        ema_decay (0: off; an exponential moving average of the weights, evaluated and saved
        instead of the raw weights, kept in checkpoints), grad_clip_norm (0: off; the global
        gradient norm is clipped to it). Stochastic depth: ``model_overrides.drop_path_rate``.
    Engine:
        seed, device (``auto``/``cpu``/``cuda``), workers (DataLoader processes; -1: auto),
        threads (torch intra-op threads; 0: auto), see :func:`resolve_engine`; amp
        (:data:`AMP_MODES`), channels_last, sync_bn, grad_accum, deterministic (deterministic
        algorithms; bit-exact resume on CPU).
    Bookkeeping:
        log_every (steps between progress/metric updates), checkpoint_every (optimizer steps
        between mid-epoch checkpoints; 0: at epoch ends only), eval_every (epochs),
        eval_batch_size (per process; 0: twice the micro-batch), tensorboard, rank_summaries
        (each rank writes ``ranks/rank<R>.json`` with its metrics and a weights digest).
    """

    # model
    model: str = "sknet_tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    num_classes: int = 0
    init: str = ""
    freeze_stages: int = -1
    # task (classification, or the dense tasks beyond the paper)
    task: str = "classify"
    head: str = ""
    object_sizes: tuple[float, float] = (8.0, 64.0)
    max_objects: int = 4
    fpn_channels: int = 64
    dense_bn: str = "auto"
    # data
    data: str = "synthetic"
    data_dir: str = ""
    image_size: int = 0
    num_samples: int = 10000
    val_samples: int = 2000
    scale_range: tuple[float, float] = DEFAULT_SCALE_RANGE
    crop_scale: tuple[float, float] = (0.08, 1.0)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    max_bad: int = 50
    cache_data: bool = True
    # optimisation
    optimizer: str = "sgd"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.1
    lr_reference_batch: int = 0
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    wd_exclude_bn_bias: bool = False
    backbone_lr_scale: float = 1.0
    label_smoothing: float = 0.0
    schedule: str = "cosine"
    lr_step: int = 30
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    # modern ingredients (off by default)
    auto_augment: str = "none"
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    ema_decay: float = 0.0
    grad_clip_norm: float = 0.0
    # engine
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    threads: int = 0
    amp: str = "none"
    channels_last: bool = False
    sync_bn: bool = False
    grad_accum: int = 1
    deterministic: bool = False
    # bookkeeping
    log_every: int = 20
    checkpoint_every: int = 0
    eval_every: int = 1
    eval_batch_size: int = 0
    tensorboard: bool = True
    rank_summaries: bool = False
    # provenance (informational)
    preset: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), _HINTS()[f.name]))
        self.model_overrides = dict(self.model_overrides)
        self.validate()

    # ------------------------------------------------------------------ validation

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        self._validate_model_and_data()
        self._validate_optimisation()
        self._validate_engine()

    def _validate_model_and_data(self) -> None:
        if self.model:
            get_entry(self.model)  # unknown model -> ValueError with suggestions
        _need(self.num_classes >= 0, f"num_classes must be >= 0, got {self.num_classes}")
        _need(self.freeze_stages >= -1, f"freeze_stages must be >= -1, got {self.freeze_stages}")
        self._validate_task()
        _need(self.image_size >= 0, f"image_size must be >= 0, got {self.image_size}")
        _need(self.num_samples >= 1, f"num_samples must be >= 1, got {self.num_samples}")
        _need(self.val_samples >= 1, f"val_samples must be >= 1, got {self.val_samples}")
        lo, hi = self.scale_range
        _need(
            0 < lo <= hi, f"scale_range must satisfy 0 < min <= max, got {list(self.scale_range)}"
        )
        lo, hi = self.crop_scale
        _need(
            0 < lo <= hi <= 1,
            f"crop_scale must satisfy 0 < min <= max <= 1, got {list(self.crop_scale)}",
        )
        for name in ("mean", "std"):
            v = getattr(self, name)
            _need(len(v) in (0, 3), f"{name} must be empty or 3 values, got {list(v)}")
        _need(all(x > 0 for x in self.std), f"std values must be > 0, got {list(self.std)}")
        _need(self.max_bad >= 0, f"max_bad must be >= 0, got {self.max_bad}")
        if not isinstance(self.model_overrides, dict):  # pragma: no cover - coerced above
            raise ConfigError("model_overrides must be a table of model config fields")

    def _validate_task(self) -> None:
        _need(self.task in TASKS, f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.task == "classify":
            _need(
                self.data in DATASET_NAMES,
                f"data must be one of {', '.join(DATASET_NAMES)} for classification, got "
                f"{self.data!r}"
                + (" (a dense data set: set task = 'detect' or 'segment')" if self.data
                   in DENSE_DATASET_NAMES else ""),
            )  # fmt: skip
            _need(not self.head, f"head={self.head!r} is for task detect or segment")
            return
        _need(
            self.data in DENSE_DATASET_NAMES,
            f"task={self.task!r} needs data {' or '.join(DENSE_DATASET_NAMES)}, got {self.data!r}",
        )
        heads = DENSE_HEADS[self.task]
        _need(
            not self.head or self.head in heads,
            f"head for task={self.task!r} must be one of {', '.join(heads)}, got {self.head!r}",
        )
        lo, hi = self.object_sizes
        _need(
            1 <= lo <= hi,
            f"object_sizes must satisfy 1 <= min <= max (pixels), got {list(self.object_sizes)}",
        )
        _need(self.max_objects >= 1, f"max_objects must be >= 1, got {self.max_objects}")
        _need(self.fpn_channels >= 8, f"fpn_channels must be >= 8, got {self.fpn_channels}")
        _need(
            self.dense_bn in DENSE_BN,
            f"dense_bn must be one of {', '.join(DENSE_BN)}, got {self.dense_bn!r}",
        )
        for key in ("mixup_alpha", "cutmix_alpha"):
            _need(getattr(self, key) == 0, f"{key} is for classification; set it to 0")
        _need(
            self.auto_augment == "none",
            "auto_augment is for classification (it would move objects away from their "
            "boxes); set it to 'none'",
        )

    def resolved_head(self) -> str:
        """``head``, or the dense task's default head ("" for classification)."""
        if self.task == "classify":
            return ""
        return self.head or DENSE_HEADS[self.task][0]

    def _validate_optimisation(self) -> None:
        _need(
            self.optimizer in OPTIMIZERS,
            f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}",
        )
        _need(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _need(self.batch_size >= 2, f"batch_size must be >= 2, got {self.batch_size}")
        _need(
            math.isfinite(self.lr) and self.lr > 0, f"lr must be a positive number, got {self.lr}"
        )
        _need(
            self.lr_reference_batch >= 0,
            f"lr_reference_batch must be >= 0, got {self.lr_reference_batch}",
        )
        _need(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        _need(
            not self.nesterov or self.momentum > 0 or self.optimizer != "sgd",
            "nesterov needs momentum > 0 (set momentum)",
        )
        _need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _need(
            math.isfinite(self.backbone_lr_scale) and self.backbone_lr_scale >= 0,
            f"backbone_lr_scale must be >= 0, got {self.backbone_lr_scale}",
        )
        _need(
            0 <= self.label_smoothing < 1,
            f"label_smoothing must be in [0, 1), got {self.label_smoothing}",
        )
        _need(
            self.schedule in SCHEDULES,
            f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}",
        )
        _need(self.lr_step >= 1, f"lr_step must be >= 1 epoch, got {self.lr_step}")
        ms = list(self.lr_milestones)
        _need(
            all(m >= 1 for m in ms) and ms == sorted(set(ms)),
            f"lr_milestones must be increasing positive epochs, got {ms}",
        )
        _need(
            self.schedule != "multistep" or bool(ms),
            "schedule='multistep' needs lr_milestones (e.g. [150, 225])",
        )
        _need(0 < self.lr_gamma <= 1, f"lr_gamma must be in (0, 1], got {self.lr_gamma}")
        _need(
            0 <= self.warmup_epochs < self.epochs,
            f"warmup_epochs must be in [0, epochs={self.epochs}), got {self.warmup_epochs}",
        )
        _need(self.min_lr >= 0, f"min_lr must be >= 0, got {self.min_lr}")
        _need(
            self.auto_augment in AUTO_AUGMENTS,
            f"auto_augment must be one of {', '.join(AUTO_AUGMENTS)}, got {self.auto_augment!r}",
        )
        for name in ("mixup_alpha", "cutmix_alpha", "grad_clip_norm"):
            v = getattr(self, name)
            _need(math.isfinite(v) and v >= 0, f"{name} must be >= 0 (0: off), got {v}")
        _need(
            0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1) (0: off), got {self.ema_decay}"
        )

    def _validate_engine(self) -> None:
        _need(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        _need(
            self.device in DEVICES or self.device.startswith("cuda:"),
            f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}",
        )
        _need(self.workers >= -1, f"workers must be >= 0, or -1 (auto), got {self.workers}")
        _need(self.threads >= 0, f"threads must be >= 0 (0: auto), got {self.threads}")
        _need(
            self.amp in AMP_MODES,
            f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}",
        )
        _need(self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}")
        _need(self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}")
        _need(
            self.checkpoint_every >= 0,
            f"checkpoint_every must be >= 0 (0: epoch ends only), got {self.checkpoint_every}",
        )
        _need(self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}")
        _need(
            self.eval_batch_size >= 0, f"eval_batch_size must be >= 0, got {self.eval_batch_size}"
        )

    # ------------------------------------------------------------------ derived values

    def resolved_image_size(self) -> int:
        """``image_size``, or the default for the data (synthetic: the model's native size)."""
        if self.image_size:
            return self.image_size
        if self.data in DENSE_DATASET_NAMES:
            return 128 if self.data == "synthetic-dense" else 320
        if self.data == "synthetic":
            if not self.model:
                raise ConfigError("model is empty: set a model, or init (its architecture)")

            return get_entry(self.model).input_size
        return 32 if self.data.startswith("cifar") else 224

    def resolved_engine(self, cores: int | None = None) -> tuple[int, int]:
        """``(threads, workers)`` of the run with the automatic values resolved
        (:func:`resolve_engine`)."""
        return resolve_engine(self.threads, self.workers, self.data, cores)

    def effective_lr(self) -> float:
        """The peak learning rate used: ``lr`` scaled linearly by the global batch."""
        if self.lr_reference_batch <= 0:
            return self.lr
        return self.lr * self.batch_size / self.lr_reference_batch

    def micro_batch(self, world_size: int = 1) -> int:
        """Images per process and forward pass; raises if the global batch does not divide."""
        parts = world_size * self.grad_accum
        if self.batch_size % parts:
            raise ConfigError(
                f"batch_size={self.batch_size} (global) is not divisible by world_size "
                f"({world_size}) x grad_accum ({self.grad_accum}) = {parts}"
            )
        mb = self.batch_size // parts
        if mb < 2:
            raise ConfigError(
                f"batch_size={self.batch_size} gives {mb} image(s) per process and micro-batch; "
                "BatchNorm and SK attention need at least 2 (raise batch_size or lower "
                "grad_accum / the number of processes)"
            )
        return mb

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-friendly dict (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            out[f.name] = jsonable(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "config") -> TrainConfig:
        """Build from a dict of fields; unknown keys raise ``ValueError`` naming them."""
        return apply_overrides(cls(), values, source=source)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated; unknown keys raise ``ValueError``)."""
        return apply_overrides(self, changes, source="replace")

    def to_toml(self) -> str:
        """The config as TOML text (round-trips through :func:`load_config_file`)."""
        d = self.to_dict()
        overrides = d.pop("model_overrides")
        lines = ["# sknet training config (resolved)"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in d.items()]
        lines += ["", "[model_overrides]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in overrides.items()]
        return "\n".join(lines) + "\n"


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def resolve_engine(
    threads: int, workers: int, data: str = "imagefolder", cores: int | None = None
) -> tuple[int, int]:
    """Resolve ``threads = 0`` and ``workers = -1`` ("auto") so that the main process's
    intra-op threads plus the loader processes do not oversubscribe the cores.

    Auto workers: 0 for synthetic data (rendered in memory), else half the cores (at most 8),
    so 1 on 2 cores. Auto threads: the cores left per process, ``cores // (1 + workers)``, at
    least 1. Explicit values are kept as given.
    """
    n = available_cores() if cores is None else max(1, int(cores))
    if workers < 0:
        workers = 0 if data == "synthetic" or n < 2 else min(8, n // 2)
    if threads <= 0:
        threads = max(1, n // (1 + workers))
    return threads, workers


# ---------------------------------------------------------------------------------------------
# helpers: types, coercion, TOML
# ---------------------------------------------------------------------------------------------

_HINT_CACHE: dict[str, Any] = {}


def _HINTS() -> dict[str, Any]:
    if not _HINT_CACHE:
        _HINT_CACHE.update(typing.get_type_hints(TrainConfig))
    return _HINT_CACHE


def _field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the field type ``hint`` (sknet's one config type checker);
    a path is accepted for ``data_dir``."""
    if name == "data_dir" and isinstance(value, Path):
        value = str(value)
    return coerce_field(name, value, hint)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if v is None:
        raise ConfigError("TOML has no null: use a concrete value")
    return json.dumps(str(v))


def _unknown_key_error(keys: list[str], source: str) -> OverrideError:
    names = _field_names()
    hints = []
    for k in keys:
        hint = suggest(k, names)
        hints.append(f"{k!r} ({hint})" if hint else repr(k))
    return OverrideError(
        f"{source}: unknown config key {', '.join(hints)}; valid keys: {', '.join(names)}"
    )


def apply_overrides(
    config: TrainConfig, overrides: dict[str, Any], *, source: str = "override"
) -> TrainConfig:
    """A validated copy of ``config`` with ``overrides`` applied.

    Keys are field names; ``model_overrides`` given as a dict *replaces* the table, while
    dotted keys ``"model_overrides.<field>"`` set a single entry. Unknown keys raise
    ``ValueError`` naming them with the closest valid key.
    """
    names = set(_field_names())
    plain: dict[str, Any] = {}
    model_over = dict(config.model_overrides)
    unknown: list[str] = []
    for key, value in overrides.items():
        if key.startswith("model_overrides."):
            model_over[key.split(".", 1)[1]] = value
        elif key == "model_overrides":
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: model_overrides must be a table/dict, got {value!r}")
            model_over = dict(value)
        elif key in names:
            plain[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise _unknown_key_error(unknown, source)
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    values.update(plain)
    values["model_overrides"] = model_over
    try:
        return TrainConfig(**values)
    except OverrideError as exc:
        raise OverrideError(f"{source}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# presets and config files
# ---------------------------------------------------------------------------------------------


def list_presets() -> list[str]:
    """Names of the presets shipped in ``sknet/presets``."""
    root = resources.files("sknet").joinpath("presets")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def preset_path(name: str) -> Any:
    """The packaged TOML file of preset ``name`` (a ``Traversable``)."""
    names = list_presets()
    if name not in names:
        hint = suggest(name, names, n=2, cutoff=0.5, quote=False)
        hint = f"; {hint}" if hint else ""
        raise ConfigError(f"unknown preset {name!r}{hint} (presets: {', '.join(names)})")
    return resources.files("sknet").joinpath("presets").joinpath(f"{name}.toml")


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from None


def load_config_file(path: str | Path, **overrides: Any) -> TrainConfig:
    """Load a user TOML config (e.g. a copied preset), then apply ``overrides``."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no config file at {path}")
    values = _parse_toml(path.read_text(encoding="utf-8"), str(path))
    cfg = TrainConfig.from_dict(values, source=str(path))
    return apply_overrides(cfg, overrides, source="override") if overrides else cfg


def load_preset(name: str = "demo", **overrides: Any) -> TrainConfig:
    """A preset by name (``demo``, ``cifar``, ``imagenet``, ``imagenet-light``) or TOML path.

    Keyword arguments override fields, e.g. ``load_preset("demo", epochs=1, num_samples=512,
    model_overrides={"sk_aggregation": "sum"})``. Unknown keys raise ``ValueError``.
    """
    if name.endswith(".toml") or "/" in name or "\\" in name:
        return load_config_file(name, **overrides)
    text = preset_path(name).read_text(encoding="utf-8")
    values = _parse_toml(text, f"preset {name!r}")
    values.setdefault("preset", name)
    cfg = TrainConfig.from_dict(values, source=f"preset {name!r}")
    return apply_overrides(cfg, overrides, source="override") if overrides else cfg


def parse_set_options(items: list[str] | None) -> dict[str, Any]:
    """Parse ``--set key=value`` strings; values are TOML literals, else plain strings.

    ``--set epochs=3``, ``--set lr=0.05``, ``--set lr_milestones=[150,225]``,
    ``--set amp=bf16``, ``--set model_overrides.sk_branches='["3x3","3x3 D2"]'``.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        raw = raw.strip()
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word: a string (e.g. amp=bf16, data_dir=/data/x)
        if _HINTS().get(key) is str and not isinstance(value, str):
            value = raw  # a text field given digits, e.g. data_dir=2024
        out[key] = value
    return out

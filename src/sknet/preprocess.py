"""How images are prepared for a model: the one :class:`Preprocess`, and the conventions' constants.

A :class:`Preprocess` says how an image becomes a model input (evaluation): resize the short
side to ``resize`` (``None``: squash to ``input_size``, as for the built-in data), centre crop
``input_size``, floats in [0, 1], ``channel_order``, normalise with ``mean``/``std`` (in [0, 1]
units). :meth:`Preprocess.transforms` builds that transform; :meth:`Preprocess.normalize` applies
the last two steps to a batch.

The conventions live here once: the ImageNet mean/std (torchvision / timm), the Caffe one
(BGR, mean 104/117/123 on 0-255 pixels, std 1: :func:`caffe_preprocess`), the mean/std of the
data kinds sknet trains on (:data:`DATA_STATS`), the short-side resize before a centre crop
(:func:`eval_resize`) and the BGR flip (:func:`to_channel_order`).

This is a base module: it imports torch and sknet's errors and limits only (torchvision lazily,
inside :meth:`Preprocess.transforms`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

import sknet._limits as _limits
from sknet.errors import ConfigError, FileFormatError, InputError

__all__ = [
    "CAFFE_MEAN_255",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DATA_STATS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SYNTHETIC_MEAN",
    "SYNTHETIC_STD",
    "DataConfig",
    "Preprocess",
    "caffe_preprocess",
    "default_preprocess",
    "eval_resize",
    "to_channel_order",
]

Interpolation = Literal["bilinear", "bicubic", "nearest"]
ChannelOrder = Literal["RGB", "BGR"]
Triple = tuple[float, float, float]

IMAGENET_MEAN: Triple = (0.485, 0.456, 0.406)
IMAGENET_STD: Triple = (0.229, 0.224, 0.225)
CIFAR10_MEAN: Triple = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: Triple = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN: Triple = (0.5071, 0.4865, 0.4409)
CIFAR100_STD: Triple = (0.2673, 0.2564, 0.2762)
#: The built-in synthetic shapes: [0, 1] images mapped to [-1, 1].
SYNTHETIC_MEAN: Triple = (0.5, 0.5, 0.5)
SYNTHETIC_STD: Triple = (0.5, 0.5, 0.5)
#: The Caffe convention's mean, in BGR order and 0-255 units (std 1).
CAFFE_MEAN_255: Triple = (104.0, 117.0, 123.0)
#: Default ``(mean, std)`` per data kind (the values of :func:`sknet.data.normalization`).
DATA_STATS: dict[str, tuple[Triple, Triple]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "imagefolder": (IMAGENET_MEAN, IMAGENET_STD),
    "cifar": (CIFAR10_MEAN, CIFAR10_STD),
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
    "synthetic": (SYNTHETIC_MEAN, SYNTHETIC_STD),
}

_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
_ORDERS = ("RGB", "BGR")


def _show(value: Any, limit: int = 60) -> str:
    """A short text of ``value`` for a message (``str`` of a huge integer raises)."""
    try:
        text = str(value)
    except ValueError:
        text = f"<a {type(value).__name__} too large to show>"
    return " ".join(text[: limit * 2].split())[:limit]


def _guard_int(value: Any, name: str, where: object, error: type[Exception]) -> None:
    """Refuse an integer too large even to print, before the bounded checks word it."""
    if isinstance(value, int) and value.bit_length() > 64:
        raise error(f"{where}: {name} is a {value.bit_length()}-bit integer")


def _triple(
    value: Any, name: str, label: object, error: type[Exception], *, positive: bool = False
) -> Triple:
    """``value`` as three finite floats (positive ones if ``positive``), else ``error``."""
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise error(f"{label}: {name} must be 3 numbers (one per channel), got {_show(value)}")
    out = []
    for x in value:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise error(f"{label}: {name} must be 3 numbers, got {_show(value)}")
        try:
            f = float(x)
        except OverflowError:
            f = math.inf
        if not math.isfinite(f) or (positive and f <= 0):
            need = "positive finite" if positive else "finite"
            raise error(f"{label}: {name} must be 3 {need} numbers, got {_show(value)}")
        out.append(f)
    return (out[0], out[1], out[2])


def eval_resize(input_size: int, crop_pct: float = 0.875) -> int:
    """Short side to resize to before a centre crop of ``input_size``:
    ``round(input_size / crop_pct)`` (224 -> 256, 320 -> 366)."""
    if not 0.0 < crop_pct <= 1.0:
        raise ConfigError(f"crop_ratio must be in (0, 1], got {crop_pct}")
    return math.floor(input_size / crop_pct + 0.5)


def to_channel_order(x: torch.Tensor, order: str, dim: int) -> torch.Tensor:
    """An RGB tensor in ``order`` (``"BGR"`` flips the channel dimension ``dim``)."""
    return x.flip(dim) if order == "BGR" else x


@dataclass(frozen=True)
class Preprocess:
    """How images must be prepared for a model (applied by eval, analyze and predict).

    The image is resized so that its short side is ``resize`` (``None``: resized to
    ``input_size`` x ``input_size``, as for the built-in data), centre-cropped to ``input_size``,
    converted to floats in [0, 1], put in ``channel_order`` and normalised with ``mean``/``std``
    (in [0, 1] units). Caffe-style ``(x * 255 - m) * s`` is the same as ``mean = m / 255``,
    ``std = 1 / (255 s)``.
    """

    input_size: int
    resize: int | None = None
    interpolation: Interpolation = "bilinear"
    mean: Triple = IMAGENET_MEAN
    std: Triple = IMAGENET_STD
    channel_order: ChannelOrder = "RGB"

    @property
    def image_size(self) -> int:
        """:attr:`input_size` (the name eval reports use)."""
        return self.input_size

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: object = None) -> Preprocess:
        """The preprocessing described by ``d`` (unknown keys are ignored), every field checked.

        ``input_size`` (required) and ``resize`` (or None) are image sides in
        ``[1, MAX_IMAGE_SIDE]``; ``interpolation`` is one of ``bilinear``, ``bicubic``,
        ``nearest``; ``channel_order`` is ``RGB`` or ``BGR``; ``mean`` and ``std`` are three
        finite numbers, ``std`` positive. ``where`` names a file's metadata: a bad value raises
        :class:`FileFormatError` starting with it; without ``where`` (an argument) it raises
        :class:`ConfigError`. Both are ``ValueError``.
        """
        error = ConfigError if where is None else FileFormatError
        label = where if where is not None else "preprocess"
        if not isinstance(d, Mapping):
            raise error(f"{label}: expected a table of fields, not {type(d).__name__}")
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if "input_size" not in known:
            raise error(f"{label}: preprocess needs input_size")
        side = _limits.check_image_side
        for k in ("input_size", "resize"):
            _guard_int(known.get(k), k, label, error)
        known["input_size"] = side(
            known["input_size"], "input_size", where=label, config=where is None
        )
        if known.get("resize") is not None:
            known["resize"] = side(known["resize"], "resize", where=label, config=where is None)
        for k in ("mean", "std"):
            if k in known:
                known[k] = _triple(known[k], k, label, error, positive=k == "std")
        for k, allowed in (("interpolation", _INTERPOLATIONS), ("channel_order", _ORDERS)):
            if k in known and (not isinstance(known[k], str) or known[k] not in allowed):
                raise error(f"{label}: {k} = {_show(known[k], 40)!r} is not one of {allowed}")
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """An RGB batch in [0, 1] ``(N, 3, H, W)`` in :attr:`channel_order`, normalised."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"expected an RGB batch of shape (N, 3, H, W), got {tuple(x.shape)}")
        x = to_channel_order(x, self.channel_order, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def transforms(self) -> Callable[[Any], torch.Tensor]:
        """PIL RGB image -> normalised ``(3, input_size, input_size)`` tensor: the evaluation
        transform of these weights (torchvision). The returned callable has a ``geometry``
        attribute: the resize and crop alone (the view the model sees)."""
        from torchvision import transforms as T  # optional at import time: only here

        modes = {
            "bilinear": T.InterpolationMode.BILINEAR,
            "bicubic": T.InterpolationMode.BICUBIC,
            "nearest": T.InterpolationMode.NEAREST,
        }
        if self.interpolation not in modes:
            raise ConfigError(
                f"unknown interpolation {self.interpolation!r}; expected one of {', '.join(modes)}"
            )
        if self.channel_order not in _ORDERS:
            raise ConfigError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        mode = modes[self.interpolation]
        size = int(self.input_size)
        if self.resize is None:
            steps: list[Any] = [T.Resize((size, size), interpolation=mode, antialias=True)]
        else:
            steps = [
                T.Resize(int(self.resize), interpolation=mode, antialias=True),
                T.CenterCrop(size),
            ]
        geometry = T.Compose(steps)
        to_tensor = T.ToTensor()
        normalize = T.Normalize(list(self.mean), list(self.std))
        order = self.channel_order

        def transform(img: Any) -> torch.Tensor:
            return normalize(to_channel_order(to_tensor(geometry(img)), order, 0))

        transform.geometry = geometry  # type: ignore[attr-defined]  # the crop the model sees
        return transform


def caffe_preprocess(input_size: int = 224, resize: int = 256) -> Preprocess:
    """The Caffe convention: BGR, ``(255 x - (104, 117, 123)) / 1``, in :class:`Preprocess`
    units (mean and std divided by 255)."""
    return Preprocess(
        input_size=input_size,
        resize=resize,
        interpolation="bilinear",
        mean=(CAFFE_MEAN_255[0] / 255, CAFFE_MEAN_255[1] / 255, CAFFE_MEAN_255[2] / 255),
        std=(1 / 255, 1 / 255, 1 / 255),
        channel_order="BGR",
    )


def default_preprocess(
    input_size: int,
    data: str | None,
    mean: Any = None,
    std: Any = None,
) -> Preprocess:
    """The preprocessing of sknet-trained models (and foreign ImageNet weights without any):
    the data kind's mean/std unless given, and for ImageNet-like data (or, without a data kind,
    inputs of at least 128 pixels) a short-side resize to :func:`eval_resize` before the crop."""
    if mean is None or std is None:
        mean, std = DATA_STATS.get(data or "imagenet", DATA_STATS["imagenet"])
    imagenet_like = data in ("imagefolder", "imagenet") or (data is None and input_size >= 128)
    m = tuple(float(x) for x in mean)
    s = tuple(float(x) for x in std)
    return Preprocess(
        input_size=int(input_size),
        resize=eval_resize(input_size) if imagenet_like else None,
        mean=(m[0], m[1], m[2]),
        std=(s[0], s[1], s[2]),
    )


@dataclass(frozen=True)
class DataConfig:
    """What a model expects and answers: its input :class:`Preprocess` and its class names.

    Every model sknet returns carries one as ``model.data_config`` (None where the
    preprocessing is truly unknown); :func:`sknet.predict`, evaluation and export read it.
    ``classes`` are the readable names in label order (None: unknown, e.g. a fresh head);
    ``class_ids`` the identifiers data folders use for them (ImageNet's WordNet ids);
    ``provenance`` where the weights came from (``{"init": "random"}`` for untrained weights);
    ``source`` what the model was loaded from (a registry name, a file, a tag).
    """

    preprocess: Preprocess
    classes: tuple[str, ...] | None = None
    class_ids: tuple[str, ...] | None = None
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)
    source: str | None = None

    @property
    def input_size(self) -> int:
        return self.preprocess.input_size

    @property
    def random_weights(self) -> bool:
        """Whether the weights are a random initialisation (a bare registry name)."""
        return self.provenance.get("init") == "random"

    def transforms(self) -> Callable[[Any], torch.Tensor]:
        """The evaluation transform: :meth:`Preprocess.transforms`."""
        return self.preprocess.transforms()

    def without_classes(self) -> DataConfig:
        """The same preprocessing for a fresh classifier: no class names."""
        return DataConfig(self.preprocess, None, None, dict(self.provenance), self.source)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: ``preprocess`` fields, ``classes``, ``class_ids``, ``source``."""
        return {
            "preprocess": self.preprocess.to_dict(),
            "classes": list(self.classes) if self.classes is not None else None,
            "class_ids": list(self.class_ids) if self.class_ids is not None else None,
            "source": self.source,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: object = None) -> DataConfig:
        """The inverse of :meth:`to_dict`, every field checked (bad values raise
        :class:`FileFormatError` naming ``where``, or :class:`ConfigError` without it)."""
        error = ConfigError if where is None else FileFormatError
        label = where if where is not None else "data config"
        if not isinstance(d, Mapping) or "preprocess" not in d:
            raise error(f"{label}: a data config needs a 'preprocess' table")
        pre = Preprocess.from_dict(d["preprocess"], where)

        def names(key: str) -> tuple[str, ...] | None:
            v = d.get(key)
            if v is None:
                return None
            if not isinstance(v, (list, tuple)) or len(v) > _limits.MAX_CLASSES:
                raise error(f"{label}: {key} must be a list of names")
            return tuple(_show(c, 1000) for c in v)

        source = d.get("source")
        shown = _show(source, 1000) if source is not None else None
        return cls(pre, names("classes"), names("class_ids"), {}, shown)

    @classmethod
    def from_json(cls, text: str, where: object = None) -> DataConfig:
        """:meth:`from_dict` of a JSON text (size and depth bounded)."""
        return cls.from_dict(_limits.parse_json(text, "data config", where or "data config"), where)

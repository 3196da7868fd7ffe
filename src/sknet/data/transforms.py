"""Named train / eval transform presets (``torchvision.transforms`` v1).

Kinds:

* ``"imagenet"`` (alias ``"imagefolder"``): PIL input. Train: ``RandomResizedCrop`` +
  horizontal flip; eval: resize the short side to ``round(image_size / crop_ratio)`` then
  ``CenterCrop(image_size)`` (224 -> 256, 320 -> 366). Normalised with ImageNet statistics.
* ``"cifar"`` (aliases ``"cifar10"``, ``"cifar100"`` pick that dataset's statistics): PIL input.
  Train: ``RandomCrop(32, padding=4)`` + flip; eval: tensor conversion only (another
  ``image_size`` resizes first).
* ``"synthetic"``: input is already a float tensor in ``[0, 1]`` (:class:`SyntheticShapes`).
  Train: horizontal flip; eval: nothing but normalisation (0.5 / 0.5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision import transforms as T
from torchvision.transforms import v2

from sknet.errors import ConfigError
from sknet.preprocess import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    DATA_STATS,
    IMAGENET_MEAN,
    IMAGENET_STD,
)

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TRANSFORM_KINDS",
    "eval_resize_size",
    "eval_transform",
    "normalization",
    "train_transform",
]


#: Accepted ``kind`` values (aliases included).
TRANSFORM_KINDS: tuple[str, ...] = (
    "imagenet",
    "imagefolder",
    "cifar",
    "cifar10",
    "cifar100",
    "synthetic",
)

_CANONICAL = {
    "imagenet": "imagenet",
    "imagefolder": "imagenet",
    "cifar": "cifar",
    "cifar10": "cifar",
    "cifar100": "cifar",
    "synthetic": "synthetic",
}

_STATS = DATA_STATS  # one copy of the statistics: sknet.preprocess

_DEFAULT_SIZE = {"imagenet": 224, "cifar": 32, "synthetic": 48}


def _canonical(kind: str) -> str:
    try:
        return _CANONICAL[kind]
    except KeyError:
        raise ConfigError(
            f"unknown transform kind {kind!r}; expected one of {list(TRANSFORM_KINDS)}"
        ) from None


def normalization(
    kind: str,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Default ``(mean, std)`` for a transform kind (``"cifar"`` uses CIFAR-10 statistics)."""
    _canonical(kind)
    return _STATS[kind]


def _normalize(kind: str, mean: Sequence[float] | None, std: Sequence[float] | None) -> T.Normalize:
    d_mean, d_std = _STATS[kind]
    return T.Normalize(
        mean=list(d_mean if mean is None else mean), std=list(d_std if std is None else std)
    )


def eval_resize_size(image_size: int, crop_ratio: float = 0.875) -> int:
    """Short-side resize before the centre crop: ``round(image_size / crop_ratio)``.

    224 -> 256, 320 -> 366 (rounded, not truncated).
    """
    if not 0.0 < crop_ratio <= 1.0:
        raise ConfigError(f"crop_ratio must be in (0, 1], got {crop_ratio}")
    return math.floor(image_size / crop_ratio + 0.5)


def train_transform(
    kind: str,
    image_size: int | None = None,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    auto_augment: str = "none",
) -> T.Compose:
    """Training augmentation preset.

    Args:
        kind: One of :data:`TRANSFORM_KINDS`.
        image_size: Output side (default 224 imagenet, 32 cifar; ignored for synthetic).
        crop_scale: ``RandomResizedCrop`` area range (imagenet only).
        mean: Normalisation mean (default: the kind's statistics).
        std: Normalisation std (default: the kind's statistics).
        auto_augment: ``"none"``, ``"randaugment"`` (torchvision's ``RandAugment``, 2 ops at
            magnitude 9) or ``"trivialaugment"`` (``TrivialAugmentWide``), applied after the
            crop and flip, before normalisation.
    """
    canon = _canonical(kind)
    size = _DEFAULT_SIZE[canon] if image_size is None else int(image_size)
    norm = _normalize(kind, mean, std)
    policy = _auto_augment(auto_augment)
    if canon == "imagenet":
        return T.Compose(
            [
                T.RandomResizedCrop(size, scale=tuple(crop_scale)),
                T.RandomHorizontalFlip(),
                *policy,
                T.ToTensor(),
                norm,
            ]
        )
    if canon == "cifar":
        # CIFAR images are 32x32; another image_size resizes first and scales the padding.
        steps: list[object] = [] if size == 32 else [T.Resize(size)]
        pad = 4 if size == 32 else max(1, round(4 * size / 32))
        return T.Compose(
            [
                *steps,
                T.RandomCrop(size, padding=pad),
                T.RandomHorizontalFlip(),
                *policy,
                T.ToTensor(),
                norm,
            ]
        )
    # synthetic: float tensors in [0, 1]; the policies work on uint8 images.
    tensor_policy: list[object] = (
        [_ToUint8(), *policy, T.ConvertImageDtype(torch.float32)] if policy else []
    )
    return T.Compose([T.RandomHorizontalFlip(), *tensor_policy, norm])


#: ``auto_augment`` values of :func:`train_transform`.
AUTO_AUGMENTS: tuple[str, ...] = ("none", "randaugment", "trivialaugment")


def _auto_augment(name: str) -> list[object]:
    if name == "none":
        return []
    if name == "randaugment":
        return [v2.RandAugment()]
    if name == "trivialaugment":
        return [v2.TrivialAugmentWide()]
    raise ConfigError(f"auto_augment must be one of {', '.join(AUTO_AUGMENTS)}, got {name!r}")


class _ToUint8:
    """A float image in [0, 1] as uint8 (what the augmentation policies expect)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def eval_transform(
    kind: str,
    image_size: int | None = None,
    crop_ratio: float = 0.875,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    interpolation: str = "bilinear",
) -> T.Compose:
    """Evaluation preset.

    imagenet: ``Resize(eval_resize_size(image_size, crop_ratio), interpolation)`` +
    ``CenterCrop(image_size)``;
    cifar: ``ToTensor`` (plus ``Resize`` when ``image_size`` is not 32); synthetic: only
    normalisation. All end with ``Normalize(mean, std)``.
    """
    canon = _canonical(kind)
    size = _DEFAULT_SIZE[canon] if image_size is None else int(image_size)
    norm = _normalize(kind, mean, std)
    if canon == "imagenet":
        return T.Compose(
            [
                T.Resize(
                    eval_resize_size(size, crop_ratio),
                    interpolation=T.InterpolationMode(interpolation),
                ),
                T.CenterCrop(size),
                T.ToTensor(),
                norm,
            ]
        )
    if canon == "cifar":
        resize: list[object] = [] if size == 32 else [T.Resize(size)]
        return T.Compose([*resize, T.ToTensor(), norm])
    return T.Compose([norm])

"""Names and defaults shared by the data, training, evaluation and analysis code."""

from __future__ import annotations

__all__ = ["DATASET_NAMES", "DEFAULT_SCALE_RANGE"]

#: Data set names understood by :func:`sknet.data.build_dataset`, training and evaluation.
DATASET_NAMES: tuple[str, ...] = ("synthetic", "cifar10", "cifar100", "imagefolder")

#: Default object-size range of the synthetic shapes (fraction of the canvas side,
#: log-uniform): small to large objects, the setting where adaptive receptive fields matter.
DEFAULT_SCALE_RANGE: tuple[float, float] = (0.15, 0.9)

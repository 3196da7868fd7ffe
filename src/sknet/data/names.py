"""Names and defaults shared by the data, training, evaluation and analysis code."""

from __future__ import annotations

__all__ = ["DATASET_NAMES", "DEFAULT_SCALE_RANGE", "DENSE_DATASET_NAMES", "TASKS"]

#: Data set names understood by :func:`sknet.data.build_dataset`, training and evaluation.
DATASET_NAMES: tuple[str, ...] = ("synthetic", "cifar10", "cifar100", "imagefolder")

#: Data sets of the dense tasks (detection, segmentation): the built-in canvases of several
#: shapes with boxes, masks and a semantic map, or a COCO-format folder.
DENSE_DATASET_NAMES: tuple[str, ...] = ("synthetic-dense", "coco")

#: Training tasks: image classification (the paper's) and the dense tasks (beyond the paper).
TASKS: tuple[str, ...] = ("classify", "detect", "segment")

#: Default object-size range of the synthetic shapes (fraction of the canvas side,
#: log-uniform): small to large objects, the setting where adaptive receptive fields matter.
DEFAULT_SCALE_RANGE: tuple[float, float] = (0.15, 0.9)

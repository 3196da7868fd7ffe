"""Dense prediction (detection, segmentation) on sknet backbones: :mod:`sknet.dense.models`."""

from sknet.dense.models import (
    DENSE_TASKS,
    DETECTION_HEADS,
    GEOMETRY_RULE,
    SEGMENTATION_HEADS,
    DenseGeometry,
    DenseModel,
    build_dense_model,
    dense_complexity,
    geometry_for,
    load_backbone_weights,
)

__all__ = [
    "DENSE_TASKS",
    "DETECTION_HEADS",
    "GEOMETRY_RULE",
    "SEGMENTATION_HEADS",
    "DenseGeometry",
    "DenseModel",
    "build_dense_model",
    "dense_complexity",
    "geometry_for",
    "load_backbone_weights",
]

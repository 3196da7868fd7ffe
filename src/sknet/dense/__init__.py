"""Dense prediction (detection, segmentation) on sknet backbones (beyond the paper).

* :mod:`sknet.dense.models` - torchvision's FCOS, RetinaNet, Faster / Mask R-CNN and an FPN
  segmenter over the ``features_only`` stages, with the geometry chosen from the data;
* :mod:`sknet.dense.metrics` - COCO mAP per object-size bin, mIoU, :func:`evaluate_dense`;
* :mod:`sknet.dense.io` - saving and (checked) loading of dense models;
* :mod:`sknet.dense.predict` - prediction on image files and drawing.
"""

from sknet.dense.io import DENSE_METADATA_KEY, is_dense_source, load_dense, save_dense
from sknet.dense.metrics import (
    COCO_SIZE_BINS,
    SegmentationMeter,
    SizeBin,
    coco_metrics,
    evaluate_dense,
    size_bins_for,
)
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
from sknet.dense.predict import DenseResult, draw_result, letterbox, predict_files

__all__ = [
    "COCO_SIZE_BINS",
    "DENSE_METADATA_KEY",
    "DENSE_TASKS",
    "DETECTION_HEADS",
    "GEOMETRY_RULE",
    "SEGMENTATION_HEADS",
    "DenseGeometry",
    "DenseModel",
    "DenseResult",
    "SegmentationMeter",
    "SizeBin",
    "build_dense_model",
    "coco_metrics",
    "dense_complexity",
    "draw_result",
    "evaluate_dense",
    "geometry_for",
    "is_dense_source",
    "letterbox",
    "load_backbone_weights",
    "load_dense",
    "predict_files",
    "save_dense",
    "size_bins_for",
]

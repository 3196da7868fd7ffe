"""Prediction with SK detectors and segmenters on image files, and drawing the results.

Images are read by :func:`sknet.data.load_image` (EXIF orientation applied, decompression bombs
refused), letterboxed as in training (the longer side resized to the model's ``image_size``,
the rest padded with black at the bottom/right), predicted, and the boxes are mapped back to the
original image's pixels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import pil_to_tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from sknet.data import load_image
from sknet.dense.models import DenseModel
from sknet.errors import ConfigError

__all__ = ["DenseResult", "draw_result", "letterbox", "predict_files"]


@dataclass
class DenseResult:
    """What a detector or segmenter found in one image (coordinates of the original image).

    ``error`` is set (and the rest empty) when the image could not be read.
    """

    path: str
    width: int = 0
    height: int = 0
    boxes: list[list[float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    masks: torch.Tensor | None = None  # (M, H, W) bool, original size (Mask R-CNN)
    semantic: torch.Tensor | None = None  # (H, W) int64, original size (segmenters)
    image: torch.Tensor | None = None  # (3, H, W) uint8, for drawing
    model_boxes: torch.Tensor | None = None  # (M, 4) in the letterboxed model input
    model_input: torch.Tensor | None = None  # (3, S, S) float in [0, 1]
    error: str = ""

    def rows(self) -> list[dict[str, Any]]:
        """One row per detection (for CSV/JSON output)."""
        return [
            {
                "image": self.path,
                "label": lab,
                "score": round(float(s), 4),
                "x0": round(b[0], 1),
                "y0": round(b[1], 1),
                "x1": round(b[2], 1),
                "y1": round(b[3], 1),
            }
            for b, lab, s in zip(self.boxes, self.labels, self.scores)
        ]


def letterbox(image: torch.Tensor, size: int) -> tuple[torch.Tensor, float]:
    """``image`` (3, H, W) float resized so that its longer side is ``size`` and padded to a
    ``size`` square (bottom/right); returns it and the scale factor applied."""
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    out = torch.zeros(3, size, size, dtype=image.dtype)
    out[:, :nh, :nw] = resized.clamp(0, 1)
    return out, scale


@torch.no_grad()
def predict_files(
    model: DenseModel,
    files: Sequence[str | os.PathLike],
    classes: Sequence[str],
    *,
    score_threshold: float = 0.3,
    device: torch.device | str = "cpu",
    keep_inputs: bool = False,
) -> list[DenseResult]:
    """Run a dense model (``sknet.dense.load_dense``) on image files, one at a time."""
    if not 0 <= score_threshold <= 1:
        raise ConfigError(f"score_threshold must be in [0, 1], got {score_threshold}")
    size = int(model.geometry.image_size)
    model.eval().to(device)
    results = []
    for f in files:
        try:
            pil = load_image(f)
        except Exception as exc:  # CorruptImageError, ImageTooLargeError, OSError
            results.append(DenseResult(str(f), error=str(exc).splitlines()[0][:300]))
            continue
        image = pil_to_tensor(pil)  # (3, H, W) uint8
        x, scale = letterbox(image.float() / 255, size)
        pred = model(x[None].to(device))[0]
        res = DenseResult(str(f), width=pil.width, height=pil.height, image=image)
        if keep_inputs:
            res.model_input = x
        if "semantic" in pred:
            sem = pred["semantic"].cpu()
            nh, nw = round(pil.height * scale), round(pil.width * scale)
            crop = sem[:nh, :nw].float()[None, None]
            res.semantic = F.interpolate(crop, size=(pil.height, pil.width), mode="nearest")[
                0, 0
            ].long()
            results.append(res)
            continue
        keep = pred["scores"].cpu() >= score_threshold
        boxes = pred["boxes"].cpu()[keep]
        res.model_boxes = boxes
        orig = (boxes / scale).clamp(min=0)
        orig[:, 0::2] = orig[:, 0::2].clamp(max=pil.width)
        orig[:, 1::2] = orig[:, 1::2].clamp(max=pil.height)
        res.boxes = [[float(v) for v in b] for b in orig]
        res.labels = [_name(classes, int(lab)) for lab in pred["labels"].cpu()[keep]]
        res.scores = [float(s) for s in pred["scores"].cpu()[keep]]
        if "masks" in pred:
            m = pred["masks"].cpu()[keep][:, 0]
            nh, nw = round(pil.height * scale), round(pil.width * scale)
            m = F.interpolate(m[:, None, :nh, :nw], size=(pil.height, pil.width), mode="bilinear")
            res.masks = m[:, 0] > 0.5
        results.append(res)
    return results


def _name(classes: Sequence[str], label: int) -> str:
    return classes[label - 1] if 1 <= label <= len(classes) else f"class {label}"


def draw_result(
    result: DenseResult, classes: Sequence[str], notes: Sequence[str] | None = None
) -> torch.Tensor:
    """The image with the boxes (labels, scores and ``notes`` per box), instance masks or the
    semantic map drawn on it: (3, H, W) uint8."""
    if result.image is None:
        raise ConfigError(f"{result.path}: nothing to draw ({result.error or 'no image kept'})")
    img = result.image
    if result.semantic is not None:
        k = len(classes)
        masks = torch.stack([result.semantic == i for i in range(1, k + 1)])
        return draw_segmentation_masks(img, masks, alpha=0.5, colors=_palette(k))
    if result.masks is not None and len(result.masks):
        img = draw_segmentation_masks(img, result.masks, alpha=0.4)
    if not result.boxes:
        return img
    text = [
        f"{lab} {s:.2f}" + (f" {notes[i]}" if notes else "")
        for i, (lab, s) in enumerate(zip(result.labels, result.scores))
    ]
    idx = [classes.index(lab) if lab in classes else 0 for lab in result.labels]
    colors = [_palette(len(classes))[i] for i in idx]
    return draw_bounding_boxes(img, torch.tensor(result.boxes), labels=text, colors=colors, width=2)


def _palette(n: int) -> list[tuple[int, int, int]]:
    base = [
        (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
        (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    ]  # fmt: skip
    return [base[i % len(base)] for i in range(max(1, n))]

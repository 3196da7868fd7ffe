"""Dense-prediction data (detection, instance and semantic segmentation).

* :class:`SyntheticDense` - download-free canvases with several objects of the ten built-in shape
  classes (:data:`sknet.data.synthetic.SHAPE_CLASSES`) at widely varying sizes, with boxes,
  visible instance masks and a semantic map.
* :class:`CocoFolder` - a COCO-style folder (``root/<split>/`` images and
  ``root/annotations/instances_<split>.json``), letterboxed to a square canvas.
* :func:`dense_collate` - the ``collate_fn`` for both: stacks images, keeps targets as a list and
  reports the samples that could not be read.
* :func:`write_coco_folder` - writes any dense dataset as a COCO folder (PNG images, RLE masks).

Conventions (torchvision detection): an image is a float32 tensor ``(3, H, W)`` in ``[0, 1]``
(not normalised); a target is a dict with ``boxes`` (float32 ``(N, 4)`` xyxy pixels, pixel-edge
convention: a box around columns 3..5 is ``x0=3, x1=6``), ``labels`` (int64 ``(N,)`` in
``1..K``, ``0`` is background, the class name is ``dataset.classes[label - 1]``), ``masks``
(uint8 ``(N, H, W)`` visible instance masks), ``area`` (float32 ``(N,)``), ``iscrowd`` (int64
``(N,)``), ``semantic`` (int64 ``(H, W)``: 0 background, ``k`` label ``k``, 255 ignore) and
``image_id`` (int64 scalar tensor).

Unreadable samples: ``CocoFolder.__getitem__`` returns a :class:`BadSample` (holding the file
name) instead of ``(image, target)`` when an image cannot be read; :func:`dense_collate` drops it
and lists its name in the third element of the batch, ``bad``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from sknet._files import atomic_save, atomic_write_text
from sknet._limits import MAX_IMAGE_SIDE, bounded_int
from sknet.data.real import load_image
from sknet.data.synthetic import _SDFS, _SPLIT_IDS, SHAPE_CLASSES
from sknet.errors import ConfigError, DataError, DependencyError, MissingFileError

__all__ = [
    "BOX_TOLERANCE",
    "COCO_LAYOUT",
    "MAX_BOX_IOU",
    "MAX_COCO_IMAGE_PIXELS",
    "MAX_COCO_JSON_BYTES",
    "MAX_HIDDEN_FRACTION",
    "MAX_OBJECTS",
    "MIN_CONTRAST",
    "MIN_OBJECT_PIXELS",
    "MIN_VISIBLE_FRACTION",
    "PLACEMENT_TRIES",
    "BadSample",
    "CocoFolder",
    "SyntheticDense",
    "dense_collate",
    "write_coco_folder",
]

logger = logging.getLogger(__name__)

Array = np.ndarray
Target = dict[str, torch.Tensor]

# Salt of the SyntheticDense streams (differs from SyntheticShapes' so the streams differ).
_DENSE_SALT = 0xDE_45_E0

#: Every channel of an object's base colour differs from the mean colour of the canvas under the
#: object (before it is drawn) by at least this much (values in [0, 1]).
MIN_CONTRAST = 0.3
#: A new object may hide at most this fraction of an earlier object's visible mask.
MAX_HIDDEN_FRACTION = 0.3
#: Largest box IoU between a new object's box and any earlier object's box.
MAX_BOX_IOU = 0.5
#: Every object keeps at least this fraction of its full (unoccluded, in-canvas) mask visible.
MIN_VISIBLE_FRACTION = 0.5
#: Objects with fewer visible pixels than this are not drawn.
MIN_OBJECT_PIXELS = 4
#: Placements tried per object before it is dropped.
PLACEMENT_TRIES = 5
#: The most objects a synthetic canvas may ask for (``max_objects``).
MAX_OBJECTS = 256
# Radius of the shapes' support in units of their half-size (checker corners: 0.9 * sqrt(2)).
_SUPPORT_RADIUS = 1.3

#: The largest annotation file :class:`CocoFolder` reads (bytes).
MAX_COCO_JSON_BYTES = 2**30
#: The largest image (width * height, as the JSON records it) :class:`CocoFolder` accepts: PIL's
#: decompression-bomb limit, as :func:`sknet.data.load_image` enforces for the pixels.
MAX_COCO_IMAGE_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)
#: Tolerance (pixels) for boxes and polygons that extend beyond the image (COCO's own files
#: have boxes that exceed the image by a fraction of a pixel); they are clipped to the image.
BOX_TOLERANCE = 1.0

COCO_LAYOUT = (
    "expected layout: ROOT/<split>/ (images) and ROOT/annotations/instances_<split>.json "
    "(<split>2017 names are accepted too)"
)


def _pycocotools() -> tuple[Any, Any]:
    """``(pycocotools.coco.COCO, pycocotools.mask)``; imported when first needed, so that
    :class:`SyntheticDense` and :func:`dense_collate` work without the optional package."""
    try:
        from pycocotools import mask as mask_utils
        from pycocotools.coco import COCO
    except ImportError as exc:
        raise DependencyError(
            "COCO folders (reading and writing) need the 'pycocotools' package: "
            "pip install pycocotools"
        ) from exc
    return COCO, mask_utils


# ============================================================================ batches


@dataclass(frozen=True)
class BadSample:
    """What a dense dataset returns for a sample it cannot read: ``name`` is the file name,
    ``reason`` the one-line cause. :func:`dense_collate` drops it and lists ``name``."""

    name: str
    reason: str = ""


def dense_collate(
    batch: Sequence[tuple[torch.Tensor, Target] | BadSample | None],
) -> tuple[torch.Tensor, list[Target], list[str]]:
    """Collate dense samples: ``(images (B, 3, H, W), targets, bad)``.

    ``images`` stacks the readable samples' images (they must share one size, as the datasets of
    this module produce); ``targets`` is the list of their target dicts, in order. Samples that
    are a :class:`BadSample` (or ``None``) are dropped and their names listed in ``bad``
    (``"<unnamed sample>"`` for ``None``). A batch with no readable sample gives an empty
    ``(0, 3, 0, 0)`` image tensor.
    """
    images: list[torch.Tensor] = []
    targets: list[Target] = []
    bad: list[str] = []
    for item in batch:
        if item is None:
            bad.append("<unnamed sample>")
        elif isinstance(item, BadSample):
            bad.append(item.name)
        else:
            image, target = item
            images.append(image)
            targets.append(target)
    if not images:
        return torch.zeros((0, 3, 0, 0)), targets, bad
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) > 1:
        raise DataError(
            f"dense_collate: images of different shapes {sorted(shapes)} in one batch; give the "
            "dataset one image_size"
        )
    return torch.stack(images), targets, bad


# ============================================================================ synthetic data


@dataclass
class _Object:
    label: int  # 0-based class
    full: Array  # bool (S, S): the object's mask in the canvas, unoccluded
    full_area: int
    box: tuple[float, float, float, float]  # xyxy of the full mask
    visible: Array  # bool (S, S)
    window: tuple[int, int, int, int]  # y0, y1, x0, x1 of the rendered square
    alpha: Array  # float32 anti-aliased coverage in the window
    u: Array
    v: Array
    offset: Array  # (3,) colour offset from the local background mean
    grad: Array  # (2, 3) shading gradient
    size: float = 0.0  # side of the object's frame square, pixels
    centre: tuple[float, float] = (0.0, 0.0)  # (x, y) pixels
    angle: float = 0.0  # radians


def _box_of(mask: Array) -> tuple[float, float, float, float]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def _box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


class SyntheticDense(Dataset):
    """Canvases with 1..``max_objects`` shapes of the ten built-in classes, for detection and
    segmentation.

    Args:
        num_samples: Number of samples (indices ``0 .. num_samples - 1``).
        image_size: Side of the square canvas in pixels.
        seed: Non-negative base seed; with ``split`` it selects the sample stream.
        split: ``"train"``, ``"val"`` or ``"test"``; each split is a disjoint deterministic
            stream (sample ``i`` is a pure function of ``(seed, split, i)`` and the settings).
        object_sizes: ``(min, max)`` object size in pixels: the side of the square that the
            unrotated shape's frame spans (a shape fills most of it), sampled log-uniformly per
            object. The longer side of an unoccluded object's box is 0.8 to 1.27 times its size
            (depending on class and rotation; 1.27 for a checker turned by 45 degrees).
        max_objects: Most objects tried per canvas; each canvas tries ``1..max_objects``
            (uniform).

    Rules (each a module constant):

    * Objects are drawn in order; later objects occlude earlier ones. Each has a random class,
      size, rotation (uniform over the full turn) and centre (uniform, keeping the object's frame
      square inside the canvas when it fits), on a background of a random colour, two tinted
      sinusoidal gratings and uniform pixel noise (as :class:`~sknet.data.SyntheticShapes`).
    * Contrast: every channel of an object's base colour differs from the mean colour of the
      canvas under the object (before it is drawn) by at least :data:`MIN_CONTRAST` (0.3; the
      colour is the mean plus a random offset in 0.3..0.7, modulo 1); a mild shading gradient
      (at most +-0.12) and noise come on top.
    * Overlap: a placement is refused if the new object's box has IoU above
      :data:`MAX_BOX_IOU` (0.5) with an earlier object's box, if it would hide more than
      :data:`MAX_HIDDEN_FRACTION` (30 %) of an earlier object's visible mask, or if an earlier
      object would keep less than :data:`MIN_VISIBLE_FRACTION` (50 %) of its full mask
      visible. After :data:`PLACEMENT_TRIES` refused placements the object is dropped (not
      drawn). Objects with fewer than :data:`MIN_OBJECT_PIXELS` pixels in the canvas are dropped
      too, so a canvas may have fewer objects than tried (rarely none, with tiny sizes).
    * Every drawn object is labelled: its mask (``masks``) is its visible part (pixels where its
      signed distance is <= 0 and no later object covers them), its box is tight around the
      visible mask, ``area`` counts the visible pixels and ``semantic`` is ``label`` exactly on
      the visible masks, 0 elsewhere.

    Rendering is numpy, vectorised, and works only inside each object's bounding square: about
    a few milliseconds per 128 px canvas.

    Example:
        >>> ds = SyntheticDense(num_samples=4, image_size=64, object_sizes=(8, 32))
        >>> image, target = ds[0]
        >>> image.shape, target["semantic"].shape
        (torch.Size([3, 64, 64]), torch.Size([64, 64]))
    """

    classes: tuple[str, ...] = SHAPE_CLASSES
    num_classes: int = len(SHAPE_CLASSES)

    def __init__(
        self,
        num_samples: int,
        image_size: int = 128,
        seed: int = 0,
        split: str = "train",
        object_sizes: tuple[float, float] = (8, 64),
        max_objects: int = 4,
    ) -> None:
        num_samples = bounded_int(num_samples, "num_samples", lo=0, hi=2**40, error=DataError)
        image_size = bounded_int(image_size, "image_size", hi=MAX_IMAGE_SIDE, error=DataError)
        seed = bounded_int(seed, "seed", lo=0, hi=2**63 - 1, error=DataError)
        max_objects = bounded_int(max_objects, "max_objects", hi=MAX_OBJECTS, error=DataError)
        if split not in _SPLIT_IDS:
            raise DataError(f"split must be one of {sorted(_SPLIT_IDS)}, got {split!r}")
        try:
            lo, hi = (float(s) for s in object_sizes)
        except (TypeError, ValueError):
            raise DataError(
                f"object_sizes must be (min, max) pixels, got {object_sizes!r}"
            ) from None
        if not (math.isfinite(lo) and math.isfinite(hi) and 1.0 <= lo <= hi <= int(image_size)):
            raise DataError(
                f"object_sizes must satisfy 1 <= min <= max <= image_size ({image_size}), "
                f"got {tuple(object_sizes)}"
            )
        self.num_samples = int(num_samples)
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.split = split
        self.object_sizes = (lo, hi)
        self.max_objects = int(max_objects)
        self._coords = np.arange(self.image_size, dtype=np.float32) + np.float32(0.5)
        self._omega = self._coords * np.float32(2.0 * math.pi / self.image_size)

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_samples={self.num_samples}, image_size={self.image_size}, "
            f"seed={self.seed}, split={self.split!r}, object_sizes={self.object_sizes}, "
            f"max_objects={self.max_objects})"
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        image, objects = self._render(index)
        return image, self._target(self._index(index), objects)

    def objects(self, index: int) -> list[dict[str, Any]]:
        """The drawn objects of sample ``index``, in drawing order (the order of the target's
        instances): ``label`` (1..K), ``size`` (the sampled object size, pixels), ``centre``
        (``(x, y)`` pixels), ``angle_deg``, ``full_mask`` and ``visible_mask`` (bool numpy
        ``(H, W)``), ``full_box`` (xyxy of the unoccluded mask) and ``full_area`` (for checks
        and analyses by object size)."""
        _, objects = self._render(index)
        return [
            {
                "label": o.label + 1,
                "size": o.size,
                "centre": o.centre,
                "angle_deg": math.degrees(o.angle),
                "full_mask": o.full,
                "visible_mask": o.visible,
                "full_box": o.box,
                "full_area": o.full_area,
            }
            for o in objects
        ]

    # ------------------------------------------------------------------ internals

    def _index(self, index: int) -> int:
        index = int(index)
        if index < 0:
            index += self.num_samples
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        return index

    def _background(self, rng: np.random.Generator) -> Array:
        f32 = np.float32
        s = self.image_size
        bg = rng.uniform(0.0, 1.0, size=3).astype(f32)
        tex_amp = rng.uniform(0.02, 0.1, size=2)
        tex_freq = rng.uniform(1.0, 8.0, size=2)
        tex_theta = rng.uniform(0.0, math.pi, size=2)
        tex_phase = rng.uniform(0.0, 2.0 * math.pi, size=2)
        tex_tint = rng.uniform(0.5, 1.0, size=(2, 3))
        image = np.broadcast_to(bg[:, None, None], (3, s, s)).copy()
        for j in range(2):
            ax = f32(math.cos(tex_theta[j]) * tex_freq[j]) * self._omega
            by = f32(math.sin(tex_theta[j]) * tex_freq[j]) * self._omega
            ph = f32(tex_phase[j])
            wave = np.sin(ax + ph)[None, :] * np.cos(by)[:, None] + (
                np.cos(ax + ph)[None, :] * np.sin(by)[:, None]
            )
            image += (tex_amp[j] * tex_tint[j]).astype(f32)[:, None, None] * wave
        return image

    def _shape(
        self, label: int, half: float, angle: float, cx: float, cy: float
    ) -> tuple[tuple[int, int, int, int], Array, Array, Array]:
        """Window ``(y0, y1, x0, x1)``, object-frame ``u, v`` and signed distance (px) there."""
        f32 = np.float32
        s = self.image_size
        r = math.ceil(half * _SUPPORT_RADIUS) + 1
        x0, x1 = max(0, int(cx) - r), min(s, int(cx) + r + 1)
        y0, y1 = max(0, int(cy) - r), min(s, int(cy) + r + 1)
        ca, sa = math.cos(angle), math.sin(angle)
        dx = (self._coords[x0:x1] - f32(cx))[None, :]
        dy = (self._coords[y0:y1] - f32(cy))[:, None]
        inv = f32(1.0 / half)
        u = (f32(ca) * dx + f32(sa) * dy) * inv
        v = (f32(ca) * dy - f32(sa) * dx) * inv
        dist = _SDFS[label](u, v) * f32(half)
        return (y0, y1, x0, x1), u, v, dist

    def _render(self, index: int) -> tuple[torch.Tensor, list[_Object]]:
        index = self._index(index)
        rng = np.random.default_rng([_DENSE_SALT, self.seed, _SPLIT_IDS[self.split], index])
        # The order of the draws below is part of the data definition: do not reorder.
        f32 = np.float32
        s = self.image_size
        image = self._background(rng)
        noise_sigma = float(rng.uniform(0.01, 0.05))
        n_try = int(rng.integers(1, self.max_objects + 1))
        log_lo, log_hi = math.log(self.object_sizes[0]), math.log(self.object_sizes[1])
        objects: list[_Object] = []
        for _ in range(n_try):
            label = int(rng.integers(0, len(_SDFS)))
            half = 0.5 * math.exp(rng.uniform(log_lo, log_hi))
            angle = float(rng.uniform(0.0, 2.0 * math.pi))
            offset = rng.uniform(MIN_CONTRAST, 1.0 - MIN_CONTRAST, size=3)
            grad = rng.uniform(-0.06, 0.06, size=(2, 3)).astype(f32)
            pos = rng.uniform(0.0, 1.0, size=(PLACEMENT_TRIES, 2))
            for p in pos:
                lo_c, hi_c = half, s - half
                cx, cy = (lo_c + p * (hi_c - lo_c)) if lo_c <= hi_c else (0.5 * s, 0.5 * s)
                obj = self._place(label, half, angle, float(cx), float(cy), objects)
                if obj is not None:
                    obj.offset, obj.grad = offset, grad
                    obj.size, obj.centre, obj.angle = 2.0 * half, (float(cx), float(cy)), angle
                    objects.append(obj)
                    self._draw(image, obj)
                    break
        noise = rng.random(image.shape, dtype=f32) - f32(0.5)
        image += f32(noise_sigma * math.sqrt(12.0)) * noise
        np.clip(image, f32(0.0), f32(1.0), out=image)
        return torch.from_numpy(image), objects

    def _place(
        self, label: int, half: float, angle: float, cx: float, cy: float, objects: list[_Object]
    ) -> _Object | None:
        """The object at this placement, or None when a rule refuses it (see the class doc)."""
        s = self.image_size
        window, u, v, dist = self._shape(label, half, angle, cx, cy)
        y0, y1, x0, x1 = window
        inside = dist <= 0.0
        area = int(inside.sum())
        if area < MIN_OBJECT_PIXELS:
            return None
        full = np.zeros((s, s), dtype=bool)
        full[y0:y1, x0:x1] = inside
        box = _box_of(full)
        for o in objects:
            if _box_iou(box, o.box) > MAX_BOX_IOU:
                return None
            vis = int(o.visible[y0:y1, x0:x1].sum())
            if vis == 0:
                continue
            hidden = int((o.visible[y0:y1, x0:x1] & inside).sum())
            total = int(o.visible.sum())
            if hidden > MAX_HIDDEN_FRACTION * total:
                return None
            if total - hidden < MIN_VISIBLE_FRACTION * o.full_area:
                return None
        for o in objects:
            o.visible[y0:y1, x0:x1] &= ~inside
        alpha = np.clip(np.float32(0.5) - dist, np.float32(0.0), np.float32(1.0))
        return _Object(
            label=label,
            full=full,
            full_area=area,
            box=box,
            visible=full.copy(),
            window=window,
            alpha=alpha,
            u=u,
            v=v,
            offset=np.zeros(3),
            grad=np.zeros((2, 3), dtype=np.float32),
        )

    @staticmethod
    def _draw(image: Array, obj: _Object) -> None:
        f32 = np.float32
        y0, y1, x0, x1 = obj.window
        patch = image[:, y0:y1, x0:x1]
        local = patch[:, obj.full[y0:y1, x0:x1]].mean(axis=1)
        fg = ((local + obj.offset) % 1.0).astype(f32)
        uc = np.clip(obj.u, f32(-1.0), f32(1.0))
        vc = np.clip(obj.v, f32(-1.0), f32(1.0))
        colour = (
            fg[:, None, None] + uc * obj.grad[0][:, None, None] + vc * obj.grad[1][:, None, None]
        )
        patch += obj.alpha * (colour - patch)

    def _target(self, index: int, objects: list[_Object]) -> Target:
        s = self.image_size
        n = len(objects)
        masks = np.zeros((n, s, s), dtype=np.uint8)
        semantic = np.zeros((s, s), dtype=np.int64)
        boxes = np.zeros((n, 4), dtype=np.float32)
        area = np.zeros(n, dtype=np.float32)
        labels = np.zeros(n, dtype=np.int64)
        for k, o in enumerate(objects):
            masks[k] = o.visible
            semantic[o.visible] = o.label + 1
            boxes[k] = _box_of(o.visible)
            area[k] = float(o.visible.sum())
            labels[k] = o.label + 1
        return {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels),
            "masks": torch.from_numpy(masks),
            "area": torch.from_numpy(area),
            "iscrowd": torch.zeros(n, dtype=torch.int64),
            "semantic": torch.from_numpy(semantic),
            "image_id": torch.tensor(index, dtype=torch.int64),
        }


# ============================================================================ COCO folders


def _finite(x: Any) -> bool:
    """A finite JSON number (a huge integer counts as not finite: it would overflow floats)."""
    if isinstance(x, bool):
        return False
    if isinstance(x, int):
        return abs(x) < 2**53
    return isinstance(x, float) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _rle_string_counts(text: str) -> list[int] | None:
    """The run lengths of a COCO compressed RLE string (pycocotools' ``rleFrString``), or None
    when the string is malformed. Checked here because pycocotools decodes without bounds
    checks: counts that do not sum to ``h * w`` would write past its buffer."""
    counts: list[int] = []
    p, n = 0, len(text)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n or k > 12:
                return None
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _check_segmentation(seg: Any, width: int, height: int) -> str | None:
    """Why ``seg`` is malformed (None when it is usable); the caller has checked the size."""
    if isinstance(seg, list):
        if not seg:
            return None  # no segmentation: the box is used
        for poly in seg:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                return "polygon with fewer than 3 points or an odd number of coordinates"
            if not all(_finite(c) for c in poly):
                return "polygon with a non-numeric or non-finite coordinate"
            xs, ys = poly[0::2], poly[1::2]
            t = BOX_TOLERANCE
            if min(xs) < -t or min(ys) < -t or max(xs) > width + t or max(ys) > height + t:
                return "polygon outside the image"
        return None
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and size == [height, width]):
            return f"RLE size {size!r} is not the image's [height, width] = [{height}, {width}]"
        if isinstance(counts, str):
            runs = _rle_string_counts(counts)
        elif isinstance(counts, list) and all(_is_int(c) for c in counts):
            runs = counts
        else:
            return "RLE counts are neither a string nor a list of integers"
        if runs is None or any(c < 0 for c in runs) or sum(runs) != height * width:
            return "RLE counts do not cover the image exactly"
        return None
    return f"segmentation is a {type(seg).__name__}, not polygons or RLE"


@dataclass(frozen=True)
class _Ann:
    label: int  # 1..K
    box: tuple[float, float, float, float]  # xyxy in original pixels, clipped to the image
    area: float | None
    iscrowd: int
    segmentation: Any


@dataclass(frozen=True)
class _Img:
    image_id: int
    file_name: str
    width: int
    height: int
    anns: tuple[_Ann, ...]


class CocoFolder(Dataset):
    """A COCO-style detection / segmentation folder, letterboxed to ``image_size``.

    Layout: ``root/<split>/`` holds the images and ``root/annotations/instances_<split>.json``
    the annotations (``<split>2017`` names, as in COCO 2017, are accepted too). The JSON is read
    with the standard library (at most :data:`MAX_COCO_JSON_BYTES`) and indexed with
    ``pycocotools.coco.COCO``; masks are decoded with ``pycocotools.mask``.

    Letterbox: the longer side is resized to ``image_size`` (aspect kept, bilinear), the image
    padded at the bottom/right with 0 to an ``image_size`` square; boxes, masks (nearest) and
    areas are scaled the same way. The padding is 255 (ignore) in ``semantic``, as are crowd
    regions (``iscrowd=1`` annotations are kept in the targets with ``iscrowd`` 1).

    Classes: the categories ordered by id; ``labels`` are ``1..K`` in that order and
    ``category_ids[label - 1]`` is the COCO id. ``image_id`` is the COCO image id. An annotation
    without segmentation gets its box, filled, as mask.

    Bad data is skipped, not fatal: annotations with a box of width or height <= 0, a box
    extending more than :data:`BOX_TOLERANCE` px beyond the image, an unknown category or image,
    non-finite numbers or a malformed segmentation; image entries without a usable id, file name
    or size (or a file name leaving the folder, or more than PIL's decompression-bomb pixel
    count). Each is one string in :attr:`bad_annotations` (file name, annotation id, why),
    logged once as a summary warning. Images without valid annotations are kept (empty
    targets). An image file that cannot be read, or whose size differs from the JSON's, makes
    ``__getitem__`` return a :class:`BadSample`; its name is added to :attr:`bad_files` (of the
    process that read it: DataLoader workers keep their own lists, :func:`dense_collate`
    reports the names with each batch).

    Raises:
        MissingFileError: the folder or the annotation file is missing (the message gives the
            expected layout).
        DataError: the annotation file is too large, not valid JSON, or not a COCO instances
            file (no image or category list, no category).
    """

    def __init__(self, root: str | os.PathLike[str], split: str = "train", image_size: int = 128):
        image_size = bounded_int(image_size, "image_size", hi=MAX_IMAGE_SIDE, error=DataError)
        if not isinstance(split, str) or not split or "/" in split or split.startswith("."):
            raise DataError(f"split must be a plain folder name, got {split!r}")
        self.root = Path(root)
        self.split = split
        self.image_size = int(image_size)
        if not self.root.is_dir():
            raise MissingFileError(f"COCO folder {self.root} does not exist; {COCO_LAYOUT}")
        self.annotation_file = self._find(
            [self.root / "annotations" / f"instances_{s}.json" for s in (split, f"{split}2017")],
            "annotation file",
        )
        self.image_dir = self._find(
            [self.root / split, self.root / f"{split}2017"], "image folder", folder=True
        )
        self.bad_annotations: list[str] = []
        self.bad_files: list[str] = []
        self._bad_indices: set[int] = set()
        data = self._read_json(self.annotation_file)
        self.category_ids, self.classes = self._categories(data)
        self._images = self._index(data)
        if self.bad_annotations:
            logger.warning(
                "%s: skipped %d bad annotation(s) or image entries; first: %s",
                self.annotation_file,
                len(self.bad_annotations),
                "; ".join(self.bad_annotations[:3]),
            )

    @property
    def num_classes(self) -> int:
        """Number of foreground classes ``K``."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self._images)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"image_size={self.image_size}) with {len(self)} images, {self.num_classes} classes"
        )

    # ------------------------------------------------------------------ reading the JSON

    def _find(self, candidates: list[Path], what: str, folder: bool = False) -> Path:
        for c in candidates:
            if c.is_dir() if folder else c.is_file():
                return c
        names = " or ".join(str(c) for c in candidates)
        raise MissingFileError(f"COCO {what} not found: {names}; {COCO_LAYOUT}")

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any]:
        size = path.stat().st_size
        if size > MAX_COCO_JSON_BYTES:
            raise DataError(
                f"{path}: {size:,} bytes, more than the {MAX_COCO_JSON_BYTES:,} an annotation "
                "file may have here; split it or check the file"
            )
        try:
            data = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
        except RecursionError:
            raise DataError(f"{path}: JSON nested too deeply; the file is corrupt") from None
        except ValueError as exc:  # e.g. an integer over Python's digit limit
            raise DataError(f"{path}: cannot be read as JSON ({str(exc)[:80]})") from None
        if not isinstance(data, dict):
            raise DataError(f"{path}: not a COCO instances file (the top level is not an object)")
        for key in ("images", "categories"):
            if not isinstance(data.get(key), list):
                raise DataError(f"{path}: not a COCO instances file (no {key!r} list)")
        if not isinstance(data.get("annotations", []), list):
            raise DataError(f"{path}: not a COCO instances file ('annotations' is not a list)")
        return data

    def _categories(self, data: dict[str, Any]) -> tuple[tuple[int, ...], tuple[str, ...]]:
        cats: dict[int, str] = {}
        for c in data["categories"]:
            if not (
                isinstance(c, dict) and _is_int(c.get("id")) and isinstance(c.get("name"), str)
            ):
                raise DataError(
                    f"{self.annotation_file}: category {str(c)[:60]} has no integer 'id' and "
                    "string 'name'"
                )
            if c["id"] in cats:
                raise DataError(f"{self.annotation_file}: category id {c['id']} appears twice")
            cats[c["id"]] = c["name"]
        if not cats:
            raise DataError(f"{self.annotation_file}: no categories")
        ids = tuple(sorted(cats))
        return ids, tuple(cats[i] for i in ids)

    def _bad(self, name: str, ann_id: Any, why: str) -> None:
        self.bad_annotations.append(f"{name}: annotation {str(ann_id)[:40]}: {why}")

    def _index(self, data: dict[str, Any]) -> list[_Img]:
        where = self.annotation_file.name
        images: dict[int, dict[str, Any]] = {}
        for i, im in enumerate(data["images"]):
            why = self._image_problem(im, images)
            if why:
                ident = im.get("file_name", f"#{i}") if isinstance(im, dict) else f"#{i}"
                self.bad_annotations.append(f"{str(ident)[:80]}: image entry: {why}")
                continue
            images[im["id"]] = im
        anns = []
        for a in data.get("annotations", []):
            if not isinstance(a, dict) or not _is_int(a.get("id")):
                self._bad(where, a.get("id") if isinstance(a, dict) else "?", "no integer id")
                continue
            if not _is_int(a.get("image_id")) or a["image_id"] not in images:
                self._bad(where, a["id"], f"unknown image_id {str(a.get('image_id'))[:40]}")
                continue
            anns.append(a)
        coco_cls, _ = _pycocotools()
        coco = coco_cls()
        # no "categories": pycocotools would index annotations by category_id before the
        # per-annotation checks below have refused an unhashable or unknown one
        coco.dataset = {"images": list(images.values()), "annotations": anns}
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco.createIndex()
        label_of = {cid: k + 1 for k, cid in enumerate(self.category_ids)}
        out: list[_Img] = []
        for image_id, im in images.items():
            good: list[_Ann] = []
            for a in coco.imgToAnns.get(image_id, []):
                ann = self._annotation(a, im, label_of)
                if ann is not None:
                    good.append(ann)
            out.append(_Img(image_id, im["file_name"], im["width"], im["height"], tuple(good)))
        return out

    @staticmethod
    def _image_problem(im: Any, seen: dict[int, Any]) -> str | None:
        if not isinstance(im, dict):
            return "not an object"
        if not _is_int(im.get("id")):
            return "no integer id"
        if im["id"] in seen:
            return f"image id {im['id']} appears twice"
        name = im.get("file_name")
        if not isinstance(name, str) or not name:
            return "no file_name"
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            return "file_name leaves the image folder"
        w, h = im.get("width"), im.get("height")
        if not (isinstance(w, int) and isinstance(h, int) and _is_int(w) and _is_int(h)):
            return "width/height are not positive integers"
        if w <= 0 or h <= 0:
            return "width/height are not positive integers"
        if w * h > MAX_COCO_IMAGE_PIXELS:
            return f"{w}x{h} is more than {MAX_COCO_IMAGE_PIXELS:,} pixels"
        return None

    def _annotation(
        self, a: dict[str, Any], im: dict[str, Any], label_of: dict[int, int]
    ) -> _Ann | None:
        name, aid = im["file_name"], a["id"]
        width, height = im["width"], im["height"]
        if not _is_int(a.get("category_id")) or a["category_id"] not in label_of:
            self._bad(name, aid, f"unknown category_id {str(a.get('category_id'))[:40]}")
            return None
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_finite(b) for b in bbox)):
            self._bad(name, aid, "bbox is not 4 finite numbers")
            return None
        x, y, w, h = (float(b) for b in bbox)
        if w <= 0 or h <= 0:
            self._bad(name, aid, f"bbox width/height {w:g}x{h:g} not positive")
            return None
        t = BOX_TOLERANCE
        if x < -t or y < -t or x + w > width + t or y + h > height + t:
            self._bad(name, aid, f"bbox {[x, y, w, h]} outside the {width}x{height} image")
            return None
        x0, y0 = max(x, 0.0), max(y, 0.0)
        x1, y1 = min(x + w, float(width)), min(y + h, float(height))
        if x1 <= x0 or y1 <= y0:
            self._bad(name, aid, "bbox empty inside the image")
            return None
        area = a.get("area")
        if area is not None and not (_finite(area) and area >= 0):
            self._bad(name, aid, "area is not a finite number >= 0")
            return None
        iscrowd = a.get("iscrowd", 0)
        if iscrowd not in (0, 1) or isinstance(iscrowd, bool):
            self._bad(name, aid, f"iscrowd {str(iscrowd)[:20]} is not 0 or 1")
            return None
        seg = a.get("segmentation")
        if seg is not None:
            why = _check_segmentation(seg, width, height)
            if why:
                self._bad(name, aid, f"malformed segmentation ({why})")
                return None
        return _Ann(
            label=label_of[a["category_id"]],
            box=(x0, y0, x1, y1),
            area=None if area is None else float(area),
            iscrowd=int(iscrowd),
            segmentation=seg if seg else None,
        )

    # ------------------------------------------------------------------ samples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target] | BadSample:
        index = int(index) + (len(self._images) if int(index) < 0 else 0)
        rec = self._images[index]
        path = self.image_dir / rec.file_name
        try:
            img = load_image(path)
        except Exception as exc:  # decode/IO errors: PIL raises many different types
            return self._bad_file(index, rec.file_name, f"{type(exc).__name__}: {exc}")
        if img.size != (rec.width, rec.height):
            return self._bad_file(
                index,
                rec.file_name,
                f"image is {img.size[0]}x{img.size[1]}, the JSON says {rec.width}x{rec.height}",
            )
        return self._letterbox(img, rec)

    def _bad_file(self, index: int, name: str, reason: str) -> BadSample:
        if index not in self._bad_indices:
            self._bad_indices.add(index)
            self.bad_files.append(name)
            logger.warning("skipping unreadable image %s (%s)", name, reason)
        return BadSample(name, reason)

    def _letterbox(self, img: Image.Image, rec: _Img) -> tuple[torch.Tensor, Target]:
        s = self.image_size
        w, h = rec.width, rec.height
        scale = s / max(w, h)
        nw, nh = max(1, min(s, round(w * scale))), max(1, min(s, round(h * scale)))
        sx, sy = nw / w, nh / h
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), Image.Resampling.BILINEAR)
        canvas = np.zeros((3, s, s), dtype=np.float32)
        canvas[:, :nh, :nw] = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
        canvas *= np.float32(1.0 / 255.0)
        image = torch.from_numpy(canvas)

        n = len(rec.anns)
        masks = np.zeros((n, s, s), dtype=np.uint8)
        boxes = np.zeros((n, 4), dtype=np.float32)
        area = np.zeros(n, dtype=np.float32)
        labels = np.zeros(n, dtype=np.int64)
        iscrowd = np.zeros(n, dtype=np.int64)
        semantic = np.full((s, s), 255, dtype=np.int64)
        semantic[:nh, :nw] = 0
        # nearest-neighbour sampling of full-size masks (pixel centres)
        rows = np.minimum(((np.arange(nh) + 0.5) / sy).astype(np.int64), h - 1)
        cols = np.minimum(((np.arange(nw) + 0.5) / sx).astype(np.int64), w - 1)
        for k, a in enumerate(rec.anns):
            x0, y0, x1, y1 = a.box
            boxes[k] = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
            labels[k] = a.label
            iscrowd[k] = a.iscrowd
            if a.segmentation is None:
                c0, r0 = math.floor(x0 * sx), math.floor(y0 * sy)
                c1, r1 = max(c0 + 1, math.ceil(x1 * sx)), max(r0 + 1, math.ceil(y1 * sy))
                masks[k, r0:r1, c0:c1] = 1
            else:
                full = self._decode(a.segmentation, w, h)
                masks[k, :nh, :nw] = full if (nw, nh) == (w, h) else full[np.ix_(rows, cols)]
            area[k] = a.area * sx * sy if a.area is not None else float(masks[k].sum())
        # Annotation order (later ones on top), crowd regions last: they become "ignore".
        for k in sorted(range(n), key=lambda k: rec.anns[k].iscrowd):
            semantic[masks[k].astype(bool)] = 255 if rec.anns[k].iscrowd else rec.anns[k].label
        target: Target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels),
            "masks": torch.from_numpy(masks),
            "area": torch.from_numpy(area),
            "iscrowd": torch.from_numpy(iscrowd),
            "semantic": torch.from_numpy(semantic),
            "image_id": torch.tensor(rec.image_id, dtype=torch.int64),
        }
        return image, target

    @staticmethod
    def _decode(seg: Any, w: int, h: int) -> Array:
        """The ``(h, w)`` uint8 mask of a checked segmentation (polygons or RLE)."""
        _, mask_utils = _pycocotools()
        if isinstance(seg, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        elif isinstance(seg["counts"], list):
            rle = mask_utils.frPyObjects(seg, h, w)
        else:
            rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
        with warnings.catch_warnings():  # pycocotools' numpy-2 "copy keyword" deprecation
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = np.asarray(mask_utils.decode(rle))
        return decoded.max(axis=2) if decoded.ndim == 3 else decoded


# ============================================================================ writing


_FORMATS = {"png": ("PNG", ".png"), "jpg": ("JPEG", ".jpg"), "jpeg": ("JPEG", ".jpg")}


def write_coco_folder(
    dataset: Any,
    root: str | os.PathLike[str],
    split: str,
    *,
    image_format: str = "png",
) -> Path:
    """Write a dense dataset as a COCO folder; returns ``root``.

    Writes ``root/<split>/<index:06d>.png`` (uint8 RGB; ``"jpg"`` for JPEG) and
    ``root/annotations/instances_<split>.json`` with ``images`` (id = the target's
    ``image_id``), ``annotations`` (``bbox`` xywh from the target's boxes, ``area``,
    ``iscrowd``, ``segmentation`` as RLE with a string ``counts``) and ``categories`` (the
    dataset's ``category_ids`` if it has them, else ``1..K``, named by ``dataset.classes``).
    Samples that are a :class:`BadSample` are skipped. Every file is written atomically;
    files of the same names already there are replaced. A ``torch.utils.data.Subset`` of a
    dense dataset works too (its ``.dataset`` gives the classes).

    ``CocoFolder(root, split, image_size)`` reads it back with the same boxes and labels when
    ``image_size`` is the dataset's.
    """
    fmt = str(image_format).lower()
    if fmt not in _FORMATS:
        raise ConfigError(f"image_format must be one of {sorted(_FORMATS)}, got {image_format!r}")
    pil_format, suffix = _FORMATS[fmt]
    _, mask_utils = _pycocotools()
    root = Path(root)
    # a torch Subset (or another wrapper with .dataset) carries its dataset's classes
    source = dataset if hasattr(dataset, "classes") else getattr(dataset, "dataset", dataset)
    classes = tuple(getattr(source, "classes", ()))
    if not classes:
        raise DataError(f"{type(dataset).__name__} has no classes to write as COCO categories")
    cat_ids = tuple(getattr(source, "category_ids", range(1, len(classes) + 1)))
    if len(cat_ids) != len(classes):
        raise DataError(
            f"{type(dataset).__name__}: {len(cat_ids)} category ids for {len(classes)} classes"
        )
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    next_id = 1
    for index in range(len(dataset)):
        item = dataset[index]
        if item is None or isinstance(item, BadSample):
            continue
        image, target = item
        arr = (image.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
        pil = Image.fromarray(np.ascontiguousarray(arr), "RGB")
        name = f"{index:06d}{suffix}"
        atomic_save(_saver(pil, pil_format), root / split / name)
        height, width = arr.shape[:2]
        image_id = int(target["image_id"])
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        masks = target["masks"].numpy().astype(np.uint8)
        for k in range(len(target["labels"])):
            x0, y0, x1, y1 = (float(v) for v in target["boxes"][k])
            rle = mask_utils.encode(np.asfortranarray(masks[k]))
            counts = rle["counts"]
            annotations.append(
                {
                    "id": next_id,
                    "image_id": image_id,
                    "category_id": int(cat_ids[int(target["labels"][k]) - 1]),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": float(target["area"][k]),
                    "iscrowd": int(target["iscrowd"][k]) if "iscrowd" in target else 0,
                    "segmentation": {
                        "size": [int(s) for s in rle["size"]],
                        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
                    },
                }
            )
            next_id += 1
    categories = [{"id": int(c), "name": str(n)} for c, n in zip(cat_ids, classes, strict=True)]
    doc = {"images": images, "annotations": annotations, "categories": categories}
    atomic_write_text(root / "annotations" / f"instances_{split}.json", json.dumps(doc))
    return root


def _saver(pil: Image.Image, fmt: str) -> Callable[[str], None]:
    def save(tmp: str) -> None:
        pil.save(tmp, format=fmt)

    return save

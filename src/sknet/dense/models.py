"""Detection and segmentation models on sknet backbones, built from torchvision's detectors.

:func:`build_dense_model` puts a feature pyramid (``torchvision.ops.FeaturePyramidNetwork``) on
the ``features_only`` stages of any sknet model and adds one of torchvision's heads (FCOS,
RetinaNet, Faster R-CNN, Mask R-CNN) or an FPN semantic-segmentation head. Nothing of the
detectors themselves is re-implemented here; this module only chooses their geometry (which
backbone levels, how many pyramid levels, which anchor sizes) from the image size and the
object sizes of the data, by one stated rule (:data:`GEOMETRY_RULE`, :func:`geometry_for`).

Conventions are torchvision's: images are float (3, H, W) in [0, 1], not normalised (the model
normalises inside with the backbone's mean/std), targets are dicts with "boxes" (xyxy pixels),
"labels" (1..K, 0 is background), "masks", "semantic" (255 = ignore).

>>> model = build_dense_model("sknet_tiny", "detect", "fcos", num_classes=10, image_size=128)
>>> losses = model.train()(images, targets)        # {"classification": ..., ...}
>>> detections = model.eval()(images)              # [{"boxes", "labels", "scores"}, ...]

Batch norm: by default every BN of the backbone trains (``frozen_bn=False``, for training from
scratch); the BN inside each SK unit's attention path normalises a (B, C, 1, 1) tensor, so
training then needs at least 2 images per batch (per GPU; the trainer converts BNs to
``SyncBatchNorm`` under DDP, which this module leaves possible: it holds plain ``BatchNorm2d``).
``frozen_bn=True`` replaces every backbone BN by sknet's ``FrozenBatchNorm2d``
(:func:`sknet.layers.freeze_batchnorm`), the choice for fine-tuning pretrained weights at small
batches.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock

from sknet.errors import ConfigError, InputError, InputTypeError
from sknet.layers import FrozenBatchNorm2d, freeze_batchnorm
from sknet.models import FeatureNet, create_model, get_entry, sk_units
from sknet.preprocess import DataConfig

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

DETECTION_HEADS = ("fcos", "retinanet", "faster_rcnn", "mask_rcnn")
SEGMENTATION_HEADS = ("fpn",)
#: task -> the heads it takes
DENSE_TASKS: dict[str, tuple[str, ...]] = {"detect": DETECTION_HEADS, "segment": SEGMENTATION_HEADS}

#: Anchor size of a pyramid level, in units of its stride (torchvision's COCO setting is 8x:
#: 32..512 px at strides 4..64; 4x puts 8 px objects on a stride-2 level).
ANCHOR_PER_STRIDE = 4
ASPECT_RATIOS = (0.5, 1.0, 2.0)
#: Detections kept per image (all heads), as torchvision's default.
DETECTIONS_PER_IMAGE = 100
#: FCOS's center sampling radius in units of its "anchor" (= half the level's stride, see
#: :data:`GEOMETRY_RULE`): 3.0 x stride/2 = 1.5 strides, torchvision's radius in strides.
FCOS_CENTER_SAMPLING_RADIUS = 3.0

GEOMETRY_RULE = (
    "Levels: of the backbone's stage outputs (not the stem), the finest level kept is the "
    "coarsest one whose anchor (4 x stride) is <= the smallest object size (the finest stage "
    "if none is); coarser stage levels are kept up to the first whose anchor >= the largest "
    "object size; while the coarsest level's anchor is < the largest object size, extra FPN "
    "levels (stride x2 each: max-pool for Faster/Mask R-CNN and the segmenter, a stride-2 3x3 "
    "conv for RetinaNet/FCOS, as torchvision) are added. Anchors: one size per level, "
    "A = 4 x stride; aspect ratios (0.5, 1, 2); RetinaNet uses 3 scales per octave "
    "(A, A*2^(1/3), A*2^(2/3)), Faster/Mask R-CNN one. FCOS: anchor = A/8 (= stride/2), so its "
    "size ranges (max box side distance in (4a, 8a)) become (A/2, A): an object of side ~A "
    "trains level A as with the anchor heads; center sampling radius 3.0 a (= 1.5 strides, "
    "torchvision's). R-CNN RoI level of a box of side s: floor(log2(s/4)), i.e. the level whose "
    "anchor is closest below s (MultiScaleRoIAlign with canonical_scale 4*2^k at level k), "
    "over the backbone levels only (not the extra ones), clamped to them."
)


# ------------------------------------------------------------------------------------ geometry


@dataclass(frozen=True)
class DenseGeometry:
    """The pyramid of a dense model, chosen from the data by :data:`GEOMETRY_RULE`.

    Attributes:
        image_size: square input side the model is built for (min_size = max_size).
        object_sizes: (smallest, largest) object side in pixels the levels must cover.
        strides: stride of each FPN level, finest first (backbone levels, then extra ones).
        anchor_sizes: anchor side of each level (``4 x stride``).
        backbone_levels: ``feature_info`` indices of the backbone levels used (``out_indices``).
        num_extra_levels: FPN levels added above the backbone's coarsest level.
        rule: the rule, in words.
    """

    image_size: int
    object_sizes: tuple[int, int]
    strides: tuple[int, ...]
    anchor_sizes: tuple[int, ...]
    backbone_levels: tuple[int, ...]
    num_extra_levels: int
    rule: str = GEOMETRY_RULE

    def as_dict(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "object_sizes": list(self.object_sizes),
            "strides": list(self.strides),
            "anchor_sizes": list(self.anchor_sizes),
            "backbone_levels": list(self.backbone_levels),
            "num_extra_levels": self.num_extra_levels,
            "rule": self.rule,
        }


def _check_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_object_sizes(object_sizes: Any, image_size: int) -> tuple[int, int]:
    try:
        lo, hi = object_sizes
    except (TypeError, ValueError):
        raise ConfigError(
            f"object_sizes must be (smallest, largest) object side in pixels, got {object_sizes!r}"
        ) from None
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise ConfigError(f"object_sizes must be two positive numbers, got {object_sizes!r}")
    if lo > hi:
        raise ConfigError(
            f"object_sizes must be (smallest, largest) with smallest <= largest, "
            f"got {object_sizes!r}"
        )
    if hi > image_size:
        raise ConfigError(
            f"object_sizes largest ({hi}) exceeds image_size ({image_size}): objects must fit "
            "in the image"
        )
    return max(1, round(lo)), max(1, round(hi))


def _backbone_levels(backbone: str | FeatureNet | nn.Module) -> tuple[list[int], list[int], int]:
    """(feature_info indices, their strides, min input size) of a backbone or model name."""
    if isinstance(backbone, str):
        get_entry(backbone)  # ConfigError naming close matches for an unknown name
        with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised
            net = create_model(backbone, features_only=True)
        info: Any = net.feature_info
    else:
        info = getattr(backbone, "feature_info", None)
        if info is None:
            raise ConfigError(f"{type(backbone).__name__} has no feature_info: not an sknet model")
    n = len(info)
    strides = [int(info[i]["reduction"]) for i in range(n)]
    min_size = max(strides)
    return list(range(n)), strides, min_size


def geometry_for(
    backbone: str | nn.Module, image_size: int, object_sizes: Sequence[float] = (8, 64)
) -> DenseGeometry:
    """The FPN levels and anchor sizes for ``backbone`` at ``image_size`` (:data:`GEOMETRY_RULE`).

    Args:
        backbone: a registered model name, or an sknet model / ``FeatureNet`` (its
            ``feature_info``).
        image_size: square input side.
        object_sizes: (smallest, largest) object side in pixels.

    >>> geometry_for("sknet_tiny", 128, (8, 64)).strides       # (2, 4, 8, 16)
    >>> geometry_for("sknet50", 512, (16, 256)).anchor_sizes    # (16, 32, 64, 128, 256)
    """
    image_size = _check_int(image_size, "image_size")
    indices, strides, min_size = _backbone_levels(backbone)
    if image_size < min_size:
        raise ConfigError(
            f"image_size {image_size} is below the backbone's minimum input size {min_size} "
            "(its total stride)"
        )
    lo, hi = _check_object_sizes(object_sizes, image_size)
    # stage levels (index 0 is the stem); of levels at one stride (a dilated stage), the deepest
    by_stride: dict[int, int] = {}
    for i in indices[1:] if len(indices) > 1 else indices:
        by_stride[strides[i]] = i
    stage = sorted(by_stride.items())
    fine = [k for k, (s, _) in enumerate(stage) if ANCHOR_PER_STRIDE * s <= lo]
    first = fine[-1] if fine else 0
    kept = [stage[first]]
    for s, i in stage[first + 1 :]:
        if ANCHOR_PER_STRIDE * kept[-1][0] >= hi:
            break
        kept.append((s, i))
    level_strides = [s for s, _ in kept]
    extra = 0
    while ANCHOR_PER_STRIDE * level_strides[-1] < hi:
        level_strides.append(level_strides[-1] * 2)
        extra += 1
    if level_strides[-1] > image_size:
        raise ConfigError(
            f"image_size {image_size} is smaller than the coarsest FPN level's stride "
            f"{level_strides[-1]} that object_sizes {tuple(object_sizes)} need; lower the "
            "largest object size or raise image_size"
        )
    return DenseGeometry(
        image_size=image_size,
        object_sizes=(lo, hi),
        strides=tuple(level_strides),
        anchor_sizes=tuple(ANCHOR_PER_STRIDE * s for s in level_strides),
        backbone_levels=tuple(i for _, i in kept),
        num_extra_levels=extra,
    )


# ------------------------------------------------------------------------------ backbone + FPN


class ExtraLevels(ExtraFPNBlock):
    """``n`` FPN levels above the coarsest, each at twice the previous stride.

    ``mode="pool"``: max-pool (kernel 1, stride 2) of the previous output, as torchvision's
    ``LastLevelMaxPool`` (Faster/Mask R-CNN); ``mode="conv"``: a stride-2 3x3 conv of the
    previous output, ReLU before all but the first, as torchvision's ``LastLevelP6P7`` on P5
    (RetinaNet/FCOS).
    """

    def __init__(self, n: int, channels: int, mode: str = "pool") -> None:
        super().__init__()
        self.n = n
        self.mode = mode
        self.convs = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, stride=2, padding=1)
            for _ in range(n if mode == "conv" else 0)
        )
        for conv in self.convs:
            assert isinstance(conv, nn.Conv2d) and conv.bias is not None
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.constant_(conv.bias, 0)

    def forward(
        self, results: list[torch.Tensor], x: list[torch.Tensor], names: list[str]
    ) -> tuple[list[torch.Tensor], list[str]]:
        out = list(results)
        for k in range(self.n):
            prev = out[-1]
            if self.mode == "conv":
                out.append(self.convs[k](prev if k == 0 else F.relu(prev)))
            else:
                out.append(F.max_pool2d(prev, 1, 2, 0))
        return out, [*names, *(f"extra{k}" for k in range(self.n))]


class SKFeaturePyramid(nn.Module):
    """An sknet ``FeatureNet`` (``body``) with an FPN (``fpn``): ``forward(x)`` gives an
    ``OrderedDict`` of the levels ("0", "1", ... for the backbone's, "extra<k>" above), the
    interface torchvision's detectors take (``out_channels``)."""

    def __init__(
        self, body: FeatureNet, out_channels: int, num_extra: int, extra_mode: str
    ) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(
            list(body.feature_info.channels()),
            out_channels,
            extra_blocks=ExtraLevels(num_extra, out_channels, extra_mode) if num_extra else None,
        )
        self.out_channels = out_channels
        self.level_names = [str(i) for i in range(len(body.out_indices))]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


def _groups(channels: int) -> int:
    return next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)


class FPNSegmenter(nn.Module):
    """Semantic FPN head (Panoptic FPN's, one conv per level): every FPN level goes through a
    3x3 conv + GroupNorm + ReLU, is upsampled (bilinear) to the finest level, the levels are
    summed, a 1x1 conv gives K+1 logits, upsampled (bilinear) to the input size.

    ``forward(x)`` takes a normalised (B, 3, H, W) batch and returns the logits (B, K+1, H, W).
    """

    def __init__(self, backbone: SKFeaturePyramid, num_classes: int, channels: int) -> None:
        super().__init__()
        self.backbone = backbone
        n = len(backbone.level_names) + (
            backbone.fpn.extra_blocks.n if backbone.fpn.extra_blocks is not None else 0
        )
        self.level_convs = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(backbone.out_channels, channels, 3, padding=1, bias=False),
                nn.GroupNorm(_groups(channels), channels),
                nn.ReLU(inplace=True),
            )
            for _ in range(n)
        )
        self.classifier = nn.Conv2d(channels, num_classes + 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = list(self.backbone(x).values())
        size = levels[0].shape[-2:]
        out = self.level_convs[0](levels[0])
        for conv, f in zip(self.level_convs[1:], levels[1:]):
            out = out + F.interpolate(conv(f), size=size, mode="bilinear", align_corners=False)
        logits = self.classifier(out)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class _ExactAnchorGenerator(AnchorGenerator):
    """torchvision's ``AnchorGenerator`` without rounding the base anchors to whole pixels
    (FCOS's anchor of stride/2 is 1 px at stride 2, which rounding makes 0 px wide)."""

    def generate_anchors(
        self,
        scales: list[int],
        aspect_ratios: list[float],
        dtype: torch.dtype = torch.float32,
        device: torch.device = torch.device("cpu"),  # noqa: B008 - torchvision's signature
    ) -> torch.Tensor:
        scales_t = torch.as_tensor(scales, dtype=dtype, device=device)
        ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1 / h_ratios
        ws = (w_ratios[:, None] * scales_t[None, :]).view(-1)
        hs = (h_ratios[:, None] * scales_t[None, :]).view(-1)
        return torch.stack([-ws, -hs, ws, hs], dim=1) / 2


# ----------------------------------------------------------------------------------- the model


class DenseModel(nn.Module):
    """A detector or segmenter on an sknet backbone (build it with :func:`build_dense_model`).

    ``forward(images, targets=None)``: ``images`` a float (B, 3, H, W) tensor or a list of
    (3, H, W) tensors in [0, 1]. In train mode it returns a dict of scalar losses (``targets``
    required: one dict per image); in eval mode a list of prediction dicts ("boxes", "labels",
    "scores" [, "masks"] for detectors; "semantic" for the segmenter).

    Attributes: ``task``, ``head``, ``backbone_name``, ``num_classes`` (K foreground classes),
    ``geometry`` (:class:`DenseGeometry`), ``backbone`` (the sknet ``FeatureNet``, so
    ``sknet.sk_units(model.backbone)`` finds the SK units), ``data_config`` (the backbone's
    preprocessing at ``input_size=image_size``), ``net`` (the torchvision detector or the
    :class:`FPNSegmenter`), ``frozen_bn``.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        task: str,
        head: str,
        backbone_name: str,
        num_classes: int,
        geometry: DenseGeometry,
        data_config: DataConfig | None,
        mean: Sequence[float],
        std: Sequence[float],
        frozen_bn: bool,
        fpn_channels: int = 0,
        backbone_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.task = task
        self.head = head
        self.backbone_name = backbone_name
        self.num_classes = num_classes
        self.geometry = geometry
        self.data_config = data_config
        self.frozen_bn = frozen_bn
        self.image_size = geometry.image_size
        self.fpn_channels = fpn_channels  # recorded for build_args
        self.backbone_overrides = dict(backbone_overrides or {})
        self.register_buffer("mean", torch.tensor(mean).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).reshape(1, 3, 1, 1), persistent=False)

    def build_args(self) -> dict[str, Any]:
        """The :func:`build_dense_model` arguments that rebuild this model (JSON-able; saved in
        weights files by :func:`sknet.dense.save_dense`)."""
        return {
            "backbone": self.backbone_name,
            "task": self.task,
            "head": self.head,
            "num_classes": int(self.num_classes),
            "image_size": int(self.geometry.image_size),
            "object_sizes": [float(x) for x in self.geometry.object_sizes],
            "fpn_channels": int(self.fpn_channels),
            "frozen_bn": bool(self.frozen_bn),
            "backbone_overrides": dict(self.backbone_overrides),
            "mean": [float(x) for x in self.get_buffer("mean").flatten()],
            "std": [float(x) for x in self.get_buffer("std").flatten()],
        }

    @property
    def backbone(self) -> FeatureNet:
        """The sknet ``FeatureNet`` (shared with ``net``, not a copy)."""
        body = self.net.get_submodule("backbone.body")
        assert isinstance(body, FeatureNet)
        return body

    # ------------------------------------------------------------------ input checks

    def _images(self, images: Any) -> list[torch.Tensor]:
        if isinstance(images, torch.Tensor):
            if images.dim() != 4:
                raise InputError(
                    f"images must be a (B, 3, H, W) tensor or a list of (3, H, W) tensors, got "
                    f"a tensor of shape {tuple(images.shape)}"
                )
            items = list(images.unbind(0))
        elif isinstance(images, list | tuple):
            items = list(images)
            for k, im in enumerate(items):
                if not isinstance(im, torch.Tensor):
                    raise InputTypeError(f"images[{k}] is a {type(im).__name__}, not a tensor")
                if im.dim() != 3:
                    raise InputError(
                        f"images[{k}] must be a (3, H, W) tensor, got shape {tuple(im.shape)}"
                    )
        else:
            raise InputTypeError(
                f"images must be a tensor or a list of tensors, got {type(images).__name__}"
            )
        if not items:
            raise InputError("images is empty")
        min_side = self.backbone.min_input_size
        for k, im in enumerate(items):
            if im.shape[0] != 3:
                raise InputError(f"image {k} has {im.shape[0]} channels, the model takes 3 (RGB)")
            if not im.is_floating_point():
                raise InputTypeError(
                    f"image {k} is {im.dtype}; images must be float in [0, 1] (x.float() / 255)"
                )
            if min(im.shape[-2:]) < min_side:
                raise InputError(
                    f"image {k} is {tuple(im.shape[-2:])}, smaller than the backbone's minimum "
                    f"side {min_side}"
                )
        return items

    def _targets(self, targets: Any, n: int) -> list[dict[str, torch.Tensor]]:
        if targets is None:
            raise InputError("in train mode the model needs targets (one dict per image)")
        if not isinstance(targets, list | tuple) or len(targets) != n:
            got = len(targets) if isinstance(targets, list | tuple) else type(targets).__name__
            raise InputError(f"targets must be a list of {n} dicts (one per image), got {got}")
        keys = ("semantic",) if self.task == "segment" else ("boxes", "labels")
        if self.head == "mask_rcnn":
            keys = (*keys, "masks")
        for k, t in enumerate(targets):
            if not isinstance(t, Mapping):
                raise InputTypeError(f"targets[{k}] is a {type(t).__name__}, not a dict")
            missing = [key for key in keys if key not in t]
            if missing:
                raise InputError(
                    f"targets[{k}] lacks {missing} (the {self.head} head needs {list(keys)})"
                )
            if (
                "labels" in t
                and t["labels"].numel()
                and (int(t["labels"].min()) < 1 or int(t["labels"].max()) > self.num_classes)
            ):
                raise InputError(
                    f"targets[{k}]['labels'] must be in 1..{self.num_classes} (0 is background), "
                    f"got {t['labels'].tolist()}"
                )
        return [dict(t) for t in targets]

    def _check_batch_for_bn(self, n: int) -> None:
        if n > 1 or not self.training:
            return
        attn_bn = [
            u.attn.bn
            for u in sk_units(self.backbone).values()
            if u.attn is not None and isinstance(u.attn.bn, nn.modules.batchnorm._BatchNorm)
        ]
        if any(bn.training for bn in attn_bn):
            raise InputError(
                "training with trainable BatchNorm needs >= 2 images per batch (each SK unit's "
                "attention BN normalises over the batch); use batch >= 2 or frozen_bn=True"
            )

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        targets: list[dict[str, Any]] | None = None,
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        items = self._images(images)
        self._check_batch_for_bn(len(items))
        tgts = self._targets(targets, len(items)) if self.training else None
        if self.task == "detect":
            out: Any = self.net(items, tgts)
            return out
        batch = self._stack(items)
        logits = self._logits(batch)
        if self.training:
            assert tgts is not None
            semantic = torch.stack([t["semantic"] for t in tgts]).to(logits.device).long()
            if semantic.shape[-2:] != logits.shape[-2:]:
                raise InputError(
                    f"targets' 'semantic' maps are {tuple(semantic.shape[-2:])}, the images "
                    f"{tuple(logits.shape[-2:])}"
                )
            valid = semantic != 255
            if valid.any() and int(semantic[valid].max()) > self.num_classes:
                raise InputError(
                    f"targets' 'semantic' values must be 0..{self.num_classes} or 255 (ignore), "
                    f"got {int(semantic[valid].max())}"
                )
            if not valid.any():  # all pixels ignored: a zero loss that keeps the graph, not NaN
                return {"loss_seg": logits.sum() * 0.0}
            return {"loss_seg": F.cross_entropy(logits, semantic, ignore_index=255)}
        return [{"semantic": p} for p in logits.argmax(1)]

    def _stack(self, items: list[torch.Tensor]) -> torch.Tensor:
        if len({tuple(im.shape) for im in items}) > 1:
            raise InputError(
                "the segmenter takes images of one size per batch, got "
                f"{sorted({tuple(im.shape[-2:]) for im in items})}"
            )
        return torch.stack(items)

    def _logits(self, batch: torch.Tensor) -> torch.Tensor:
        mean, std = self.get_buffer("mean"), self.get_buffer("std")
        logits: torch.Tensor = self.net((batch - mean) / std)
        return logits

    def forward_logits(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Segmenter only: the (B, K+1, H, W) logits of images in [0, 1]."""
        if self.task != "segment":
            raise ConfigError(
                f"forward_logits is for the segmenter; this model is a {self.head} detector"
            )
        return self._logits(self._stack(self._images(images)))

    def extra_repr(self) -> str:
        return (
            f"task={self.task}, head={self.head}, backbone={self.backbone_name}, "
            f"num_classes={self.num_classes}, strides={self.geometry.strides}"
        )


# ------------------------------------------------------------------------------------ builders


def _rpn_factor(image_size: int) -> float:
    """How many RPN proposals relative to torchvision's 800 px setting: the image's area ratio,
    at least 1/8 (so 128 px images keep 250/125 pre-NMS per level in train/test)."""
    return min(1.0, max(1 / 8, (image_size / 800) ** 2))


def _detector(
    head: str,
    fpn: SKFeaturePyramid,
    geometry: DenseGeometry,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> nn.Module:
    size = geometry.image_size
    common: dict[str, Any] = {
        "min_size": size,
        "max_size": size,
        "image_mean": list(mean),
        "image_std": list(std),
    }
    n = len(geometry.anchor_sizes)
    net: nn.Module
    if head == "fcos":
        anchors = _ExactAnchorGenerator(
            tuple((a / 8,) for a in geometry.anchor_sizes),
            ((1.0,),) * n,
        )
        net = FCOS(
            fpn,
            num_classes + 1,
            anchor_generator=anchors,
            center_sampling_radius=FCOS_CENTER_SAMPLING_RADIUS,
            detections_per_img=DETECTIONS_PER_IMAGE,
            **common,
        )
    elif head == "retinanet":
        anchors = AnchorGenerator(
            tuple((a, int(a * 2 ** (1 / 3)), int(a * 2 ** (2 / 3))) for a in geometry.anchor_sizes),
            (ASPECT_RATIOS,) * n,
        )
        net = RetinaNet(
            fpn,
            num_classes + 1,
            anchor_generator=anchors,
            detections_per_img=DETECTIONS_PER_IMAGE,
            **common,
        )
    else:
        f = _rpn_factor(size)
        anchors = AnchorGenerator(tuple((a,) for a in geometry.anchor_sizes), (ASPECT_RATIOS,) * n)
        # level floor(4 + log2(s / 64)) = floor(log2(s / 4)): a box of side 4 x 2^k (the
        # anchor of stride 2^k) is pooled from the level of stride 2^k
        roi: dict[str, Any] = {
            "featmap_names": fpn.level_names,
            "canonical_scale": ANCHOR_PER_STRIDE * 2**4,
            "canonical_level": 4,
        }
        width = fpn.out_channels  # torchvision: 256 (FPN), 1024 (box MLP), 256 (mask convs)
        kwargs: dict[str, Any] = {
            "rpn_anchor_generator": anchors,
            "box_head": TwoMLPHead(width * 7 * 7, 4 * width),
            "box_predictor": FastRCNNPredictor(4 * width, num_classes + 1),
            "box_roi_pool": MultiScaleRoIAlign(output_size=7, sampling_ratio=2, **roi),
            "rpn_pre_nms_top_n_train": round(2000 * f),
            "rpn_pre_nms_top_n_test": round(1000 * f),
            "rpn_post_nms_top_n_train": round(2000 * f),
            "rpn_post_nms_top_n_test": round(1000 * f),
            "box_batch_size_per_image": max(64, round(512 * f)),
            "box_detections_per_img": DETECTIONS_PER_IMAGE,
            **common,
        }
        if head == "mask_rcnn":
            kwargs["mask_roi_pool"] = MultiScaleRoIAlign(output_size=14, sampling_ratio=2, **roi)
            kwargs["mask_head"] = MaskRCNNHeads(width, (width,) * 4, 1)
            kwargs["mask_predictor"] = MaskRCNNPredictor(width, width, num_classes + 1)
            net = MaskRCNN(fpn, None, **kwargs)
        else:
            net = FasterRCNN(fpn, None, **kwargs)
    # pad batches to the coarsest stride (torchvision pads to 32)
    net.transform = GeneralizedRCNNTransform(
        size, size, list(mean), list(std), size_divisible=max(geometry.strides)
    )
    return net


def build_dense_model(
    backbone: str,
    task: str,
    head: str,
    num_classes: int,
    image_size: int,
    object_sizes: Sequence[float] = (8, 64),
    *,
    fpn_channels: int = 64,
    frozen_bn: bool = False,
    backbone_overrides: Mapping[str, Any] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> DenseModel:
    """A detector or segmenter with an FPN on an sknet backbone.

    Args:
        backbone: a registered sknet model name (``sknet.list_models()``).
        task: ``"detect"`` or ``"segment"``.
        head: for "detect" one of :data:`DETECTION_HEADS` (torchvision's FCOS, RetinaNet,
            FasterRCNN, MaskRCNN), for "segment" one of :data:`SEGMENTATION_HEADS`.
        num_classes: foreground classes K (labels 1..K; the models add background).
        image_size: square input side; ``min_size = max_size = image_size`` (no upscaling to
            800 px).
        object_sizes: (smallest, largest) object side in pixels, which sets the FPN levels and
            anchors (:func:`geometry_for`).
        fpn_channels: FPN width (a multiple of 32 for FCOS, whose head uses GroupNorm(32)).
        frozen_bn: replace the backbone's BNs by ``FrozenBatchNorm2d`` (for pretrained weights
            at small batches); default trainable BN (needs >= 2 images per training batch).
        backbone_overrides: more ``sknet.create_model`` arguments for the backbone (e.g.
            ``{"frozen_stages": 1}`` or config fields); ``features_only``/``out_indices`` are
            set here.
        mean, std: the input normalisation inside the model (images enter in [0, 1]); default:
            the backbone's own (``data_config``), e.g. 0.5/0.5 for the demo-sized models.

    Head settings (besides the geometry, :data:`GEOMETRY_RULE`): 100 detections per image;
    score thresholds torchvision's (FCOS 0.2, RetinaNet and R-CNN 0.05). R-CNN: RPN pre-NMS
    top-n per level and post-NMS top-n = torchvision's (2000 train / 1000 test) x f with
    f = clamp((image_size / 800)^2, 1/8, 1), so 250 / 125 at 128 px; RoI sampling
    max(64, 512 f) boxes per image; box MLP 4 x fpn_channels wide and mask head convs
    fpn_channels wide (torchvision: 1024 and 256 on a 256-channel FPN). The geometry is
    computed on the backbone as overridden (``output_stride`` dilations included).

    Raises:
        ConfigError: an unknown task, head or backbone, ``num_classes < 1``, ``image_size``
            below the backbone's minimum, invalid ``object_sizes`` or ``fpn_channels``.
    """
    num_classes, fpn_channels, overrides = _check_build(
        backbone, task, head, num_classes, fpn_channels, backbone_overrides
    )
    body, geometry = _backbone(backbone, overrides, image_size, object_sizes, frozen_bn)
    data_config, mean, std = _input_config(body, backbone, image_size, mean, std)
    extra_mode = "conv" if head in ("fcos", "retinanet") else "pool"
    fpn = SKFeaturePyramid(body, fpn_channels, geometry.num_extra_levels, extra_mode)
    net = (
        FPNSegmenter(fpn, num_classes, fpn_channels)
        if task == "segment"
        else _detector(head, fpn, geometry, num_classes, mean, std)
    )
    return DenseModel(
        net,
        task=task,
        head=head,
        backbone_name=backbone,
        num_classes=num_classes,
        geometry=geometry,
        data_config=data_config,
        mean=mean,
        std=std,
        frozen_bn=frozen_bn,
        fpn_channels=fpn_channels,
        backbone_overrides=overrides,
    )


def _check_build(
    backbone: Any,
    task: str,
    head: str,
    num_classes: Any,
    fpn_channels: Any,
    backbone_overrides: Mapping[str, Any] | None,
) -> tuple[int, int, dict[str, Any]]:
    """The arguments of :func:`build_dense_model` checked (ConfigError naming the first bad one)."""
    if task not in DENSE_TASKS:
        raise ConfigError(f"unknown task {task!r}; valid: {', '.join(DENSE_TASKS)}")
    if head not in DENSE_TASKS[task]:
        raise ConfigError(f"unknown {task} head {head!r}; valid: {', '.join(DENSE_TASKS[task])}")
    num_classes = _check_int(num_classes, "num_classes")
    fpn_channels = _check_int(fpn_channels, "fpn_channels")
    if head == "fcos" and fpn_channels % 32:
        raise ConfigError(
            f"fpn_channels must be a multiple of 32 for FCOS (GroupNorm(32)), got {fpn_channels}"
        )
    if not isinstance(backbone, str):
        raise ConfigError(f"backbone must be a model name, got {type(backbone).__name__}")
    overrides = dict(backbone_overrides or {})
    for key in ("features_only", "out_indices", "num_classes"):
        if key in overrides:
            raise ConfigError(f"backbone_overrides must not set {key!r}: build_dense_model sets it")
    get_entry(backbone)  # ConfigError naming close matches for an unknown name
    return num_classes, fpn_channels, overrides


def _backbone(
    backbone: str,
    overrides: dict[str, Any],
    image_size: int,
    object_sizes: Sequence[float],
    frozen_bn: bool,
) -> tuple[FeatureNet, DenseGeometry]:
    """The backbone's feature levels that the data's geometry needs, and that geometry."""
    # the levels with the overrides (output_stride dilates): shapes only, weights not loaded
    shape_args = {k: v for k, v in overrides.items() if k not in ("pretrained", "checkpoint_path")}
    with torch.device("meta"):
        probe = create_model(backbone, features_only=True, **shape_args)
    geometry = geometry_for(probe, image_size, object_sizes)
    body = create_model(
        backbone, features_only=True, out_indices=geometry.backbone_levels, **overrides
    )
    assert isinstance(body, FeatureNet)
    if frozen_bn:
        freeze_batchnorm(body)
    return body, geometry


def _input_config(
    body: FeatureNet,
    backbone: str,
    image_size: int,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> tuple[DataConfig, tuple[float, ...], tuple[float, ...]]:
    """The model's input preparation: the backbone's, at ``image_size`` with no resize, and the
    normalisation (``mean``/``std`` when given, else the backbone's)."""
    cfg = body.data_config
    if cfg is None:
        raise ConfigError(f"backbone {backbone!r} has no data_config (mean/std)")
    mean = tuple(float(x) for x in (mean if mean is not None else cfg.preprocess.mean))
    std = tuple(float(x) for x in (std if std is not None else cfg.preprocess.std))
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ConfigError(f"mean and std must be 3 values each (std > 0), got {mean}, {std}")
    data_config = replace(
        cfg,
        preprocess=replace(cfg.preprocess, input_size=image_size, resize=None, mean=mean, std=std),
    )
    return data_config, mean, std


# ------------------------------------------------------------------------------------- weights


def load_backbone_weights(
    model: DenseModel, state_dict: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str]]:
    """Load a classifier's weights (``stem.*``, ``stages.*``) into ``model.backbone``.

    The classifier (``head.*``) and stages the backbone does not keep are ignored. Returns
    ``(missing, unexpected)``: backbone tensors the state dict lacks, and state-dict tensors
    under the backbone's own modules that match none of its tensors (a BN's
    ``num_batches_tracked`` is not needed by a frozen BN and is not reported). A DDP
    ``module.`` prefix is removed.

    Raises:
        ConfigError: a tensor whose shape differs from the backbone's (named).
    """
    if not isinstance(model, DenseModel):
        raise ConfigError(f"load_backbone_weights takes a DenseModel, got {type(model).__name__}")
    if not isinstance(state_dict, Mapping):
        raise ConfigError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    body = model.backbone
    own = body.state_dict()
    roots = {n for n, _ in body.named_children()}
    frozen = {p for p, m in body.named_modules() if isinstance(m, FrozenBatchNorm2d)}
    take: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ConfigError(
                f"state_dict[{key!r}] is a {type(value).__name__}, not a tensor: pass a model's "
                "state dict (a checkpoint's 'state_dict'/'model' entry), not the checkpoint"
            )
        k = key.removeprefix("module.")
        if k in own:
            if tuple(value.shape) != tuple(own[k].shape):
                raise ConfigError(
                    f"backbone tensor {k}: the state dict's shape {tuple(value.shape)} differs "
                    f"from the model's {tuple(own[k].shape)} (another architecture?)"
                )
            take[k] = value
            continue
        parts = k.split(".")
        if parts[0] not in roots:
            continue  # the classifier and anything else outside the backbone
        if parts[0] == "stages" and (
            len(parts) < 2 or not parts[1].isdigit() or int(parts[1]) >= len(body.stages)
        ):
            continue  # a stage after the backbone's last level
        if parts[-1] == "num_batches_tracked" and ".".join(parts[:-1]) in frozen:
            continue
        unexpected.append(key)
    missing = [k for k in own if k not in take]
    body.load_state_dict(take, strict=False)
    return missing, unexpected


# ---------------------------------------------------------------------------------- complexity


def dense_complexity(model: DenseModel, image_size: int | None = None) -> dict[str, int]:
    """Parameters and MACs of one eval-mode forward pass on one (3, S, S) image.

    MACs are ``FlopCounterMode``'s total / 2 (convolutions and matrix products, as
    :func:`sknet.complexity`); the pass runs on a fixed random image, so an R-CNN's RoI heads are
    counted for the proposals the RPN returns on it (at most ``rpn_post_nms_top_n_test``).
    """
    if not isinstance(model, DenseModel):
        raise ConfigError(f"dense_complexity takes a DenseModel, got {type(model).__name__}")
    size = _check_int(model.image_size if image_size is None else image_size, "image_size")
    ref = next(model.parameters())
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(3, size, size, generator=gen).to(ref)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model([image])
    finally:
        model.train(was_training)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "macs": int(counter.get_total_flops()) // 2,
        "input_size": size,
    }

"""sknet.dense.models: torchvision detectors and an FPN segmenter on sknet backbones."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sknet.dense.models import (
    DETECTION_HEADS,
    GEOMETRY_RULE,
    DenseModel,
    build_dense_model,
    dense_complexity,
    geometry_for,
    load_backbone_weights,
)
from sknet.errors import ConfigError, InputError
from sknet.layers import FrozenBatchNorm2d
from sknet.models import capture_attention, create_model, sk_units

SIZE = 64
K = 5


def _targets(n: int = 2, size: int = SIZE) -> list[dict[str, torch.Tensor]]:
    out = []
    for i in range(n):
        boxes = torch.tensor([[12.0, 10.0, 40.0, 30.0], [5.0, 40.0, 20.0, 60.0]]) + i
        labels = torch.tensor([1, 3])
        masks = torch.zeros(2, size, size, dtype=torch.uint8)
        semantic = torch.zeros(size, size, dtype=torch.long)
        for k, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
            masks[k, y0:y1, x0:x1] = 1
            semantic[y0:y1, x0:x1] = labels[k]
        semantic[0, :] = 255  # an ignored row
        out.append({"boxes": boxes, "labels": labels, "masks": masks, "semantic": semantic})
    return out


def _images(n: int = 2, size: int = SIZE) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("task", "head"), [*(("detect", h) for h in DETECTION_HEADS), ("segment", "fpn")]
)
def test_every_head_trains_a_step_and_predicts(task: str, head: str) -> None:
    torch.manual_seed(0)
    model = build_dense_model("sknet_tiny", task, head, K, SIZE, (8, 32))
    assert isinstance(model, DenseModel)
    got = (model.task, model.head, model.backbone_name, model.num_classes)
    assert got == (task, head, "sknet_tiny", K)
    assert model.data_config is not None and model.data_config.input_size == SIZE
    losses = model.train()(_images(), _targets())
    assert isinstance(losses, dict) and losses
    assert all(v.dim() == 0 and math.isfinite(float(v.detach())) for v in losses.values()), losses
    sum(losses.values()).backward()
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    if head == "mask_rcnn":  # keep the mask head's eval pass small
        model.net.roi_heads.detections_per_img = 5
    with torch.no_grad():
        preds = model.eval()(list(_images()))  # a list of (3, H, W) works too
    assert isinstance(preds, list) and len(preds) == 2
    if task == "segment":
        assert set(preds[0]) == {"semantic"}
        assert preds[0]["semantic"].shape == (SIZE, SIZE)
        assert preds[0]["semantic"].dtype == torch.int64
        assert set(losses) == {"loss_seg"}
    else:
        want = {"boxes", "labels", "scores"} | ({"masks"} if head == "mask_rcnn" else set())
        assert set(preds[0]) == want
        if head == "mask_rcnn":
            p = preds[0]
            assert p["masks"].shape[1:] == (1, SIZE, SIZE)
            assert p["masks"].shape[0] == p["boxes"].shape[0] > 0
            assert "loss_mask" in losses


def test_segmenter_logits_shape_and_ignore_index() -> None:
    model = build_dense_model("sknet_tiny", "segment", "fpn", K, SIZE, (8, 32)).eval()
    with torch.no_grad():
        logits = model.forward_logits(_images())
    assert logits.shape == (2, K + 1, SIZE, SIZE)
    targets = _targets()
    for t in targets:
        t["semantic"].fill_(255)  # all ignored: a zero loss, not torch's NaN mean over no pixel
    loss = model.train()(_images(), targets)["loss_seg"]
    assert float(loss.detach()) == 0.0
    loss.backward()
    targets[0]["semantic"][5, 5] = K + 1
    with pytest.raises(InputError, match="255"):
        model(_images(), targets)
    with pytest.raises(ConfigError, match="segmenter"):
        build_dense_model("sknet_tiny", "detect", "fcos", K, SIZE).forward_logits(_images())


def test_geometry_rule_values() -> None:
    g = geometry_for("sknet_tiny", 128, (8, 64))
    assert g.strides == (2, 4, 8, 16)  # stages at 2/4/8, one extra level
    assert g.anchor_sizes == tuple(4 * s for s in g.strides) == (8, 16, 32, 64)
    assert g.anchor_sizes[0] <= 8 and g.anchor_sizes[-1] >= 64
    assert g.backbone_levels == (1, 2, 3) and g.num_extra_levels == 1
    assert g.rule == GEOMETRY_RULE and "4 x stride" in g.rule
    g = geometry_for("sknet50", 512, (16, 256))
    assert g.strides == (4, 8, 16, 32, 64)
    assert g.anchor_sizes == (16, 32, 64, 128, 256)
    assert g.backbone_levels == (1, 2, 3, 4) and g.num_extra_levels == 1
    # large objects only: the finest level is the coarsest with anchor <= smallest object
    g = geometry_for("sknet50", 512, (64, 256))
    assert g.strides == (16, 32, 64) and g.backbone_levels == (3, 4)
    # small objects only: no coarse stage beyond the first whose anchor covers the largest
    g = geometry_for("sknet50", 512, (8, 40))
    assert g.strides == (4, 8, 16) and g.num_extra_levels == 0
    # a dilated backbone (output_stride=16): of two levels at one stride, the deeper one
    with torch.device("meta"):
        dilated = create_model("sknet50", features_only=True, output_stride=16)
    g = geometry_for(dilated, 512, (16, 256))
    assert g.strides == (4, 8, 16, 32, 64) and g.backbone_levels == (1, 2, 4)
    assert g.num_extra_levels == 2


def test_built_models_follow_the_geometry() -> None:
    model = build_dense_model("sknet_tiny", "detect", "retinanet", K, 128, (8, 64))
    assert model.geometry == geometry_for("sknet_tiny", 128, (8, 64))
    sizes = model.net.anchor_generator.sizes
    assert [s[0] for s in sizes] == [8, 16, 32, 64]
    assert all(len(s) == 3 for s in sizes)  # 3 scales per octave
    assert model.net.anchor_generator.aspect_ratios[0] == (0.5, 1.0, 2.0)
    with torch.no_grad():
        levels = model.eval().net.backbone(torch.zeros(1, 3, 128, 128))
    assert [128 // f.shape[-1] for f in levels.values()] == [2, 4, 8, 16]
    fcos = build_dense_model("sknet_tiny", "detect", "fcos", K, 128, (8, 64))
    assert [s[0] for s in fcos.net.anchor_generator.sizes] == [1, 2, 4, 8]  # A / 8
    rcnn = build_dense_model("sknet_tiny", "detect", "faster_rcnn", K, 128, (8, 64))
    assert rcnn.net.rpn._pre_nms_top_n == {"training": 250, "testing": 125}
    assert rcnn.net.roi_heads.detections_per_img == 100


def test_fcos_assigns_each_object_size_to_its_level() -> None:
    model = build_dense_model("sknet_tiny", "detect", "fcos", K, 128, (8, 64)).train()
    seen: dict[str, list[torch.Tensor]] = {}
    compute = model.net.head.compute_loss

    def spy(targets, head_outputs, anchors, matched_idxs):  # type: ignore[no-untyped-def]
        seen["matched"] = matched_idxs
        return compute(targets, head_outputs, anchors, matched_idxs)

    model.net.head.compute_loss = spy
    boxes = torch.tensor([[10.0, 10, 18, 18], [40, 40, 56, 56], [60, 10, 92, 42], [0, 60, 64, 124]])
    target = {"boxes": boxes, "labels": torch.tensor([1, 2, 3, 4])}
    model(torch.rand(2, 3, 128, 128), [target, target])
    matched = seen["matched"][0].split([64 * 64, 32 * 32, 16 * 16, 8 * 8])
    for level, m in enumerate(matched):  # objects of side 8/16/32/64 -> strides 2/4/8/16
        assert set(m[m >= 0].tolist()) == {level}


def test_frozen_bn_keeps_running_stats() -> None:
    model = build_dense_model("sknet_tiny", "segment", "fpn", K, SIZE, frozen_bn=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())
    frozen = [m for m in model.backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert frozen
    before = [(m.running_mean.clone(), m.running_var.clone()) for m in frozen]
    model.train()(_images(1), _targets(1))["loss_seg"].backward()  # batch 1 trains
    for m, (mean, var) in zip(frozen, before):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
    # trainable BN (the default) updates them, and SyncBN conversion reaches the backbone
    model = build_dense_model("sknet_tiny", "segment", "fpn", K, SIZE)
    bn = next(m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    mean = bn.running_mean.clone()
    model.train()(_images(), _targets())
    assert not torch.equal(bn.running_mean, mean)
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.backbone.modules())


def test_trainable_bn_needs_two_images() -> None:
    model = build_dense_model("sknet_tiny", "detect", "fcos", K, SIZE, (8, 32)).train()
    with pytest.raises(InputError, match="frozen_bn"):
        model(_images(1), _targets(1))
    # BN kept in eval mode (norm_eval) trains at batch 1
    overrides = {"norm_eval": True}
    model = build_dense_model("sknet_tiny", "segment", "fpn", K, SIZE, backbone_overrides=overrides)
    assert model.train()(_images(1), _targets(1))["loss_seg"].requires_grad


def test_load_backbone_weights_from_a_classifier() -> None:
    torch.manual_seed(1)
    classifier = create_model("sknet_tiny", num_classes=7)
    sd = classifier.state_dict()
    model = build_dense_model("sknet_tiny", "detect", "faster_rcnn", K, SIZE, (8, 32))
    missing, unexpected = load_backbone_weights(model, sd)
    assert missing == [] and unexpected == []
    stem = {k: v for k, v in sd.items() if k.startswith("stem.")}
    assert stem
    own = model.backbone.state_dict()
    for k, v in stem.items():
        assert torch.equal(own[k], v), k
    # a frozen backbone takes the same file (num_batches_tracked is not reported)
    frozen = build_dense_model("sknet_tiny", "segment", "fpn", K, SIZE, frozen_bn=True)
    missing, unexpected = load_backbone_weights(frozen, sd)
    assert missing == [] and unexpected == []
    bad = dict(sd)
    key = next(k for k in sd if k.startswith("stem.") and k.endswith("weight"))
    bad[key] = torch.zeros(1)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_backbone_weights(model, bad)
    with pytest.raises(ConfigError, match="not a tensor"):
        load_backbone_weights(model, {"state_dict": sd, "epoch": 3})


def test_sk_units_reachable() -> None:
    sk = build_dense_model("sknet_tiny", "segment", "fpn", K, SIZE)
    assert sk_units(sk.backbone)
    assert sk_units(sk)  # the same units, through the wrapper
    with capture_attention(sk.backbone) as attention, torch.no_grad():
        sk.eval()(_images())
    assert attention and all(a.shape[0] == 2 for a in attention.values())
    plain = build_dense_model("resnext_tiny", "segment", "fpn", K, SIZE)
    assert not sk_units(plain.backbone)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"head": "yolo"}, "fcos, retinanet, faster_rcnn, mask_rcnn"),
        ({"task": "classify"}, "detect, segment"),
        ({"task": "segment", "head": "fcos"}, "valid: fpn"),
        ({"num_classes": 0}, "num_classes"),
        ({"image_size": 4}, "image_size"),
        ({"object_sizes": (0, 32)}, "object_sizes"),
        ({"object_sizes": (40, 20)}, "smallest <= largest"),
        ({"object_sizes": (8, 200)}, "exceeds image_size"),
        ({"object_sizes": 8}, "object_sizes"),
        ({"fpn_channels": 48}, "multiple of 32"),
        ({"backbone": "nope_net"}, "nope_net"),
        ({"backbone_overrides": {"out_indices": (1,)}}, "out_indices"),
    ],
)
def test_config_errors(kwargs: dict, match: str) -> None:
    args = {"backbone": "sknet_tiny", "task": "detect", "head": "fcos", "num_classes": K,
            "image_size": SIZE, "object_sizes": (8, 32)}  # fmt: skip
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        build_dense_model(**args)


def test_input_errors() -> None:
    model = build_dense_model("sknet_tiny", "detect", "retinanet", K, SIZE, (8, 32)).eval()
    with pytest.raises(InputError, match="B, 3, H, W"):
        model(torch.rand(3, SIZE, SIZE))
    with pytest.raises(InputError, match="channels"):
        model(torch.rand(2, 1, SIZE, SIZE))
    with pytest.raises(InputError, match=r"\(3, H, W\)"):
        model([torch.rand(1, 3, SIZE, SIZE)])
    with pytest.raises(InputError, match="float"):
        model(torch.zeros(2, 3, SIZE, SIZE, dtype=torch.uint8))
    with pytest.raises(InputError, match="minimum side"):
        model(torch.rand(2, 3, 4, 4))
    model.train()
    with pytest.raises(InputError, match="targets"):
        model(_images())
    with pytest.raises(InputError, match="1..5"):
        model(_images(), [{"boxes": torch.zeros(1, 4), "labels": torch.tensor([0])}] * 2)


def test_dense_complexity() -> None:
    model = build_dense_model("sknet_tiny", "segment", "fpn", K, SIZE)
    c = dense_complexity(model)
    assert c["params"] == sum(p.numel() for p in model.parameters())
    assert c["macs"] > 0 and c["input_size"] == SIZE
    assert dense_complexity(model, 2 * SIZE)["macs"] > 3 * c["macs"]
    assert model.training  # the mode is restored

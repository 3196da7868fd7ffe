"""SK backbones under their real consumers: torchvision Faster R-CNN + FPN, torchvision
DeepLabV3, and ONNX Runtime (small inputs, random weights, CPU).

The two model-building snippets below (``SKNetFPN`` + ``faster_rcnn_sknet``, ``SKNetDeepLab`` +
``deeplabv3_sknet``) are the ones the README shows. Both keep the SK modules themselves (not an
FX copy), so ``sknet.capture_attention`` and ``sknet.deploy`` work on the detector/segmenter.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

import sknet

# --- README snippet: detection -----------------------------------------------------------------


class SKNetFPN(nn.Module):
    """SK backbone + FPN with the interface torchvision's detectors expect (``out_channels``,
    a dict of feature maps)."""

    def __init__(
        self, name: str = "sknet50", out_channels: int = 256, out_indices=(1, 2, 3, 4), **kwargs
    ) -> None:
        super().__init__()
        body = sknet.create_model(name, features_only=True, out_indices=out_indices, **kwargs)
        self.body = sknet.freeze_batchnorm(body)  # detectors train at 1-2 images per GPU
        self.fpn = FeaturePyramidNetwork(
            self.body.feature_info.channels(), out_channels, extra_blocks=LastLevelMaxPool()
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.body(x))))


def faster_rcnn_sknet(num_classes: int, **kwargs) -> FasterRCNN:
    backbone = SKNetFPN("sknet50", frozen_stages=1)  # stem and conv2_x frozen, as torchvision
    return FasterRCNN(backbone, num_classes=num_classes, **kwargs)


# --- README snippet: segmentation --------------------------------------------------------------


class SKNetDeepLab(nn.Module):
    """The last SK stage, dilated to ``output_stride`` 8 or 16, as DeepLabV3's ``{"out": ...}``."""

    def __init__(self, name: str = "sknet50", output_stride: int = 8) -> None:
        super().__init__()
        self.body = sknet.create_model(
            name, features_only=True, out_indices=(-1,), output_stride=output_stride
        )
        self.out_channels = self.body.feature_info.channels()[-1]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.body(x)[-1]}


def deeplabv3_sknet(num_classes: int, output_stride: int = 8) -> DeepLabV3:
    backbone = SKNetDeepLab("sknet50", output_stride)
    return DeepLabV3(backbone, DeepLabHead(backbone.out_channels, num_classes))


# -----------------------------------------------------------------------------------------------


def _attention_grads(model: nn.Module) -> dict[str, float]:
    return {
        name: float(unit.attn.fc_select.weight.grad.abs().sum())
        for name, unit in sknet.sk_units(model).items()
        if unit.attn.fc_select.weight.grad is not None
    }


@pytest.mark.slow
def test_faster_rcnn_with_fpn_over_sknet50_trains_and_detects() -> None:
    torch.manual_seed(0)
    model = faster_rcnn_sknet(num_classes=3, min_size=128, max_size=128, box_score_thresh=0.0)
    images = [torch.rand(3, 120, 128), torch.rand(3, 128, 96)]
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]]), "labels": torch.tensor([1])},
        {
            "boxes": torch.tensor([[5.0, 5.0, 40.0, 50.0], [50.0, 60.0, 90.0, 120.0]]),
            "labels": torch.tensor([2, 1]),
        },
    ]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = _attention_grads(model)
    # SK_2_x sit in the frozen conv2_x; every later unit's attention gets a gradient
    trainable = [n for n in sknet.sk_units(model) if not n.startswith("SK_2_")]
    assert sorted(grads) == sorted(trainable) and all(g > 0 for g in grads.values())
    assert all(not p.requires_grad for p in model.backbone.body.stages[0].parameters())
    select = model.backbone.body.stages[3][0].conv2.attn.fc_select.weight
    before = select.detach().clone()
    opt.step()
    assert not torch.equal(before, select)

    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2
    for det, img in zip(detections, images, strict=True):
        boxes = det["boxes"]
        assert boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) > 0
        assert det["scores"].shape == det["labels"].shape == (len(boxes),)
        assert set(det["labels"].tolist()) <= {1, 2}
        h, w = img.shape[-2:]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()


def test_frozen_sk_backbone_trains_a_detector_at_batch_one() -> None:
    torch.manual_seed(0)
    backbone = SKNetFPN("sknet_tiny", out_channels=32, out_indices=(1, 2, 3))  # 3 stages + pool
    anchors = AnchorGenerator(((8,), (16,), (32,), (64,)), ((0.5, 1.0, 2.0),) * 4)
    model = FasterRCNN(
        backbone,
        num_classes=2,
        min_size=64,
        max_size=64,
        rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], output_size=7, sampling_ratio=2),
    )
    target = {"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([1])}
    losses = model.train()([torch.rand(3, 64, 64)], [target])
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    grads = _attention_grads(model)
    assert len(grads) == 3 and all(g > 0 for g in grads.values())


@pytest.mark.parametrize("output_stride", [8, 16])
def test_deeplabv3_head_on_sknet50(output_stride: int) -> None:
    torch.manual_seed(0)
    model = deeplabv3_sknet(num_classes=4, output_stride=output_stride)
    x = torch.randn(2, 3, 48, 48)
    masks = torch.randint(0, 4, (2, 48, 48))
    model.train()
    features = model.backbone(x)["out"]
    assert features.shape == (2, 2048, 48 // output_stride, 48 // output_stride)
    out = model(x)["out"]
    assert out.shape == (2, 4, 48, 48)  # at input resolution
    loss = F.cross_entropy(out, masks)
    assert torch.isfinite(loss)
    loss.backward()
    grads = _attention_grads(model)
    assert "SK_5_3" in grads and all(g > 0 for g in grads.values())
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    opt.step()
    with torch.no_grad():
        assert model.eval()(x)["out"].shape == (2, 4, 48, 48)


@pytest.mark.slow  # the dynamo-based exporter takes several seconds even for a tiny model
def test_features_only_onnx_export_matches_onnxruntime(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    body = sknet.create_model("sknet_tiny", features_only=True, out_indices=(0, 1, 2, 3)).eval()
    x = torch.randn(2, 3, 48, 48)
    names = [f"level{i}" for i in body.out_indices]
    path = tmp_path / "sknet_tiny_features.onnx"
    with torch.no_grad():
        torch.onnx.export(
            body,
            (x,),
            str(path),
            input_names=["images"],
            output_names=names,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},),
            dynamo=True,
            external_data=False,
        )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == names
    for batch in (1, 3):  # the batch axis stays dynamic
        xb = torch.randn(batch, 3, 48, 48)
        with torch.no_grad():
            want = body(xb)
        got = sess.run(None, {"images": xb.numpy()})
        assert len(got) == len(want) == 4
        for g, w in zip(got, want, strict=True):
            assert g.shape == tuple(w.shape)
            assert torch.allclose(torch.from_numpy(g), w, atol=1e-4, rtol=1e-4)

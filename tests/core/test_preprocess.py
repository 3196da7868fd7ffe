"""The one Preprocess: its transform is the documented pipeline bit for bit (and predict's);
the conventions agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import sknet
from sknet.hub import get_pretrained_cfg
from sknet.predict import preprocess_transform
from sknet.preprocess import (
    Preprocess,
    caffe_preprocess,
    default_preprocess,
    eval_resize,
)


def _image(w: int = 83, h: int = 61) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "pre",
    [
        Preprocess(input_size=48),
        Preprocess(input_size=48, resize=55, interpolation="bicubic"),
        Preprocess(input_size=32, resize=40, interpolation="nearest", channel_order="BGR"),
        caffe_preprocess(48, 56),
        default_preprocess(224, "imagenet"),
    ],
)
def test_transforms_are_the_documented_pipeline_bit_for_bit(pre: Preprocess) -> None:
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    img = _image()
    mode = InterpolationMode(pre.interpolation)
    if pre.resize is None:  # squash to the input size
        view = TF.resize(img, [pre.input_size] * 2, interpolation=mode, antialias=True)
    else:  # short side to resize, then the centre crop
        view = TF.resize(img, pre.resize, interpolation=mode, antialias=True)
        view = TF.center_crop(view, [pre.input_size] * 2)
    x = TF.to_tensor(view)
    if pre.channel_order == "BGR":
        x = x.flip(0)
    want = TF.normalize(x, list(pre.mean), list(pre.std))
    ours = pre.transforms()
    got = ours(img)
    assert got.shape == (3, pre.input_size, pre.input_size)
    assert torch.equal(got, want)
    assert ours.geometry(img).size == view.size  # type: ignore[attr-defined]
    assert torch.equal(preprocess_transform(pre)(img), want)  # predict uses the same


def test_normalize_matches_the_transform_on_a_batch() -> None:
    pre = caffe_preprocess(32, 32)
    img = _image(32, 32)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(255).unsqueeze(0)
    assert torch.allclose(pre.normalize(x)[0], pre.transforms()(img), atol=1e-4)
    with pytest.raises(ValueError, match="RGB batch"):
        pre.normalize(torch.zeros(3, 2, 2))


def test_one_preprocess_class_and_the_weights_table_produces_it() -> None:
    assert sknet.Preprocess is Preprocess
    cfg = get_pretrained_cfg("sknet50.caffe_in1k")
    assert cfg.preprocess.to_preprocess() == caffe_preprocess(224, 256)
    tv = get_pretrained_cfg("resnext50_32x4d.tv2_in1k").preprocess.to_preprocess()
    assert (tv.input_size, tv.resize, tv.interpolation) == (224, 232, "bilinear")
    assert Preprocess.from_dict(tv.to_dict()) == tv
    assert eval_resize(224) == 256 and eval_resize(320) == 366

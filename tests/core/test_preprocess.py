"""The one Preprocess: its transform is predict's, bit for bit; the conventions agree."""

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
def test_transforms_are_predicts_bit_for_bit(pre: Preprocess) -> None:
    img = _image()
    ours, theirs = pre.transforms(), preprocess_transform(pre)
    a, b = ours(img), theirs(img)
    assert a.shape == (3, pre.input_size, pre.input_size)
    assert torch.equal(a, b)
    assert ours.geometry(img).size == theirs.geometry(img).size  # type: ignore[attr-defined]


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

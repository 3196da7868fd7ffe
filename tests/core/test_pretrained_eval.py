"""Published weights through ``create_model(pretrained=...)`` and ``sknet eval NAME.TAG``: the
weights' own preprocessing, and ImageNet folders (WordNet ids) matched to the weights' classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sknet
from sknet import hub
from sknet.cli.main import main
from sknet.errors import SKNetError
from sknet.weights import save_weights

TAG = "unit_test_in1k"


@pytest.fixture
def tiny_weights(tmp_path: Path, monkeypatch) -> Path:
    """sknet_tiny with 1000 ImageNet classes that always predicts class 2, registered as
    published weights whose file is already in the (temporary) download cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may be fetched
    # the registry is global: the test's entry must not outlive the test
    monkeypatch.setattr(hub.table, "_REGISTRY", dict(hub.table._REGISTRY))
    monkeypatch.setattr(hub.table, "_DEFAULT_TAGS", dict(hub.table._DEFAULT_TAGS))
    model = sknet.create_model("sknet_tiny", num_classes=1000).eval()
    with torch.no_grad():
        model.head.fc.weight.zero_()
        model.head.fc.bias.zero_()
        model.head.fc.bias[2] = 10.0
    cfg = hub.PretrainedCfg(
        model="sknet_tiny",
        tag=TAG,
        converter="sknet",
        source="a test",
        source_model="sknet_tiny",
        license="n/a",
        num_params=sum(p.numel() for p in model.parameters()),
        preprocess=hub.Preprocess(crop_size=48, resize_size=55),
        url="http://127.0.0.1:9/sknet_tiny_unit_test.safetensors",
    )
    hub.register_pretrained(cfg, overwrite=True)
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    save_weights(model, cache / "sknet_tiny_unit_test.safetensors")
    return cache / "sknet_tiny_unit_test.safetensors"


def _folder(root: Path, names: tuple[str, ...], n: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for name in names:
        d = root / "val" / name
        d.mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 255, size=(60, 70, 3), dtype=np.uint8)
            Image.fromarray(arr).save(d / f"{i}.JPEG")
    return root


def test_create_model_pretrained_and_checkpoint_path(tiny_weights: Path) -> None:
    model = sknet.create_model("sknet_tiny", pretrained=TAG)
    assert model.num_classes == 1000 and model.class_names[2] == hub.class_names("imagenet-1k")[2]
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert model.eval()(x).argmax(1).tolist() == [2, 2]
    head10 = sknet.create_model("sknet_tiny", pretrained=TAG, num_classes=10)
    assert head10.num_classes == 10
    with torch.no_grad():
        assert torch.equal(head10.eval().forward_features(x), model.forward_features(x))
    local = sknet.create_model("sknet_tiny", num_classes=1000, checkpoint_path=tiny_weights)
    assert torch.equal(local.head.fc.bias, model.head.fc.bias)
    feats = sknet.create_model("sknet_tiny", pretrained=TAG, features_only=True)
    assert len(feats(x)) == 3
    with pytest.raises(SKNetError, match="does not fit"):
        sknet.create_model("sknet_tiny", pretrained=TAG, sk_kernel_mode="full")


def test_eval_published_weights_matches_synset_folders(tiny_weights: Path, tmp_path: Path) -> None:
    from sknet.train import evaluate_source

    synsets, _ = hub.imagenet_classes()
    # folders of ImageNet classes 1 and 2: positions 0 and 1 in the folder, labels 1 and 2
    data = _folder(tmp_path / "in", (synsets[1], synsets[2]))
    res = evaluate_source(f"sknet_tiny.{TAG}", data="imagefolder", data_dir=str(data))
    first = res["results"][0]
    assert (first["size"], first["resize"], first["n"]) == (48, 55, 6)
    # the model always says class 2: right for the second folder only, if labels follow ids
    assert first["top1_err"] == pytest.approx(50.0)


def test_eval_of_folders_that_are_not_the_weights_classes_is_one_line(
    tiny_weights: Path, tmp_path: Path, capsys
) -> None:
    data = _folder(tmp_path / "cats", ("cat", "dog"))
    args = ["eval", f"sknet_tiny.{TAG}", "--data", "imagefolder", "--data-dir", str(data)]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "do not match" in err and "\n" not in err


def test_eval_uses_the_weights_crop_ratio_and_interpolation(tiny_weights: Path, tmp_path) -> None:
    from sknet.train.evaluate import _eval_dataset

    _, record = sknet.load(f"sknet_tiny.{TAG}")
    from dataclasses import replace

    record = replace(
        record, preprocess=replace(record.preprocess, resize=60, interpolation="bicubic")
    )
    synsets, _ = hub.imagenet_classes()
    data = _folder(tmp_path / "in", (synsets[1],))
    ds = _eval_dataset(record, "imagefolder", str(data), 48, True, None)
    resize = ds.transform.transforms[0]
    assert resize.size == 60 and resize.interpolation.value == "bicubic"


def test_info_shows_the_published_weights(capsys) -> None:
    assert main(["info", "skresnet18", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    (w,) = row["pretrained"]
    assert w["name"] == "skresnet18.ra_in1k" and w["reported"][0]["top1"] > 70
    assert main(["info", "skresnet18"]) == 0
    assert "weights skresnet18.ra_in1k: timm" in capsys.readouterr().out

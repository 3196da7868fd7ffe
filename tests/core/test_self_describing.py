"""Self-describing models (issue 17): every model sknet returns carries its data config
(``model.data_config``), and predict, export and fine-tuning use it, so that a bare loaded model,
its run, its ONNX export and a run fine-tuned from it all prepare an image the same way; and no
command silently runs random weights."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

import sknet
from sknet.cli.main import main
from sknet.data import SHAPE_CLASSES, SyntheticShapes
from sknet.errors import ConfigError, SKNetError
from sknet.hub.metadata import save_weights
from sknet.preprocess import SYNTHETIC_MEAN, SYNTHETIC_STD, DataConfig, Preprocess

ARGS = [
    "--epochs", "1", "--batch-size", "8", "--threads", "1", "--workers", "0", "--no-progress",
    "--no-tensorboard", "--num-samples", "16", "--set", "val_samples=8",
    "--set", "warmup_epochs=0",
]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained run of the demo preset: synthetic shapes, mean/std 0.5, 32 px."""
    out = tmp_path_factory.mktemp("sd") / "run"
    args = ["train", "--preset", "demo", "--model", "sknet_tiny", "--image-size", "32"]
    assert main([*args, *ARGS, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shape image at a size other than the model's (the resize is part of the test)."""
    ds = SyntheticShapes(num_samples=20, image_size=40, seed=3, split="val")
    img, _ = ds[0]
    arr = (img * 255).round().byte().permute(1, 2, 0).numpy()
    path = tmp_path_factory.mktemp("img") / "shape.png"
    Image.fromarray(arr).save(path)
    return path


def test_every_path_predicts_the_same(run: Path, image: Path, tmp_path: Path) -> None:
    model, record = sknet.load(run)
    cfg = model.data_config
    assert isinstance(cfg, DataConfig) and cfg == record.data_config
    assert cfg.preprocess.mean == SYNTHETIC_MEAN and cfg.preprocess.std == SYNTHETIC_STD
    assert cfg.preprocess.input_size == 32 and cfg.classes == tuple(SHAPE_CLASSES)
    assert sknet.resolve_data_config(model) == cfg == sknet.resolve_data_config(run)

    [bare] = sknet.predict(model, [image], device="cpu")  # the model alone
    [src] = sknet.predict(run, [image], device="cpu")  # the run
    assert bare.indices[0] == src.indices[0] and bare.label == src.label
    assert bare.scores[0] == pytest.approx(src.scores[0], abs=1e-4)
    # not ImageNet statistics: those give other numbers
    [imnet] = sknet.predict(model, [image], device="cpu", preprocess=dataclasses.replace(
        cfg.preprocess, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)))  # fmt: skip
    assert imnet.scores[0] != pytest.approx(src.scores[0], abs=1e-4)

    # the ONNX export carries the data config: onnxruntime with the metadata's preprocessing
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from sknet.export import export_model, read_onnx_data_config

    onnx_path = tmp_path / "m.onnx"
    export_model(model, onnx_path)
    read = read_onnx_data_config(onnx_path)
    assert read is not None and read.preprocess == cfg.preprocess and read.classes == cfg.classes
    x = sknet.create_transform(read)(Image.open(image).convert("RGB"))[None]
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    logits = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
    probs = logits.softmax(dim=1)[0]
    top = int(probs.argmax())
    assert top == bare.indices[0] and read.classes[top] == bare.label
    assert float(probs[top]) == pytest.approx(bare.scores[0], abs=1e-4)

    # a run fine-tuned from it: the same preprocessing, the same prediction by both paths
    ft = tmp_path / "ft"
    args = ["train", "--init", str(run), "--data", "synthetic", "--freeze-stages", "1"]
    assert main([*args, *ARGS, "--out", str(ft)]) == 0
    ft_model, _ = sknet.load(ft)
    assert ft_model.data_config.preprocess == cfg.preprocess
    assert ft_model.data_config.classes == cfg.classes
    [ft_bare] = sknet.predict(ft_model, [image], device="cpu")
    [ft_src] = sknet.predict(ft, [image], device="cpu")
    assert ft_bare.indices == ft_src.indices
    assert ft_bare.scores == pytest.approx(ft_src.scores, abs=1e-4)


def test_registry_models_carry_their_family_preprocessing() -> None:
    im = sknet.create_model("sknet50", num_classes=2).data_config
    assert im.preprocess.mean == (0.485, 0.456, 0.406) and im.preprocess.resize == 256
    assert im.random_weights and im.classes is None
    cifar = sknet.create_model("sknet29").data_config.preprocess
    assert cifar.input_size == 32 and cifar.resize is None and cifar.mean[0] == 0.5071
    tiny = sknet.create_model("sknet_tiny").data_config.preprocess
    assert tiny.input_size == 48 and tiny.mean == SYNTHETIC_MEAN and tiny.resize is None
    assert sknet.create_transform(sknet.create_model("sknet_tiny")).geometry is not None


def test_new_head_and_deploy(tmp_path: Path) -> None:
    model = sknet.create_model("sknet_tiny", num_classes=3)
    pre = Preprocess(input_size=40, mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5))
    path = save_weights(model, tmp_path / "w.safetensors", preprocess=pre, classes=["a", "b", "c"])
    loaded, _ = sknet.load(path)
    assert loaded.data_config.classes == ("a", "b", "c") and loaded.data_config.preprocess == pre
    assert sknet.deploy(loaded).data_config == loaded.data_config
    # save_weights records what the model carries
    again, _ = sknet.load(save_weights(loaded, tmp_path / "again.safetensors"))
    assert again.data_config.preprocess == pre and again.data_config.classes == ("a", "b", "c")
    loaded.reset_classifier(5)
    assert loaded.data_config.classes is None and loaded.data_config.preprocess == pre
    fresh, rec = sknet.load(path, num_classes=4)
    assert fresh.data_config.classes is None and rec.classes is None
    assert fresh.data_config.preprocess == pre


def test_a_model_without_data_config_is_refused(image: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten())  # fmt: skip
    net.num_classes = 2  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="preprocess"):
        sknet.predict(net, [image], device="cpu")
    with pytest.raises(ConfigError, match="data_config"):
        sknet.resolve_data_config(net)
    out = sknet.predict(net, [image], device="cpu", preprocess=Preprocess(input_size=16))
    assert out[0].ok


def test_load_warns_about_random_weights() -> None:
    with pytest.warns(UserWarning, match="random"):
        sknet.load("sknet_tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sknet.load("sknet_tiny", random_weights=True)


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "sknet_tiny", "IMAGE"],
        ["eval", "sknet_tiny"],
        ["analyze", "sknet_tiny", "--out", "OUT"],
        ["export", "sknet_tiny", "--out", "OUT.onnx"],
    ],
)
def test_commands_refuse_bare_names(argv: list[str], image: Path, tmp_path: Path, capsys) -> None:
    argv = [str(image) if a == "IMAGE" else a.replace("OUT", str(tmp_path / "o")) for a in argv]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "without weights" in err and "--random-weights" in err and "sknet_tiny." in err


def test_random_weights_flag_runs(image: Path, capsys) -> None:
    assert main(["predict", "sknet_tiny", str(image), "--random-weights", "--device", "cpu"]) == 0
    assert image.name in capsys.readouterr().out


def test_data_config_json_round_trip() -> None:
    cfg = DataConfig(Preprocess(input_size=32, resize=36), ("a", "b"), None, {}, "x")
    assert DataConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(SKNetError):
        DataConfig.from_json('{"classes": []}', where="f.onnx")


def test_pt2_carries_the_data_config(tmp_path: Path) -> None:
    from sknet.export import export_model, read_pt2_data_config

    model = sknet.create_model("sknet_tiny", num_classes=3)
    model.data_config = DataConfig(Preprocess(input_size=40, resize=44), ("a", "b", "c"))
    result = export_model(model, tmp_path / "m.pt2", check=False)
    assert result.input_shape[-1] == 40  # the data config's input size
    assert read_pt2_data_config(tmp_path / "m.pt2") == model.data_config

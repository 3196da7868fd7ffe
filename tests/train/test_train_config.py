"""Presets, config validation, overrides and the learning-rate schedule."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sknet.train import (
    TrainConfig,
    default_eval_sizes,
    learning_rate,
    list_presets,
    load_config_file,
    load_preset,
    parse_set_options,
)


def test_presets_are_shipped_and_load() -> None:
    assert set(list_presets()) >= {"demo", "cifar", "imagenet", "imagenet-light"}
    for name in list_presets():
        cfg = load_preset(name)
        assert cfg.preset == name
        assert cfg.description


def test_imagenet_preset_is_the_papers_recipe() -> None:
    c = load_preset("imagenet")
    assert (c.momentum, c.batch_size, c.lr, c.lr_reference_batch) == (0.9, 256, 0.1, 256)
    assert (c.schedule, c.lr_step, c.lr_gamma, c.epochs) == ("step", 30, 0.1, 100)
    assert (c.weight_decay, c.label_smoothing, c.image_size) == (1e-4, 0.1, 224)
    assert c.crop_scale == (0.08, 1.0) and c.data == "imagefolder"
    # Linear scaling with the global batch.
    assert load_preset("imagenet", batch_size=1024).effective_lr() == pytest.approx(0.4)
    assert load_preset("imagenet", batch_size=128).effective_lr() == pytest.approx(0.05)
    spe = 100
    assert learning_rate(c, 29 * spe, 29, spe) == pytest.approx(0.1)
    assert learning_rate(c, 30 * spe, 30, spe) == pytest.approx(0.01)
    assert learning_rate(c, 99 * spe, 99, spe) == pytest.approx(1e-4)


def test_light_and_cifar_presets() -> None:
    light = load_preset("imagenet-light")
    assert light.weight_decay == 4e-5 and light.crop_scale == (0.25, 1.0)
    assert light.model.startswith("sk_shufflenetv2")
    c = load_preset("cifar")
    assert (c.epochs, c.batch_size, c.lr, c.weight_decay) == (300, 128, 0.1, 5e-4)
    assert c.schedule == "multistep" and c.lr_milestones == (150, 225)
    assert learning_rate(c, 0, 149, 10) == pytest.approx(0.1)
    assert learning_rate(c, 0, 150, 10) == pytest.approx(0.01)
    assert learning_rate(c, 0, 225, 10) == pytest.approx(0.001)


def test_demo_warmup_and_cosine() -> None:
    c = load_preset("demo", epochs=4, warmup_epochs=1.0, lr=0.2, min_lr=0.0)
    spe = 10
    assert learning_rate(c, 0, 0, spe) == pytest.approx(0.02)
    assert learning_rate(c, 9, 0, spe) == pytest.approx(0.2)
    assert learning_rate(c, 10, 1, spe) == pytest.approx(0.2)
    mid = 10 + 15  # half-way through the cosine part
    assert learning_rate(c, mid, 2, spe) == pytest.approx(0.1)
    assert learning_rate(c, 39, 3, spe) < 0.002


def test_unknown_key_is_named_with_a_suggestion() -> None:
    with pytest.raises(ValueError, match=r"'epoch'.*did you mean 'epochs'"):
        load_preset("demo", epoch=3)
    with pytest.raises(ValueError, match="unknown preset 'imagnet'.*imagenet"):
        load_preset("imagnet")


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("epochs", -1, "epochs must be >= 1"),
        ("lr", 0.0, "lr must be a positive"),
        ("lr", float("nan"), "lr must be a positive"),
        ("batch_size", 1, "batch_size must be >= 2"),
        ("amp", "fp8", "amp must be one of"),
        ("optimizer", "lamb", "optimizer must be one of"),
        ("schedule", "linear", "schedule must be one of"),
        ("data", "imagenet21k", "data must be one of"),
        ("model", "sknet5O", "unknown model 'sknet5O'; did you mean"),
        ("epochs", "three", "config key 'epochs': expected int"),
        ("warmup_epochs", 50.0, "warmup_epochs must be in"),
        ("label_smoothing", 1.0, "label_smoothing must be in"),
        ("lr_milestones", [225, 150], "lr_milestones must be increasing"),
    ],
)
def test_invalid_values_are_rejected(key: str, value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_preset("demo", **{key: value})


def test_set_options_parse_toml_values() -> None:
    got = parse_set_options(
        [
            "epochs=3",
            "lr=0.05",
            "amp=bf16",
            "lr_milestones=[2, 4]",
            "data_dir=/data/x y",
            "channels_last=false",
            "model_overrides.sk_branches=['3x3', '3x3 D2']",
        ]
    )
    assert got == {
        "epochs": 3,
        "lr": 0.05,
        "amp": "bf16",
        "lr_milestones": [2, 4],
        "data_dir": "/data/x y",
        "channels_last": False,
        "model_overrides.sk_branches": ["3x3", "3x3 D2"],
    }
    cfg = load_preset("demo", **got)
    assert cfg.model_overrides == {"sk_branches": ["3x3", "3x3 D2"]}
    assert cfg.lr_milestones == (2, 4) and cfg.epochs == 3
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_set_options(["epochs"])


def test_toml_round_trip_and_user_config(tmp_path: Path) -> None:
    cfg = load_preset(
        "demo", epochs=2, model_overrides={"sk_aggregation": "sum"}, lr_milestones=[1]
    )
    path = tmp_path / "my.toml"
    path.write_text(cfg.to_toml())
    again = load_config_file(path)
    assert again == cfg
    assert load_config_file(path, epochs=5).epochs == 5
    # A user config that only sets a few keys inherits the defaults of TrainConfig.
    small = tmp_path / "small.toml"
    small.write_text('model = "senet_tiny"\nepochs = 2\n[model_overrides]\n')
    assert load_config_file(small) == TrainConfig(model="senet_tiny", epochs=2)
    bad = tmp_path / "bad.toml"
    bad.write_text("epoch = 2\n")
    with pytest.raises(ValueError, match=r"bad.toml: unknown config key 'epoch'"):
        load_config_file(bad)
    with pytest.raises(FileNotFoundError):
        load_config_file(tmp_path / "missing.toml")


def test_micro_batch_divides_the_global_batch() -> None:
    cfg = load_preset("imagenet", grad_accum=2)
    assert cfg.micro_batch(world_size=8) == 16
    with pytest.raises(ValueError, match="not divisible"):
        cfg.micro_batch(world_size=3)
    with pytest.raises(ValueError, match="at least 2"):
        load_preset("demo", batch_size=8, grad_accum=4).micro_batch(world_size=2)
    assert math.isclose(load_preset("demo").effective_lr(), load_preset("demo").lr)


def test_default_eval_sizes_follow_table_2() -> None:
    assert default_eval_sizes("imagefolder", 224) == [224, 320]
    assert default_eval_sizes("imagefolder", 288) == [288, 411]
    # a small-image folder model (issue 17: a 48 px model got an unexplained 69 px row)
    assert default_eval_sizes("imagefolder", 112) == [112]
    assert default_eval_sizes("imagefolder", 48) == [48]
    assert default_eval_sizes("synthetic", 48) == [48]
    assert default_eval_sizes("cifar100", 32) == [32]

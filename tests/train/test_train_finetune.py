"""Fine-tuning: ``sknet train --init SOURCE`` on an ImageFolder, frozen stages, parameter groups,
the recorded provenance, and clear errors for init weights that do not fit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import sknet
from sknet.cli.main import main
from sknet.data import SHAPE_CLASSES, SyntheticShapes
from sknet.errors import SKNetError
from sknet.train import load_config_file, load_preset, train, weights_digest
from sknet.train.distributed import seed_everything
from sknet.train.finetune import classifier_keys, init_state, param_groups, resolve_init
from sknet.weights import save_weights

DATA = Path(__file__).parent / "data"
CLASSES = ("circle", "square", "star")


def _shapes_folder(root: Path, n_train: int = 8, n_val: int = 4) -> Path:
    """Rendered shapes of three classes as 32x32 PNGs in train/ and val/ class folders."""
    for split, n in (("train", n_train), ("val", n_val)):
        ds = SyntheticShapes(num_samples=10 * n, image_size=32, seed=5, split=split)
        for i in range(len(ds)):
            img, label = ds[i]
            if SHAPE_CLASSES[label] in CLASSES:
                d = root / split / SHAPE_CLASSES[label]
                d.mkdir(parents=True, exist_ok=True)
                arr = (img * 255).round().byte().permute(1, 2, 0).numpy()
                Image.fromarray(arr).save(d / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained run (sknet_tiny with small widths, 10 shape classes, 24 px, mean/std 0.5)."""
    return Path(shutil.copytree(DATA / "old_run_final", tmp_path_factory.mktemp("src") / "run"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _shapes_folder(tmp_path_factory.mktemp("shapes"))


ARGS = [
    "--epochs", "1", "--batch-size", "8", "--threads", "1", "--workers", "0", "--no-progress",
    "--no-tensorboard",
]  # fmt: skip


def test_finetune_from_a_run_freezes_records_and_resumes(
    source: Path, folder: Path, tmp_path: Path
) -> None:
    run = tmp_path / "ft"
    args = ["train", "--init", str(source), "--data-dir", str(folder), "--freeze-stages", "3"]
    assert main([*args, *ARGS, "--out", str(run)]) == 0
    cfg = load_config_file(run / "config.toml")
    # the finetune preset, with the architecture, input size and normalisation of the init run
    assert cfg.preset == "finetune" and cfg.init == str(source) and cfg.data == "imagefolder"
    assert cfg.model == "sknet_tiny" and cfg.model_overrides["stage_out"] == [8, 16, 16]
    assert cfg.image_size == 24 and cfg.mean == cfg.std == (0.5, 0.5, 0.5)

    src_w = load_file(str(source / "model.safetensors"))
    new_w = load_file(str(run / "model.safetensors"))
    assert new_w["head.fc.weight"].shape == (3, src_w["head.fc.weight"].shape[1])
    # stem and all stages frozen: their tensors (BN statistics included) are the init's own
    frozen = [k for k in src_w if k.startswith(("stem.", "stages."))]
    assert any(".attn.bn." in k for k in frozen)
    for k in frozen:
        assert torch.equal(src_w[k], new_w[k]), k
    # the classifier is the run's fresh one (seeded as every run), then trained
    seed_everything(cfg.seed)
    fresh = sknet.create_model(cfg.model, num_classes=3, **cfg.model_overrides)
    assert not torch.equal(fresh.head.fc.weight.detach(), new_w["head.fc.weight"])

    _, record = sknet.load(run)
    assert record.classes == tuple(sorted(CLASSES))
    src_model, _ = sknet.load(source)
    prov = record.provenance
    assert prov["init"] == str(source) and prov["init_model"] == "sknet_tiny"
    assert prov["init_sha256"] == weights_digest(src_model)
    assert prov["init_classifier"] == "new" and prov["trained_in"] == str(run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["init"]["init_sha256"] == prov["init_sha256"]
    assert "init       " in (run / "summary.txt").read_text()
    _, ck_record = sknet.load(run / "checkpoints" / "last.pt")
    assert ck_record.provenance["init"] == str(source)
    # a resume takes the provenance from the checkpoint (it does not read --init again)
    summary = train(cfg, run, resume=True)
    assert summary["resumed"] and summary["init"]["init"] == str(source)


def test_bad_init_is_one_clear_error(source: Path, tmp_path: Path, capsys) -> None:
    other = sknet.create_model("resnext_tiny", num_classes=10)
    path = save_weights(other, tmp_path / "resnext.safetensors")
    folder = _shapes_folder(tmp_path / "d", n_train=2, n_val=1)
    cases = [
        # another architecture for the model the config names: the tensor is named
        (
            ["--init", str(path), "--model", "sknet_tiny"],
            "does not fit sknet_tiny: missing tensor 'stages.",
        ),
        (["--init", str(tmp_path / "missing")], "no run directory, checkpoint or weights file"),
        (["--init", str(source), "--freeze-stages", "4"], "freeze_stages=4, but sknet_tiny has 3"),
        (["--preset", "finetune"], "model is empty: name a model, or give init weights"),
        # the preset freezes stage 1; from random weights that would keep noise fixed
        (
            ["--preset", "finetune", "--model", "sknet_tiny"],
            "freeze_stages=1 needs init weights (--init SOURCE); to train from scratch",
        ),
    ]
    for extra, expected in cases:
        out = tmp_path / "run"
        assert main(["train", *extra, "--data-dir", str(folder), *ARGS, "--out", str(out)]) == 1
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, err
        assert err.startswith("sknet train: error:")
        assert not out.exists(), "a failed start leaves no run directory"
    # the same from Python: a FileFormatError (an SKNetError) naming the init source
    cfg = load_preset("finetune", init=str(path), model="sknet_tiny", data_dir=str(folder))
    with pytest.raises(SKNetError, match=r"--init .*resnext\.safetensors \(resnext_tiny\)"):
        train(cfg, tmp_path / "py")


def test_init_state_keeps_the_classifier_only_for_the_same_classes(source: Path) -> None:
    cfg = resolve_init(load_preset("finetune", init=str(source)))
    src_model, _ = sknet.load(source)
    model = sknet.create_model(cfg.model, num_classes=10, **cfg.model_overrides)
    state, prov = init_state(cfg, model, tuple(SHAPE_CLASSES))
    assert prov["init_classifier"] == "kept"
    assert torch.equal(state["head.fc.weight"], src_model.state_dict()["head.fc.weight"])
    renamed = tuple(f"x{c}" for c in SHAPE_CLASSES)
    state, prov = init_state(cfg, model, renamed)
    assert prov["init_classifier"] == "new"
    assert torch.equal(state["head.fc.weight"], model.state_dict()["head.fc.weight"])
    assert classifier_keys(model) == {"head.fc.weight", "head.fc.bias"}
    backbone = [k for k in state if k not in classifier_keys(model)]
    assert all(torch.equal(state[k], src_model.state_dict()[k]) for k in backbone)


def test_param_groups_official_weight_decay_and_backbone_lr() -> None:
    model = sknet.create_model("sknet_tiny", num_classes=10)
    names = {id(p): n for n, p in model.named_parameters()}
    # default: one group of every parameter in model order (the layout of old checkpoints)
    plain = param_groups(model, load_preset("demo"))
    assert [id(p) for p in plain] == [id(p) for p in model.parameters()]

    cfg = load_preset("imagenet", backbone_lr_scale=0.1)
    assert cfg.wd_exclude_bn_bias
    groups = param_groups(model, cfg)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    no_decay = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    decay = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    bn = {
        f"{m}.{n}"
        for m, mod in model.named_modules()
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)
        for n, _ in mod.named_parameters(recurse=False)
    }
    biases = {n for n, _ in model.named_parameters() if n.endswith(".bias")}
    # the official release: no decay on every BN (the SK attention's included) and the biases
    assert no_decay == bn | biases and any(".attn.bn." in n for n in no_decay)
    assert "head.fc.bias" in no_decay and "head.fc.weight" in decay
    assert all(n.endswith(".weight") and n not in bn for n in decay)
    scale = {names[id(p)]: g["lr_scale"] for g in groups for p in g["params"]}
    assert scale["head.fc.weight"] == scale["head.fc.bias"] == 1.0
    assert {v for k, v in scale.items() if not k.startswith("head.")} == {0.1}


def test_paper_presets_exclude_bn_and_biases_from_weight_decay() -> None:
    for name in ("imagenet", "imagenet-light", "cifar", "finetune"):
        assert load_preset(name).wd_exclude_bn_bias, name
    assert not load_preset("demo").wd_exclude_bn_bias


def test_show_config_resolves_init(source: Path, capsys) -> None:
    assert main(["train", "--init", str(source), "--show-config"]) == 0
    text = capsys.readouterr().out
    assert 'model = "sknet_tiny"' in text and "image_size = 24" in text
    assert 'preset = "finetune"' in text and "mean = [0.5, 0.5, 0.5]" in text

"""Training recipes: cores-aware engine defaults and the modern ingredients (RandAugment /
TrivialAugment, MixUp / CutMix, EMA of the weights, gradient clipping), each on a tiny run."""

from __future__ import annotations

import pytest
import torch

from sknet.data.transforms import train_transform
from sknet.errors import ConfigError
from sknet.train import load_preset, train
from sknet.train import trainer as trainer_mod
from sknet.train.config import list_presets, resolve_engine

from .conftest import tiny_config

PAPER_PRESETS = ("imagenet", "imagenet-light", "cifar")


# ------------------------------------------------------------------ threads / workers


@pytest.mark.parametrize(
    ("threads", "workers", "data", "cores", "expected"),
    [
        (0, -1, "imagefolder", 2, (1, 1)),
        (0, -1, "synthetic", 2, (2, 0)),
        (0, -1, "imagefolder", 1, (1, 0)),
        (0, -1, "imagefolder", 16, (1, 8)),
        (0, -1, "imagefolder", 32, (3, 8)),
        (0, 4, "imagefolder", 2, (1, 4)),
        (3, -1, "imagefolder", 2, (3, 1)),
        (0, 0, "cifar10", 8, (8, 0)),
    ],
)
def test_resolve_engine(threads, workers, data, cores, expected):
    assert resolve_engine(threads, workers, data, cores) == expected


@pytest.mark.parametrize("name", ["demo", "finetune", "cifar", "imagenet", "imagenet-light"])
def test_presets_do_not_oversubscribe_two_cores(name):
    cfg = load_preset(name)
    threads, workers = cfg.resolved_engine(cores=2)
    assert threads >= 1 and workers >= 0
    assert threads * (1 + workers) <= 2, (name, threads, workers)


def test_every_preset_is_listed():
    assert set(PAPER_PRESETS) | {"demo", "finetune"} <= set(list_presets())


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_leave_the_ingredients_off(name):
    cfg = load_preset(name)
    assert cfg.auto_augment == "none"
    assert cfg.mixup_alpha == cfg.cutmix_alpha == cfg.ema_decay == cfg.grad_clip_norm == 0
    assert "drop_path_rate" not in cfg.model_overrides


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("auto_augment", "autoaugment"),
        ("mixup_alpha", -0.1),
        ("cutmix_alpha", float("nan")),
        ("ema_decay", 1.0),
        ("grad_clip_norm", -1.0),
        ("workers", -2),
    ],
)
def test_ingredient_values_are_checked(key, value):
    with pytest.raises(ConfigError, match=key):
        tiny_config(**{key: value})


def test_ingredient_types_are_checked():
    with pytest.raises(ConfigError):
        tiny_config(ema_decay="0.9")
    with pytest.raises(ConfigError):
        tiny_config(auto_augment=1)


# ------------------------------------------------------------------ augmentation policies


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_auto_augment_changes_synthetic_images(policy):
    torch.manual_seed(0)
    x = torch.rand(3, 32, 32)
    plain = train_transform("synthetic")
    aug = train_transform("synthetic", auto_augment=policy)
    changed = 0
    for _ in range(10):
        torch.manual_seed(_)
        a = plain(x)
        torch.manual_seed(_)
        b = aug(x)
        assert b.shape == a.shape and b.dtype == torch.float32
        changed += int(not torch.allclose(a, b, atol=1e-2))
    assert changed >= 3


def test_auto_augment_on_pil_images():
    from PIL import Image

    img = Image.new("RGB", (40, 40), (120, 30, 200))
    out = train_transform("imagenet", 32, auto_augment="trivialaugment")(img)
    assert out.shape == (3, 32, 32)


# ------------------------------------------------------------------ tiny runs


class _Spy:
    """Keeps the last :class:`_Trainer` built, to look at its parts after a run."""

    def __init__(self, monkeypatch):
        self.trainer = None
        orig = trainer_mod._Trainer.__init__
        spy = self

        def init(obj, *a, **k):
            orig(obj, *a, **k)
            spy.trainer = obj

        monkeypatch.setattr(trainer_mod._Trainer, "__init__", init)


def test_mixup_and_cutmix_give_soft_targets(tmp_path, monkeypatch):
    seen = []
    orig = torch.nn.CrossEntropyLoss.forward

    def forward(self, logits, target):
        seen.append(target.detach().clone())
        return orig(self, logits, target)

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", forward)
    out = train(tiny_config(epochs=1, mixup_alpha=0.4, cutmix_alpha=1.0), tmp_path / "r")
    assert out["epochs_done"] == 1 and seen
    for t in seen:
        assert t.dim() == 2 and torch.allclose(t.sum(1), torch.ones(len(t)))
    # mixed: some rows hold two classes
    assert any(bool(((t > 0) & (t < 1)).any()) for t in seen)


def test_grad_clip_bounds_the_norm(tmp_path, monkeypatch):
    spy = _Spy(monkeypatch)
    norms = []
    orig = torch.optim.SGD.step

    def step(self, *a, **k):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return orig(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    train(tiny_config(epochs=1, grad_clip_norm=0.05, lr=0.5), tmp_path / "r")
    assert norms and max(norms) <= 0.05 * 1.001
    assert spy.trainer.last_grad_norm is not None and spy.trainer.last_grad_norm > 0.05


def test_ema_weights_differ_from_the_raw_ones(tmp_path, monkeypatch):
    spy = _Spy(monkeypatch)
    out = train(tiny_config(epochs=1, ema_decay=0.9), tmp_path / "r")
    t = spy.trainer
    assert t.ema is not None
    raw = dict(t.model.state_dict())
    ema = dict(t.ema.module.state_dict())
    assert any(not torch.equal(raw[k], ema[k]) for k in raw if raw[k].is_floating_point())
    ckpt = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["ema"] is not None
    # the saved model is the EMA
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "r" / "model.safetensors"))
    name = next(k for k in saved if k.endswith("weight") and saved[k].dim() == 4)
    assert torch.equal(saved[name], ema[name].cpu().contiguous())
    assert out["top1_err"] is not None


def test_resume_with_ema_is_exact(tmp_path, monkeypatch):
    cfg = tiny_config(epochs=2, ema_decay=0.8, mixup_alpha=0.2, grad_clip_norm=1.0)
    full = train(cfg, tmp_path / "full")

    class Stop(Exception):
        pass

    orig_end = trainer_mod._Trainer.end_epoch

    def end_epoch(self, *a, **k):
        orig_end(self, *a, **k)
        if self.state.epoch == 1:
            raise Stop

    part = tmp_path / "part"
    with monkeypatch.context() as m:
        m.setattr(trainer_mod._Trainer, "end_epoch", end_epoch)
        with pytest.raises(Stop):
            train(cfg, part)
    assert not (part / "model.safetensors").exists()
    resumed = train(cfg, part, resume=True)
    assert resumed["top1_err"] == full["top1_err"]
    assert resumed["val_loss"] == full["val_loss"]
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(part / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

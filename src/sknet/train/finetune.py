"""Fine-tuning: start a run from trained weights, freeze early stages, and parameter groups.

``init`` (``sknet train --init SOURCE``) names anything :func:`sknet.load` accepts: a run
directory, a ``.safetensors`` file, a checkpoint or a registry ``name.tag``. The run's model is
built for the data's classes and every tensor of the init weights must fit it exactly, except
the classifier: it is kept only when the data's class names are the weights' own (same names,
same order), otherwise the model's freshly initialised classifier is used (the effect of
``reset_classifier``). A tensor that does not fit is a one-line error naming it.

With ``model = ""`` (the ``finetune`` preset) the architecture is the init weights' own; with
``image_size = 0`` and empty ``mean``/``std`` the init weights' input size and normalisation are
used, as the features were learnt with them. :func:`resolve_init` writes these values into the
config, so that ``config.toml`` says exactly what ran and a resume does not read ``init`` again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sknet._json import jsonable
from sknet.errors import ConfigError
from sknet.hub.load import load
from sknet.hub.read import check_state_fits
from sknet.models import get_entry
from sknet.train.checkpoint import weights_digest
from sknet.train.config import TrainConfig

__all__ = ["classifier_keys", "init_state", "param_groups", "resolve_init", "set_freeze"]

log = logging.getLogger("sknet.train")


def _load_source(source: str) -> tuple[nn.Module, Any]:
    """``sknet.load(source)`` without touching the global RNGs (building a model draws from
    them; a run's own seeding must not depend on whether it was initialised from weights)."""
    with torch.random.fork_rng(devices=[]):
        return load(source)


def _arch_overrides(name: str, arch: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``arch`` that differ from the registry defaults of ``name``."""
    import dataclasses

    default = get_entry(name).config
    base = {f.name: jsonable(getattr(default, f.name)) for f in dataclasses.fields(default)}
    return {k: v for k, v in arch.items() if k in base and base[k] != v and v is not None}


def resolve_init(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with what ``init`` determines filled in: ``model`` (when empty, with the
    overrides that rebuild the weights' architecture), ``image_size`` (when 0) and
    ``mean``/``std`` (when empty). Without ``init``, ``model`` must be set and nothing may
    be frozen (random weights have nothing to keep)."""
    if not cfg.init:
        if not cfg.model:
            raise ConfigError(
                "model is empty: name a model, or give init weights (--init SOURCE) whose "
                "architecture the run then uses"
            )
        if cfg.freeze_stages != -1:
            raise ConfigError(
                f"freeze_stages={cfg.freeze_stages} needs init weights (--init SOURCE); to train "
                "from scratch (e.g. with the finetune preset), pass --freeze-stages -1"
            )
        return cfg
    if cfg.model and cfg.image_size and cfg.mean and cfg.std:
        return cfg  # already resolved (e.g. the config.toml of a run being resumed)
    _, record = _load_source(cfg.init)
    if record.preprocess.channel_order != "RGB":
        raise ConfigError(
            f"--init {cfg.init}: these weights expect {record.preprocess.channel_order} input "
            "(Caffe); fine-tuning feeds RGB images, so start from RGB weights (e.g. timm's)"
        )
    changes: dict[str, Any] = {}
    if not cfg.model:
        changes["model"] = record.name
        changes["model_overrides"] = {
            **_arch_overrides(record.name, record.arch),
            **cfg.model_overrides,
        }
    if not cfg.image_size:
        changes["image_size"] = int(record.image_size)
    if not cfg.mean and not cfg.std:
        changes["mean"] = list(record.preprocess.mean)
        changes["std"] = list(record.preprocess.std)
    return cfg.replace(**changes)


def classifier_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the model's classifier (``get_classifier()``)."""
    head = model.get_classifier()  # type: ignore[operator]
    for path, module in model.named_modules():
        if module is head:
            return {f"{path}.{k}" if path else k for k in head.state_dict()}
    return set()  # pragma: no cover - the classifier is always a submodule


def init_state(
    cfg: TrainConfig, model: nn.Module, classes: tuple[str, ...] | None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict to start ``model`` from (``cfg.init``'s tensors, the classifier kept or
    the model's own fresh one) and the provenance to record.

    Raises :class:`~sknet.errors.FileFormatError` naming the first tensor that does not fit.
    """
    source, record = _load_source(cfg.init)
    state = dict(source.state_dict())
    keep_head = (
        record.classes is not None
        and classes is not None
        and tuple(record.classes) == tuple(classes)
        and record.num_classes == model.num_classes
    )
    if not keep_head:
        for k in classifier_keys(source):
            state.pop(k, None)
        own = model.state_dict()
        state.update({k: own[k] for k in classifier_keys(model)})
    check_state_fits(model, state, f"--init {cfg.init} ({record.name})")
    log.info(
        "init %s: %s weights, %s classifier%s",
        cfg.init,
        record.name,
        "their" if keep_head else f"a new {model.num_classes}-class",
        ""
        if keep_head
        else f" (they have {record.num_classes} classes"
        + ("" if record.classes is None else ", other names")
        + ")",
    )
    provenance = {
        "init": cfg.init,
        "init_model": record.name,
        "init_source": _absolute(record.source),
        "init_source_kind": record.source_kind,
        "init_sha256": weights_digest(source),
        "init_classifier": "kept" if keep_head else "new",
        "init_provenance": jsonable(record.provenance),
    }
    return state, provenance


def _absolute(source: str) -> str:
    """A path source as an absolute path (a registry name as it is)."""
    path = Path(source)
    return str(path.resolve()) if path.exists() else source


def set_freeze(model: nn.Module, n: int) -> None:
    """Freeze the stem and the first ``n`` stages (``n = 0``: the stem only; -1: nothing)."""
    if n < 0:
        return
    total = len(model.stages)  # type: ignore[arg-type]
    if n > total:
        name = getattr(model, "model_name", type(model).__name__)
        raise ConfigError(
            f"freeze_stages={n}, but {name} has {total} stages (-1: nothing, 0: the stem, "
            f"1..{total}: the stem and that many stages)"
        )
    model.set_frozen_stages(n)  # type: ignore[operator]


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[Any]:
    """The optimizer's parameter groups.

    Without fine-tuning options this is the model's parameter list in order, one group, the
    layout of every earlier checkpoint (so that their optimizer states load). Otherwise the
    trainable parameters are grouped by learning-rate factor (``backbone_lr_scale`` outside
    the classifier, 1 inside; the factor is stored as ``lr_scale`` in the group) and by weight
    decay (0 for 1-D parameters with ``wd_exclude_bn_bias``: BN scales and shifts, biases).
    """
    if cfg.backbone_lr_scale == 1.0 and not cfg.wd_exclude_bn_bias and cfg.freeze_stages < 0:
        return list(model.parameters())
    head = {id(p) for p in model.get_classifier().parameters()}  # type: ignore[operator]
    groups: dict[tuple[float, bool], dict[str, Any]] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue  # frozen stages
        scale = 1.0 if id(p) in head else cfg.backbone_lr_scale
        decay = not (cfg.wd_exclude_bn_bias and p.ndim <= 1)
        group = groups.setdefault(
            (scale, decay),
            {"params": [], "lr_scale": scale, "weight_decay": cfg.weight_decay if decay else 0.0},
        )
        group["params"].append(p)
    return list(groups.values())

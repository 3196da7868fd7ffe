"""sknet model zoo: every model family of the SKNet paper, declared as a table of configs.

Paper figures are ImageNet (1000 classes, 224x224) unless marked CIFAR (100 classes, 32x32).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sknet.layers.sk import BranchSpec
from sknet.models._base import (
    ClassifierHead,
    SKNetModel,
    attention_of,
    capture_attention,
    sk_units,
)
from sknet.models._features import FeatureInfo, FeatureNet
from sknet.models._registry import (
    ModelEntry,
    PaperFigures,
    aliases_of,
    create_model,
    get_entry,
    list_aliases,
    list_models,
    register,
    register_alias,
    resolve_alias,
    set_weights_loader,
)
from sknet.models._timm import PoolHead, TimmModel
from sknet.models.resnext import ResNeXt, ResNeXtConfig
from sknet.models.shufflenetv2 import ShuffleNetV2, ShuffleNetV2Config
from sknet.models.skresnet import SKResNet, SKResNetConfig

__all__ = [
    "BranchSpec",
    "ClassifierHead",
    "FeatureInfo",
    "FeatureNet",
    "ModelEntry",
    "PaperFigures",
    "PoolHead",
    "ResNeXt",
    "ResNeXtConfig",
    "SKNetModel",
    "SKResNet",
    "SKResNetConfig",
    "ShuffleNetV2",
    "ShuffleNetV2Config",
    "TimmModel",
    "aliases_of",
    "attention_of",
    "capture_attention",
    "create_model",
    "get_entry",
    "list_aliases",
    "list_models",
    "register",
    "register_alias",
    "resolve_alias",
    "set_weights_loader",
    "sk_units",
]

_IMAGENET = ResNeXtConfig()  # ResNeXt-50 32x4d
_CIFAR = ResNeXtConfig(
    layers=(3, 3, 3),
    stage_out=(256, 512, 1024),
    stem="cifar",
    default_input_size=32,
)
# Demo-sized models for the built-in data (48x48) and CPU ablations; not from the paper.
_TINY = ResNeXtConfig(
    layers=(1, 1, 1),
    cardinality=8,
    base_width=4,
    stage_out=(64, 128, 256),
    stem="small",
    stem_width=24,
    default_input_size=48,
    sk_min_attn_dim=16,
)
_SHUFFLE_05 = ShuffleNetV2Config(stage_out=(24, 48, 96, 192, 1024))
_SHUFFLE_10 = ShuffleNetV2Config(stage_out=(24, 116, 232, 464, 1024))
_LUCID: dict[str, Any] = {
    "block": "lucid_sk",
    "sk_kernel_mode": "full",
    "sk_attention": "shared",
    "sk_min_attn_dim": 1,
}


def _p(
    params: float | None, macs: float | None, err: float | None, src: str, ok: bool = True
) -> PaperFigures:
    return PaperFigures(params=params, macs=macs, top1_err=err, source=src, confirmed=ok)


_T2 = "Table 2"
_ROWS: list[tuple[str, str, object, str, PaperFigures | None, int]] = [
    # name, family, config, description, paper figures, paper num_classes
    (
        "resnext26_32x4d",
        "resnext",
        replace(_IMAGENET, layers=(2, 2, 2, 2)),
        "ResNeXt-26 (32x4d), the SKNet-26 baseline",
        None,
        1000,
    ),
    (
        "resnext50_32x4d",
        "resnext",
        _IMAGENET,
        "ResNeXt-50 (32x4d)",
        _p(25.0e6, 4.24e9, 22.23, _T2),
        1000,
    ),
    (
        "resnext101_32x4d",
        "resnext",
        replace(_IMAGENET, layers=(3, 4, 23, 3)),
        "ResNeXt-101 (32x4d)",
        _p(44.3e6, 7.99e9, 21.11, _T2),
        1000,
    ),
    (
        "senet50",
        "resnext",
        replace(_IMAGENET, block="se"),
        "SENet-50 (SE-ResNeXt-50 32x4d)",
        _p(27.7e6, 4.25e9, 21.12, _T2),
        1000,
    ),
    (
        "senet101",
        "resnext",
        replace(_IMAGENET, layers=(3, 4, 23, 3), block="se"),
        "SENet-101 (SE-ResNeXt-101 32x4d)",
        _p(49.2e6, 8.00e9, 20.58, _T2),
        1000,
    ),
    (
        "sknet26",
        "resnext",
        replace(_IMAGENET, layers=(2, 2, 2, 2), block="sk"),
        "SKNet-26, SK[2,32,16]",
        None,
        1000,
    ),
    (
        "sknet50",
        "resnext",
        replace(_IMAGENET, block="sk"),
        "SKNet-50, SK[2,32,16]",
        _p(27.5e6, 4.47e9, 20.79, _T2),
        1000,
    ),
    (
        "sknet101",
        "resnext",
        replace(_IMAGENET, layers=(3, 4, 23, 3), block="sk", sk_attn_dims=(None, 16, None, None)),
        "SKNet-101, SK[2,32,16]; d = 16 in conv3_x as in the official release",
        _p(48.9e6, 8.46e9, 20.19, _T2),
        1000,
    ),
    # Table 3: capacity-matched ResNeXt-50 variants (figures recalled, not confirmed).
    (
        "resnext50_wide",
        "resnext",
        replace(_IMAGENET, stage_out=(288, 576, 1152, 2304)),
        "ResNeXt-50 32x4d with stage widths x1.125 (Table 3 'wider')",
        _p(28.1e6, 4.74e9, 22.13, "Table 3", ok=False),
        1000,
    ),
    (
        "resnext56_32x4d",
        "resnext",
        replace(_IMAGENET, layers=(3, 4, 8, 3)),
        "ResNeXt-56 (32x4d): two more conv4_x units (Table 3 'deeper')",
        _p(27.3e6, 4.67e9, 22.04, "Table 3", ok=False),
        1000,
    ),
    (
        "resnext50_36x4d",
        "resnext",
        replace(_IMAGENET, cardinality=36),
        "ResNeXt-50 (36x4d) (Table 3 'more cardinality')",
        _p(27.6e6, 4.70e9, 22.00, "Table 3", ok=False),
        1000,
    ),
    # Table 5: CIFAR (32x32). Figures are CIFAR-100 error and params with a 100-way head.
    (
        "resnext29_16x32d",
        "resnext",
        replace(_CIFAR, cardinality=16, base_width=32),
        "ResNeXt-29 (16x32d), CIFAR",
        _p(25.2e6, None, 18.56, "Table 5", ok=False),
        100,
    ),
    (
        "resnext29_8x64d",
        "resnext",
        replace(_CIFAR, cardinality=8, base_width=64),
        "ResNeXt-29 (8x64d), CIFAR",
        _p(34.4e6, None, 17.77, "Table 5"),
        100,
    ),
    (
        "resnext29_16x64d",
        "resnext",
        replace(_CIFAR, cardinality=16, base_width=64),
        "ResNeXt-29 (16x64d), CIFAR",
        _p(68.1e6, None, 17.31, "Table 5"),
        100,
    ),
    (
        "senet29",
        "resnext",
        replace(_CIFAR, cardinality=8, base_width=64, block="se"),
        "SENet-29: SE on ResNeXt-29 (8x64d), CIFAR",
        _p(35.0e6, None, 17.78, "Table 5"),
        100,
    ),
    (
        "sknet29",
        "resnext",
        replace(_CIFAR, cardinality=16, base_width=32, block="sk", sk_groups=32),
        "SKNet-29: SK on ResNeXt-29 (16x32d), 32 groups per branch, CIFAR",
        _p(27.7e6, None, 17.33, "Table 5"),
        100,
    ),
    # Table 4: ShuffleNetV2 (MFLOPs = MMACs).
    (
        "shufflenetv2_x0_5",
        "shufflenetv2",
        _SHUFFLE_05,
        "ShuffleNetV2 0.5x",
        _p(1.37e6, 40.36e6, 38.41, "Table 4", ok=False),
        1000,
    ),
    (
        "shufflenetv2_x1_0",
        "shufflenetv2",
        _SHUFFLE_10,
        "ShuffleNetV2 1.0x",
        _p(2.28e6, 140.35e6, 30.57, "Table 4", ok=False),
        1000,
    ),
    (
        "se_shufflenetv2_x0_5",
        "shufflenetv2",
        replace(_SHUFFLE_05, unit="se"),
        "ShuffleNetV2 0.5x + SE",
        _p(1.53e6, 40.85e6, 36.34, "Table 4", ok=False),
        1000,
    ),
    (
        "se_shufflenetv2_x1_0",
        "shufflenetv2",
        replace(_SHUFFLE_10, unit="se"),
        "ShuffleNetV2 1.0x + SE",
        PaperFigures(2.45e6, 141.73e6, 29.47, "Table 4", confirmed=True, params_confirmed=False),
        1000,
    ),
    (
        "sk_shufflenetv2_x0_5",
        "shufflenetv2",
        replace(_SHUFFLE_05, unit="sk"),
        "ShuffleNetV2 0.5x + SK",
        _p(1.48e6, 42.58e6, 35.35, "Table 4", ok=False),
        1000,
    ),
    (
        "sk_shufflenetv2_x1_0",
        "shufflenetv2",
        replace(_SHUFFLE_10, unit="sk"),
        "ShuffleNetV2 1.0x + SK",
        PaperFigures(2.63e6, 145.66e6, 28.36, "Table 4", confirmed=True, params_confirmed=False),
        1000,
    ),
    # The Lucid library's variants, with Lucid's semantics (its documented parameter counts).
    (
        "sk_resnet_18",
        "resnext",
        replace(
            _IMAGENET,
            layers=(2, 2, 2, 2),
            cardinality=1,
            base_width=64,
            stage_out=(64, 128, 256, 512),
            **_LUCID,
        ),
        "Lucid's SK-ResNet-18 (1x1-SK-1x1 units, expansion 1)",
        None,
        1000,
    ),
    (
        "sk_resnet_34",
        "resnext",
        replace(_IMAGENET, cardinality=1, base_width=64, stage_out=(64, 128, 256, 512), **_LUCID),
        "Lucid's SK-ResNet-34 (1x1-SK-1x1 units, expansion 1)",
        None,
        1000,
    ),
    (
        "sk_resnet_50",
        "resnext",
        replace(_IMAGENET, cardinality=1, base_width=64, **_LUCID),
        "Lucid's SK-ResNet-50",
        None,
        1000,
    ),
    (
        "sk_resnext_50_32x4d",
        "resnext",
        replace(_IMAGENET, **_LUCID),
        "Lucid's SK-ResNeXt-50 (32x4d)",
        None,
        1000,
    ),
    # timm's SK-ResNets (basic blocks, split-input SK conv), to load timm's ImageNet weights.
    (
        "skresnet18",
        "skresnet",
        SKResNetConfig(),
        "timm's SK-ResNet-18: basic blocks, split-input SK[2,1] conv, d = make_divisible(C/8, 16)",
        None,
        1000,
    ),
    (
        "skresnet34",
        "skresnet",
        SKResNetConfig(layers=(3, 4, 6, 3)),
        "timm's SK-ResNet-34: basic blocks, split-input SK[2,1] conv, d = make_divisible(C/8, 16)",
        None,
        1000,
    ),
    # Demo-sized models (48x48 built-in data, 10 classes).
    ("resnext_tiny", "resnext", _TINY, "demo-sized ResNeXt (8x4d, 3 stages x 1 unit)", None, 10),
    ("senet_tiny", "resnext", replace(_TINY, block="se"), "demo-sized SENet", None, 10),
    ("sknet_tiny", "resnext", replace(_TINY, block="sk"), "demo-sized SKNet, SK[2,8,16]", None, 10),
]

_BUILDERS = {"resnext": ResNeXt, "shufflenetv2": ShuffleNetV2, "skresnet": SKResNet}

for _name, _family, _cfg, _desc, _paper, _nc in _ROWS:
    register(
        ModelEntry(
            name=_name,
            family=_family,
            config=_cfg,
            builder=_BUILDERS[_family],
            description=_desc,
            paper=_paper,
            paper_num_classes=_nc,
        )
    )

# timm's names of the same architectures (timm's weights for them load into ours, see
# sknet.hub.table): create_model, get_entry and the weights tags accept them.
# resnext50_32x4d, resnext101_32x4d, skresnet18 and skresnet34 are timm's names already.
_TIMM_ALIASES = {
    "skresnext50_32x4d": "sknet50",
    "seresnext50_32x4d": "senet50",
    "seresnext101_32x4d": "senet101",
}
for _alias, _target in _TIMM_ALIASES.items():
    register_alias(_alias, _target)

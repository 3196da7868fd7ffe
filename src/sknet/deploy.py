"""Inference-ready models: ``sknet.deploy(model)``.

>>> fast = sknet.deploy(sknet.create_model("sknet50"))
>>> logits = fast(images)  # same outputs as model.eval()(images), to float rounding

``deploy`` works on a copy (the model passed in is left untouched) and returns it in eval mode
with gradients off. On the copy:

* every BatchNorm that follows a convolution is folded into it (conv weight and bias), so there
  is no BN pass left; ReLUs after them run fused with the convolution;
* SK units become :class:`~sknet.layers.fused.FusedSKConv`: fused branches, the attention as two
  small matrix products, Select in one pass. Attention capture keeps working
  (:func:`sknet.capture_attention` on the deployed model);
* ResNeXt/SENet/SKNet bottlenecks become :class:`~sknet.layers.fused.FusedBottleneck`, where the
  residual addition and the final ReLU run inside the last convolution (oneDNN on CPU);
* optionally the activations are kept in ``channels_last`` (the first convolution converts the
  input), and the weights are cast to ``dtype``.

The deployed model is for inference only: its BNs are gone, so it cannot be trained or
fine-tuned (train the original, deploy again). Its ``state_dict`` differs from the original's.
``torch.compile``, ``torch.export`` and the ONNX exporter see plain convolutions (see
:mod:`sknet.layers.fused`).
"""

from __future__ import annotations

import copy
import types
from typing import Literal, cast

import torch
from torch import nn

from sknet.errors import ConfigError, InputTypeError
from sknet.layers.fused import FusedBottleneck, FusedConv2d, FusedSKConv
from sknet.layers.norm import FrozenBatchNorm2d
from sknet.layers.sk import SKConv
from sknet.models.resnext import ResNeXtBlock

__all__ = ["deploy", "is_deployed", "preferred_memory_format"]

MemoryFormat = Literal["auto", "channels_last", "contiguous"]


def preferred_memory_format(device: torch.device | str, dtype: torch.dtype | None = None) -> str:
    """The activation layout :func:`deploy` picks with ``memory_format="auto"``.

    CPU (oneDNN): channels_last, by measurement (``benchmarks/throughput.py``, 2-core AMD EPYC
    with AVX-512, batch 16 at 224): deployed SKNet-50 runs 1.34x faster than in NCHW in fp32
    (16.0 vs 12.0 images/s; ResNeXt-50 1.39x), the grouped and dilated 3x3 convolutions gaining
    most; bf16 was measured in channels_last only. CUDA: channels_last, the layout cuDNN's
    tensor-core kernels use under AMP (not measured here: no GPU was available).
    """
    return "channels_last"


def is_deployed(model: nn.Module) -> bool:
    """Whether ``model`` came out of :func:`deploy`."""
    return bool(getattr(model, "sknet_deployed", False))


def _is_conv_bn(mods: list[nn.Module], i: int) -> bool:
    return (
        i + 1 < len(mods)
        and isinstance(mods[i], nn.Conv2d)
        and isinstance(mods[i + 1], nn.BatchNorm2d | FrozenBatchNorm2d)
        and mods[i + 1].num_features == mods[i].out_channels
        and mods[i].padding_mode == "zeros"
        and not isinstance(mods[i].padding, str)
    )


def _fuse_sequential(seq: nn.Sequential) -> nn.Module:
    """Fold conv -> BN (-> ReLU) runs inside a Sequential; a Sequential that is exactly such a
    run becomes the fused convolution itself."""
    names = list(seq._modules.keys())
    mods = [seq._modules[n] for n in names]
    i = 0
    while i < len(mods):
        if _is_conv_bn(mods, i):
            nxt = mods[i + 2] if i + 2 < len(mods) else None
            relu = isinstance(nxt, nn.ReLU)
            conv = cast(nn.Conv2d, mods[i])  # as _is_conv_bn checked
            fused = FusedConv2d.from_conv_bn(conv, mods[i + 1], relu=relu)
            span = 3 if isinstance(nxt, nn.ReLU | nn.Identity) else 2
            if len(mods) == span:
                return fused
            seq._modules[names[i]] = fused
            for j in range(i + 1, i + span):
                seq._modules[names[j]] = nn.Identity()
            i += span
        else:
            seq._modules[names[i]] = _fuse(mods[i])
            i += 1
    return seq


def _fuse_block(block: nn.Module) -> nn.Module:
    conv1, conv2, conv3, se, down = (
        _fuse(cast(nn.Module, getattr(block, name)))
        for name in ("conv1", "conv2", "conv3", "se", "downsample")
    )
    if not isinstance(conv3, FusedConv2d) or conv3.relu:
        for name, m in zip(
            ("conv1", "conv2", "conv3", "se", "downsample"), (conv1, conv2, conv3, se, down)
        ):
            setattr(block, name, m)
        return block
    return FusedBottleneck(conv1, conv2, conv3, se, down)


def _fuse(mod: nn.Module) -> nn.Module:
    if isinstance(mod, FusedSKConv | FusedConv2d | FusedBottleneck):
        return mod
    if isinstance(mod, SKConv):
        return FusedSKConv.from_skconv(mod)
    if isinstance(mod, ResNeXtBlock):
        return _fuse_block(mod)
    if isinstance(mod, nn.Sequential):
        return _fuse_sequential(mod)
    _fuse_children(mod)
    return mod


def _fuse_children(mod: nn.Module) -> None:
    for name, child in list(mod._modules.items()):
        if child is not None:
            mod._modules[name] = _fuse(child)


def deploy(
    model: nn.Module,
    *,
    memory_format: MemoryFormat = "auto",
    dtype: torch.dtype | None = None,
    inplace: bool = False,
) -> nn.Module:
    """An inference-ready copy of ``model`` (BN folded, fused kernels); see the module docs.

    Args:
        model: an sknet model (any ``nn.Module`` built from ``Conv2d``/``BatchNorm2d``/
            ``SKConv`` works; parts that cannot be fused are kept as they are).
        memory_format: activation layout, ``"auto"`` (per device, see
            :func:`preferred_memory_format`), ``"channels_last"`` or ``"contiguous"``.
        dtype: cast the deployed weights (e.g. ``torch.bfloat16``; then feed inputs of that
            dtype). Folding is done in float64 first. ``None`` keeps the model's dtype.
        inplace: fuse ``model`` itself instead of a copy.

    Returns:
        The deployed model, in eval mode, with ``requires_grad`` off.
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"deploy expects an nn.Module, got {type(model).__name__}")
    if memory_format not in ("auto", "channels_last", "contiguous"):
        raise ConfigError(
            f"memory_format must be 'auto', 'channels_last' or 'contiguous', got {memory_format!r}"
        )
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InputTypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    out = model if inplace else copy.deepcopy(model)
    out.eval()
    if isinstance(out, nn.Sequential):
        out = _fuse_sequential(out)
    else:
        _fuse_children(out)
    out.requires_grad_(False)
    try:
        ref = next(out.parameters())
        device = ref.device
    except StopIteration:
        device = torch.device("cpu")
    if dtype is not None:
        out.to(dtype)
    fmt = preferred_memory_format(device, dtype) if memory_format == "auto" else memory_format
    mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
    out.to(memory_format=mf)
    first = next((m for m in out.modules() if isinstance(m, FusedConv2d)), None)
    if first is not None:
        first.memory_format = mf
    out.sknet_deployed = True  # type: ignore[assignment]
    out.sknet_memory_format = fmt  # type: ignore[assignment]
    # An instance attribute shadows nn.Module.train for this object only: train() fails with a
    # clear message, eval() / train(False) keep working.
    out.train = types.MethodType(_inference_only_train, out)  # type: ignore[method-assign]
    return out


def _inference_only_train(self: nn.Module, mode: bool = True) -> nn.Module:
    if mode:
        raise ConfigError(
            "this model came out of sknet.deploy: BatchNorm is folded into the convolutions and "
            "it is inference-only; train or fine-tune the original model and deploy it again"
        )
    return nn.Module.train(self, False)

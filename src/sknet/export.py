"""Export sknet models to ONNX and to ``torch.export`` archives (``.pt2``), batch axis dynamic.

>>> import sknet
>>> from sknet.export import export_model
>>> model, record = sknet.load("sknet_tiny")         # a name (random init), weights or a run
>>> export_model(model, "sknet_tiny.onnx", input_size=record.image_size)  # doctest: +SKIP

Both formats export the model as :func:`sknet.deploy` prepares it (BNs folded; ``fuse=False``
keeps the model as trained) with standard operators only, so ONNX Runtime, ``torch.export``
consumers and AOT compilers see plain convolutions. The input is ``images`` of shape
``(batch, C, H, W)`` with ``batch`` dynamic and ``H, W`` fixed at the export size; the output is
``logits`` ``(batch, num_classes)``. After writing, the file is loaded back and run at two batch
sizes other than the example's, and compared with the PyTorch model (``check=True``); attention
capture is not part of an exported graph.

The model's data config (``model.data_config``, :class:`sknet.DataConfig`) travels with the
file: ONNX ``metadata_props`` hold ``sknet_data_config`` (all of it, JSON) and, one key each,
``classes``, ``mean``, ``std``, ``input_size``, ``resize``, ``interpolation`` and
``channel_order`` (JSON values); a ``.pt2`` archive holds the JSON as the extra file
``sknet_data_config.json``. :func:`read_onnx_data_config` / :func:`read_pt2_data_config` read it
back, so a consumer prepares images as the model expects with nothing passed by hand.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from sknet._files import atomic_save
from sknet.deploy import deploy, is_deployed
from sknet.errors import (
    ConfigError,
    DependencyError,
    FileFormatError,
    InputTypeError,
    MissingFileError,
    OutputError,
    UnsupportedError,
)
from sknet.preprocess import DataConfig

__all__ = [
    "ExportResult",
    "check_onnx",
    "check_pt2",
    "export_model",
    "load_pt2",
    "onnx_metadata",
    "read_onnx_data_config",
    "read_pt2_data_config",
]

DATA_CONFIG_KEY = "sknet_data_config"
PT2_DATA_CONFIG_FILE = "sknet_data_config.json"

ExportFormat = Literal["onnx", "pt2"]
FORMATS: tuple[str, ...] = ("onnx", "pt2")
CHECK_BATCHES: tuple[int, int] = (1, 3)


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and how well it matched PyTorch."""

    path: Path
    format: str
    input_shape: tuple[int, int, int, int]
    fused: bool
    max_abs_diff: dict[int, float] = field(default_factory=dict)  # batch size -> max |diff|

    def describe(self) -> str:
        size = self.path.stat().st_size / 2**20 if self.path.exists() else 0.0
        _, c, h, w = self.input_shape
        s = f"wrote {self.path} ({self.format}, {size:.1f} MiB, input (batch, {c}, {h}, {w})"
        s += ", BN folded)" if self.fused else ")"
        if self.max_abs_diff:
            diffs = ", ".join(f"batch {b}: {d:.2e}" for b, d in self.max_abs_diff.items())
            s += f"; max |exported - torch|: {diffs}"
        return s


def _example(model: nn.Module, batch: int, input_size: int | None) -> torch.Tensor:
    chans = int(getattr(model, "in_chans", 3))
    size = int(input_size or getattr(model, "default_input_size", 224) or 224)
    if size < 1:
        raise ConfigError(f"input size must be positive, got {size}")
    min_size = int(getattr(model, "min_input_size", 1))
    if size < min_size:
        raise ConfigError(
            f"input size {size} is too small for this model: height and width must be at least "
            f"{min_size} (its total stride)"
        )
    ref = next(model.parameters(), None)
    device = ref.device if ref is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, chans, size, size, generator=gen).to(device)


def _prepare(model: nn.Module, fuse: bool) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"expected an nn.Module, got {type(model).__name__}")
    if fuse:
        if not is_deployed(model):
            return deploy(model, memory_format="contiguous")
        return model.eval()
    return model.eval()


def _dynamic_batch() -> tuple[dict[int, Any]]:
    return ({0: torch.export.Dim("batch", min=1, max=4096)},)


def export_model(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    format: ExportFormat | None = None,
    input_size: int | None = None,
    batch_size: int = 2,
    fuse: bool = True,
    opset: int | None = None,
    check: bool = True,
    atol: float = 1e-4,
    data_config: DataConfig | None = None,
) -> ExportResult:
    """Export ``model`` to ``path`` as ONNX or a ``torch.export`` archive (``.pt2``).

    Args:
        model: the model (an sknet model or any image classifier taking ``(N, C, H, W)``).
        path: output file; parent folders are created, the file appears atomically.
        format: ``"onnx"`` or ``"pt2"``; by default taken from the suffix of ``path``.
        input_size: H = W of the exported graph (default: its data config's input size, else
            the model's native size).
        batch_size: batch of the example input used for tracing (the exported batch axis is
            dynamic regardless); at least 2, so the batch size is not specialised to 1.
        fuse: export the :func:`sknet.deploy` form (BN folded).
        opset: ONNX opset (default: the exporter's).
        check: run the exported file at batch sizes 1 and 3 and compare with PyTorch;
            raises :class:`~sknet.errors.UnsupportedError` (a ``RuntimeError``) when the max
            abs difference exceeds ``atol``.
        data_config: what the file records about inputs and classes (default: the model's
            ``data_config``; with an ``input_size`` other than its, the recorded input size
            and resize follow the export size). Nothing is recorded when neither is known.
    """
    path = Path(path)
    fmt = format or path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise ConfigError(
            f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)} "
            "(or give the output file a .onnx / .pt2 suffix)"
        )
    if batch_size < 2:
        raise ConfigError(f"batch_size for tracing must be >= 2, got {batch_size}")
    if path.exists() and path.is_dir():
        raise OutputError(f"output {path} is a directory; give a file name")
    if data_config is None:
        own = getattr(model, "data_config", None)
        data_config = own if isinstance(own, DataConfig) else None
    if data_config is not None and not isinstance(data_config, DataConfig):
        raise InputTypeError(f"data_config must be a sknet.DataConfig, got {type(data_config)}")
    if input_size is None and data_config is not None:
        input_size = data_config.preprocess.input_size  # the size the model's inputs come at
    was_training = model.training
    try:
        net = _prepare(model, fuse)
        x = _example(net, batch_size, input_size)
        data_config = _at_size(data_config, int(x.shape[-1]))
        check_input = getattr(net, "check_input", None)  # sknet models: a clear message
        if callable(check_input):
            check_input(x)
        with torch.no_grad():
            if fmt == "onnx":
                _export_onnx(net, x, path, opset, data_config)
            else:
                _export_pt2(net, x, path, data_config)
        result = ExportResult(path, fmt, tuple(x.shape), fuse)  # type: ignore[arg-type]
        if check:
            reference = model.eval()
            if fmt == "onnx":
                result.max_abs_diff = check_onnx(path, reference, x.shape[1:])
            else:
                result.max_abs_diff = check_pt2(path, reference, x.shape[1:])
            worst = max(result.max_abs_diff.values(), default=0.0)
            if not worst <= atol:
                raise UnsupportedError(  # a RuntimeError (NotImplementedError) as before
                    f"exported {fmt} output differs from PyTorch by {worst:.3g} (> {atol:g})"
                )
        return result
    finally:
        model.train(was_training)


def _at_size(cfg: DataConfig | None, size: int) -> DataConfig | None:
    """``cfg`` for a graph of input side ``size`` (the resize scaled with it)."""
    if cfg is None or cfg.preprocess.input_size == size:
        return cfg
    pre = cfg.preprocess
    resize = None if pre.resize is None else round(pre.resize * size / pre.input_size)
    return replace(cfg, preprocess=replace(pre, input_size=size, resize=resize))


def onnx_metadata(cfg: DataConfig) -> dict[str, str]:
    """The ``metadata_props`` an exported ONNX file carries for ``cfg`` (JSON values)."""
    pre = cfg.preprocess
    return {
        DATA_CONFIG_KEY: cfg.to_json(),
        "classes": json.dumps(list(cfg.classes) if cfg.classes is not None else None),
        "mean": json.dumps(list(pre.mean)),
        "std": json.dumps(list(pre.std)),
        "input_size": json.dumps(pre.input_size),
        "resize": json.dumps(pre.resize),
        "interpolation": json.dumps(pre.interpolation),
        "channel_order": json.dumps(pre.channel_order),
    }


def read_onnx_data_config(path: str | os.PathLike) -> DataConfig | None:
    """The data config recorded in an ONNX file written by :func:`export_model` (None for a
    file without one). Reads the file's metadata only (no weights are checked)."""
    try:
        import onnx
    except ImportError as exc:
        raise DependencyError("reading ONNX metadata needs the 'onnx' package") from exc
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no ONNX file at {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise FileFormatError(f"{path}: not a readable ONNX file ({exc})") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if DATA_CONFIG_KEY not in props:
        return None
    return DataConfig.from_json(props[DATA_CONFIG_KEY], where=path)


def read_pt2_data_config(path: str | os.PathLike) -> DataConfig | None:
    """The data config recorded in a ``.pt2`` archive written by :func:`export_model`."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no exported program at {path}")
    extra = {PT2_DATA_CONFIG_FILE: ""}
    torch.export.load(str(path), extra_files=extra)
    text = extra[PT2_DATA_CONFIG_FILE]
    if not text:
        return None
    if isinstance(text, bytes):
        text = text.decode()
    return DataConfig.from_json(text, where=path)


def _export_onnx(
    net: nn.Module, x: torch.Tensor, path: Path, opset: int | None, cfg: DataConfig | None
) -> None:
    try:
        import onnxscript  # noqa: F401  (the dynamo-based exporter needs it)
    except ImportError as exc:
        raise DependencyError(
            "ONNX export needs the 'onnx' and 'onnxscript' packages: pip install 'sknet[onnx]'"
        ) from exc

    kwargs: dict[str, Any] = {} if opset is None else {"opset_version": opset}

    def write(tmp: str) -> None:
        # the exporter reports its progress on stdout; keep the CLI's output to the result
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(
                net,
                (x,),
                tmp,
                input_names=["images"],
                output_names=["logits"],
                dynamic_shapes=_dynamic_batch(),
                dynamo=True,
                external_data=False,
                verbose=False,
                **kwargs,
            )
        if cfg is not None:
            import onnx

            proto = onnx.load(tmp)
            for key, value in onnx_metadata(cfg).items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = key, value
            onnx.save(proto, tmp)

    atomic_save(write, path)


def _export_pt2(net: nn.Module, x: torch.Tensor, path: Path, cfg: DataConfig | None) -> None:
    program = torch.export.export(net, (x,), dynamic_shapes=_dynamic_batch())
    buf = io.BytesIO()  # torch.export.save wants a .pt2 name; the atomic temp file has none
    extra = {PT2_DATA_CONFIG_FILE: cfg.to_json()} if cfg is not None else None
    torch.export.save(program, buf, extra_files=extra)
    atomic_save(lambda tmp: Path(tmp).write_bytes(buf.getvalue()), path)


def load_pt2(path: str | os.PathLike) -> nn.Module:
    """Load a ``.pt2`` archive written by :func:`export_model` as a callable module."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no exported program at {path}")
    return torch.export.load(str(path)).module()


def _inputs(shape: torch.Size | tuple[int, ...], device: torch.device) -> dict[int, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {b: torch.randn(b, *shape, generator=gen).to(device) for b in CHECK_BATCHES}


def check_onnx(
    path: str | os.PathLike, model: nn.Module, shape: tuple[int, ...]
) -> dict[int, float]:
    """Max abs difference between ONNX Runtime and ``model`` at batch sizes 1 and 3."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise DependencyError(
            "checking the ONNX file needs onnxruntime (pip install 'sknet[onnx]'); "
            "or export with check=False (--no-check)"
        ) from exc
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out: dict[int, float] = {}
    for b, x in _inputs(shape, torch.device("cpu")).items():
        with torch.no_grad():
            ref = model.cpu()(x)
        got = torch.from_numpy(sess.run(None, {name: x.numpy()})[0])
        out[b] = float((got - ref).abs().max())
    return out


def check_pt2(
    path: str | os.PathLike, model: nn.Module, shape: tuple[int, ...]
) -> dict[int, float]:
    """Max abs difference between the reloaded ``.pt2`` program and ``model`` at batch 1 and 3."""
    loaded = load_pt2(path)
    ref_param = next(model.parameters(), None)
    device = ref_param.device if ref_param is not None else torch.device("cpu")
    out: dict[int, float] = {}
    for b, x in _inputs(shape, device).items():
        with torch.no_grad():
            out[b] = float((loaded(x) - model(x)).abs().max())
    return out

"""One loading path: :func:`load` turns any model source into a model and a record of what it is.

Sources:

* a registry name (``"sknet50"``): a randomly initialised model;
* a registry name with a weights tag (``"sknet50.ra_in1k"``): published weights (downloaded once
  into the cache, see :mod:`sknet.hub`);
* a ``.safetensors`` weights file (written by sknet, or converted with ``sknet convert``);
* a training checkpoint (``.pt``) or a run directory (its ``model.safetensors``, else its last
  checkpoint).

The model is rebuilt from the **full architecture config** recorded in the file and its tensors
must fit that network exactly: a file of another architecture is refused with a message naming
the first tensor that does not fit. Nothing is unpickled beyond tensors and plain values
(safetensors, or ``torch.load(weights_only=True)``).

Files come from strangers, so nothing is allocated on their say-so before it is checked (see
:mod:`sknet._limits` for the limits and how to raise them): the metadata is parsed with bounded
size and depth, every recorded number (classes, input channels, architecture fields,
preprocessing sizes) is bounded, the model is first built on the ``meta`` device (no memory) to
count its parameters (``SKNET_MAX_PARAMS``) and to compare its tensor shapes and dtype kinds with
the file's (read from the safetensors header, or from a memory-mapped torch file whose tensor
bytes must not exceed the file's size), and only then are the tensors read, checked to be
floating point where the model's are and finite, and the real model built.
"""

from __future__ import annotations

import logging
import math
import os
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from sknet import _limits
from sknet.errors import ConfigError, FileFormatError

__all__ = [
    "ModelRecord",
    "Preprocess",
    "check_state_dtypes",
    "check_state_finite",
    "check_state_fits",
    "check_tensor_bytes",
    "load",
    "read_torch_file",
    "resolve_source",
]

log = logging.getLogger("sknet")

SourceKind = Literal["registry", "pretrained", "weights", "checkpoint"]

_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
_ORDERS = ("RGB", "BGR")


def _show(value: Any, limit: int = 60) -> str:
    """A short text of ``value`` for a message (``str`` of a huge integer raises)."""
    try:
        text = str(value)
    except ValueError:
        text = f"<a {type(value).__name__} too large to show>"
    return " ".join(text[: limit * 2].split())[:limit]


def _guard_int(value: Any, name: str, where: object, error: type[Exception]) -> None:
    """Refuse an integer too large even to print, before the bounded checks word it."""
    if isinstance(value, int) and value.bit_length() > 64:
        raise error(f"{where}: {name} is a {value.bit_length()}-bit integer")


def _triple(
    value: Any, name: str, label: object, error: type[Exception], *, positive: bool = False
) -> tuple[float, float, float]:
    """``value`` as three finite floats (positive ones if ``positive``), else ``error``."""
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise error(f"{label}: {name} must be 3 numbers (one per channel), got {_show(value)}")
    out = []
    for x in value:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise error(f"{label}: {name} must be 3 numbers, got {_show(value)}")
        try:
            f = float(x)
        except OverflowError:
            f = math.inf
        if not math.isfinite(f) or (positive and f <= 0):
            need = "positive finite" if positive else "finite"
            raise error(f"{label}: {name} must be 3 {need} numbers, got {_show(value)}")
        out.append(f)
    return (out[0], out[1], out[2])


@dataclass(frozen=True)
class Preprocess:
    """How images must be prepared for a model (applied by eval, analyze and predict).

    The image is resized so that its short side is ``resize`` (``None``: used at its own size,
    as for the built-in data), centre-cropped to ``input_size``, converted to floats in [0, 1],
    put in ``channel_order`` and normalised with ``mean``/``std`` (in [0, 1] units). Caffe-style
    ``(x * 255 - m) * s`` is the same as ``mean = m / 255``, ``std = 1 / (255 s)``.
    """

    input_size: int
    resize: int | None = None
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    channel_order: Literal["RGB", "BGR"] = "RGB"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: object = None) -> Preprocess:
        """The preprocessing described by ``d`` (unknown keys are ignored), every field checked.

        ``input_size`` (required) and ``resize`` (or None) are image sides in
        ``[1, MAX_IMAGE_SIDE]``; ``interpolation`` is one of ``bilinear``, ``bicubic``,
        ``nearest``; ``channel_order`` is ``RGB`` or ``BGR``; ``mean`` and ``std`` are three
        finite numbers, ``std`` positive. ``where`` names a file's metadata: a bad value raises
        :class:`FileFormatError` starting with it; without ``where`` (an argument) it raises
        :class:`ConfigError`. Both are ``ValueError``.
        """
        error = ConfigError if where is None else FileFormatError
        label = where if where is not None else "preprocess"
        if not isinstance(d, Mapping):
            raise error(f"{label}: expected a table of fields, not {type(d).__name__}")
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if "input_size" not in known:
            raise error(f"{label}: preprocess needs input_size")
        side = _limits.check_image_side
        for k in ("input_size", "resize"):
            _guard_int(known.get(k), k, label, error)
        known["input_size"] = side(
            known["input_size"], "input_size", where=label, config=where is None
        )
        if known.get("resize") is not None:
            known["resize"] = side(known["resize"], "resize", where=label, config=where is None)
        for k in ("mean", "std"):
            if k in known:
                known[k] = _triple(known[k], k, label, error, positive=k == "std")
        for k, allowed in (("interpolation", _INTERPOLATIONS), ("channel_order", _ORDERS)):
            if k in known and (not isinstance(known[k], str) or known[k] not in allowed):
                raise error(f"{label}: {k} = {_show(known[k], 40)!r} is not one of {allowed}")
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


@dataclass(frozen=True)
class ModelRecord:
    """What a loaded model is: architecture, classes, preprocessing and where it came from.

    ``classes`` are the readable class names in label order; ``class_ids``, when set, the
    identifiers data folders use for the same classes (ImageNet's WordNet ids, ``n01440764``):
    evaluation matches folder names against either.
    """

    name: str
    arch: dict[str, Any]
    num_classes: int
    in_chans: int
    preprocess: Preprocess
    source: str
    source_kind: SourceKind
    classes: tuple[str, ...] | None = None
    class_ids: tuple[str, ...] | None = None
    data: str | None = None
    data_dir: str | None = None
    train_config: dict[str, Any] | None = None
    model_overrides: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        return self.preprocess.input_size

    def info(self) -> dict[str, Any]:
        """The record as the plain dict that eval/analyze reports carry."""
        return {
            "model": self.name,
            "model_overrides": self.model_overrides,
            "num_classes": self.num_classes,
            "image_size": self.preprocess.input_size,
            "data": self.data,
            "data_dir": self.data_dir,
            "mean": tuple(self.preprocess.mean),
            "std": tuple(self.preprocess.std),
            "classes": list(self.classes) if self.classes is not None else None,
            "class_ids": list(self.class_ids) if self.class_ids is not None else None,
            "config": self.train_config,
            "source": self.source,
            "source_kind": self.source_kind,
            "provenance": self.provenance,
        }


# ----------------------------------------------------------------------------------- sources


def resolve_source(source: str | os.PathLike) -> tuple[Path, Literal["weights", "checkpoint"]]:
    """The file behind a path source: a run directory's weights (else its last checkpoint), a
    ``.safetensors`` file or a checkpoint."""
    path = Path(source).expanduser()
    if path.is_dir():
        for cand, kind in (
            (path / "model.safetensors", "weights"),
            (path / "checkpoints" / "last.pt", "checkpoint"),
        ):
            if cand.is_file():
                return cand, kind  # type: ignore[return-value]
        raise FileNotFoundError(
            f"{path} is not a finished or checkpointed run directory "
            "(no model.safetensors or checkpoints/last.pt)"
        )
    if not path.exists():
        raise FileNotFoundError(f"no run directory, checkpoint or weights file at {path}")
    if path.suffix == ".safetensors":
        return path, "weights"
    if path.suffix in (".pt", ".pth", ".ckpt"):
        return path, "checkpoint"
    raise FileFormatError(
        f"{path}: expected a run directory, a checkpoint (.pt) or a weights file (.safetensors)"
    )


def _looks_like_path(text: str) -> bool:
    return (
        os.sep in text
        or text.endswith((".safetensors", ".pt", ".pth", ".ckpt"))
        or Path(text).exists()
    )


def load(
    source: str | os.PathLike,
    *,
    name: str | None = None,
    num_classes: int | None = None,
    checkpoint_path: str | os.PathLike | None = None,
) -> tuple[nn.Module, ModelRecord]:
    """Load a model from any source (see the module docs); returns ``(model.eval(), record)``.

    Args:
        source: registry name (optionally ``name.tag`` for published weights), weights file,
            checkpoint or run directory.
        name: the registry name, only for weights files without sknet metadata.
        num_classes: for a registry name, the classifier width. For weights, a value other
            than the file's keeps the backbone and gives a fresh classifier (logged).
        checkpoint_path: for published weights, a local copy of the file (no download).

    Raises:
        FileNotFoundError: no such file or run directory.
        FileFormatError: a corrupt, unsafe or foreign file, or tensors that do not fit the
            recorded architecture (naming the first one).
        ConfigError: an unknown model name or invalid metadata.
    """
    text = os.fspath(source)
    if not _looks_like_path(text):
        return _load_registry(text, num_classes=num_classes, checkpoint_path=checkpoint_path)
    path, kind = resolve_source(text)
    if kind == "checkpoint":
        model, record = _load_checkpoint(path)
    else:
        model, record = _load_weights_file(path, name=name)
    if num_classes is not None and num_classes != record.num_classes:
        model, record = _new_head(model, record, num_classes)
    return model.eval(), record


def _load_registry(
    text: str, *, num_classes: int | None, checkpoint_path: str | os.PathLike | None
) -> tuple[nn.Module, ModelRecord]:
    from sknet.models import create_model, get_entry, list_models

    if "." in text and text not in list_models():
        from sknet.hub import load_pretrained

        return load_pretrained(text, num_classes=num_classes, checkpoint_path=checkpoint_path)
    entry = get_entry(text)  # unknown names raise with suggestions
    model = create_model(text, num_classes=num_classes)
    record = ModelRecord(
        name=text,
        arch=_arch(model),
        num_classes=int(model.num_classes),
        in_chans=int(model.in_chans),
        preprocess=default_preprocess(entry.input_size, None),
        source=text,
        source_kind="registry",
        provenance={"init": "random"},
    )
    return model.eval(), record


def _arch(model: nn.Module) -> dict[str, Any]:
    from sknet.weights import arch_config_of

    return arch_config_of(model) or {}


def default_preprocess(
    input_size: int,
    data: str | None,
    mean: Any = None,
    std: Any = None,
) -> Preprocess:
    """The preprocessing of sknet-trained models (and foreign ImageNet weights without any)."""
    from sknet.data import eval_resize_size, normalization

    if mean is None or std is None:
        kind = {"imagefolder": "imagenet", None: "imagenet"}.get(data, data)
        try:
            mean, std = normalization(kind or "imagenet")
        except ValueError:
            mean, std = normalization("imagenet")
    imagenet_like = data in ("imagefolder", "imagenet") or (data is None and input_size >= 128)
    return Preprocess(
        input_size=int(input_size),
        resize=eval_resize_size(input_size) if imagenet_like else None,
        mean=tuple(float(x) for x in mean),  # type: ignore[arg-type]
        std=tuple(float(x) for x in std),  # type: ignore[arg-type]
    )


# ----------------------------------------------------------------------------------- files


def _json_meta(meta: dict[str, str], key: str, path: Path, default: Any = None) -> Any:
    """Metadata entry ``key`` parsed as JSON with bounded size and depth
    (:func:`sknet._limits.parse_json`)."""
    if key not in meta:
        return default
    try:
        return _limits.parse_json(meta[key], key, path)
    except FileFormatError:
        raise
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise FileFormatError(
            f"{path}: metadata {key!r} cannot be read: {str(exc)[:120]}; the file is corrupt or "
            "hostile"
        ) from None


def _int_meta(
    meta: dict[str, str], key: str, path: Path, default: int | None, *, lo: int = 0, hi: int
) -> int | None:
    """Metadata entry ``key`` as an integer in ``[lo, hi]``, or ``default`` when absent."""
    if key not in meta:
        return default
    try:
        value = int(meta[key])
    except ValueError:
        raise FileFormatError(
            f"{path}: metadata {key!r} = {meta[key][:40]!r} is not an integer; the file is corrupt"
        ) from None
    if not lo <= value <= hi:
        raise FileFormatError(
            f"{path}: metadata {key!r} = {str(value)[:40]} is outside [{lo}, {hi}]; the file is "
            "corrupt or hostile"
        )
    return value


def _check_counts(num_classes: Any, in_chans: Any, where: Path | str) -> tuple[int | None, int]:
    """``num_classes`` (None, or in ``[0, MAX_CLASSES]``) and ``in_chans`` (in
    ``[1, MAX_IN_CHANS]``) recorded by ``where``."""
    _guard_int(num_classes, "num_classes", where, FileFormatError)
    _guard_int(in_chans, "in_chans", where, FileFormatError)
    if num_classes is not None:
        num_classes = _limits.bounded_int(
            num_classes, "num_classes", lo=0, hi=_limits.MAX_CLASSES, where=where
        )
    in_chans = _limits.bounded_int(in_chans, "in_chans", lo=1, hi=_limits.MAX_IN_CHANS, where=where)
    return num_classes, in_chans


def build_from_config(
    name: str,
    arch: dict[str, Any] | None,
    overrides: dict[str, Any],
    num_classes: int | None,
    in_chans: int,
    where: Path | str,
) -> nn.Module:
    """Rebuild a registry model from its recorded config (``arch``: every field), falling back
    to the build-time overrides for files written before the full config was recorded.

    The recorded numbers are checked first (``num_classes``, ``in_chans`` and every field, see
    :func:`sknet._limits.check_arch`); any failure to build is a :class:`FileFormatError`. The
    model is built on the current default device: wrap the call in ``torch.device("meta")`` to
    size it without memory (see :func:`_meta_model`).
    """
    from sknet.models import create_model

    _check_name(name, where)
    fields = arch if arch else overrides
    if not isinstance(fields, dict):
        raise FileFormatError(f"{where}: the recorded model config is not a table")
    _limits.check_arch(fields, "sknet_arch" if arch else "model_overrides", where)
    num_classes, in_chans = _check_counts(num_classes, in_chans, where)
    try:
        return create_model(name, num_classes=num_classes, in_chans=in_chans, **fields)
    except Exception as exc:  # anything a hostile config provokes is the file's fault
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise FileFormatError(
            f"{where}: the recorded config does not build {name!r}: {reason}"
        ) from None


@dataclass(frozen=True)
class _Spec:
    """A tensor as a file's header describes it: shape and dtype, no data."""

    shape: tuple[int, ...]
    dtype: str  # safetensors' name: F32, BF16, I64, BOOL, ...


_ST_FLOAT = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
_ST_INT = {"I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1}
_ST_NAMES = {
    "F64": "torch.float64",
    "F32": "torch.float32",
    "F16": "torch.float16",
    "BF16": "torch.bfloat16",
    "I64": "torch.int64",
    "I32": "torch.int32",
    "I16": "torch.int16",
    "I8": "torch.int8",
    "U8": "torch.uint8",
    "BOOL": "torch.bool",
}


def _kind(t: Any) -> str:
    """``"float"``, ``"int"``, ``"bool"`` or ``"other"`` for a tensor or a :class:`_Spec`."""
    if isinstance(t, _Spec):
        if t.dtype in _ST_FLOAT:
            return "float"
        if t.dtype in _ST_INT:
            return "int"
        return "bool" if t.dtype == "BOOL" else "other"
    dtype = t.dtype
    if dtype == torch.bool:
        return "bool"
    if dtype.is_floating_point:
        return "float"
    if dtype.is_complex:
        return "other"
    return "int"


def _safetensors_specs(path: Path) -> dict[str, _Spec]:
    """Shapes and dtypes of a safetensors file from its header alone (no tensor data read);
    their bytes must fit in the file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            specs = {}
            for key in fh.keys():  # noqa: SIM118 - safe_open is not iterable
                sl = fh.get_slice(key)
                specs[key] = _Spec(tuple(int(d) for d in sl.get_shape()), str(sl.get_dtype()))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise FileFormatError(f"cannot read tensors from {path}: {reason}") from None
    total = sum(
        math.prod(s.shape) * {**_ST_FLOAT, **_ST_INT}.get(s.dtype, 1) for s in specs.values()
    )
    size = path.stat().st_size
    if total > size:
        raise FileFormatError(
            f"{path}: the header describes {total:,} bytes of tensors, but the file has only "
            f"{size:,} bytes; the file is corrupt or hostile"
        )
    return specs


def check_state_fits(model: nn.Module, state: Mapping[str, Any], where: Path | str) -> None:
    """Raise :class:`FileFormatError` naming the first tensor of ``state`` that does not fit
    ``model`` (missing, unexpected or of another shape), with the count of the others.

    ``state`` holds tensors, or anything with a ``shape`` (a file header's description), and
    ``model`` may live on the ``meta`` device: nothing is copied.
    """
    own = model.state_dict()
    problems: list[str] = []
    for key, value in own.items():
        if key not in state:
            problems.append(f"missing tensor {key!r} {tuple(value.shape)}")
        elif tuple(state[key].shape) != tuple(value.shape):
            problems.append(
                f"tensor {key!r} has shape {tuple(state[key].shape)}, the model needs "
                f"{tuple(value.shape)}"
            )
    problems += [f"unexpected tensor {str(k)[:80]!r}" for k in state if k not in own]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        name = getattr(model, "model_name", type(model).__name__)
        raise FileFormatError(
            f"{where} does not fit {name}: {problems[0]}{more}; the weights belong to "
            "another architecture"
        )


def check_state_dtypes(
    own: Mapping[str, torch.Tensor], state: Mapping[str, Any], where: Path | str
) -> None:
    """Refuse tensors of ``state`` whose dtype kind differs from the model's (``own``): only
    floating tensors are weights for floating parameters and buffers (an integer or bool file
    would be cast silently); integer buffers (BatchNorm's ``num_batches_tracked``) stay integer.
    ``state`` holds tensors or header descriptions."""
    for key, mine in own.items():
        if key not in state:
            continue
        want, got = _kind(mine), _kind(state[key])
        if want == got or (want == "int" and got == "int"):
            continue
        dtype = state[key].dtype
        dtype = _ST_NAMES.get(dtype, dtype) if isinstance(dtype, str) else dtype
        need = "floating point" if want == "float" else f"an integer tensor ({mine.dtype})"
        raise FileFormatError(
            f"{where}: tensor {key!r} is {dtype}, but it must be {need}; weights of another "
            "dtype kind would be cast silently: the file is corrupt or hostile"
        )


_FINITE_CHUNK = 1 << 22


def check_state_finite(state: Mapping[str, Any], where: Path | str) -> None:
    """Refuse any floating tensor of ``state`` holding NaN or Inf, naming it (a model with such
    weights predicts nothing meaningful). Checked in chunks, so the check costs little memory."""
    for key, t in state.items():
        if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point:
            continue
        flat = t.detach().reshape(-1)
        for i in range(0, flat.numel(), _FINITE_CHUNK):
            chunk = flat[i : i + _FINITE_CHUNK]
            if chunk.element_size() == 1:  # float8: no isfinite kernel
                chunk = chunk.float()
            if not bool(torch.isfinite(chunk).all()):
                raise FileFormatError(
                    f"{where}: tensor {str(key)[:80]!r} holds non-finite values (NaN or Inf); the "
                    "weights are corrupt (a diverged training run?) and would predict nothing"
                )


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside ``obj`` (nested dicts, lists and tuples), without recursion."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            yield item
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def check_tensor_bytes(obj: Any, path: Path) -> None:
    """Refuse a loaded torch file whose tensors (anywhere in ``obj``) hold more bytes than the
    file has: a hostile file can describe broadcast views (stride 0) of any size over a few
    bytes, which any later copy or check would allocate."""
    total = sum(t.numel() * t.element_size() for t in _tensors(obj))
    size = path.stat().st_size
    if total > size:
        raise FileFormatError(
            f"{path}: its tensors describe {total:,} bytes, but the file has only {size:,} "
            "bytes; the file is corrupt or hostile"
        )


def _check_torch_zip(path: Path) -> bool:
    """Whether ``path`` is a zip-format torch file, after checking its directory: every entry
    stored uncompressed (as ``torch.save`` writes them) and the entries' sizes within the
    file's, so that reading it cannot inflate."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise FileFormatError(f"{path} is a corrupt zip / torch file: {exc}") from None
    size = path.stat().st_size
    total = 0
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            raise FileFormatError(
                f"{path}: entry {info.filename[:80]!r} is compressed, which torch.save never "
                "does (a zip bomb?); re-save the weights with torch.save"
            )
        total += info.file_size
    if total > size:
        raise FileFormatError(
            f"{path}: its zip entries claim {total:,} bytes, but the file has only {size:,}; "
            "the file is corrupt or hostile"
        )
    return True


def read_torch_file(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, bounded: a zip-format file (every
    ``torch.save`` since PyTorch 1.6) is checked (:func:`_check_torch_zip`) and memory-mapped,
    so no tensor is read eagerly, and its tensors may not describe more bytes than the file has
    (:func:`check_tensor_bytes`). Errors of ``torch.load`` itself propagate (the caller words
    them); the checks raise :class:`FileFormatError`."""
    mmap = _check_torch_zip(path)
    obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    check_tensor_bytes(obj, path)
    return obj


def _meta_model(
    name: str,
    arch: dict[str, Any] | None,
    overrides: dict[str, Any],
    num_classes: int | None,
    in_chans: int,
    where: Path | str,
    state: Mapping[str, Any],
) -> None:
    """Everything that can be checked before memory is spent: the recorded config builds on the
    ``meta`` device, its parameter count is within the limit (``SKNET_MAX_PARAMS``), and
    ``state`` (tensors or header descriptions) fits it in names, shapes and dtype kinds."""
    with torch.device("meta"):
        model = build_from_config(name, arch, overrides, num_classes, in_chans, where)
    _limits.check_param_count(sum(p.numel() for p in model.parameters()), where)
    check_state_fits(model, state, where)
    check_state_dtypes(model.state_dict(), state, where)


def _or(value: Any, default: Any) -> Any:
    """``value or default`` for a value from a file, which may be a tensor (whose truth value
    raises)."""
    if value is None:
        return default
    if isinstance(value, (str, bytes, list, tuple, dict, int, float)) and not value:
        return default
    return value


def _table(value: Any, key: str, where: Path) -> dict[str, Any]:
    """A metadata value that must be a table (None: an empty one)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FileFormatError(f"{where}: metadata {key!r} is not a table")
    return value


def _text(value: Any, key: str, where: Path) -> str | None:
    """A metadata value that must be a short string (or None)."""
    if value is None or (isinstance(value, str) and not value):
        return None
    if not isinstance(value, str) or len(value) > 4096:
        raise FileFormatError(f"{where}: metadata {key!r} is not a short string")
    return value


def _file_preprocess(
    pre: Any,
    size: Any,
    data: str | None,
    mean: Any,
    std: Any,
    where: Path,
    key: str,
) -> Preprocess:
    """A file's preprocessing: its ``sknet_preprocess`` table when present (every field checked,
    :meth:`Preprocess.from_dict`), else the default for its image size, data and mean/std (also
    checked)."""
    if pre:
        return Preprocess.from_dict(pre, where=f"{where}: invalid {key!r} metadata")
    label = f"{where}: invalid preprocessing metadata"
    _guard_int(size, "image size", label, FileFormatError)
    size = _limits.check_image_side(size, "image size", where=label)
    if mean is not None and std is not None:
        mean = _triple(mean, "mean", label, FileFormatError)
        std = _triple(std, "std", label, FileFormatError, positive=True)
    return default_preprocess(size, data, mean, std)


def _load_weights_file(path: Path, *, name: str | None) -> tuple[nn.Module, ModelRecord]:
    """A ``.safetensors`` weights file: metadata checked, model sized on ``meta`` and compared
    with the header, then tensors read, checked (floating, finite) and loaded."""
    from safetensors.torch import load_file

    from sknet.weights import read_metadata

    meta = read_metadata(path)
    name = name or meta.get("sknet_model")
    if not name:
        raise FileFormatError(
            f"{path} has no 'sknet_model' metadata (not written by sknet): pass the model name, "
            "or convert it with `sknet convert`"
        )
    _check_name(name, path)
    overrides = _table(_json_meta(meta, "model_overrides", path, {}), "model_overrides", path)
    arch = _json_meta(meta, "sknet_arch", path)
    if arch is not None and not isinstance(arch, dict):
        raise FileFormatError(f"{path}: metadata 'sknet_arch' is not a table")
    num_classes = _int_meta(meta, "num_classes", path, None, hi=_limits.MAX_CLASSES)
    in_chans = _int_meta(meta, "in_chans", path, 3, hi=_limits.MAX_IN_CHANS) or 3
    # every other metadata value, checked before any tensor is read
    cfg = _json_meta(meta, "sknet_train_config", path)
    if cfg is not None and not isinstance(cfg, dict):
        raise FileFormatError(f"{path}: metadata 'sknet_train_config' is not a table")
    cfg = cfg or {}
    data = _text(meta.get("sknet_data") or cfg.get("data"), "sknet_data", path)
    preprocess = _file_preprocess(
        _json_meta(meta, "sknet_preprocess", path),
        meta.get("sknet_image_size") or _default_size(name, None),
        data,
        _json_meta(meta, "sknet_mean", path),
        _json_meta(meta, "sknet_std", path),
        path,
        "sknet_preprocess",
    )
    class_list = _json_meta(meta, "sknet_classes", path)
    provenance = _table(_json_meta(meta, "sknet_provenance", path, {}), "sknet_provenance", path)
    if "converted_from" in meta:
        provenance.setdefault("converted_from", meta["converted_from"])
    # the model on meta against the header: no tensor data read, nothing allocated
    _meta_model(name, arch, overrides, num_classes, in_chans, path, _safetensors_specs(path))
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise FileFormatError(f"cannot read tensors from {path}: {exc}") from None
    check_state_finite(state, path)
    model = build_from_config(name, arch, overrides, num_classes, in_chans, path)
    check_state_fits(model, state, path)
    model.load_state_dict(state)
    classes = _classes(class_list, model, path)
    record = ModelRecord(
        name=name,
        arch=_arch(model),
        num_classes=int(model.num_classes),
        in_chans=int(model.in_chans),
        preprocess=preprocess,
        source=str(path),
        source_kind="weights",
        classes=classes,
        data=data,
        data_dir=_text(cfg.get("data_dir"), "sknet_train_config.data_dir", path),
        train_config=cfg or None,
        model_overrides=overrides,
        provenance=provenance,
    )
    _attach(model, record)
    return model, record


def _check_name(name: Any, where: Path | str) -> str:
    """``name`` if it is a registry model, else a :class:`FileFormatError`."""
    from sknet.models import list_models

    if not isinstance(name, str) or name not in list_models():
        raise FileFormatError(
            f"{where}: records model {_show(name)!r}, which this version of sknet does not know"
        )
    return name


def _default_size(name: str, fields: Any) -> Any:
    """The input size a model was built for: its recorded ``default_input_size``, else its
    registry entry's."""
    from sknet.models import get_entry

    if isinstance(fields, dict) and fields.get("default_input_size") is not None:
        return fields["default_input_size"]
    return get_entry(name).input_size


def _classes(value: Any, model: nn.Module, where: Path) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != int(model.num_classes):
        raise FileFormatError(
            f"{where}: recorded class names do not match the model's {model.num_classes} classes"
        )
    return tuple(_show(c, 1000) for c in value)


def _load_checkpoint(path: Path) -> tuple[nn.Module, ModelRecord]:
    """A training checkpoint: read memory-mapped, its metadata checked, the model sized on
    ``meta`` and compared with the tensors, which must be floating (where the model's are) and
    finite, before the real model is built."""
    from sknet.train.checkpoint import load_checkpoint

    ck = load_checkpoint(path, mmap=True)
    meta = ck.get("meta")
    if not isinstance(meta, dict) or "model" not in meta or "model" not in ck:
        raise FileFormatError(f"{path} is an sknet checkpoint without model metadata")
    state = ck["model"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise FileFormatError(f"{path}: the checkpoint's 'model' entry is not a state dict")
    name = _check_name(meta["model"], path)
    num_classes, in_chans = _check_counts(meta.get("num_classes"), meta.get("in_chans", 3), path)
    overrides = _or(meta.get("model_overrides"), {})
    if not isinstance(overrides, dict):
        raise FileFormatError(f"{path}: the checkpoint's model_overrides is not a table")
    arch = meta.get("arch")
    if arch is not None and not isinstance(arch, dict):
        raise FileFormatError(f"{path}: the checkpoint's arch is not a table")
    cfg = _or(ck.get("config"), {})
    if not isinstance(cfg, dict):
        raise FileFormatError(f"{path}: the checkpoint's config is not a table")
    data = _text(_or(meta.get("data"), cfg.get("data")), "data", path)
    size = _or(meta.get("image_size"), None)
    if size is None:
        size = _default_size(name, arch or overrides)
    preprocess = _file_preprocess(None, size, data, meta.get("mean"), meta.get("std"), path, "")
    provenance = _table(meta.get("provenance"), "provenance", path)
    _meta_model(name, arch, overrides, num_classes, in_chans, path, state)
    check_state_finite(state, path)
    model = build_from_config(name, arch, overrides, num_classes, in_chans, path)
    model.load_state_dict(state)
    record = ModelRecord(
        name=name,
        arch=_arch(model),
        num_classes=int(model.num_classes),
        in_chans=int(model.in_chans),
        preprocess=preprocess,
        source=str(path),
        source_kind="checkpoint",
        classes=_classes(meta.get("classes"), model, path),
        data=data,
        data_dir=_text(cfg.get("data_dir"), "config.data_dir", path),
        train_config=cfg or None,
        model_overrides=dict(overrides),  # checked: a table
        provenance=dict(provenance),
    )
    _attach(model, record)
    return model, record


def _attach(model: nn.Module, record: ModelRecord) -> None:
    model.model_overrides = dict(record.model_overrides)  # type: ignore[assignment]
    model.class_names = record.classes  # type: ignore[assignment]


def _new_head(
    model: nn.Module, record: ModelRecord, num_classes: int
) -> tuple[nn.Module, ModelRecord]:
    from dataclasses import replace

    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ConfigError(f"num_classes must be an int >= 0, got {num_classes!r}")
    log.info(
        "%s: weights have %d classes, %d asked: keeping the backbone, new classifier",
        record.source,
        record.num_classes,
        num_classes,
    )
    model.reset_classifier(num_classes)
    model.class_names = None  # type: ignore[assignment]
    record = replace(record, num_classes=num_classes, classes=None, class_ids=None)
    return model, record

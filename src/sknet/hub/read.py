"""The one safe reader of weights: safetensors, sknet checkpoints and torch files, bounded.

Files come from strangers, so nothing is allocated on their say-so before it is checked (see
:mod:`sknet._limits` for the limits and how to raise them):

* :func:`read_state_dict` reads a state dict (name -> tensor) from a ``.safetensors`` file or a
  torch file (``torch.load(weights_only=True)``: arbitrary pickled objects are refused; a
  checkpoint's ``state_dict`` / ``model`` / ``model_state`` entry is unwrapped); floating
  tensors must be finite.
* :func:`read_checkpoint` reads an sknet training checkpoint (format and version checked).
* :func:`read_metadata` / :func:`safetensors_specs` read a safetensors header (metadata, tensor
  shapes and dtypes) without reading any tensor data.
* :func:`read_torch_file` is the bounded ``torch.load``: a zip-format file is checked first
  (entries stored uncompressed, sizes within the file's) and memory-mapped, and its tensors may
  not describe more bytes than the file holds (:func:`check_tensor_bytes`).
* :func:`check_state_fits` is the one strict key / shape check of a state dict against a model
  (which may live on the ``meta`` device), :func:`check_state_dtypes` the dtype-kind check and
  :func:`check_state_finite` the NaN / Inf check.

Every refusal is a :class:`~sknet.errors.FileFormatError` (a ``ValueError``) naming the file; a
missing file is a :class:`~sknet.errors.MissingFileError` (a ``FileNotFoundError``).
``safetensors`` is a dependency of sknet.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from sknet.errors import FileFormatError, MissingFileError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "check_state_dtypes",
    "check_state_finite",
    "check_state_fits",
    "check_tensor_bytes",
    "check_torch_zip",
    "is_safetensors",
    "read_checkpoint",
    "read_metadata",
    "read_safetensors",
    "read_state_dict",
    "read_torch_file",
    "require_file",
    "safetensors_specs",
]

CHECKPOINT_FORMAT = "sknet-train-checkpoint"
CHECKPOINT_VERSION = 1


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


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


def safetensors_specs(path: Path) -> dict[str, _Spec]:
    """Shapes and dtypes of a safetensors file from its header alone (no tensor data read);
    their bytes must fit in the file."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            specs = {}
            for key in fh.keys():  # noqa: SIM118 - safe_open is not iterable
                sl = fh.get_slice(key)
                specs[key] = _Spec(tuple(int(d) for d in sl.get_shape()), str(sl.get_dtype()))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise FileFormatError(f"cannot read tensors from {path}: {_first_line(exc)}") from None
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


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file (empty dict when it has none); no tensor is read."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no weights file at {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise FileFormatError(f"{path} is not a readable safetensors file: {exc}") from None


def read_safetensors(
    path: Path, message: str = "cannot read tensors from {path}"
) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file (whose header safetensors validates against the
    file's size), on the CPU; a failure is ``FileFormatError(message + ": reason")``."""
    try:
        return dict(load_file(str(path), device="cpu"))
    except Exception as exc:  # SafetensorError, OSError, ValueError of corrupt files
        raise FileFormatError(f"{message.format(path=path)}: {exc}") from None


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


def check_torch_zip(path: Path) -> bool:
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
    ``torch.save`` since PyTorch 1.6) is checked (:func:`check_torch_zip`) and memory-mapped,
    so no tensor is read eagerly, and its tensors may not describe more bytes than the file has
    (:func:`check_tensor_bytes`). Errors of ``torch.load`` itself propagate (the caller words
    them); the checks raise :class:`FileFormatError`."""
    mmap = check_torch_zip(path)
    obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    check_tensor_bytes(obj, path)
    return obj


def is_safetensors(path: Path) -> bool:
    """Whether ``path`` starts like a safetensors file (header length, then ``{``)."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n < (1 << 30) and head[8:9] == b"{"


def require_file(
    path: Path, message: str = "no such file (weights file not found): {path}"
) -> None:
    """Raise :class:`MissingFileError` (``message``) unless ``path`` is a file."""
    if not path.is_file():
        raise MissingFileError(message.format(path=path))


_STATE_KEYS = ("state_dict", "model", "model_state")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of a weights file, read safely and bounded.

    safetensors (by suffix or content; the header is validated against the file's size by
    safetensors), or ``torch.load(weights_only=True)`` of a checked, memory-mapped zip
    (:func:`read_torch_file`: nothing inflates, tensors may not describe more bytes than the
    file has). A checkpoint's ``state_dict`` / ``model`` / ``model_state`` entry is unwrapped.
    Only name -> tensor entries; floating tensors must be finite (dtype kinds are checked against
    a model later, when one is built). A ``.caffemodel`` is refused (see :mod:`sknet.hub.caffe`).

    Raises:
        MissingFileError: no such file.
        FileFormatError: unreadable, unsafe (arbitrary pickle), or not a state dict.
    """
    path = Path(path)
    require_file(path)
    if path.suffix.lower() == ".caffemodel":
        raise FileFormatError(
            f"{path} is a Caffe model, not a state dict: load it with sknet.hub.load_pretrained "
            f"or convert it with `sknet convert --from caffe {path} OUT.safetensors`"
        )
    obj: Any
    if path.suffix == ".safetensors" or is_safetensors(path):
        obj = read_safetensors(path, "{path} is not a readable safetensors file")
    else:
        try:
            obj = read_torch_file(path)
        except FileFormatError:
            raise
        except Exception as exc:  # UnpicklingError, RuntimeError (not a zip), EOFError, ...
            raise FileFormatError(
                f"{path} is not a readable torch state dict: it cannot be read safely as "
                "weights (safetensors, or a torch file of tensors loadable with "
                f"weights_only=True; arbitrary pickled objects are refused): {_first_line(exc)}"
            ) from None
    for key in _STATE_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise FileFormatError(f"{path} does not hold a state dict (a mapping name -> tensor)")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        shown = [str(k)[:60] for k in bad[:3]]
        raise FileFormatError(f"{path}: entries that are not name -> tensor, e.g. {shown}")
    check_state_finite(obj, path)
    return dict(obj)


def read_checkpoint(path: str | os.PathLike, *, mmap: bool = False) -> dict[str, Any]:
    """An sknet training checkpoint, read on the CPU (``weights_only=True``), bounded.

    Before anything is read, the zip directory is checked (entries stored uncompressed, their
    sizes within the file's: nothing can inflate); after, the tensors may not describe more
    bytes than the file holds (no broadcast views of huge size). ``mmap=True`` maps the tensors
    from the file instead of reading them (copy-on-write; for loading a model once). The format
    and version are checked (a newer version is refused).
    """
    path = Path(path)
    require_file(path, "no checkpoint at {path}")
    is_zip = check_torch_zip(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and is_zip)
    except Exception:  # pickle / zip errors of truncated, foreign or malicious files
        # torch's own message suggests weights_only=False, i.e. running the file's code: the
        # one thing never to do with a file that fails the safe load.
        raise FileFormatError(
            f"{path} is not an sknet checkpoint (corrupt, truncated or unsafe to load); it was "
            "refused without running any of its content"
        ) from None
    check_tensor_bytes(state, path)
    fmt = state.get("format") if isinstance(state, dict) else None
    if not isinstance(fmt, str) or fmt != CHECKPOINT_FORMAT:
        raise FileFormatError(f"{path} is not an sknet training checkpoint")
    version = state.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise FileFormatError(f"{path}: checkpoint version {str(version)[:40]!r} is not an integer")
    if version > CHECKPOINT_VERSION:
        raise FileFormatError(
            f"{path} was written by a newer sknet (checkpoint version {state['version']})"
        )
    return state

"""Weights files: safetensors with the model's name and build arguments in the metadata.

A weights file is self-describing: ``load_weights(path)`` rebuilds the model it came from.
Metadata keys: ``sknet_model`` (registry name), ``num_classes``, ``in_chans`` and
``model_overrides`` (JSON of the create_model overrides, branch specs as text).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from sknet.layers.sk import BranchSpec
from sknet.models import SKNetModel, create_model

__all__ = ["atomic_save", "load_weights", "read_metadata", "save_weights"]


def _jsonable(v: Any) -> Any:
    if isinstance(v, BranchSpec):
        return v.describe()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_save(write, path: str | os.PathLike) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a partial file.

    The file gets the permissions an ordinary ``open(path, "w")`` would give it (0666 minus the
    umask), not the 0600 of the temporary file it is written as.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_weights(
    model: SKNetModel,
    path: str | os.PathLike,
    *,
    name: str | None = None,
    overrides: dict[str, Any] | None = None,
    extra: dict[str, str] | None = None,
) -> Path:
    """Save ``model``'s state dict as safetensors (atomically) with its build metadata."""
    from safetensors.torch import save_file

    name = name or getattr(model, "model_name", None)
    if not name:
        raise ValueError("save_weights needs the registry name of the model (name=...)")
    meta = {
        "sknet_model": name,
        "num_classes": str(model.num_classes),
        "in_chans": str(model.in_chans),
        "model_overrides": json.dumps({k: _jsonable(v) for k, v in (overrides or {}).items()}),
        **(extra or {}),
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return atomic_save(lambda tmp: save_file(state, tmp, metadata=meta), path)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file (empty dict when it has none)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc


def load_weights(
    path: str | os.PathLike, *, name: str | None = None, num_classes: int | None = None
) -> SKNetModel:
    """Rebuild a model from a weights file written by :func:`save_weights` (or ``sknet convert``).

    ``name``/``num_classes`` are needed only for files without sknet metadata.
    """
    from safetensors.torch import load_file

    meta = read_metadata(path)
    name = name or meta.get("sknet_model")
    if not name:
        raise ValueError(f"{path} has no 'sknet_model' metadata: pass the model name")
    overrides = json.loads(meta.get("model_overrides", "{}"))
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise ValueError(f"cannot read tensors from {path}: {exc}") from exc
    if num_classes is None:
        num_classes = int(meta["num_classes"]) if "num_classes" in meta else None
    model = create_model(
        name, num_classes=num_classes, in_chans=int(meta.get("in_chans", 3)), **overrides
    )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match {name}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    model.model_overrides = overrides  # type: ignore[assignment]
    return model.eval()

"""Downloading published weights once into the user's cache, checked against their sha256.

:func:`fetch_pretrained` returns the local path of an entry's file (:mod:`sknet.hub.table`):
Hub repos through ``huggingface_hub.hf_hub_download`` (``HF_HOME``, ``HF_HUB_CACHE``,
``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and the token are honoured, read at call time), plain URLs
through ``torch.hub.download_url_to_file`` into ``torch.hub.get_dir()/checkpoints``
(``TORCH_HOME``). A cached file is returned without any request, after its sha256 is checked
again (every cache hit: a file changed after its download raises :class:`ChecksumError` naming
it; delete it to download it afresh). A fresh download is checked against the entry's sha256
(for a Hub file without a recorded sha256, against the sha256 that the Hub publishes as the
file's LFS id); a mismatch deletes the file and raises :class:`ChecksumError`. No network,
``HF_HUB_OFFLINE=1`` (which stops plain-URL downloads too), a missing file or a source without a
direct download raise :class:`WeightsUnavailableError`, which names the file, its source, the
cache it goes to and how to work offline: ``HF_HUB_OFFLINE=1`` and the file passed by hand
(``--checkpoint-path FILE`` on the command line, ``checkpoint_path=`` in Python). Before a
download the server is reached once with a short timeout: without a network the error comes at
once, not after huggingface_hub's retries.

``huggingface_hub`` (optional) is imported inside the function that needs it.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import re
import socket
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from sknet.errors import ChecksumError, MissingFileError, WeightsUnavailableError
from sknet.hub.table import SKNET_README, PretrainedCfg, get_pretrained_cfg

__all__ = ["fetch_pretrained", "local_weights", "sha256_of"]


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "on", "yes", "true"}


def _offline() -> bool:
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def _hf_cache_dir() -> str | None:
    """The Hub cache from the environment now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: Seconds to wait for the download server to answer a connection before giving up.
CONNECT_TIMEOUT = 5.0


def _unavailable(cfg: PretrainedCfg, reason: str, target: Path | str | None = None) -> Exception:
    """The error for a file that cannot be downloaded: what, from where, why, where it goes,
    and what to do (work offline with a copy of the file passed by hand)."""
    where = f" into {target}" if target else ""
    todo = (
        f"to work offline, download {cfg.file_name} by hand from {cfg.location} and pass it "
        "with --checkpoint-path FILE (checkpoint_path=FILE in Python)"
    )
    if cfg.url is not None and isinstance(target, Path):
        todo += f", or save it as {target}"
    todo += "; set HF_HUB_OFFLINE=1 to never try the network"
    return WeightsUnavailableError(
        f"cannot download {cfg.file_name} for {cfg.name} from {cfg.source} "
        f"({cfg.location}){where}: {reason}; {todo}"
    )


def _unreachable(url: str, timeout: float = CONNECT_TIMEOUT) -> str | None:
    """Why ``url``'s server cannot be reached (no name resolution, refused, timed out), or
    None when a connection opens (or a proxy is configured: the proxy decides)."""
    if any(
        os.environ.get(k)
        for k in (
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
        )
    ):
        return None
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as exc:
        detail = exc.strerror or str(exc) or type(exc).__name__
        return f"no network: cannot reach {parts.hostname}:{port} ({detail})"


def _hub_endpoint(endpoint: str | None) -> str:
    if endpoint:
        return endpoint
    try:
        from huggingface_hub import constants

        return str(constants.ENDPOINT)
    except (ImportError, AttributeError):  # pragma: no cover - very old huggingface_hub
        return "https://huggingface.co"


def _check(
    cfg: PretrainedCfg, path: Path, expected: str | None, extra: tuple[Path, ...] = ()
) -> None:
    """Verify ``path`` against ``expected`` (full sha256 or prefix); delete it on mismatch."""
    if expected is None:
        return
    digest = sha256_of(path)
    if digest.startswith(expected.lower()):
        return
    for p in (path, *extra):
        with contextlib.suppress(OSError):
            p.unlink()
    raise ChecksumError(
        f"{cfg.name}: {cfg.file_name} from {cfg.location} has sha256 {digest[:16]}..., expected "
        f"{expected[:16]}...; the file was deleted (a corrupt or tampered download): try again, "
        "or check the source"
    )


def _verify_cached(cfg: PretrainedCfg, path: Path, expected: str | None) -> None:
    """Re-verify a cached file against its published sha256 on every cache hit: a file
    changed or replaced after its download is refused (and kept, for inspection)."""
    if expected is None:
        return
    digest = sha256_of(path)
    if digest.startswith(expected.lower()):
        return
    real = path.resolve()
    also = f" (a link to {real})" if real != path else ""
    raise ChecksumError(
        f"{cfg.name}: the cached file {path}{also} has sha256 {digest[:16]}..., but "
        f"{cfg.location} publishes {expected[:16]}...: it was changed or replaced after the "
        "download; delete it and run again to download it afresh, or pass a trusted copy with "
        "--checkpoint-path FILE (checkpoint_path=FILE in Python)"
    )


def _network_errors() -> tuple[type[BaseException], ...]:
    """OSError (urllib, requests, most huggingface_hub errors) and the HTTP client's base error
    when it is not an OSError (httpx / httpx2, used by huggingface_hub >= 1.0)."""
    errs: list[type[BaseException]] = [OSError]
    for mod in ("httpx2", "httpx"):
        base = getattr(sys.modules.get(mod), "HTTPError", None)
        if isinstance(base, type) and issubclass(base, Exception):
            errs.append(base)
    return tuple(errs)


def _fetch_hub(cfg: PretrainedCfg, cache_dir: str | None, progress: bool) -> Path:
    try:
        from huggingface_hub import hf_hub_download

        try:
            from huggingface_hub.errors import LocalEntryNotFoundError
        except ImportError:  # huggingface_hub < 0.24
            from huggingface_hub.utils import LocalEntryNotFoundError
    except ImportError as exc:
        raise _unavailable(
            cfg, "the huggingface_hub package is not installed (pip install huggingface_hub)"
        ) from exc
    assert cfg.hf_hub_id is not None and cfg.hf_filename is not None
    kwargs: dict[str, Any] = {
        "repo_id": cfg.hf_hub_id,
        "filename": cfg.hf_filename,
        "revision": cfg.hf_revision,
        "cache_dir": cache_dir or _hf_cache_dir(),
        "endpoint": os.environ.get("HF_ENDPOINT") or None,
        "library_name": "sknet",
    }
    if not progress and "tqdm_class" in inspect.signature(hf_hub_download).parameters:
        from tqdm.auto import tqdm

        class _Silent(tqdm):
            def __init__(self, *args: Any, **kw: Any) -> None:
                kw["disable"] = True
                super().__init__(*args, **kw)

        kwargs["tqdm_class"] = _Silent
    where = kwargs["cache_dir"] or "the Hugging Face cache"
    try:  # a cached file: no request at all, but its sha256 is checked again
        cached = Path(hf_hub_download(**kwargs, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    else:
        _verify_cached(cfg, cached, _hub_expected(cfg, cached))
        return cached
    if _offline():
        raise _unavailable(cfg, "offline (HF_HUB_OFFLINE is set) and not in the cache", where)
    if (why := _unreachable(_hub_endpoint(kwargs["endpoint"]))) is not None:
        raise _unavailable(cfg, why, where)  # at once: no retry loop without a network
    try:
        path = Path(hf_hub_download(**kwargs))
    except _network_errors() as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _unavailable(cfg, f"{type(exc).__name__}: {reason}", where) from exc
    blob = path.resolve()
    _check(cfg, path, _hub_expected(cfg, path), extra=(blob,) if blob != path else ())
    return path


def _hub_expected(cfg: PretrainedCfg, path: Path) -> str | None:
    """The sha256 a Hub file must have: the entry's, else the one the Hub published as its LFS
    id (the Hub cache names blobs by it)."""
    if cfg.sha256 is not None:
        return cfg.sha256
    blob = path.resolve()
    return blob.name if re.fullmatch(r"[0-9a-f]{64}", blob.name) else None


def _fetch_url(cfg: PretrainedCfg, cache_dir: str | None, progress: bool) -> Path:
    assert cfg.url is not None
    folder = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()) / "checkpoints"
    dst = folder / cfg.file_name
    if dst.is_file():  # a cache hit: no request, but its sha256 is checked again
        _verify_cached(cfg, dst, cfg.sha256)
        return dst
    if _offline():
        raise _unavailable(cfg, "offline (HF_HUB_OFFLINE is set) and not in the cache", dst)
    if (why := _unreachable(cfg.url)) is not None:
        raise _unavailable(cfg, why, dst)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(cfg.url, str(dst), hash_prefix=None, progress=progress)
    except _network_errors() as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _unavailable(cfg, f"{type(exc).__name__}: {reason}", dst) from exc
    _check(cfg, dst, cfg.sha256)
    return dst


_LOCAL: dict[str, Path] = {}  # tag -> a local copy standing in for its download


@contextlib.contextmanager
def local_weights(name_or_tag: str, path: str | os.PathLike) -> Iterator[Path]:
    """Within the block, :func:`fetch_pretrained` of ``name_or_tag`` returns ``path`` (a local
    copy of the published file: no download, nothing written to the cache), as
    ``checkpoint_path=`` does for one call. A copy whose entry publishes a sha256 is checked
    against it. What ``sknet ... --checkpoint-path FILE`` uses where the command's library call
    takes no ``checkpoint_path``."""
    cfg = get_pretrained_cfg(name_or_tag)
    file = Path(path).expanduser()
    if not file.is_file():
        raise MissingFileError(f"no weights file at {path}")
    previous = _LOCAL.get(cfg.name)
    _LOCAL[cfg.name] = file
    try:
        yield file
    finally:
        if previous is None:
            _LOCAL.pop(cfg.name, None)
        else:
            _LOCAL[cfg.name] = previous


def _local_copy(cfg: PretrainedCfg) -> Path | None:
    file = _LOCAL.get(cfg.name)
    if file is not None and cfg.sha256 is not None:
        digest = sha256_of(file)
        if not digest.startswith(cfg.sha256.lower()):
            raise ChecksumError(
                f"{cfg.name}: {file} has sha256 {digest[:16]}..., but {cfg.location} publishes "
                f"{cfg.sha256[:16]}...: it is not a copy of {cfg.file_name}"
            )
    return file


def fetch_pretrained(
    name_or_tag: str, *, cache_dir: str | os.PathLike | None = None, progress: bool = True
) -> Path:
    """Download the weights file of ``name_or_tag`` once; return its local path.

    Args:
        name_or_tag: ``"<model>.<tag>"`` or ``"<model>"`` (its default tag).
        cache_dir: a folder to cache into instead of the Hub cache (``HF_HOME``/``HF_HUB_CACHE``)
            or ``torch.hub.get_dir()/checkpoints`` (``TORCH_HOME``).
        progress: show a download progress bar.

    Raises:
        WeightsUnavailableError: offline, unreachable, not found, or no direct download (the
            official Caffe files): the message says how to place the file by hand.
        ChecksumError: the downloaded file does not have the expected sha256 (it is deleted),
            or the cached file no longer has it (it is kept; the message says to delete it).
            A file is checked against the entry's sha256, or for a Hub file without one
            against the sha256 the Hub publishes as its LFS id, on every call.
    """
    cfg = get_pretrained_cfg(name_or_tag)
    if (local := _local_copy(cfg)) is not None:
        return local
    cache = os.fspath(cache_dir) if cache_dir is not None else None
    if cfg.hf_hub_id is not None:
        return _fetch_hub(cfg, cache, progress)
    if cfg.url is not None:
        return _fetch_url(cfg, cache, progress)
    if cfg.converter == "caffe":
        out = f"{cfg.model}_{cfg.tag}.safetensors"
        raise WeightsUnavailableError(
            f"{cfg.name} ({cfg.source}) has no direct download: get {cfg.file_name} by hand "
            f"from {cfg.manual_url} (linked from {SKNET_README}) and pass it with "
            f"--checkpoint-path {cfg.file_name} (checkpoint_path= in Python), or convert it "
            f"once with `sknet convert --from caffe {cfg.file_name} {out}` and use {out}"
        )
    raise WeightsUnavailableError(
        f"{cfg.name} ({cfg.source}) has no direct download: get {cfg.file_name} by hand from "
        f"{cfg.manual_url} and pass it with --checkpoint-path FILE (checkpoint_path=FILE in "
        "Python)"
    )

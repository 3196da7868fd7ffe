"""File helpers shared by every command that writes: atomic writes, output safety, run locks.

* :func:`atomic_save` writes through a temporary file in the same folder, fsyncs it and renames
  it onto the target, so a reader (or a crash) never sees a partial file. Failures of the file
  system (read-only, disk full, a folder where a file should be) come out as ``OSError`` naming
  the target path, never as an error from inside the writer.
* :func:`check_output` is the one policy for output paths: never one of the command's own
  sources, an existing file only with ``force``, no folder where a file is wanted, and the
  suffix checked against the format.
* :class:`RunLock` is an exclusive, non-blocking lock on a run directory (``fcntl.flock`` on
  ``RUN/.lock``), held for as long as a run writes into it; the kernel releases it when the
  process dies, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from sknet.errors import OutputError, RunDirError

__all__ = ["RunLock", "atomic_save", "atomic_write_text", "check_output", "same_file"]


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _path_error(exc: BaseException, path: Path, action: str) -> OSError:
    """An ``OSError`` that names ``path`` and the OS reason (for the CLI's one-line report)."""
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        code = exc.errno
    else:  # e.g. torch's "[enforce fail at inline_container.cc] ... file write failed"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        code = errno.EIO
    err = OSError(code, f"cannot {action} {path}: {reason}")
    err.filename = str(path)
    return err


def atomic_save(write: Callable[[str], Any], path: str | os.PathLike) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a partial file.

    The file gets the permissions an ordinary ``open(path, "w")`` would give it (0666 minus the
    umask), not the 0600 of the temporary file it is written as. Any failure of the file system
    raises ``OSError`` naming ``path`` (the temporary file is removed).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise _path_error(exc, path, "write") from exc
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        _unlink_quietly(tmp)
        if isinstance(exc, RuntimeError) and not _looks_like_io(exc):
            raise
        raise _path_error(exc, path, "write") from exc
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return path


def _looks_like_io(exc: RuntimeError) -> bool:
    text = str(exc).lower()
    return any(w in text for w in ("file write failed", "inline_container", "no space", "errno"))


def _unlink_quietly(tmp: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_save(lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), path)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (following links; False if either is missing)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def check_output(
    path: str | os.PathLike,
    *,
    sources: Iterable[str | os.PathLike] = (),
    protected_dirs: Iterable[str | os.PathLike] = (),
    force: bool = False,
    suffixes: Sequence[str] | None = None,
    what: str = "output",
) -> Path:
    """Check that ``path`` may be written by a command; return it as a ``Path``.

    Args:
        sources: files the command read (weights, checkpoints): never written, even with
            ``force``.
        protected_dirs: run directories the command read: none of their files may be written
            except new ones (``force`` does not apply inside them either).
        force: allow replacing an existing file that is not a source.
        suffixes: allowed suffixes (lower case, with the dot); another suffix is an error.
        what: how the error message names this output (e.g. ``"--out"``).

    Raises:
        OutputError: naming the path, what is wrong and what to do.
    """
    out = Path(path).expanduser()
    for src in sources:
        if same_file(out, src):
            raise OutputError(
                f"{what} {out} is the file this command reads ({src}); writing it would destroy "
                "the source: choose another path"
            )
    if suffixes is not None and out.suffix.lower() not in suffixes:
        raise OutputError(
            f"{what} {out}: expected a file ending in {' or '.join(suffixes)} "
            f"(got {out.suffix or 'no suffix'})"
        )
    if out.exists():
        if out.is_dir():
            raise OutputError(f"{what} {out} is a directory; give a file path")
        for d in protected_dirs:
            if _inside(out, Path(d)):
                raise OutputError(
                    f"{what} {out} would overwrite a file of the run directory {d}: choose a "
                    "path outside it, or a new file name"
                )
        if not force:
            raise OutputError(f"{what} {out} already exists; pass --force to replace it")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"{what} {out}: {parent} is a file, not a directory")
    return out


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


class RunLock:
    """An exclusive lock on a run directory, for ``with RunLock(run_dir): ...``.

    Raises :class:`~sknet.errors.RunDirError` at once (no waiting) when another process holds
    it. The lock file ``RUN/.lock`` holds the owner's pid for the error message; the lock itself
    is the ``flock`` on it, which dies with the process.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / ".lock"
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks, run unguarded
            return self
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _path_error(exc, self.path, "lock") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise RunDirError(
                f"run directory {self.run_dir} is in use by another sknet process (pid {owner}); "
                "wait for it to finish or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

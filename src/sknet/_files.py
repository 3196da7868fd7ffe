"""File helpers shared by every command that writes: atomic writes, output safety, run locks.

* :func:`atomic_save` writes through a temporary file in the same folder, fsyncs it and renames
  it onto the target, so a reader (or a crash) never sees a partial file. Failures of the file
  system (read-only, disk full, a folder where a file should be) come out as ``OSError`` naming
  the target path, never as an error from inside the writer.
* :func:`check_output` is the one policy for output paths: never one of the command's own
  sources, never an existing file of a run directory the command reads (decided from where the
  output really lands, whatever path named the source), an existing file only with ``force``,
  no folder where a file is wanted, a name the file system can hold, and the suffix checked
  against the format.
* :func:`check_out_arg` refuses an empty ``--out`` (which would otherwise mean "the current
  folder" or "a default place").
* :func:`csv_cell` escapes a name for a CSV cell so that a spreadsheet never runs it as a
  formula.
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

__all__ = [
    "RUN_DIR_MARKERS",
    "RunLock",
    "atomic_save",
    "atomic_write_text",
    "check_out_arg",
    "check_output",
    "check_path_length",
    "csv_cell",
    "free_bytes",
    "name_max",
    "path_error",
    "path_max",
    "run_dir_of",
    "same_file",
]

#: What makes a folder a run directory (see :mod:`sknet.train.rundir`): any one of these.
RUN_DIR_MARKERS: tuple[str, ...] = ("config.toml", "metrics.csv", "checkpoints", "summary.json")

#: A write that failed while the file system had less free space than this (bytes) failed
#: because the disk is full, whatever the writer said ("unexpected pos", "file write failed").
LOW_SPACE_BYTES = 4 * 2**20

#: The first characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection).
FORMULA_CHARS = ("=", "+", "-", "@", "\t", "\r")


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def path_error(exc: BaseException, path: str | os.PathLike, action: str = "write") -> OSError:
    """An ``OSError`` that names ``path`` and the OS reason (for the CLI's one-line report);
    a write that failed because the disk is full says "No space left on device", whatever the
    writer said (see :func:`atomic_save`)."""
    path = Path(path)
    if not (isinstance(exc, OSError) and exc.errno == errno.ENOSPC):
        exc = _disk_full(exc, path.parent) or exc
    return _path_error(exc, path, action)


def _path_error(exc: BaseException, path: Path, action: str) -> OSError:
    """An ``OSError`` that names ``path`` and the OS reason (for the CLI's one-line report)."""
    code: int | None
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        reason = os.strerror(errno.ENOSPC)  # "No space left on device", whatever the writer said
        code = exc.errno
    elif isinstance(exc, OSError):
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
    raises ``OSError`` naming ``path`` (the temporary file is removed, a previous file at ``path``
    is left intact). A full disk is reported as ``ENOSPC`` ("No space left on device") even where
    the writer says something else (``torch.save``: "unexpected pos"): a write that failed with
    less than :data:`LOW_SPACE_BYTES` free on the file system is taken as one.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path.name), suffix=".tmp", dir=path.parent)
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
        if isinstance(exc, RuntimeError) and not _looks_like_io(exc):
            _unlink_quietly(tmp)
            raise
        full = _disk_full(exc, path.parent)  # before the partial file frees its space
        _unlink_quietly(tmp)
        raise _path_error(full or exc, path, "write") from exc
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return path


def _tmp_prefix(name: str, limit: int = 200) -> str:
    """``.NAME.`` for the temporary file, NAME cut to ``limit`` bytes so that the temporary
    name (prefix, 8 random characters, ``.tmp``) fits where the final name fits."""
    while len(os.fsencode(name)) > limit:
        name = name[:-1]
    return f".{name}."


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes an unprivileged user may still write on the file system of ``folder`` (None when
    the platform cannot say)."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return None
    return int(st.f_bavail) * int(st.f_frsize)


def _disk_full(exc: BaseException, folder: Path) -> OSError | None:
    """An ``ENOSPC`` error naming the target when the failed write ran out of disk space.

    Writers do not always say so: ``torch.save`` reports a full disk as "[enforce fail at
    inline_container.cc] unexpected pos" or "file write failed". A failed write on a file system
    with (almost) no space left is taken as a full disk.
    """
    if isinstance(exc, OSError) and exc.errno not in (None, 0, errno.EIO):
        return None  # says why itself (ENOSPC, EDQUOT, EROFS, EACCES, ...)
    free = free_bytes(folder)
    if free is None or free >= LOW_SPACE_BYTES:
        return None
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), None)


def _looks_like_io(exc: RuntimeError) -> bool:
    text = str(exc).lower()
    words = ("file write failed", "inline_container", "unexpected pos", "no space", "errno")
    return any(w in text for w in words)


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


def check_out_arg(value: str | os.PathLike | None, what: str = "--out") -> str | None:
    """``value`` unchanged, or :class:`OutputError` when it is empty or only blanks.

    An empty ``--out`` is almost always a shell variable that was not set (``--out "$DIR"``);
    taking it as "the current folder" or "the default place" would write where nobody asked.
    ``None`` (the option not given) passes.
    """
    if value is None:
        return None
    text = os.fspath(value)
    if not text.strip():
        raise OutputError(f"{what} is empty ({text!r}); give a path (an unset shell variable?)")
    return text


def csv_cell(value: object) -> object:
    """``value`` safe for a CSV cell that a spreadsheet will open.

    A string that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read by
    Excel, LibreOffice and Google Sheets as a formula (OWASP: CSV injection); it gets a single
    quote in front (``=HYPERLINK(...)`` -> ``'=HYPERLINK(...)``), which spreadsheets show as
    text. Use it for text that comes from names (file names, class names, messages), not for
    numbers: anything that is not a ``str`` is returned unchanged, so ``-0.5`` written from a
    float stays a number.
    """
    if isinstance(value, str) and value.startswith(FORMULA_CHARS):
        return "'" + value
    return value


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # ENAMETOOLONG and the like: nothing is there
        return False


def _existing_ancestor(path: Path) -> Path:
    parent = path
    while not _exists(parent) and parent != parent.parent:
        parent = parent.parent
    return parent


def _pathconf(folder: str | os.PathLike, name: str, default: int) -> int:
    try:
        value = os.pathconf(folder, name)
    except (OSError, ValueError, AttributeError):  # AttributeError: no pathconf (Windows)
        return default
    return int(value) if value and value > 0 else default


def name_max(folder: str | os.PathLike) -> int:
    """The longest file name (bytes) the file system of ``folder`` (or of its nearest existing
    ancestor) accepts; 255 when it cannot say."""
    return _pathconf(_existing_ancestor(Path(folder).expanduser().absolute()), "PC_NAME_MAX", 255)


def path_max(folder: str | os.PathLike) -> int:
    """The longest path (bytes) the system accepts under ``folder``; 4096 when it cannot say."""
    return _pathconf(_existing_ancestor(Path(folder).expanduser().absolute()), "PC_PATH_MAX", 4096)


def run_dir_of(source: str | os.PathLike) -> Path | None:
    """The run directory that ``source`` belongs to, resolved (symlinks followed), or None.

    A folder is a run directory when it holds one of :data:`RUN_DIR_MARKERS` (``config.toml``,
    ``metrics.csv``, ``checkpoints/``, ``summary.json``). ``source`` may be the run directory
    itself, a file in it (``RUN/model.safetensors``) or a checkpoint
    (``RUN/checkpoints/last.pt``), named by any path (relative, through a link).
    """
    try:
        real = Path(source).expanduser().resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop on older Pythons
        return None
    candidates = [real] if real.is_dir() else []
    candidates.append(real.parent)
    if real.parent.name == "checkpoints":
        candidates.append(real.parent.parent)
    for folder in candidates:
        if any((folder / m).exists() for m in RUN_DIR_MARKERS):
            return folder
    return None


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
        sources: files (or run directories) the command reads (weights, checkpoints): never
            written, even with ``force``. The run directory each belongs to (see
            :func:`run_dir_of`: ``RUN/model.safetensors``, ``RUN/checkpoints/last.pt``, ``RUN``
            itself, named by any path) is protected as if it were in ``protected_dirs``.
        protected_dirs: more run directories the command reads: none of their existing files
            may be written (``force`` does not apply inside them); new files may.
        force: allow replacing an existing file that is not a source.
        suffixes: allowed suffixes (lower case, with the dot); another suffix is an error.
        what: how the error message names this output (e.g. ``"--out"``).

    Where the output lands is decided from its real path (symlinks followed), so no spelling
    of a path (``./RUN/../RUN/x``, a link to a run's file) gets around the protection. The file
    name must fit the file system (its ``NAME_MAX``, usually 255 bytes) and the whole path its
    ``PATH_MAX``: a name too long is refused here, before any work, not after it.

    Raises:
        OutputError: naming the path, what is wrong and what to do.
    """
    out = Path(check_out_arg(path, what) or "").expanduser()
    check_path_length(out, what)
    source_list = list(sources)
    for src in source_list:
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
        runs = [Path(d) for d in protected_dirs]
        runs += [r for r in map(run_dir_of, source_list) if r is not None]
        for d in runs:
            if _inside(out, d):
                raise OutputError(
                    f"{what} {out} would overwrite a file of the run directory {d} that this "
                    "command reads (even with --force): choose a path outside it, or a new "
                    "file name"
                )
        if not force:
            raise OutputError(f"{what} {out} already exists; pass --force to replace it")
    parent = _existing_ancestor(out.parent)
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"{what} {out}: {parent} is a file, not a directory")
    return out


def check_path_length(out: str | os.PathLike, what: str = "output") -> None:
    """:class:`OutputError` when the last name of ``out`` or the whole path is longer than the
    file system takes (it would fail with "File name too long" only when written)."""
    out = Path(out).expanduser()
    limit = name_max(out.parent)
    for part in (*out.parent.parts, out.name):  # a folder to create must fit too
        size = len(os.fsencode(part))
        if size > limit:
            kind = "file name" if part == out.name else "folder name"
            raise OutputError(
                f"{what} {str(out)[:60]}...: the {kind} {part[:20]}... is {size} bytes, "
                f"longer than the {limit} the file system allows; choose a shorter name"
            )
    full = len(os.fsencode(os.path.abspath(out)))
    limit = path_max(out.parent)
    if full >= limit:  # PATH_MAX counts the terminating NUL
        raise OutputError(
            f"{what} {str(out)[:60]}...: the path is {full} bytes, longer than the {limit - 1} "
            "the system allows; choose a shorter path"
        )


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
    is the ``flock`` on it, which dies with the process. :meth:`release` removes the file while
    still holding the lock, so a finished run leaves no ``.lock`` behind; :meth:`acquire`
    re-checks after locking that the file it locked is still the one at ``RUN/.lock`` (not one
    a finishing owner just removed) and retries otherwise, so two processes never both hold it.
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
        for _ in range(100):  # a retry only follows another owner's release: never many
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
                    f"run directory {self.run_dir} is in use by another sknet process "
                    f"(pid {owner}); wait for it to finish or stop it first"
                ) from None
            if self._is_current(fd):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                self._fd = fd
                return self
            os.close(fd)  # the owner removed that file on release: lock the new one
        raise RunDirError(  # pragma: no cover - needs 100 lost races in a row
            f"run directory {self.run_dir}: could not lock {self.path} (it keeps being replaced)"
        )

    def _is_current(self, fd: int) -> bool:
        """Whether the open ``fd`` is the file now at :attr:`path` (same device and inode)."""
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)

    def release(self) -> None:
        if self._fd is not None:
            try:
                if self._is_current(self._fd):
                    self.path.unlink()  # while the flock is held: nobody else holds this file
            except OSError:
                pass  # a read-only directory: the lock file stays, the lock is released anyway
            finally:
                os.close(self._fd)  # closing the descriptor releases the flock
                self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

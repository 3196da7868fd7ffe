"""The exceptions sknet raises for problems a user can fix.

Every error that sknet raises on purpose for bad input (a wrong path, a corrupt file, an invalid
option) is a :class:`SKNetError`. The concrete classes also derive from the built-in exception a
caller would expect (``ValueError``, ``FileNotFoundError``, ...), so ``except ValueError`` keeps
working. The command line prints a :class:`SKNetError` as one line; anything else that escapes
a command is a bug and is printed with its traceback (see :mod:`sknet.cli.main`).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FileFormatError",
    "OutputError",
    "OverrideError",
    "RunDirError",
    "SKNetError",
]


class SKNetError(Exception):
    """Base class of the errors a user can fix; ``str(exc)`` says what is wrong and what to do."""


class ConfigError(SKNetError, ValueError):
    """An invalid option, override, preset or argument value."""


class OverrideError(ConfigError, TypeError):
    """A config field (model override or training setting) that does not exist or has the
    wrong type; a ``TypeError`` and a ``ValueError`` both, as callers caught either before."""


class FileFormatError(SKNetError, ValueError):
    """A file that is not what it should be: corrupt, foreign, unsafe or of another model."""


class OutputError(SKNetError, ValueError):
    """An output path that cannot be used: the command's own source, an existing file without
    ``--force``, a directory where a file is needed, or a suffix that does not match the format."""


class RunDirError(SKNetError, RuntimeError):
    """A run directory that cannot be used now: locked by another process, or holding results
    that a new or resumed run would overwrite."""

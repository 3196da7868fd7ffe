"""The exceptions sknet raises for problems a user can fix.

Every error that sknet raises on purpose for bad input (a wrong path, a corrupt file, an invalid
option, a tensor of the wrong shape) is a :class:`SKNetError`, and every such class is defined
here. The concrete classes also derive from the built-in exception a caller would expect
(``ValueError``, ``TypeError``, ``FileNotFoundError``, ...), so ``except ValueError`` keeps
working. The command line decides by type alone: it prints a :class:`SKNetError` (and an
``OSError`` naming a file, which the operating system raised about the user's path) as one
line; anything else that escapes a command is a bug and is printed with its traceback (see
:mod:`sknet.cli.main`).

A plain built-in exception is raised only where Python's protocols require it (for example
``AttributeError`` from ``__getattr__``, ``KeyError`` from a mapping's ``__getitem__``); each such
place says so in a comment.
"""

from __future__ import annotations

from os import PathLike

__all__ = [
    "ChecksumError",
    "ConfigError",
    "CorruptImageError",
    "DataError",
    "DependencyError",
    "DeviceError",
    "FileFormatError",
    "InputError",
    "InputTypeError",
    "MissingFileError",
    "NonFiniteLossError",
    "OutputError",
    "OverrideError",
    "RunDirError",
    "SKNetError",
    "TrainingError",
    "UnsupportedError",
    "WeightsUnavailableError",
]


class SKNetError(Exception):
    """Base class of the errors a user can fix; ``str(exc)`` says what is wrong and what to do."""


# ----------------------------------------------------------------------------------- options


class ConfigError(SKNetError, ValueError):
    """An invalid option, override, preset, argument value or model name."""


class OverrideError(ConfigError, TypeError):
    """A config field (model override or training setting) that does not exist or has the
    wrong type; a ``TypeError`` and a ``ValueError`` both, as callers caught either before."""


class UnsupportedError(SKNetError, NotImplementedError):
    """A combination sknet does not implement (e.g. an export format for a model variant)."""


class DependencyError(SKNetError, ImportError):
    """An optional dependency that a requested feature needs is not installed; the message
    names the package and the extra that installs it (``pip install "sknet[onnx]"``)."""


class DeviceError(SKNetError, RuntimeError):
    """A requested device (``cuda``, ``mps``, a rank's GPU) that is not available here."""


# ------------------------------------------------------------------------------------ inputs


class InputError(SKNetError, ValueError):
    """A tensor or batch a model or layer cannot take: wrong rank, channels, or an image smaller
    than the model's total stride."""


class InputTypeError(InputError, TypeError):
    """An input of the wrong type or dtype (not a tensor, integer pixels, another device)."""


class DataError(SKNetError, ValueError):
    """A data set that cannot be used as given: missing or mismatched classes, empty splits,
    too few readable images, an invalid synthetic-data setting."""


# ------------------------------------------------------------------------------------- files


class MissingFileError(SKNetError, FileNotFoundError):
    """A file or folder the user named that does not exist."""


class FileFormatError(SKNetError, ValueError):
    """A file that is not what it should be: corrupt, foreign, unsafe or of another model."""


class CorruptImageError(FileFormatError):
    """An image file that PIL recognises but cannot decode: corrupt, truncated or hostile.

    ``reason`` is the decoder's complaint (one line); ``str(exc)`` names the file too.
    """

    def __init__(self, path: PathLike[str] | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: corrupt or truncated image file ({reason})")


class WeightsUnavailableError(SKNetError, OSError):
    """A weights file that cannot be had: offline, unreachable, missing, or no direct download.

    The message names the file, its source and how to place it by hand (``checkpoint_path=``).
    """


class ChecksumError(SKNetError, ValueError):
    """A downloaded or cached file whose sha256 is not the published one: a fresh download has
    been deleted; a cached file is kept and the message says to delete it."""


class OutputError(SKNetError, ValueError):
    """An output path that cannot be used: the command's own source, an existing file without
    ``--force``, a directory where a file is needed, or a suffix that does not match the format."""


# -------------------------------------------------------------------------------------- runs


class RunDirError(SKNetError, RuntimeError):
    """A run directory that cannot be used now: locked by another process, or holding results
    that a new or resumed run would overwrite."""


class TrainingError(SKNetError, RuntimeError):
    """A training run that cannot go on (e.g. more unreadable images than ``max_bad``); the last
    good checkpoint is kept."""


class NonFiniteLossError(TrainingError):
    """The training loss became NaN or Inf; the run stops and keeps its last good checkpoint."""

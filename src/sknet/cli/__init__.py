"""The ``sknet`` command line; it uses only sknet's public API.

Conventions every command follows (``tests/core/test_cli_convention.py`` checks them):

* **Sources.** A model source is a positional ``SOURCE``: a registry name (random weights), a
  registry name with a weights tag (published weights), a ``.safetensors`` file, a checkpoint
  or a run directory - whatever :func:`sknet.load` accepts.
* **Outputs.** ``--out`` names where the command writes. It is a *file* for commands that
  write one file (``eval``: JSON, ``export``: ONNX/pt2, ``predict``: CSV/JSON/JSONL; its suffix
  must match the format) and a *folder* for commands that write several (``train``: the run
  directory, ``analyze``, ``ablate``, ``bench``). ``convert`` takes ``SRC DST`` positionally,
  as ``cp`` does. An output never replaces the command's own source; an existing output file
  is replaced only with ``--force``; files are written atomically.
* **Printing.** Commands print a human-readable table. ``--json`` prints JSON instead and
  ``--markdown`` prints Markdown instead: both are flags that change what goes to stdout, never
  file names.
* **Progress.** Progress bars go to stderr and only when it is a terminal; ``--progress`` /
  ``--no-progress`` force them on or off.
* **Devices.** ``--device`` takes ``auto`` (the default everywhere: the GPU when there is one),
  ``cpu``, ``cuda`` or ``cuda:N``; anything else is an error.
* **Choices** (``--data``, ``--amp``, ``--format``, ...) are validated by the parser, which lists
  the valid values.
* **Help.** Every option has a help text; ``--help`` shows the defaults and at least one
  example (``sknet COMMAND --help``).
* **Errors.** A problem with the input is one line, ``sknet COMMAND: error: ...``, exit status
  1; anything else is a bug and shows its traceback, exit status 2 (see
  :func:`sknet.cli.main.report_error`).
"""

from __future__ import annotations

import argparse
import sys

__all__ = [
    "AMP_CHOICES",
    "DEVICE_HELP",
    "HelpFormatter",
    "add_progress",
    "examples",
    "show_progress",
]

AMP_CHOICES = ("none", "bf16", "fp16")
DEVICE_HELP = "auto (the GPU if there is one), cpu, cuda or cuda:N"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's and epilog's line breaks and shows every non-empty default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or not action.option_strings:
            return text
        if action.default in (None, False, argparse.SUPPRESS) or action.default == []:
            return text
        return f"{text} (default: %(default)s)"


def examples(*lines: str) -> str:
    """An ``epilog`` listing example command lines."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def add_progress(p: argparse.ArgumentParser, what: str = "progress bar") -> None:
    """``--progress`` / ``--no-progress``; the default (None) is: only on a terminal."""
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"show a {what} on stderr (default: only when stderr is a terminal)",
    )


def show_progress(args: argparse.Namespace) -> bool:
    """``--progress``/``--no-progress`` when given, else whether stderr is a terminal."""
    chosen = getattr(args, "progress", None)
    if chosen is not None:
        return bool(chosen)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False

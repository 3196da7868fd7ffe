"""Entry point of the ``sknet`` command.

Each sub-command lives in its own module of this package and exposes
``register(subparsers) -> None``, which adds its parser and sets ``func=run`` where
``run(args: argparse.Namespace) -> int`` is the exit status.

How errors are reported is decided here, in :func:`report_error`, for every command:

* errors a user can fix are printed as one line, ``sknet CMD: error: ...`` (exit status 1):
  every :class:`sknet.errors.SKNetError` (sknet raises one on purpose for every problem with
  the input) and an ``OSError`` that names a file (raised by the operating system about a path
  the user gave: missing, read-only, disk full, a folder where a file should be);
* anything else is a bug: the traceback is printed, with a line saying so (exit status 2). A
  plain ``ValueError`` or ``TypeError`` is a bug too, wherever it comes from: the decision is
  by type alone, never by guessing from the traceback who raised it.

``SKNET_DEBUG=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence

import sknet
from sknet.cli import HelpFormatter
from sknet.errors import SKNetError

# The sub-command modules, in the order `sknet --help` lists them.
COMMANDS: tuple[str, ...] = (
    "info",
    "convert",
    "train",
    "eval",
    "predict",
    "analyze",
    "ablate",
    "bench",
    "export",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sknet",
        description="Selective Kernel Networks: models, training, analysis and tools.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"sknet.cli.{name}").register(sub)
    for command in sub.choices.values():  # one help layout for every command
        command.formatter_class = HelpFormatter
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        print(sknet.__version__)
        return 0
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("sknet: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return report_error(args.command, exc)


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a problem with the user's input rather than a bug, by its type alone:
    an :class:`~sknet.errors.SKNetError`, or an ``OSError`` naming a file (see module docs)."""
    if isinstance(exc, SKNetError):
        return True
    return isinstance(exc, OSError) and exc.filename is not None


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = str(exc.strerror)
        if str(exc.filename) not in text:
            text = f"{exc.filename}: {text}"
        return text
    text = str(exc) if str(exc) else type(exc).__name__
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = str(exc.args[0])
    return " ".join(text.split("\n")[:1]) if "Traceback" in text else text.strip()


def report_error(command: str | None, exc: BaseException) -> int:
    """Print ``exc`` for the user as the module docs say; return the exit status."""
    name = f"sknet {command}" if command else "sknet"
    if is_user_error(exc):
        if os.environ.get("SKNET_DEBUG"):
            traceback.print_exception(exc)
        print(f"{name}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    traceback.print_exception(exc)
    print(
        f"{name}: internal error ({type(exc).__name__}): this is a bug in sknet, not a problem "
        "with your input; please report it with the traceback above",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

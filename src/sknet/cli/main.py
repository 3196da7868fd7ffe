"""Entry point of the ``sknet`` command.

Each sub-command lives in its own module of this package and exposes
``register(subparsers) -> None``, which adds its parser and sets ``func=run`` where
``run(args: argparse.Namespace) -> int`` is the exit status.

How errors are reported is decided here, in :func:`report_error`, for every command:

* errors a user can fix are printed as one line, ``sknet CMD: error: ...`` (exit status 1):
  every :class:`sknet.errors.SKNetError`; an ``OSError`` that names a file (a path the user
  gave: missing, read-only, disk full, a folder where a file should be); and the built-in
  ``ValueError``/``TypeError``/``FileNotFoundError``/``KeyError``/``RuntimeError`` when sknet's
  own code raised it on purpose (the raising frame is in the sknet package and not in a
  library it called);
* anything else is a bug: the traceback is printed, with a line saying so (exit status 2).

``SKNET_DEBUG=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from sknet.cli import HelpFormatter

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
        import sknet

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


_USER_BUILTINS = (ValueError, TypeError, FileNotFoundError, KeyError, RuntimeError)


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a problem with the user's input rather than a bug (see module docs)."""
    from sknet.errors import SKNetError

    if isinstance(exc, SKNetError):
        return True
    if isinstance(exc, OSError) and exc.filename is not None:
        return True
    if isinstance(exc, _USER_BUILTINS):
        return _raised_by_sknet(exc)
    return False


def _raised_by_sknet(exc: BaseException) -> bool:
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return False
    filename = os.path.abspath(last.tb_frame.f_code.co_filename)
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return filename.startswith(package + os.sep)


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
    import traceback

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

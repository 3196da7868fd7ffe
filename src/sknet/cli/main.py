"""Entry point of the ``sknet`` command.

Each sub-command lives in its own module of this package and exposes
``register(subparsers) -> None``, which adds its parser and sets ``func=run`` where
``run(args: argparse.Namespace) -> int`` is the exit status. Errors a user can fix
(``ValueError``, ``TypeError``, ``FileNotFoundError``, ``KeyError``) are printed as one line,
without a stack trace; ``SKNET_DEBUG=1`` shows the trace.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# The sub-command modules, in the order `sknet --help` lists them.
COMMANDS: tuple[str, ...] = (
    "info",
    "convert",
    "train",
    "eval",
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
    except (ValueError, TypeError, FileNotFoundError, KeyError, RuntimeError) as exc:
        if os.environ.get("SKNET_DEBUG"):
            raise
        print(f"sknet {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

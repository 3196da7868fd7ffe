"""``--checkpoint-path FILE``: a local copy of the published weights a ``SOURCE`` tag names,
read instead of downloading them (``checkpoint_path=`` of the Python API)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

from sknet.errors import ConfigError, MissingFileError
from sknet.hub.download import local_weights
from sknet.hub.load import looks_like_path
from sknet.hub.table import get_pretrained_cfg
from sknet.models import list_models

__all__ = ["add_checkpoint_path", "checkpoint_path_of", "standing_in"]


def add_checkpoint_path(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint-path",
        metavar="FILE",
        default=None,
        help="a local copy of the published weights SOURCE names (MODEL.TAG, e.g. "
        "sknet50.ra_in1k): read instead of downloading them, for offline use (the Python "
        "API's checkpoint_path=)",
    )


def checkpoint_path_of(args: argparse.Namespace) -> Path | None:
    """The checked ``--checkpoint-path`` (None without it): SOURCE must be a weights tag."""
    file = getattr(args, "checkpoint_path", None)
    if file is None:
        return None
    source = str(args.source)
    if looks_like_path(source):
        raise ConfigError(
            f"--checkpoint-path stands in for the download of published weights, but SOURCE "
            f"{source} is a file or folder already: drop --checkpoint-path"
        )
    if "." not in source or source in list_models():
        raise ConfigError(
            f"--checkpoint-path needs SOURCE to name the published weights FILE is a copy of, "
            f"as MODEL.TAG (e.g. {source}.<tag>: `sknet info {source}` lists them); a weights "
            "file of your own is given as SOURCE itself"
        )
    get_pretrained_cfg(source)  # an unknown tag raises, naming the known ones
    path = Path(file).expanduser()
    if not path.is_file():
        raise MissingFileError(f"--checkpoint-path: no weights file at {file}")
    return path


@contextlib.contextmanager
def standing_in(args: argparse.Namespace) -> Iterator[None]:
    """Within the block, the weights SOURCE names are read from ``--checkpoint-path`` (for
    library calls that take a source only)."""
    path = checkpoint_path_of(args)
    if path is None:
        yield
        return
    with local_weights(str(args.source), path):
        yield

"""What :func:`sknet.predict.predict` reads: inputs expanded to image files, images read and
preprocessed.

Inputs (:func:`expand_inputs`): image files, directories (searched recursively for files with
an image extension, :data:`IMAGE_EXTENSIONS`; hidden files and folders are skipped) and glob
patterns (``**`` recurses). A file named explicitly is always tried, whatever its extension, so
that a file that is not an image is *reported* rather than silently left out. A path that does
not exist, a pattern that matches nothing and an input that yields no image at all are errors.

Preprocessing (:func:`preprocess_transform`) is the weights' own (:class:`sknet.Preprocess`,
recorded with the weights): the image is read as 8-bit RGB, upright
(:func:`sknet.data.load_image` for files, the same conversion for in-memory PIL images: the
EXIF orientation applied as photo viewers do, 16-bit, 32-bit and float grayscale scaled to 8
bits, RGBA and palette images flattened), its short side resized to ``resize`` and the central
``input_size`` square cropped; then ``ToTensor``, the channel order (BGR for Caffe weights,
flipped before normalising, so ``mean``/``std`` are in that order) and ``Normalize(mean, std)``.

Two documented choices where the recorded preprocessing says nothing about foreign images:

* ``resize=None`` (models trained on the built-in synthetic shapes or CIFAR, whose images come
  at the training size) means "use the image at its own size"; an image of another size is
  resized to ``input_size x input_size`` (aspect ratio not kept, nothing cropped away).
* an image smaller than the model's input (even smaller than its total stride of 32) is
  *enlarged* by the same resize to ``input_size``; it is never refused. Enlarging adds no
  detail: predictions on tiny images are only as good as the upsampled image.

``import sknet`` imports this package, so PIL, torchvision and :mod:`sknet.data` (which imports
both) are imported inside the functions that use them: ``import sknet`` stays fast.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import torch

from sknet.errors import (
    CorruptImageError,
    FileFormatError,
    InputError,
    InputTypeError,
    MissingFileError,
)
from sknet.preprocess import Preprocess

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["IMAGE_EXTENSIONS", "ImageInput", "expand_inputs", "preprocess_transform"]

#: Extensions (lower case) that a directory search picks up.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".ppm",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)

_GLOB_CHARS = re.compile(r"[*?\[]")

ImageInput = Union[str, os.PathLike, "Image.Image"]


# ----------------------------------------------------------------------------------- inputs


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _search_dir(folder: Path) -> list[Path]:
    found = []
    visited: set[str] = set()  # linked folders are followed, but a link cycle only once
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in visited:
            dirs[:] = []
            continue
        visited.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in sorted(files) if _is_image_name(Path(f))]
    return found


def expand_inputs(inputs: ImageInput | Iterable[ImageInput]) -> list[Any]:
    """Image files named by ``inputs``: files, directories (recursive) and glob patterns.

    In-memory PIL images among the inputs are passed through in their place.

    Order: the inputs' order, each directory and pattern sorted; a file reached twice is kept
    once. Directories and pattern matches contribute files with an image extension
    (:data:`IMAGE_EXTENSIONS`, any case), hidden ones excluded; an explicitly named file is kept
    whatever its extension (to be reported if it is not an image).

    Raises:
        MissingFileError: a path that does not exist and is not a pattern (a
            ``FileNotFoundError``).
        InputError: no inputs, a pattern that matches nothing, or no image found at all (a
            ``ValueError``).
        InputTypeError: an input that is neither a path nor a PIL image (a ``TypeError``).
    """
    from PIL import Image

    single = isinstance(inputs, (str, os.PathLike, Image.Image))
    items = [inputs] if single else list(inputs)  # type: ignore[arg-type]
    if not items:
        raise InputError("no input given: name image files, folders or glob patterns")
    out: list[Any] = []
    seen: set[str] = set()
    folders: list[str] = []

    def add(p: Path) -> None:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            out.append(p)

    for item in items:
        if isinstance(item, Image.Image):
            out.append(item)
            continue
        if not isinstance(item, (str, os.PathLike)):
            raise InputTypeError(f"inputs must be paths or PIL images, got {type(item).__name__}")
        text = os.fspath(item)
        path = Path(text).expanduser()
        if path.is_dir():
            folders.append(text)
            for f in _search_dir(path):
                add(f)
        elif path.exists():
            add(path)
        elif _GLOB_CHARS.search(text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            found = [
                f
                for m in map(Path, matches)
                for f in (_search_dir(m) if m.is_dir() else [m] if _is_image_name(m) else [])
            ]
            if not found:
                raise InputError(f"the pattern {text!r} matches no image file")
            for f in found:
                add(f)
        else:
            raise MissingFileError(f"no such file, folder or pattern match: {text}")
    if not out:
        where = ", ".join(folders) if folders else ", ".join(map(str, items))
        raise InputError(
            f"no images found in {where} (looked for {', '.join(IMAGE_EXTENSIONS)} files, "
            "recursively)"
        )
    return out


# ----------------------------------------------------------------------------- preprocessing


def preprocess_transform(pre: Preprocess) -> Callable[[Image.Image], torch.Tensor]:
    """PIL RGB image -> normalised ``(3, input_size, input_size)`` tensor: ``pre.transforms()``
    (:meth:`sknet.Preprocess.transforms`, the one eval transform), kept under this name.

    The returned function has a ``geometry`` attribute: the resize and crop alone, PIL image to
    PIL image (what the model sees, as drawn by :func:`sknet.predict.save_explanation`).
    """
    return pre.transforms()


# ----------------------------------------------------------------------------------- reading


def _reason(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type name when it has none: an error
    report always says why."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read(
    item: Any, index: int, transform: Callable[[Image.Image], torch.Tensor]
) -> tuple[str, torch.Tensor | None, str | None]:
    """``(path, tensor, None)`` for a readable image, ``(path, None, reason)`` otherwise.

    Files are read with :func:`sknet.data.load_image`, in-memory PIL images converted with
    :func:`sknet.data.to_rgb`: the same reader (EXIF orientation applied, 16/32-bit scaled) for
    both.
    """
    from PIL import Image, UnidentifiedImageError

    from sknet.data import load_image, to_rgb

    if isinstance(item, Image.Image):
        path = f"<image {index}>"
        try:
            return path, transform(to_rgb(item)), None
        except Exception as exc:  # the image's content is input: report it, go on
            return path, None, f"cannot preprocess the image: {_reason(exc)}"
    path = os.fspath(item)
    try:
        img = load_image(path)
    except UnidentifiedImageError:
        return path, None, "not an image file (unknown format, or a corrupt header)"
    except IsADirectoryError:
        return path, None, "is a directory"
    except FileNotFoundError:
        return path, None, "no such file"
    except PermissionError:
        return path, None, "permission denied"
    except CorruptImageError as exc:
        return path, None, f"corrupt or truncated image file ({exc.reason})"
    except FileFormatError as exc:  # e.g. over the decompression-bomb limit
        return path, None, _reason(exc).removeprefix(f"{path}: ")
    except Exception as exc:  # anything else the decoders raise on bad data
        return path, None, f"corrupt or truncated image file ({_reason(exc)})"
    try:
        return path, transform(img), None
    except Exception as exc:
        return path, None, f"cannot preprocess the image: {_reason(exc)}"

"""Real image datasets read from local files only (nothing is ever downloaded).

* :func:`build_cifar` reads the "CIFAR-10/100 python version" pickled batches directly (no md5
  check, so tiny test files work too) and validates their content.
* :func:`build_imagefolder` indexes an ImageNet-style ``DIR/{train,val}/<class>/<image>`` tree
  with :class:`torchvision.datasets.ImageFolder`; corrupt images are logged, recorded and (in
  training) replaced by the next readable sample instead of killing a long run (up to
  ``max_bad`` of them). In evaluation they are marked with label -1 and not counted.
* :func:`load_image` reads any image PIL can open as 8-bit RGB, upright (EXIF orientation
  applied), scaling 16- and 32-bit grayscale correctly (PIL's own ``convert("RGB")`` clips
  them to white); it is the one image reader of predict, evaluation and training.
* :func:`align_classes` matches the classes of a split to a reference list *by name*.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from sknet.errors import (
    ConfigError,
    CorruptImageError,
    FileFormatError,
    MissingFileError,
    TrainingError,
)

__all__ = [
    "CIFAR_SPECS",
    "CIFARDataset",
    "CorruptImageError",
    "RobustImageFolder",
    "align_classes",
    "build_cifar",
    "build_imagefolder",
    "load_image",
    "to_rgb",
]

logger = logging.getLogger("sknet.data")

PathLike = str | os.PathLike[str]
Transform = Callable[[Any], Any]

# --------------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------------

#: Layout of the official "python version" archives, once extracted.
CIFAR_SPECS: dict[str, dict[str, Any]] = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "label_key": "labels",
        "names_key": "label_names",
        "num_classes": 10,
        "archive": "cifar-10-python.tar.gz ('CIFAR-10 python version')",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "label_key": "fine_labels",
        "names_key": "fine_label_names",
        "num_classes": 100,
        "archive": "cifar-100-python.tar.gz ('CIFAR-100 python version')",
    },
}

_CIFAR_PIXELS = 3 * 32 * 32

# Globals a CIFAR pickle may reference (numpy arrays; Python 2 and 3 pickles, numpy 1 and 2).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("builtins", "bytearray"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the few globals needed for numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _load_pickle(path: Path) -> dict[str, Any]:
    """Load one CIFAR pickle (Python 2 or 3) into a dict with ``str`` keys."""
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="latin1").load()
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, ... on corrupt files
        raise FileFormatError(
            f"could not read CIFAR batch {path}: {type(exc).__name__}: {exc}. The file is "
            "corrupt or not a CIFAR python-version batch; re-extract the official archive."
        ) from exc
    if not isinstance(obj, dict):
        raise FileFormatError(
            f"CIFAR batch {path} holds a {type(obj).__name__}, expected a dict with 'data' and "
            "label keys"
        )
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _resolve_cifar_dir(name: str, data_dir: PathLike, files: list[str]) -> Path:
    """Find the folder holding the batches; raise a FileNotFoundError explaining the layout."""
    spec = CIFAR_SPECS[name]
    root = Path(data_dir).expanduser()
    candidates = [root / spec["folder"], root]
    for base in candidates:
        if all((base / f).is_file() for f in files):
            return base
    base = candidates[0]
    missing = [f for f in files if not (base / f).is_file()]
    all_files = spec["train"] + spec["test"]
    shown = "data_batch_1..5 and test_batch" if name == "cifar10" else " and ".join(all_files)
    raise MissingFileError(
        f"{name}: missing {', '.join(str(base / f) for f in missing)}. Expected "
        f"{base}/{{{shown}}} (and {spec['meta']} for class names): download "
        f"{spec['archive']} yourself and extract it into {root} so that it creates the "
        f"'{spec['folder']}' folder. Nothing is downloaded automatically."
    )


class CIFARDataset(Dataset):
    """CIFAR-10/100 read from the official pickled batches, without md5 checks.

    Items are ``(transform(PIL.Image), int label)``; without a transform the PIL image is returned.

    Args:
        name: ``"cifar10"`` or ``"cifar100"`` (fine labels).
        data_dir: Directory that contains ``cifar-10-batches-py`` / ``cifar-100-python``
            (the folder itself is accepted too).
        train: Training batches if true, else the test batch.
        transform: Optional callable applied to the PIL image.

    Raises:
        FileNotFoundError: Batch files missing (the message lists the expected layout).
        ValueError: A batch is corrupt, has the wrong shape or out-of-range labels.

    Note:
        Files are unpickled with a restricted unpickler that only allows numpy-array globals.
    """

    def __init__(
        self,
        name: str,
        data_dir: PathLike,
        train: bool = True,
        transform: Transform | None = None,
    ) -> None:
        if name not in CIFAR_SPECS:
            raise ConfigError(
                f"unknown CIFAR variant {name!r}; expected one of {list(CIFAR_SPECS)}"
            )
        spec = CIFAR_SPECS[name]
        self.name = name
        self.train = train
        self.transform = transform
        self.num_classes: int = spec["num_classes"]
        files = spec["train"] if train else spec["test"]
        self.root = _resolve_cifar_dir(name, data_dir, files)

        datas: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        for fname in files:
            path = self.root / fname
            batch = _load_pickle(path)
            data, lab = self._validate_batch(path, batch, spec["label_key"])
            datas.append(data)
            labels.append(lab)
        # (N, 3072) row-major RGB planes -> (N, 32, 32, 3) uint8 for PIL.
        self.data: np.ndarray = np.concatenate(datas).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        self.data = np.ascontiguousarray(self.data)
        self.targets: list[int] = np.concatenate(labels).astype(np.int64).tolist()
        self.classes: list[str] = self._load_class_names(spec)

    def _validate_batch(
        self, path: Path, batch: dict[str, Any], label_key: str
    ) -> tuple[np.ndarray, np.ndarray]:
        if "data" not in batch or label_key not in batch:
            raise FileFormatError(
                f"CIFAR batch {path} lacks 'data' and/or {label_key!r} (keys: {sorted(batch)}); "
                f"is it a {self.name} python-version batch?"
            )
        data = np.asarray(batch["data"])
        if data.ndim != 2 or data.shape[1] != _CIFAR_PIXELS:
            raise FileFormatError(
                f"CIFAR batch {path}: 'data' has shape {data.shape}, expected (N, {_CIFAR_PIXELS})"
            )
        if data.dtype != np.uint8:
            if data.size and (data.min() < 0 or data.max() > 255):
                raise FileFormatError(f"CIFAR batch {path}: pixel values outside 0..255")
            data = data.astype(np.uint8)
        lab = np.asarray(batch[label_key])
        if lab.ndim != 1 or len(lab) != len(data):
            raise FileFormatError(
                f"CIFAR batch {path}: {len(lab)} labels (shape {lab.shape}) for {len(data)} images"
            )
        if lab.size and (
            not np.issubdtype(lab.dtype, np.integer)
            or lab.min() < 0
            or lab.max() >= self.num_classes
        ):
            raise FileFormatError(
                f"CIFAR batch {path}: labels must be integers in [0, {self.num_classes})"
            )
        return data, lab

    def _load_class_names(self, spec: dict[str, Any]) -> list[str]:
        meta_path = self.root / spec["meta"]
        default = [str(i) for i in range(self.num_classes)]
        if not meta_path.is_file():
            logger.warning("%s not found; using numeric class names", meta_path)
            return default
        meta = _load_pickle(meta_path)
        names = meta.get(spec["names_key"])
        if names is None or len(names) != self.num_classes:
            raise FileFormatError(
                f"CIFAR meta file {meta_path}: expected {self.num_classes} names under "
                f"{spec['names_key']!r}"
            )
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image: Any = Image.fromarray(self.data[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, train={self.train}, size={len(self)}, "
            f"root={str(self.root)!r})"
        )


def build_cifar(
    name: str,
    data_dir: PathLike,
    train: bool,
    transform: Transform | None = None,
) -> CIFARDataset:
    """Load CIFAR-10 (``name="cifar10"``) or CIFAR-100 (``"cifar100"``) from ``data_dir``.

    Expected layout (the official python-version archives, extracted)::

        data_dir/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
        data_dir/cifar-100-python/{train, test, meta}

    Never downloads. Raises ``FileNotFoundError`` (naming the expected files) when batches are
    missing and ``ValueError`` for corrupt or malformed batches. The result has ``num_classes``.
    """
    return CIFARDataset(name, data_dir, train=train, transform=transform)


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


#: Formats whose integer samples have at most 16 bits: an ``I`` image read from them is 16-bit
#: (older Pillow reads 16-bit PNG as ``I``; PGM/PPM with a maximum value over 255 is ``I``,
#: already scaled by PIL to 0..65535).
_16BIT_FORMATS = frozenset({"PNG", "PPM"})

#: EXIF tag of the orientation (1: as stored ... 8: rotated 90 degrees clockwise to store it).
_EXIF_ORIENTATION = 0x0112


def _integer_bits(img: Image.Image) -> int:
    """16 or 32: how many bits the integer (``I*``) samples of ``img`` really have."""
    if img.mode.startswith("I;16"):
        return 16
    fmt = (img.format or "").upper()
    if fmt in _16BIT_FORMATS:
        return 16
    if fmt == "TIFF":
        bits = getattr(img, "tag_v2", {}).get(258)  # BitsPerSample
        values = bits if isinstance(bits, tuple) else (bits,)
        if values and all(isinstance(b, int) and b <= 16 for b in values):
            return 16
    return 32


def _to_uint8(arr: np.ndarray, mode: str, bits: int = 32) -> np.ndarray:
    """Grayscale samples of a 16-bit, 32-bit integer or float image as 8 bits.

    * 16-bit integers: the format's full range 0..65535 -> 0..255 (``x / 257``), as viewers
      show them.
    * 32-bit integers: the image's own range min..max -> 0..255 (a constant image becomes
      0). A 32-bit image has no conventional white: dividing by 2**32-1 would turn every image
      black, and treating values under 65536 as 16-bit merged neighbouring values (100 and 110
      both became 0).
    * floats: [0, 1] -> 0..255; other values are refused (their scale is unknown).
    """
    if mode.startswith("I"):
        if not arr.size:
            raise FileFormatError("empty image")
        if bits <= 16 and arr.min() >= 0 and arr.max() <= 65535:
            return (arr.astype(np.float64) / 257.0).round().clip(0, 255).astype(np.uint8)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        return ((arr.astype(np.float64) - lo) * scale).round().clip(0, 255).astype(np.uint8)
    if mode == "F":
        if arr.size and np.nanmin(arr) >= 0.0 and np.nanmax(arr) <= 1.0:
            return (np.nan_to_num(arr) * 255.0).round().astype(np.uint8)
        raise FileFormatError(
            "32-bit float image with values outside [0, 1]: its intensity scale is unknown"
        )
    raise FileFormatError(f"unsupported image mode {mode!r}")


def _orient(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF orientation says (as photo viewers and torchvision's
    ``decode_image(..., apply_exif_orientation=True)`` show it); ``img`` itself when it has no
    orientation, or an EXIF block too broken to read (logged: the pixels are still good)."""
    from PIL import ImageOps

    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        if orientation in (None, 1):
            return img
        turned = ImageOps.exif_transpose(img)
    except Exception as exc:  # a corrupt EXIF block must not make a readable image unreadable
        logger.warning(
            "ignoring the unreadable EXIF orientation of %s (%s: %s)",
            getattr(img, "filename", None) or "an image",
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
        return img
    return turned if turned is not None else img


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB, turned upright: the conversion :func:`load_image` applies.

    The EXIF orientation is applied first (a phone photo stored sideways comes out as viewers
    show it). 8-bit images are converted by PIL as usual (palette and RGBA flattened, grayscale
    repeated over the three channels). Integer and float grayscale is scaled as
    :func:`_to_uint8` says: 16-bit from 0..65535, 32-bit from the image's own min..max, float
    from [0, 1]; PIL's ``convert("RGB")`` would clip such images to pure white.
    """
    mode = img.mode
    bits = _integer_bits(img) if mode.startswith("I") else 32
    img = _orient(img)
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        gray = _to_uint8(np.asarray(img), mode, bits)
        if gray.ndim != 2:
            raise FileFormatError(f"unsupported {mode} image with shape {gray.shape}")
        return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), "RGB")
    if mode == "P" and "transparency" in img.info:
        return img.convert("RGBA").convert("RGB")
    return img.convert("RGB")


def load_image(path: PathLike) -> Image.Image:
    """Open an image file as 8-bit RGB, upright: the one image reader of predict, evaluation,
    training and analysis.

    The EXIF orientation is applied and the pixels converted as :func:`to_rgb` says (16-bit
    grayscale from 0..65535, 32-bit integer grayscale from its own min..max, float from [0, 1]).

    Raises:
        FileNotFoundError, IsADirectoryError, PermissionError: the file cannot be read.
        PIL.UnidentifiedImageError: not an image PIL knows (an ``OSError``).
        FileFormatError: an image over twice PIL's decompression-bomb limit
            (``PIL.Image.MAX_IMAGE_PIXELS``: about 179M pixels, refused before decoding);
            :class:`CorruptImageError` (a subclass) for a file PIL recognises but cannot decode.

    What PIL only warns about (an image over ``MAX_IMAGE_PIXELS``, a corrupt EXIF block) is
    logged as one line on the ``sknet.data`` logger, and the image is returned.
    """
    from PIL import UnidentifiedImageError

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Image.open(path) as img:
                img.load()
                out = to_rgb(img)
                if out is img:
                    out = img.copy()
    except (UnidentifiedImageError, FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Image.DecompressionBombError as exc:
        raise FileFormatError(
            f"{path}: {_first_line(exc)} (refused: PIL.Image.MAX_IMAGE_PIXELS)"
        ) from None
    except CorruptImageError:
        raise
    except FileFormatError as exc:  # to_rgb's refusal (a mode or range it cannot convert)
        raise CorruptImageError(path, _first_line(exc)) from exc
    except MemoryError:
        raise CorruptImageError(path, "too large to decode in memory") from None
    except Exception as exc:  # PIL raises OSError, SyntaxError, struct.error, ... on bad data
        raise CorruptImageError(path, _first_line(exc)) from exc
    # "Corrupt EXIF data", a large image: one log line each, not a warning with its source line
    for w in caught:
        loud = issubclass(w.category, (UserWarning, RuntimeWarning))
        level = logging.WARNING if loud else logging.DEBUG
        logger.log(level, "%s: %s", path, _first_line(w.message))
    return out


def _first_line(exc: object) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def align_classes(dataset: Any, classes: list[str] | tuple[str, ...], where: str) -> None:
    """Make ``dataset``'s labels index ``classes`` (a reference list, e.g. the training split's
    or the model's), matching class names, not positions.

    A dataset with the same classes in the same order is left as it is. An ImageFolder whose
    classes are a subset of ``classes`` (a validation folder without some classes) has its
    labels rewritten to the reference indices. A class that the reference does not have is an
    error naming it; so is a dataset of another kind whose class names differ.
    """
    own = [str(c) for c in getattr(dataset, "classes", None) or []]
    ref = [str(c) for c in classes]
    if own == ref:
        return
    unknown = [c for c in own if c not in ref]
    if unknown or not hasattr(dataset, "samples"):
        shown = ", ".join(unknown[:5] or own[:5])
        raise ConfigError(
            f"{where}: class(es) {shown}{' ...' if len(unknown) > 5 else ''} do not match the "
            f"{len(ref)} reference classes ({', '.join(ref[:5])}{' ...' if len(ref) > 5 else ''}); "
            "class folders must carry the same names as the training classes"
        )
    index = {c: i for i, c in enumerate(ref)}
    remap = [index[c] for c in own]
    dataset.samples = [(p, remap[t]) for p, t in dataset.samples]
    dataset.imgs = dataset.samples
    dataset.targets = [t for _, t in dataset.samples]
    dataset.class_to_idx = {c: index[c] for c in own}
    dataset.classes = list(ref)
    logger.info(
        "%s: %d of the %d classes present; labels matched to them by name",
        where,
        len(own),
        len(ref),
    )


# --------------------------------------------------------------------------------------------
# ImageFolder
# --------------------------------------------------------------------------------------------

_LAYOUT_HINT = (
    "expected an ImageNet-style layout DIR/train/<class_name>/<image>.jpg|png and "
    "DIR/val/<class_name>/<image> (one sub-folder per class, at least one image in each)"
)


def _check_imagefolder_layout(root: Path, split_dir: Path) -> None:
    if not split_dir.is_dir():
        raise MissingFileError(f"image folder {split_dir} does not exist; {_LAYOUT_HINT}")
    class_dirs = sorted((e for e in os.scandir(split_dir) if e.is_dir()), key=lambda e: e.name)
    if not class_dirs:
        raise MissingFileError(
            f"no class sub-folders in {split_dir}; {_LAYOUT_HINT} (root given: {root})"
        )
    empty = []
    for entry in class_dirs:
        has_image = False
        for _dirpath, _dirs, files in os.walk(entry.path, followlinks=True):
            if any(f.lower().endswith(IMG_EXTENSIONS) for f in files):
                has_image = True
                break
        if not has_image:
            empty.append(entry.path)
    if empty:
        shown = ", ".join(empty[:5]) + (f" (+{len(empty) - 5} more)" if len(empty) > 5 else "")
        raise MissingFileError(
            f"{len(empty)} class folder(s) without images ({', '.join(IMG_EXTENSIONS)}): "
            f"{shown}; {_LAYOUT_HINT}"
        )


class RobustImageFolder(ImageFolder):
    """:class:`~torchvision.datasets.ImageFolder` that survives a few corrupt images.

    When an image cannot be opened or decoded, the error is logged (logger ``"sknet.data"``)
    with the file name and the file is recorded in :attr:`bad_files`. With ``replace_bad=True``
    (training) the next readable sample (index + 1, wrapping around) is returned instead, and
    known-bad indices are skipped directly. With ``replace_bad=False`` (evaluation) a blank image
    with label -1 is returned, which evaluation does not count, so every readable image is
    counted exactly once. A file is counted and logged once per process. Once more than
    ``max_bad`` distinct bad files have been seen, a ``RuntimeError`` naming the count and the
    first files is raised. Images are read with :func:`load_image`.

    With ``DataLoader(num_workers > 0)`` each worker holds its own copy of :attr:`bad_files`
    and its own count (the limit then applies per worker); the log lines still name every file.
    With ``num_workers=0`` :attr:`bad_files` in the main process is complete.
    """

    def __init__(
        self,
        root: PathLike,
        transform: Transform | None = None,
        max_bad: int = 50,
        loader: Callable[[str], Any] = load_image,
        replace_bad: bool = True,
    ) -> None:
        super().__init__(str(root), transform=transform, loader=loader)
        if max_bad < 0:
            raise ConfigError(f"max_bad must be >= 0, got {max_bad}")
        self.max_bad = max_bad
        self.replace_bad = replace_bad
        self.bad_files: list[str] = []
        self._bad_indices: set[int] = set()
        self._lock = threading.Lock()

    @property
    def num_classes(self) -> int:
        """Number of class folders."""
        return len(self.classes)

    @property
    def num_bad(self) -> int:
        """Number of distinct unreadable files seen by this process."""
        return len(self.bad_files)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock", None)  # locks cannot be pickled (DataLoader workers with spawn)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _record_bad(self, index: int, path: str, exc: BaseException) -> None:
        with self._lock:
            if index in self._bad_indices:
                return
            self._bad_indices.add(index)
            self.bad_files.append(path)
            count = len(self.bad_files)
        logger.warning(
            "skipping unreadable image %s (%s: %s); %d bad file(s) so far (max_bad=%d)",
            path,
            type(exc).__name__,
            exc,
            count,
            self.max_bad,
        )
        if count > self.max_bad:
            first = ", ".join(self.bad_files[:5])
            raise TrainingError(
                f"{count} unreadable image(s) in {self.root}, more than max_bad={self.max_bad}; "
                f"first: {first}"
            ) from exc

    def __getitem__(self, index: int) -> tuple[Any, int]:
        n = len(self.samples)
        index = int(index) % n if n else int(index)
        if not self.replace_bad:
            return self._get_or_blank(index)
        for step in range(n):
            i = (index + step) % n
            if i in self._bad_indices:
                continue
            path, target = self.samples[i]
            try:
                sample = self.loader(path)
            except Exception as exc:  # decode/IO errors: PIL raises many different types
                self._record_bad(i, path, exc)
                continue
            if self.transform is not None:
                sample = self.transform(sample)
            if self.target_transform is not None:
                target = self.target_transform(target)
            return sample, target
        raise TrainingError(f"no readable image in {self.root} (all {n} files failed to load)")

    def _get_or_blank(self, index: int) -> tuple[Any, int]:
        path, target = self.samples[index]
        try:
            sample = self.loader(path)
        except Exception as exc:  # decode/IO errors: PIL raises many different types
            self._record_bad(index, path, exc)
            sample, target = Image.new("RGB", (8, 8)), -1
        if self.transform is not None:
            sample = self.transform(sample)
        if self.target_transform is not None and target >= 0:
            target = self.target_transform(target)
        return sample, target


def build_imagefolder(
    data_dir: PathLike,
    split: str = "train",
    transform: Transform | None = None,
    max_bad: int = 50,
) -> RobustImageFolder:
    """Index ``data_dir/<split>/<class>/*`` (``split`` is ``"train"`` or ``"val"``).

    Returns a :class:`RobustImageFolder` (with ``num_classes``, ``classes``, ``bad_files``);
    unreadable images are replaced by the next readable one in ``"train"`` and marked with
    label -1 (not counted by evaluation) in ``"val"``.
    Raises ``FileNotFoundError`` naming the path and the expected layout if the split folder is
    missing, has no class sub-folders, or a class folder holds no image.
    """
    if split not in ("train", "val"):
        raise ConfigError(f"split must be 'train' or 'val', got {split!r}")
    root = Path(data_dir).expanduser()
    split_dir = root / split
    _check_imagefolder_layout(root, split_dir)
    return RobustImageFolder(
        split_dir, transform=transform, max_bad=max_bad, replace_bad=split == "train"
    )

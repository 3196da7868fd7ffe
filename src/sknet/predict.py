"""Classify image files with a trained SKNet, optionally with what its SK units selected.

>>> import sknet
>>> results = sknet.predict("runs/demo", ["photos/", "more/*.png"], topk=3, explain=True)
>>> results[0].labels, results[0].scores
(('circle', 'ring', 'star'), (0.97, 0.02, 0.004))
>>> results[0].attention["SK_2_1"]   # mean Select weight of each branch, sums to 1
{'3x3 D1': 0.61, '3x3 D2': 0.39}

Inputs (:func:`expand_inputs`): image files, directories (searched recursively for files with
an image extension, :data:`IMAGE_EXTENSIONS`; hidden files and folders are skipped) and glob
patterns (``**`` recurses). A file named explicitly is always tried, whatever its extension, so
that a file that is not an image is *reported* rather than silently left out. A path that does
not exist, a pattern that matches nothing and an input that yields no image at all are errors.

Preprocessing is the weights' own (:class:`sknet.Preprocess`, recorded with the weights): the
image is read as 8-bit RGB, upright (:func:`sknet.data.load_image` for files, the same
conversion for in-memory PIL images: the EXIF orientation applied as photo viewers do, 16-bit,
32-bit and float grayscale scaled to 8 bits, RGBA and palette images flattened), its short side
resized to ``resize`` and the
central ``input_size`` square cropped; then ``ToTensor``, the channel order (BGR for Caffe
weights, flipped before normalising, so ``mean``/``std`` are in that order) and
``Normalize(mean, std)``.

Two documented choices where the recorded preprocessing says nothing about foreign images:

* ``resize=None`` (models trained on the built-in synthetic shapes or CIFAR, whose images come
  at the training size) means "use the image at its own size"; an image of another size is
  resized to ``input_size x input_size`` (aspect ratio not kept, nothing cropped away).
* an image smaller than the model's input (even smaller than its total stride of 32) is
  *enlarged* by the same resize to ``input_size``; it is never refused. Enlarging adds no
  detail: predictions on tiny images are only as good as the upsampled image.

Explanations (``explain=True``) come from the same forward pass, via
:func:`sknet.capture_attention`: for every SK unit with attention (``SK_2_1`` ... ``SK_5_3`` for
SKNet-50), the Select weights ``(M, C)`` of the image averaged over the C channels, one number
per branch, named by the branch's kernel (``BranchSpec.describe()``, e.g. ``"3x3 D2"``; the
stage dilation of a dense-prediction model is multiplied in). Units built without attention
(``aggregation="sum"``) have none and are left out.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import torch
from torch import nn

if TYPE_CHECKING:
    from PIL import Image

    from sknet.loading import ModelRecord, Preprocess

__all__ = [
    "IMAGE_EXTENSIONS",
    "Prediction",
    "branch_names",
    "expand_inputs",
    "explain_names",
    "predict",
    "preprocess_transform",
    "save_explanation",
]

log = logging.getLogger("sknet")

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
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Prediction:
    """The result for one image.

    Attributes:
        path: the file (as found by :func:`expand_inputs`), or ``"<image i>"`` for an in-memory
            PIL image.
        labels: the top-k class names, best first (``"class <i>"`` where the weights have none).
        indices: the top-k class indices.
        scores: the top-k softmax probabilities.
        error: why the file could not be classified (unreadable, not an image); then the three
            tuples are empty.
        attention: with ``explain=True``, ``{unit: {branch: mean attention}}`` in forward order;
            each unit's values sum to 1.
    """

    path: str
    labels: tuple[str, ...] = ()
    indices: tuple[int, ...] = ()
    scores: tuple[float, ...] = ()
    error: str | None = None
    attention: dict[str, dict[str, float]] | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str | None:
        """The top-1 class name (None for a failed image)."""
        return self.labels[0] if self.labels else None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "path": self.path,
            "labels": list(self.labels),
            "indices": list(self.indices),
            "scores": list(self.scores),
            "error": self.error,
        }
        if self.attention is not None:
            d["attention"] = self.attention
        return d


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
        FileNotFoundError: a path that does not exist and is not a pattern.
        ValueError: no inputs, a pattern that matches nothing, or no image found at all.
    """
    from PIL import Image

    single = isinstance(inputs, (str, os.PathLike, Image.Image))
    items = [inputs] if single else list(inputs)  # type: ignore[list-item, arg-type]
    if not items:
        raise ValueError("no input given: name image files, folders or glob patterns")
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
            raise TypeError(f"inputs must be paths or PIL images, got {type(item).__name__}")
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
                raise ValueError(f"the pattern {text!r} matches no image file")
            for f in found:
                add(f)
        else:
            raise FileNotFoundError(f"no such file, folder or pattern match: {text}")
    if not out:
        where = ", ".join(folders) if folders else ", ".join(map(str, items))
        raise ValueError(
            f"no images found in {where} (looked for {', '.join(IMAGE_EXTENSIONS)} files, "
            "recursively)"
        )
    return out


# ----------------------------------------------------------------------------- preprocessing


def preprocess_transform(pre: Preprocess) -> Callable[[Image.Image], torch.Tensor]:
    """PIL RGB image -> normalised ``(3, input_size, input_size)`` tensor (see module docs)."""
    from torchvision import transforms as T

    modes = {
        "bilinear": T.InterpolationMode.BILINEAR,
        "bicubic": T.InterpolationMode.BICUBIC,
        "nearest": T.InterpolationMode.NEAREST,
    }
    if pre.interpolation not in modes:
        raise ValueError(
            f"unknown interpolation {pre.interpolation!r}; expected one of {', '.join(modes)}"
        )
    if pre.channel_order not in ("RGB", "BGR"):
        raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {pre.channel_order!r}")
    mode = modes[pre.interpolation]
    size = int(pre.input_size)
    if pre.resize is None:
        steps: list[Any] = [T.Resize((size, size), interpolation=mode, antialias=True)]
    else:
        steps = [
            T.Resize(int(pre.resize), interpolation=mode, antialias=True),
            T.CenterCrop(size),
        ]
    geometry = T.Compose(steps)
    to_tensor = T.ToTensor()
    normalize = T.Normalize(list(pre.mean), list(pre.std))
    bgr = pre.channel_order == "BGR"

    def transform(img: Image.Image) -> torch.Tensor:
        x = to_tensor(geometry(img))
        if bgr:
            x = x.flip(0)
        return normalize(x)

    transform.geometry = geometry  # type: ignore[attr-defined]  # the crop the model sees
    return transform


# ----------------------------------------------------------------------------------- attention


def branch_names(unit: nn.Module) -> list[str]:
    """Names of an SK unit's branches in order (``"3x3 D1"``, ``"3x3 D2"``, ...), with the
    unit's stage dilation multiplied in; repeated names get ``#2``, ``#3``."""
    from sknet.layers.sk import BranchSpec

    dil = int(getattr(unit, "dilation", 1) or 1)
    names: list[str] = []
    for spec in unit.specs:  # type: ignore[union-attr]
        if dil != 1:
            spec = BranchSpec(spec.kernel_size, spec.dilation * dil, spec.groups)
        name = spec.describe()
        n = sum(1 for x in names if x == name or x.startswith(name + " #"))
        names.append(name if n == 0 else f"{name} #{n + 1}")
    return names


def _mean_attention(
    units: dict[str, nn.Module], att: Any, names: dict[str, list[str]]
) -> list[dict[str, dict[str, float]]]:
    """Per image: ``{unit: {branch: mean over channels}}`` from captured ``(N, M, C)``."""
    per_unit = {}
    for key in units:
        if key in att:
            per_unit[key] = att[key].float().mean(dim=2).cpu().tolist()  # (N, M)
    n = len(next(iter(per_unit.values()))) if per_unit else 0
    return [
        {k: dict(zip(names[k], (float(v) for v in vals[i]))) for k, vals in per_unit.items()}
        for i in range(n)
    ]


# ----------------------------------------------------------------------------------- predict


def _resolve(
    model_or_source: Any, preprocess: Any, classes: Sequence[str] | None
) -> tuple[nn.Module, Preprocess, tuple[str, ...] | None, ModelRecord | None]:
    from sknet.loading import ModelRecord, Preprocess, default_preprocess, load

    record: ModelRecord | None = None
    if isinstance(model_or_source, tuple) and len(model_or_source) == 2:
        model, record = model_or_source
        if not isinstance(record, ModelRecord):
            raise TypeError(
                "predict: a tuple must be (model, record) as returned by sknet.load, got a "
                f"{type(record).__name__} as its second item"
            )
    elif isinstance(model_or_source, nn.Module):
        model = model_or_source
    elif isinstance(model_or_source, (str, os.PathLike)):
        model, record = load(model_or_source)
    else:
        raise TypeError(
            "predict: expected a model, (model, record) from sknet.load, or a source (registry "
            f"name, weights file, checkpoint, run directory), got {type(model_or_source).__name__}"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"predict: expected an nn.Module, got {type(model).__name__}")
    if isinstance(preprocess, dict):
        preprocess = Preprocess.from_dict(preprocess)
    if preprocess is None:
        if record is not None:
            preprocess = record.preprocess
        else:
            size = int(getattr(model, "default_input_size", 224))
            preprocess = default_preprocess(size, None)
            log.info("predict: no preprocessing given for a bare model; using %s", preprocess)
    if not isinstance(preprocess, Preprocess):
        raise TypeError(
            f"predict: preprocess must be a sknet.Preprocess or a dict, got "
            f"{type(preprocess).__name__}"
        )
    if classes is None:
        classes = record.classes if record is not None else getattr(model, "class_names", None)
    return model, preprocess, tuple(str(c) for c in classes) if classes else None, record


def _reason(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type name when it has none: an error
    report always says why."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read(
    item: Any, index: int, transform: Callable
) -> tuple[str, torch.Tensor | None, str | None]:
    """``(path, tensor, None)`` for a readable image, ``(path, None, reason)`` otherwise.

    Files are read with :func:`sknet.data.load_image`, in-memory PIL images converted with
    :func:`sknet.data.real.to_rgb`: the same reader (EXIF orientation applied, 16/32-bit
    scaled) for both.
    """
    from PIL import Image, UnidentifiedImageError

    from sknet.data import CorruptImageError, load_image, to_rgb
    from sknet.errors import FileFormatError

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


def _classify(
    model: nn.Module,
    x: torch.Tensor,
    k: int,
    units: dict[str, nn.Module],
    unit_branches: dict[str, list[str]],
    explain: bool,
) -> list[tuple[list[int], list[float], dict[str, dict[str, float]] | None]]:
    """One forward pass: per image the top-k indices, probabilities and (explain) attention."""
    from sknet.models import capture_attention

    per_image: list[dict[str, dict[str, float]]] = []
    with torch.inference_mode():
        if explain:
            with capture_attention(model) as att:
                logits = model(x)
                per_image = _mean_attention(units, att, unit_branches)
        else:
            logits = model(x)
    top = logits.float().softmax(dim=1).topk(k, dim=1)
    idx, val = top.indices.cpu().tolist(), top.values.cpu().tolist()
    return [(idx[j], val[j], per_image[j] if explain else None) for j in range(len(idx))]


def predict(
    model_or_source: Any,
    images: ImageInput | Iterable[ImageInput],
    *,
    topk: int = 5,
    batch_size: int = 32,
    explain: bool = False,
    device: str | torch.device = "cpu",
    preprocess: Preprocess | dict[str, Any] | None = None,
    classes: Sequence[str] | None = None,
    progress: ProgressFn | None = None,
) -> list[Prediction]:
    """Classify images; one :class:`Prediction` per image, in input order.

    Args:
        model_or_source: anything :func:`sknet.load` accepts (registry name, ``name.tag``,
            weights file, checkpoint, run directory), its ``(model, record)`` result, or a
            model. A bare model uses ``preprocess`` (default: ImageNet-style preprocessing at
            its ``default_input_size``) and ``classes`` (default: its ``class_names``). The
            model is moved to ``device`` and run in eval mode (its training flag is restored).
        images: file paths, folders, glob patterns (see :func:`expand_inputs`) and/or PIL
            images.
        topk: how many classes to return per image (at most the number of classes).
        batch_size: images per forward pass.
        explain: also record each SK unit's mean attention per branch (same forward pass).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` or a ``torch.device``.
        preprocess: override the weights' preprocessing.
        classes: override the class names.
        progress: called as ``progress(done, total)`` after each batch.

    Files that cannot be read get a :class:`Prediction` with ``error`` set; the others are
    still classified.

    Raises:
        ValueError: bad ``topk``/``batch_size``, no images, a model without classifier or not
            of 3 input channels, ``explain`` on a model without SK attention.
        FileNotFoundError, FileFormatError, ConfigError: from loading the source.
    """
    from sknet.models import sk_units
    from sknet.train.distributed import resolve_device

    for name, value in (("topk", topk), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    items = expand_inputs(images)  # before loading: input errors are cheap to find
    model, pre, names, _ = _resolve(model_or_source, preprocess, classes)
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    if num_classes < 1:
        raise ValueError("predict needs a model with a classifier (num_classes >= 1)")
    if int(getattr(model, "in_chans", 3)) != 3:
        raise ValueError(
            f"predict reads RGB images; this model takes {model.in_chans} input channels"
        )
    if names is not None and len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a model with {num_classes} classes")
    k = min(topk, num_classes)
    units = {k_: u for k_, u in sk_units(model).items() if getattr(u, "attn", None) is not None}
    if explain and not units:
        raise ValueError(
            f"{getattr(model, 'model_name', type(model).__name__)} has no SK units with "
            "attention: there is nothing to explain"
        )
    unit_branches = {key: branch_names(u) for key, u in units.items()}
    transform = preprocess_transform(pre)
    was_training = model.training
    model.to(dev).eval()
    results: list[Prediction] = []
    total = len(items)
    try:
        for start in range(0, total, batch_size):
            batch = items[start : start + batch_size]
            chunk = [_read(im, start + j, transform) for j, im in enumerate(batch)]
            good = [x for _, x, err in chunk if err is None]
            outs: list[tuple[list[int], list[float], dict[str, dict[str, float]] | None]] = []
            if good:
                outs = _classify(model, torch.stack(good).to(dev), k, units, unit_branches, explain)
            it = iter(outs)
            for p, _, err in chunk:
                if err is not None:
                    results.append(Prediction(path=p, error=err))
                    continue
                ids, vals, att_i = next(it)
                results.append(
                    Prediction(
                        path=p,
                        labels=tuple(names[i] if names else f"class {i}" for i in ids),
                        indices=tuple(int(i) for i in ids),
                        scores=tuple(float(v) for v in vals),
                        attention=att_i,
                    )
                )
            if progress is not None:
                progress(min(start + batch_size, total), total)
    finally:
        model.train(was_training)
    return results


# ----------------------------------------------------------------------------------- naming


#: Length of the hash that makes a shortened figure name unique.
_HASH_CHARS = 10


def explain_names(paths: Sequence[str], max_bytes: int = 255) -> list[str]:
    """Distinct PNG file names for the explanation figures of ``paths``.

    Each name is the image's path relative to the folder all the images share, with folder
    separators as ``__`` and the extension dropped (``cats/a.jpg -> cats__a.png``); unsafe
    characters become ``_``. Where two images would still get the same name (``a.jpg`` and
    ``a.png``) the extension is kept (``a_jpg.png``), then a counter is added.

    A name longer than ``max_bytes`` (the file system's ``NAME_MAX``, 255 on most; images deep
    in nested folders) is shortened deterministically: its end (the image's own name and the
    nearest folders) is kept, after a hash of the full name, ``<hash>-<end>.png``; the same
    image always gets the same name, and different images different names.
    """
    if not paths:
        return []
    real = [os.path.abspath(p) for p in paths]
    try:
        common = os.path.commonpath([os.path.dirname(p) for p in real])
    except ValueError:  # different drives
        common = ""
    stems = []
    for p in real:
        rel = os.path.relpath(p, common) if common else os.path.basename(p)
        stems.append(_safe(os.path.splitext(rel)[0]))
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    names = []
    for p, s in zip(real, stems):
        if counts[s] > 1:
            ext = os.path.splitext(p)[1].lstrip(".")
            s = f"{s}_{_safe(ext)}" if ext else s
        names.append(s)
    used: set[str] = set()
    out = []
    for s in names:
        name, n = s, 1
        while name.lower() in used:  # case-insensitive file systems too
            n += 1
            name = f"{s}-{n}"
        used.add(name.lower())
        out.append(_shorten(name, max_bytes - len(".png")) + ".png")
    return out


def _shorten(stem: str, limit: int) -> str:
    """``stem`` if it fits in ``limit`` bytes (it is ASCII, see :func:`_safe`), else
    ``<hash of stem>-<its end>`` of exactly ``limit`` bytes."""
    if len(stem) <= limit:
        return stem
    import hashlib

    digest = hashlib.sha256(stem.encode()).hexdigest()[:_HASH_CHARS]
    keep = max(limit - _HASH_CHARS - 1, 0)
    tail = stem[len(stem) - keep :] if keep else ""
    return f"{digest}-{tail}" if tail else digest[: max(limit, 1)]


def _safe(text: str) -> str:
    text = text.replace(os.sep, "__").replace("/", "__")
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip(".")
    return text or "image"


# ----------------------------------------------------------------------------------- figures


def _with_field(name: str) -> str:
    """``"3x3 D2"`` -> ``"3x3 D2 (5x5 field)"``: the effective kernel a reader compares."""
    from sknet.layers.sk import BranchSpec

    try:
        spec = BranchSpec.parse(name.split(" #")[0])
    except ValueError:
        return name
    e = spec.effective_size
    return name if spec.dilation == 1 else f"{name} ({e}x{e} field)"


def _legend_labels(attention: dict[str, dict[str, float]], m: int) -> list[str]:
    labels = []
    for i in range(m):
        names = [list(v)[i] for v in attention.values() if len(v) > i]
        distinct = list(dict.fromkeys(names))
        if len(distinct) == 1:
            labels.append(_with_field(distinct[0]))
        else:  # e.g. a dilated last stage (output_stride 16): the names change with the stage
            labels.append(" / ".join(distinct[:3]))
    return labels


def save_explanation(
    prediction: Prediction,
    image: str | os.PathLike | Image.Image,
    out: str | os.PathLike,
    preprocess: Preprocess,
    *,
    title: str | None = None,
) -> Path:
    """Write ``out`` (PNG): the image as the model saw it, next to a stacked bar per SK unit
    (forward order) of its mean attention on each branch; the title gives the top classes.

    ``prediction`` must come from ``predict(..., explain=True)``. Uses matplotlib's object API
    with the Agg canvas (no pyplot state). The file is written atomically.
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image as PILImage

    from sknet._files import atomic_save
    from sknet.data import load_image, to_rgb

    if not prediction.ok or not prediction.attention:
        raise ValueError(
            f"{prediction.path}: no attention to draw (use predict(..., explain=True) on an "
            "image that was classified)"
        )
    img = to_rgb(image) if isinstance(image, PILImage.Image) else load_image(image)
    crop = preprocess_transform(preprocess).geometry(img)  # type: ignore[attr-defined]
    att = prediction.attention
    units = list(att)
    m = max(len(v) for v in att.values())
    values = np.zeros((len(units), m))
    for i, u in enumerate(units):
        values[i, : len(att[u])] = list(att[u].values())
    colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]

    width = 3.2 + max(3.0, 0.42 * len(units))
    fig = Figure(figsize=(width, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1, 2, width_ratios=[3.0, max(3.0, 0.42 * len(units))], wspace=0.3)
    ax_img = fig.add_subplot(grid[0])
    ax_img.imshow(np.asarray(crop), interpolation="nearest" if crop.width < 96 else "antialiased")
    ax_img.set_axis_off()
    ax_img.set_title(f"input ({crop.width}x{crop.height}, as the model sees it)", fontsize=8)

    ax = fig.add_subplot(grid[1])
    x = np.arange(len(units))
    bottom = np.zeros(len(units))
    for j, label in enumerate(_legend_labels(att, m)):
        ax.bar(x, values[:, j], 0.7, bottom=bottom, color=colors[j % len(colors)], label=label)
        if len(units) <= 24:
            for xi, (b, v) in enumerate(zip(bottom, values[:, j])):
                if v >= 0.1:
                    ax.text(
                        xi,
                        b + v / 2,
                        f"{v:.2f}",
                        ha="center",
                        va="center",
                        fontsize=6.5,
                        color="white",
                    )
        bottom += values[:, j]
    ax.axhline(1.0 / m, color="0.3", lw=0.8, ls="--")
    ax.set_xticks(
        x,
        units,
        rotation=45 if len(units) > 6 else 0,
        ha="right" if len(units) > 6 else "center",
        fontsize=7,
    )
    ax.set_xlim(-0.6, len(units) - 0.4)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean attention (over channels)", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(f"SK units' selection (dashed: equal share 1/{m})", fontsize=8)
    ax.legend(
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        frameon=False,
        title="branch",
        title_fontsize=7,
    )
    tops = ", ".join(
        f"{lab} {s:.1%}" for lab, s in zip(prediction.labels[1:3], prediction.scores[1:3])
    )
    head = title or os.path.basename(prediction.path)
    text = f"{head}: {prediction.labels[0]} ({prediction.scores[0]:.1%})"
    fig.suptitle(text + (f"   next: {tops}" if tops else ""), fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.86, bottom=0.2 if len(units) > 6 else 0.1, top=0.82)

    def write(tmp: str) -> None:  # "tight": the legend beside the bars is never cut off
        fig.savefig(tmp, format="png", bbox_inches="tight", pad_inches=0.1)

    return atomic_save(write, out)

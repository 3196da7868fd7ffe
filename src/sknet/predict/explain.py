"""The explanation figure of one prediction (``sknet predict --explain``), and its file name.

:func:`save_explanation` draws the image as the model saw it next to a stacked bar per SK unit
of its mean attention on each branch; :func:`explain_names` gives every image of a run a
distinct PNG file name that the file system can hold.

matplotlib, PIL and :mod:`sknet.data` are imported inside :func:`save_explanation`: ``import
sknet`` imports this package and stays fast without them.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sknet._files import atomic_save
from sknet.errors import ConfigError
from sknet.layers.sk import BranchSpec
from sknet.predict.inference import Prediction
from sknet.predict.inputs import preprocess_transform
from sknet.preprocess import Preprocess

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["explain_names", "save_explanation"]

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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image as PILImage

    from sknet.data import load_image, to_rgb

    if not prediction.ok or not prediction.attention:
        raise ConfigError(
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

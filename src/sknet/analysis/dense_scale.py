"""The paper's scale analysis (Figs. 3-4) per object, for detectors and segmenters with SK units.

The classification protocol (:mod:`sknet.analysis.attention`) enlarges the central object of an
image and reads the Select weights of every SK unit. A detection image holds several objects of
different sizes at once, so here the question is asked per object: does an SK unit put more
weight on its larger-kernel branch for larger objects?

Per-object attention (the definition used here)
-----------------------------------------------

An SK unit's Select weights are computed once per image: ``s = GAP(U)`` over the whole feature
map, ``U = sum_m U_m`` (the fused branch outputs), then ``a = softmax_M(fc_select(fc_reduce(s)))``.
That is one attention vector per image and cannot tell the objects of one image apart. The
per-object attention therefore replaces the global average by an average *inside the object's
box*, and applies the unit's own, unchanged attention layers (``unit.attn``) to it:

1. ``U`` of the unit is captured during the ordinary forward pass (forward hooks on the unit's
   branches; the forward itself is unchanged).
2. The box (``xyxy`` in input pixels) is mapped to the unit's output resolution by the unit's
   output stride: ``stride = side / W'`` (``W'`` the output width of the unit, seen at hook
   time) rounded to the nearest power of two (convolution strides are powers of two; the ratio
   differs from one where the input side is not a multiple of the stride, the map then having
   ``ceil(side / stride)`` cells). ``side`` is the width of the tensor the model's ``backbone``
   attribute receives where the model has one (a detector pads its batch, e.g. to a multiple
   of 32, before the backbone; boxes keep their pixel coordinates since padding is at the
   bottom/right), else ``image_size``. A box smaller than one cell is widened about its centre
   to one cell.
3. ``U`` is averaged inside the box with :func:`torchvision.ops.roi_align` (``aligned=True``,
   output size 1, adaptive sampling: ``ceil(box size in cells)`` bilinear samples per side,
   spaced evenly inside the box, averaged). For a box on cell boundaries this is exactly the
   mean of the cells inside it; for the whole image it is exactly ``GAP(U)``, so the per-object
   attention of a full-image box *is* the image-level attention (the tests check this). This is
   the unit's attention "as if the image were this object".
4. ``a_obj = unit.attn(pooled)`` gives ``(M, C)`` per object (soft-maxed over the M branches);
   the reported value is the attention on the larger-kernel branch (largest effective kernel,
   :func:`~sknet.analysis.attention.unit_infos`) averaged over channels. The image-level value
   of the same unit (its real Select weights in that forward pass, recorded by
   :func:`sknet.capture_attention`) is kept for reference.

Object size is ``sqrt(area)``: the target's ``"area"`` (visible mask pixels, COCO) where given,
else the box area. Crowd regions (``iscrowd == 1``) are skipped by default.

Statistics: Spearman's rank correlation of the large-branch attention with ``sqrt(area)``
(average ranks for ties). Its p-value is a two-sided permutation test with a fixed seed
(2000 permutations by default, ``p = (1 + #|rho_perm| >= |rho|) / (1 + permutations)``): exact
in expectation, needs no scipy, and reproducible; the smallest reportable p is
``1 / (1 + permutations)``. Above 10,000 objects the p-value is the normal limit of the same
permutation distribution, ``erfc(|rho| sqrt((n - 1) / 2))`` (its variance is exactly
``1 / (n - 1)``), which costs nothing and resolves p below ``1 / 2001``. Per size bin: mean
and standard deviation of the attention.

Forced branch
-------------

:func:`force_branch` makes every SK unit use a single branch (one-hot attention on its small or
large branch), to measure what each branch contributes: :func:`forced_branch_table` runs an
evaluation function normally and with each branch forced and reports the differences (e.g. AP
lost per size bin).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter
from torch import nn
from torchvision.ops import roi_align

from sknet._files import atomic_write_text
from sknet.analysis.attention import UnitInfo, unit_infos
from sknet.analysis.plots import save_figure
from sknet.errors import ConfigError, DataError, FileFormatError, InputError, InputTypeError
from sknet.layers.sk import SKConv
from sknet.models import capture_attention, sk_units

__all__ = [
    "FORMAT",
    "PERMUTATIONS",
    "PERMUTATION_MAX_N",
    "ObjectAttention",
    "force_branch",
    "forced_branch_table",
    "load_object_attention",
    "object_attention",
    "plot_object_attention",
    "spearman",
]

#: Identifier of the JSON layout written by :meth:`ObjectAttention.save_json`.
FORMAT = "sknet-dense-scale/1"

#: Default number of permutations of the Spearman p-value.
PERMUTATIONS = 2000

#: Above this many pairs the Spearman p-value uses the normal limit of the permutation
#: distribution (mean 0, variance 1 / (n - 1)) instead of drawing permutations.
PERMUTATION_MAX_N = 10_000

_TERCILE_NAMES = ("small", "medium", "large")


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x``, ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    i = 0
    n = len(x)
    while i < n:
        j = i
        while j + 1 < n and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return ranks


def spearman(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> tuple[float, float, int]:
    """Spearman's rank correlation of ``x`` and ``y``: ``(rho, p_value, n)``.

    Pairs with a non-finite value are dropped (``n`` counts the rest). Ties get average ranks.
    The p-value is two-sided, from ``permutations`` random permutations of ``y``'s ranks with a
    fixed ``seed``: ``(1 + #{|rho_perm| >= |rho|}) / (1 + permutations)``. Above
    :data:`PERMUTATION_MAX_N` pairs it is ``erfc(|rho| sqrt((n - 1) / 2))``, the normal limit of
    the same permutation distribution (whose variance is exactly ``1 / (n - 1)``). With fewer
    than 3 pairs, or a constant ``x`` or ``y``, rho and p are NaN.
    """
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    if xa.shape != ya.shape:
        raise InputError(f"spearman needs equally long x and y, got {xa.size} and {ya.size}")
    if permutations < 1:
        raise ConfigError(f"permutations must be >= 1, got {permutations}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep], ya[keep]
    n = int(xa.size)
    if n < 3:
        return math.nan, math.nan, n
    rx = _ranks(xa)
    ry = _ranks(ya)
    rx -= rx.mean()
    ry -= ry.mean()
    nx, ny = float(np.sqrt((rx * rx).sum())), float(np.sqrt((ry * ry).sum()))
    if nx == 0.0 or ny == 0.0:
        return math.nan, math.nan, n
    rho = float((rx * ry).sum() / (nx * ny))
    rho = max(-1.0, min(1.0, rho))
    if n > PERMUTATION_MAX_N:
        # the permutation distribution of a correlation has mean 0 and variance 1 / (n - 1)
        # exactly; for large n it is normal (and permutations would cost O(permutations * n))
        return rho, math.erfc(abs(rho) * math.sqrt((n - 1) / 2.0)), n
    # permutations of y's ranks, in chunks of at most ~2M values (cost O(permutations * n))
    gen = torch.Generator().manual_seed(int(seed))
    rxt, ryt = torch.from_numpy(rx), torch.from_numpy(ry)
    hits = 0
    chunk = max(1, min(permutations, 2_000_000 // n))
    done = 0
    while done < permutations:
        k = min(chunk, permutations - done)
        perm = torch.rand(k, n, generator=gen).argsort(dim=1)
        r = (ryt[perm] * rxt).sum(dim=1) / (nx * ny)
        hits += int((r.abs() >= abs(rho) - 1e-12).sum())
        done += k
    return rho, (1 + hits) / (1 + permutations), n


@dataclass(frozen=True)
class _Bin:
    name: str
    lo: float
    hi: float
    closed: bool  # hi included


def _bin_edges(b: Any) -> tuple[float, float]:
    """``(lo, hi)`` in sqrt(area) pixels of a size bin object (duck-typed)."""
    for lo_attr, hi_attr in (("lo", "hi"), ("low", "high"), ("min", "max"), ("sqrt_lo", "sqrt_hi")):
        if hasattr(b, lo_attr) and hasattr(b, hi_attr):
            return float(getattr(b, lo_attr)), float(getattr(b, hi_attr))
    for attr in ("sqrt_area_range", "sqrt_range", "range"):
        if hasattr(b, attr):
            lo, hi = getattr(b, attr)
            return float(lo), float(hi)
    if hasattr(b, "area_range"):  # area units (COCO areaRng): convert to sqrt(area)
        lo, hi = b.area_range
        return math.sqrt(float(lo)), math.sqrt(float(hi))
    raise InputTypeError(
        f"cannot read the edges of size bin {b!r}: give (name, lo, hi) tuples in sqrt(area) "
        "pixels, an ascending list of edges, or the number of equal-count bins"
    )


def _resolve_bins(bins: Any, sizes: np.ndarray) -> list[_Bin]:
    finite = sizes[np.isfinite(sizes)]
    if isinstance(bins, bool):
        raise InputTypeError(f"bins must be an int, a list of edges or size bins, got {bins!r}")
    if isinstance(bins, int):
        if bins < 1:
            raise ConfigError(f"the number of size bins must be >= 1, got {bins}")
        if finite.size == 0:
            return []
        edges = np.quantile(finite, np.linspace(0.0, 1.0, bins + 1))
        names = list(_TERCILE_NAMES) if bins == 3 else [f"bin{i + 1}" for i in range(bins)]
        return [
            _Bin(names[i], float(edges[i]), float(edges[i + 1]), i == bins - 1) for i in range(bins)
        ]
    if isinstance(bins, Mapping):
        return [_Bin(str(k), float(v[0]), float(v[1]), False) for k, v in bins.items()]
    items = list(bins)
    if not items:
        raise ConfigError("give at least one size bin")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        edges = [float(v) for v in items]
        if len(edges) < 2 or any(b <= a for a, b in pairwise(edges)):
            raise ConfigError(f"size bin edges must be >= 2 ascending values, got {edges}")
        return [
            _Bin(f"{edges[i]:g}-{edges[i + 1]:g}", edges[i], edges[i + 1], i == len(edges) - 2)
            for i in range(len(edges) - 1)
        ]
    out = []
    for b in items:
        if isinstance(b, (tuple, list)) and len(b) == 3:
            out.append(_Bin(str(b[0]), float(b[1]), float(b[2]), False))
        else:
            lo, hi = _bin_edges(b)
            out.append(_Bin(str(getattr(b, "name", f"{lo:g}-{hi:g}")), lo, hi, False))
    return out


def _json_float(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------


@dataclass
class ObjectAttention:
    """Per-object attention of SK units against object size.

    Object arrays are indexed ``[object]``. Per unit ``u``:

    * ``large[u]``: ``(K,)`` per-object attention on the larger-kernel branch, mean over channels;
    * ``branch_mean[u]``: ``(K, M)`` per-object attention per branch, mean over channels (rows
      sum to 1);
    * ``image_large[u]``: ``(num_images,)`` the unit's image-level attention on its larger
      branch (mean over channels), for reference; per object: ``image_large[u][image_index]``;
    * ``channels[u]``: ``(K, M, C)`` full per-object attention, only with ``keep_channels=True``.

    NaN marks a unit that did not run for an object's image.
    """

    units: dict[str, UnitInfo]
    image_size: int
    num_images: int
    image_index: np.ndarray  # (K,) int, position of the image in the probed stream
    labels: np.ndarray  # (K,) int
    sqrt_area: np.ndarray  # (K,) float
    box_size: np.ndarray  # (K, 2) float, box width and height in px
    large: dict[str, np.ndarray]
    branch_mean: dict[str, np.ndarray]
    image_large: dict[str, np.ndarray]
    strides: dict[str, float]
    feature_sizes: dict[str, tuple[int, int]]
    channels: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    _spearman_cache: dict[tuple[str, bool, int, int], tuple[float, float, int]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def num_objects(self) -> int:
        return int(self.labels.shape[0])

    def _unit(self, unit: str) -> str:
        if unit not in self.units:
            raise ConfigError(f"unknown SK unit {unit!r}; recorded: {', '.join(self.units)}")
        return unit

    def image_large_per_object(self, unit: str) -> np.ndarray:
        """The image-level large-branch attention of each object's image, ``(K,)``."""
        return self.image_large[self._unit(unit)][self.image_index]

    def spearman(
        self,
        unit: str,
        *,
        image_level: bool = False,
        permutations: int = PERMUTATIONS,
        seed: int = 0,
    ) -> tuple[float, float, int]:
        """Spearman ``(rho, p_value, n)`` of the large-branch attention vs ``sqrt(area)``.

        ``image_level=True`` correlates the image-level attention of each object's image
        instead (a reference: how much of the trend the per-image attention already shows).
        """
        self._unit(unit)
        key = (unit, image_level, permutations, seed)
        if key not in self._spearman_cache:
            y = self.image_large_per_object(unit) if image_level else self.large[unit]
            self._spearman_cache[key] = spearman(
                self.sqrt_area, y, permutations=permutations, seed=seed
            )
        return self._spearman_cache[key]

    def binned(self, unit: str, bins: Any = 3) -> list[dict[str, Any]]:
        """Mean and standard deviation of the large-branch attention per object-size bin.

        ``bins``: the number of equal-count bins of this result's ``sqrt(area)`` (3: terciles
        named small/medium/large; the last bin includes its upper edge); an ascending list of
        ``sqrt(area)`` edges; ``(name, lo, hi)`` tuples or a ``{name: (lo, hi)}`` mapping
        (``lo <= sqrt(area) < hi``); or size-bin objects with a ``name`` and ``lo``/``hi``
        (sqrt-area px) or ``area_range`` (area px) attributes.
        Returns one dict per bin: name, lo, hi, n, mean, sd (population sd; None where n = 0).
        """
        self._unit(unit)
        vals = self.large[unit]
        out = []
        for b in _resolve_bins(bins, self.sqrt_area):
            s = self.sqrt_area
            m = (s >= b.lo) & ((s <= b.hi) if b.closed else (s < b.hi)) & np.isfinite(vals)
            v = vals[m]
            out.append(
                {
                    "name": b.name,
                    "lo": _json_float(b.lo),
                    "hi": _json_float(b.hi),
                    "n": int(v.size),
                    "mean": float(v.mean()) if v.size else None,
                    "sd": float(v.std()) if v.size else None,
                    "image_mean": (
                        float(np.nanmean(self.image_large_per_object(unit)[m])) if v.size else None
                    ),
                }
            )
        return out

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON document (see :data:`FORMAT`); NaN becomes ``null``."""
        units: dict[str, Any] = {}
        for name, info in self.units.items():
            rho, p, n = self.spearman(name)
            irho, ip, _ = self.spearman(name, image_level=True)
            units[name] = {
                **info.as_dict(),
                "stride": self.strides.get(name),
                "feature_size": list(self.feature_sizes.get(name, ())),
                "spearman": {"rho": _json_float(rho), "p_value": _json_float(p), "n": n},
                "spearman_image_level": {"rho": _json_float(irho), "p_value": _json_float(ip)},
                "binned_terciles": self.binned(name, 3),
                "large": [_json_float(float(v)) for v in self.large[name]],
                "branch_mean": [[_json_float(float(v)) for v in r] for r in self.branch_mean[name]],
                "image_large": [_json_float(float(v)) for v in self.image_large[name]],
            }
        return {
            "format": FORMAT,
            "image_size": self.image_size,
            "num_images": self.num_images,
            "num_objects": self.num_objects,
            "definition": (
                "per-object attention: the unit's fused feature U = sum_m U_m averaged inside "
                "the object's box (roi_align, aligned, adaptive sampling; box / unit stride, "
                ">= 1 cell), passed through the unit's own attention layers; value = attention "
                "on the largest-kernel branch, mean over channels"
            ),
            "spearman_p_value": (
                f"two-sided permutation test ({PERMUTATIONS} permutations, seed 0); above "
                f"{PERMUTATION_MAX_N} objects its normal limit erfc(|rho| sqrt((n - 1) / 2))"
            ),
            "objects": {
                "image_index": [int(v) for v in self.image_index],
                "label": [int(v) for v in self.labels],
                "sqrt_area": [_json_float(float(v)) for v in self.sqrt_area],
                "box_size": [[float(w), float(h)] for w, h in self.box_size],
            },
            "units": units,
            "meta": json.loads(json.dumps(self.meta, default=str)),
        }

    def save_json(self, path: str | Path) -> Path:
        """Write :meth:`to_json_dict` atomically; returns the path."""
        text = json.dumps(self.to_json_dict(), indent=1, allow_nan=False)
        return atomic_write_text(path, text + "\n")


def load_object_attention(path: str | Path) -> ObjectAttention:
    """Read a file written by :meth:`ObjectAttention.save_json` (without ``channels``)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FileFormatError(f"cannot read object attention JSON {p}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise FileFormatError(f"{p} is not a {FORMAT} document")

    def arr(v: Any) -> np.ndarray:
        return np.array([math.nan if x is None else x for x in v], dtype=np.float64)

    try:
        objs = doc["objects"]
        units, large, bm, img, strides, fsz = {}, {}, {}, {}, {}, {}
        for name, u in doc["units"].items():
            units[name] = UnitInfo(
                name=name,
                channels=int(u["channels"]),
                branches=tuple(u["branches"]),
                effective_sizes=tuple(int(v) for v in u["effective_sizes"]),
                large=int(u["large_branch"]),
                small=int(u["small_branch"]),
                attention=str(u["attention"]),
            )
            large[name] = arr(u["large"])
            m = len(u["branches"])
            bm[name] = np.array(
                [[math.nan if x is None else x for x in r] for r in u["branch_mean"]],
                dtype=np.float64,
            ).reshape(-1, m)
            img[name] = arr(u["image_large"])
            strides[name] = float(u["stride"]) if u.get("stride") is not None else math.nan
            fsz[name] = tuple(int(v) for v in u.get("feature_size", ()))
        return ObjectAttention(
            units=units,
            image_size=int(doc["image_size"]),
            num_images=int(doc["num_images"]),
            image_index=np.array(objs["image_index"], dtype=np.int64),
            labels=np.array(objs["label"], dtype=np.int64),
            sqrt_area=arr(objs["sqrt_area"]),
            box_size=np.array(objs["box_size"], dtype=np.float64).reshape(-1, 2),
            large=large,
            branch_mean=bm,
            image_large=img,
            strides=strides,
            feature_sizes=fsz,  # type: ignore[arg-type]
            meta=dict(doc.get("meta", {})),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise FileFormatError(f"{p}: malformed {FORMAT} document ({exc})") from exc


# --------------------------------------------------------------------------------------------
# Collection
# --------------------------------------------------------------------------------------------


def _nearest_pow2(x: float) -> float:
    if x <= 0 or not math.isfinite(x):
        return x
    return float(2.0 ** round(math.log2(x)))


class _UnitProbe:
    """Forward hooks on one SK unit: sum the branch outputs, pool them per object box."""

    def __init__(self, name: str, unit: SKConv, info: UnitInfo, owner: _Probe) -> None:
        self.name = name
        self.unit = unit
        self.info = info
        self.owner = owner
        self.acc: torch.Tensor | None = None
        self.seen = 0
        self.calls = 0
        self.result: dict[str, torch.Tensor] | None = None
        self.stride = math.nan
        self.feature_size: tuple[int, int] = (0, 0)

    def branch_hook(self, _mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        # The unit's Select step may write into the branch outputs in place (inference),
        # so the sum is formed here, into a tensor of its own, before that happens.
        out = out.detach()
        self.acc = out.clone() if self.seen == 0 or self.acc is None else self.acc + out
        self.seen += 1

    def unit_hook(self, _mod: nn.Module, _inp: Any, _out: torch.Tensor) -> None:
        self.calls += 1
        if self.calls > 1:
            raise InputError(
                f"SK unit {self.name} ran more than once in one forward pass: per-object "
                "attention needs one call per image batch (a model that runs its backbone once)"
            )
        acc, self.acc, self.seen = self.acc, None, 0
        if acc is None:  # pragma: no cover - an SKConv always runs its branches
            return
        self.result = self.owner.pool(self, acc)


class _Probe:
    """Hooks on the chosen units of a model for one collection run."""

    def __init__(self, units: dict[str, SKConv], infos: dict[str, UnitInfo], image_size: int):
        self.image_size = image_size
        self.keep_channels = False
        self.rois: torch.Tensor | None = None  # (K, 5): batch index, x1, y1, x2, y2 in px
        self.backbone_width: int | None = None  # width of the backbone's input, this batch
        self.batch_size = 0
        self.probes = {n: _UnitProbe(n, units[n], infos[n], self) for n in infos}

    def backbone_hook(self, _mod: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.dim() == 4 and self.backbone_width is None:
            self.backbone_width = int(x.shape[-1])

    @contextmanager
    def attached(self, backbone: nn.Module | None = None) -> Iterator[None]:
        handles = []
        try:
            if backbone is not None:
                handles.append(backbone.register_forward_pre_hook(self.backbone_hook))
            for p in self.probes.values():
                for br in p.unit.branches:
                    handles.append(br.register_forward_hook(p.branch_hook))
                handles.append(p.unit.register_forward_hook(p.unit_hook))
            yield
        finally:
            for h in handles:
                h.remove()
            for p in self.probes.values():
                p.acc = None

    def start_batch(self, rois: torch.Tensor, batch_size: int) -> None:
        self.rois = rois
        self.batch_size = batch_size
        self.backbone_width = None
        for p in self.probes.values():
            p.calls, p.seen, p.acc, p.result = 0, 0, None, None

    def pool(self, probe: _UnitProbe, fused: torch.Tensor) -> dict[str, torch.Tensor]:
        unit, info = probe.unit, probe.info
        if fused.shape[0] != self.batch_size:
            raise InputError(
                f"SK unit {probe.name} saw a batch of {fused.shape[0]} for {self.batch_size} "
                "images: per-object attention needs the model to pass the images through as one "
                "batch, in order"
            )
        h, w = int(fused.shape[-2]), int(fused.shape[-1])
        stride = _nearest_pow2((self.backbone_width or self.image_size) / w)
        probe.stride, probe.feature_size = stride, (h, w)
        out: dict[str, torch.Tensor] = {}
        att = unit.last_attention  # (N, M, C) recorded by the unit itself in this pass
        if att is not None:
            out["image"] = att[:, info.large].float().mean(dim=-1).cpu()
        rois = self.rois
        if rois is None or rois.shape[0] == 0:
            return out
        boxes = rois.to(device=fused.device, dtype=torch.float32).clone()
        # at least one cell: widen boxes narrower than the stride about their centre
        for lo, hi in ((1, 3), (2, 4)):
            size = boxes[:, hi] - boxes[:, lo]
            centre = 0.5 * (boxes[:, hi] + boxes[:, lo])
            small = size < stride
            boxes[small, lo] = centre[small] - 0.5 * stride
            boxes[small, hi] = centre[small] + 0.5 * stride
        pooled = roi_align(
            fused.float(),
            boxes,
            output_size=1,
            spatial_scale=1.0 / stride,
            sampling_ratio=0,  # adaptive: ceil(box size in cells) samples per side
            aligned=True,
        )  # (K, C, 1, 1)
        attn = unit.attn
        assert attn is not None  # unit_infos keeps attention units only
        p = next(attn.parameters(), None)
        dtype = p.dtype if p is not None else torch.float32
        a = attn(pooled.to(dtype)).float()  # (K, M, C') soft-maxed over M
        a = a.expand(-1, -1, info.channels)
        out["branch_mean"] = a.mean(dim=-1).cpu()
        out["large"] = out["branch_mean"][:, info.large]
        if self.keep_channels:
            out["channels"] = a.cpu()
        return out


def _contains(parent: nn.Module, child: nn.Module) -> bool:
    return any(m is child for m in parent.modules())


def _split_batch(batch: Any) -> tuple[torch.Tensor, list[dict[str, Any]], list[str]]:
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise InputTypeError(
            "batches must yield (images, targets) or (images, targets, bad) as "
            f"sknet.data.dense.dense_collate does, got {type(batch).__name__}"
        )
    images, targets = batch[0], batch[1]
    bad = [str(b) for b in batch[2]] if len(batch) == 3 and batch[2] else []
    if isinstance(images, (list, tuple)):
        if not images:
            return torch.empty(0, 3, 0, 0), [], bad
        try:
            images = torch.stack(list(images))
        except RuntimeError as exc:
            raise InputError(
                f"images of one batch must share one size for per-object attention: {exc}"
            ) from exc
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"images must be a (B, 3, H, W) tensor, got {shape}")
    targets = list(targets)
    if len(targets) != images.shape[0]:
        raise DataError(f"a batch has {images.shape[0]} images but {len(targets)} targets")
    return images, targets, bad


def _objects(
    target: dict[str, Any], image_size: int, include_crowd: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (n, 4) clamped to the image, labels (n,), sqrt(area) (n,) of one target."""
    if not isinstance(target, Mapping) or "boxes" not in target:
        raise DataError("every target must be a dict with 'boxes' (N, 4) xyxy in pixels")
    boxes = torch.as_tensor(target["boxes"]).detach().cpu().to(torch.float64).reshape(-1, 4)
    n = boxes.shape[0]
    labels = (
        torch.as_tensor(target["labels"]).detach().cpu().reshape(-1).to(torch.int64)
        if "labels" in target
        else torch.zeros(n, dtype=torch.int64)
    )
    if labels.shape[0] != n:
        raise DataError(f"a target has {n} boxes but {labels.shape[0]} labels")
    keep = torch.ones(n, dtype=torch.bool)
    if not include_crowd and "iscrowd" in target:
        crowd = torch.as_tensor(target["iscrowd"]).detach().cpu().reshape(-1)
        if crowd.shape[0] == n:
            keep &= crowd == 0
    if "area" in target:
        area = torch.as_tensor(target["area"]).detach().cpu().to(torch.float64).reshape(-1)
        if area.shape[0] != n:
            raise DataError(f"a target has {n} boxes but {area.shape[0]} areas")
    else:
        area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    boxes = boxes.clamp(0, float(image_size))
    b = boxes[keep].numpy()
    return b, labels[keep].numpy(), np.sqrt(np.clip(area[keep].numpy(), 0, None))


def _named_units(model: nn.Module, units: Sequence[str] | None) -> dict[str, UnitInfo]:
    """``unit_infos(model)``, restricted to ``units`` when given (an unknown name is an error)."""
    infos = unit_infos(model)
    if units is None:
        return infos
    unknown = [u for u in units if u not in infos]
    if unknown:
        raise ConfigError(
            f"unknown SK unit(s) {', '.join(unknown)}; this model has {', '.join(infos)}"
        )
    return {u: infos[u] for u in units}


def _chosen_units(
    model: nn.Module,
    units: Sequence[str] | None,
    max_images: int | None,
    image_size: int | None,
) -> dict[str, UnitInfo]:
    """The analysed units (all with attention, or those named) with the options checked."""
    if units is not None and not units:
        raise ConfigError("choose at least one SK unit")
    infos = _named_units(model, units)
    if max_images is not None and max_images < 1:
        raise ConfigError(f"max_images must be >= 1, got {max_images}")
    if image_size is not None and image_size < 1:
        raise ConfigError(f"image_size must be >= 1, got {image_size}")
    return infos


def _collect(
    probe: Any,
    per_unit: dict[str, dict[str, list[np.ndarray]]],
    k: int,
    b: int,
    keep_channels: bool,
) -> None:
    """Append one batch's results of every unit (NaN where a unit did not run): ``k`` objects
    in ``b`` images."""
    for n, p in probe.probes.items():
        r = p.result or {}
        acc = per_unit[n]
        m = p.info.num_branches

        def take(key: str, shape: tuple[int, ...], r: dict[str, Any] = r) -> np.ndarray:
            return r[key].numpy().astype(np.float64) if key in r else np.full(shape, np.nan)

        acc["large"].append(take("large", (k,)))
        acc["branch_mean"].append(take("branch_mean", (k, m)))
        acc["image"].append(take("image", (b,)))
        if keep_channels:
            acc["channels"].append(
                r["channels"].numpy()
                if "channels" in r
                else np.full((k, m, p.info.channels), np.nan, dtype=np.float32)
            )


def object_attention(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    image_size: int | None = None,
    units: Sequence[str] | None = None,
    max_images: int | None = None,
    include_crowd: bool = False,
    keep_channels: bool = False,
) -> ObjectAttention:
    """Per-object attention of the SK units of ``model`` against object size.

    Runs ``model(images)`` in eval mode under ``no_grad`` for every batch (``model`` is any
    module whose forward takes a ``(B, 3, H, W)`` tensor and contains sknet SK units, e.g. a
    DenseModel or a ``features_only`` backbone); the outputs are not used. See the module
    docstring for the definition.

    Args:
        model: the network; its train/eval mode is restored afterwards.
        batches: yields ``(images, targets)`` or ``(images, targets, bad)``
            (:func:`sknet.data.dense.dense_collate`); targets hold ``boxes`` (xyxy px),
            ``labels`` and optionally ``area`` and ``iscrowd``.
        image_size: the side in pixels of the images the boxes refer to (default: the
            images' width). The model must not resize them (a DenseModel built for this
            image size does not; it may pad them, see the module docstring).
        units: SK unit names (default: every unit with attention over >= 2 branches).
        max_images: stop after this many images.
        include_crowd: keep ``iscrowd == 1`` regions as objects.
        keep_channels: also keep the full ``(M, C)`` per-object attention.

    Raises:
        ConfigError: the model has no SK attention unit, or an unknown/unused unit was named.
    """
    infos = _chosen_units(model, units, max_images, image_size)
    mods = sk_units(model)
    probe = _Probe({n: mods[n] for n in infos}, infos, image_size or 0)
    probe.keep_channels = keep_channels
    # the module whose input size defines the strides: the model's backbone where it holds
    # every chosen unit (detectors pad the batch before it), else image_size
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module) or not all(_contains(backbone, mods[n]) for n in infos):
        backbone = None
    run = _Run(infos, side=image_size, include_crowd=include_crowd, keep_channels=keep_channels)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), capture_attention(model), probe.attached(backbone):
            run.batches(model, probe, batches, max_images)
    finally:
        model.train(was_training)

    ran = {n for n, p in probe.probes.items() if not math.isnan(p.stride)}
    not_run = [n for n in infos if n not in ran]
    if run.seen and not_run:
        if units is not None:
            raise ConfigError(
                f"SK unit(s) {', '.join(not_run)} did not run in the model's forward pass"
            )
        infos = {n: i for n, i in infos.items() if n in ran}
    meta = {
        "bad_files": run.bad_files,
        "include_crowd": include_crowd,
        "area_source": "target 'area' where given, else box area",
        "units_not_run": not_run if units is None else [],
        "model": type(model).__name__,
        "stride_from": "backbone input width" if backbone is not None else "image_size",
    }
    return run.result(infos, probe, meta)


def _cat(parts: list[np.ndarray], shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
    return np.concatenate(parts, 0) if parts else np.zeros(shape, dtype=dtype)


@dataclass
class _Run:
    """What :func:`object_attention` accumulates over the batches: the objects (image index,
    label, sqrt(area), box width and height) and every unit's per-batch results."""

    infos: dict[str, UnitInfo]
    side: int | None
    include_crowd: bool
    keep_channels: bool
    seen: int = 0
    bad_files: list[str] = field(default_factory=list)
    objects: dict[str, list[np.ndarray]] = field(
        default_factory=lambda: {"image": [], "label": [], "size": [], "wh": []}
    )
    per_unit: dict[str, dict[str, list[np.ndarray]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        keys = ("large", "branch_mean", "image", "channels")
        self.per_unit = {n: {k: [] for k in keys} for n in self.infos}

    def batches(
        self, model: nn.Module, probe: _Probe, batches: Iterable[Any], max_images: int | None
    ) -> None:
        """Run ``model`` on every batch (up to ``max_images`` images) and collect."""
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        for batch in batches:
            images, targets, bad = _split_batch(batch)
            self.bad_files.extend(bad)
            if max_images is not None:
                left = max_images - self.seen
                images, targets = images[:left], targets[:left]
            b = int(images.shape[0])
            if b:
                if self.side is None:
                    self.side = int(images.shape[-1])
                probe.image_size = self.side
                rois = self._rois(targets)
                probe.start_batch(rois, b)
                model(images.to(device))
                _collect(probe, self.per_unit, len(rois), b, self.keep_channels)
                self.seen += b
            if max_images is not None and self.seen >= max_images:
                break

    def _rois(self, targets: list[dict[str, Any]]) -> torch.Tensor:
        """The batch's objects as roi_align boxes ``(K, 5)``; their records are kept."""
        rois = []
        for i, t in enumerate(targets):
            boxes, lab, sq = _objects(t, int(self.side or 0), self.include_crowd)
            rois.append(np.concatenate([np.full((len(lab), 1), i), boxes], axis=1))
            self.objects["image"].append(np.full(len(lab), self.seen + i, dtype=np.int64))
            self.objects["label"].append(lab)
            self.objects["size"].append(sq)
            self.objects["wh"].append(
                np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1)
            )
        return torch.from_numpy(np.concatenate(rois, 0)).float().reshape(-1, 5)

    def result(
        self, infos: dict[str, UnitInfo], probe: _Probe, meta: dict[str, Any]
    ) -> ObjectAttention:
        """The collected arrays of the units in ``infos`` as an :class:`ObjectAttention`."""
        acc = self.per_unit
        obj = self.objects
        return ObjectAttention(
            units=dict(infos),
            image_size=int(self.side or 0),
            num_images=self.seen,
            image_index=_cat(obj["image"], (0,), np.int64).astype(np.int64),
            labels=_cat(obj["label"], (0,), np.int64).astype(np.int64),
            sqrt_area=_cat(obj["size"], (0,)),
            box_size=_cat(obj["wh"], (0, 2)),
            large={n: _cat(acc[n]["large"], (0,)) for n in infos},
            branch_mean={
                n: _cat(acc[n]["branch_mean"], (0, i.num_branches)) for n, i in infos.items()
            },
            image_large={n: _cat(acc[n]["image"], (0,)) for n in infos},
            strides={n: probe.probes[n].stride for n in infos},
            feature_sizes={n: probe.probes[n].feature_size for n in infos},
            channels={
                n: _cat(acc[n]["channels"], (0, i.num_branches, i.channels))
                for n, i in infos.items()
            }
            if self.keep_channels
            else {},
            meta=meta,
        )


# --------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------


def plot_object_attention(
    result: ObjectAttention,
    out_dir: str | Path,
    stem: str = "object_attention",
    *,
    units: Sequence[str] | None = None,
    bins: Any = 3,
) -> list[Path]:
    """Figs. 3-4 per object: large-branch attention vs ``sqrt(area)``, one panel per unit.

    Each panel: one dot per object (log x), the per-bin mean +- sd (``bins`` as in
    :meth:`ObjectAttention.binned`) at the bins' median size, the mean image-level attention
    (dashed) and the uniform ``1 / M`` level (dotted); the title gives Spearman's rho, its
    permutation p-value and n. Writes ``<stem>.png`` and ``<stem>.svg``; returns both paths.
    """
    names = list(result.units) if units is None else list(units)
    if not names:
        raise ConfigError("choose at least one SK unit to plot")
    for u in names:
        result._unit(u)
    ncols = min(4, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = Figure(figsize=(3.8 * ncols, 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    s = result.sqrt_area
    for ax, u in zip(axes, names):
        info = result.units[u]
        y = result.large[u]
        ok = np.isfinite(y) & np.isfinite(s) & (s > 0)
        ax.scatter(s[ok], y[ok], s=8, alpha=0.45, color="tab:blue", lw=0, label="objects")
        xs, ms, sds = [], [], []
        for b in result.binned(u, bins):
            if not b["n"]:
                continue
            lo = b["lo"] if b["lo"] is not None else -math.inf
            hi = b["hi"] if b["hi"] is not None else math.inf
            inside = ok & (s >= lo) & (s <= hi)
            if inside.any():
                xs.append(float(np.median(s[inside])))
                ms.append(b["mean"])
                sds.append(b["sd"])
        if xs:
            ax.errorbar(
                xs,
                ms,
                yerr=sds,
                color="tab:red",
                marker="o",
                ms=5,
                lw=1.6,
                capsize=3,
                label="bin mean ± sd",
            )
        img = result.image_large[u]
        if np.isfinite(img).any():
            ax.axhline(float(np.nanmean(img)), color="0.3", lw=1.0, ls="--", label="image-level")
        ax.axhline(1.0 / info.num_branches, color="0.6", lw=0.8, ls=":")
        if ok.any():
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        rho, p, n = result.spearman(u)
        rho_txt = "n/a" if math.isnan(rho) else f"{rho:+.2f}"
        p_txt = "" if math.isnan(p) else f", p={p:.3g}"
        ax.set_title(f"{u} ({info.branches[info.large]}): rho={rho_txt}{p_txt}, n={n}", fontsize=9)
        ax.set_xlabel("object sqrt(area) [px]")
        ax.set_ylabel("attention on larger kernel")
        ax.grid(alpha=0.3)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    return save_figure(fig, Path(out_dir), stem)


# --------------------------------------------------------------------------------------------
# Forced branch
# --------------------------------------------------------------------------------------------


@contextmanager
def force_branch(
    model: nn.Module, which: str | int, *, units: Sequence[str] | None = None
) -> Iterator[dict[str, int]]:
    """Make every SK unit with attention use one branch only, inside the ``with`` block.

    ``which``: ``"small"`` / ``"large"`` (each unit's smallest / largest effective kernel, see
    :func:`~sknet.analysis.attention.unit_infos`) or a branch index for all units. The unit's
    Select weights are replaced by a one-hot tensor (same shape, dtype and device) through a
    forward hook on its attention module, so ``V = U_branch`` exactly; everything else runs as
    usual. The hooks are removed on exit, also when the block raises. Yields
    ``{unit: forced branch index}``.

    Raises:
        ConfigError: no SK attention unit, an unknown unit, or a bad ``which``.
    """
    infos = _named_units(model, units)
    chosen: dict[str, int] = {}
    for name, info in infos.items():
        if which == "small":
            chosen[name] = info.small
        elif which == "large":
            chosen[name] = info.large
        elif isinstance(which, int) and not isinstance(which, bool):
            if not 0 <= which < info.num_branches:
                raise ConfigError(
                    f"branch {which} does not exist in SK unit {name} "
                    f"({info.num_branches} branches)"
                )
            chosen[name] = which
        else:
            raise ConfigError(f"which must be 'small', 'large' or a branch index, got {which!r}")
    mods = sk_units(model)
    handles = []

    def make_hook(idx: int) -> Callable[[nn.Module, Any, torch.Tensor], torch.Tensor]:
        def hook(_mod: nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor:
            onehot = torch.zeros_like(out)
            onehot[:, idx] = 1
            return onehot

        return hook

    try:
        for name, idx in chosen.items():
            attn = mods[name].attn
            assert attn is not None
            handles.append(attn.register_forward_hook(make_hook(idx)))
        yield dict(chosen)
    finally:
        for h in handles:
            h.remove()


def _delta(forced: Any, normal: Any) -> float | None:
    def num(v: Any) -> float | None:
        if isinstance(v, bool) or v is None:
            return None
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(float(v)):
            return float(v)
        return None

    a, b = num(forced), num(normal)
    return None if a is None or b is None else a - b


def forced_branch_table(
    evaluate: Callable[[], Mapping[str, Any]],
    model: nn.Module,
    metric_keys: Sequence[str],
) -> dict[str, dict[str, Any]]:
    """Metrics with normal attention and with the small / large branch forced in every unit.

    ``evaluate()`` runs the evaluation of ``model`` and returns a metrics dict (e.g.
    ``lambda: evaluate_dense(model, loader, device, bins=bins)``); it is called three times:
    normally, inside ``force_branch(model, "small")`` and inside ``force_branch(model,
    "large")``. Returns ``{"normal", "small", "large", "delta_small", "delta_large"}``, each
    ``{key: value}`` for ``metric_keys``; deltas are forced minus normal (e.g. negative = AP
    lost), ``None`` where either value is missing or not a finite number.
    """
    keys = list(metric_keys)
    if not keys:
        raise ConfigError("give at least one metric key")
    unit_infos(model)  # fail early (ConfigError) for a model without SK attention

    def pick(d: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(d, Mapping):
            raise InputTypeError(f"evaluate() must return a dict, got {type(d).__name__}")
        return {k: d.get(k) for k in keys}

    out: dict[str, dict[str, Any]] = {"normal": pick(evaluate())}
    for which in ("small", "large"):
        with force_branch(model, which):
            out[which] = pick(evaluate())
    for which in ("small", "large"):
        out[f"delta_{which}"] = {k: _delta(out[which][k], out["normal"][k]) for k in keys}
    return out

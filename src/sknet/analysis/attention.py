"""The object-scale protocol of the SKNet paper (Li et al., CVPR 2019, Sec. 4.4, Figs. 3-4).

The paper shows an image, then the same image with its central object enlarged 1.5x and 2x
(centre crop and resize), and records the Select weights (softmax over the M branches, one per
channel) of every SK unit. Its finding: in the early and middle units the attention to the
larger kernel *rises* when the object is enlarged, while in the last units it does not.

Protocol implemented here
-------------------------

* **Photos** (ImageFolder, CIFAR): for zoom ``z`` the image's short side is resized to
  ``z * resize_size`` and the central ``image_size`` square is cropped; ``z = 1`` is exactly the
  evaluation transform (resize to ``resize_size``, centre crop). This equals centre-cropping
  ``image_size / z`` pixels of the evaluated image and resizing them back, but resamples the
  source image once (sharper than upsampling the crop). See :func:`photo_zoom_transform`.
* **Built-in data** (:class:`~sknet.data.SyntheticShapes`): the object itself is rendered at
  each zoom (same shape, colours, background and noise; only the object grows). Departure from
  the paper, by design: the paper's photos contain objects of every size, so the zoomed views
  mostly stay within what the network saw in training. On synthetic data that is not automatic:
  an object already at 90% of the canvas cannot be enlarged 2x without leaving the training
  distribution, and a prototype (timm SK-ResNet-18, 48 px shapes) showed the paper's pattern
  only when the zoomed objects stayed inside the training scale range; otherwise most units
  showed the opposite trend. :func:`select_synthetic` therefore (by default) keeps only objects
  with ``base_scale * max(zooms) <= train_scale_max``, so every view, zoomed or not, is
  in-distribution. ``selection="all"`` turns this off.
* Attention is captured by :func:`sknet.capture_attention` during the ordinary batched forward
  pass in eval mode (no extra computation); per-zoom top-1 accuracy is measured on the same
  images, so the attention can be read beside how well the network still sees the object.

Statistics
----------

For every unit and zoom: the mean attention per branch and channel ``(M, C)`` over images;
per class the channel-averaged attention per branch ``(K, M)``; and per image the *mean
attention difference* ``mean_c(a_large,c - a_small,c)`` (largest minus smallest effective kernel,
as in the paper's Fig. 3 (c) and Fig. 4), from which the change with zoom is tested per image
(paired: the same images at every zoom).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from sknet.errors import ConfigError, DataError, FileFormatError, InputError, InputTypeError
from sknet.models import capture_attention, sk_units

__all__ = [
    "FORMAT",
    "MIN_CHANGE",
    "AttentionResult",
    "PhotoZoomSet",
    "SyntheticZoomSet",
    "UnitInfo",
    "check_zooms",
    "collect_attention",
    "default_units",
    "load_attention_json",
    "photo_zoom_transform",
    "select_synthetic",
    "unit_infos",
    "zkey",
    "zoom_tensor",
]

#: Identifier of the ``attention.json`` layout.
FORMAT = "sknet-attention/1"

#: Smallest change of the mean attention difference (attention is in [0, 1]) that
#: :meth:`AttentionResult.trend` calls a rise or a fall: half a percentage point of attention.
MIN_CHANGE = 0.005

ProgressFn = Callable[[int, int], None]


def zkey(zoom: float) -> str:
    """Key of a zoom in JSON and tables: ``1.0 -> "1"``, ``1.5 -> "1.5"``."""
    return f"{float(zoom):g}"


def check_zooms(zooms: Sequence[float], *, allow_below_one: bool = True) -> tuple[float, ...]:
    """Validate zoom factors: positive, distinct, ascending; the first is the reference.

    ``allow_below_one=False`` (photos) rejects zooms < 1: a photo cannot be zoomed out
    without inventing border pixels.
    """
    zs = tuple(float(z) for z in zooms)
    if not zs:
        raise ConfigError("give at least one zoom factor (e.g. --zooms 1 1.5 2)")
    for z in zs:
        if not math.isfinite(z) or z <= 0:
            raise ConfigError(f"zoom factors must be positive numbers, got {z}")
        if not allow_below_one and z < 1.0:
            raise ConfigError(
                f"zoom {z} < 1 would need padding: photos can only be enlarged (zoom >= 1)"
            )
    if list(zs) != sorted(set(zs)):
        raise ConfigError(f"zoom factors must be distinct and ascending, got {list(zs)}")
    return zs


# --------------------------------------------------------------------------------------------
# Zoomed views
# --------------------------------------------------------------------------------------------


def zoom_tensor(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """Enlarge the centre of an image (``(C, H, W)`` or ``(N, C, H, W)``) by ``zoom``.

    Crops the central ``H / zoom x W / zoom`` region and resizes it back to ``H x W`` (bilinear,
    antialiased). ``zoom == 1`` returns ``x`` itself (the identity, bit for bit).
    """
    zoom = float(zoom)
    if zoom == 1.0:
        return x
    if zoom < 1.0:
        raise ConfigError(f"zoom_tensor enlarges only (zoom >= 1), got {zoom}")
    single = x.dim() == 3
    xb = x.unsqueeze(0) if single else x
    h, w = xb.shape[-2:]
    ch, cw = max(1, round(h / zoom)), max(1, round(w / zoom))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = xb[..., top : top + ch, left : left + cw]
    out = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return out[0] if single else out


def photo_zoom_transform(
    image_size: int,
    zoom: float,
    resize_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> Callable[[Any], torch.Tensor]:
    """PIL image -> normalised tensor, with the central object enlarged by ``zoom``.

    Short side resized to ``round(resize_size * zoom)``, then ``CenterCrop(image_size)``.
    With ``zoom=1`` this is the ImageNet evaluation transform (``resize_size=256`` for 224).
    """
    from torchvision import transforms as T

    if zoom < 1.0:
        raise ConfigError(f"photos can only be enlarged (zoom >= 1), got {zoom}")
    return T.Compose(
        [
            T.Resize(max(image_size, round(resize_size * zoom))),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(list(mean), list(std)),
        ]
    )


class SyntheticZoomSet(Dataset):
    """Views of :class:`~sknet.data.SyntheticShapes` samples with the object rendered at each zoom.

    Item ``j`` is ``(views (Z, 3, H, W), label, index)`` for sample ``indices[j]``, normalised
    with ``mean``/``std``. Rendering at zoom 1 equals the dataset's own image.
    """

    def __init__(
        self,
        dataset: Any,
        indices: Sequence[int],
        zooms: Sequence[float],
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
    ) -> None:
        if not hasattr(dataset, "render"):
            raise InputTypeError(
                f"{type(dataset).__name__} cannot render zoomed objects (no .render)"
            )
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        self.zooms = check_zooms(zooms)
        self._mean = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, int, int]:
        i = self.indices[j]
        views = []
        label = -1
        for z in self.zooms:
            img, label = self.dataset.render(i, z)
            views.append((img - self._mean) / self._std)
        return torch.stack(views), int(label), i


class PhotoZoomSet(Dataset):
    """Centre-crop zoomed views of a dataset of PIL images (ImageFolder, CIFAR without transform).

    Each image is decoded once and turned into all ``Z`` views by :func:`photo_zoom_transform`.
    Item ``j`` is ``(views (Z, 3, H, W), label, index)``.
    """

    def __init__(
        self,
        dataset: Any,
        indices: Sequence[int],
        zooms: Sequence[float],
        image_size: int,
        resize_size: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        self.zooms = check_zooms(zooms, allow_below_one=False)
        self.transforms = [
            photo_zoom_transform(image_size, z, resize_size, mean, std) for z in self.zooms
        ]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, int, int]:
        i = self.indices[j]
        image, label = self.dataset[i]
        if isinstance(image, torch.Tensor):
            raise InputTypeError(
                "PhotoZoomSet needs PIL images: build the dataset with transform=None"
            )
        image = image.convert("RGB")
        return torch.stack([t(image) for t in self.transforms]), int(label), i


def select_synthetic(
    dataset: Any,
    num_images: int,
    zooms: Sequence[float],
    train_scale_range: tuple[float, float] | None,
    selection: str = "in-range",
) -> tuple[list[int], dict[str, Any]]:
    """Choose which synthetic samples to probe, reading each object's scale (no rendering).

    ``selection="in-range"`` keeps sample ``i`` only if every zoomed view stays inside the
    training scale range: ``lo <= base_scale`` and ``base_scale * max(zooms) <= hi``; the first
    ``num_images`` such samples (in index order) are used. ``"all"`` takes the first
    ``num_images`` samples. Returns the indices and a description for the report.

    Raises:
        ValueError: unknown selection, or no sample / too few samples qualify.
    """
    if selection not in ("in-range", "all"):
        raise ConfigError(f"selection must be 'in-range' or 'all', got {selection!r}")
    if num_images < 1:
        raise ConfigError(f"num_images must be >= 1, got {num_images}")
    zs = check_zooms(zooms)
    n = len(dataset)
    info: dict[str, Any] = {"selection": selection, "pool_size": n}
    if selection == "all":
        first = list(range(min(num_images, n)))
        info.update(scanned=len(first), eligible_fraction=1.0)
        return first, info
    if train_scale_range is None:
        raise ConfigError("selection 'in-range' needs the training scale range")
    lo, hi = float(train_scale_range[0]), float(train_scale_range[1])
    zmin, zmax = min(zs), max(zs)
    max_base = hi / zmax
    min_base = lo / zmin
    info.update(
        train_scale_range=[lo, hi],
        base_scale_range=[min_base, max_base],
    )
    if min_base > max_base:
        raise ConfigError(
            f"no object can stay inside the training scale range [{lo:g}, {hi:g}] at every zoom "
            f"{list(zs)} (the range spans {hi / lo:.2f}x, the zooms {zmax / zmin:.2f}x); use "
            "smaller zooms or --select all"
        )
    idx: list[int] = []
    scanned = 0
    for i in range(n):
        scanned += 1
        s = float(dataset.sample_info(i)["base_scale"])
        if min_base * (1 - 1e-9) <= s <= max_base * (1 + 1e-9):
            idx.append(i)
            if len(idx) == num_images:
                break
    if not idx:
        raise DataError(
            f"none of {n} samples has a base scale in [{min_base:.3g}, {max_base:.3g}] "
            f"(training scales [{lo:g}, {hi:g}], zooms {list(zs)}); use --select all"
        )
    info.update(scanned=scanned, eligible_fraction=len(idx) / scanned)
    return idx, info


# --------------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitInfo:
    """What the analysis needs to know about one SK unit."""

    name: str
    channels: int
    branches: tuple[str, ...]
    effective_sizes: tuple[int, ...]
    large: int  # index of the branch with the largest effective kernel
    small: int  # index of the branch with the smallest effective kernel
    attention: str  # "channel" or "shared"

    @property
    def num_branches(self) -> int:
        return len(self.branches)

    @property
    def stage(self) -> int | None:
        parts = self.name.split("_")
        return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "channels": self.channels,
            "branches": list(self.branches),
            "effective_sizes": list(self.effective_sizes),
            "large_branch": self.large,
            "small_branch": self.small,
            "attention": self.attention,
        }


def unit_infos(model: nn.Module) -> dict[str, UnitInfo]:
    """The SK units whose attention can be analysed (M >= 2, attention aggregation), in order.

    Raises:
        ValueError: the model has no such unit (a ResNeXt/SENet, or SK with plain summation).
    """
    units = sk_units(model)
    out: dict[str, UnitInfo] = {}
    for name, mod in units.items():
        attn = mod.attn
        if attn is None or mod.num_branches < 2:
            continue
        eff = tuple(int(s.effective_size) for s in mod.specs)
        # Ties (e.g. "5x5" vs "3x3 D2"): the later branch counts as the larger one.
        large = max(range(len(eff)), key=lambda i: (eff[i], i))
        small = min(range(len(eff)), key=lambda i: (eff[i], i))
        out[name] = UnitInfo(
            name=name,
            channels=int(mod.out_channels),
            branches=tuple(s.describe() for s in mod.specs),
            effective_sizes=eff,
            large=large,
            small=small,
            attention=str(attn.attention),
        )
    if not out:
        what = (
            f"{len(units)} SK unit(s), none with attention over >= 2 branches"
            if units
            else "no SK units"
        )
        raise ConfigError(
            f"{type(model).__name__} ({getattr(model, 'model_name', '?')}) has {what}: there is "
            "no Select attention to analyse (ResNeXt, SENet and 'sum' ablations have none)"
        )
    return out


def default_units(names: Sequence[str]) -> list[str]:
    """One early, one middle and the last SK unit, as the paper's Fig. 4 (SK_2_3, SK_3_4, SK_5_3).

    Early: the last unit of the first stage; middle: the last unit of stage
    ``(num_stages - 1) // 2``; last: the network's last unit. Names not of the form
    ``SK_<stage>_<unit>`` fall back to first / middle / last.
    """
    names = list(names)
    if not names:
        return []
    stages: dict[str, list[str]] = {}
    for n in names:
        parts = n.split("_")
        key = parts[1] if len(parts) == 3 and parts[0] == "SK" else None
        if key is None:
            stages = {}
            break
        stages.setdefault(key, []).append(n)
    if stages:
        ordered = list(stages.values())
        picks = [ordered[0][-1], ordered[(len(ordered) - 1) // 2][-1], ordered[-1][-1]]
    else:
        picks = [names[0], names[(len(names) - 1) // 2], names[-1]]
    return list(dict.fromkeys(picks))


# --------------------------------------------------------------------------------------------
# Collection
# --------------------------------------------------------------------------------------------


@dataclass
class AttentionResult:
    """Attention statistics of one model under the object-scale protocol.

    Arrays are indexed ``[zoom]`` in :attr:`zooms` order. Per unit ``u``:

    * ``channel_mean[u]``: ``(Z, M, C)`` mean attention per branch and channel over images;
    * ``class_branch_mean[u]``: ``(Z, K, M)`` per-class mean of the channel-averaged attention
      (NaN for classes without images);
    * ``image_diff[u]``: ``(Z, N)`` per-image mean attention difference (large minus small).
    """

    zooms: tuple[float, ...]
    units: dict[str, UnitInfo]
    classes: list[str]
    labels: np.ndarray  # (N,)
    indices: np.ndarray  # (N,) dataset indices of the probed images
    correct: np.ndarray  # (Z, N) bool, top-1 correct at each zoom
    channel_mean: dict[str, np.ndarray]
    class_branch_mean: dict[str, np.ndarray]
    image_diff: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ derived values

    @property
    def num_images(self) -> int:
        return int(self.labels.shape[0])

    def accuracy(self) -> dict[str, float]:
        """Top-1 accuracy (fraction) per zoom key."""
        return {zkey(z): float(self.correct[i].mean()) for i, z in enumerate(self.zooms)}

    def branch_mean(self, unit: str) -> np.ndarray:
        """``(Z, M)`` mean attention per branch (channel- and image-averaged)."""
        return self.channel_mean[unit].mean(axis=2)

    def mean_diff(self, unit: str) -> np.ndarray:
        """``(Z,)`` mean attention difference (largest minus smallest kernel)."""
        return self.image_diff[unit].mean(axis=1)

    def class_diff(self, unit: str) -> np.ndarray:
        """``(Z, K)`` per-class mean attention difference (NaN for empty classes)."""
        info = self.units[unit]
        b = self.class_branch_mean[unit]
        return b[:, :, info.large] - b[:, :, info.small]

    def large_channel_attention(self, unit: str) -> np.ndarray:
        """``(Z, C)`` per-channel attention of the largest-kernel branch."""
        return self.channel_mean[unit][:, self.units[unit].large, :]

    def paired_change(self, unit: str, zoom_index: int = -1) -> dict[str, float]:
        """Per-image change of the mean difference from the reference zoom (the first).

        Returns ``mean``, ``sem`` (standard error over images), ``t`` (mean / sem) and
        ``frac_up`` (fraction of images whose difference rose).
        """
        d = self.image_diff[unit]
        delta = (d[zoom_index] - d[0]).astype(np.float64)
        n = delta.size
        mean = float(delta.mean()) if n else float("nan")
        sem = float(delta.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        if sem > 0:
            t = mean / sem
        elif mean == 0 or math.isnan(sem):
            t = 0.0 if mean == 0 else float("nan")
        else:
            t = math.copysign(float("inf"), mean)
        return {"mean": mean, "sem": sem, "t": t, "frac_up": float((delta > 0).mean())}

    def trend(self, unit: str, threshold: float = 2.0, min_change: float = MIN_CHANGE) -> str:
        """``"rises"``/``"falls"`` when the per-image change at the largest zoom is both more
        than ``threshold`` standard errors from zero (about 95% for 2) and at least
        ``min_change`` in size; else ``"flat"``."""
        if len(self.zooms) < 2:
            return "flat"
        ch = self.paired_change(unit)
        t, mean = ch["t"], ch["mean"]
        if math.isnan(t) or abs(mean) < min_change:
            return "flat"
        return "rises" if t >= threshold else "falls" if t <= -threshold else "flat"

    # ------------------------------------------------------------------ JSON

    def to_json_dict(self) -> dict[str, Any]:
        """The ``attention.json`` document (see :data:`FORMAT`)."""
        units: dict[str, Any] = {}
        counts = np.bincount(self.labels, minlength=len(self.classes))
        for name, info in self.units.items():
            per_zoom: dict[str, Any] = {}
            md = self.mean_diff(name)
            bm = self.branch_mean(name)
            cd = self.class_diff(name)
            for zi, z in enumerate(self.zooms):
                change = _finite(self.paired_change(name, zi)) if zi > 0 else None
                per_zoom[zkey(z)] = {
                    "branch_mean": _floats(bm[zi]),
                    "mean_diff": float(md[zi]),
                    "mean_diff_std": float(self.image_diff[name][zi].std()),
                    "change_from_reference": change,
                    "channel_attention": [_floats(r) for r in self.channel_mean[name][zi]],
                    "per_class_branch_mean": [
                        _floats(r) if counts[k] else None
                        for k, r in enumerate(self.class_branch_mean[name][zi])
                    ],
                    "per_class_diff": [
                        float(v) if counts[k] else None for k, v in enumerate(cd[zi])
                    ],
                }
            units[name] = {**info.as_dict(), "trend": self.trend(name), "zooms": per_zoom}
        return {
            "format": FORMAT,
            **self.meta,
            "zooms": [float(z) for z in self.zooms],
            "reference_zoom": float(self.zooms[0]),
            "num_images": self.num_images,
            "classes": list(self.classes),
            "class_counts": [int(c) for c in counts],
            "accuracy": self.accuracy(),
            "unit_order": list(self.units),
            "units": units,
        }

    def save_json(self, path: Any) -> None:
        """Write :meth:`to_json_dict` (NaN-free: missing values are ``null``)."""
        from pathlib import Path

        text = json.dumps(self.to_json_dict(), indent=1, allow_nan=False)
        Path(path).write_text(text + "\n", encoding="utf-8")


def _finite(d: dict[str, float]) -> dict[str, float | None]:
    """JSON has no NaN/inf: non-finite statistics (e.g. one image: no standard error) -> None."""
    return {k: (float(v) if math.isfinite(v) else None) for k, v in d.items()}


def _floats(a: np.ndarray) -> list[float]:
    return [round(float(x), 7) for x in np.asarray(a).ravel()]


def collect_attention(
    model: nn.Module,
    views: Dataset | Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    zooms: Sequence[float],
    classes: Sequence[str],
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    progress: ProgressFn | None = None,
    meta: dict[str, Any] | None = None,
) -> AttentionResult:
    """Run ``model`` (in eval mode, batched) over zoomed views and gather attention statistics.

    Args:
        model: a model with SK units (see :func:`unit_infos`).
        views: a :class:`SyntheticZoomSet` / :class:`PhotoZoomSet` (or any dataset / iterable
            of batches) yielding ``(views (Z, 3, H, W), label, index)`` items.
        zooms: the Z zoom factors, in the order of the views.
        classes: class names (K); labels must lie in ``[0, K)``.
        batch_size: images per forward pass (each pass sees one zoom).
        num_workers: DataLoader workers (when ``views`` is a dataset).
        device: where to run the model.
        progress: called as ``progress(images_done, images_total)`` after each batch.
        meta: extra fields stored in the JSON (source, protocol, ...).

    Raises:
        ValueError: model without analysable SK units, a label out of range, no images, or a
            non-finite attention value.
    """
    zs = check_zooms(zooms)
    units = unit_infos(model)
    k = len(classes)
    if k < 1:
        raise ConfigError("classes must name at least one class")
    batches, total = _batches(views, batch_size, num_workers)
    device = torch.device(device)
    was_training = model.training
    model.eval()
    model.to(device)

    acc = _AttentionAccumulator(zs, units, k)
    try:
        with capture_attention(model) as att, torch.inference_mode():
            for x, y, idx in batches:
                acc.add_batch(model, att, x, y, idx, device)
                if progress is not None:
                    progress(acc.done, total)
    finally:
        model.train(was_training)
    return acc.result(classes, meta)


def _batches(
    views: Dataset | Iterable[Any], batch_size: int, num_workers: int
) -> tuple[Iterable[Any], int]:
    """The batches of ``views`` and the number of images (-1 when ``views`` is no dataset)."""
    if isinstance(views, Dataset):
        total = len(views)  # type: ignore[arg-type]
        loader = DataLoader(views, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        return loader, total
    return views, -1


class _AttentionAccumulator:
    """Running sums of :func:`collect_attention`, one batch at a time (float64, on the CPU)."""

    def __init__(self, zooms: tuple[float, ...], units: dict[str, UnitInfo], k: int) -> None:
        self.zooms = zooms
        self.units = units
        self.k = k
        self.sums = {
            u: torch.zeros(len(zooms), i.num_branches, i.channels, dtype=torch.float64)
            for u, i in units.items()
        }
        self.class_sums = {
            u: torch.zeros(len(zooms), k, i.num_branches, dtype=torch.float64)
            for u, i in units.items()
        }
        self.diffs: dict[str, list[torch.Tensor]] = {u: [] for u in units}
        self.labels: list[torch.Tensor] = []
        self.indices: list[torch.Tensor] = []
        self.correct: list[torch.Tensor] = []
        self.done = 0

    def add_batch(
        self,
        model: nn.Module,
        att: Mapping[str, torch.Tensor],
        x: torch.Tensor,
        y: Any,
        idx: Any,
        device: torch.device,
    ) -> None:
        """Run ``model`` on each zoom of batch ``x`` (N, Z, C, H, W) and add its attention."""
        zs, k = self.zooms, self.k
        y = torch.as_tensor(y, dtype=torch.long)
        if x.dim() != 5 or x.shape[1] != len(zs):
            raise InputError(
                f"expected views of shape (N, {len(zs)}, C, H, W), got {tuple(x.shape)}"
            )
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
            raise DataError(
                f"label {int(y.max())} out of range for {k} classes: does the model's "
                "classifier match the dataset?"
            )
        n = x.shape[0]
        batch_diffs = {u: torch.empty(len(zs), n) for u in self.units}
        batch_correct = torch.empty(len(zs), n, dtype=torch.bool)
        for zi in range(len(zs)):
            logits = model(x[:, zi].to(device, non_blocking=True))
            batch_correct[zi] = logits.argmax(dim=1).cpu() == y
            for u, info in self.units.items():
                a = att[u].to("cpu", torch.float64)  # (N, M, C)
                if not torch.isfinite(a).all():
                    raise InputError(f"non-finite attention in {u} at zoom {zs[zi]}")
                self.sums[u][zi] += a.sum(dim=0)
                am = a.mean(dim=2)  # (N, M)
                self.class_sums[u][zi].index_add_(0, y, am)
                batch_diffs[u][zi] = (am[:, info.large] - am[:, info.small]).float()
        for u in self.units:
            self.diffs[u].append(batch_diffs[u])
        self.labels.append(y)
        self.indices.append(torch.as_tensor(idx, dtype=torch.long))
        self.correct.append(batch_correct)
        self.done += n

    def result(self, classes: Sequence[str], meta: dict[str, Any] | None) -> AttentionResult:
        """The means over all images added so far; ValueError when there were none."""
        if self.done == 0:
            raise DataError("no images to analyse")
        labels = torch.cat(self.labels).numpy()
        counts = np.bincount(labels, minlength=self.k).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            inv = np.where(counts > 0, 1.0 / np.maximum(counts, 1), np.nan)
        return AttentionResult(
            zooms=self.zooms,
            units=self.units,
            classes=[str(c) for c in classes],
            labels=labels,
            indices=torch.cat(self.indices).numpy(),
            correct=torch.cat(self.correct, dim=1).numpy(),
            channel_mean={u: (s / self.done).numpy() for u, s in self.sums.items()},
            class_branch_mean={
                u: s.numpy() * inv[None, :, None] for u, s in self.class_sums.items()
            },
            image_diff={u: torch.cat(d, dim=1).numpy() for u, d in self.diffs.items()},
            meta=dict(meta or {}),
        )


def load_attention_json(path: Any) -> dict[str, Any]:
    """Read an ``attention.json`` written by :meth:`AttentionResult.save_json`."""
    from pathlib import Path

    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if doc.get("format") != FORMAT:
        raise FileFormatError(
            f"{path} is not an sknet attention file (format {doc.get('format')!r})"
        )
    return doc

"""Procedurally generated shape-classification data where receptive-field selection matters.

``SyntheticShapes`` renders one object per image. The class is decided only by the object's
*shape/structure* (ring vs. filled circle, outline vs. filled square, bars vs. checker, ...);
object and background colours are random and carry no label information, and the background is
textured and noisy. Object size is sampled log-uniformly over a wide range (by default 15 % to
90 % of the canvas side), so the same class appears at very different scales. This is the
situation in which the SKNet paper (Li et al., CVPR 2019) argues that neurons benefit from
adaptively choosing their receptive field: a fine structure (a ring's hole, the gaps between bars)
spans a few pixels for a small object and tens of pixels for a large one.

Every sample is a pure function of ``(seed, split, index, zoom)`` (plus the dataset's
``image_size`` and ``scale_range``). :meth:`SyntheticShapes.render` re-renders the very same sample
(same shape, colours, texture and noise) with the object enlarged about its own centre, which is
what an analysis of "attention to large kernels vs. object size" needs.

Rendering is vectorised numpy: each shape is a signed distance function evaluated on the pixel
grid and turned into an anti-aliased coverage mask. No per-pixel Python loops.

Normalisation: images are float32 in ``[0, 1]``; use :data:`SYNTHETIC_MEAN` / :data:`SYNTHETIC_STD`
(0.5 / 0.5 per channel, mapping to roughly ``[-1, 1]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from sknet.data.names import DEFAULT_SCALE_RANGE
from sknet.errors import DataError
from sknet.preprocess import SYNTHETIC_MEAN, SYNTHETIC_STD

__all__ = [
    "SHAPE_CLASSES",
    "SYNTHETIC_MEAN",
    "SYNTHETIC_STD",
    "SyntheticShapes",
]

#: Class names, in label order.
SHAPE_CLASSES: tuple[str, ...] = (
    "circle",
    "ring",
    "square",
    "square_outline",
    "triangle",
    "plus",
    "x_cross",
    "bars",
    "checker",
    "star",
)

#: Per-channel normalisation constants for :class:`SyntheticShapes` (documented choice, not
#: measured statistics): ``(x - 0.5) / 0.5`` maps ``[0, 1]`` to ``[-1, 1]``.

_SPLIT_IDS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
# Constant mixed into every seed so these streams do not coincide with other uses of the seed.
_SALT = 0x5C_4E_70
_MAX_ANGLE_DEG = 15.0  # objects are rotated uniformly in [-15, 15] degrees

Array = np.ndarray


# --------------------------------------------------------------------------------------------
# Signed distance functions. Inputs are object-frame coordinates (u, v) in units of the object's
# half-size (the object roughly fills [-1, 1]^2; v points down as in image rows). Output is the
# signed distance in the same units (negative inside).
# --------------------------------------------------------------------------------------------


def _sd_box(u: Array, v: Array, bx: float, by: float) -> Array:
    qx = np.abs(u) - bx
    qy = np.abs(v) - by
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    inside = np.minimum(np.maximum(qx, qy), 0.0)
    return outside + inside


def _sd_circle(u: Array, v: Array) -> Array:
    return np.hypot(u, v) - 0.95


def _sd_ring(u: Array, v: Array) -> Array:
    # outer radius 0.96, inner radius 0.48
    return np.abs(np.hypot(u, v) - 0.72) - 0.24


def _sd_square(u: Array, v: Array) -> Array:
    return _sd_box(u, v, 0.8, 0.8)


def _sd_square_outline(u: Array, v: Array) -> Array:
    # outer half-side 0.82, inner half-side 0.54
    return np.abs(_sd_box(u, v, 0.68, 0.68)) - 0.14


def _sd_triangle(u: Array, v: Array) -> Array:
    """Equilateral triangle, apex up, bounding box centred on the origin (after I. Quilez)."""
    r = 0.95
    k = math.sqrt(3.0)
    px = np.abs(u) - r
    py = -v + r / (2.0 * k) + r / k  # flip to y-up, centre the bounding box
    flip = (px + k * py) > 0.0
    qx = np.where(flip, (px - k * py) * 0.5, px)
    qy = np.where(flip, (-k * px - py) * 0.5, py)
    qx = qx - np.clip(qx, -2.0 * r, 0.0)
    return -np.hypot(qx, qy) * np.sign(qy)


def _sd_plus(u: Array, v: Array) -> Array:
    return np.minimum(_sd_box(u, v, 0.95, 0.27), _sd_box(u, v, 0.27, 0.95))


def _sd_x_cross(u: Array, v: Array) -> Array:
    s = 1.0 / math.sqrt(2.0)
    return _sd_plus((u + v) * s, (v - u) * s)


def _sd_bars(u: Array, v: Array) -> Array:
    """Three horizontal bars (stripes)."""
    d = _sd_box(u, v, 0.9, 0.17)
    for c in (-0.62, 0.62):
        d = np.minimum(d, _sd_box(u, v - c, 0.9, 0.17))
    return d


def _sd_checker(u: Array, v: Array) -> Array:
    """A 4 x 4 checkerboard patch (8 filled cells)."""
    cell = 0.45
    cu = u / cell
    cv = v / cell
    filled = (np.floor(cu) + np.floor(cv)) % 2.0 == 0.0
    edge = cell * np.minimum(np.abs(cu - np.round(cu)), np.abs(cv - np.round(cv)))
    inner = np.where(filled, -edge, edge)
    return np.maximum(_sd_box(u, v, 0.9, 0.9), inner)


def _sd_star(u: Array, v: Array) -> Array:
    """Five-pointed star, one point up (after I. Quilez's sdStar5)."""
    r, rf = 1.0, 0.45
    k1x, k1y = 0.809016994375, -0.587785252292
    k2x, k2y = -k1x, k1y
    px = np.abs(u)
    py = -v + 0.095  # flip to y-up, roughly centre the bounding box
    t = np.maximum(k1x * px + k1y * py, 0.0)
    px, py = px - 2.0 * t * k1x, py - 2.0 * t * k1y
    t = np.maximum(k2x * px + k2y * py, 0.0)
    px, py = px - 2.0 * t * k2x, py - 2.0 * t * k2y
    px = np.abs(px)
    py = py - r
    bax, bay = rf * -k1y, rf * k1x - 1.0
    h = np.clip((px * bax + py * bay) / (bax * bax + bay * bay), 0.0, r)
    return np.hypot(px - bax * h, py - bay * h) * np.sign(py * bax - px * bay)


_SDFS: tuple[Callable[[Array, Array], Array], ...] = (
    _sd_circle,
    _sd_ring,
    _sd_square,
    _sd_square_outline,
    _sd_triangle,
    _sd_plus,
    _sd_x_cross,
    _sd_bars,
    _sd_checker,
    _sd_star,
)
assert len(_SDFS) == len(SHAPE_CLASSES)


@dataclass(frozen=True)
class _SampleParams:
    """All random choices of one sample; independent of ``zoom``."""

    label: int
    scale: float  # object size (extent of the [-1, 1] object frame) / canvas side, at zoom 1
    cx: float  # object centre in pixels (x), at zoom 1
    cy: float  # object centre in pixels (y), at zoom 1
    angle: float  # rotation in radians
    bg: Array  # (3,) background base colour
    fg: Array  # (3,) object base colour
    fg_grad: Array  # (2, 3) object shading gradient along (u, v)
    tex_amp: Array  # (2,) amplitudes of the two background gratings
    tex_freq: Array  # (2,) cycles per canvas side
    tex_theta: Array  # (2,) grating orientations
    tex_phase: Array  # (2,) grating phases
    tex_tint: Array  # (2, 3) per-channel weights of the gratings
    noise_sigma: float  # std of the additive pixel noise
    rng: np.random.Generator  # positioned right after the parameter draws (for the noise)


class SyntheticShapes(Dataset):
    """Ten shape classes at log-uniformly random scales on textured, noisy backgrounds.

    Args:
        num_samples: Number of samples (indices ``0 .. num_samples - 1``).
        image_size: Side of the square canvas in pixels.
        seed: Non-negative base seed. Together with ``split`` it selects the sample stream.
        split: ``"train"``, ``"val"`` or ``"test"``; each split is a disjoint deterministic stream.
        scale_range: ``(min, max)`` object size as a fraction of the canvas side, sampled
            log-uniformly (so small and large objects are equally represented per octave).
        zoom: Factor applied to every object's size by :meth:`__getitem__` (see :meth:`render`).
        transform: Optional callable applied to the ``(3, H, W)`` float tensor.

    Labels are balanced: sample ``i`` has label ``i % num_classes``.

    Example:
        >>> ds = SyntheticShapes(num_samples=100, image_size=48)
        >>> image, label = ds[0]
        >>> image.shape, image.dtype
        (torch.Size([3, 48, 48]), torch.float32)
    """

    classes: tuple[str, ...] = SHAPE_CLASSES
    num_classes: int = len(SHAPE_CLASSES)

    def __init__(
        self,
        num_samples: int,
        image_size: int = 48,
        seed: int = 0,
        split: str = "train",
        scale_range: tuple[float, float] = DEFAULT_SCALE_RANGE,
        zoom: float = 1.0,
        transform: Callable[[torch.Tensor], Any] | None = None,
    ) -> None:
        if num_samples < 0:
            raise DataError(f"num_samples must be >= 0, got {num_samples}")
        if image_size < 8:
            raise DataError(f"image_size must be >= 8, got {image_size}")
        if seed < 0:
            raise DataError(f"seed must be >= 0, got {seed}")
        if split not in _SPLIT_IDS:
            raise DataError(f"split must be one of {sorted(_SPLIT_IDS)}, got {split!r}")
        lo, hi = float(scale_range[0]), float(scale_range[1])
        if not 0.0 < lo <= hi:
            raise DataError(f"scale_range must satisfy 0 < min <= max, got {scale_range}")
        if zoom <= 0:
            raise DataError(f"zoom must be > 0, got {zoom}")
        self.num_samples = int(num_samples)
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.split = split
        self.scale_range = (lo, hi)
        self.zoom = float(zoom)
        self.transform = transform
        # Pixel-centre coordinates, shared by all samples.
        self._coords = np.arange(self.image_size, dtype=np.float32) + np.float32(0.5)
        self._omega = self._coords * np.float32(2.0 * math.pi / self.image_size)

    # ------------------------------------------------------------------ Dataset protocol

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.render(index, zoom=self.zoom)
        if self.transform is not None:
            image = self.transform(image)
        return image, label

    # ------------------------------------------------------------------ public helpers

    def render(self, index: int, zoom: float = 1.0) -> tuple[torch.Tensor, int]:
        """Render sample ``index`` with its object enlarged by ``zoom`` about its own centre.

        Everything but the object's geometry (shape, rotation, colours, background texture and
        pixel noise) is identical for every ``zoom``. The object's size is multiplied by ``zoom``;
        its centre moves toward the canvas centre only as much as needed to keep the enlarged
        object inside the canvas (per axis; an object larger than the canvas is centred).
        ``render(i, 1.0)`` equals ``dataset[i]`` for a dataset with ``zoom=1`` (before
        ``transform``, which ``render`` never applies).

        Returns:
            ``(image, label)`` with ``image`` a float32 tensor of shape ``(3, H, W)`` in ``[0, 1]``.
        """
        p = self._params(index)
        f32 = np.float32
        u, v, alpha = self._coverage(p, zoom)

        # Background: base colour plus two tinted sinusoidal gratings (separable evaluation of
        # sin(a x + b y + phase)), channels first.
        bg = np.broadcast_to(p.bg[:, None, None], (3, *alpha.shape)).copy()
        for j in range(2):
            ax = np.cos(p.tex_theta[j]) * p.tex_freq[j] * self._omega
            by = np.sin(p.tex_theta[j]) * p.tex_freq[j] * self._omega
            wave = (np.sin(ax + p.tex_phase[j])[None, :] * np.cos(by)[:, None]) + (
                np.cos(ax + p.tex_phase[j])[None, :] * np.sin(by)[:, None]
            )
            bg += (p.tex_amp[j] * p.tex_tint[j])[:, None, None] * wave
        # Object: base colour with a mild linear shading gradient in the object frame.
        uc = np.clip(u, f32(-1.0), f32(1.0))
        vc = np.clip(v, f32(-1.0), f32(1.0))
        grad = p.fg_grad[:, :, None, None]
        fg = p.fg[:, None, None] + uc * grad[0] + vc * grad[1]

        image = bg + alpha * (fg - bg)
        # Zero-mean uniform pixel noise with standard deviation ``noise_sigma``.
        noise = p.rng.random(image.shape, dtype=f32) - f32(0.5)
        image += f32(p.noise_sigma * math.sqrt(12.0)) * noise
        np.clip(image, f32(0.0), f32(1.0), out=image)
        return torch.from_numpy(image), p.label

    def object_mask(self, index: int, zoom: float | None = None) -> torch.Tensor:
        """Anti-aliased object coverage in ``[0, 1]``, float32 tensor of shape ``(H, W)``.

        ``zoom`` defaults to the dataset's ``zoom``. ``object_mask(i).sum()`` is the object's area
        in pixels (useful to bin by visible object size).
        """
        zoom = self.zoom if zoom is None else float(zoom)
        _, _, alpha = self._coverage(self._params(index), zoom)
        return torch.from_numpy(alpha)

    def sample_info(self, index: int, zoom: float | None = None) -> dict[str, Any]:
        """Describe sample ``index`` without rendering it (for binning analyses by object scale).

        Args:
            index: Sample index.
            zoom: Zoom to describe; defaults to the dataset's ``zoom``.

        Returns:
            dict with ``label``, ``class_name``, ``scale`` (object size / canvas side at this
            zoom), ``base_scale`` (at zoom 1), ``size_px``, ``centre`` (``(x, y)`` in pixels at this
            zoom), ``centre_frac`` (centre / canvas side), ``angle_deg`` and ``zoom``.
        """
        zoom = self.zoom if zoom is None else float(zoom)
        p = self._params(index)
        half, cx, cy = self._geometry(p, zoom)
        return {
            "index": int(index),
            "label": p.label,
            "class_name": SHAPE_CLASSES[p.label],
            "scale": p.scale * zoom,
            "base_scale": p.scale,
            "size_px": 2.0 * half,
            "centre": (cx, cy),
            "centre_frac": (cx / self.image_size, cy / self.image_size),
            "angle_deg": math.degrees(p.angle),
            "zoom": zoom,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_samples={self.num_samples}, image_size={self.image_size}, "
            f"seed={self.seed}, split={self.split!r}, scale_range={self.scale_range}, "
            f"zoom={self.zoom})"
        )

    # ------------------------------------------------------------------ internals

    def _params(self, index: int) -> _SampleParams:
        index = int(index)
        if index < 0:
            index += self.num_samples
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        rng = np.random.default_rng([_SALT, self.seed, _SPLIT_IDS[self.split], index])
        # The order of the draws below is part of the data definition: do not reorder.
        lo, hi = self.scale_range
        scale = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        pos = rng.uniform(0.0, 1.0, size=2)
        angle = math.radians(rng.uniform(-_MAX_ANGLE_DEG, _MAX_ANGLE_DEG))
        bg = rng.uniform(0.0, 1.0, size=3)
        # Per channel, the object differs from the background by 0.3 .. 0.7 (circularly):
        # always visible, never informative about the class.
        fg = (bg + rng.uniform(0.3, 0.7, size=3)) % 1.0
        fg_grad = rng.uniform(-0.06, 0.06, size=(2, 3))
        tex_amp = rng.uniform(0.02, 0.1, size=2)
        tex_freq = rng.uniform(1.0, 8.0, size=2)
        tex_theta = rng.uniform(0.0, math.pi, size=2)
        tex_phase = rng.uniform(0.0, 2.0 * math.pi, size=2)
        tex_tint = rng.uniform(0.5, 1.0, size=(2, 3))
        noise_sigma = float(rng.uniform(0.01, 0.05))

        # Place the object (zoom 1) fully inside the canvas when it fits.
        size = self.image_size
        half = 0.5 * scale * size
        lo_c, hi_c = half, size - half
        if lo_c <= hi_c:
            cx = lo_c + pos[0] * (hi_c - lo_c)
            cy = lo_c + pos[1] * (hi_c - lo_c)
        else:
            cx = cy = 0.5 * size
        f32 = np.float32
        return _SampleParams(
            label=index % self.num_classes,
            scale=scale,
            cx=float(cx),
            cy=float(cy),
            angle=angle,
            bg=bg.astype(f32),
            fg=fg.astype(f32),
            fg_grad=fg_grad.astype(f32),
            tex_amp=tex_amp.astype(f32),
            tex_freq=tex_freq.astype(f32),
            tex_theta=tex_theta.astype(f32),
            tex_phase=tex_phase.astype(f32),
            tex_tint=tex_tint.astype(f32),
            noise_sigma=noise_sigma,
            rng=rng,
        )

    def _coverage(self, p: _SampleParams, zoom: float) -> tuple[Array, Array, Array]:
        """Object-frame coordinates ``(u, v)`` and anti-aliased coverage, each ``(H, W)``."""
        half, cx, cy = self._geometry(p, zoom)
        f32 = np.float32
        # Object-frame coordinates in units of the half-size.
        ca, sa = math.cos(p.angle), math.sin(p.angle)
        dx = (self._coords - f32(cx))[None, :]
        dy = (self._coords - f32(cy))[:, None]
        inv = f32(1.0 / half)
        u = (f32(ca) * dx + f32(sa) * dy) * inv
        v = (f32(ca) * dy - f32(sa) * dx) * inv
        dist_px = _SDFS[p.label](u, v) * f32(half)
        alpha = np.clip(f32(0.5) - dist_px, f32(0.0), f32(1.0))
        return u, v, alpha

    def _geometry(self, p: _SampleParams, zoom: float) -> tuple[float, float, float]:
        """Half-size and centre (pixels) of the object at ``zoom``."""
        if zoom <= 0:
            raise DataError(f"zoom must be > 0, got {zoom}")
        size = self.image_size
        half = 0.5 * p.scale * size * zoom
        if zoom == 1.0:
            return half, p.cx, p.cy
        lo_c, hi_c = half, size - half
        if lo_c <= hi_c:
            cx = min(max(p.cx, lo_c), hi_c)
            cy = min(max(p.cy, lo_c), hi_c)
        else:
            cx = cy = 0.5 * size
        return half, cx, cy

"""Pretrained weights: a registry of public SK / SE / ResNeXt ImageNet weights, and their download.

Each entry is named ``<model>.<tag>`` after the sknet model it loads into (``sknet50.ra_in1k``)
and is a frozen :class:`PretrainedCfg`, like timm's ``pretrained_cfg`` or torchvision's weight
enums: where the file comes from (a Hugging Face Hub repo and file name, a plain URL, or a page
to download it from by hand), its sha256 where known, the source and its licence, the number of
parameters, the preprocessing the weights expect (:class:`Preprocess`: resize, centre crop,
interpolation, mean/std, channel order and pixel scale), the class names, the converter that maps
the file's tensors onto sknet's layout, and the accuracy its publisher reports
(:class:`ReportedAccuracy`: **reported by the source, not measured here**).

* :func:`list_pretrained` / :func:`get_pretrained_cfg` / :func:`resolve_pretrained` look entries up.
* :func:`fetch_pretrained` downloads a file once into the user's cache and returns its path:
  Hub repos through ``huggingface_hub.hf_hub_download`` (``HF_HOME``, ``HF_HUB_CACHE``,
  ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and the token are honoured, read at call time), plain URLs
  through ``torch.hub.download_url_to_file`` into ``torch.hub.get_dir()/checkpoints``
  (``TORCH_HOME``). A cached file is returned without any request, after its sha256 is checked
  again (every cache hit: a file changed after its download raises :class:`ChecksumError`
  naming it; delete it to download it afresh). A fresh download is checked
  against the entry's sha256 (for a Hub file without a recorded sha256, against the sha256 that
  the Hub publishes as the file's LFS id); a mismatch deletes the file and raises
  :class:`ChecksumError`. No network, ``HF_HUB_OFFLINE=1`` (which stops plain-URL downloads too),
  a missing file or a source without a direct download raise :class:`WeightsUnavailableError`,
  which names the file, its source and how to place it by hand (``checkpoint_path=``).
* :func:`load_pretrained_state` reads a file safely (safetensors, or ``torch.load`` with
  ``weights_only=True``: arbitrary pickled objects are refused) and returns the state dict in the
  **source's** layout with its entry; the caller converts it according to ``cfg.converter``
  (``"timm"`` / ``"torchvision"``: :func:`sknet.convert.from_timm`; ``"caffe"``: the Caffe
  converter; ``"sknet"``: already sknet's layout).
* :func:`imagenet_classes` gives the 1000 ImageNet-1k WordNet ids (standard sorted order, shipped
  with sknet) and their human-readable names (from torchvision's weights metadata), offline.

``huggingface_hub`` and ``safetensors`` are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import inspect
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch

from sknet import _limits
from sknet.errors import ChecksumError, FileFormatError, WeightsUnavailableError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ChecksumError",
    "Preprocess",
    "PretrainedCfg",
    "ReportedAccuracy",
    "WeightsUnavailableError",
    "class_names",
    "default_tag",
    "fetch_pretrained",
    "get_pretrained_cfg",
    "imagenet_classes",
    "list_pretrained",
    "load_pretrained",
    "load_pretrained_state",
    "register_pretrained",
    "resolve_pretrained",
]

Converter = Literal["timm", "torchvision", "caffe", "sknet"]
CONVERTERS: tuple[str, ...] = ("timm", "torchvision", "caffe", "sknet")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_SHA_RE = re.compile(r"^[0-9a-f]{8,64}$")


@dataclass(frozen=True)
class Preprocess:
    """How images must be prepared for a set of weights (evaluation: resize, then centre crop).

    The model input is ``(x * pixel_scale - mean) / std`` per channel in ``channel_order``, where
    ``x`` is the RGB image in [0, 1] (as ``torchvision.transforms.ToTensor`` gives it): for the
    torchvision/timm convention ``pixel_scale=1`` with ImageNet mean/std; for Caffe
    ``pixel_scale=255``, BGR order and the mean in that order with ``std=1``.

    Attributes:
        crop_size: side of the centre crop fed to the network.
        resize_size: shorter side the image is resized to before cropping.
        interpolation: resize interpolation (``"bilinear"`` or ``"bicubic"``).
        mean, std: per-channel normalisation, in ``channel_order`` and in units of
            ``pixel_scale``.
        channel_order: ``"RGB"`` or ``"BGR"``.
        pixel_scale: the value of a full-intensity pixel the weights expect (1.0 or 255.0).
        test_crop_size, test_resize_size: a larger evaluation size the source recommends, if
            any (timm's ``test_input_size`` / ``test_crop_pct``).
        confirmed: False when the source does not state these values and they are inferred.
        note: where the values come from.
    """

    crop_size: int = 224
    resize_size: int = 256
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: Literal["RGB", "BGR"] = "RGB"
    pixel_scale: float = 1.0
    test_crop_size: int | None = None
    test_resize_size: int | None = None
    confirmed: bool = True
    note: str = ""

    @property
    def crop_pct(self) -> float:
        """``crop_size / resize_size`` (timm's ``crop_pct``)."""
        return self.crop_size / self.resize_size

    def to_unit_dict(self) -> dict[str, Any]:
        """The fields of :class:`sknet.loading.Preprocess` (mean/std in [0, 1] units)."""
        return {
            "input_size": self.crop_size,
            "resize": self.resize_size,
            "interpolation": self.interpolation,
            "mean": [m / self.pixel_scale for m in self.mean],
            "std": [s / self.pixel_scale for s in self.std],
            "channel_order": self.channel_order,
        }

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map an RGB batch in [0, 1] (N, 3, H, W) to the input these weights expect."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an RGB batch of shape (N, 3, H, W), got {tuple(x.shape)}")
        if self.channel_order == "BGR":
            x = x.flip(1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * self.pixel_scale - mean) / std


def _timm_pre(
    crop_pct: float = 0.875,
    interpolation: Literal["bilinear", "bicubic"] = "bicubic",
    test_size: int | None = None,
    test_crop_pct: float | None = None,
) -> Preprocess:
    """timm's eval transform: resize shorter side to floor(size / crop_pct), centre crop."""
    return Preprocess(
        crop_size=224,
        resize_size=int(224 / crop_pct),
        interpolation=interpolation,
        test_crop_size=test_size,
        test_resize_size=int(test_size / test_crop_pct) if test_size and test_crop_pct else None,
        note="timm pretrained_cfg",
    )


@dataclass(frozen=True)
class ReportedAccuracy:
    """ImageNet-1k validation accuracy as **reported by the source; not measured here**.

    Attributes:
        top1, top5: percentages (``top5`` None when not reported).
        resolution: side of the evaluated centre crop.
        resize_size: shorter side before the crop, when the source states it.
        reported_by: where the number is published.
    """

    top1: float
    top5: float | None
    resolution: int
    resize_size: int | None
    reported_by: str
    measured_here: bool = False


@dataclass(frozen=True)
class PretrainedCfg:
    """One set of pretrained weights, ``<model>.<tag>`` (see the module docstring).

    Attributes:
        model: the sknet registry name it loads into.
        tag: the weights tag (``ra_in1k``, ``tv2_in1k``, ``caffe_in1k``, ...).
        converter: the layout of the file's tensors: ``"timm"``, ``"torchvision"``, ``"caffe"``
            or ``"sknet"`` (native).
        source: who published the weights, in words.
        source_model: the weights' name at the source (timm name, torchvision enum, file).
        license: the licence the source states for the weights.
        num_params: parameters of the network with its 1000-class head.
        preprocess: what the weights expect as input.
        hf_hub_id, hf_filename, hf_revision: a Hugging Face Hub file.
        url: a plain download URL.
        filename: the cache file name for ``url`` (default: its last path component).
        manual_url: where to get the file by hand when there is no direct download.
        sha256: the file's sha256 (full, or a prefix of at least 8 hex digits as torchvision
            publishes); None when not known here.
        classes: key of the class list (:func:`class_names`).
        num_classes: classifier width of the weights.
        reported: accuracy reported by the source (never measured here).
        model_overrides: ``create_model`` overrides the weights need, as ``(field, value)``
            pairs (the Caffe release: ``stem_pool="ceil"``); see :attr:`overrides`.
        notes: anything else a user must know.
    """

    model: str
    tag: str
    converter: Converter
    source: str
    source_model: str
    license: str
    num_params: int
    preprocess: Preprocess = field(default_factory=Preprocess)
    hf_hub_id: str | None = None
    hf_filename: str | None = None
    hf_revision: str | None = None
    url: str | None = None
    filename: str | None = None
    manual_url: str | None = None
    sha256: str | None = None
    classes: str = "imagenet-1k"
    num_classes: int = 1000
    reported: tuple[ReportedAccuracy, ...] = ()
    model_overrides: tuple[tuple[str, Any], ...] = ()
    notes: str = ""

    def __post_init__(self) -> None:
        if self.converter not in CONVERTERS:
            raise ValueError(f"converter must be one of {CONVERTERS}, got {self.converter!r}")
        if not re.fullmatch(r"[A-Za-z0-9_]+", self.tag):
            raise ValueError(f"tag must be letters, digits and '_', got {self.tag!r}")
        if (self.hf_hub_id is None) != (self.hf_filename is None):
            raise ValueError(f"{self.name}: hf_hub_id and hf_filename go together")
        if sum(x is not None for x in (self.hf_hub_id, self.url, self.manual_url)) != 1:
            raise ValueError(f"{self.name}: give exactly one of hf_hub_id, url, manual_url")
        if self.manual_url is not None and self.filename is None:
            raise ValueError(f"{self.name}: a manual download needs a filename")
        if self.sha256 is not None and not _SHA_RE.match(self.sha256):
            raise ValueError(
                f"{self.name}: sha256 must be 8 to 64 lower-case hex digits, got {self.sha256!r}"
            )

    @property
    def name(self) -> str:
        """``<model>.<tag>``."""
        return f"{self.model}.{self.tag}"

    @property
    def overrides(self) -> dict[str, Any]:
        """:attr:`model_overrides` as keyword arguments of ``create_model``."""
        return dict(self.model_overrides)

    @property
    def downloadable(self) -> bool:
        """Whether :func:`fetch_pretrained` can download the file (False: by hand only)."""
        return self.hf_hub_id is not None or self.url is not None

    @property
    def file_name(self) -> str:
        """The file's name (Hub file name, URL file name, or the manual file name)."""
        if self.hf_filename is not None:
            return self.hf_filename
        if self.filename is not None:
            return self.filename
        assert self.url is not None  # a manual entry always has a filename (__post_init__)
        return self.url.rsplit("/", 1)[-1].split("?", 1)[0]

    @property
    def location(self) -> str:
        """Where the file comes from, as a URL a person can open."""
        if self.hf_hub_id is not None:
            rev = self.hf_revision or "main"
            return f"https://huggingface.co/{self.hf_hub_id}/resolve/{rev}/{self.hf_filename}"
        return self.url or self.manual_url or ""

    def as_dict(self) -> dict[str, Any]:
        """Every field as plain JSON-able values, plus ``name`` and ``location``."""
        d = asdict(self)
        d["name"] = self.name
        d["location"] = self.location
        d["preprocess"]["crop_pct"] = round(self.preprocess.crop_pct, 4)
        d["model_overrides"] = self.overrides
        return d


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------
_TIMM_RESULTS = "timm results-imagenet.csv (huggingface/pytorch-image-models)"
_TV_DOCS = "torchvision weights metadata (acc@1 / acc@5)"
_SKNET_README = "https://github.com/implus/SKNet#trained-models"

_CAFFE_PRE = Preprocess(
    crop_size=224,
    resize_size=256,
    interpolation="bilinear",
    mean=(104.0, 117.0, 123.0),
    std=(1.0, 1.0, 1.0),
    channel_order="BGR",
    pixel_scale=255.0,
    test_crop_size=320,
    test_resize_size=256,
    confirmed=False,
    note=(
        "resize shorter side 256 then centre crop 224 or 320 (official README); BGR, mean "
        "(104, 117, 123), scale 1 on 0-255 pixels are not stated by implus/SKNet: inferred from "
        "SENet's Caffe release (hujie-frank/SENet), whose augmentation SKNet's README says it "
        "uses; interpolation unknown (bilinear assumed)"
    ),
)


def _timm(
    model: str,
    tag: str,
    timm_name: str,
    num_params: int,
    top1: float,
    top5: float,
    *,
    res: int = 224,
    crop_pct: float = 0.875,
    pre: Preprocess | None = None,
    license: str = "apache-2.0",
    source: str = "timm (Ross Wightman)",
    notes: str = "",
) -> PretrainedCfg:
    return PretrainedCfg(
        model=model,
        tag=tag,
        converter="timm",
        source=source,
        source_model=timm_name,
        license=license,
        num_params=num_params,
        preprocess=pre or _timm_pre(),
        hf_hub_id=f"timm/{timm_name}",
        hf_filename="model.safetensors",
        reported=(ReportedAccuracy(top1, top5, res, int(res / crop_pct), _TIMM_RESULTS),),
        notes=notes,
    )


_ENTRIES: list[PretrainedCfg] = [
    _timm(
        "sknet50",
        "ra_in1k",
        "skresnext50_32x4d.ra_in1k",
        27_479_784,
        80.162,
        94.640,
        notes="timm's SK-ResNeXt-50 32x4d trained with timm's RandAugment recipe (not the "
        "paper's); M=2 paths (3x3, 3x3 dilated), split input off, like the paper",
    ),
    _timm(
        "skresnet18",
        "ra_in1k",
        "skresnet18.ra_in1k",
        11_958_056,
        73.038,
        91.172,
        notes="timm's SK-ResNet-18 (basic blocks; not in the paper)",
    ),
    _timm(
        "skresnet34",
        "ra_in1k",
        "skresnet34.ra_in1k",
        22_282_376,
        76.910,
        93.316,
        notes="timm's SK-ResNet-34 (basic blocks; not in the paper)",
    ),
    _timm(
        "senet50",
        "racm_in1k",
        "seresnext50_32x4d.racm_in1k",
        27_559_896,
        82.196,
        96.148,
        res=288,
        crop_pct=0.95,
        pre=_timm_pre(test_size=288, test_crop_pct=0.95),
        notes="timm's SE-ResNeXt-50 32x4d, RandAugment + CutMix recipe; the reported accuracy "
        "is at timm's test size 288 (crop_pct 0.95), no 224 number is published",
    ),
    _timm(
        "senet50",
        "gluon_in1k",
        "seresnext50_32x4d.gluon_in1k",
        27_559_896,
        79.910,
        94.824,
        source="GluonCV, ported by timm",
        notes="same training recipe as resnext50_32x4d.gluon_in1k: a like-for-like SE baseline",
    ),
    _timm(
        "resnext50_32x4d",
        "gluon_in1k",
        "resnext50_32x4d.gluon_in1k",
        25_028_904,
        79.360,
        94.430,
        source="GluonCV, ported by timm",
    ),
    _timm(
        "resnext101_32x4d",
        "gluon_in1k",
        "resnext101_32x4d.gluon_in1k",
        44_177_704,
        80.340,
        94.930,
        source="GluonCV, ported by timm",
        notes="the only public ImageNet-1k-only ResNeXt-101 32x4d weights found (timm's other "
        "resnext101_32x4d weights are semi-/weakly supervised on YFCC100M / IG-1B, CC-BY-NC)",
    ),
    _timm(
        "senet101",
        "gluon_in1k",
        "seresnext101_32x4d.gluon_in1k",
        48_955_416,
        80.892,
        95.296,
        source="GluonCV, ported by timm",
    ),
    PretrainedCfg(
        model="resnext50_32x4d",
        tag="tv_in1k",
        converter="torchvision",
        source="torchvision",
        source_model="torchvision.models.ResNeXt50_32X4D_Weights.IMAGENET1K_V1",
        license="bsd-3-clause",
        num_params=25_028_904,
        preprocess=Preprocess(224, 256, "bilinear", note="torchvision IMAGENET1K_V1 transforms"),
        url="https://download.pytorch.org/models/resnext50_32x4d-7cdf4587.pth",
        sha256="7cdf4587",
        reported=(ReportedAccuracy(77.618, 93.698, 224, 256, _TV_DOCS),),
        notes="the original-paper recipe (90 epochs)",
    ),
    PretrainedCfg(
        model="resnext50_32x4d",
        tag="tv2_in1k",
        converter="torchvision",
        source="torchvision",
        source_model="torchvision.models.ResNeXt50_32X4D_Weights.IMAGENET1K_V2",
        license="bsd-3-clause",
        num_params=25_028_904,
        preprocess=Preprocess(224, 232, "bilinear", note="torchvision IMAGENET1K_V2 transforms"),
        url="https://download.pytorch.org/models/resnext50_32x4d-1a0047aa.pth",
        sha256="1a0047aa",
        reported=(ReportedAccuracy(81.198, 95.340, 224, 232, _TV_DOCS),),
        notes="torchvision's new training recipe (600 epochs, heavy augmentation)",
    ),
    PretrainedCfg(
        model="sknet50",
        tag="caffe_in1k",
        converter="caffe",
        source="official release (Li et al., implus/SKNet, Caffe)",
        source_model="SKNet-50 caffemodel",
        license="not stated by the official repository",
        num_params=27_479_784,
        preprocess=_CAFFE_PRE,
        manual_url="https://drive.google.com/file/d/1EKanqFkqoU3L6vgSLW3GjPciesZ2rrUH/view",
        filename="SKNet-50.caffemodel",
        model_overrides=(("stem_pool", "ceil"),),
        reported=(
            ReportedAccuracy(79.21, None, 224, 256, f"official README ({_SKNET_README})"),
            ReportedAccuracy(80.68, None, 320, 256, f"official README ({_SKNET_README})"),
        ),
        notes="trained with the paper's recipe; Google Drive only (no direct download): "
        "download by hand and convert with `sknet convert --from caffe`; conversion of the real "
        "file is untested here; num_params counted from the official prototxt",
    ),
    PretrainedCfg(
        model="sknet101",
        tag="caffe_in1k",
        converter="caffe",
        source="official release (Li et al., implus/SKNet, Caffe)",
        source_model="SKNet-101 caffemodel",
        license="not stated by the official repository",
        num_params=48_686_760,
        preprocess=_CAFFE_PRE,
        manual_url="https://drive.google.com/file/d/1NEYIYeSXQeinLGU5GH2hf8T6MJytzt0U/view",
        filename="SKNet-101.caffemodel",
        model_overrides=(("stem_pool", "ceil"),),
        reported=(
            ReportedAccuracy(79.81, None, 224, 256, f"official README ({_SKNET_README})"),
            ReportedAccuracy(81.60, None, 320, 256, f"official README ({_SKNET_README})"),
        ),
        notes="trained with the paper's recipe; Google Drive only (no direct download): "
        "download by hand and convert with `sknet convert --from caffe`; conversion of the real "
        "file is untested here; num_params counted from the official prototxt (the README "
        "rounds it to 48.9M)",
    ),
]

_REGISTRY: dict[str, PretrainedCfg] = {}
# model -> default tag (the first registered, unless listed here)
_DEFAULT_TAGS: dict[str, str] = {
    "sknet50": "ra_in1k",
    "resnext50_32x4d": "tv2_in1k",
    "senet50": "racm_in1k",
}


def register_pretrained(
    cfg: PretrainedCfg, *, overwrite: bool = False, default: bool = False
) -> None:
    """Add ``cfg`` to the registry (e.g. your own weights on a Hub repo or server).

    ``default=True`` makes its tag the one ``pretrained=True`` picks for its model. An existing
    name raises ``ValueError`` unless ``overwrite``.
    """
    if not isinstance(cfg, PretrainedCfg):
        raise TypeError(f"expected a PretrainedCfg, got {type(cfg).__name__}")
    if cfg.name in _REGISTRY and not overwrite:
        raise ValueError(f"pretrained weights {cfg.name!r} are already registered")
    _REGISTRY[cfg.name] = cfg
    if default or cfg.model not in _DEFAULT_TAGS:
        _DEFAULT_TAGS[cfg.model] = cfg.tag


for _cfg in _ENTRIES:
    register_pretrained(_cfg)
del _cfg


def list_pretrained(pattern: str = "*") -> list[str]:
    """Sorted ``<model>.<tag>`` names matching the shell-style ``pattern`` (case-insensitive).

    A pattern without a dot also matches the model part alone, so ``list_pretrained("sk*")``
    lists every tag of every SK model.
    """
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a string, got {type(pattern).__name__}")
    pat = pattern.lower()
    out = []
    for name, cfg in _REGISTRY.items():
        if fnmatch.fnmatchcase(name.lower(), pat) or (
            "." not in pat and fnmatch.fnmatchcase(cfg.model.lower(), pat)
        ):
            out.append(name)
    return sorted(out)


def default_tag(model: str) -> str | None:
    """The tag ``pretrained=True`` picks for ``model`` (None: no weights registered)."""
    return _DEFAULT_TAGS.get(model)


def get_pretrained_cfg(name_or_tag: str) -> PretrainedCfg:
    """The entry for ``"<model>.<tag>"``, or for ``"<model>"`` its default tag.

    Raises ``ValueError`` naming the weights available for that model (or all models).
    """
    if not isinstance(name_or_tag, str) or not name_or_tag:
        raise ValueError(f"expected a '<model>.<tag>' name, got {name_or_tag!r}")
    if name_or_tag in _REGISTRY:
        return _REGISTRY[name_or_tag]
    model, _, tag = name_or_tag.partition(".")
    if not tag and model in _DEFAULT_TAGS:
        return _REGISTRY[f"{model}.{_DEFAULT_TAGS[model]}"]
    same = list_pretrained(f"{model}.*")
    if same:
        raise ValueError(f"no pretrained weights {name_or_tag!r}; {model} has: {', '.join(same)}")
    models = sorted({c.model for c in _REGISTRY.values()})
    raise ValueError(
        f"no pretrained weights for {model!r}; models with weights: {', '.join(models)} "
        "(see sknet.list_pretrained())"
    )


def resolve_pretrained(model: str, pretrained: bool | str) -> PretrainedCfg | None:
    """The entry ``create_model(model, pretrained=...)`` means: None for False, the default tag
    for True, ``<model>.<tag>`` for a tag string (a full ``<model>.<tag>`` is accepted too)."""
    if pretrained is False:
        return None
    if pretrained is True:
        return get_pretrained_cfg(model)
    if not isinstance(pretrained, str) or not pretrained:
        raise TypeError(f"pretrained must be a bool or a tag string, got {pretrained!r}")
    if pretrained.startswith(f"{model}."):
        return get_pretrained_cfg(pretrained)
    return get_pretrained_cfg(f"{model}.{pretrained}")


# --------------------------------------------------------------------------------------------
# Class names
# --------------------------------------------------------------------------------------------
def imagenet_classes() -> tuple[list[str], list[str]]:
    """``(synsets, names)`` of ImageNet-1k in the standard order (index = class id).

    ``synsets`` are the WordNet ids in sorted order (``n01440764``, ...) shipped with sknet;
    ``names`` the human-readable names of torchvision's weights metadata.
    """
    text = (resources.files("sknet") / "data" / "imagenet_synsets.txt").read_text("utf-8")
    synsets = text.split()
    from torchvision.models import ResNet50_Weights

    names = list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    if len(synsets) != 1000 or len(names) != 1000:  # pragma: no cover - packaging error
        raise RuntimeError(f"ImageNet class lists are broken: {len(synsets)} ids, {len(names)}")
    return synsets, names


def class_names(key: str) -> list[str]:
    """Human-readable class names for a ``PretrainedCfg.classes`` key (``"imagenet-1k"``)."""
    if key == "imagenet-1k":
        return imagenet_classes()[1]
    raise ValueError(f"unknown class list {key!r}; known: imagenet-1k")


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------
def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "on", "yes", "true"}


def _offline() -> bool:
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def _hf_cache_dir() -> str | None:
    """The Hub cache from the environment now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _unavailable(cfg: PretrainedCfg, reason: str, target: Path | str | None = None) -> Exception:
    """The error for a file that cannot be downloaded: what, from where, why, what to do."""
    where = f" into {target}" if target else ""
    todo = f"download {cfg.file_name} by hand from {cfg.location} and pass checkpoint_path=<file>"
    if cfg.url is not None and isinstance(target, Path):
        todo += f" (or save it as {target})"
    return WeightsUnavailableError(
        f"cannot download {cfg.file_name} for {cfg.name} from {cfg.source} "
        f"({cfg.location}){where}: {reason}; {todo}"
    )


def _check(
    cfg: PretrainedCfg, path: Path, expected: str | None, extra: tuple[Path, ...] = ()
) -> None:
    """Verify ``path`` against ``expected`` (full sha256 or prefix); delete it on mismatch."""
    if expected is None:
        return
    digest = _sha256(path)
    if digest.startswith(expected.lower()):
        return
    for p in (path, *extra):
        with contextlib.suppress(OSError):
            p.unlink()
    raise ChecksumError(
        f"{cfg.name}: {cfg.file_name} from {cfg.location} has sha256 {digest[:16]}..., expected "
        f"{expected[:16]}...; the file was deleted (a corrupt or tampered download): try again, "
        "or check the source"
    )


def _verify_cached(cfg: PretrainedCfg, path: Path, expected: str | None) -> None:
    """Re-verify a cached file against its published sha256 on every cache hit: a file
    changed or replaced after its download is refused (and kept, for inspection)."""
    if expected is None:
        return
    digest = _sha256(path)
    if digest.startswith(expected.lower()):
        return
    real = path.resolve()
    also = f" (a link to {real})" if real != path else ""
    raise ChecksumError(
        f"{cfg.name}: the cached file {path}{also} has sha256 {digest[:16]}..., but "
        f"{cfg.location} publishes {expected[:16]}...: it was changed or replaced after the "
        "download; delete it and run again to download it afresh, or pass a trusted copy as "
        "checkpoint_path=<file>"
    )


def _network_errors() -> tuple[type[BaseException], ...]:
    """OSError (urllib, requests, most huggingface_hub errors) and the HTTP client's base error
    when it is not an OSError (httpx / httpx2, used by huggingface_hub >= 1.0)."""
    errs: list[type[BaseException]] = [OSError]
    for mod in ("httpx2", "httpx"):
        base = getattr(sys.modules.get(mod), "HTTPError", None)
        if isinstance(base, type) and issubclass(base, Exception):
            errs.append(base)
    return tuple(errs)


def _fetch_hub(cfg: PretrainedCfg, cache_dir: str | None, progress: bool) -> Path:
    try:
        from huggingface_hub import hf_hub_download

        try:
            from huggingface_hub.errors import LocalEntryNotFoundError
        except ImportError:  # huggingface_hub < 0.24
            from huggingface_hub.utils import LocalEntryNotFoundError
    except ImportError as exc:
        raise _unavailable(
            cfg, "the huggingface_hub package is not installed (pip install huggingface_hub)"
        ) from exc
    assert cfg.hf_hub_id is not None and cfg.hf_filename is not None
    kwargs: dict[str, Any] = {
        "repo_id": cfg.hf_hub_id,
        "filename": cfg.hf_filename,
        "revision": cfg.hf_revision,
        "cache_dir": cache_dir or _hf_cache_dir(),
        "endpoint": os.environ.get("HF_ENDPOINT") or None,
        "library_name": "sknet",
    }
    if not progress and "tqdm_class" in inspect.signature(hf_hub_download).parameters:
        from tqdm.auto import tqdm

        class _Silent(tqdm):  # type: ignore[misc,valid-type]
            def __init__(self, *args: Any, **kw: Any) -> None:
                kw["disable"] = True
                super().__init__(*args, **kw)

        kwargs["tqdm_class"] = _Silent
    where = kwargs["cache_dir"] or "the Hugging Face cache"
    try:  # a cached file: no request at all, but its sha256 is checked again
        cached = Path(hf_hub_download(**kwargs, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    else:
        _verify_cached(cfg, cached, _hub_expected(cfg, cached))
        return cached
    if _offline():
        raise _unavailable(cfg, "offline (HF_HUB_OFFLINE is set) and not in the cache", where)
    try:
        path = Path(hf_hub_download(**kwargs))
    except _network_errors() as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _unavailable(cfg, f"{type(exc).__name__}: {reason}", where) from exc
    blob = path.resolve()
    _check(cfg, path, _hub_expected(cfg, path), extra=(blob,) if blob != path else ())
    return path


def _hub_expected(cfg: PretrainedCfg, path: Path) -> str | None:
    """The sha256 a Hub file must have: the entry's, else the one the Hub published as its LFS
    id (the Hub cache names blobs by it)."""
    if cfg.sha256 is not None:
        return cfg.sha256
    blob = path.resolve()
    return blob.name if re.fullmatch(r"[0-9a-f]{64}", blob.name) else None


def _fetch_url(cfg: PretrainedCfg, cache_dir: str | None, progress: bool) -> Path:
    assert cfg.url is not None
    folder = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()) / "checkpoints"
    dst = folder / cfg.file_name
    if dst.is_file():  # a cache hit: no request, but its sha256 is checked again
        _verify_cached(cfg, dst, cfg.sha256)
        return dst
    if _offline():
        raise _unavailable(cfg, "offline (HF_HUB_OFFLINE is set) and not in the cache", dst)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(cfg.url, str(dst), hash_prefix=None, progress=progress)
    except _network_errors() as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _unavailable(cfg, f"{type(exc).__name__}: {reason}", dst) from exc
    _check(cfg, dst, cfg.sha256)
    return dst


def fetch_pretrained(
    name_or_tag: str, *, cache_dir: str | os.PathLike | None = None, progress: bool = True
) -> Path:
    """Download the weights file of ``name_or_tag`` once; return its local path.

    Args:
        name_or_tag: ``"<model>.<tag>"`` or ``"<model>"`` (its default tag).
        cache_dir: a folder to cache into instead of the Hub cache (``HF_HOME``/``HF_HUB_CACHE``)
            or ``torch.hub.get_dir()/checkpoints`` (``TORCH_HOME``).
        progress: show a download progress bar.

    Raises:
        WeightsUnavailableError: offline, unreachable, not found, or no direct download (the
            official Caffe files): the message says how to place the file by hand.
        ChecksumError: the downloaded file does not have the expected sha256 (it is deleted),
            or the cached file no longer has it (it is kept; the message says to delete it).
            A file is checked against the entry's sha256, or for a Hub file without one
            against the sha256 the Hub publishes as its LFS id, on every call.
    """
    cfg = get_pretrained_cfg(name_or_tag)
    cache = os.fspath(cache_dir) if cache_dir is not None else None
    if cfg.hf_hub_id is not None:
        return _fetch_hub(cfg, cache, progress)
    if cfg.url is not None:
        return _fetch_url(cfg, cache, progress)
    if cfg.converter == "caffe":
        out = f"{cfg.model}_{cfg.tag}.safetensors"
        raise WeightsUnavailableError(
            f"{cfg.name} ({cfg.source}) has no direct download: get {cfg.file_name} by hand "
            f"from {cfg.manual_url} (linked from {_SKNET_README}) and pass "
            f"checkpoint_path='{cfg.file_name}', or convert it once with `sknet convert --from "
            f"caffe {cfg.file_name} {out}` and pass checkpoint_path='{out}'"
        )
    raise WeightsUnavailableError(
        f"{cfg.name} ({cfg.source}) has no direct download: get {cfg.file_name} by hand from "
        f"{cfg.manual_url} and pass checkpoint_path=<file>"
    )


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n < (1 << 30) and head[8:9] == b"{"


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a weights file, read safely and bounded.

    safetensors (the header is validated against the file's size by safetensors), or
    ``torch.load(weights_only=True)`` of a checked, memory-mapped zip (see
    :func:`sknet.loading.read_torch_file`: nothing inflates, tensors may not describe more bytes
    than the file has). Only name -> tensor entries; floating tensors must be finite (checked
    against a model's dtypes later, when one is built).
    """
    from sknet import loading

    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix.lower() == ".caffemodel":
        raise FileFormatError(
            f"{path} is a Caffe model, not a state dict: load it with sknet.hub.load_pretrained "
            f"or convert it with `sknet convert --from caffe {path} OUT.safetensors`"
        )
    if _is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: Any = dict(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise FileFormatError(f"{path} is not a readable safetensors file: {exc}") from exc
    else:
        is_zip = loading._check_torch_zip(path)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
        except Exception as exc:  # UnpicklingError, RuntimeError (not a zip), EOFError, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FileFormatError(
                f"{path} cannot be read safely as weights (safetensors, or a torch file of "
                "tensors loadable with weights_only=True; arbitrary pickled objects are "
                f"refused): {first[:200]}"
            ) from exc
        loading.check_tensor_bytes(obj, path)
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise FileFormatError(f"{path} does not hold a state dict (a mapping name -> tensor)")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        shown = [str(k)[:60] for k in bad[:3]]
        raise FileFormatError(f"{path}: entries that are not name -> tensor, e.g. {shown}")
    loading.check_state_finite(obj, path)
    return dict(obj)


def _layout_of(state: Mapping[str, torch.Tensor]) -> Converter | None:
    """``"sknet"`` for a state dict already in sknet's layout, else None (the entry's own)."""
    return "sknet" if "stem.conv.weight" in state else None


def load_pretrained_state(
    name_or_tag: str,
    checkpoint_path: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[dict[str, torch.Tensor], PretrainedCfg]:
    """The raw state dict of a registered set of weights, and its entry.

    Reads ``checkpoint_path`` when given (the registry is then only the metadata: preprocessing,
    classes, converter), otherwise the file :func:`fetch_pretrained` returns. Files are read
    safely: safetensors, or ``torch.load(weights_only=True)`` (a checkpoint holding the state
    dict under ``state_dict`` / ``model`` is unwrapped). The tensors keep the **source's**
    layout; convert them according to the returned ``cfg.converter``, which is ``"sknet"`` when
    the file already has sknet's layout (e.g. the output of ``sknet convert``).

    Raises:
        WeightsUnavailableError, ChecksumError: see :func:`fetch_pretrained`.
        FileNotFoundError: ``checkpoint_path`` does not exist.
        FileFormatError: unreadable, unsafe (arbitrary pickle), or not a state dict; a
            ``.caffemodel`` must go through the Caffe converter.
    """
    cfg = get_pretrained_cfg(name_or_tag)
    if checkpoint_path is not None:
        path = Path(checkpoint_path).expanduser()
    else:
        path = fetch_pretrained(cfg.name, cache_dir=cache_dir, progress=progress)
    state = _read_state(path)
    layout = _layout_of(state)
    if layout is not None and layout != cfg.converter:
        cfg = replace(cfg, converter=layout)
    return state, cfg


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
def _weights_path(
    cfg: PretrainedCfg,
    checkpoint_path: str | os.PathLike | None,
    cache_dir: str | os.PathLike | None,
    progress: bool,
) -> Path:
    """``checkpoint_path`` (which must exist) when given, else the file of ``cfg`` (fetched)."""
    if checkpoint_path is not None:
        path = Path(checkpoint_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found: {path}")
        return path
    return fetch_pretrained(cfg.name, cache_dir=cache_dir, progress=progress)


def _model_from_caffe(cfg: PretrainedCfg, path: Path) -> torch.nn.Module:
    """The sknet model of an official ``.caffemodel`` (``cfg`` must be a Caffe entry)."""
    if cfg.converter != "caffe":
        raise FileFormatError(f"{path} is a Caffe model, but {cfg.name} are {cfg.source} weights")
    from sknet.convert_caffe import load_caffe

    try:
        return load_caffe(path, cfg.model)
    except ValueError as exc:
        raise FileFormatError(str(exc)) from None


def _model_from_state(cfg: PretrainedCfg, path: Path) -> tuple[torch.nn.Module, str]:
    """The sknet model of a state-dict file and the layout it was converted from.

    The layout is ``"sknet"`` when the file already has sknet's layout (loaded as is, with the
    classifier width the file holds, at most ``MAX_CLASSES``), else the entry's converter (timm
    or torchvision). Before the model is allocated it is built on the ``meta`` device: its size
    is checked (``SKNET_MAX_PARAMS``) and the file's tensors must fit it in names, shapes and
    dtype kinds (floating weights only); they are finite (:func:`_read_state`).
    """
    from sknet import loading
    from sknet.models import create_model

    state = _read_state(path)
    layout = _layout_of(state) or cfg.converter
    if layout == "caffe":
        raise FileFormatError(
            f"{path}: {cfg.name} needs the official .caffemodel or a file converted from it "
            "with `sknet convert --from caffe`"
        )
    try:
        if layout == "timm":  # builds the model once, checks every key and shape
            from sknet.convert import load_timm

            return load_timm(state, cfg.model), layout
        if layout == "torchvision":
            from sknet.convert import load_torchvision

            return load_torchvision(state, cfg.model), layout
        fc = state.get("head.fc.weight")
        width = int(fc.shape[0]) if fc is not None and fc.ndim else 0
        width = _limits.bounded_int(
            width, "classifier width (head.fc.weight)", lo=0, hi=_limits.MAX_CLASSES, where=path
        )
        with torch.device("meta"):  # sized and compared first: nothing allocated
            meta = create_model(cfg.model, num_classes=width, **cfg.overrides)
        _limits.check_param_count(sum(p.numel() for p in meta.parameters()), path)
        loading.check_state_fits(meta, state, path)
        loading.check_state_dtypes(meta.state_dict(), state, path)
        model = create_model(cfg.model, num_classes=width, **cfg.overrides)
        model.load_state_dict(state, strict=True)
        return model, layout
    except FileFormatError:
        raise
    except ValueError as exc:  # a converter naming the keys that do not fit
        raise FileFormatError(f"{path}: {exc}") from None


def _pretrained_record(
    cfg: PretrainedCfg, model: torch.nn.Module, path: Path, layout: str, verified: bool = False
) -> Any:
    """The ``loading.ModelRecord`` of ``model`` loaded from ``path``: config, classes, provenance.

    ``verified``: the file was fetched and checked against the published sha256 (provenance
    ``sha256_verified``; False for a ``checkpoint_path``, which is not checked).

    Class names (and ImageNet synset ids) are set only when the model keeps the weights' number
    of classes.
    """
    from sknet import loading
    from sknet.weights import arch_config_of

    classes = class_names(cfg.classes) if int(model.num_classes) == cfg.num_classes else None
    imagenet = classes is not None and cfg.classes == "imagenet-1k"
    return loading.ModelRecord(
        name=cfg.model,
        arch=arch_config_of(model) or {},
        num_classes=int(model.num_classes),
        in_chans=int(model.in_chans),
        preprocess=loading.Preprocess.from_dict(cfg.preprocess.to_unit_dict()),
        source=cfg.name,
        source_kind="pretrained",
        classes=tuple(classes) if classes is not None else None,
        class_ids=tuple(imagenet_classes()[0]) if imagenet else None,
        data="imagefolder",  # ImageNet-style folders: the data kind these weights were trained on
        model_overrides=cfg.overrides,
        provenance={
            "weights": cfg.name,
            "source": cfg.source,
            "source_model": cfg.source_model,
            "license": cfg.license,
            "location": cfg.location,
            "file": str(path),
            "sha256": cfg.sha256,
            "sha256_verified": verified and cfg.sha256 is not None,
            "converted_from": layout,
            "class_list": cfg.classes,  # imagenet-1k: hub.imagenet_classes() has the synsets
            "preprocess_confirmed": cfg.preprocess.confirmed,
            "reported_accuracy": [asdict(r) for r in cfg.reported],
        },
    )


def load_pretrained(
    name_or_tag: str,
    *,
    num_classes: int | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[torch.nn.Module, Any]:
    """The sknet model with the weights of ``name_or_tag`` and its record (``ModelRecord``).

    Downloads the file once (:func:`fetch_pretrained`) unless ``checkpoint_path`` is given (a
    copy of the source file, an official ``.caffemodel``, or the output of ``sknet convert``),
    converts it according to the entry's converter (timm, torchvision, Caffe; a file already in
    sknet's layout is loaded as is), and builds the record: architecture config, ImageNet class
    names, the weights' preprocessing, and the provenance (source, licence, location, sha256,
    reported accuracy). A ``num_classes`` other than the weights' keeps the backbone and gives a
    fresh classifier (logged). The model is in eval mode.

    Raises:
        WeightsUnavailableError, ChecksumError: see :func:`fetch_pretrained`.
        FileNotFoundError: ``checkpoint_path`` does not exist.
        FileFormatError: an unreadable or unsafe file, or tensors that do not fit the model.
    """
    from sknet import loading

    cfg = get_pretrained_cfg(name_or_tag)
    path = _weights_path(cfg, checkpoint_path, cache_dir, progress)
    if path.suffix.lower() == ".caffemodel":
        model, layout = _model_from_caffe(cfg, path), "caffe"
    else:
        model, layout = _model_from_state(cfg, path)
    record = _pretrained_record(cfg, model, path, layout, verified=checkpoint_path is None)
    model.model_overrides = cfg.overrides  # type: ignore[assignment]
    model.class_names = record.classes  # type: ignore[assignment]
    if num_classes is not None and num_classes != record.num_classes:
        model, record = loading._new_head(model, record, num_classes)
    return model.eval(), record

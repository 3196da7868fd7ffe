"""The published-weights table: which public SK / SE / ResNeXt ImageNet weights exist.

Each entry is named ``<model>.<tag>`` after the sknet model it loads into (``sknet50.ra_in1k``)
and is a frozen :class:`PretrainedCfg`, like timm's ``pretrained_cfg`` or torchvision's weight
enums: where the file comes from (a Hugging Face Hub repo and file name, a plain URL, or a page
to download it from by hand), its sha256 where known, the source and its licence, the number of
parameters, the preprocessing the weights expect (:class:`WeightsPreprocess`: the source's
statement, in its own units; :meth:`WeightsPreprocess.to_preprocess` gives the one
:class:`sknet.Preprocess`), the class names, the key map that turns the file's tensors into
sknet's layout, and the accuracy its publisher reports (:class:`ReportedAccuracy`: **reported by
the source, not measured here**).

* :func:`register_pretrained` adds an entry; :func:`list_pretrained` / :func:`get_pretrained_cfg`
  / :func:`resolve_pretrained` look entries up.
* :func:`imagenet_classes` gives the 1000 ImageNet-1k WordNet ids (standard sorted order, shipped
  with sknet) and their human-readable names (from torchvision's weights metadata), offline;
  :func:`class_names` the names of an entry's class list.

Downloading is :mod:`sknet.hub.download`, reading :mod:`sknet.hub.read`, loading
:mod:`sknet.hub.load`.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, Literal

import torch

from sknet.errors import ConfigError, FileFormatError, InputError, InputTypeError
from sknet.models import resolve_alias
from sknet.preprocess import (
    CAFFE_MEAN_255,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocess,
    to_channel_order,
)

__all__ = [
    "CONVERTERS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SKNET_README",
    "PretrainedCfg",
    "ReportedAccuracy",
    "WeightsPreprocess",
    "class_names",
    "get_pretrained_cfg",
    "imagenet_classes",
    "list_pretrained",
    "register_pretrained",
    "resolve_pretrained",
]

Converter = Literal["timm", "torchvision", "caffe", "sknet"]
CONVERTERS: tuple[str, ...] = ("timm", "torchvision", "caffe", "sknet")
SKNET_README = "https://github.com/implus/SKNet#trained-models"

_SHA_RE = re.compile(r"^[0-9a-f]{8,64}$")


@dataclass(frozen=True)
class WeightsPreprocess:
    """How a source states the preparation of its images (evaluation: resize, centre crop), in
    the source's own units; :meth:`to_preprocess` is the same as the one :class:`sknet.Preprocess`.

    The model input is ``(x * pixel_scale - mean) / std`` per channel in ``channel_order``, where
    ``x`` is the RGB image in [0, 1] (as ``torchvision.transforms.ToTensor`` gives it): for the
    torchvision/timm convention ``pixel_scale=1`` with ImageNet mean/std; for Caffe
    ``pixel_scale=255``, BGR order and the mean in that order with ``std=1``.

    Attributes:
        crop_size: side of the centre crop fed to the network (``Preprocess.input_size``).
        resize_size: shorter side the image is resized to before cropping
            (``Preprocess.resize``).
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
    def input_size(self) -> int:
        """:attr:`crop_size` under :class:`sknet.Preprocess`'s name."""
        return self.crop_size

    @property
    def resize(self) -> int:
        """:attr:`resize_size` under :class:`sknet.Preprocess`'s name."""
        return self.resize_size

    @property
    def crop_pct(self) -> float:
        """``crop_size / resize_size`` (timm's ``crop_pct``)."""
        return self.crop_size / self.resize_size

    def to_preprocess(self) -> Preprocess:
        """The same preparation as the one :class:`sknet.Preprocess` (mean/std in [0, 1])."""
        k = self.pixel_scale
        return Preprocess(
            input_size=self.crop_size,
            resize=self.resize_size,
            interpolation=self.interpolation,
            mean=(self.mean[0] / k, self.mean[1] / k, self.mean[2] / k),
            std=(self.std[0] / k, self.std[1] / k, self.std[2] / k),
            channel_order=self.channel_order,
        )

    def to_unit_dict(self) -> dict[str, Any]:
        """The fields of :class:`sknet.Preprocess` (mean/std in [0, 1] units)."""
        return self.to_preprocess().to_dict()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map an RGB batch in [0, 1] (N, 3, H, W) to the input these weights expect (in the
        source's units, exactly as it states them)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"expected an RGB batch of shape (N, 3, H, W), got {tuple(x.shape)}")
        x = to_channel_order(x, self.channel_order, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * self.pixel_scale - mean) / std


def _timm_pre(
    crop_pct: float = 0.875,
    interpolation: Literal["bilinear", "bicubic"] = "bicubic",
    test_size: int | None = None,
    test_crop_pct: float | None = None,
) -> WeightsPreprocess:
    """timm's eval transform: resize shorter side to floor(size / crop_pct), centre crop."""
    return WeightsPreprocess(
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
    preprocess: WeightsPreprocess = field(default_factory=WeightsPreprocess)
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
            raise ConfigError(f"converter must be one of {CONVERTERS}, got {self.converter!r}")
        if not re.fullmatch(r"[A-Za-z0-9_]+", self.tag):
            raise ConfigError(f"tag must be letters, digits and '_', got {self.tag!r}")
        if (self.hf_hub_id is None) != (self.hf_filename is None):
            raise ConfigError(f"{self.name}: hf_hub_id and hf_filename go together")
        if sum(x is not None for x in (self.hf_hub_id, self.url, self.manual_url)) != 1:
            raise ConfigError(f"{self.name}: give exactly one of hf_hub_id, url, manual_url")
        if self.manual_url is not None and self.filename is None:
            raise ConfigError(f"{self.name}: a manual download needs a filename")
        if self.sha256 is not None and not _SHA_RE.match(self.sha256):
            raise ConfigError(
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
SKNET_README = "https://github.com/implus/SKNet#trained-models"

_CAFFE_PRE = WeightsPreprocess(
    crop_size=224,
    resize_size=256,
    interpolation="bilinear",
    mean=CAFFE_MEAN_255,
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
    pre: WeightsPreprocess | None = None,
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
        preprocess=WeightsPreprocess(
            224, 256, "bilinear", note="torchvision IMAGENET1K_V1 transforms"
        ),
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
        preprocess=WeightsPreprocess(
            224, 232, "bilinear", note="torchvision IMAGENET1K_V2 transforms"
        ),
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
            ReportedAccuracy(79.21, None, 224, 256, f"official README ({SKNET_README})"),
            ReportedAccuracy(80.68, None, 320, 256, f"official README ({SKNET_README})"),
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
            ReportedAccuracy(79.81, None, 224, 256, f"official README ({SKNET_README})"),
            ReportedAccuracy(81.60, None, 320, 256, f"official README ({SKNET_README})"),
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
        raise InputTypeError(f"expected a PretrainedCfg, got {type(cfg).__name__}")
    if cfg.name in _REGISTRY and not overwrite:
        raise ConfigError(f"pretrained weights {cfg.name!r} are already registered")
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
        raise InputTypeError(f"pattern must be a string, got {type(pattern).__name__}")
    pat = pattern.lower()
    out = []
    for name, cfg in _REGISTRY.items():
        if fnmatch.fnmatchcase(name.lower(), pat) or (
            "." not in pat and fnmatch.fnmatchcase(cfg.model.lower(), pat)
        ):
            out.append(name)
    return sorted(out)


def get_pretrained_cfg(name_or_tag: str) -> PretrainedCfg:
    """The entry for ``"<model>.<tag>"``, or for ``"<model>"`` its default tag.

    Raises ``ValueError`` naming the weights available for that model (or all models).
    """
    if not isinstance(name_or_tag, str) or not name_or_tag:
        raise ConfigError(f"expected a '<model>.<tag>' name, got {name_or_tag!r}")
    if name_or_tag in _REGISTRY:
        return _REGISTRY[name_or_tag]
    model, dot, tag = name_or_tag.partition(".")
    if resolve_alias(model) != model:  # timm's model name: "skresnext50_32x4d.ra_in1k"
        return get_pretrained_cfg(resolve_alias(model) + dot + tag)
    if not tag and model in _DEFAULT_TAGS:
        return _REGISTRY[f"{model}.{_DEFAULT_TAGS[model]}"]
    same = list_pretrained(f"{model}.*")
    if same:
        raise ConfigError(f"no pretrained weights {name_or_tag!r}; {model} has: {', '.join(same)}")
    models = sorted({c.model for c in _REGISTRY.values()})
    raise ConfigError(
        f"no pretrained weights for {model!r}; models with weights: {', '.join(models)} "
        "(`sknet info MODEL` lists a model's weights; sknet.list_pretrained() in Python)"
    )


def resolve_pretrained(model: str, pretrained: bool | str) -> PretrainedCfg | None:
    """The entry ``create_model(model, pretrained=...)`` means: None for False, the default tag
    for True, ``<model>.<tag>`` for a tag string (a full ``<model>.<tag>`` is accepted too)."""
    if pretrained is False:
        return None
    if pretrained is True:
        return get_pretrained_cfg(model)
    if not isinstance(pretrained, str) or not pretrained:
        raise InputTypeError(f"pretrained must be a bool or a tag string, got {pretrained!r}")
    model = resolve_alias(model)
    head, dot, rest = pretrained.partition(".")
    if dot and resolve_alias(head) == model:  # "<model or alias>.<tag>"
        return get_pretrained_cfg(f"{model}.{rest}")
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
        raise FileFormatError(f"ImageNet class lists are broken: {len(synsets)} ids, {len(names)}")
    return synsets, names


def class_names(key: str) -> list[str]:
    """Human-readable class names for a ``PretrainedCfg.classes`` key (``"imagenet-1k"``)."""
    if key == "imagenet-1k":
        return imagenet_classes()[1]
    raise ConfigError(f"unknown class list {key!r}; known: imagenet-1k")

"""Weights I/O: everything between a weights file and a ready model.

One job per module, layered above :mod:`sknet.models` and below train / predict / analysis:

* :mod:`sknet.hub.table`: the published-weights table (:class:`PretrainedCfg`,
  :class:`ReportedAccuracy`, :class:`WeightsPreprocess`, register / list / get / resolve, class
  name lists);
* :mod:`sknet.hub.download`: fetching into the cache, sha256 checked on every cache hit;
* :mod:`sknet.hub.read`: the one safe reader (safetensors, checkpoints, torch files), the one
  strict fit check, dtype / finite checks and size bounds;
* :mod:`sknet.hub.convert`: timm / torchvision key maps, pure functions over state dicts;
* :mod:`sknet.hub.caffe`: the Caffe wire-format reader / writer and the Caffe key map;
* :mod:`sknet.hub.metadata`: the one metadata schema of weights files and checkpoints;
* :mod:`sknet.hub.record`: :class:`ModelRecord` and its one factory;
* :mod:`sknet.hub.load`: :func:`load` for any source, and the other loaders, which all return
  ``(model, record)``; importing it registers the weights loader of ``create_model``.
"""

from sknet.errors import ChecksumError, WeightsUnavailableError
from sknet.hub import caffe, convert, download, load, metadata, read, record, table
from sknet.hub.convert import from_timm, from_torchvision, guess_timm_model, guess_torchvision_model
from sknet.hub.download import fetch_pretrained
from sknet.hub.load import load as load_model
from sknet.hub.load import (
    load_caffe,
    load_pretrained,
    load_pretrained_state,
    load_timm,
    load_torchvision,
    load_weights,
    resolve_source,
)
from sknet.hub.metadata import read_metadata, save_weights
from sknet.hub.read import read_checkpoint, read_state_dict
from sknet.hub.record import ModelRecord
from sknet.hub.table import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PretrainedCfg,
    ReportedAccuracy,
    WeightsPreprocess,
    class_names,
    get_pretrained_cfg,
    imagenet_classes,
    list_pretrained,
    register_pretrained,
    resolve_pretrained,
)

#: The old name of :class:`WeightsPreprocess` (``sknet.hub.Preprocess``); the preprocessing of
#: a model is :class:`sknet.Preprocess`, which :meth:`WeightsPreprocess.to_preprocess` gives.
Preprocess = WeightsPreprocess

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ChecksumError",
    "ModelRecord",
    "Preprocess",
    "PretrainedCfg",
    "ReportedAccuracy",
    "WeightsPreprocess",
    "WeightsUnavailableError",
    "caffe",
    "class_names",
    "convert",
    "download",
    "fetch_pretrained",
    "from_timm",
    "from_torchvision",
    "get_pretrained_cfg",
    "guess_timm_model",
    "guess_torchvision_model",
    "imagenet_classes",
    "list_pretrained",
    "load",
    "load_caffe",
    "load_model",
    "load_pretrained",
    "load_pretrained_state",
    "load_timm",
    "load_torchvision",
    "load_weights",
    "metadata",
    "read",
    "read_checkpoint",
    "read_metadata",
    "read_state_dict",
    "record",
    "register_pretrained",
    "resolve_pretrained",
    "resolve_source",
    "save_weights",
    "table",
]

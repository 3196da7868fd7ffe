"""sknet: Selective Kernel Networks (Li et al., CVPR 2019) for PyTorch.

>>> import sknet
>>> model = sknet.create_model("sknet50", num_classes=10)
>>> sknet.list_models("sk*")
"""

from sknet.complexity import Complexity, complexity
from sknet.deploy import deploy
from sknet.errors import SKNetError
from sknet.hub import list_pretrained  # also registers create_model's weights loader
from sknet.hub.load import load
from sknet.hub.record import ModelRecord
from sknet.layers import BranchSpec, FrozenBatchNorm2d, SEModule, SKConv, freeze_batchnorm
from sknet.models import (
    FeatureNet,
    SKNetModel,
    attention_of,
    capture_attention,
    create_model,
    get_entry,
    list_models,
    sk_units,
)
from sknet.predict import (  # the function shadows the module name (as intended)
    Prediction,
    create_transform,
    predict,
    resolve_data_config,
)
from sknet.preprocess import DataConfig, Preprocess

__version__ = "0.1.0"

__all__ = [
    "BranchSpec",
    "Complexity",
    "DataConfig",
    "FeatureNet",
    "FrozenBatchNorm2d",
    "ModelRecord",
    "Prediction",
    "Preprocess",
    "SEModule",
    "SKConv",
    "SKNetError",
    "SKNetModel",
    "__version__",
    "attention_of",
    "capture_attention",
    "complexity",
    "create_model",
    "create_transform",
    "deploy",
    "freeze_batchnorm",
    "get_entry",
    "list_models",
    "list_pretrained",
    "load",
    "predict",
    "resolve_data_config",
    "sk_units",
]

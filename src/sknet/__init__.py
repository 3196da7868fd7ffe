"""sknet: Selective Kernel Networks (Li et al., CVPR 2019) for PyTorch.

>>> import sknet
>>> model = sknet.create_model("sknet50", num_classes=10)
>>> sknet.list_models("sk*")
"""

from sknet.complexity import Complexity, complexity
from sknet.deploy import deploy
from sknet.layers import BranchSpec, SEModule, SKConv
from sknet.models import (
    SKNetModel,
    attention_of,
    capture_attention,
    create_model,
    get_entry,
    list_models,
    sk_units,
)

__version__ = "0.1.0"

__all__ = [
    "BranchSpec",
    "Complexity",
    "SEModule",
    "SKConv",
    "SKNetModel",
    "__version__",
    "attention_of",
    "capture_attention",
    "complexity",
    "create_model",
    "deploy",
    "get_entry",
    "list_models",
    "sk_units",
]

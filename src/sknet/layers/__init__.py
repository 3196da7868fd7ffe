"""Building blocks: the Selective Kernel convolution and the SE gate (torch only)."""

from sknet.layers.drop import DropPath, drop_path_rates
from sknet.layers.norm import FrozenBatchNorm2d, freeze_batchnorm
from sknet.layers.se import SEModule
from sknet.layers.sk import BranchSpec, SKAttention, SKConv, resolve_branches

__all__ = [
    "BranchSpec",
    "DropPath",
    "FrozenBatchNorm2d",
    "SEModule",
    "SKAttention",
    "SKConv",
    "drop_path_rates",
    "freeze_batchnorm",
    "resolve_branches",
]

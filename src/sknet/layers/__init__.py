"""Building blocks: the Selective Kernel convolution and the SE gate (torch only)."""

from sknet.layers.se import SEModule
from sknet.layers.sk import BranchSpec, SKAttention, SKConv, resolve_branches

__all__ = ["BranchSpec", "SEModule", "SKAttention", "SKConv", "resolve_branches"]

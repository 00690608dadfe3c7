"""TensorMask (Chen et al., ICCV 2019) on libdet: dense sliding-window instance segmentation.

The project's op, ``SwapAlign2Nat``, has CPU and CUDA kernels (``projects/TensorMask/csrc``) and a pure-PyTorch
twin, so the model trains and runs everywhere.
"""

from .anchor_generator import TensorMaskAnchorGenerator
from .arch import TensorMask
from .assignment import assignment_rule
from .head import TensorMaskHead
from .layers import SwapAlign2Nat, swap_align2nat

__all__ = [
    "SwapAlign2Nat",
    "TensorMask",
    "TensorMaskAnchorGenerator",
    "TensorMaskHead",
    "assignment_rule",
    "swap_align2nat",
]

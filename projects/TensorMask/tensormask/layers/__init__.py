"""TensorMask's layers: the aligned -> natural representation op."""

from .swap_align2nat import SWAP_ALIGN2NAT_OP, SwapAlign2Nat, swap_align2nat

__all__ = ["SWAP_ALIGN2NAT_OP", "SwapAlign2Nat", "swap_align2nat"]

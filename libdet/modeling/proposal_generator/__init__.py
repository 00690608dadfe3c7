"""Proposal generators: the Region Proposal Network, its rotated variant and their helpers."""

from . import proposal_utils, rpn, rrpn
from .rpn import RPN, StandardRPNHead
from .rrpn import RRPN

__all__ = [
    "RPN",
    "RRPN",
    "StandardRPNHead",
    "proposal_utils",
    "rpn",
    "rrpn",
]

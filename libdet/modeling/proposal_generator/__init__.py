"""Proposal generators: the Region Proposal Network, its rotated variant and their helpers."""

from . import build, proposal_utils, rpn, rrpn
from .build import PROPOSAL_GENERATOR_REGISTRY, RPN_HEAD_REGISTRY, build_proposal_generator, build_rpn_head
from .rpn import RPN, StandardRPNHead
from .rrpn import RRPN

__all__ = [
    "PROPOSAL_GENERATOR_REGISTRY",
    "RPN_HEAD_REGISTRY",
    "build",
    "build_proposal_generator",
    "build_rpn_head",
    "RPN",
    "RRPN",
    "StandardRPNHead",
    "proposal_utils",
    "rpn",
    "rrpn",
]

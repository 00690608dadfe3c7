"""Proposal generators: the Region Proposal Network and its helpers."""

from . import proposal_utils, rpn
from .rpn import RPN, StandardRPNHead

__all__ = ["RPN", "StandardRPNHead", "proposal_utils", "rpn"]

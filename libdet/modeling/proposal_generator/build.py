"""``PROPOSAL_GENERATOR_REGISTRY``, ``RPN_HEAD_REGISTRY``, ``ANCHOR_GENERATOR_REGISTRY`` and their ``build_*(cfg,
...)`` functions of detectron2's YAML config layer (translated by :mod:`libdet.config.yaml_model`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from libdet.modeling.anchor_generator import DefaultAnchorGenerator, RotatedAnchorGenerator
from libdet.modeling.registries import ANCHOR_GENERATOR_REGISTRY, PROPOSAL_GENERATOR_REGISTRY, RPN_HEAD_REGISTRY

from .rpn import RPN, StandardRPNHead
from .rrpn import RRPN

__all__ = [
    "ANCHOR_GENERATOR_REGISTRY",
    "PROPOSAL_GENERATOR_REGISTRY",
    "RPN_HEAD_REGISTRY",
    "build_anchor_generator",
    "build_proposal_generator",
    "build_rpn_head",
]

BUILTIN_PROPOSAL_GENERATORS = {"RPN": RPN, "RRPN": RRPN}
BUILTIN_RPN_HEADS = {"StandardRPNHead": StandardRPNHead}
BUILTIN_ANCHOR_GENERATORS = {
    "DefaultAnchorGenerator": DefaultAnchorGenerator,
    "RotatedAnchorGenerator": RotatedAnchorGenerator,
}
for _cls in BUILTIN_PROPOSAL_GENERATORS.values():
    PROPOSAL_GENERATOR_REGISTRY.register(_cls)
RPN_HEAD_REGISTRY.register(StandardRPNHead)
for _cls in BUILTIN_ANCHOR_GENERATORS.values():
    ANCHOR_GENERATOR_REGISTRY.register(_cls)


def build_proposal_generator(cfg: Any, input_shape: Any) -> nn.Module | None:
    """The proposal generator of ``MODEL.PROPOSAL_GENERATOR.NAME`` over features ``{name: ShapeSpec}``; ``None``
    for ``"PrecomputedProposals"``."""
    from libdet.config import instantiate
    from libdet.config.yaml_model import proposal_generator_config

    node = proposal_generator_config(cfg, dict(input_shape))
    return None if node is None else instantiate(node)


def build_rpn_head(cfg: Any, input_shape: Any) -> nn.Module:
    """The RPN head of ``MODEL.RPN.HEAD_NAME`` for features of shapes ``input_shape`` (a list)."""
    from libdet.config import instantiate
    from libdet.config.yaml_model import rpn_head_config

    return instantiate(rpn_head_config(cfg, list(input_shape)))


def build_anchor_generator(cfg: Any, input_shape: Any) -> nn.Module:
    """The anchor generator of ``MODEL.ANCHOR_GENERATOR.NAME`` for features of shapes ``input_shape`` (a list)."""
    from libdet.config import instantiate
    from libdet.config.yaml_model import anchor_generator_config

    return instantiate(anchor_generator_config(cfg, list(input_shape)))

"""The registries of detectron2's YAML config layer, defined once and imported at detectron2's module paths
(``libdet.modeling.backbone.build.BACKBONE_REGISTRY``, ``libdet.modeling.roi_heads.ROI_HEADS_REGISTRY``, ...).

A YAML name (``MODEL.ROI_HEADS.NAME: MyROIHeads``) is looked up here by :mod:`libdet.config.yaml_translate`.
libdet's own modules are registered under detectron2's names; the translator builds those through the lazy
config, and calls a user's registered class or function with the config (detectron2's ``from_config``
convention, see :func:`libdet.config.configurable`). Core modules never look themselves up.
"""

from libdet.utils.registry import Registry

__all__ = [
    "ANCHOR_GENERATOR_REGISTRY",
    "BACKBONE_REGISTRY",
    "META_ARCH_REGISTRY",
    "PROPOSAL_GENERATOR_REGISTRY",
    "ROI_BOX_HEAD_REGISTRY",
    "ROI_HEADS_REGISTRY",
    "ROI_KEYPOINT_HEAD_REGISTRY",
    "ROI_MASK_HEAD_REGISTRY",
    "RPN_HEAD_REGISTRY",
    "SEM_SEG_HEADS_REGISTRY",
]

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = "Meta-architectures: called with (cfg), return an nn.Module."

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = "Backbones: called with (cfg, input_shape: ShapeSpec), return a Backbone."

PROPOSAL_GENERATOR_REGISTRY = Registry("PROPOSAL_GENERATOR")
PROPOSAL_GENERATOR_REGISTRY.__doc__ = "Proposal generators: called with (cfg, input_shape: dict[str, ShapeSpec])."

RPN_HEAD_REGISTRY = Registry("RPN_HEAD")
RPN_HEAD_REGISTRY.__doc__ = "RPN heads: called with (cfg, input_shape: list[ShapeSpec])."

ANCHOR_GENERATOR_REGISTRY = Registry("ANCHOR_GENERATOR")
ANCHOR_GENERATOR_REGISTRY.__doc__ = "Anchor generators: called with (cfg, input_shape: list[ShapeSpec])."

ROI_HEADS_REGISTRY = Registry("ROI_HEADS")
ROI_HEADS_REGISTRY.__doc__ = "ROI heads: called with (cfg, input_shape: dict[str, ShapeSpec])."

ROI_BOX_HEAD_REGISTRY = Registry("ROI_BOX_HEAD")
ROI_BOX_HEAD_REGISTRY.__doc__ = "Box heads: called with (cfg, input_shape: ShapeSpec)."

ROI_MASK_HEAD_REGISTRY = Registry("ROI_MASK_HEAD")
ROI_MASK_HEAD_REGISTRY.__doc__ = "Mask heads: called with (cfg, input_shape: ShapeSpec)."

ROI_KEYPOINT_HEAD_REGISTRY = Registry("ROI_KEYPOINT_HEAD")
ROI_KEYPOINT_HEAD_REGISTRY.__doc__ = "Keypoint heads: called with (cfg, input_shape: ShapeSpec)."

SEM_SEG_HEADS_REGISTRY = Registry("SEM_SEG_HEADS")
SEM_SEG_HEADS_REGISTRY.__doc__ = "Semantic segmentation heads: called with (cfg, input_shape: dict[str, ShapeSpec])."

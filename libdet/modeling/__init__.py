"""Detection models (``detectron2.modeling`` compatible): backbones, anchor generators, proposal
generators, ROI heads and meta-architectures. Models are wired by lazy configs (``configs/common/models``);
there are no registries and no ``build_*`` functions.
"""

from . import (
    anchor_generator,
    backbone,
    box_regression,
    matcher,
    meta_arch,
    poolers,
    postprocessing,
    proposal_generator,
    roi_heads,
    sampling,
)
from .backbone import FPN, Backbone, ResNet, ResNetBlockBase, make_stage
from .meta_arch import DenseDetector, GeneralizedRCNN, ProposalNetwork, RetinaNet
from .postprocessing import detector_postprocess
from .roi_heads import BaseMaskRCNNHead, FastRCNNOutputLayers, ROIHeads, StandardROIHeads

__all__ = [
    "Backbone",
    "BaseMaskRCNNHead",
    "DenseDetector",
    "FPN",
    "FastRCNNOutputLayers",
    "GeneralizedRCNN",
    "ProposalNetwork",
    "ROIHeads",
    "ResNet",
    "ResNetBlockBase",
    "RetinaNet",
    "StandardROIHeads",
    "anchor_generator",
    "backbone",
    "box_regression",
    "detector_postprocess",
    "make_stage",
    "matcher",
    "meta_arch",
    "poolers",
    "postprocessing",
    "proposal_generator",
    "roi_heads",
    "sampling",
]

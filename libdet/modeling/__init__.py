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
    test_time_augmentation,
)
from .backbone import FPN, Backbone, ResNet, ResNetBlockBase, make_stage
from .meta_arch import FCOS, DenseDetector, GeneralizedRCNN, PanopticFPN, ProposalNetwork, RetinaNet, SemanticSegmentor
from .postprocessing import detector_postprocess
from .roi_heads import BaseKeypointRCNNHead, BaseMaskRCNNHead, FastRCNNOutputLayers, ROIHeads, StandardROIHeads
from .test_time_augmentation import DatasetMapperTTA, GeneralizedRCNNWithTTA

__all__ = [
    "Backbone",
    "BaseKeypointRCNNHead",
    "BaseMaskRCNNHead",
    "DatasetMapperTTA",
    "DenseDetector",
    "FCOS",
    "FPN",
    "FastRCNNOutputLayers",
    "GeneralizedRCNN",
    "GeneralizedRCNNWithTTA",
    "PanopticFPN",
    "ProposalNetwork",
    "ROIHeads",
    "ResNet",
    "ResNetBlockBase",
    "RetinaNet",
    "SemanticSegmentor",
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
    "test_time_augmentation",
]

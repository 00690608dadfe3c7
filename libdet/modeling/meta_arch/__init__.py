"""Meta-architectures: whole models that take a list of input dicts and return losses or detections."""

from . import build, dense_detector, fcos, panoptic_fpn, rcnn, retinanet, semantic_seg
from .build import META_ARCH_REGISTRY, SEM_SEG_HEADS_REGISTRY, build_model, build_sem_seg_head
from .dense_detector import DenseDetector
from .fcos import FCOS, FCOSHead
from .panoptic_fpn import PanopticFPN
from .rcnn import GeneralizedRCNN, ProposalNetwork
from .retinanet import RetinaNet, RetinaNetHead
from .semantic_seg import SemanticSegmentor, SemSegFPNHead

__all__ = [
    "META_ARCH_REGISTRY",
    "SEM_SEG_HEADS_REGISTRY",
    "build",
    "build_model",
    "build_sem_seg_head",
    "DenseDetector",
    "FCOS",
    "FCOSHead",
    "GeneralizedRCNN",
    "PanopticFPN",
    "ProposalNetwork",
    "RetinaNet",
    "RetinaNetHead",
    "SemSegFPNHead",
    "SemanticSegmentor",
    "dense_detector",
    "fcos",
    "panoptic_fpn",
    "rcnn",
    "retinanet",
    "semantic_seg",
]

"""Meta-architectures: whole models that take a list of input dicts and return losses or detections."""

from . import dense_detector, rcnn, retinanet
from .dense_detector import DenseDetector
from .rcnn import GeneralizedRCNN, ProposalNetwork
from .retinanet import RetinaNet, RetinaNetHead

__all__ = [
    "DenseDetector",
    "GeneralizedRCNN",
    "ProposalNetwork",
    "RetinaNet",
    "RetinaNetHead",
    "dense_detector",
    "rcnn",
    "retinanet",
]

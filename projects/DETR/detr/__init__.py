"""DETR (DEtection TRansformer) on libdet: model, losses, weight conversion."""

from .box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, generalized_box_iou
from .criterion import SetCriterion
from .detr import DETR, MLP
from .matcher import HungarianMatcher
from .position_encoding import PositionEmbeddingLearned, PositionEmbeddingSine
from .transformer import Transformer

__all__ = [
    "DETR",
    "MLP",
    "HungarianMatcher",
    "PositionEmbeddingLearned",
    "PositionEmbeddingSine",
    "SetCriterion",
    "Transformer",
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "generalized_box_iou",
]

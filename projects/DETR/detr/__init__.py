"""DETR (DEtection TRansformer) on libdet: model, losses, panoptic head, weight conversion."""

from .backbone import make_detr_resnet_stages
from .box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, generalized_box_iou
from .criterion import SetCriterion
from .detr import DETR, MLP
from .matcher import HungarianMatcher
from .position_encoding import PositionEmbeddingLearned, PositionEmbeddingSine
from .segmentation import DETRSegm, MaskHeadSmallConv, MHAttentionMap, panoptic_inference
from .transformer import Transformer

__all__ = [
    "DETR",
    "DETRSegm",
    "MLP",
    "HungarianMatcher",
    "MHAttentionMap",
    "MaskHeadSmallConv",
    "PositionEmbeddingLearned",
    "PositionEmbeddingSine",
    "SetCriterion",
    "Transformer",
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "generalized_box_iou",
    "make_detr_resnet_stages",
    "panoptic_inference",
]

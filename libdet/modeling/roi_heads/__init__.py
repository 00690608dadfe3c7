"""ROI heads and the box/mask/keypoint heads they run."""

from . import box_head, cascade_rcnn, fast_rcnn, keypoint_head, mask_head, roi_heads, rotated_fast_rcnn
from .box_head import FastRCNNConvFCHead
from .cascade_rcnn import CascadeROIHeads
from .fast_rcnn import FastRCNNOutputLayers
from .keypoint_head import BaseKeypointRCNNHead, KRCNNConvDeconvUpsampleHead
from .mask_head import BaseMaskRCNNHead, MaskRCNNConvUpsampleHead
from .roi_heads import Res5ROIHeads, ROIHeads, StandardROIHeads, select_foreground_proposals
from .rotated_fast_rcnn import RROIHeads

__all__ = [
    "BaseKeypointRCNNHead",
    "BaseMaskRCNNHead",
    "CascadeROIHeads",
    "FastRCNNConvFCHead",
    "FastRCNNOutputLayers",
    "KRCNNConvDeconvUpsampleHead",
    "MaskRCNNConvUpsampleHead",
    "ROIHeads",
    "RROIHeads",
    "Res5ROIHeads",
    "StandardROIHeads",
    "box_head",
    "cascade_rcnn",
    "fast_rcnn",
    "keypoint_head",
    "mask_head",
    "roi_heads",
    "rotated_fast_rcnn",
    "select_foreground_proposals",
]

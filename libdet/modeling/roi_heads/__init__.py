"""ROI heads and the box/mask heads they run."""

from . import box_head, fast_rcnn, mask_head, roi_heads
from .box_head import FastRCNNConvFCHead
from .fast_rcnn import FastRCNNOutputLayers
from .mask_head import BaseMaskRCNNHead, MaskRCNNConvUpsampleHead
from .roi_heads import Res5ROIHeads, ROIHeads, StandardROIHeads, select_foreground_proposals

__all__ = [
    "BaseMaskRCNNHead",
    "FastRCNNConvFCHead",
    "FastRCNNOutputLayers",
    "MaskRCNNConvUpsampleHead",
    "ROIHeads",
    "Res5ROIHeads",
    "StandardROIHeads",
    "box_head",
    "fast_rcnn",
    "mask_head",
    "roi_heads",
    "select_foreground_proposals",
]

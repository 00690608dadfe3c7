"""ROI heads and the box/mask/keypoint heads they run."""

from . import box_head, build, cascade_rcnn, fast_rcnn, keypoint_head, mask_head, roi_heads, rotated_fast_rcnn
from .box_head import FastRCNNConvFCHead
from .build import (
    ROI_BOX_HEAD_REGISTRY,
    ROI_HEADS_REGISTRY,
    ROI_KEYPOINT_HEAD_REGISTRY,
    ROI_MASK_HEAD_REGISTRY,
    build_box_head,
    build_keypoint_head,
    build_mask_head,
    build_roi_heads,
)
from .cascade_rcnn import CascadeROIHeads
from .fast_rcnn import FastRCNNOutputLayers
from .keypoint_head import BaseKeypointRCNNHead, KRCNNConvDeconvUpsampleHead
from .mask_head import BaseMaskRCNNHead, MaskRCNNConvUpsampleHead
from .roi_heads import Res5ROIHeads, ROIHeads, StandardROIHeads, select_foreground_proposals
from .rotated_fast_rcnn import RROIHeads

__all__ = [
    "ROI_BOX_HEAD_REGISTRY",
    "ROI_HEADS_REGISTRY",
    "ROI_KEYPOINT_HEAD_REGISTRY",
    "ROI_MASK_HEAD_REGISTRY",
    "build",
    "build_box_head",
    "build_keypoint_head",
    "build_mask_head",
    "build_roi_heads",
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

"""Multi-object tracking across video frames by matching each frame's detections to the previous frame's.

Trackers take the ``Instances`` a detector predicts for one frame (``pred_boxes``, ``scores``,
``pred_classes`` and optionally ``pred_masks``) and return them with three list fields: ``ID`` (track id),
``ID_period`` (for how many frames the track has existed) and ``lost_frame_count`` (for how many frames it has
not been matched; such kept-alive instances are appended from the previous frame).
"""

from .base_tracker import TRACKER_HEADS_REGISTRY, BaseTracker, build_tracker_head
from .bbox_iou_tracker import BBoxIOUTracker
from .hungarian_tracker import BaseHungarianTracker
from .iou_weighted_hungarian_bbox_iou_tracker import IOUWeightedHungarianBBoxIOUTracker
from .utils import LARGE_COST_VALUE, create_prediction_pairs
from .vanilla_hungarian_bbox_iou_tracker import VanillaHungarianBBoxIOUTracker

__all__ = [
    "TRACKER_HEADS_REGISTRY",
    "BaseTracker",
    "BBoxIOUTracker",
    "BaseHungarianTracker",
    "IOUWeightedHungarianBBoxIOUTracker",
    "VanillaHungarianBBoxIOUTracker",
    "LARGE_COST_VALUE",
    "build_tracker_head",
    "create_prediction_pairs",
]

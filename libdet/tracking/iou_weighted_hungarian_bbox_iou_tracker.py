"""Hungarian tracking that prefers pairs of higher IoU."""

from __future__ import annotations

from .base_tracker import TRACKER_HEADS_REGISTRY
from .vanilla_hungarian_bbox_iou_tracker import VanillaHungarianBBoxIOUTracker

__all__ = ["IOUWeightedHungarianBBoxIOUTracker"]


@TRACKER_HEADS_REGISTRY.register()
class IOUWeightedHungarianBBoxIOUTracker(VanillaHungarianBBoxIOUTracker):
    """Like :class:`VanillaHungarianBBoxIOUTracker`, but a pair above the threshold costs ``-IoU``, so the
    assignment maximises the total IoU of the matched pairs."""

    def pair_cost(self, iou: float) -> float:
        return -iou

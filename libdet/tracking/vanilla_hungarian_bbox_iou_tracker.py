"""Hungarian tracking where every pair above the IoU threshold costs the same."""

from __future__ import annotations

import numpy as np

from libdet.structures import Instances, pairwise_iou

from .base_tracker import TRACKER_HEADS_REGISTRY
from .hungarian_tracker import BaseHungarianTracker
from .utils import LARGE_COST_VALUE, create_prediction_pairs

__all__ = ["VanillaHungarianBBoxIOUTracker"]


@TRACKER_HEADS_REGISTRY.register()
class VanillaHungarianBBoxIOUTracker(BaseHungarianTracker):
    """Maximise the number of matched pairs with box IoU >= ``track_iou_threshold`` (each pair costs -1).

    Args:
        track_iou_threshold: minimum box IoU for a detection to continue a track.
        **kwargs: the arguments of :class:`~libdet.tracking.BaseHungarianTracker`.
    """

    def __init__(
        self,
        *,
        video_height: int,
        video_width: int,
        max_num_instances: int = 200,
        max_lost_frame_count: int = 0,
        min_box_rel_dim: float = 0.02,
        min_instance_period: int = 1,
        track_iou_threshold: float = 0.5,
    ):
        super().__init__(
            video_height=video_height,
            video_width=video_width,
            max_num_instances=max_num_instances,
            max_lost_frame_count=max_lost_frame_count,
            min_box_rel_dim=min_box_rel_dim,
            min_instance_period=min_instance_period,
        )
        self._track_iou_threshold = track_iou_threshold

    def build_cost_matrix(self, instances: Instances, prev_instances: Instances) -> np.ndarray:
        """(N, M): ``LARGE_COST_VALUE`` for pairs below the IoU threshold, else the value of
        :meth:`pair_cost`."""
        iou_all = pairwise_iou(instances.pred_boxes, prev_instances.pred_boxes)
        pairs = create_prediction_pairs(instances, prev_instances, iou_all, threshold=self._track_iou_threshold)
        cost = np.full((len(instances), len(prev_instances)), LARGE_COST_VALUE, dtype=np.float64)
        for pair in pairs:
            cost[pair["idx"], pair["prev_idx"]] = self.pair_cost(pair["IoU"])
        return cost

    def pair_cost(self, iou: float) -> float:
        """Cost of a pair above the threshold: -1, whatever its IoU."""
        return -1.0

"""Tracking by optimal one-to-one assignment (Hungarian algorithm) on a cost matrix of subclasses' choosing."""

from __future__ import annotations

import copy

import numpy as np

from libdet.structures import Instances

from .base_tracker import BaseTracker
from .utils import LARGE_COST_VALUE, keep_lost_tracks

__all__ = ["BaseHungarianTracker"]


class BaseHungarianTracker(BaseTracker):
    """Match detections to the previous frame's by minimum total cost (``scipy.optimize.linear_sum_assignment``).

    Subclasses define :meth:`build_cost_matrix`; pairs of cost ``>= LARGE_COST_VALUE`` are never matched.

    Args:
        video_height, video_width: frame size in pixels.
        max_num_instances: at most this many instances are returned per frame (lost tracks are dropped first).
        max_lost_frame_count: for how many consecutive frames an unmatched track is kept (0: never).
        min_box_rel_dim: lost tracks whose box is narrower or lower than this fraction of the frame are dropped.
        min_instance_period: lost tracks are kept only once they have existed for more than this many frames.
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
    ):
        super().__init__()
        self._video_height = video_height
        self._video_width = video_width
        self._max_num_instances = max_num_instances
        self._max_lost_frame_count = max_lost_frame_count
        self._min_box_rel_dim = min_box_rel_dim
        self._min_instance_period = min_instance_period

    def build_cost_matrix(self, instances: Instances, prev_instances: Instances) -> np.ndarray:
        """(N, M) cost of continuing previous track ``j`` with detection ``i``; lower is better."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_cost_matrix().")

    def update(self, instances: Instances) -> Instances:
        """Track one frame (see :class:`~libdet.tracking.BBoxIOUTracker.update` for the fields).

        Raises:
            NotImplementedError: for ``pred_keypoints``, which the box cost does not cover.
        """
        from scipy.optimize import linear_sum_assignment

        if instances.has("pred_keypoints"):
            raise NotImplementedError(f"{type(self).__name__} does not track keypoints (field 'pred_keypoints').")
        instances = self._initialize_extra_fields(instances)
        if self._prev_instances is not None:
            prev = self._prev_instances
            cost = np.asarray(self.build_cost_matrix(instances, prev), dtype=np.float64)
            if cost.shape != (len(instances), len(prev)):
                raise ValueError(
                    f"{type(self).__name__}.build_cost_matrix returned shape {cost.shape}, expected "
                    f"{(len(instances), len(prev))}."
                )
            rows, cols = linear_sum_assignment(cost)
            # The assignment is complete on the smaller side; pairs that may not match stay unmatched.
            valid = cost[rows, cols] < LARGE_COST_VALUE
            matched_idx, matched_prev_idx = rows[valid].tolist(), cols[valid].tolist()
            for idx, prev_idx in zip(matched_idx, matched_prev_idx, strict=True):
                self._continue_track(instances, idx, prev_idx)
            instances = self._assign_new_ids(instances, matched_idx)
            unmatched_prev = sorted(set(range(len(prev))) - set(matched_prev_idx))
            instances = keep_lost_tracks(
                instances,
                prev,
                unmatched_prev,
                video_height=self._video_height,
                video_width=self._video_width,
                max_num_instances=self._max_num_instances,
                max_lost_frame_count=self._max_lost_frame_count,
                min_box_rel_dim=self._min_box_rel_dim,
                min_instance_period=self._min_instance_period,
            )
        self._prev_instances = copy.deepcopy(instances)
        return instances

"""Greedy tracking by box IoU: pairs are matched in decreasing IoU order."""

from __future__ import annotations

import copy

from libdet.structures import Instances, pairwise_iou

from .base_tracker import TRACKER_HEADS_REGISTRY, BaseTracker
from .utils import create_prediction_pairs, keep_lost_tracks

__all__ = ["BBoxIOUTracker"]


@TRACKER_HEADS_REGISTRY.register()
class BBoxIOUTracker(BaseTracker):
    """Match each detection to the previous frame's detection of highest box IoU, greedily.

    Pairs (detection, previous detection) with IoU >= ``track_iou_threshold`` are taken in decreasing IoU order;
    each detection and each previous detection is used at most once. Matched detections continue the previous
    track id; the others start new tracks. Unmatched previous detections may be kept alive (see
    :func:`~libdet.tracking.utils.keep_lost_tracks`).

    Args:
        video_height, video_width: frame size in pixels.
        max_num_instances: at most this many instances are returned per frame (lost tracks are dropped first).
        max_lost_frame_count: for how many consecutive frames an unmatched track is kept (0: never).
        min_box_rel_dim: lost tracks whose box is narrower or lower than this fraction of the frame are dropped.
        min_instance_period: lost tracks are kept only once they have existed for more than this many frames.
        track_iou_threshold: minimum box IoU for a detection to continue a track.
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
        super().__init__()
        self._video_height = video_height
        self._video_width = video_width
        self._max_num_instances = max_num_instances
        self._max_lost_frame_count = max_lost_frame_count
        self._min_box_rel_dim = min_box_rel_dim
        self._min_instance_period = min_instance_period
        self._track_iou_threshold = track_iou_threshold

    def update(self, instances: Instances) -> Instances:
        """Track one frame.

        Args:
            instances: predictions with ``pred_boxes`` (and any other fields, e.g. ``scores``, ``pred_classes``,
                ``pred_masks``, which lost tracks carry along).

        Returns:
            ``instances`` with ``ID``, ``ID_period`` and ``lost_frame_count``, followed by kept lost tracks.
        """
        instances = self._initialize_extra_fields(instances)
        if self._prev_instances is not None:
            prev = self._prev_instances
            iou_all = pairwise_iou(instances.pred_boxes, prev.pred_boxes)
            pairs = create_prediction_pairs(instances, prev, iou_all, threshold=self._track_iou_threshold)
            pairs.sort(key=lambda p: p["IoU"], reverse=True)
            matched_idx: set[int] = set()
            matched_prev_idx: set[int] = set()
            for pair in pairs:
                idx, prev_idx = pair["idx"], pair["prev_idx"]
                if idx in matched_idx or prev_idx in matched_prev_idx:
                    continue
                self._continue_track(instances, idx, prev_idx)
                matched_idx.add(idx)
                matched_prev_idx.add(prev_idx)
            instances = self._assign_new_ids(instances, matched_idx)
            unmatched_prev = [i for i in range(len(prev)) if i not in matched_prev_idx]
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

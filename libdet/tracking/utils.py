"""Helpers shared by the box trackers."""

from __future__ import annotations

import torch

from libdet.structures import Instances

__all__ = ["LARGE_COST_VALUE", "create_prediction_pairs", "keep_lost_tracks"]

LARGE_COST_VALUE = 100000
"""Cost of a (detection, previous detection) pair that must never be matched by the Hungarian trackers."""


def create_prediction_pairs(
    instances: Instances, prev_instances: Instances, iou_all: torch.Tensor, threshold: float = 0.5
) -> list[dict]:
    """Every (detection, previous detection) pair whose box IoU is at least ``threshold``.

    Args:
        instances: this frame's predictions (N).
        prev_instances: the previous frame's tracked predictions (M), with ``ID``.
        iou_all: (N, M) pairwise box IoU.
        threshold: minimum IoU of a pair.

    Returns:
        dicts with ``idx``, ``prev_idx``, ``prev_id``, ``prev_period`` and ``IoU``, in row-major order.
    """
    pairs = []
    for idx, prev_idx in torch.nonzero(iou_all >= threshold).tolist():
        pairs.append(
            {
                "idx": idx,
                "prev_idx": prev_idx,
                "prev_id": prev_instances.ID[prev_idx],
                "prev_period": prev_instances.ID_period[prev_idx],
                "IoU": float(iou_all[idx, prev_idx]),
            }
        )
    return pairs


def keep_lost_tracks(
    instances: Instances,
    prev_instances: Instances,
    unmatched_prev_idx: list[int],
    *,
    video_height: int,
    video_width: int,
    max_num_instances: int,
    max_lost_frame_count: int,
    min_box_rel_dim: float,
    min_instance_period: int,
) -> Instances:
    """Append previous instances that found no match this frame, so their tracks survive a few missed frames.

    A previous instance is kept when it has been lost for fewer than ``max_lost_frame_count`` frames, its
    track is older than ``min_instance_period`` frames, and its box is at least ``min_box_rel_dim`` of the
    video's width and height; its ``lost_frame_count`` grows by one. At most ``max_num_instances`` instances
    are returned: lost tracks are appended only up to that number.
    """
    keep = []
    for prev_idx in unmatched_prev_idx:
        x0, y0, x1, y1 = prev_instances.pred_boxes.tensor[prev_idx].tolist()
        if (
            (x1 - x0) / video_width < min_box_rel_dim
            or (y1 - y0) / video_height < min_box_rel_dim
            or prev_instances.lost_frame_count[prev_idx] >= max_lost_frame_count
            or prev_instances.ID_period[prev_idx] <= min_instance_period
        ):
            continue
        keep.append(prev_idx)
    keep = keep[: max(0, max_num_instances - len(instances))]
    if not keep:
        return instances
    lost = Instances.cat([prev_instances[i] for i in keep])
    lost.lost_frame_count = [prev_instances.lost_frame_count[i] + 1 for i in keep]
    if len(instances) == 0:
        return lost
    return Instances.cat([instances, lost])

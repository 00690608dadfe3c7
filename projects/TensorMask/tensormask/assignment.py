"""TensorMask's anchor assignment rule (containment, scale, centre distance, uniqueness)."""

from __future__ import annotations

import torch

from libdet.structures import Boxes

__all__ = ["assignment_rule"]


def assignment_rule(
    gt_boxes: Boxes,
    anchor_boxes: Boxes,
    unit_lengths: torch.Tensor,
    min_anchor_size: float,
    scale_thresh: float = 2.0,
    spatial_thresh: float = 1.0,
    uniqueness_on: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Assigns ground-truth boxes to anchors with the rules of TensorMask (https://arxiv.org/abs/1903.12174).

    An anchor is a candidate for a box when all of these hold:

    * containment: the anchor contains the box;
    * scale: the anchor's size less its unit length (windows are sampled every unit length, so a window is
      effectively that much smaller) is at most ``scale_thresh`` times the box's longer side (at least
      ``min_anchor_size``, so that small objects still get anchors);
    * centre: the centres are at most ``spatial_thresh`` unit lengths apart.

    An anchor with exactly one candidate box is foreground (label 1); with none, background (0); with
    several, ambiguous: background when ``uniqueness_on``, else ignored (-1).

    Args:
        gt_boxes: ``N`` boxes (x0, y0, x1, y1).
        anchor_boxes: ``M`` anchors (x0, y0, x1, y1).
        unit_lengths: Tensor[M], the stride of each anchor's level.
        min_anchor_size: the smallest upper size limit, in pixels.
        scale_thresh, spatial_thresh, uniqueness_on: see above.

    Returns:
        matches: int64 Tensor[M], the matched box of each anchor (meaningful where the label is 1).
        labels: int8 Tensor[M] of 1 / 0 / -1.
    """
    gt, anchors = gt_boxes.tensor, anchor_boxes.tensor
    num_gt, num_anchors = gt.shape[0], anchors.shape[0]
    if unit_lengths.shape != (num_anchors,):
        raise ValueError(
            f"assignment_rule: `unit_lengths` must have shape ({num_anchors},) like the anchors, "
            f"got {tuple(unit_lengths.shape)}."
        )
    if num_gt == 0 or num_anchors == 0:
        return (
            torch.zeros(num_anchors, dtype=torch.int64, device=anchors.device),
            torch.zeros(num_anchors, dtype=torch.int8, device=anchors.device),
        )
    # Containment: the union of box and anchor is the anchor itself.
    contained = (gt[:, None, :2] >= anchors[None, :, :2]).all(dim=2) & (gt[:, None, 2:] <= anchors[None, :, 2:]).all(
        dim=2
    )  # [N, M]

    # Scale: anchor size (less the sampling step) <= scale_thresh x the box's longer side.
    gt_size_upper = (gt[:, 2:] - gt[:, :2]).max(dim=1).values * scale_thresh  # [N]
    gt_size_upper = gt_size_upper.clamp(min=min_anchor_size)
    anchor_size = (anchors[:, 2:] - anchors[:, :2]).max(dim=1).values - unit_lengths  # [M]
    scale_ok = gt_size_upper[:, None] - anchor_size[None, :] >= 0  # [N, M]

    # Centre distance, in unit lengths.
    gt_center = (gt[:, 2:] + gt[:, :2]) / 2
    anchor_center = (anchors[:, 2:] + anchors[:, :2]) / 2
    offset = (gt_center[:, None, :] - anchor_center[None, :, :]) / unit_lengths[None, :, None]  # [N, M, 2]
    spatial_ok = (offset * offset).sum(dim=2) <= spatial_thresh * spatial_thresh

    candidates = (contained & scale_ok & spatial_ok).int()  # [N, M]
    matched, matches = candidates.max(dim=0)
    labels = (matched > 0).to(torch.int8)
    ambiguous = candidates.sum(dim=0) > 1
    labels[ambiguous] = 0 if uniqueness_on else -1
    return matches, labels

"""Bipartite matching of DETR's predictions to the ground truth (Hungarian algorithm)."""

from __future__ import annotations

import torch
from torch import nn

from .box_ops import box_cxcywh_to_xyxy, generalized_box_iou

__all__ = ["HungarianMatcher"]


class HungarianMatcher(nn.Module):
    """One-to-one assignment of targets to predictions minimising
    ``cost_class * (-p(class)) + cost_bbox * L1 + cost_giou * (-GIoU)`` per image.

    Predictions left unmatched are trained towards "no object".

    Args:
        cost_class: weight of the negative class probability (the paper: 1).
        cost_bbox: weight of the L1 distance of normalised cx, cy, w, h (5).
        cost_giou: weight of the negative generalized IoU (2).
    """

    def __init__(self, *, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("HungarianMatcher: all costs are 0; at least one must be non-zero.")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou

    @torch.no_grad()
    def cost_matrices(self, pred_logits, pred_boxes, targets) -> list[torch.Tensor]:
        """Per-image (Q, T_i) matching costs; arguments as :meth:`forward`."""
        probs = pred_logits.float().softmax(-1)
        costs = []
        for prob, boxes, target in zip(probs, pred_boxes.float(), targets):
            labels, tgt_boxes = target["labels"], target["boxes"].float()
            cost_class = -prob[:, labels]
            cost_bbox = torch.cdist(boxes, tgt_boxes, p=1)
            cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(tgt_boxes))
            costs.append(self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou)
        return costs

    @torch.no_grad()
    def forward(
        self, pred_logits: torch.Tensor, pred_boxes: torch.Tensor, targets: list[dict[str, torch.Tensor]]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            pred_logits: (N, Q, K + 1) class logits (last = no object).
            pred_boxes: (N, Q, 4) normalised cx, cy, w, h in [0, 1].
            targets: N dicts with "labels" (T_i,) int64 in [0, K) and "boxes" (T_i, 4) normalised cx, cy, w, h.

        Returns:
            N pairs ``(pred_idx, tgt_idx)`` of int64 tensors of length ``min(Q, T_i)``: prediction
            ``pred_idx[j]`` is matched to target ``tgt_idx[j]``.
        """
        from scipy.optimize import linear_sum_assignment

        if len(targets) != pred_logits.shape[0]:
            raise ValueError(f"HungarianMatcher: {len(targets)} targets for a batch of {pred_logits.shape[0]}.")
        matches = []
        for cost in self.cost_matrices(pred_logits, pred_boxes, targets):
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            matches.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return matches

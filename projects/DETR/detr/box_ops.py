"""Box conversions and the generalized IoU used by DETR's matcher and loss."""

from __future__ import annotations

import torch

__all__ = ["box_cxcywh_to_xyxy", "box_xyxy_to_cxcywh", "generalized_box_iou"]


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) centre-size boxes to (..., 4) corner boxes."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) corner boxes to (..., 4) centre-size boxes."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise generalized IoU (Rezatofighi et al. 2019) of (N, 4) and (M, 4) xyxy boxes.

    Returns:
        (N, M) values in [-1, 1].

    Raises:
        ValueError: a box has x1 < x0 or y1 < y0 (a degenerate prediction would make the loss meaningless).
    """
    if not (boxes1[:, 2:] >= boxes1[:, :2]).all() or not (boxes2[:, 2:] >= boxes2[:, :2]).all():
        raise ValueError("generalized_box_iou: boxes must be (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0.")
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area1[:, None] + area2[None, :] - inter
    iou = inter / union
    hull_lt = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    hull_rb = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    hull = (hull_rb - hull_lt).clamp(min=0).prod(-1)
    return iou - (hull - union) / hull

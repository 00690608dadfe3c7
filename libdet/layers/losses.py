"""Box regression losses: Distance-IoU and Complete-IoU (https://arxiv.org/abs/1911.08287).

``giou_loss``, ``smooth_l1_loss``, ``sigmoid_focal_loss`` and ``sigmoid_focal_loss_jit`` are
re-exported from ``fvcore.nn`` (what detectron2 uses), so all box/classification losses are importable
from one place.
"""

from __future__ import annotations

import math

import torch

from libdet.utils.fvcore_nn import fvcore_nn

__all__ = [
    "diou_loss",
    "ciou_loss",
    "giou_loss",
    "smooth_l1_loss",
    "sigmoid_focal_loss",
    "sigmoid_focal_loss_jit",
]

giou_loss = fvcore_nn.giou_loss
smooth_l1_loss = fvcore_nn.smooth_l1_loss
sigmoid_focal_loss = fvcore_nn.sigmoid_focal_loss
sigmoid_focal_loss_jit = fvcore_nn.sigmoid_focal_loss_jit


def _iou_and_center_penalty(
    boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (IoU, squared centre distance / squared diagonal of the smallest enclosing box)."""
    if boxes1.shape[-1] != 4 or boxes2.shape[-1] != 4:
        raise ValueError(
            f"{name}: `boxes1` and `boxes2` must have shape (..., 4) in (x1, y1, x2, y2) format, "
            f"got {tuple(boxes1.shape)} and {tuple(boxes2.shape)}."
        )
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    if not bool((x2 >= x1).all()) or not bool((y2 >= y1).all()):
        raise ValueError(f"{name}: `boxes1` has a box with x2 < x1 or y2 < y1.")

    # Intersection (zero when the boxes do not overlap).
    iw = (torch.min(x2, x2g) - torch.max(x1, x1g)).clamp(min=0)
    ih = (torch.min(y2, y2g) - torch.max(y1, y1g)).clamp(min=0)
    intersection = iw * ih
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - intersection + eps
    iou = intersection / union

    # Squared diagonal of the smallest enclosing box and squared distance of the centres.
    enclosing_w = torch.max(x2, x2g) - torch.min(x1, x1g)
    enclosing_h = torch.max(y2, y2g) - torch.min(y1, y1g)
    diag = enclosing_w**2 + enclosing_h**2 + eps
    center_dist = ((x1 + x2 - x1g - x2g) / 2) ** 2 + ((y1 + y2 - y1g - y2g) / 2) ** 2
    return iou, center_dist / diag


def _reduce(loss: torch.Tensor, reduction: str, name: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f'{name}: `reduction` must be "none", "mean" or "sum", got {reduction!r}.')


def diou_loss(boxes1: torch.Tensor, boxes2: torch.Tensor, reduction: str = "none", eps: float = 1e-7) -> torch.Tensor:
    """Distance-IoU loss: ``1 - IoU + d^2 / c^2``, with ``d`` the distance between the box centres and
    ``c`` the diagonal of the smallest box enclosing both.

    Args:
        boxes1: Tensor[..., 4] predicted boxes (x1, y1, x2, y2); must satisfy x2 >= x1, y2 >= y1.
        boxes2: Tensor[..., 4] target boxes, same shape.
        reduction: ``"none"`` (per-box loss), ``"mean"`` (0 for empty input) or ``"sum"``.
        eps: small number preventing division by zero.

    Returns:
        The loss, of shape ``boxes1.shape[:-1]`` for ``"none"``, else a scalar.
    """
    iou, penalty = _iou_and_center_penalty(boxes1, boxes2, eps, "diou_loss")
    return _reduce(1 - iou + penalty, reduction, "diou_loss")


def ciou_loss(boxes1: torch.Tensor, boxes2: torch.Tensor, reduction: str = "none", eps: float = 1e-7) -> torch.Tensor:
    """Complete-IoU loss: the DIoU loss plus an aspect-ratio consistency term ``alpha * v``, with
    ``v = 4 / pi^2 * (atan(wg / hg) - atan(w / h))^2`` and ``alpha = v / (1 - IoU + v)`` (no gradient).

    Args:
        boxes1: Tensor[..., 4] predicted boxes (x1, y1, x2, y2); must satisfy x2 >= x1, y2 >= y1.
        boxes2: Tensor[..., 4] target boxes, same shape.
        reduction: ``"none"`` (per-box loss), ``"mean"`` (0 for empty input) or ``"sum"``.
        eps: small number preventing division by zero.

    Returns:
        The loss, of shape ``boxes1.shape[:-1]`` for ``"none"``, else a scalar.
    """
    iou, penalty = _iou_and_center_penalty(boxes1, boxes2, eps, "ciou_loss")
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    v = (4 / (math.pi**2)) * (torch.atan((x2g - x1g) / (y2g - y1g)) - torch.atan((x2 - x1) / (y2 - y1))) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return _reduce(1 - iou + penalty + alpha * v, reduction, "ciou_loss")

"""Non-maximum suppression of axis-aligned boxes (torchvision's) and of rotated boxes.

``nms`` / ``batched_nms`` use ``torchvision.ops``. ``nms_rotated`` uses the compiled ``libdet::nms_rotated``
op when it is loaded and supports the device, else its pure-PyTorch twin (greedy NMS over the rotated IoU
matrix of :mod:`libdet.layers.rotated_boxes`). Both compute IoUs in float64 and compare them with
``> iou_threshold``; equal scores keep the lower index first.
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision
from torch import Tensor

from libdet.utils.compiled_ops import libdet_csrc, register_op

from .rotated_boxes import _box_iou_rotated_twin

__all__ = ["nms", "batched_nms", "nms_rotated", "batched_nms_rotated"]

# Rows of the IoU matrix the twin computes at once.
_TWIN_ROW_CHUNK = 1024


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """torchvision's NMS of axis-aligned boxes.

    Args:
        boxes: ``Tensor[N, 4]`` in ``(x1, y1, x2, y2)``.
        scores: ``Tensor[N]``.
        iou_threshold: boxes with IoU ``> iou_threshold`` with a higher-scoring kept box are removed.

    Returns:
        int64 ``Tensor[K]``: indices of the kept boxes by decreasing score.
    """
    return torchvision.ops.nms(boxes, scores, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS run independently per category, as ``torchvision.ops.batched_nms``, on boxes of at least
    float32 precision (float16 lacks the range for torchvision's coordinate-offset trick).

    Args:
        boxes: ``Tensor[N, 4]`` in ``(x1, y1, x2, y2)``.
        scores: ``Tensor[N]``.
        idxs: ``Tensor[N]`` integer category of each box; boxes of different categories never suppress
            each other.
        iou_threshold: IoU above which a lower-scoring box of the same category is removed.

    Returns:
        int64 ``Tensor[K]``: indices of the kept boxes by decreasing score.
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"batched_nms: `boxes` must have shape [N, 4], got {list(boxes.shape)}.")
    dtype = torch.promote_types(boxes.dtype, torch.float32)
    return torchvision.ops.batched_nms(boxes.to(dtype), scores.to(dtype), idxs, iou_threshold)


def nms_rotated(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS of rotated boxes.

    Args:
        boxes: ``Tensor[N, 5]``, rows ``(cx, cy, w, h, angle_degrees)``.
        scores: ``Tensor[N]``, same device.
        iou_threshold: a box is removed when its rotated IoU with a kept, higher-scoring box is
            ``> iou_threshold``.

    Returns:
        int64 ``Tensor[K]``: indices of the kept boxes, by decreasing score (ties: lower index first).
    """
    _check_args(boxes, scores, "nms_rotated")
    dtype = torch.promote_types(boxes.dtype, torch.float32)
    boxes = boxes.to(dtype)
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    return NMS_ROTATED_OP(boxes, scores, float(iou_threshold))


def batched_nms_rotated(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Rotated NMS run independently per category.

    Boxes of category ``k`` are moved by ``k * span`` along x and y before one :func:`nms_rotated` call,
    where ``span`` exceeds the extent of all boxes (centres plus the largest half-diagonal), so boxes of
    different categories never overlap. The shift is done in float64, so it costs no precision.

    Args:
        boxes: ``Tensor[N, 5]``, rows ``(cx, cy, w, h, angle_degrees)``.
        scores: ``Tensor[N]``.
        idxs: ``Tensor[N]`` integer category of each box.
        iou_threshold: IoU above which a lower-scoring box of the same category is removed.

    Returns:
        int64 ``Tensor[K]``: indices of the kept boxes by decreasing score.
    """
    _check_args(boxes, scores, "batched_nms_rotated")
    if idxs.shape != scores.shape:
        raise ValueError(
            f"batched_nms_rotated: `idxs` must have shape {tuple(scores.shape)} like `scores`, got {tuple(idxs.shape)}."
        )
    if boxes.shape[0] == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    boxes = boxes.to(torch.float64)
    reach = 0.5 * torch.hypot(boxes[:, 2], boxes[:, 3]).max()  # largest half-diagonal
    low = torch.minimum(boxes[:, 0], boxes[:, 1]).min() - reach
    high = torch.maximum(boxes[:, 0], boxes[:, 1]).max() + reach
    offsets = idxs.to(torch.float64) * (high - low + 1)
    shifted = boxes.clone()
    shifted[:, :2] += offsets[:, None]
    return nms_rotated(shifted, scores, iou_threshold)


def _check_args(boxes: Tensor, scores: Tensor, caller: str) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 5:
        raise ValueError(f"{caller}: `boxes` must have shape [N, 5] (cx, cy, w, h, angle), got {tuple(boxes.shape)}.")
    if scores.shape != (boxes.shape[0],):
        raise ValueError(f"{caller}: `scores` must have shape [{boxes.shape[0]}], got {tuple(scores.shape)}.")
    if boxes.device != scores.device:
        raise ValueError(
            f"{caller}: `boxes` and `scores` must be on the same device, got {boxes.device} and {scores.device}."
        )


def _nms_rotated_twin(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Pure-PyTorch ``nms_rotated``: the overlap matrix of the score-sorted boxes, then a greedy pass."""
    n = boxes.shape[0]
    if n == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    sorted_boxes = boxes[order]
    # overlaps[i, j]: box j (after i in score order) is suppressed by box i if i is kept.
    overlaps = np.zeros((n, n), dtype=bool)
    for row0 in range(0, n, _TWIN_ROW_CHUNK):
        rows = slice(row0, min(n, row0 + _TWIN_ROW_CHUNK))
        over = _box_iou_rotated_twin(sorted_boxes[rows], sorted_boxes) > iou_threshold
        # Row r of the block is box row0 + r: keep only the boxes after it.
        overlaps[rows] = torch.triu(over, diagonal=row0 + 1).cpu().numpy()
    removed = np.zeros(n, dtype=bool)
    keep = []
    for i in range(n):
        if not removed[i]:
            keep.append(i)
            removed |= overlaps[i]
    return order[torch.as_tensor(keep, dtype=torch.int64, device=boxes.device)]


def _nms_rotated_fake(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    kept = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((kept,), dtype=torch.int64)


#: The compiled op (``csrc/nms_rotated``); calling it picks the kernel or the twin by device.
NMS_ROTATED_OP = register_op(
    "nms_rotated",
    sources=libdet_csrc("nms_rotated"),
    include_dirs=[libdet_csrc("common")],
    schemas={"nms_rotated": "nms_rotated(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor"},
    fakes={"nms_rotated": _nms_rotated_fake},
    twin=_nms_rotated_twin,
)

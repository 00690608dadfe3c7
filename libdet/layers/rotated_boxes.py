"""IoU of rotated boxes: the compiled ``libdet::box_iou_rotated`` op and its pure-PyTorch twin.

A rotated box is ``(cx, cy, w, h, angle)`` with the angle in degrees, counter-clockwise on screen (image y
points down), as in detectron2. Its corners are ``centre + R @ (+-w/2, +-h/2)`` with
``R = [[cos, sin], [-sin, cos]]``.

Both implementations compute the intersection by Sutherland-Hodgman clipping of one box's quadrilateral
by the other's four half-planes, in float64, after moving the origin to the midpoint of the two centres
(so that large coordinates cost no precision); boxes with a zero (or negative) side have IoU 0. The twin
mirrors ``csrc/common/rotated_box_geometry.h`` step by step; keep the two in sync.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from libdet.utils.compiled_ops import libdet_csrc, register_op

__all__ = ["box_iou_rotated", "pairwise_iou_rotated"]

# Same constants as csrc/common/rotated_box_geometry.h.
_MAX_VERTICES = 16
_DEGREES_TO_RADIANS = math.pi / 180.0
# Work sizes of the twin: candidate-mask rows x columns, and box pairs clipped at once.
_MASK_CHUNK = 1 << 22
_PAIR_CHUNK = 1 << 15


def box_iou_rotated(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection-over-union of every pair of rotated boxes.

    Args:
        boxes1: ``Tensor[N, 5]``, rows ``(cx, cy, w, h, angle_degrees)``.
        boxes2: ``Tensor[M, 5]``, same format, same device.

    Returns:
        ``Tensor[N, M]`` of IoUs in ``[0, 1]``. Its dtype is float64 if either input is float64, else
        float32 (float16/bfloat16 boxes are promoted, as detectron2 returns float32). Degenerate boxes
        (a side <= 0) give 0, never NaN. Uses the compiled kernel when it is loaded and supports the
        device, else the pure-PyTorch twin; both compute in float64 internally.
    """
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    if boxes1.device != boxes2.device:
        raise ValueError(
            f"box_iou_rotated: boxes1 and boxes2 must be on the same device, got {boxes1.device} and {boxes2.device}."
        )
    dtype = torch.promote_types(torch.promote_types(boxes1.dtype, boxes2.dtype), torch.float32)
    boxes1 = boxes1.to(dtype)
    boxes2 = boxes2.to(dtype)
    return BOX_IOU_ROTATED_OP(boxes1, boxes2).to(dtype)  # the twin computes in float64


def pairwise_iou_rotated(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """detectron2's name for :func:`box_iou_rotated` (same arguments and result)."""
    return box_iou_rotated(boxes1, boxes2)


def _check_boxes(boxes: Tensor, name: str) -> None:
    if not isinstance(boxes, Tensor):
        raise TypeError(f"box_iou_rotated: `{name}` must be a Tensor, got {type(boxes).__name__}.")
    if boxes.dim() != 2 or boxes.shape[1] != 5:
        raise ValueError(
            f"box_iou_rotated: `{name}` must have shape [N, 5] (cx, cy, w, h, angle), got {tuple(boxes.shape)}."
        )


def _box_iou_rotated_twin(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU matrix ``[N, M]`` in float64, computed with tensor ops only (any device, autograd-free use).

    Pairs whose circumscribed circles are apart (or with a degenerate box) are 0 without clipping, as in
    the kernel; the others are clipped in chunks of ``_PAIR_CHUNK`` pairs to bound memory.
    """
    n, m = boxes1.shape[0], boxes2.shape[0]
    ious = torch.zeros((n, m), dtype=torch.float64, device=boxes1.device)
    if n == 0 or m == 0:
        return ious
    b1 = boxes1.to(torch.float64)
    b2 = boxes2.to(torch.float64)
    valid1 = (b1[:, 2] > 0) & (b1[:, 3] > 0)
    valid2 = (b2[:, 2] > 0) & (b2[:, 3] > 0)
    radius1 = 0.5 * torch.sqrt(b1[:, 2] * b1[:, 2] + b1[:, 3] * b1[:, 3])
    radius2 = 0.5 * torch.sqrt(b2[:, 2] * b2[:, 2] + b2[:, 3] * b2[:, 3])

    rows_per_chunk = max(1, _MASK_CHUNK // m)
    for row0 in range(0, n, rows_per_chunk):
        rows = slice(row0, min(n, row0 + rows_per_chunk))
        # Origin at the midpoint of each pair's centres: box 1 at (dx, dy), box 2 at (-dx, -dy).
        dx = 0.5 * (b1[rows, 0, None] - b2[None, :, 0])
        dy = 0.5 * (b1[rows, 1, None] - b2[None, :, 1])
        radius_sum = radius1[rows, None] + radius2[None, :]
        candidate = valid1[rows, None] & valid2[None, :] & (4.0 * (dx * dx + dy * dy) <= radius_sum * radius_sum)
        ii, jj = candidate.nonzero(as_tuple=True)
        for start in range(0, ii.numel(), _PAIR_CHUNK):
            i = ii[start : start + _PAIR_CHUNK]
            j = jj[start : start + _PAIR_CHUNK]
            ious[i + row0, j] = _pair_iou(b1[i + row0], b2[j], dx[i, j], dy[i, j])
    return ious


def _pair_iou(box1: Tensor, box2: Tensor, dx: Tensor, dy: Tensor) -> Tensor:
    """IoU of ``P`` pairs of non-degenerate float64 boxes ``[P, 5]``, box 1 centred at ``(dx, dy)`` and box
    2 at ``(-dx, -dy)``."""
    xs1, ys1 = _box_corners(dx, dy, box1[:, 2], box1[:, 3], box1[:, 4])
    xs2, ys2 = _box_corners(-dx, -dy, box2[:, 2], box2[:, 3], box2[:, 4])
    count = torch.full_like(dx, 4, dtype=torch.int64)
    px, py = xs1, ys1
    for e in range(4):
        f = (e + 1) % 4
        px, py, count = _clip_by_edge(px, py, count, xs2[:, e], ys2[:, e], xs2[:, f], ys2[:, f])
    intersection = _polygon_area(px, py, count)
    area1 = box1[:, 2] * box1[:, 3]
    area2 = box2[:, 2] * box2[:, 3]
    iou = intersection / (area1 + area2 - intersection)
    return torch.where(intersection > 0, iou, torch.zeros_like(iou))


def _box_corners(cx: Tensor, cy: Tensor, w: Tensor, h: Tensor, angle: Tensor) -> tuple[Tensor, Tensor]:
    """Corners ``([P, 4], [P, 4])`` in positive order, as ``box_corners`` in the kernel."""
    theta = angle * _DEGREES_TO_RADIANS
    c = torch.cos(theta)
    s = torch.sin(theta)
    half_w = 0.5 * w
    half_h = 0.5 * h
    ax = c * half_w
    ay = -s * half_w
    bx = s * half_h
    by = c * half_h
    xs = torch.stack([cx + ax + bx, cx - ax + bx, cx - ax - bx, cx + ax - bx], dim=1)
    ys = torch.stack([cy + ay + by, cy - ay + by, cy - ay - by, cy + ay - by], dim=1)
    return xs, ys


def _next_slot(count: Tensor, slots: int) -> Tensor:
    """``[P, slots]`` index of each vertex's successor in polygons of ``count`` vertices."""
    following = torch.arange(1, slots + 1, device=count.device).expand(count.shape[0], slots)
    return torch.where(following < count[:, None], following, torch.zeros_like(following))


def _clip_by_edge(
    px: Tensor, py: Tensor, count: Tensor, ax: Tensor, ay: Tensor, bx: Tensor, by: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Sutherland-Hodgman step: clips ``P`` polygons (``[P, K]`` vertices, ``count`` valid each) by the
    half-planes left of ``a -> b`` (``[P]`` each). Returns the clipped polygons and their counts."""
    num, slots = px.shape
    valid = torch.arange(slots, device=px.device)[None, :] < count[:, None]
    nxt = _next_slot(count, slots)
    ex = (bx - ax)[:, None]
    ey = (by - ay)[:, None]
    side = ex * (py - ay[:, None]) - ey * (px - ax[:, None])
    side_next = side.gather(1, nxt)
    inside = side >= 0
    crossing = valid & (inside != (side_next >= 0))
    keep_vertex = valid & inside
    t = side / torch.where(crossing, side - side_next, torch.ones_like(side))
    qx = px.gather(1, nxt)
    qy = py.gather(1, nxt)
    # Vertex i emits itself (if inside) then the crossing point (if edge i -> i+1 crosses the line).
    cand_x = torch.stack([px, px + t * (qx - px)], dim=2).reshape(num, 2 * slots)
    cand_y = torch.stack([py, py + t * (qy - py)], dim=2).reshape(num, 2 * slots)
    keep = torch.stack([keep_vertex, crossing], dim=2).reshape(num, 2 * slots)
    position = keep.cumsum(dim=1) - 1
    keep = keep & (position < _MAX_VERTICES)
    new_count = keep.sum(dim=1)
    new_slots = max(1, min(_MAX_VERTICES, int(new_count.max()))) if num else 1
    # Compact the kept candidates to the front; dropped ones go to a scratch column that is cut off.
    target = torch.where(keep, position, torch.full_like(position, new_slots))
    out_x = px.new_zeros((num, new_slots + 1)).scatter_(1, target, cand_x)[:, :new_slots]
    out_y = py.new_zeros((num, new_slots + 1)).scatter_(1, target, cand_y)[:, :new_slots]
    return out_x, out_y, new_count


def _polygon_area(px: Tensor, py: Tensor, count: Tensor) -> Tensor:
    """Signed shoelace area ``[P]`` of polygons with ``count`` valid vertices each."""
    slots = px.shape[1]
    valid = torch.arange(slots, device=px.device)[None, :] < count[:, None]
    nxt = _next_slot(count, slots)
    terms = px * py.gather(1, nxt) - px.gather(1, nxt) * py
    return 0.5 * torch.where(valid, terms, torch.zeros_like(terms)).sum(dim=1)


def _box_iou_rotated_fake(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    return boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]))


#: The compiled op (``csrc/box_iou_rotated``); calling it picks the kernel or the twin by device.
BOX_IOU_ROTATED_OP = register_op(
    "box_iou_rotated",
    sources=libdet_csrc("box_iou_rotated"),
    include_dirs=[libdet_csrc("common")],
    schemas={"box_iou_rotated": "box_iou_rotated(Tensor boxes1, Tensor boxes2) -> Tensor"},
    fakes={"box_iou_rotated": _box_iou_rotated_fake},
    twin=_box_iou_rotated_twin,
)

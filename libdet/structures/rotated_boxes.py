"""Rotated boxes ``(cx, cy, w, h, angle)``: the :class:`RotatedBoxes` container and their pairwise IoU."""

from __future__ import annotations

import math

import torch

from .boxes import Boxes

__all__ = ["RotatedBoxes", "pairwise_iou", "pairwise_iou_rotated"]


class RotatedBoxes(Boxes):
    """A list of ``N`` rotated boxes stored as one ``(N, 5)`` float32 tensor.

    Each row is ``(x_center, y_center, width, height, angle)``, in absolute pixels, with ``angle`` in
    degrees. In image coordinates (x to the right, y down) a positive angle turns the box
    counter-clockwise as seen on screen. ``angle = 0`` is an axis-aligned box of the given width (along x)
    and height (along y); ``(cx, cy, w, h, 90)`` covers the same pixels as ``(cx, cy, h, w, 0)``.
    This is :attr:`BoxMode.XYWHA_ABS`.

    Construction, ``clone``, ``to``, indexing, ``len``, ``cat``, ``device`` and iteration behave as for
    :class:`Boxes` (from which this class derives, as in detectron2), with 5 numbers per box.

    Attributes:
        tensor: float32 tensor of shape ``(N, 5)``.
    """

    def _box_dim(self) -> int:
        """Numbers per box (``Boxes`` uses this method, not a class attribute, to stay TorchScript-compilable)."""
        return 5

    def _new(self, tensor: torch.Tensor) -> RotatedBoxes:
        """Rotated boxes holding ``tensor`` (used by ``clone``, ``to`` and indexing)."""
        return RotatedBoxes(tensor)

    def area(self) -> torch.Tensor:
        """Return the ``(N,)`` areas ``w * h``."""
        return self.tensor[:, 2] * self.tensor[:, 3]

    def normalize_angles(self) -> None:
        """Bring every angle into ``[-180, 180)`` degrees, in place."""
        self.tensor[:, 4] = (self.tensor[:, 4] + 180.0) % 360.0 - 180.0

    def clip(self, box_size: tuple[int, int], clip_angle_threshold: float = 1.0) -> None:
        """Clip nearly horizontal boxes to ``[0, width] x [0, height]``, in place.

        Only boxes whose normalized angle is within ``clip_angle_threshold`` degrees of 0 are clipped (as if
        their angle were 0); clipping a truly rotated box would need to change its shape, so those are left
        untouched. Angles of all boxes are normalized (see :meth:`normalize_angles`).

        Args:
            box_size: ``(height, width)`` to clip to.
            clip_angle_threshold: largest ``|angle|`` in degrees of the boxes that get clipped.
        """
        h, w = box_size
        self.normalize_angles()
        idx = torch.where(torch.abs(self.tensor[:, 4]) <= clip_angle_threshold)[0]
        cx, cy = self.tensor[idx, 0], self.tensor[idx, 1]
        half_w, half_h = self.tensor[idx, 2] / 2.0, self.tensor[idx, 3] / 2.0
        x0 = (cx - half_w).clamp(min=0, max=w)
        y0 = (cy - half_h).clamp(min=0, max=h)
        x1 = (cx + half_w).clamp(min=0, max=w)
        y1 = (cy + half_h).clamp(min=0, max=h)
        self.tensor[idx, 0] = (x0 + x1) / 2.0
        self.tensor[idx, 1] = (y0 + y1) / 2.0
        # min() keeps rounding errors from growing a box that was already inside.
        self.tensor[idx, 2] = torch.min(self.tensor[idx, 2], x1 - x0)
        self.tensor[idx, 3] = torch.min(self.tensor[idx, 3], y1 - y0)

    def nonempty(self, threshold: float = 0.0) -> torch.Tensor:
        """Return an ``(N,)`` bool mask of the boxes whose width and height are both ``> threshold``."""
        return (self.tensor[:, 2] > threshold) & (self.tensor[:, 3] > threshold)

    def inside_box(self, box_size: tuple[int, int], boundary_threshold: int = 0) -> torch.Tensor:
        """Return an ``(N,)`` bool mask of the boxes whose axis-aligned bounding box lies inside the image.

        Args:
            box_size: ``(height, width)`` of the image.
            boundary_threshold: boxes may extend this many pixels beyond the image and still count as inside.
        """
        height, width = box_size
        cx, cy = self.tensor[..., 0], self.tensor[..., 1]
        half_w, half_h = self.tensor[..., 2] / 2.0, self.tensor[..., 3] / 2.0
        angle = self.tensor[..., 4] * (math.pi / 180.0)
        c, s = torch.abs(torch.cos(angle)), torch.abs(torch.sin(angle))
        # Half extents of the bounding box of the rotated rectangle.
        dx = c * half_w + s * half_h
        dy = c * half_h + s * half_w
        return (
            (cx - dx >= -boundary_threshold)
            & (cy - dy >= -boundary_threshold)
            & (cx + dx < width + boundary_threshold)
            & (cy + dy < height + boundary_threshold)
        )

    def get_centers(self) -> torch.Tensor:
        """Return the ``(N, 2)`` box centres ``(x, y)``."""
        return self.tensor[:, :2]

    def scale(self, scale_x: float, scale_y: float) -> None:
        """Scale the boxes in place, as the image they live in is scaled by ``(scale_x, scale_y)``.

        Centres scale exactly. In image coordinates the box's width axis points along ``(cos a, -sin a)``
        and its height axis along ``(sin a, cos a)``; after scaling they become ``(sx cos a, -sy sin a)`` and
        ``(sx sin a, sy cos a)``. Width and height become ``w`` and ``h`` times the lengths of those vectors,
        and the new angle is the one of the scaled height axis. For ``scale_x != scale_y`` a rotated
        rectangle turns into a parallelogram, so the result is an approximation.
        """
        self.tensor[:, 0] *= scale_x
        self.tensor[:, 1] *= scale_y
        theta = self.tensor[:, 4] * (math.pi / 180.0)
        c, s = torch.cos(theta), torch.sin(theta)
        self.tensor[:, 2] *= torch.sqrt((scale_x * c) ** 2 + (scale_y * s) ** 2)
        self.tensor[:, 3] *= torch.sqrt((scale_x * s) ** 2 + (scale_y * c) ** 2)
        self.tensor[:, 4] = torch.atan2(scale_x * s, scale_y * c) * (180.0 / math.pi)


def pairwise_iou(boxes1: RotatedBoxes, boxes2: RotatedBoxes) -> torch.Tensor:
    """Intersection-over-union of every pair of rotated boxes.

    The computation is :func:`libdet.layers.rotated_boxes.pairwise_iou_rotated` (compiled op, or its
    pure-PyTorch twin).

    Args:
        boxes1: ``N`` rotated boxes.
        boxes2: ``M`` rotated boxes.

    Returns:
        ``(N, M)`` tensor of IoU values.
    """
    # Imported here: `structures` sits below `layers` and must not import it at module level.
    from libdet.layers.rotated_boxes import pairwise_iou_rotated as _pairwise_iou_rotated

    return _pairwise_iou_rotated(boxes1.tensor, boxes2.tensor)


# The name this function is exported under from ``libdet.structures``.
pairwise_iou_rotated = pairwise_iou

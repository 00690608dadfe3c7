"""Keypoints: the :class:`Keypoints` container, its heatmap training targets, and heatmap decoding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from .boxes import Boxes

__all__ = ["Keypoints", "heatmaps_to_keypoints"]


class Keypoints:
    """``N`` instances with ``K`` keypoints each, stored as one ``(N, K, 3)`` float32 tensor.

    Each keypoint is ``(x, y, visibility)`` in absolute image coordinates. Following COCO, visibility 0
    means not labeled (and then ``x = y = 0``), 1 labeled but occluded, 2 labeled and visible; any
    visibility ``> 0`` counts as a training target.

    Attributes:
        tensor: float32 tensor of shape ``(N, K, 3)``.
    """

    def __init__(self, keypoints: torch.Tensor | np.ndarray | list[list[list[float]]]):
        """
        Args:
            keypoints: ``(N, K, 3)`` tensor, array or nested list. Tensors keep their device.

        Raises:
            ValueError: if ``keypoints`` is not of shape ``(N, K, 3)``.
        """
        device = keypoints.device if isinstance(keypoints, torch.Tensor) else torch.device("cpu")
        keypoints = torch.as_tensor(keypoints, dtype=torch.float32, device=device)
        if keypoints.dim() != 3 or keypoints.shape[2] != 3:
            raise ValueError(f"Keypoints: `keypoints` must have shape (N, K, 3), got {tuple(keypoints.shape)}.")
        self.tensor = keypoints

    def __len__(self) -> int:
        return self.tensor.size(0)

    def to(self, *args: Any, **kwargs: Any) -> Keypoints:
        """Return the keypoints moved with ``tensor.to(*args, **kwargs)``."""
        return type(self)(self.tensor.to(*args, **kwargs))

    @property
    def device(self) -> torch.device:
        """The device of the keypoint tensor."""
        return self.tensor.device

    def to_heatmap(self, boxes: Boxes | torch.Tensor, heatmap_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Discretise each instance's keypoints into a ``heatmap_size x heatmap_size`` grid over its box.

        This is the keypoint-head training target (see :func:`_keypoints_to_heatmap`).

        Args:
            boxes: ``N`` boxes ``(x0, y0, x1, y1)``, one per instance.
            heatmap_size: side of the heatmap grid.

        Returns:
            heatmaps: ``(N, K)`` int64 linear index ``y * heatmap_size + x`` of each keypoint's bin (0 when
                invalid).
            valid: ``(N, K)`` int64, 1 where the keypoint is visible and falls inside its box, else 0.
        """
        rois = boxes.tensor if isinstance(boxes, Boxes) else boxes
        return _keypoints_to_heatmap(self.tensor, rois, heatmap_size)

    def __getitem__(self, item: int | slice | torch.Tensor | Sequence[int]) -> Keypoints:
        """Select instances; always returns :class:`Keypoints` (an int selects a single instance)."""
        if isinstance(item, int):
            return Keypoints(self.tensor[item].unsqueeze(0))
        return Keypoints(self.tensor[item])

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_instances={len(self.tensor)})"

    @staticmethod
    def cat(keypoints_list: Sequence[Keypoints]) -> Keypoints:
        """Concatenate a non-empty list of :class:`Keypoints` with the same ``K``.

        Raises:
            ValueError: for an empty list.
            TypeError: if an element is not :class:`Keypoints`.
        """
        if not isinstance(keypoints_list, (list, tuple)) or len(keypoints_list) == 0:
            raise ValueError("Keypoints.cat: `keypoints_list` must be a non-empty list or tuple.")
        for i, kp in enumerate(keypoints_list):
            if not isinstance(kp, Keypoints):
                raise TypeError(f"Keypoints.cat: `keypoints_list[{i}]` is a {type(kp)}, expected Keypoints.")
        return type(keypoints_list[0])(torch.cat([kp.tensor for kp in keypoints_list], dim=0))


def _keypoints_to_heatmap(
    keypoints: torch.Tensor, rois: torch.Tensor, heatmap_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map keypoints to bins of a ``heatmap_size x heatmap_size`` grid laid over each roi.

    Coordinates are continuous (pixel ``i`` spans ``[i, i + 1)``): a keypoint at ``x`` falls in bin
    ``floor((x - x0) * heatmap_size / (x1 - x0))``. The grid is half-open, so a keypoint exactly on the right
    (bottom) edge would land one past the last bin; it is mapped to the last bin instead. Keypoints with
    visibility 0 or outside the roi are invalid.

    Args:
        keypoints: ``(N, K, 3)`` keypoints ``(x, y, visibility)``.
        rois: ``(N, 4)`` boxes ``(x0, y0, x1, y1)``.
        heatmap_size: side of the grid.

    Returns:
        ``(heatmaps, valid)``, both ``(N, K)`` int64: the linear bin index ``y * heatmap_size + x`` (0 where
        invalid) and the 0/1 validity.
    """
    if rois.numel() == 0:
        return rois.new().long(), rois.new().long()
    offset_x = rois[:, 0][:, None]
    offset_y = rois[:, 1][:, None]
    scale_x = (heatmap_size / (rois[:, 2] - rois[:, 0]))[:, None]
    scale_y = (heatmap_size / (rois[:, 3] - rois[:, 1]))[:, None]

    x = keypoints[..., 0]
    y = keypoints[..., 1]
    on_right_edge = x == rois[:, 2][:, None]
    on_bottom_edge = y == rois[:, 3][:, None]

    x = ((x - offset_x) * scale_x).floor().long()
    y = ((y - offset_y) * scale_y).floor().long()
    x[on_right_edge] = heatmap_size - 1
    y[on_bottom_edge] = heatmap_size - 1

    inside = (x >= 0) & (y >= 0) & (x < heatmap_size) & (y < heatmap_size)
    visible = keypoints[..., 2] > 0
    valid = (inside & visible).long()
    heatmaps = (y * heatmap_size + x) * valid
    return heatmaps, valid


@torch.jit.script_if_tracing  # export tracing keeps the per-roi loop
def heatmaps_to_keypoints(maps: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
    """Decode keypoint heatmaps predicted inside rois into image coordinates and scores.

    Each roi's ``K`` heatmaps are resized (bicubic) to ``ceil(roi_height) x ceil(roi_width)`` (at least 1),
    and the argmax of each is taken. Its pixel ``(x_int, y_int)`` maps back to the image point
    ``x0 + (x_int + 0.5) * w / ceil(w)`` (likewise for y): pixel centres at ``+ 0.5``, with the correction
    ``w / ceil(w)`` undoing the rounding of the roi size up to whole pixels.

    Args:
        maps: ``(N, K, H, W)`` heatmap logits.
        rois: ``(N, 4)`` boxes ``(x0, y0, x1, y1)`` the heatmaps were predicted for.

    Returns:
        ``(N, K, 4)`` tensor of ``(x, y, logit, score)`` per keypoint: ``logit`` is the resized heatmap's
        value at the peak, ``score`` a softmax-like probability: ``exp(logit - max)`` over the resized map,
        normalised by the sum over the original ``H x W`` map so that scores are comparable across roi sizes.
    """
    # Detached instead of decorating with torch.no_grad(), which TorchScript does not support.
    maps = maps.detach()
    rois = rois.detach()

    offset_x = rois[:, 0]
    offset_y = rois[:, 1]
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1)
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1)
    widths_ceil = widths.ceil()
    heights_ceil = heights.ceil()
    width_corrections = widths / widths_ceil
    height_corrections = heights / heights_ceil

    num_rois, num_keypoints = maps.shape[0], maps.shape[1]
    xy_preds = maps.new_zeros(rois.shape[0], num_keypoints, 4)
    keypoint_idx = torch.arange(num_keypoints, device=maps.device)

    for i in range(num_rois):
        out_size = (int(heights_ceil[i]), int(widths_ceil[i]))
        roi_map = F.interpolate(maps[[i]], size=out_size, mode="bicubic", align_corners=False)
        roi_map = roi_map.reshape(roi_map.shape[1:])  # (K, h, w); reshape rather than squeeze for ONNX
        w = roi_map.shape[2]

        max_score = roi_map.reshape(num_keypoints, -1).max(1)[0].reshape(num_keypoints, 1, 1)
        exp_full = (roi_map - max_score).exp()
        exp_pool = (maps[i] - max_score).exp()
        roi_map_scores = exp_full / exp_pool.sum((1, 2), keepdim=True)

        pos = roi_map.reshape(num_keypoints, -1).argmax(1)
        x_int = pos % w
        y_int = torch.div(pos - x_int, w, rounding_mode="floor")

        xy_preds[i, :, 0] = (x_int.float() + 0.5) * width_corrections[i] + offset_x[i]
        xy_preds[i, :, 1] = (y_int.float() + 0.5) * height_corrections[i] + offset_y[i]
        xy_preds[i, :, 2] = roi_map[keypoint_idx, y_int, x_int]
        xy_preds[i, :, 3] = roi_map_scores[keypoint_idx, y_int, x_int]
    return xy_preds

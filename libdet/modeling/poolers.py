"""``ROIPooler``: pool a fixed-size feature for each box from a feature pyramid, choosing the pyramid
level by box size (Eqn. 1 of the FPN paper, https://arxiv.org/abs/1612.03144).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.ops import RoIPool

from libdet.layers import ROIAlign, ROIAlignRotated, cat, nonzero_tuple, shapes_to_tensor
from libdet.structures import Boxes

__all__ = ["ROIPooler", "assign_boxes_to_levels", "convert_boxes_to_pooler_format"]


def _is_fx_tracing() -> bool:
    """True while ``torch.fx.symbolic_trace`` runs (where Python-level checks on proxies cannot run)."""
    from torch.fx import _symbolic_trace

    # The flag is_fx_tracing reads (True under fx.symbolic_trace and torch.export, where the checks below would
    # add shape guards), without the warning newer torch versions attach to is_fx_tracing itself.
    check = getattr(_symbolic_trace, "_get_is_fx_tracing", None)
    if check is None:  # older torch
        check = getattr(_symbolic_trace, "is_fx_tracing", None)
    return bool(check()) if check is not None else False


def assign_boxes_to_levels(
    box_lists: list[Boxes],
    min_level: int,
    max_level: int,
    canonical_box_size: int,
    canonical_level: int,
) -> torch.Tensor:
    """Pyramid level of each box: ``floor(canonical_level + log2(sqrt(area) / canonical_box_size +
    1e-8))`` clamped to ``[min_level, max_level]``.

    Args:
        box_lists: the boxes of each image (``Boxes`` or ``RotatedBoxes``).
        min_level: finest level index (e.g. 2 for p2).
        max_level: coarsest level index (e.g. 5 for p5).
        canonical_box_size: box size (sqrt of area) mapped to ``canonical_level`` (224 for ImageNet).
        canonical_level: level of boxes of size ``canonical_box_size`` (4 in the FPN paper).

    Returns:
        int64 Tensor[M] (M = total number of boxes) of levels relative to ``min_level`` (0 = finest).
    """
    box_sizes = torch.sqrt(cat([boxes.area() for boxes in box_lists]))
    level_assignments = torch.floor(canonical_level + torch.log2(box_sizes / canonical_box_size + 1e-8))
    # Clamp level to the range of available levels.
    level_assignments = torch.clamp(level_assignments, min=min_level, max=max_level)
    return level_assignments.to(torch.int64) - min_level


def _convert_boxes_to_pooler_format(boxes: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    sizes = sizes.to(device=boxes.device)
    indices = torch.repeat_interleave(torch.arange(len(sizes), dtype=boxes.dtype, device=boxes.device), sizes)
    return cat([indices[:, None], boxes], dim=1)


def convert_boxes_to_pooler_format(box_lists: list[Boxes]) -> torch.Tensor:
    """Concatenate the boxes of all images, each row prefixed by the index of its image.

    Args:
        box_lists: the boxes of each image (``Boxes`` or ``RotatedBoxes``).

    Returns:
        Tensor[M, 5] rows ``(batch_index, x0, y0, x1, y1)`` (Tensor[M, 6] ``(batch_index, cx, cy, w, h,
        angle)`` for rotated boxes), the RoI format of ``ROIAlign`` / ``ROIAlignRotated``.
    """
    boxes = torch.cat([x.tensor for x in box_lists], dim=0)
    sizes = shapes_to_tensor([len(x) for x in box_lists])
    return _convert_boxes_to_pooler_format(boxes, sizes)


def _create_zeros(
    batch_target: torch.Tensor | None, channels: int, height: int, width: int, like_tensor: torch.Tensor
) -> torch.Tensor:
    batches = batch_target.shape[0] if batch_target is not None else 0
    return torch.zeros((batches, channels, height, width), dtype=like_tensor.dtype, device=like_tensor.device)


class ROIPooler(nn.Module):
    """Region-of-interest feature pooling over one or several feature levels.

    Args:
        output_size: (h, w) of the pooled features, or an int for a square.
        scales: ``1 / stride`` of each input feature map, finest first; strides must be powers of 2
            and consecutive (e.g. ``(1/4, 1/8, 1/16, 1/32)``).
        sampling_ratio: sampling points per bin for the ROIAlign poolers (0 = adaptive).
        pooler_type: ``"ROIAlign"`` (legacy, ``aligned=False``), ``"ROIAlignV2"`` (``aligned=True``),
            ``"ROIPool"`` or ``"ROIAlignRotated"``.
        canonical_box_size: box size mapped to ``canonical_level`` (see :func:`assign_boxes_to_levels`).
        canonical_level: pyramid level of boxes of ``canonical_box_size``.
    """

    def __init__(
        self,
        output_size: int | tuple[int, int],
        scales: Sequence[float],
        sampling_ratio: int,
        pooler_type: str,
        canonical_box_size: int = 224,
        canonical_level: int = 4,
    ):
        super().__init__()
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        output_size = tuple(output_size)
        if len(output_size) != 2 or not all(isinstance(s, int) for s in output_size):
            raise ValueError(f"ROIPooler: `output_size` must be an int or a pair of ints, got {output_size}.")
        self.output_size = output_size
        if len(scales) == 0:
            raise ValueError("ROIPooler: `scales` must not be empty.")

        if pooler_type == "ROIAlign":
            poolers = [
                ROIAlign(output_size, spatial_scale=s, sampling_ratio=sampling_ratio, aligned=False) for s in scales
            ]
        elif pooler_type == "ROIAlignV2":
            poolers = [
                ROIAlign(output_size, spatial_scale=s, sampling_ratio=sampling_ratio, aligned=True) for s in scales
            ]
        elif pooler_type == "ROIPool":
            poolers = [RoIPool(output_size, spatial_scale=s) for s in scales]
        elif pooler_type == "ROIAlignRotated":
            poolers = [ROIAlignRotated(output_size, spatial_scale=s, sampling_ratio=sampling_ratio) for s in scales]
        else:
            raise ValueError(
                f"ROIPooler: unknown `pooler_type` {pooler_type!r}; expected 'ROIAlign', 'ROIAlignV2', "
                "'ROIPool' or 'ROIAlignRotated'."
            )
        self.level_poolers = nn.ModuleList(poolers)

        # Levels are log2 of the strides: scales must be 1 / 2**k.
        levels = [-math.log2(s) if s > 0 else float("nan") for s in scales]
        for _s, level in zip(scales, levels):
            if not math.isclose(level, round(level)):
                raise ValueError(f"ROIPooler: every scale must be 1 / 2**k (a power-of-2 stride), got {list(scales)}.")
        self.min_level = int(round(levels[0]))
        self.max_level = int(round(levels[-1]))
        if [int(round(lv)) for lv in levels] != list(range(self.min_level, self.max_level + 1)):
            raise ValueError(
                f"ROIPooler: `scales` {list(scales)} do not form a pyramid (strides must double from one "
                "level to the next, finest first)."
            )
        if self.min_level < 0:
            raise ValueError(f"ROIPooler: scales must be <= 1, got {list(scales)}.")
        if canonical_box_size <= 0:
            raise ValueError(f"ROIPooler: `canonical_box_size` must be positive, got {canonical_box_size}.")
        self.canonical_level = canonical_level
        self.canonical_box_size = canonical_box_size

    def forward(self, x: list[torch.Tensor], box_lists: list[Boxes]) -> torch.Tensor:
        """
        Args:
            x: one Tensor[N, C, Hi, Wi] per level, in the order of ``scales``.
            box_lists: N ``Boxes`` (or ``RotatedBoxes``), the boxes of each image in absolute image
                coordinates.

        Returns:
            Tensor[M, C, output_size[0], output_size[1]] with M the total number of boxes; row i pools
            the i-th box of the image-by-image concatenation of ``box_lists``.
        """
        num_level_assignments = len(self.level_poolers)
        if torch.jit.is_scripting():
            pass  # TorchScript compiles neither the checks' messages nor _is_fx_tracing
        elif not _is_fx_tracing():
            if not isinstance(x, list) or not isinstance(box_lists, list):
                raise TypeError(
                    f"ROIPooler: `x` and `box_lists` must be lists, got {type(x).__name__} and "
                    f"{type(box_lists).__name__}."
                )
            if len(x) != num_level_assignments:
                raise ValueError(
                    f"ROIPooler: got {len(x)} feature maps but was built with {num_level_assignments} scales."
                )
            if len(box_lists) != x[0].size(0):
                raise ValueError(
                    f"ROIPooler: got boxes for {len(box_lists)} images but the feature batch has {x[0].size(0)}."
                )
        if len(box_lists) == 0:
            return _create_zeros(None, x[0].shape[1], self.output_size[0], self.output_size[1], x[0])

        pooler_fmt_boxes = convert_boxes_to_pooler_format(box_lists)
        if num_level_assignments == 1:
            return self.level_poolers[0](x[0], pooler_fmt_boxes)

        level_assignments = assign_boxes_to_levels(
            box_lists, self.min_level, self.max_level, self.canonical_box_size, self.canonical_level
        )
        num_channels = x[0].shape[1]
        output = _create_zeros(pooler_fmt_boxes, num_channels, self.output_size[0], self.output_size[1], x[0])
        for level, pooler in enumerate(self.level_poolers):
            inds = nonzero_tuple(level_assignments == level)[0]
            pooler_fmt_boxes_level = pooler_fmt_boxes[inds]
            # index_put_ rather than advanced-index assignment (works under tracing and with AMP).
            output.index_put_((inds,), pooler(x[level], pooler_fmt_boxes_level).to(output.dtype))
        return output

"""Converters of DensePose chart predictor outputs: to per-box chart results (part labels + U, V at the box's
pixels), to image-size masks, and their horizontal flip (for test-time augmentation)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from libdet.structures import BitMasks, Boxes

from ..structures import DensePoseChartPredictorOutput, DensePoseTransformData

__all__ = [
    "DensePoseChartResult",
    "chart_output_to_results",
    "chart_output_to_masks",
    "hflip_chart_output",
]


@dataclass
class DensePoseChartResult:
    """The DensePose result of one detection, at the pixels of its box (``H x W`` = the box's integer size).

    Attributes:
        labels: ``(H, W)`` long fine part per pixel (0 background, 1..24).
        uv: ``(2, H, W)`` float U and V of the pixel's part (0 on the background).
    """

    labels: torch.Tensor
    uv: torch.Tensor


def _int_box_xywh(box_xyxy: torch.Tensor) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    return int(x0), int(y0), max(int(x1 - x0), 1), max(int(y1 - y0), 1)


def _labels_in_box(output: DensePoseChartPredictorOutput, h: int, w: int) -> torch.Tensor:
    """``(H, W)`` fine part labels of a one-box output, masked by its coarse segmentation (label 0 = background)."""
    coarse = F.interpolate(output.coarse_segm, (h, w), mode="bilinear", align_corners=False).argmax(dim=1)
    fine = F.interpolate(output.fine_segm, (h, w), mode="bilinear", align_corners=False).argmax(dim=1)
    return (fine * (coarse > 0).long())[0]


def chart_output_to_results(output: DensePoseChartPredictorOutput, boxes: Boxes) -> list[DensePoseChartResult]:
    """One :class:`DensePoseChartResult` per box: the estimates resampled bilinearly to the box's integer size,
    parts by argmax, U/V taken from each pixel's part channel.

    Args:
        output: the predictor outputs of N boxes (``pred_densepose``).
        boxes: the N boxes (``pred_boxes``), XYXY in the image the results are wanted in.
    """
    if len(output) != len(boxes):
        raise ValueError(f"chart_output_to_results: {len(output)} DensePose outputs for {len(boxes)} boxes.")
    results = []
    for k in range(len(boxes)):
        _, _, w, h = _int_box_xywh(boxes.tensor[k])
        one = output[k]
        labels = _labels_in_box(one, h, w)
        u = F.interpolate(one.u, (h, w), mode="bilinear", align_corners=False)[0]
        v = F.interpolate(one.v, (h, w), mode="bilinear", align_corners=False)[0]
        index = labels[None]  # (1, H, W): each pixel's part channel
        uv = torch.cat([u.gather(0, index), v.gather(0, index)]) * (labels > 0)
        results.append(DensePoseChartResult(labels=labels, uv=uv))
    return results


def chart_output_to_masks(output: DensePoseChartPredictorOutput, boxes: Boxes, image_size: tuple[int, int]) -> BitMasks:
    """``(N, H_img, W_img)`` person masks: each box's coarse foreground (``coarse_segm`` argmax > 0) pasted at
    the box's integer position (clipped to the image)."""
    height, width = image_size
    masks = torch.zeros((len(boxes), height, width), dtype=torch.bool, device=output.coarse_segm.device)
    for k in range(len(boxes)):
        x, y, w, h = _int_box_xywh(boxes.tensor[k])
        coarse = F.interpolate(output[k].coarse_segm, (h, w), mode="bilinear", align_corners=False).argmax(dim=1)[0]
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, width), min(y + h, height)
        if x1 > x0 and y1 > y0:
            masks[k, y0:y1, x0:x1] = coarse[y0 - y : y1 - y, x0 - x : x1 - x] > 0
    return BitMasks(masks)


def hflip_chart_output(
    output: DensePoseChartPredictorOutput, transform_data: DensePoseTransformData
) -> DensePoseChartPredictorOutput:
    """The outputs a horizontally flipped box would have: every map mirrored left-right, fine-part channels
    (and the 15 coarse channels, if so many) permuted left <-> right, and U/V of each part mapped through the
    symmetry tables of the part they are mirrored from."""
    flipped = output._map(lambda t: torch.flip(t, [3]))
    point_perm = transform_data.point_label_symmetries.to(output.fine_segm.device)
    # channel c of the result comes from channel perm[c] (the permutation is an involution)
    flipped.fine_segm = flipped.fine_segm[:, point_perm]
    if flipped.coarse_segm.size(1) == 15:
        flipped.coarse_segm = flipped.coarse_segm[:, transform_data.mask_label_symmetries.to(point_perm.device)]
    u_tables = transform_data.uv_symmetries["U_transforms"].to(output.u.device)
    v_tables = transform_data.uv_symmetries["V_transforms"].to(output.u.device)
    u_new, v_new = torch.zeros_like(flipped.u), torch.zeros_like(flipped.v)
    for part in range(1, flipped.u.size(1)):
        u_loc = (flipped.u[:, part] * 255).clamp(0, 255).long()
        v_loc = (flipped.v[:, part] * 255).clamp(0, 255).long()
        target = int(point_perm[part])
        u_new[:, target] = u_tables[part - 1][v_loc, u_loc]
        v_new[:, target] = v_tables[part - 1][v_loc, u_loc]
    flipped.u, flipped.v = u_new, v_new
    for name in ("sigma_1", "sigma_2", "kappa_u", "kappa_v"):
        value = getattr(flipped, name)
        if value is not None:
            setattr(flipped, name, value[:, point_perm])
    return flipped

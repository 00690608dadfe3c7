"""Tensor-only building blocks of the deployable models: each is export-friendly under ``torch.export``
(symbolic and data-dependent sizes), the dynamo ONNX exporter (standard ONNX ops, ``NonMaxSuppression``)
and ``torch.jit.trace`` (the ones that read sizes are scripted while tracing, so a traced model keeps
dynamic image sizes instead of freezing the sample's).

Batched detections are kept flat: ``D`` rows over all images, each with its image's ``batch_index``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision.nms)
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "MAX_ROWS",
    "nms_allowing_empty_output",
    "nonzero",
    "pad_images",
    "grid_anchors",
    "topk_along_dim1",
    "to_N_HWA_K",
    "clip_boxes",
    "nonempty_boxes",
    "batched_nms_by_group",
    "select_topk_per_image",
    "pool_rois",
    "paste_masks",
    "crop_to_input",
]


def _nms_fake(dets: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Fake (shape) kernel of ``torchvision::nms`` for torch.export: any number of kept boxes, 0 included.

    torchvision's own declares at least 2 (its ``create_unbacked_symint()`` defaults to ``min=2``), so an
    exported graph would assert, at run time, that every NMS keeps 2 boxes or more — false for an image or
    class with one detection or none.
    """
    torch._check(dets.dim() == 2 and dets.size(1) == 4, lambda: f"nms: boxes must be (N, 4), got {dets.shape}")
    torch._check(scores.dim() == 1 and scores.size(0) == dets.size(0), lambda: "nms: scores must be (N,)")
    num_kept = torch.library.get_ctx().new_dynamic_size(min=0)
    return dets.new_empty(num_kept, dtype=torch.long)


@contextlib.contextmanager
def nms_allowing_empty_output() -> Iterator[None]:
    """Within the block, ``torchvision::nms`` has :func:`_nms_fake` as fake kernel (see there why); on
    exit torchvision's is back, so that importing libdet changes nothing for other code. Every export
    (tracing, AOTInductor's compilation, the ONNX translation) of :func:`export_model` runs in it; wrap
    your own ``torch.export.export`` of a deployable model in it too."""
    # A fragment library of our own holds the override: destroying it deregisters exactly our kernel.
    lib = torch.library.Library("torchvision", "FRAGMENT")
    try:
        torch.library.register_fake("torchvision::nms", _nms_fake, lib=lib, allow_override=True)
        yield
    finally:
        lib._destroy()


#: Upper bound stated to torch.export for data-dependent row counts (candidates, NMS survivors). Without
#: it their bound is int64's maximum, and bounds of products of such counts overflow int64, which the ONNX
#: translation cannot represent.
MAX_ROWS = 2**31 - 1


@torch.jit.script_if_tracing
def pad_images(images: Tensor, size_divisibility: int) -> Tensor:
    """Zero-pad ``(N, C, H, W)`` images at the bottom and right to multiples of ``size_divisibility``
    (as :meth:`ImageList.from_tensors` pads normalised images)."""
    if size_divisibility <= 1:
        return images
    h = images.shape[2]
    w = images.shape[3]
    # Written as `d * ceil(h / d)` so that torch.export can prove the padded size divisible by d (the
    # FPN's top-down additions need it); a `% d` form makes it specialise the size instead.
    padded_h = (h + size_divisibility - 1) // size_divisibility * size_divisibility
    padded_w = (w + size_divisibility - 1) // size_divisibility * size_divisibility
    return F.pad(images, [0, padded_w - w, 0, padded_h - h])


@torch.jit.script_if_tracing
def grid_anchors(feature: Tensor, cell_anchors: Tensor, stride: int, offset: float) -> Tensor:
    """The ``(Hi*Wi*A, 4)`` anchors of a ``(N, C, Hi, Wi)`` feature map, ordered by row, column, cell
    anchor: cell anchor ``(A, 4)`` shifted to ``(index + offset) * stride`` (as
    :class:`DefaultAnchorGenerator`)."""
    h = feature.shape[2]
    w = feature.shape[3]
    shifts_x = (torch.arange(w, device=feature.device, dtype=torch.float32) + offset) * stride
    shifts_y = (torch.arange(h, device=feature.device, dtype=torch.float32) + offset) * stride
    # The (H, W) grids by broadcasting additions of zeros (exact), not meshgrid: reshaping meshgrid's
    # expanded views makes torch.export specialise maps of height or width 1 (e.g. RetinaNet's p7).
    shift_x = (shifts_x[None, :] + torch.zeros_like(shifts_y)[:, None]).reshape(-1)
    shift_y = (shifts_y[:, None] + torch.zeros_like(shifts_x)[None, :]).reshape(-1)
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
    return (shifts[:, None, :] + cell_anchors[None, :, :]).reshape(-1, 4)


def to_N_HWA_K(x: Tensor, k: int) -> Tensor:
    """``(N, A*K, Hi, Wi)`` head outputs -> ``(N, Hi*Wi*A, K)``, as :func:`permute_to_N_HWA_K`.

    An explicit contiguous copy, then a view: a ``reshape`` of the permuted tensor makes torch.export
    guard on the map size being 1 (e.g. RetinaNet's p7 is 1 x 1 on small images)."""
    return x.permute(0, 2, 3, 1).clone(memory_format=torch.contiguous_format).view(x.shape[0], -1, k)


@torch.jit.script_if_tracing
def topk_along_dim1(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``x.topk(min(x.shape[1], k), dim=1)``: values and indices, both ``(N, min(R, k))``."""
    return x.topk(min(x.shape[1], k), dim=1)


@torch.jit.script_if_tracing
def clip_boxes(boxes: Tensor, images: Tensor) -> Tensor:
    """Clip ``(R, 4)`` boxes to ``[0, W] x [0, H]`` of the ``(N, C, H, W)`` ``images`` (as :meth:`Boxes.clip`)."""
    h = images.shape[2]
    w = images.shape[3]
    x0 = boxes[:, 0].clamp(min=0, max=w)
    y0 = boxes[:, 1].clamp(min=0, max=h)
    x1 = boxes[:, 2].clamp(min=0, max=w)
    y1 = boxes[:, 3].clamp(min=0, max=h)
    return torch.stack((x0, y0, x1, y1), dim=-1)


def nonempty_boxes(boxes: Tensor, threshold: float = 0.0) -> Tensor:
    """``(R,)`` bool: width and height both ``> threshold`` (as :meth:`Boxes.nonempty`)."""
    return ((boxes[:, 2] - boxes[:, 0]) > threshold) & ((boxes[:, 3] - boxes[:, 1]) > threshold)


def batched_nms_by_group(
    boxes: Tensor, scores: Tensor, categories: Tensor, num_categories: int, batch_index: Tensor, iou_threshold: float
) -> Tensor:
    """NMS within each (image, category), e.g. (image, class) or (image, feature level).

    Boxes of group ``g = image * num_categories + category`` are moved by ``g * (max coordinate + 1)``
    (torchvision's coordinate offset trick) and one NMS runs on all of them.

    Args:
        boxes: ``(R, 4)`` float boxes.
        scores: ``(R,)``.
        categories: ``(R,)`` int64 in ``[0, num_categories)``.
        num_categories: number of categories.
        batch_index: ``(R,)`` int64 image of each box.
        iou_threshold: boxes with IoU ``> iou_threshold`` with a kept, higher-scoring box of the same
            image and category are removed.

    Returns:
        int64 indices of the kept boxes, by decreasing score.
    """
    # Images and categories are separated by torchvision's coordinate offset trick in one NMS call.
    # (One call per category would be faster for many boxes, as torchvision's batched_nms does, but the
    # ONNX translation of such a graph fails.)
    boxes = boxes.float()
    groups = batch_index * num_categories + categories
    # A zero is appended so that the max of no boxes is defined (no branch on the box count).
    max_coordinate = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
    offsets = groups.to(boxes.dtype) * (max_coordinate + 1)
    keep = torch.ops.torchvision.nms(boxes + offsets[:, None], scores.float(), float(iou_threshold))
    _check_rows(keep)
    return keep


def nonzero(mask: Tensor) -> Tensor:
    """``torch.nonzero(mask)``, ``(C, mask.dim())``, with ``C <= MAX_ROWS`` stated for torch.export."""
    idx = torch.nonzero(mask)
    _check_rows(idx)
    return idx


def _check_rows(x: Tensor) -> None:
    if not torch.jit.is_tracing():  # sizes are tensors while tracing; only torch.export needs the bound
        torch._check(x.shape[0] <= MAX_ROWS)


@torch.jit.script_if_tracing
def select_topk_per_image(keep: Tensor, batch_index: Tensor, images: Tensor, k: int) -> Tensor:
    """Of ``keep`` (indices by decreasing score, e.g. from NMS), the ``k`` first of each image, ordered by
    image then by decreasing score; ``k < 0`` keeps all.

    Args:
        keep: ``(K,)`` int64 indices into rows with image index ``batch_index``.
        batch_index: ``(R,)`` int64 image of each row.
        images: the ``(N, C, H, W)`` input batch (only ``N`` is read).
        k: rows kept per image.
    """
    num_kept = keep.shape[0]
    batch = batch_index[keep]
    # Unique keys: image first, then the (score) order of `keep`.
    position = torch.arange(num_kept, device=keep.device)
    order = torch.argsort(batch * (num_kept + 1) + position)
    keep = keep[order]
    batch = batch[order]
    if k < 0:
        return keep
    image_ids = torch.arange(images.shape[0], device=keep.device)
    counts = (batch[:, None] == image_ids[None, :]).sum(dim=0)  # (N,)
    starts = torch.cumsum(counts, dim=0) - counts
    rank = position - starts[batch]
    return keep[rank < k]


def pool_rois(pooler, features: list[Tensor], rois: Tensor) -> Tensor:
    """:class:`ROIPooler` on ``(R, 5)`` rois ``(batch_index, x0, y0, x1, y1)``: each roi is pooled from the
    level its size maps to (:func:`assign_boxes_to_levels`).

    Args:
        pooler: a :class:`ROIPooler` of an axis-aligned type (``ROIAlign``, ``ROIAlignV2``, ``ROIPool``).
        features: one ``(N, C, Hi, Wi)`` map per pooler level.
        rois: ``(R, 5)`` float rois.

    Returns:
        ``(R, C, output_size[0], output_size[1])``.
    """
    level_poolers = pooler.level_poolers
    if len(level_poolers) == 1:
        return level_poolers[0](features[0], rois)
    boxes = rois[:, 1:]
    box_sizes = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    levels = torch.floor(pooler.canonical_level + torch.log2(box_sizes / pooler.canonical_box_size + 1e-8))
    levels = torch.clamp(levels, min=pooler.min_level, max=pooler.max_level).to(torch.int64) - pooler.min_level
    # Pool each level's rois, concatenate (rois grouped by level) and gather them back into the input order:
    # two copies of the pooled features, where writing each level into a zeroed output costs onnxruntime one
    # copy of the whole output per level (its ScatterND is not in place).
    inds = [nonzero(levels == level).squeeze(1) for level in range(len(level_poolers))]
    pooled = torch.cat(
        [level_pooler(features[level], rois[inds[level]]) for level, level_pooler in enumerate(level_poolers)]
    )
    grouped_order = torch.cat(inds)
    # Sized by `levels` (R), not by the sum of the level counts: that keeps the output's length R for export.
    position = torch.zeros_like(levels)
    position[grouped_order] = torch.arange(grouped_order.shape[0], device=rois.device)
    return pooled[position]


@torch.jit.script_if_tracing
def paste_masks(masks: Tensor, boxes: Tensor, images: Tensor, threshold: float) -> Tensor:
    """Paste ``(D, M, M)`` mask probabilities into their boxes in full ``H x W`` images (``images``:
    ``(N, C, H, W)``) and threshold them (``>= threshold``): ``(D, H, W)`` bool.

    The same bilinear resampling as :func:`paste_masks_in_image` (pixel centre ``(x + 0.5, y + 0.5)``
    reads the mask at the matching point, 0 outside the mask), computed as two matrix products: the
    bilinear weights of a product grid separate into a row and a column interpolation matrix.
    """
    h = images.shape[2]
    w = images.shape[3]
    m = masks.shape[1]
    boxes = boxes.to(torch.float32)
    masks = masks.to(torch.float32)
    x0 = boxes[:, 0:1]
    y0 = boxes[:, 1:2]
    x1 = boxes[:, 2:3]
    y1 = boxes[:, 3:4]
    img_y = torch.arange(h, device=masks.device, dtype=torch.float32) + 0.5
    img_x = torch.arange(w, device=masks.device, dtype=torch.float32) + 0.5
    grid_y = (img_y - y0) / (y1 - y0) * 2 - 1  # (D, H), grid_sample's [-1, 1] coordinates
    grid_x = (img_x - x0) / (x1 - x0) * 2 - 1  # (D, W)
    src_y = ((grid_y + 1) * m - 1) / 2  # mask row read by each image row (align_corners=False)
    src_x = ((grid_x + 1) * m - 1) / 2
    cells = torch.arange(m, device=masks.device, dtype=torch.float32)
    weight_y = torch.clamp(1 - torch.abs(src_y[:, :, None] - cells), min=0.0)  # (D, H, M)
    weight_x = torch.clamp(1 - torch.abs(src_x[:, :, None] - cells), min=0.0)  # (D, W, M)
    pasted = torch.bmm(torch.bmm(weight_y, masks), weight_x.transpose(1, 2))  # (D, H, W)
    return pasted >= threshold


@torch.jit.script_if_tracing
def crop_to_input(x: Tensor, images: Tensor) -> Tensor:
    """``x[:, :, :H, :W]`` with ``H, W`` of the ``(N, C, H, W)`` ``images`` (drops the padding)."""
    return x[:, :, : images.shape[2], : images.shape[3]]

"""Helpers shared by proposal generators: top-k + NMS selection of proposals, and appending ground truth
boxes to the proposals used to train the ROI heads."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from libdet.layers import batched_nms, cat, move_device_like
from libdet.structures import Boxes, Instances

__all__ = ["find_top_rpn_proposals", "add_ground_truth_to_proposals"]

# Logit given to ground-truth boxes added as proposals: sigmoid(logit) is (almost) 1.
_GT_LOGIT = math.log((1.0 - 1e-10) / (1 - (1.0 - 1e-10)))


def find_top_rpn_proposals(
    proposals: list[torch.Tensor],
    pred_objectness_logits: list[torch.Tensor],
    image_sizes: list[tuple[int, int]],
    nms_thresh: float,
    pre_nms_topk: int,
    post_nms_topk: int,
    min_box_size: float,
    training: bool,
) -> list[Instances]:
    """Select the proposals of each image: per feature level keep the ``pre_nms_topk`` highest-scoring
    ones, then over all levels clip them to the image, drop those smaller than ``min_box_size``, run NMS
    within each level and keep the ``post_nms_topk`` best (per image, in training and inference alike).

    Args:
        proposals: ``L`` tensors of shape ``(N, Hi*Wi*A, 4)``: decoded boxes of each level.
        pred_objectness_logits: ``L`` tensors of shape ``(N, Hi*Wi*A)``.
        image_sizes: ``N`` ``(height, width)`` pairs.
        nms_thresh: IoU threshold of the NMS.
        pre_nms_topk: proposals kept per level before NMS.
        post_nms_topk: proposals kept per image after NMS.
        min_box_size: proposals with a side ``<= min_box_size`` (after clipping) are removed.
        training: in training, a non-finite box or score raises (training diverged) instead of being
            dropped.

    Returns:
        ``N`` :class:`Instances` with ``proposal_boxes`` (:class:`Boxes`) and ``objectness_logits``
        (``(K,)``), sorted by decreasing logit.

    Raises:
        FloatingPointError: in training, when a box or score is infinite or NaN.
    """
    if torch.jit.is_scripting():
        return _find_top_rpn_proposals_scripted(
            proposals,
            pred_objectness_logits,
            image_sizes,
            nms_thresh,
            pre_nms_topk,
            post_nms_topk,
            min_box_size,
            training,
        )
    return _select_top_proposals(
        proposals,
        pred_objectness_logits,
        image_sizes,
        nms_thresh,
        pre_nms_topk,
        post_nms_topk,
        min_box_size,
        training,
        caller="find_top_rpn_proposals",
        box_type=Boxes,
        nms=batched_nms,
    )


def _find_top_rpn_proposals_scripted(
    proposals: list[torch.Tensor],
    pred_objectness_logits: list[torch.Tensor],
    image_sizes: list[tuple[int, int]],
    nms_thresh: float,
    pre_nms_topk: int,
    post_nms_topk: int,
    min_box_size: float,
    training: bool,
) -> list[Instances]:
    """:func:`_select_top_proposals` for axis-aligned boxes in what TorchScript compiles (it cannot take the
    box type and the NMS as arguments); the same steps, the same results."""
    device = proposals[0].device
    batch_idx = torch.arange(len(image_sizes), device=device)
    topk_scores: list[torch.Tensor] = []
    topk_proposals: list[torch.Tensor] = []
    level_ids: list[torch.Tensor] = []
    for level_id, (proposals_i, logits_i) in enumerate(zip(proposals, pred_objectness_logits)):
        num_kept = min(logits_i.shape[1], pre_nms_topk)
        scores_i, idx = logits_i.topk(num_kept, dim=1)  # both (N, num_kept); sorted by score
        topk_scores.append(scores_i)
        topk_proposals.append(proposals_i[batch_idx[:, None], idx])  # (N, num_kept, 4)
        level_ids.append(torch.full((num_kept,), level_id, dtype=torch.int64, device=device))
    all_scores = torch.cat(topk_scores, dim=1)
    all_proposals = torch.cat(topk_proposals, dim=1)
    all_levels = torch.cat(level_ids, dim=0)

    results: list[Instances] = []
    for n, image_size in enumerate(image_sizes):
        boxes = Boxes(all_proposals[n])
        scores = all_scores[n]
        levels = all_levels
        valid = torch.isfinite(boxes.tensor).all(dim=1) & torch.isfinite(scores)
        if not bool(valid.all()):
            if training:
                raise FloatingPointError(
                    "find_top_rpn_proposals: infinite or NaN predicted proposal boxes or objectness logits; "
                    "training has diverged."
                )
            boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
        boxes.clip(image_size)
        keep = boxes.nonempty(threshold=min_box_size)
        if int(keep.sum()) != len(boxes):
            boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        keep = batched_nms(boxes.tensor, scores, levels, nms_thresh)[:post_nms_topk]
        result = Instances(image_size)
        result.proposal_boxes = boxes[keep]
        result.objectness_logits = scores[keep]
        results.append(result)
    return results


def _select_top_proposals(
    proposals: list[torch.Tensor],
    pred_objectness_logits: list[torch.Tensor],
    image_sizes: Sequence[tuple[int, int]],
    nms_thresh: float,
    pre_nms_topk: int,
    post_nms_topk: int,
    min_box_size: float,
    training: bool,
    *,
    caller: str,
    box_type: type,
    nms: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor],
    clip_kwargs: dict[str, Any] | None = None,
) -> list[Instances]:
    """The steps of :func:`find_top_rpn_proposals` for any box type: ``box_type`` (:class:`Boxes`,
    :class:`RotatedBoxes`) holds, clips (with ``clip_kwargs``) and filters the boxes, ``nms`` is the matching
    batched NMS; ``caller`` names the public function in errors."""
    num_images = len(image_sizes)
    device = proposals[0].device if len(proposals) else torch.device("cpu")
    topk_scores, topk_proposals, level_ids = [], [], []
    batch_idx = move_device_like(torch.arange(num_images, device=device), proposals[0])
    for level_id, (proposals_i, logits_i) in enumerate(zip(proposals, pred_objectness_logits)):
        num_anchors_i = logits_i.shape[1]
        if isinstance(num_anchors_i, torch.Tensor):  # while tracing
            num_kept = torch.clamp(num_anchors_i, max=pre_nms_topk)
        else:
            num_kept = min(num_anchors_i, pre_nms_topk)
        scores_i, idx = logits_i.topk(num_kept, dim=1)  # both (N, num_kept); sorted by score
        topk_scores.append(scores_i)
        topk_proposals.append(proposals_i[batch_idx[:, None], idx])  # (N, num_kept, box dim)
        level_ids.append(
            move_device_like(torch.full((num_kept,), level_id, dtype=torch.int64, device=device), proposals[0])
        )
    all_scores = cat(topk_scores, dim=1)
    all_proposals = cat(topk_proposals, dim=1)
    all_levels = cat(level_ids, dim=0)

    results: list[Instances] = []
    for n, image_size in enumerate(image_sizes):
        boxes = box_type(all_proposals[n])
        scores = all_scores[n]
        levels = all_levels
        valid = torch.isfinite(boxes.tensor).all(dim=1) & torch.isfinite(scores)
        if not bool(valid.all()):
            if training:
                raise FloatingPointError(
                    f"{caller}: image {n} has infinite or NaN predicted proposal boxes or "
                    "objectness logits; training has diverged."
                )
            boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
        boxes.clip(image_size, **(clip_kwargs or {}))
        keep = boxes.nonempty(threshold=min_box_size)
        if torch.jit.is_tracing() or int(keep.sum()) != len(boxes):
            boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        keep = nms(boxes.tensor, scores, levels, nms_thresh)[:post_nms_topk]
        result = Instances(image_size)
        result.proposal_boxes = boxes[keep]
        result.objectness_logits = scores[keep]
        results.append(result)
    return results


def add_ground_truth_to_proposals(gt: Sequence[Instances | Boxes], proposals: Sequence[Instances]) -> list[Instances]:
    """Append each image's ground-truth boxes to its proposals, with an objectness logit of ~23 (a
    probability of 1). Their other ``gt_*`` fields travel along but are not kept by the result (the
    result has the proposals' fields).

    Args:
        gt: per image, :class:`Instances` with ``gt_boxes`` or a :class:`Boxes`.
        proposals: per image, :class:`Instances` with ``proposal_boxes`` and ``objectness_logits``.

    Returns:
        Per image, the proposals followed by the ground-truth boxes.

    Raises:
        ValueError: if ``gt`` is None or its length differs from ``proposals``; if an image's gt has no
            ``gt_boxes``.
    """
    if gt is None:
        raise ValueError("add_ground_truth_to_proposals: `gt` is None; ground truth is needed in training.")
    if len(gt) != len(proposals):
        raise ValueError(
            f"add_ground_truth_to_proposals: got gt for {len(gt)} images but proposals for {len(proposals)}."
        )
    return [_add_gt_single_image(i, gt_i, p_i) for i, (gt_i, p_i) in enumerate(zip(gt, proposals))]


def _add_gt_single_image(index: int, gt: Instances | Boxes, proposals: Instances) -> Instances:
    if isinstance(gt, Boxes):
        gt = Instances(proposals.image_size, gt_boxes=gt)
    if not gt.has("gt_boxes"):
        raise ValueError(f"add_ground_truth_to_proposals: the ground truth of image {index} has no `gt_boxes`.")
    gt_boxes = gt.gt_boxes
    device = proposals.objectness_logits.device
    gt_proposals = Instances(proposals.image_size)
    gt_proposals.proposal_boxes = gt_boxes.to(device)
    gt_proposals.objectness_logits = torch.full(
        (len(gt_boxes),), _GT_LOGIT, dtype=proposals.objectness_logits.dtype, device=device
    )
    for name in proposals.get_fields():
        if not gt_proposals.has(name):
            if not gt.has(name):
                raise ValueError(
                    f"add_ground_truth_to_proposals: the proposals of image {index} have a field {name!r} "
                    "that the ground truth lacks, so the two cannot be concatenated."
                )
            gt_proposals.set(name, gt.get(name))
    return Instances.cat([proposals, gt_proposals])

"""Rotated Region Proposal Network (RRPN, https://arxiv.org/abs/1703.01086): the RPN of Faster R-CNN on
rotated anchors ``(cx, cy, w, h, angle)``, matched to rotated ground truth by rotated IoU, with 5-number
deltas and rotated NMS."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

from libdet.layers import batched_nms_rotated, cat, move_device_like
from libdet.structures import Instances, RotatedBoxes, pairwise_iou_rotated

from ..box_regression import Box2BoxTransformRotated
from .rpn import RPN

__all__ = ["RRPN", "find_top_rrpn_proposals"]


def find_top_rrpn_proposals(
    proposals: List[torch.Tensor],
    pred_objectness_logits: List[torch.Tensor],
    image_sizes: Sequence[Tuple[int, int]],
    nms_thresh: float,
    pre_nms_topk: int,
    post_nms_topk: int,
    min_box_size: float,
    training: bool,
    clip_angle_threshold: float = 1.0,
) -> List[Instances]:
    """Select the rotated proposals of each image: per feature level keep the ``pre_nms_topk`` highest-scoring
    ones; then over all levels clip the nearly horizontal ones to the image (see :meth:`RotatedBoxes.clip`),
    drop those with a side ``<= min_box_size``, run rotated NMS within each level and keep the
    ``post_nms_topk`` best.

    Args:
        proposals: ``L`` tensors ``(N, Hi*Wi*A, 5)``: decoded rotated boxes of each level.
        pred_objectness_logits: ``L`` tensors ``(N, Hi*Wi*A)``.
        image_sizes: ``N`` ``(height, width)`` pairs.
        nms_thresh: rotated-IoU threshold of the NMS.
        pre_nms_topk: proposals kept per level before NMS.
        post_nms_topk: proposals kept per image after NMS.
        min_box_size: proposals with a side ``<= min_box_size`` (after clipping) are removed.
        training: in training a non-finite box or score raises (training diverged) instead of being dropped.
        clip_angle_threshold: boxes within this many degrees of horizontal are clipped to the image.

    Returns:
        ``N`` :class:`Instances` with ``proposal_boxes`` (:class:`RotatedBoxes`) and ``objectness_logits``
        ``(K,)``, by decreasing logit.

    Raises:
        FloatingPointError: in training, when a box or score is infinite or NaN.
    """
    if len(proposals) != len(pred_objectness_logits) or len(proposals) == 0:
        raise ValueError(
            f"find_top_rrpn_proposals: need one proposal tensor per level and one logit tensor per level, got "
            f"{len(proposals)} and {len(pred_objectness_logits)}."
        )
    num_images = len(image_sizes)
    device = proposals[0].device
    batch_idx = move_device_like(torch.arange(num_images, device=device), proposals[0])
    topk_scores, topk_proposals, level_ids = [], [], []
    for level_id, (proposals_i, logits_i) in enumerate(zip(proposals, pred_objectness_logits)):
        if proposals_i.dim() != 3 or proposals_i.shape[-1] != 5:
            raise ValueError(
                f"find_top_rrpn_proposals: level {level_id} proposals must have shape (N, R, 5), got "
                f"{tuple(proposals_i.shape)}."
            )
        num_kept = min(logits_i.shape[1], pre_nms_topk)
        scores_i, idx = logits_i.topk(num_kept, dim=1)  # (N, num_kept), sorted
        topk_scores.append(scores_i)
        topk_proposals.append(proposals_i[batch_idx[:, None], idx])  # (N, num_kept, 5)
        level_ids.append(torch.full((num_kept,), level_id, dtype=torch.int64, device=device))
    all_scores = cat(topk_scores, dim=1)
    all_proposals = cat(topk_proposals, dim=1)
    all_levels = cat(level_ids, dim=0)

    results: List[Instances] = []
    for n, image_size in enumerate(image_sizes):
        boxes = RotatedBoxes(all_proposals[n])
        scores = all_scores[n]
        levels = all_levels
        valid = torch.isfinite(boxes.tensor).all(dim=1) & torch.isfinite(scores)
        if not bool(valid.all()):
            if training:
                raise FloatingPointError(
                    f"find_top_rrpn_proposals: image {n} has infinite or NaN predicted proposal boxes or "
                    "objectness logits; training has diverged."
                )
            boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
        boxes.clip(image_size, clip_angle_threshold=clip_angle_threshold)
        keep = boxes.nonempty(threshold=min_box_size)
        if int(keep.sum()) != len(boxes):
            boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        keep = batched_nms_rotated(boxes.tensor, scores, levels, nms_thresh)[:post_nms_topk]
        result = Instances(image_size)
        result.proposal_boxes = boxes[keep]
        result.objectness_logits = scores[keep]
        results.append(result)
    return results


class RRPN(RPN):
    """Rotated RPN: :class:`RPN` with rotated anchors (e.g. :class:`RotatedAnchorGenerator`), rotated-IoU
    matching, :class:`Box2BoxTransformRotated` deltas (5 per anchor: use ``StandardRPNHead(box_dim=5)``) and
    rotated NMS. Ground truth ``gt_boxes`` must be :class:`RotatedBoxes`.

    Arguments are those of :class:`RPN`; ``box2box_transform`` must be a :class:`Box2BoxTransformRotated`,
    ``box_reg_loss_type`` must be ``"smooth_l1"`` (the IoU losses are defined for axis-aligned boxes only),
    and ``anchor_boundary_thresh`` tests the axis-aligned bounding box of each rotated anchor.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(self.box2box_transform, Box2BoxTransformRotated):
            raise TypeError(
                "RRPN: `box2box_transform` must be a Box2BoxTransformRotated (5 deltas per anchor), got "
                f"{type(self.box2box_transform).__name__}."
            )
        if getattr(self.anchor_generator, "box_dim", None) != 5:
            raise ValueError(
                "RRPN: `anchor_generator` must produce rotated anchors (box_dim = 5, e.g. RotatedAnchorGenerator), "
                f"got {type(self.anchor_generator).__name__} with box_dim={getattr(self.anchor_generator, 'box_dim', None)}."
            )
        if self.box_reg_loss_type != "smooth_l1":
            raise ValueError(
                f"RRPN: `box_reg_loss_type` must be 'smooth_l1' for rotated boxes, got {self.box_reg_loss_type!r}."
            )

    @torch.no_grad()
    def label_and_sample_anchors(
        self, anchors: List[RotatedBoxes], gt_instances: List[Instances]
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Match rotated anchors to the rotated ground truth and sample ``batch_size_per_image`` per image.

        Args:
            anchors: per level, the ``Hi*Wi*A`` rotated anchors shared by every image.
            gt_instances: per image, :class:`Instances` with ``gt_boxes`` (:class:`RotatedBoxes`).

        Returns:
            labels: per image, ``(R,)``: 1 (sampled foreground), 0 (sampled background) or -1 (ignored).
            matched_gt_boxes: per image, ``(R, 5)`` matched gt box of each anchor (zeros without gt).
        """
        anchors = RotatedBoxes.cat(anchors)
        gt_labels, matched_gt_boxes = [], []
        for i, gt in enumerate(gt_instances):
            if not gt.has("gt_boxes"):
                raise ValueError(f"RRPN: the ground truth of image {i} has no `gt_boxes` field.")
            gt_boxes = gt.gt_boxes
            if not isinstance(gt_boxes, RotatedBoxes):
                raise TypeError(
                    f"RRPN: `gt_boxes` of image {i} must be RotatedBoxes (cx, cy, w, h, angle), got "
                    f"{type(gt_boxes).__name__}."
                )
            quality = pairwise_iou_rotated(gt_boxes, anchors)
            matched_idxs, labels = self.anchor_matcher(quality)
            labels = labels.to(device=gt_boxes.device)
            del quality
            if self.anchor_boundary_thresh >= 0:
                inside = anchors.inside_box(gt.image_size, self.anchor_boundary_thresh)
                labels[~inside] = -1
            labels = self._subsample_labels(labels)
            if len(gt_boxes) == 0:
                matched = torch.zeros_like(anchors.tensor)
            else:
                matched = gt_boxes[matched_idxs].tensor
            gt_labels.append(labels)
            matched_gt_boxes.append(matched)
        return gt_labels, matched_gt_boxes

    def predict_proposals(
        self,
        anchors: List[RotatedBoxes],
        pred_objectness_logits: List[torch.Tensor],
        pred_anchor_deltas: List[torch.Tensor],
        image_sizes: List[Tuple[int, int]],
    ) -> List[Instances]:
        """Decode the deltas and select the proposals (see :func:`find_top_rrpn_proposals`); no gradient.

        Args:
            anchors: per level, ``Hi*Wi*A`` rotated anchors.
            pred_objectness_logits: per level, ``(N, Hi*Wi*A)``.
            pred_anchor_deltas: per level, ``(N, Hi*Wi*A, 5)``.
            image_sizes: ``N`` ``(height, width)``.

        Returns:
            per image, :class:`Instances` with ``proposal_boxes`` (:class:`RotatedBoxes`) and ``objectness_logits``.
        """
        with torch.no_grad():
            pred_proposals = self._decode_proposals(anchors, pred_anchor_deltas)
            return find_top_rrpn_proposals(
                pred_proposals,
                pred_objectness_logits,
                image_sizes,
                self.nms_thresh,
                self.pre_nms_topk[self.training],
                self.post_nms_topk[self.training],
                self.min_box_size,
                self.training,
            )

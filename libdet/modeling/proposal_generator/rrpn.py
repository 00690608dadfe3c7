"""Rotated Region Proposal Network (RRPN, https://arxiv.org/abs/1703.01086): the RPN of Faster R-CNN on
rotated anchors ``(cx, cy, w, h, angle)``, matched to rotated ground truth by rotated IoU, with 5-number
deltas and rotated NMS."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from libdet.layers import batched_nms_rotated
from libdet.structures import Instances, RotatedBoxes, pairwise_iou_rotated

from ..box_regression import Box2BoxTransformRotated
from .proposal_utils import _select_top_proposals
from .rpn import RPN

__all__ = ["RRPN", "find_top_rrpn_proposals"]


def find_top_rrpn_proposals(
    proposals: list[torch.Tensor],
    pred_objectness_logits: list[torch.Tensor],
    image_sizes: Sequence[tuple[int, int]],
    nms_thresh: float,
    pre_nms_topk: int,
    post_nms_topk: int,
    min_box_size: float,
    training: bool,
    clip_angle_threshold: float = 1.0,
) -> list[Instances]:
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
    for level_id, proposals_i in enumerate(proposals):
        if proposals_i.dim() != 3 or proposals_i.shape[-1] != 5:
            raise ValueError(
                f"find_top_rrpn_proposals: level {level_id} proposals must have shape (N, R, 5), got "
                f"{tuple(proposals_i.shape)}."
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
        caller="find_top_rrpn_proposals",
        box_type=RotatedBoxes,
        nms=batched_nms_rotated,
        clip_kwargs={"clip_angle_threshold": clip_angle_threshold},
    )


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

    def _match_quality(self, image_index: int, gt_boxes: RotatedBoxes, anchors: RotatedBoxes) -> torch.Tensor:
        """``(G, R)`` rotated IoU of the rotated gt boxes of image ``image_index`` and the rotated anchors."""
        if not isinstance(gt_boxes, RotatedBoxes):
            raise TypeError(
                f"RRPN: `gt_boxes` of image {image_index} must be RotatedBoxes (cx, cy, w, h, angle), got "
                f"{type(gt_boxes).__name__}."
            )
        return pairwise_iou_rotated(gt_boxes, anchors)

    def predict_proposals(
        self,
        anchors: list[RotatedBoxes],
        pred_objectness_logits: list[torch.Tensor],
        pred_anchor_deltas: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> list[Instances]:
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

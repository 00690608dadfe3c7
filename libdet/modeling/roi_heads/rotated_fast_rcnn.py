"""Rotated Fast R-CNN: ROI heads for rotated boxes ``(cx, cy, w, h, angle)``. Proposals are pooled with
``ROIAlignRotated``, matched to the ground truth by rotated IoU, regressed with 5-number deltas
(:class:`Box2BoxTransformRotated`) and filtered by per-class rotated NMS. Box branch only."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from libdet.layers import ROIAlignRotated, ShapeSpec, batched_nms_rotated, nonzero_tuple
from libdet.layers.losses import smooth_l1_loss
from libdet.structures import Instances, RotatedBoxes, pairwise_iou_rotated
from libdet.utils.events import get_event_storage, has_event_storage

from ..box_regression import Box2BoxTransformRotated
from ..poolers import ROIPooler
from ..proposal_generator.proposal_utils import add_ground_truth_to_proposals
from .fast_rcnn import FastRCNNOutputLayers, _select_detections
from .roi_heads import StandardROIHeads

__all__ = [
    "fast_rcnn_inference_rotated",
    "fast_rcnn_inference_single_image_rotated",
    "RotatedFastRCNNOutputLayers",
    "RROIHeads",
]

_BOX_DIM = 5


def fast_rcnn_inference_rotated(
    boxes: Sequence[torch.Tensor],
    scores: Sequence[torch.Tensor],
    image_shapes: Sequence[tuple[int, int]],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
) -> tuple[list[Instances], list[torch.Tensor]]:
    """Rotated detections of every image: :func:`fast_rcnn_inference_single_image_rotated` applied to each.

    Args:
        boxes: per image, ``(R_i, K*5)`` (class-specific) or ``(R_i, 5)`` (class-agnostic) rotated boxes.
        scores: per image, ``(R_i, K+1)`` class probabilities, background last.
        image_shapes: per image, ``(height, width)``.
        score_thresh: only (box, class) pairs with score ``> score_thresh`` are kept.
        nms_thresh: rotated-IoU threshold of the per-class NMS.
        topk_per_image: detections kept per image (by score); negative keeps all.

    Returns:
        per image, :class:`Instances` with ``pred_boxes`` (:class:`RotatedBoxes`), ``scores``,
        ``pred_classes``; and per image the ``(D,)`` index of the ROI each detection came from.
    """
    if not (len(boxes) == len(scores) == len(image_shapes)):
        raise ValueError(
            f"fast_rcnn_inference_rotated: got {len(boxes)} box tensors, {len(scores)} score tensors and "
            f"{len(image_shapes)} image shapes; need one of each per image."
        )
    results = [
        fast_rcnn_inference_single_image_rotated(b, s, shape, score_thresh, nms_thresh, topk_per_image)
        for b, s, shape in zip(boxes, scores, image_shapes)
    ]
    return [r[0] for r in results], [r[1] for r in results]


def fast_rcnn_inference_single_image_rotated(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    image_shape: tuple[int, int],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
) -> tuple[Instances, torch.Tensor]:
    """Rotated detections of one image. ROIs with a non-finite box or score are dropped, nearly horizontal
    boxes are clipped to the image (:meth:`RotatedBoxes.clip`), every (ROI, class) pair with score
    ``> score_thresh`` is a candidate, rotated NMS runs per class, and the ``topk_per_image`` best survive.

    Args:
        boxes: ``(R, K*5)`` or ``(R, 5)`` predicted rotated boxes.
        scores: ``(R, K+1)`` class probabilities, background last.
        image_shape: ``(height, width)``.
        score_thresh, nms_thresh, topk_per_image: see :func:`fast_rcnn_inference_rotated`.

    Returns:
        :class:`Instances` with ``pred_boxes`` (``D`` :class:`RotatedBoxes`), ``scores`` ``(D,)`` and
        ``pred_classes`` ``(D,)`` by decreasing score; and the ``(D,)`` ROI index of each detection (into
        the finite ROIs).
    """
    if boxes.dim() != 2 or boxes.shape[1] % _BOX_DIM != 0:
        raise ValueError(
            f"fast_rcnn_inference_single_image_rotated: `boxes` must have shape (R, K*5) or (R, 5), got "
            f"{tuple(boxes.shape)}."
        )
    if scores.dim() != 2 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"fast_rcnn_inference_single_image_rotated: `scores` must have shape ({boxes.shape[0]}, K+1), got "
            f"{tuple(scores.shape)}."
        )
    return _select_detections(
        boxes,
        scores,
        image_shape,
        score_thresh,
        nms_thresh,
        topk_per_image,
        box_type=RotatedBoxes,
        box_dim=_BOX_DIM,
        nms=batched_nms_rotated,
    )


class RotatedFastRCNNOutputLayers(FastRCNNOutputLayers):
    """:class:`FastRCNNOutputLayers` for rotated boxes: ``bbox_pred`` predicts ``K * 5`` (or 5) deltas,
    the box loss is smooth-L1 on :class:`Box2BoxTransformRotated` deltas, and inference runs
    :func:`fast_rcnn_inference_rotated`.

    Arguments are those of :class:`FastRCNNOutputLayers`; ``box2box_transform`` must be a
    :class:`Box2BoxTransformRotated` and ``box_reg_loss_type`` ``"smooth_l1"``.
    """

    def __init__(self, input_shape: int | ShapeSpec, **kwargs):
        super().__init__(input_shape, **kwargs)
        if not isinstance(self.box2box_transform, Box2BoxTransformRotated):
            raise TypeError(
                "RotatedFastRCNNOutputLayers: `box2box_transform` must be a Box2BoxTransformRotated, got "
                f"{type(self.box2box_transform).__name__}."
            )
        if self.box_reg_loss_type != "smooth_l1":
            raise ValueError(
                "RotatedFastRCNNOutputLayers: `box_reg_loss_type` must be 'smooth_l1' for rotated boxes, got "
                f"{self.box_reg_loss_type!r}."
            )

    def box_reg_loss(
        self,
        proposal_boxes: torch.Tensor,
        gt_boxes: torch.Tensor,
        pred_deltas: torch.Tensor,
        gt_classes: torch.Tensor,
    ) -> torch.Tensor:
        """Smooth-L1 loss of the foreground ROIs' rotated deltas (summed), divided by the number of ROIs.

        Args:
            proposal_boxes: ``(R, 5)``.
            gt_boxes: ``(R, 5)`` matched gt boxes (any value for background ROIs).
            pred_deltas: ``(R, K*5)`` or ``(R, 5)``.
            gt_classes: ``(R,)``, ``K`` for background.
        """
        fg = nonzero_tuple((gt_classes >= 0) & (gt_classes < self.num_classes))[0]
        if pred_deltas.shape[1] == _BOX_DIM:  # class-agnostic
            fg_deltas = pred_deltas[fg]
        else:
            fg_deltas = pred_deltas.view(-1, self.num_classes, _BOX_DIM)[fg, gt_classes[fg]]
        gt_deltas = self.box2box_transform.get_deltas(proposal_boxes[fg], gt_boxes[fg])
        loss = smooth_l1_loss(fg_deltas, gt_deltas.to(fg_deltas.dtype), beta=self.smooth_l1_beta, reduction="sum")
        return loss / max(gt_classes.numel(), 1.0)

    def inference(
        self, predictions: tuple[torch.Tensor, torch.Tensor], proposals: list[Instances]
    ) -> tuple[list[Instances], list[torch.Tensor]]:
        """Rotated detections of every image (see :func:`fast_rcnn_inference_rotated`).

        Args:
            predictions: output of :meth:`forward`.
            proposals: per image, :class:`Instances` with ``proposal_boxes`` (:class:`RotatedBoxes`).
        """
        boxes = self.predict_boxes(predictions, proposals)
        scores = self.predict_probs(predictions, proposals)
        image_shapes = [p.image_size for p in proposals]
        return fast_rcnn_inference_rotated(
            boxes, scores, image_shapes, self.test_score_thresh, self.test_nms_thresh, self.test_topk_per_image
        )


class RROIHeads(StandardROIHeads):
    """ROI heads for rotated boxes (box branch only): proposals and ground truth are :class:`RotatedBoxes`,
    matched by rotated IoU; ROIs are pooled by a ``"ROIAlignRotated"`` :class:`ROIPooler`.

    Args:
        box_in_features: feature names the box branch pools from.
        box_pooler: a :class:`ROIPooler` with ``pooler_type="ROIAlignRotated"``.
        box_head: maps pooled features to per-ROI features.
        box_predictor: a :class:`RotatedFastRCNNOutputLayers`.
        kwargs: other arguments of :class:`StandardROIHeads` / :class:`ROIHeads` (``num_classes``,
            ``batch_size_per_image``, ``positive_fraction``, ``proposal_matcher``, ``proposal_append_gt``).
            Mask and keypoint branches and ``train_on_pred_boxes`` are not supported.
    """

    def __init__(
        self,
        *,
        box_in_features: list[str],
        box_pooler: ROIPooler,
        box_head: nn.Module,
        box_predictor: RotatedFastRCNNOutputLayers,
        **kwargs,
    ):
        super().__init__(
            box_in_features=box_in_features,
            box_pooler=box_pooler,
            box_head=box_head,
            box_predictor=box_predictor,
            **kwargs,
        )
        if self.mask_on or getattr(self, "keypoint_on", False):
            raise ValueError("RROIHeads: mask and keypoint branches are not supported for rotated boxes.")
        if self.train_on_pred_boxes:
            raise ValueError("RROIHeads: `train_on_pred_boxes=True` is not supported for rotated boxes.")
        if not all(isinstance(p, ROIAlignRotated) for p in getattr(box_pooler, "level_poolers", [None])):
            raise ValueError(
                "RROIHeads: `box_pooler` must be a ROIPooler with pooler_type='ROIAlignRotated', got "
                f"{type(box_pooler).__name__} with poolers "
                f"{[type(p).__name__ for p in getattr(box_pooler, 'level_poolers', [])]}."
            )
        if not isinstance(box_predictor, RotatedFastRCNNOutputLayers):
            raise TypeError(
                "RROIHeads: `box_predictor` must be a RotatedFastRCNNOutputLayers (rotated deltas and rotated "
                f"NMS), got {type(box_predictor).__name__}."
            )

    @torch.no_grad()
    def label_and_sample_proposals(self, proposals: list[Instances], targets: list[Instances]) -> list[Instances]:
        """Match rotated proposals (plus the gt boxes, if ``proposal_append_gt``) to the rotated ground truth
        by rotated IoU and sample the training ROIs of each image.

        Args:
            proposals: per image, :class:`Instances` with ``proposal_boxes`` (:class:`RotatedBoxes`) and
                ``objectness_logits``.
            targets: per image, :class:`Instances` with ``gt_boxes`` (:class:`RotatedBoxes`) and ``gt_classes``.

        Returns:
            per image, the sampled proposals with ``gt_classes`` (``K`` = background) and, when the image has
            ground truth, every ``gt_*`` field of ``targets`` taken from each ROI's matched gt.
        """
        if targets is None or len(targets) != len(proposals):
            raise ValueError(
                f"RROIHeads: need one target Instances per image in training, got "
                f"{None if targets is None else len(targets)} targets for {len(proposals)} images."
            )
        for i, t in enumerate(targets):
            if not (t.has("gt_boxes") and t.has("gt_classes")):
                raise ValueError(f"RROIHeads: the targets of image {i} need `gt_boxes` and `gt_classes` fields.")
            if not isinstance(t.gt_boxes, RotatedBoxes):
                raise TypeError(
                    f"RROIHeads: `gt_boxes` of image {i} must be RotatedBoxes, got {type(t.gt_boxes).__name__}."
                )
        if self.proposal_append_gt:
            proposals = add_ground_truth_to_proposals(targets, proposals)
        sampled_proposals = []
        for props, tgt in zip(proposals, targets):
            quality = pairwise_iou_rotated(tgt.gt_boxes, props.proposal_boxes)
            matched_idxs, matched_labels = self.proposal_matcher(quality)
            sampled_idxs, gt_classes = self._sample_proposals(matched_idxs, matched_labels, tgt.gt_classes)
            props = props[sampled_idxs]
            props.gt_classes = gt_classes
            if len(tgt) > 0:
                sampled_targets = matched_idxs[sampled_idxs]
                for name, value in tgt.get_fields().items():
                    if name.startswith("gt_") and not props.has(name):
                        props.set(name, value[sampled_targets])
            sampled_proposals.append(props)
        if has_event_storage():
            num_bg = [int((p.gt_classes == self.num_classes).sum()) for p in sampled_proposals]
            num_fg = [len(p) - bg for p, bg in zip(sampled_proposals, num_bg)]
            storage = get_event_storage()
            storage.put_scalar("roi_head/num_fg_samples", sum(num_fg) / len(num_fg))
            storage.put_scalar("roi_head/num_bg_samples", sum(num_bg) / len(num_bg))
        return sampled_proposals

    def forward(
        self,
        images,
        features: dict[str, torch.Tensor],
        proposals: list[Instances],
        targets: list[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, torch.Tensor]]:
        """See :meth:`StandardROIHeads.forward`; detections have ``pred_boxes`` as :class:`RotatedBoxes`."""
        for i, p in enumerate(proposals):
            if not isinstance(p.proposal_boxes, RotatedBoxes):
                raise TypeError(
                    f"RROIHeads: `proposal_boxes` of image {i} must be RotatedBoxes (from RRPN), got "
                    f"{type(p.proposal_boxes).__name__}."
                )
        return super().forward(images, features, proposals, targets)

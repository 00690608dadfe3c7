"""Cascade R-CNN ROI heads (https://arxiv.org/abs/1712.00726): a sequence of box heads, each refining the
boxes of the previous one and trained against the ground truth with a stricter IoU threshold."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from libdet.structures import Boxes, Instances, pairwise_iou
from libdet.utils.events import get_event_storage, has_event_storage

from ..matcher import Matcher
from ..poolers import ROIPooler
from .fast_rcnn import fast_rcnn_inference
from .roi_heads import StandardROIHeads

__all__ = ["CascadeROIHeads"]


class _ScaleGradient(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by ``scale`` in the backward pass."""

    @staticmethod
    def forward(ctx, input: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return input

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_output * ctx.scale, None


class CascadeROIHeads(StandardROIHeads):
    """The box branch of :class:`StandardROIHeads` replaced by a cascade of ``N`` stages sharing one pooler.

    Stage ``k`` pools features of its input boxes, runs ``box_heads[k]`` and ``box_predictors[k]``
    (class-agnostic box regression) and outputs refined boxes, the input of stage ``k + 1``. The first stage
    runs on the sampled proposals; in training every later stage relabels the (detached, clipped,
    non-empty) boxes of the previous stage with ``proposal_matchers[k]`` and trains on all of them (no
    further sampling). The gradient reaching the backbone through each stage's pooled features is scaled
    by ``1 / N``. Losses are ``loss_cls_stage{k}`` and ``loss_box_reg_stage{k}``. At inference the class
    scores are the mean of the stages' probabilities and the boxes those of the last stage.

    The mask and keypoint branches are those of :class:`StandardROIHeads` and train on the first stage's
    sampled proposals.
    """

    def __init__(
        self,
        *,
        box_in_features: list[str],
        box_pooler: ROIPooler,
        box_heads: Sequence[nn.Module],
        box_predictors: Sequence[nn.Module],
        proposal_matchers: Sequence[Matcher],
        **kwargs,
    ):
        """
        Args:
            box_in_features: feature names the box stages pool from.
            box_pooler: pools ``(R, C, S, S)`` box features, shared by all stages.
            box_heads: per stage, a box head (parameters ``box_head.{k}.*``).
            box_predictors: per stage, a :class:`FastRCNNOutputLayers` with ``cls_agnostic_bbox_reg=True``
                and its own ``Box2BoxTransform`` weights (parameters ``box_predictor.{k}.*``).
            proposal_matchers: per stage, the matcher labelling that stage's boxes (foreground IoU
                thresholds 0.5 / 0.6 / 0.7 in the paper); labels must be 0 (background) or 1 (foreground).
                The first one also samples the first stage's proposals.
            kwargs: other arguments of :class:`StandardROIHeads` (``num_classes``, ``batch_size_per_image``,
                ``positive_fraction``, mask / keypoint branch, ...), except ``proposal_matcher``,
                ``box_head``, ``box_predictor`` and ``train_on_pred_boxes``.
        """
        for name in ("proposal_matcher", "box_head", "box_predictor"):
            if name in kwargs:
                raise ValueError(f"CascadeROIHeads: got `{name}`; give one per stage as `{name}s` (a list) instead.")
        if kwargs.get("train_on_pred_boxes", False):
            raise ValueError(
                "CascadeROIHeads: `train_on_pred_boxes=True` is not supported; the stages already "
                "train on refined boxes."
            )
        num_stages = len(box_heads)
        if num_stages == 0:
            raise ValueError("CascadeROIHeads: `box_heads` is empty; need at least one stage.")
        if len(box_predictors) != num_stages or len(proposal_matchers) != num_stages:
            raise ValueError(
                f"CascadeROIHeads: need one box head, box predictor and proposal matcher per stage, got "
                f"{num_stages} box_heads, {len(box_predictors)} box_predictors and {len(proposal_matchers)} "
                "proposal_matchers."
            )
        for k, matcher in enumerate(proposal_matchers):
            if not set(matcher.labels) <= {0, 1}:
                raise ValueError(
                    f"CascadeROIHeads: `proposal_matchers[{k}]` has labels {matcher.labels}; cascade stages "
                    "label every box background (0) or foreground (1), ignored (-1) is not supported."
                )
        for k, predictor in enumerate(box_predictors):
            bbox_pred = getattr(predictor, "bbox_pred", None)
            transform = getattr(predictor, "box2box_transform", None)
            if isinstance(bbox_pred, nn.Linear) and transform is not None:
                if bbox_pred.out_features != len(transform.weights):
                    raise ValueError(
                        f"CascadeROIHeads: `box_predictors[{k}]` predicts class-specific boxes; the cascade "
                        "feeds one box per ROI to the next stage, so set cls_agnostic_bbox_reg=True."
                    )
        super().__init__(
            box_in_features=box_in_features,
            box_pooler=box_pooler,
            box_head=nn.ModuleList(box_heads),
            box_predictor=nn.ModuleList(box_predictors),
            proposal_matcher=proposal_matchers[0],
            **kwargs,
        )
        self.num_cascade_stages = num_stages
        self.proposal_matchers = list(proposal_matchers)

    def losses(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[Instances],
        targets: list[Instances] | None = None,
    ) -> dict[str, torch.Tensor]:
        """See :meth:`StandardROIHeads.losses`; ``targets`` are needed to label the later stages. The losses of
        stage ``k`` are named ``<loss>_stage<k>``."""
        if targets is None:
            raise ValueError("CascadeROIHeads.losses: `targets` are needed to label the boxes of the later stages.")
        losses = self._box_losses(features, proposals, targets)
        losses.update(self._branch_losses(features, proposals))
        return losses

    def _box_losses(
        self, features: dict[str, torch.Tensor], proposals: list[Instances], targets: list[Instances]
    ) -> dict[str, torch.Tensor]:
        """The losses of every stage, each on its own (relabelled) boxes. The given proposals are not modified."""
        losses = {}
        for k, (predictor, predictions, stage_proposals) in enumerate(self._run_stages(features, proposals, targets)):
            if has_event_storage():
                with get_event_storage().name_scope(f"stage{k}"):
                    stage_losses = predictor.losses(predictions, stage_proposals)
            else:
                stage_losses = predictor.losses(predictions, stage_proposals)
            losses.update({f"{name}_stage{k}": value for name, value in stage_losses.items()})
        return losses

    def _box_inference(self, features: dict[str, torch.Tensor], proposals: list[Instances]) -> list[Instances]:
        """Detections scored by the mean of the stages' class probabilities, with the last stage's boxes."""
        if torch.jit.is_scripting():
            return self._box_inference_scripted(features, proposals)
        outputs = self._run_stages(features, proposals)
        stage_scores = [predictor.predict_probs(pred, props) for predictor, pred, props in outputs]
        scores = [sum(per_image) / self.num_cascade_stages for per_image in zip(*stage_scores)]
        predictor, predictions, last_proposals = outputs[-1]
        boxes = predictor.predict_boxes(predictions, last_proposals)
        detections, _ = fast_rcnn_inference(
            boxes,
            scores,
            [p.image_size for p in proposals],
            predictor.test_score_thresh,
            predictor.test_nms_thresh,
            predictor.test_topk_per_image,
        )
        return detections

    def _box_inference_scripted(self, features: dict[str, torch.Tensor], proposals: list[Instances]) -> list[Instances]:
        """:meth:`_box_inference` in what TorchScript compiles (no modules in lists or tuples, no indexing of
        module lists by a variable): the stages run in a loop over the module lists; the same results."""
        feats = [features[f] for f in self.box_in_features]
        image_sizes = [p.image_size for p in proposals]
        boxes: list[torch.Tensor] = []
        scores_sum: list[torch.Tensor] = []
        score_thresh, nms_thresh, topk_per_image = 0.0, 0.0, 0
        for k, (head, predictor) in enumerate(zip(self.box_head, self.box_predictor)):
            if k > 0:
                proposals = self._create_proposals_from_boxes(boxes, image_sizes, drop_empty=False)
            predictions = predictor(head(self.box_pooler(feats, [p.proposal_boxes for p in proposals])))
            boxes = predictor.predict_boxes(predictions, proposals)
            probs = predictor.predict_probs(predictions, proposals)
            scores_sum = probs if k == 0 else [a + b for a, b in zip(scores_sum, probs)]
            score_thresh, nms_thresh = predictor.test_score_thresh, predictor.test_nms_thresh
            topk_per_image = predictor.test_topk_per_image
        scores = [s / self.num_cascade_stages for s in scores_sum]
        detections, _ = fast_rcnn_inference(boxes, scores, image_sizes, score_thresh, nms_thresh, topk_per_image)
        return detections

    def _run_stages(
        self, features: dict[str, torch.Tensor], proposals: list[Instances], targets: list[Instances] | None = None
    ) -> list[tuple[nn.Module, tuple[torch.Tensor, torch.Tensor], list[Instances]]]:
        """(predictor, predictions, proposals) of every stage. With ``targets`` (training), each later stage's
        boxes are labelled by its matcher, empty boxes are dropped and the box head's gradient is divided by
        the number of stages."""
        training = targets is not None
        feats = [features[f] for f in self.box_in_features]
        image_sizes = [p.image_size for p in proposals]
        outputs = []
        prev_boxes = None
        for k in range(self.num_cascade_stages):
            if k > 0:
                proposals = self._create_proposals_from_boxes(prev_boxes, image_sizes, drop_empty=training)
                if training:
                    proposals = self._match_and_label_boxes(proposals, k, targets)
            predictions = self._run_stage(feats, proposals, k, scale_gradient=training)
            prev_boxes = self.box_predictor[k].predict_boxes(predictions, proposals)
            outputs.append((self.box_predictor[k], predictions, proposals))
        return outputs

    def _run_stage(
        self, features: list[torch.Tensor], proposals: list[Instances], stage: int, scale_gradient: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool the proposals' features and run stage ``stage``'s box head and predictor."""
        box_features = self.box_pooler(features, [p.proposal_boxes for p in proposals])
        if scale_gradient:
            box_features = _ScaleGradient.apply(box_features, 1.0 / self.num_cascade_stages)
        box_features = self.box_head[stage](box_features)
        return self.box_predictor[stage](box_features)

    def _create_proposals_from_boxes(
        self, boxes: list[torch.Tensor], image_sizes: list[tuple[int, int]], drop_empty: bool
    ) -> list[Instances]:
        """Proposals from the previous stage's ``(R_i, 4)`` boxes: detached, clipped to the image and, in
        training (``drop_empty``), without empty boxes (at inference every ROI is kept so that the stages'
        scores align)."""
        proposals: list[Instances] = []
        for boxes_i, size in zip(boxes, image_sizes):
            b = Boxes(boxes_i.detach())
            b.clip(size)
            if drop_empty:
                b = b[b.nonempty()]
            p = Instances(size)
            p.proposal_boxes = b
            proposals.append(p)
        return proposals

    @torch.no_grad()
    def _match_and_label_boxes(
        self, proposals: list[Instances], stage: int, targets: list[Instances]
    ) -> list[Instances]:
        """Label every proposal of stage ``stage`` with ``proposal_matchers[stage]``: sets ``gt_classes``
        (background ``K``) and ``gt_boxes`` (the matched gt box; zeros in images without gt)."""
        num_fg, num_bg = [], []
        for p, t in zip(proposals, targets):
            quality = pairwise_iou(t.gt_boxes, p.proposal_boxes)
            matched_idxs, labels = self.proposal_matchers[stage](quality)
            if len(t) > 0:
                gt_classes = t.gt_classes[matched_idxs]
                gt_classes[labels == 0] = self.num_classes
                gt_boxes = t.gt_boxes[matched_idxs]
            else:
                gt_classes = torch.full_like(matched_idxs, self.num_classes)
                gt_boxes = Boxes(p.proposal_boxes.tensor.new_zeros((len(p), 4)))
            p.gt_classes = gt_classes
            p.gt_boxes = gt_boxes
            num_fg.append(int((labels == 1).sum()))
            num_bg.append(labels.numel() - num_fg[-1])
        if has_event_storage() and len(num_fg):
            storage = get_event_storage()
            storage.put_scalar(f"stage{stage}/roi_head/num_fg_samples", sum(num_fg) / len(num_fg))
            storage.put_scalar(f"stage{stage}/roi_head/num_bg_samples", sum(num_bg) / len(num_bg))
        return proposals

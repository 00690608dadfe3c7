"""Deployable forms of libdet's models: a tensor in, a tuple of tensors out, no Python control flow on
data — what ``torch.export``, the ONNX exporter and ``torch.jit.trace`` need.

A deployable model holds the original model (same parameters, same state dict under ``model.``) and
runs its sub-modules (backbone, heads, predictors) with the inference glue rewritten on flat tensors
(:mod:`libdet.export.ops`). Its outputs are those of the eager model's ``inference`` at the input
resolution, with ``height``/``width`` equal to the input size:

- input: ``images``, ``(N, C, H, W)`` float, 0-255 in the model's ``input_format`` (resizing, e.g.
  ``ResizeShortestEdge``, happens before, as in detectron2's export);
- detectors: ``boxes (D, 4)``, ``scores (D,)``, ``classes (D,)`` int64 and ``batch_index (D,)`` int64 over
  the ``D`` detections of all images (grouped by image, by decreasing score), then ``masks (D, H, W)`` bool
  (pasted) for mask models and ``keypoint_heatmaps (D, K, S, S)`` for keypoint models (decoded to
  keypoints by :func:`libdet.export.outputs_to_instances`, whose per-roi resize is not exportable);
- semantic segmentation: ``sem_seg (N, C, H, W)`` class scores;
- Panoptic FPN: the detector outputs and ``sem_seg``; merging them into a panoptic segmentation
  (a greedy loop over instances) is done by :func:`libdet.export.outputs_to_instances`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from libdet.modeling.meta_arch.dense_detector import DenseDetector
from libdet.modeling.meta_arch.fcos import FCOS
from libdet.modeling.meta_arch.panoptic_fpn import PanopticFPN
from libdet.modeling.meta_arch.rcnn import GeneralizedRCNN
from libdet.modeling.meta_arch.semantic_seg import SemanticSegmentor
from libdet.modeling.roi_heads.cascade_rcnn import CascadeROIHeads
from libdet.modeling.roi_heads.roi_heads import Res5ROIHeads, StandardROIHeads

from .ops import (
    batched_nms_by_group,
    clip_boxes,
    crop_to_input,
    grid_anchors,
    nonempty_boxes,
    nonzero,
    paste_masks,
    pool_rois,
    select_topk_per_image,
    to_N_HWA_K,
    topk_along_dim1,
)
from .ops import pad_images as _pad_images

__all__ = [
    "DeployableModel",
    "DeployableGeneralizedRCNN",
    "DeployableDenseDetector",
    "DeployableSemanticSegmentor",
    "DeployablePanopticFPN",
    "deployable_model",
]

DETECTION_OUTPUTS = ("boxes", "scores", "classes", "batch_index")


class DeployableModel(nn.Module):
    """Base: normalises and pads the input batch like the model's ``preprocess_image``."""

    #: Names of the tensors :meth:`forward` returns, in order.
    output_names: tuple[str, ...] = ()

    def __init__(self, model: nn.Module):
        super().__init__()
        if model.training:
            raise ValueError(f"{type(self).__name__}: the model must be in eval mode (call model.eval()).")
        self.model = model
        constraints = getattr(model.backbone, "padding_constraints", {}) or {}
        if constraints.get("square_size", 0) > 0:
            raise NotImplementedError(
                f"{type(self).__name__}: backbones with padding_constraints['square_size'] (square padding) are "
                "not supported by the exporter yet."
            )
        self.size_divisibility = int(constraints.get("size_divisibility", model.backbone.size_divisibility))

    def preprocess(self, images: Tensor) -> Tensor:
        """``(N, C, H, W)`` 0-255 images -> normalised, padded ``(N, C, H', W')``."""
        if images.dim() != 4:
            raise ValueError(f"{type(self).__name__}: `images` must be (N, C, H, W), got {tuple(images.shape)}.")
        x = (images.to(self.model.pixel_mean.dtype) - self.model.pixel_mean) / self.model.pixel_std
        return _pad_images(x, self.size_divisibility)


def _anchors(anchor_generator: nn.Module, features: list[Tensor]) -> list[Tensor]:
    """Per level ``(Hi*Wi*A, 4)`` anchors of a :class:`DefaultAnchorGenerator` for ``features``."""
    if not hasattr(anchor_generator, "cell_anchors") or getattr(anchor_generator, "box_dim", 4) != 4:
        raise NotImplementedError(
            f"export: only axis-aligned DefaultAnchorGenerator anchors are supported, got {type(anchor_generator).__name__}."
        )
    return [
        grid_anchors(f, cell, int(stride), float(anchor_generator.offset))
        for f, cell, stride in zip(features, anchor_generator.cell_anchors, anchor_generator.strides)
    ]


def _select_detections(
    boxes: Tensor,
    probs: Tensor,
    batch_index: Tensor,
    images: Tensor,
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`fast_rcnn_inference` on flat rois of several images: clip, (roi, class) pairs with score
    ``> score_thresh``, per-image-and-class NMS, the ``topk_per_image`` best of each image.

    Args:
        boxes: ``(R, K*4)`` or ``(R, 4)`` decoded boxes.
        probs: ``(R, K+1)`` class probabilities (background last).
        batch_index: ``(R,)`` image of each roi.

    Returns:
        boxes ``(D, 4)``, scores ``(D,)``, classes ``(D,)``, batch_index ``(D,)``.
    """
    # Rois with a non-finite box or score cannot become detections (the eager code drops them).
    finite = torch.isfinite(boxes).all(dim=1) & torch.isfinite(probs).all(dim=1)
    scores = torch.where(finite[:, None], probs[:, :-1], torch.zeros_like(probs[:, :-1]))
    boxes = torch.where(finite[:, None], boxes, torch.zeros_like(boxes))
    num_classes = probs.shape[1] - 1
    num_reg_classes = boxes.shape[1] // 4
    boxes = clip_boxes(boxes.reshape(-1, 4), images).view(-1, num_reg_classes, 4)
    candidates = nonzero(scores > score_thresh)  # (C, 2): (roi, class)
    rois, classes = candidates[:, 0], candidates[:, 1]
    if num_reg_classes == 1:
        boxes = boxes[rois, 0]
    else:
        boxes = boxes[rois, classes]
    scores = scores[rois, classes]
    batch_index = batch_index[rois]
    keep = batched_nms_by_group(boxes, scores, classes, num_classes, batch_index, nms_thresh)
    keep = select_topk_per_image(keep, batch_index, images, topk_per_image)
    return boxes[keep], scores[keep], classes[keep], batch_index[keep]


def _drop_empty(*detections: Tensor) -> tuple[Tensor, ...]:
    """Keep the detections whose box (the first tensor) is not empty, as :func:`detector_postprocess`."""
    keep = nonzero(nonempty_boxes(detections[0])).squeeze(1)
    return tuple(t[keep] for t in detections)


def _rois(boxes: Tensor, batch_index: Tensor) -> Tensor:
    """``(R, 5)`` pooler rois ``(batch_index, x0, y0, x1, y1)``."""
    return torch.cat([batch_index[:, None].to(boxes.dtype), boxes], dim=1)


class DeployableGeneralizedRCNN(DeployableModel):
    """:class:`GeneralizedRCNN` (with an :class:`RPN`) and :class:`StandardROIHeads` (FPN: box, mask,
    keypoint branches), :class:`Res5ROIHeads` (C4) or :class:`CascadeROIHeads`."""

    def __init__(self, model: GeneralizedRCNN):
        super().__init__(model)
        rpn, heads = model.proposal_generator, model.roi_heads
        if rpn is None:
            raise NotImplementedError("export: GeneralizedRCNN without a proposal generator is not supported.")
        if not isinstance(heads, (StandardROIHeads, Res5ROIHeads)):
            raise NotImplementedError(f"export: ROI heads {type(heads).__name__} are not supported.")
        names = list(DETECTION_OUTPUTS)
        if heads.mask_on:
            names.append("masks")
        if getattr(heads, "keypoint_on", False):
            names.append("keypoint_heatmaps")
        self.output_names = tuple(names)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        features = self.model.backbone(self.preprocess(images))
        proposals, proposal_batch = self.proposals(features, images)
        return self.detect(features, proposals, proposal_batch, images)

    def proposals(self, features: dict[str, Tensor], images: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`RPN.forward` at inference on flat tensors: ``(P, 4)`` proposal boxes of all images
        (grouped by image, by decreasing objectness) and their ``(P,)`` image index."""
        rpn = self.model.proposal_generator
        feats = [features[f] for f in rpn.in_features]
        logits, deltas = rpn.rpn_head(feats)
        anchors = _anchors(rpn.anchor_generator, feats)
        num_images = feats[0].shape[0]
        batch_ids = torch.arange(num_images, device=images.device)
        all_boxes, all_scores, all_levels = [], [], []
        for level, (logits_i, deltas_i, anchors_i) in enumerate(zip(logits, deltas, anchors)):
            logits_i = logits_i.permute(0, 2, 3, 1).flatten(1)  # (N, Hi*Wi*A)
            deltas_i = to_N_HWA_K(deltas_i, 4)  # (N, Hi*Wi*A, 4)
            scores_i, idx = topk_along_dim1(logits_i, rpn.pre_nms_topk[False])
            # Decoding only the kept anchors gives the same boxes as decoding all of them.
            boxes_i = rpn.box2box_transform.apply_deltas(
                deltas_i[batch_ids[:, None], idx].reshape(-1, 4), anchors_i[idx].reshape(-1, 4)
            ).view(num_images, -1, 4)
            all_boxes.append(boxes_i)
            all_scores.append(scores_i)
            all_levels.append(torch.full_like(idx, level))
        boxes = torch.cat(all_boxes, dim=1).reshape(-1, 4)
        scores = torch.cat(all_scores, dim=1)
        levels = torch.cat(all_levels, dim=1).reshape(-1)
        batch_index = batch_ids[:, None].expand_as(scores).reshape(-1)
        scores = scores.reshape(-1)

        valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
        boxes = clip_boxes(torch.where(valid[:, None], boxes, torch.zeros_like(boxes)), images)
        keep = nonzero(valid & nonempty_boxes(boxes, rpn.min_box_size)).squeeze(1)
        boxes, scores, levels, batch_index = boxes[keep], scores[keep], levels[keep], batch_index[keep]
        keep = batched_nms_by_group(boxes, scores, levels, len(feats), batch_index, rpn.nms_thresh)
        keep = select_topk_per_image(keep, batch_index, images, rpn.post_nms_topk[False])
        return boxes[keep], batch_index[keep]

    def detect(
        self, features: dict[str, Tensor], proposals: Tensor, proposal_batch: Tensor, images: Tensor
    ) -> tuple[Tensor, ...]:
        """The ROI heads at inference on flat proposals, then :func:`detector_postprocess` at the input size."""
        heads = self.model.roi_heads
        rois = _rois(proposals, proposal_batch)
        if isinstance(heads, CascadeROIHeads):
            boxes, probs, predictor = self._cascade_box_predictions(features, rois, images)
        else:
            if isinstance(heads, Res5ROIHeads):
                box_features = self._res5(features, rois).mean(dim=[2, 3])
                predictor = heads.box_predictor
            else:
                predictor = heads.box_predictor
                box_features = heads.box_head(
                    pool_rois(heads.box_pooler, [features[f] for f in heads.box_in_features], rois)
                )
            boxes, probs = self._decode(predictor, predictor(box_features), proposals)
        detections = _select_detections(
            boxes,
            probs,
            proposal_batch,
            images,
            predictor.test_score_thresh,
            predictor.test_nms_thresh,
            predictor.test_topk_per_image,
        )
        boxes, scores, classes, batch_index = _drop_empty(*detections)
        outputs = [boxes, scores, classes, batch_index]
        det_rois = _rois(boxes, batch_index)
        if heads.mask_on:
            outputs.append(self._masks(features, det_rois, classes, images))
        if getattr(heads, "keypoint_on", False):
            feats = [features[f] for f in heads.keypoint_in_features]
            outputs.append(heads.keypoint_head.layers(pool_rois(heads.keypoint_pooler, feats, det_rois)))
        return tuple(outputs)

    @staticmethod
    def _decode(predictor: nn.Module, predictions: tuple[Tensor, Tensor], proposals: Tensor) -> tuple[Tensor, Tensor]:
        """``(R, K*4)`` boxes and ``(R, K+1)`` probabilities of a :class:`FastRCNNOutputLayers`."""
        logits, deltas = predictions
        boxes = predictor.box2box_transform.apply_deltas(deltas, proposals)
        probs = logits.sigmoid() if predictor.use_sigmoid_ce else F.softmax(logits, dim=-1)
        return boxes, probs

    def _res5(self, features: dict[str, Tensor], rois: Tensor) -> Tensor:
        heads = self.model.roi_heads
        return heads.res5(pool_rois(heads.pooler, [features[f] for f in heads.in_features], rois))

    def _cascade_box_predictions(
        self, features: dict[str, Tensor], rois: Tensor, images: Tensor
    ) -> tuple[Tensor, Tensor, nn.Module]:
        """Run the cascade stages: last-stage boxes, probabilities averaged over the stages."""
        heads = self.model.roi_heads
        feats = [features[f] for f in heads.box_in_features]
        batch_column, boxes = rois[:, :1], rois[:, 1:]
        probs_sum = None
        for stage in range(heads.num_cascade_stages):
            if stage > 0:
                boxes = clip_boxes(boxes, images)
            pooled = pool_rois(heads.box_pooler, feats, torch.cat([batch_column, boxes], dim=1))
            predictor = heads.box_predictor[stage]
            stage_boxes, probs = self._decode(predictor, predictor(heads.box_head[stage](pooled)), boxes)
            probs_sum = probs if probs_sum is None else probs_sum + probs
            if stage + 1 < heads.num_cascade_stages:
                boxes = stage_boxes
            else:
                last_boxes = stage_boxes
        return last_boxes, probs_sum / heads.num_cascade_stages, heads.box_predictor[-1]

    def _masks(self, features: dict[str, Tensor], rois: Tensor, classes: Tensor, images: Tensor) -> Tensor:
        """Pasted ``(D, H, W)`` bool masks of the detections' predicted classes."""
        heads = self.model.roi_heads
        if isinstance(heads, Res5ROIHeads):
            logits = heads.mask_head.layers(self._res5(features, rois))
        else:
            if heads.mask_pooler is None:
                raise NotImplementedError("export: a mask head without a mask pooler is not supported.")
            feats = [features[f] for f in heads.mask_in_features]
            logits = heads.mask_head.layers(pool_rois(heads.mask_pooler, feats, rois))
        if logits.shape[1] == 1:
            probs = logits[:, 0].sigmoid()
        else:
            probs = logits[torch.arange(logits.shape[0], device=logits.device), classes].sigmoid()
        return paste_masks(probs, rois[:, 1:], images, 0.5)


class DeployableDenseDetector(DeployableModel):
    """:class:`RetinaNet` and :class:`FCOS` (one-stage detectors on :class:`DenseDetector`)."""

    output_names = DETECTION_OUTPUTS

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        model = self.model
        features = model.backbone(self.preprocess(images))
        feats = [features[f] for f in model.head_in_features]
        predictions = model.head(feats)
        anchors = _anchors(model.anchor_generator, feats)
        num_classes = model.num_classes
        num_images = feats[0].shape[0]
        batch_ids = torch.arange(num_images, device=images.device)
        all_boxes, all_scores, all_classes, all_batch = [], [], [], []
        for level in range(len(feats)):
            logits = to_N_HWA_K(predictions[0][level], num_classes)  # (N, R, K)
            deltas = to_N_HWA_K(predictions[1][level], 4)  # (N, R, 4)
            if isinstance(model, FCOS):
                ctrness = to_N_HWA_K(predictions[2][level], 1)
                scores = torch.sqrt(logits.sigmoid() * ctrness.sigmoid())
            else:
                scores = logits.sigmoid()
            scores = scores.flatten(1)  # (N, R*K)
            # Non-candidates rank below every candidate, so the top-k of all are the top-k candidates.
            masked = torch.where(scores > model.test_score_thresh, scores, torch.full_like(scores, -1.0))
            top_scores, top_idx = topk_along_dim1(masked, model.test_topk_candidates)
            kept = nonzero(top_scores > model.test_score_thresh)  # (C, 2): (image, rank)
            image_idx, rank = kept[:, 0], kept[:, 1]
            flat_idx = top_idx[image_idx, rank]
            anchor_idx = torch.div(flat_idx, num_classes, rounding_mode="floor")
            all_boxes.append(
                model.box2box_transform.apply_deltas(deltas[image_idx, anchor_idx], anchors[level][anchor_idx])
            )
            all_scores.append(top_scores[image_idx, rank])
            all_classes.append(flat_idx % num_classes)
            all_batch.append(batch_ids[image_idx])
        boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
        classes, batch_index = torch.cat(all_classes), torch.cat(all_batch)
        keep = batched_nms_by_group(boxes, scores, classes, num_classes, batch_index, model.test_nms_thresh)
        keep = select_topk_per_image(keep, batch_index, images, model.max_detections_per_image)
        boxes = clip_boxes(boxes[keep], images)
        return _drop_empty(boxes, scores[keep], classes[keep], batch_index[keep])


class DeployableSemanticSegmentor(DeployableModel):
    """:class:`SemanticSegmentor`: ``sem_seg (N, C, H, W)`` class scores at the input size."""

    output_names = ("sem_seg",)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        features = self.model.backbone(self.preprocess(images))
        return (self._sem_seg(features, images),)

    def _sem_seg(self, features: dict[str, Tensor], images: Tensor) -> Tensor:
        head = self.model.sem_seg_head
        x = F.interpolate(head.layers(features), scale_factor=head.common_stride, mode="bilinear", align_corners=False)
        # sem_seg_postprocess also resizes to the output size, which is the input size here.
        return crop_to_input(x, images)


class DeployablePanopticFPN(DeployableGeneralizedRCNN):
    """:class:`PanopticFPN`: the detector outputs and ``sem_seg (N, C, H, W)``."""

    def __init__(self, model: PanopticFPN):
        super().__init__(model)
        self.output_names = self.output_names + ("sem_seg",)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        features = self.model.backbone(self.preprocess(images))
        proposals, proposal_batch = self.proposals(features, images)
        detections = self.detect(features, proposals, proposal_batch, images)
        return detections + (DeployableSemanticSegmentor._sem_seg(self, features, images),)


def deployable_model(model: nn.Module) -> DeployableModel:
    """The deployable form of a libdet model in eval mode (see the module docstring).

    Raises:
        NotImplementedError: for a model (or a part of it) the exporter does not support, naming it.
    """
    if isinstance(model, DeployableModel):
        return model
    if isinstance(model, PanopticFPN):
        return DeployablePanopticFPN(model)
    if isinstance(model, GeneralizedRCNN):
        return DeployableGeneralizedRCNN(model)
    if isinstance(model, DenseDetector):
        return DeployableDenseDetector(model)
    if isinstance(model, SemanticSegmentor):
        return DeployableSemanticSegmentor(model)
    raise NotImplementedError(
        f"export: no deployable form of {type(model).__name__}; supported: GeneralizedRCNN (FPN, C4, cascade), "
        "RetinaNet, FCOS, SemanticSegmentor, PanopticFPN."
    )

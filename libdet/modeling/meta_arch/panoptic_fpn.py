"""Panoptic FPN (https://arxiv.org/abs/1901.02446): Mask R-CNN plus a semantic segmentation branch on the
same FPN, and the heuristic that merges both outputs into a panoptic segmentation."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from libdet.structures import Instances

from ..postprocessing import detector_postprocess, sem_seg_postprocess
from .rcnn import GeneralizedRCNN
from .semantic_seg import _padded_sem_seg_targets

__all__ = ["PanopticFPN", "combine_semantic_and_instance_outputs"]


class PanopticFPN(GeneralizedRCNN):
    """:class:`GeneralizedRCNN` with a ``sem_seg_head`` on the backbone features.

    Training inputs need ``"instances"`` and ``"sem_seg"`` (``(H, W)`` int64 stuff ids, 0 = any thing,
    ``ignore_value`` ignored). Training returns the losses of the semantic head (``loss_sem_seg``, weighted
    by the head's ``loss_weight``), the proposal generator and the ROI heads. Inference returns per image
    ``{"sem_seg": (C, H, W) scores, "instances": Instances, "panoptic_seg": (panoptic (H, W) int32,
    segments_info)}`` at the requested output size.
    """

    def __init__(
        self,
        *,
        sem_seg_head: nn.Module,
        combine_overlap_thresh: float = 0.5,
        combine_stuff_area_thresh: float = 4096,
        combine_instances_score_thresh: float = 0.5,
        **kwargs: Any,
    ):
        """
        Args:
            sem_seg_head: e.g. :class:`SemSegFPNHead`; ``(features, targets) -> (scores, losses)``.
            combine_overlap_thresh: an instance is dropped if more than this fraction of its mask is
                already covered by higher-scoring instances.
            combine_stuff_area_thresh: stuff segments smaller than this (pixels) are dropped.
            combine_instances_score_thresh: instances with a lower score are dropped.
            **kwargs: the arguments of :class:`GeneralizedRCNN` (``backbone``, ``proposal_generator``,
                ``roi_heads``, ``pixel_mean``, ``pixel_std``, ...).
        """
        super().__init__(**kwargs)
        self.sem_seg_head = sem_seg_head
        self.combine_overlap_thresh = combine_overlap_thresh
        self.combine_stuff_area_thresh = combine_stuff_area_thresh
        self.combine_instances_score_thresh = combine_instances_score_thresh

    def forward_training(self, batched_inputs: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Semantic, proposal and ROI-head losses of a batch with ``"instances"`` and ``"sem_seg"``."""
        images = self.preprocess_image(batched_inputs)
        gt_instances = self._gt_instances(batched_inputs)
        if gt_instances is None:
            raise ValueError("PanopticFPN: training needs ground truth under batched_inputs[i]['instances'].")
        gt_sem_seg = _padded_sem_seg_targets(
            "PanopticFPN", batched_inputs, self.backbone, self.sem_seg_head.ignore_value, self.device
        )
        features = self.backbone(images.tensor)
        _, losses = self.sem_seg_head(features, gt_sem_seg)
        losses = dict(losses)
        proposals, proposal_losses = self._proposals(batched_inputs, images, features, gt_instances)
        self._maybe_visualize_training(batched_inputs, proposals)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        losses.update(proposal_losses)
        losses.update(detector_losses)
        return losses

    def inference(  # type: ignore[override]
        self, batched_inputs: list[dict[str, torch.Tensor]], do_postprocess: bool = True
    ) -> list[dict[str, Any]] | tuple[list[Instances], torch.Tensor]:
        """Detect instances, segment stuff and merge them (model in eval mode).

        Args:
            batched_inputs: per image, ``"image"`` and optionally ``"height"``/``"width"`` (annotated for
                TorchScript, where the dicts hold tensors only).
            do_postprocess: rescale to the output size and merge; otherwise return the raw
                ``(instances per image, (N, C, H, W) semantic scores)`` at the padded input resolution.
                Scripted models (:func:`libdet.export.scripting_with_instances`) need ``False``, as in
                detectron2: :func:`detector_postprocess`, :func:`sem_seg_postprocess` and
                :func:`combine_semantic_and_instance_outputs` then run in Python.

        Returns:
            per image, ``{"sem_seg", "instances", "panoptic_seg"}`` (see the class docstring).
        """
        if self.training:
            raise RuntimeError("PanopticFPN.inference needs the model in eval mode (model.eval()).")
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        sem_seg_results, _ = self.sem_seg_head(features, None)
        if torch.jit.is_scripting():  # as GeneralizedRCNN.inference: proposals from the proposal generator
            if self.proposal_generator is None:
                raise NotImplementedError("scripting: PanopticFPN without a proposal generator.")
            if do_postprocess:
                raise NotImplementedError(
                    "scripted PanopticFPN: call inference(batched_inputs, do_postprocess=False), then "
                    "detector_postprocess, sem_seg_postprocess and combine_semantic_and_instance_outputs "
                    "(libdet.modeling) on each image in Python."
                )
            assert sem_seg_results is not None  # inference: the head returns the scores
            proposals, _ = self.proposal_generator(images, features, None)
            detector_results, _ = self.roi_heads(images, features, proposals, None)
            return detector_results, sem_seg_results
        proposals, _ = self._proposals(batched_inputs, images, features, None)
        detector_results, _ = self.roi_heads(images, features, proposals, None)
        if not do_postprocess:
            return detector_results, sem_seg_results

        processed = []
        for sem_seg, detections, x, size in zip(sem_seg_results, detector_results, batched_inputs, images.image_sizes):
            height = x.get("height", size[0])
            width = x.get("width", size[1])
            sem_seg_r = sem_seg_postprocess(sem_seg, size, height, width)
            detector_r = detector_postprocess(detections, height, width)
            panoptic_r = combine_semantic_and_instance_outputs(
                detector_r,
                sem_seg_r.argmax(dim=0),
                self.combine_overlap_thresh,
                self.combine_stuff_area_thresh,
                self.combine_instances_score_thresh,
            )
            processed.append({"sem_seg": sem_seg_r, "instances": detector_r, "panoptic_seg": panoptic_r})
        return processed


def combine_semantic_and_instance_outputs(
    instance_results: Instances,
    semantic_results: torch.Tensor,
    overlap_threshold: float,
    stuff_area_thresh: float,
    instances_score_thresh: float,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Merge instance and semantic predictions into one panoptic segmentation (Panoptic FPN's heuristic).

    Instances are pasted by decreasing score: an instance scoring below ``instances_score_thresh`` stops
    the pasting; an empty mask is skipped; an instance whose mask is covered by already-pasted instances
    for more than ``overlap_threshold`` of its area is skipped, otherwise only its uncovered pixels are
    pasted. Then each semantic class except 0 (0 is "thing") fills the still-empty pixels where it is
    predicted, if that area is at least ``stuff_area_thresh``.

    Args:
        instance_results: detections of one image with ``scores``, ``pred_classes`` and ``pred_masks``
            (``(N, H, W)`` bool or 0/1).
        semantic_results: ``(H, W)`` int semantic class per pixel (0 = thing).
        overlap_threshold: see above.
        stuff_area_thresh: see above.
        instances_score_thresh: see above.

    Returns:
        ``panoptic_seg``: ``(H, W)`` int32 segment id per pixel (0 = void); ``segments_info``: one dict
        per segment, ``{"id", "isthing": True, "score", "category_id", "instance_id"}`` for instances
        (``instance_id`` = index in ``instance_results``) and ``{"id", "isthing": False, "category_id",
        "area"}`` for stuff.
    """
    if semantic_results.dim() != 2:
        raise ValueError(
            f"combine_semantic_and_instance_outputs: `semantic_results` must be (H, W), got "
            f"{tuple(semantic_results.shape)}."
        )
    for field in ("scores", "pred_classes", "pred_masks"):
        if not instance_results.has(field):
            raise ValueError(f"combine_semantic_and_instance_outputs: `instance_results` has no `{field}` field.")
    panoptic_seg = torch.zeros_like(semantic_results, dtype=torch.int32)
    masks = instance_results.pred_masks
    if len(instance_results) and tuple(masks.shape[-2:]) != tuple(semantic_results.shape):
        raise ValueError(
            f"combine_semantic_and_instance_outputs: instance masks {tuple(masks.shape)} and semantic map "
            f"{tuple(semantic_results.shape)} have different sizes."
        )
    masks = masks.to(dtype=torch.bool, device=panoptic_seg.device)
    segments_info: list[dict[str, Any]] = []
    segment_id = 0

    for inst_id in torch.argsort(-instance_results.scores, stable=True).tolist():
        score = instance_results.scores[inst_id].item()
        if score < instances_score_thresh:
            break
        mask = masks[inst_id]
        mask_area = mask.sum().item()
        if mask_area == 0:
            continue
        taken = mask & (panoptic_seg > 0)
        taken_area = taken.sum().item()
        if taken_area / mask_area > overlap_threshold:
            continue
        if taken_area > 0:
            mask = mask & (panoptic_seg == 0)
        segment_id += 1
        panoptic_seg[mask] = segment_id
        segments_info.append(
            {
                "id": segment_id,
                "isthing": True,
                "score": score,
                "category_id": instance_results.pred_classes[inst_id].item(),
                "instance_id": inst_id,
            }
        )

    for label in torch.unique(semantic_results).tolist():
        if label == 0:  # the "thing" class of the semantic head
            continue
        mask = (semantic_results == label) & (panoptic_seg == 0)
        area = mask.sum().item()
        if area < stuff_area_thresh:
            continue
        segment_id += 1
        panoptic_seg[mask] = segment_id
        segments_info.append({"id": segment_id, "isthing": False, "category_id": label, "area": area})
    return panoptic_seg, segments_info

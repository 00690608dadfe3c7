"""Horizontal-flip test-time augmentation of DensePose R-CNN (detectron2's DensePose TTA, flip only)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from libdet.structures import Boxes, Instances

from ..structures import DensePoseChartPredictorOutput, DensePoseTransformData
from .converters import hflip_chart_output

__all__ = ["DensePoseHFlipTTA"]


class DensePoseHFlipTTA(nn.Module):
    """Wraps a DensePose :class:`~libdet.modeling.meta_arch.GeneralizedRCNN`: detects on the image, runs the
    DensePose branch on the detections in the image and (with mirrored boxes) in its horizontal flip, flips the
    second outputs back (:func:`hflip_chart_output`) and averages the segmentation logits and U/V of both."""

    def __init__(self, *, model: nn.Module, transform_data: DensePoseTransformData):
        """
        Args:
            model: a GeneralizedRCNN with :class:`DensePoseROIHeads`.
            transform_data: the UV symmetry tables (flipped U/V are mapped back through them).
        """
        super().__init__()
        self.model = model
        self.transform_data = transform_data

    @torch.no_grad()
    def forward(self, batched_inputs: list[dict[str, Any]]) -> list[dict[str, Instances]]:
        model = self.model
        images = model.preprocess_image(batched_inputs)
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features, None)
        instances = model.roi_heads.inference(features, proposals)
        flipped = model.preprocess_image([{**x, "image": torch.flip(x["image"], [2])} for x in batched_inputs])
        flipped_features = model.backbone(flipped.tensor)
        mirrored = []
        for inst in instances:
            width = inst.image_size[1]
            boxes = inst.pred_boxes.tensor.clone()
            boxes[:, [0, 2]] = width - inst.pred_boxes.tensor[:, [2, 0]]
            mirrored.append(Instances(inst.image_size, pred_boxes=Boxes(boxes), pred_classes=inst.pred_classes))
        mirrored = model.roi_heads.forward_with_given_boxes(flipped_features, mirrored)
        for inst, m in zip(instances, mirrored):
            back = hflip_chart_output(m.pred_densepose, self.transform_data)
            inst.pred_densepose = _average(inst.pred_densepose, back)
        return model._postprocess(instances, batched_inputs, images.image_sizes)


def _average(a: DensePoseChartPredictorOutput, b: DensePoseChartPredictorOutput) -> DensePoseChartPredictorOutput:
    out = DensePoseChartPredictorOutput(
        coarse_segm=(a.coarse_segm + b.coarse_segm) / 2,
        fine_segm=(a.fine_segm + b.fine_segm) / 2,
        u=(a.u + b.u) / 2,
        v=(a.v + b.v) / 2,
    )
    return out

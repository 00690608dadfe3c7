"""Turn the flat outputs of an exported model back into libdet's per-image results — the post-processing
steps that stay outside the exported graph (keypoint decoding, panoptic merging)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from libdet.structures import Boxes, Instances, heatmaps_to_keypoints

__all__ = ["outputs_to_instances"]


def outputs_to_instances(
    outputs: Mapping[str, torch.Tensor],
    num_images: int,
    image_size: tuple[int, int],
    panoptic: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Per-image results in the format of the eager model's inference.

    Args:
        outputs: the exported model's outputs by name (see :mod:`libdet.export.deployable`).
        num_images: ``N``, the batch size of the input.
        image_size: ``(H, W)`` of the input images.
        panoptic: for Panoptic FPN, ``{"overlap_threshold", "stuff_area_thresh", "instances_score_thresh"}``
            of :func:`combine_semantic_and_instance_outputs`; adds ``"panoptic_seg"``.

    Returns:
        per image, a dict with ``"instances"`` (:class:`Instances` with ``pred_boxes``, ``scores``,
        ``pred_classes`` and, when exported, ``pred_masks`` and ``pred_keypoints`` /
        ``pred_keypoint_heatmaps``), ``"sem_seg"`` and ``"panoptic_seg"`` as the model gives them.
    """
    results: list[dict[str, Any]] = [{} for _ in range(num_images)]
    if "boxes" in outputs:
        missing = [k for k in ("scores", "classes", "batch_index") if k not in outputs]
        if missing:
            raise ValueError(f"outputs_to_instances: detection outputs lack {missing}; got {sorted(outputs)}.")
        batch_index = outputs["batch_index"]
        keypoints = None
        if "keypoint_heatmaps" in outputs and len(outputs["boxes"]):
            # (D, K, 4): x, y, logit, score -> x, y, score, as keypoint_rcnn_inference
            keypoints = heatmaps_to_keypoints(outputs["keypoint_heatmaps"], outputs["boxes"])[:, :, [0, 1, 3]]
        for i in range(num_images):
            sel = batch_index == i
            inst = Instances(image_size)
            inst.pred_boxes = Boxes(outputs["boxes"][sel])
            inst.scores = outputs["scores"][sel]
            inst.pred_classes = outputs["classes"][sel]
            if "masks" in outputs:
                inst.pred_masks = outputs["masks"][sel]
            if "keypoint_heatmaps" in outputs:
                heatmaps = outputs["keypoint_heatmaps"][sel]
                inst.pred_keypoints = (
                    keypoints[sel] if keypoints is not None else heatmaps.new_zeros((0, heatmaps.shape[1], 3))
                )
                inst.pred_keypoint_heatmaps = heatmaps
            results[i]["instances"] = inst
    if "sem_seg" in outputs:
        for i in range(num_images):
            results[i]["sem_seg"] = outputs["sem_seg"][i]
    if panoptic is not None:
        from libdet.modeling.meta_arch.panoptic_fpn import combine_semantic_and_instance_outputs

        for r in results:
            r["panoptic_seg"] = combine_semantic_and_instance_outputs(
                r["instances"],
                r["sem_seg"].argmax(dim=0),
                panoptic["overlap_threshold"],
                panoptic["stuff_area_thresh"],
                panoptic["instances_score_thresh"],
            )
    return results

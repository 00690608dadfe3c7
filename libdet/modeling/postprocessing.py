"""Map raw model outputs, computed on the resized network input, back to the original image size."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from libdet.structures import Instances, ROIMasks

__all__ = ["detector_postprocess", "sem_seg_postprocess"]


def detector_postprocess(
    results: Instances,
    output_height: int | torch.Tensor,
    output_width: int | torch.Tensor,
    mask_threshold: float = 0.5,
) -> Instances:
    """Rescale detections from the network input size to the requested output size.

    Boxes (``pred_boxes``, or ``proposal_boxes`` for proposal-only models) are scaled, clipped to the
    output image and empty boxes are dropped (with all their fields). ``pred_masks`` (per-box masks of
    shape (N, 1, M, M) or ``ROIMasks``) are pasted into full-image bool masks (N, H, W), and
    ``pred_keypoints`` (N, K, 3) have their x, y scaled. The input is not modified.

    Args:
        results: detections of one image; ``results.image_size`` is the size the network saw.
        output_height: height of the output (usually the original image height).
        output_width: width of the output.
        mask_threshold: threshold of the pasted mask probabilities.

    Returns:
        new ``Instances`` with ``image_size == (output_height, output_width)``.

    Raises:
        ValueError: if ``results`` has neither ``pred_boxes`` nor ``proposal_boxes``.
    """
    if isinstance(output_width, torch.Tensor):
        # Sizes are tensors when tracing; keep them dynamic.
        output_width_tmp = output_width.float()
        output_height_tmp = output_height.float()
        new_size = torch.stack([output_height, output_width])
    else:
        new_size = (output_height, output_width)
        output_width_tmp = output_width
        output_height_tmp = output_height

    scale_x = output_width_tmp / results.image_size[1]
    scale_y = output_height_tmp / results.image_size[0]
    results = Instances(new_size, **results.get_fields())

    if results.has("pred_boxes"):
        box_field = "pred_boxes"
    elif results.has("proposal_boxes"):
        box_field = "proposal_boxes"
    else:
        raise ValueError(
            "detector_postprocess: `results` must have a `pred_boxes` or `proposal_boxes` field, got "
            f"fields {list(results.get_fields())}."
        )
    output_boxes = results.get(box_field).clone()  # do not modify the caller's boxes
    output_boxes.scale(scale_x, scale_y)
    output_boxes.clip(results.image_size)
    results.set(box_field, output_boxes)
    results = results[output_boxes.nonempty()]

    if results.has("pred_masks"):
        if isinstance(results.pred_masks, ROIMasks):
            roi_masks = results.pred_masks
        else:
            # (N, 1, M, M) mask probabilities
            roi_masks = ROIMasks(results.pred_masks[:, 0, :, :])
        results.pred_masks = roi_masks.to_bitmasks(
            results.get(box_field), output_height, output_width, mask_threshold
        ).tensor

    if results.has("pred_keypoints"):
        keypoints = results.pred_keypoints.clone()
        keypoints[:, :, 0] *= scale_x
        keypoints[:, :, 1] *= scale_y
        results.pred_keypoints = keypoints
    return results


def sem_seg_postprocess(
    result: torch.Tensor, img_size: tuple[int, int], output_height: int, output_width: int
) -> torch.Tensor:
    """Crop a semantic-segmentation output to the valid (unpadded) image and resize it.

    Args:
        result: Tensor[C, H, W] class scores of the padded network input.
        img_size: (height, width) of the image before padding (the valid region of ``result``).
        output_height: height of the output.
        output_width: width of the output.

    Returns:
        Tensor[C, output_height, output_width], bilinearly resized (``align_corners=False``).
    """
    if result.dim() != 3:
        # list(), not tuple(): TorchScript compiles this function too (scripted SemanticSegmentor).
        raise ValueError(f"sem_seg_postprocess: `result` must have shape (C, H, W), got {list(result.shape)}.")
    result = result[:, : img_size[0], : img_size[1]].expand(1, -1, -1, -1)
    return F.interpolate(result, size=(output_height, output_width), mode="bilinear", align_corners=False)[0]

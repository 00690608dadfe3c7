"""Keypoint heads of Keypoint R-CNN: per-ROI keypoint heatmap logits, their loss against the discretised
gt keypoints, and the inference that decodes heatmaps into keypoint coordinates and scores."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from libdet.layers import Conv2d, ConvTranspose2d, ShapeSpec, cat
from libdet.structures import Instances, heatmaps_to_keypoints
from libdet.utils.events import get_event_storage, has_event_storage

from ..registries import ROI_KEYPOINT_HEAD_REGISTRY  # noqa: F401 (detectron2 path; YAML names)

__all__ = [
    "BaseKeypointRCNNHead",
    "KRCNNConvDeconvUpsampleHead",
    "keypoint_rcnn_loss",
    "keypoint_rcnn_inference",
]


def keypoint_rcnn_loss(
    pred_keypoint_logits: torch.Tensor, instances: list[Instances], normalizer: float | None
) -> torch.Tensor:
    """Softmax cross-entropy over the ``S * S`` heatmap positions of every visible gt keypoint.

    Each keypoint's target is the heatmap bin it falls in when a ``S x S`` grid is laid over its ROI
    (:meth:`Keypoints.to_heatmap`); keypoints that are not labeled visible (``v = 0``) or that lie
    outside the ROI do not count.

    Args:
        pred_keypoint_logits: ``(R, K, S, S)`` heatmap logits of the ``R`` foreground ROIs.
        instances: per image, the ``R_i`` ROIs (``sum R_i = R``, same order) with ``proposal_boxes`` and
            ``gt_keypoints`` (:class:`Keypoints`).
        normalizer: the summed loss is divided by it; ``None`` divides by the number of valid keypoints.

    Returns:
        Scalar loss; a graph-connected 0 when no keypoint is valid.
    """
    if pred_keypoint_logits.dim() != 4 or pred_keypoint_logits.size(2) != pred_keypoint_logits.size(3):
        raise ValueError(
            f"keypoint_rcnn_loss: `pred_keypoint_logits` must be (R, K, S, S) with square heatmaps, got "
            f"{tuple(pred_keypoint_logits.shape)}."
        )
    num_rois = sum(len(inst) for inst in instances)
    if num_rois != pred_keypoint_logits.size(0):
        raise ValueError(
            f"keypoint_rcnn_loss: {pred_keypoint_logits.size(0)} heatmaps for {num_rois} ROIs in `instances`."
        )
    side = pred_keypoint_logits.size(2)
    targets, valid = [], []
    for i, inst in enumerate(instances):
        if len(inst) == 0:
            continue
        if not inst.has("gt_keypoints"):
            raise ValueError(f"keypoint_rcnn_loss: the ROIs of image {i} have no `gt_keypoints`.")
        heatmaps, valid_i = inst.gt_keypoints.to_heatmap(inst.proposal_boxes.tensor, side)
        targets.append(heatmaps.reshape(-1))
        valid.append(valid_i.reshape(-1))
    valid_idx = torch.nonzero(cat(valid, dim=0)).squeeze(1) if len(valid) else None
    if valid_idx is None or valid_idx.numel() == 0:
        if has_event_storage():
            get_event_storage().put_scalar("keypoint_head/num_valid_keypoints", 0.0)
        return pred_keypoint_logits.sum() * 0
    n, k, h, w = pred_keypoint_logits.shape
    logits = pred_keypoint_logits.reshape(n * k, h * w)[valid_idx]
    target = cat(targets, dim=0).to(device=logits.device)[valid_idx.to(logits.device)]
    loss = F.cross_entropy(logits, target, reduction="sum")
    if has_event_storage():
        get_event_storage().put_scalar("keypoint_head/num_valid_keypoints", float(valid_idx.numel()))
    if normalizer is None:
        normalizer = valid_idx.numel()
    return loss / normalizer


def keypoint_rcnn_inference(pred_keypoint_logits: torch.Tensor, pred_instances: list[Instances]) -> None:
    """Decode heatmaps into keypoints and set them on each image's detections, in place.

    Sets ``pred_keypoints`` (``(D_i, K, 3)``: x, y in image coordinates and the keypoint score, see
    :func:`heatmaps_to_keypoints`) and ``pred_keypoint_heatmaps`` (``(D_i, K, S, S)`` logits).

    Args:
        pred_keypoint_logits: ``(D, K, S, S)`` for the ``D = sum D_i`` detections, in order.
        pred_instances: per image, detections with ``pred_boxes``.
    """
    num = sum(len(inst) for inst in pred_instances)
    if num != pred_keypoint_logits.size(0):
        raise ValueError(f"keypoint_rcnn_inference: {pred_keypoint_logits.size(0)} heatmaps for {num} detections.")
    boxes = cat([inst.pred_boxes.tensor for inst in pred_instances], dim=0)
    logits = pred_keypoint_logits.detach()
    decoded = heatmaps_to_keypoints(logits, boxes.detach())  # (D, K, 4): x, y, logit, score
    keypoints = decoded[:, :, [0, 1, 3]]
    sizes = [len(inst) for inst in pred_instances]
    for kp, heatmap, inst in zip(keypoints.split(sizes, dim=0), logits.split(sizes, dim=0), pred_instances):
        inst.pred_keypoints = kp
        inst.pred_keypoint_heatmaps = heatmap


class BaseKeypointRCNNHead(nn.Module):
    """Base of keypoint heads: subclasses implement :meth:`layers` (features -> heatmap logits); this class
    turns them into ``loss_keypoint`` in training and ``pred_keypoints`` at inference."""

    def __init__(self, *, num_keypoints: int, loss_weight: float = 1.0, loss_normalizer: float | str = 1.0):
        """
        Args:
            num_keypoints: keypoints per instance ``K`` (17 for COCO persons).
            loss_weight: multiplier of ``loss_keypoint``.
            loss_normalizer: ``"visible"`` divides the summed loss by the number of visible keypoints in
                the batch; a number ``n`` divides it by ``n * number of images`` (detectron2 uses the
                expected number of visible keypoints per image for it).
        """
        super().__init__()
        if not isinstance(num_keypoints, int) or num_keypoints < 1:
            raise ValueError(f"{type(self).__name__}: `num_keypoints` must be a positive int, got {num_keypoints!r}.")
        if isinstance(loss_normalizer, str):
            if loss_normalizer != "visible":
                raise ValueError(
                    f"{type(self).__name__}: `loss_normalizer` must be 'visible' or a positive number, got "
                    f"{loss_normalizer!r}."
                )
        elif not loss_normalizer > 0:
            raise ValueError(f"{type(self).__name__}: `loss_normalizer` must be positive, got {loss_normalizer}.")
        self.num_keypoints = num_keypoints
        self.loss_weight = loss_weight
        self.loss_normalizer = loss_normalizer

    def forward(
        self, x: torch.Tensor | dict[str, torch.Tensor], instances: list[Instances]
    ) -> dict[str, torch.Tensor] | list[Instances]:
        """detectron2's entry point: :meth:`losses` in training, :meth:`inference` otherwise.

        Args:
            x: per-ROI features (usually ``(R, C, H, W)``).
            instances: in training, the foreground ROIs with ``gt_keypoints``; at inference, the detections
                (with ``pred_boxes``).

        Returns:
            ``{"loss_keypoint": loss}`` in training; at inference ``instances`` with ``pred_keypoints`` and
            ``pred_keypoint_heatmaps`` set.
        """
        if self.training:
            return self.losses(x, instances)
        return self.inference(x, instances)

    def losses(self, x: torch.Tensor | dict[str, torch.Tensor], instances: list[Instances]) -> dict[str, torch.Tensor]:
        """``{"loss_keypoint": loss}`` of the foreground ROIs ``instances`` (with ``gt_keypoints``)."""
        normalizer = None if self.loss_normalizer == "visible" else len(instances) * self.loss_normalizer
        return {
            "loss_keypoint": keypoint_rcnn_loss(self.layers(x), instances, normalizer=normalizer) * self.loss_weight
        }

    def inference(self, x: torch.Tensor | dict[str, torch.Tensor], instances: list[Instances]) -> list[Instances]:
        """The detections ``instances`` (with ``pred_boxes``), with ``pred_keypoints`` and
        ``pred_keypoint_heatmaps`` set in place."""
        if torch.jit.is_scripting():  # TorchScript compiles `layers` of a tensor (the libdet heads' input)
            if not isinstance(x, torch.Tensor):
                raise TypeError("scripted keypoint heads take a tensor of per-ROI features.")
            keypoint_rcnn_inference(self.layers(x), instances)
            return instances
        keypoint_rcnn_inference(self.layers(x), instances)
        return instances

    def layers(self, x: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """Map per-ROI features to ``(R, K, S, S)`` heatmap logits."""
        raise NotImplementedError(f"{type(self).__name__} must implement `layers`.")


class KRCNNConvDeconvUpsampleHead(BaseKeypointRCNNHead, nn.Sequential):
    """Keypoint R-CNN's head: 3x3 convs with ReLU (``conv_fcn1``...), a 4x4 stride-2 transposed conv
    (``score_lowres``) giving one heatmap per keypoint, then a x2 bilinear up-scaling: ``(R, C, H, W)`` ->
    ``(R, K, 4H, 4W)``."""

    def __init__(self, input_shape: ShapeSpec, *, num_keypoints: int, conv_dims: Sequence[int], **kwargs):
        """
        Args:
            input_shape: shape of the per-ROI features (only ``channels`` is used).
            num_keypoints: keypoints per instance ``K``.
            conv_dims: output channels of the ``conv_fcn`` convs (may be empty).
            kwargs: ``loss_weight``, ``loss_normalizer`` of :class:`BaseKeypointRCNNHead`.
        """
        super().__init__(num_keypoints=num_keypoints, **kwargs)
        if input_shape.channels is None:
            raise ValueError("KRCNNConvDeconvUpsampleHead: `input_shape.channels` is required.")
        self.up_scale = 2.0
        channels = input_shape.channels
        for k, dim in enumerate(conv_dims, start=1):
            self.add_module(f"conv_fcn{k}", Conv2d(channels, dim, kernel_size=3, stride=1, padding=1))
            self.add_module(f"conv_fcn_relu{k}", nn.ReLU())
            channels = dim
        kernel = 4
        self.score_lowres = ConvTranspose2d(channels, num_keypoints, kernel, stride=2, padding=kernel // 2 - 1)
        for name, param in self.named_parameters():
            if name.endswith("bias"):
                nn.init.constant_(param, 0)
            else:
                nn.init.kaiming_normal_(param, mode="fan_out", nonlinearity="relu")

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        """``(R, C, H, W)`` -> ``(R, K, 4H, 4W)`` heatmap logits."""
        for layer in self:
            x = layer(x)
        return F.interpolate(x, scale_factor=self.up_scale, mode="bilinear", align_corners=False)

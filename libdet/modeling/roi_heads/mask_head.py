"""Mask heads of Mask R-CNN: per-ROI mask logits, their loss against the cropped gt masks, and the
inference that attaches mask probabilities to detections."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from libdet.layers import Conv2d, ConvTranspose2d, ShapeSpec, cat, get_norm, move_device_like
from libdet.structures import Instances
from libdet.utils.events import get_event_storage, has_event_storage
from libdet.utils.fvcore_nn import c2_msra_fill

from ..registries import ROI_MASK_HEAD_REGISTRY  # noqa: F401 (detectron2 path; YAML names)

__all__ = ["BaseMaskRCNNHead", "MaskRCNNConvUpsampleHead", "mask_rcnn_loss", "mask_rcnn_inference"]


def mask_rcnn_loss(pred_mask_logits: torch.Tensor, instances: list[Instances], vis_period: int = 0) -> torch.Tensor:
    """Mean per-pixel binary cross-entropy between each foreground ROI's predicted mask (of its gt class,
    or the single class-agnostic mask) and its gt mask cropped to the ROI and resized to ``M x M``
    (``gt_masks.crop_and_resize``; works for :class:`BitMasks` and :class:`PolygonMasks`).

    Args:
        pred_mask_logits: ``(R, C, M, M)``; ``C`` = number of classes, or 1 for class-agnostic masks.
        instances: per image, the ``R_i`` foreground proposals (``sum R_i = R``) with
            ``proposal_boxes``, ``gt_classes`` and ``gt_masks``.
        vis_period: every ``vis_period`` iterations of the active event storage, put one image per
            foreground ROI into it, ``"Left: mask prediction;   Right: mask GT (i)"`` (``(3, M, 2M)`` in
            ``[0, 1]``); 0 disables it.

    Returns:
        Scalar loss; a graph-connected 0 when there is no foreground ROI.
    """
    if pred_mask_logits.dim() != 4 or pred_mask_logits.size(2) != pred_mask_logits.size(3):
        raise ValueError(
            f"mask_rcnn_loss: `pred_mask_logits` must be (R, C, M, M) with square masks, got "
            f"{tuple(pred_mask_logits.shape)}."
        )
    agnostic = pred_mask_logits.size(1) == 1
    side = pred_mask_logits.size(2)
    gt_classes, gt_masks = [], []
    for i, inst in enumerate(instances):
        if len(inst) == 0:
            continue
        if not inst.has("gt_masks"):
            raise ValueError(f"mask_rcnn_loss: the foreground proposals of image {i} have no `gt_masks`.")
        if not agnostic:
            gt_classes.append(inst.gt_classes.to(dtype=torch.int64))
        masks = inst.gt_masks.crop_and_resize(inst.proposal_boxes.tensor, side)
        gt_masks.append(masks.to(device=pred_mask_logits.device))
    if len(gt_masks) == 0:
        return pred_mask_logits.sum() * 0
    targets = cat(gt_masks, dim=0)
    if agnostic:
        logits = pred_mask_logits[:, 0]
    else:
        idx = torch.arange(pred_mask_logits.size(0), device=pred_mask_logits.device)
        logits = pred_mask_logits[idx, cat(gt_classes, dim=0)]
    if targets.dtype != torch.bool:
        targets = targets > 0.5
    if has_event_storage():  # training statistics (threshold 0.5), when run under a trainer
        # tensors: the storage reads them when metrics are written, not now (no device synchronisation)
        predicted = logits.detach() > 0.0
        num_pos = targets.sum().clamp(min=1)
        num_neg = (targets.numel() - targets.sum()).clamp(min=1)
        storage = get_event_storage()
        storage.put_scalar("mask_rcnn/accuracy", (predicted == targets).float().mean())
        storage.put_scalar("mask_rcnn/false_positive", (predicted & ~targets).sum() / num_neg)
        storage.put_scalar("mask_rcnn/false_negative", (~predicted & targets).sum() / num_pos)
        if vis_period > 0 and storage.iter % vis_period == 0:
            side_by_side = torch.cat([logits.detach().sigmoid(), targets.to(logits.dtype)], dim=2).cpu()
            for i, vis_mask in enumerate(side_by_side):
                storage.put_image(f"Left: mask prediction;   Right: mask GT ({i})", vis_mask.expand(3, -1, -1))
    return F.binary_cross_entropy_with_logits(logits, targets.to(dtype=logits.dtype), reduction="mean")


def mask_rcnn_inference(pred_mask_logits: torch.Tensor, pred_instances: list[Instances]) -> None:
    """Set ``pred_masks`` (``(D_i, 1, M, M)`` probabilities of the predicted class) on each image's
    detections, in place.

    Args:
        pred_mask_logits: ``(D, C, M, M)`` for the ``D = sum D_i`` detections, in order; ``C`` is the
            number of classes or 1 (class-agnostic).
        pred_instances: per image, detections with ``pred_classes``.
    """
    if pred_mask_logits.size(1) == 1:
        probs = pred_mask_logits.sigmoid()
    else:
        classes = cat([i.pred_classes for i in pred_instances])
        device = torch.device("cpu") if torch.jit.is_tracing() else classes.device
        idx = move_device_like(torch.arange(pred_mask_logits.shape[0], device=device), classes)
        probs = pred_mask_logits[idx, classes][:, None].sigmoid()
    for prob, inst in zip(probs.split([len(i) for i in pred_instances], dim=0), pred_instances):
        inst.pred_masks = prob


class BaseMaskRCNNHead(nn.Module):
    """Base of mask heads: subclasses implement :meth:`layers` (features -> mask logits); this class
    turns them into ``loss_mask`` in training and ``pred_masks`` at inference."""

    def __init__(self, *, loss_weight: float = 1.0, vis_period: int = 0):
        """
        Args:
            loss_weight: multiplier of ``loss_mask``.
            vis_period: every ``vis_period`` training iterations, put the predicted and gt masks of the
                foreground ROIs into the event storage (see :func:`mask_rcnn_loss`); 0 disables it.
        """
        super().__init__()
        if not isinstance(vis_period, int) or isinstance(vis_period, bool) or vis_period < 0:
            raise ValueError(f"BaseMaskRCNNHead: `vis_period` must be an int >= 0 (0 disables it), got {vis_period!r}.")
        self.loss_weight = loss_weight
        self.vis_period = vis_period

    def forward(
        self, x: torch.Tensor | dict[str, torch.Tensor], instances: list[Instances]
    ) -> dict[str, torch.Tensor] | list[Instances]:
        """detectron2's entry point: :meth:`losses` in training, :meth:`inference` otherwise.

        Args:
            x: per-ROI features (usually ``(R, C, H, W)``).
            instances: in training, the foreground proposals with ground truth; at inference, the
                detections (with ``pred_classes``).

        Returns:
            ``{"loss_mask": loss}`` in training; at inference, ``instances`` with ``pred_masks`` set.
        """
        if self.training:
            return self.losses(x, instances)
        return self.inference(x, instances)

    def losses(self, x: torch.Tensor | dict[str, torch.Tensor], instances: list[Instances]) -> dict[str, torch.Tensor]:
        """``{"loss_mask": loss}`` of the foreground proposals ``instances`` (with ``gt_classes``, ``gt_masks``)."""
        return {"loss_mask": mask_rcnn_loss(self.layers(x), instances, self.vis_period) * self.loss_weight}

    def inference(self, x: torch.Tensor | dict[str, torch.Tensor], instances: list[Instances]) -> list[Instances]:
        """The detections ``instances`` (with ``pred_classes``), with ``pred_masks`` set in place."""
        if torch.jit.is_scripting():  # TorchScript compiles `layers` of a tensor (the libdet heads' input)
            if not isinstance(x, torch.Tensor):
                raise TypeError("scripted mask heads take a tensor of per-ROI features.")
            mask_rcnn_inference(self.layers(x), instances)
            return instances
        mask_rcnn_inference(self.layers(x), instances)
        return instances

    def layers(self, x: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """Map per-ROI features to ``(R, C, M, M)`` mask logits."""
        raise NotImplementedError(f"{type(self).__name__} must implement `layers`.")


class MaskRCNNConvUpsampleHead(BaseMaskRCNNHead, nn.Sequential):
    """Mask R-CNN's mask head: 3x3 convs with ReLU (``mask_fcn1``...), a 2x2 stride-2 transposed conv
    with ReLU (``deconv``) and a 1x1 conv (``predictor``) giving one mask logit map per class."""

    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        num_classes: int,
        conv_dims: Sequence[int],
        conv_norm: str = "",
        **kwargs,
    ):
        """
        Args:
            input_shape: shape of the per-ROI features (only ``channels`` is used).
            num_classes: masks predicted per ROI (number of classes, or 1 for class-agnostic masks).
            conv_dims: channels of the ``mask_fcn`` convs, then of the deconv (last entry).
            conv_norm: normalisation of the ``mask_fcn`` convs; ``""`` for none.
            kwargs: ``loss_weight``, ``vis_period`` of :class:`BaseMaskRCNNHead`.
        """
        super().__init__(**kwargs)
        if len(conv_dims) < 1:
            raise ValueError("MaskRCNNConvUpsampleHead: `conv_dims` needs at least one entry (the deconv's channels).")
        convs = []
        cur = input_shape.channels
        for k, dim in enumerate(conv_dims[:-1]):
            conv = Conv2d(
                cur,
                dim,
                kernel_size=3,
                stride=1,
                padding=1,
                bias=not conv_norm,
                norm=get_norm(conv_norm, dim),
                activation=nn.ReLU(),
            )
            self.add_module(f"mask_fcn{k + 1}", conv)
            convs.append(conv)
            cur = dim
        self.deconv = ConvTranspose2d(cur, conv_dims[-1], kernel_size=2, stride=2, padding=0)
        self.add_module("deconv_relu", nn.ReLU())
        self.predictor = Conv2d(conv_dims[-1], num_classes, kernel_size=1, stride=1, padding=0)
        for layer in convs + [self.deconv]:
            c2_msra_fill(layer)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        """``(R, C, H, W)`` -> ``(R, num_classes, 2H, 2W)`` mask logits."""
        for layer in self:
            x = layer(x)
        return x

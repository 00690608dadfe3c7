"""DETR's set prediction loss: Hungarian matching, then classification and box losses on the matched pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from libdet.utils import comm

from .box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from .matcher import HungarianMatcher

__all__ = ["SetCriterion"]


class SetCriterion(nn.Module):
    """Loss of one set of predictions per decoder layer (the last, plus the auxiliary earlier ones).

    For each decoder output, predictions are matched one-to-one to the targets; matched predictions learn their
    target's class, box (L1 on normalised cx, cy, w, h) and GIoU, unmatched ones learn "no object" with a
    down-weighted cross-entropy. Box losses are summed and divided by the number of target boxes in the whole
    (multi-process) batch, so every box weighs the same whatever the image or rank it lies on.

    Args:
        num_classes: object classes K (the logits have K + 1 entries; the last is "no object").
        matcher: the matcher.
        eos_coef: weight of the "no object" class in the cross-entropy (0.1).
        loss_ce, loss_bbox, loss_giou: loss weights (1, 5, 2).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        matcher: HungarianMatcher,
        eos_coef: float = 0.1,
        loss_ce: float = 1.0,
        loss_bbox: float = 5.0,
        loss_giou: float = 2.0,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weights = {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        # not persistent: derived from eos_coef, and checkpoints of the official release do not carry it
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    def num_boxes(self, targets: list[dict[str, torch.Tensor]], device: torch.device) -> torch.Tensor:
        """Average over processes of the number of target boxes in the batch (at least 1)."""
        num = torch.tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(num)
        return (num / comm.get_world_size()).clamp(min=1.0)[0]

    def single_layer_losses(
        self, pred_logits: torch.Tensor, pred_boxes: torch.Tensor, targets: list[dict], num_boxes: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Weighted ``loss_ce``, ``loss_bbox``, ``loss_giou`` of one decoder layer's (N, Q, K+1) logits and (N, Q, 4)
        boxes."""
        if pred_logits.shape[-1] != self.num_classes + 1:
            raise ValueError(
                f"SetCriterion: logits have {pred_logits.shape[-1]} classes, expected num_classes + 1 = "
                f"{self.num_classes + 1}."
            )
        matches = self.matcher(pred_logits, pred_boxes, targets)
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(matches)]).to(pred_logits.device)
        src_idx = torch.cat([src for src, _ in matches]).to(pred_logits.device)

        target_classes = torch.full(
            pred_logits.shape[:2], self.num_classes, dtype=torch.int64, device=pred_logits.device
        )
        target_classes[batch_idx, src_idx] = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, matches)])
        loss_ce = F.cross_entropy(pred_logits.float().transpose(1, 2), target_classes, self.empty_weight)

        src_boxes = pred_boxes[batch_idx, src_idx].float()
        tgt_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, matches)]).float()
        loss_bbox = F.l1_loss(src_boxes, tgt_boxes, reduction="none").sum() / num_boxes
        giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(tgt_boxes)))
        loss_giou = (1 - giou).sum() / num_boxes
        losses = {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}
        return {k: v * self.weights[k] for k, v in losses.items()}

    def forward(
        self, pred_logits: torch.Tensor, pred_boxes: torch.Tensor, targets: list[dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            pred_logits: (L, N, Q, K + 1) logits of every decoder layer (the last is the model's output).
            pred_boxes: (L, N, Q, 4) normalised cx, cy, w, h of every decoder layer.
            targets: N dicts with "labels" (T_i,) int64 and "boxes" (T_i, 4) normalised cx, cy, w, h.

        Returns:
            ``loss_ce``, ``loss_bbox``, ``loss_giou`` of the last layer and ``loss_ce_<i>`` ... of the earlier
            layers ``i = 0 .. L-2`` (the auxiliary losses), all weighted.
        """
        num_boxes = self.num_boxes(targets, pred_logits.device)
        losses = self.single_layer_losses(pred_logits[-1], pred_boxes[-1], targets, num_boxes)
        for i in range(pred_logits.shape[0] - 1):
            aux = self.single_layer_losses(pred_logits[i], pred_boxes[i], targets, num_boxes)
            losses.update({f"{k}_{i}": v for k, v in aux.items()})
        return losses

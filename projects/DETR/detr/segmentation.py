"""DETR for panoptic segmentation: a mask head on top of a (trained, usually frozen) DETR.

Each object query's cross-attention logits over the encoder memory (one map per head), concatenated with the
projected backbone feature, are decoded into a mask at 1/4 resolution by a small FPN-style conv head that fuses
res4, res3 and res2. Panoptic post-processing assigns every pixel to the confident query with the highest mask
logit (stuff queries of one class merged).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from libdet.layers.losses import sigmoid_focal_loss
from libdet.structures import ImageList

from .detr import DETR

__all__ = ["DETRSegm", "MHAttentionMap", "MaskHeadSmallConv", "dice_loss", "panoptic_inference"]


class MHAttentionMap(nn.Module):
    """Multi-head attention probabilities (no values) of the object queries over the encoder memory.

    Args:
        query_dim: width of the queries (decoder output).
        hidden_dim: width of the projected queries / keys, split into ``num_heads``.
        num_heads: attention heads.
        dropout: dropout on the probabilities.
    """

    def __init__(self, *, query_dim: int, hidden_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.dropout = nn.Dropout(dropout)
        self.q_linear = nn.Linear(query_dim, hidden_dim)
        self.k_linear = nn.Linear(query_dim, hidden_dim)
        nn.init.zeros_(self.k_linear.bias)
        nn.init.zeros_(self.q_linear.bias)
        nn.init.xavier_uniform_(self.k_linear.weight)
        nn.init.xavier_uniform_(self.q_linear.weight)
        self.normalize_fact = float(hidden_dim / num_heads) ** -0.5

    def forward(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            q: (N, Q, query_dim) queries.
            k: (N, query_dim, h, w) encoder memory.
            mask: (N, h, w) bool, True at padded cells.

        Returns:
            (N, Q, num_heads, h, w) probabilities; softmax taken jointly over heads and positions (as the official
            model, whose weights this must reproduce).
        """
        q = self.q_linear(q)
        k = F.conv2d(k, self.k_linear.weight[:, :, None, None], self.k_linear.bias)
        n, nq = q.shape[:2]
        head_dim = self.hidden_dim // self.num_heads
        qh = q.view(n, nq, self.num_heads, head_dim)
        kh = k.view(n, self.num_heads, head_dim, k.shape[-2], k.shape[-1])
        weights = torch.einsum("bqnc,bnchw->bqnhw", qh * self.normalize_fact, kh)
        if mask is not None:
            weights = weights.masked_fill(mask[:, None, None], float("-inf"))
        weights = F.softmax(weights.flatten(2), dim=-1).view(weights.shape)
        return self.dropout(weights)


def _expand(x: torch.Tensor, num_queries: int) -> torch.Tensor:
    """(N, C, h, w) -> (N * num_queries, C, h, w), each image repeated for its queries."""
    return x.unsqueeze(1).expand(-1, num_queries, -1, -1, -1).flatten(0, 1)


class MaskHeadSmallConv(nn.Module):
    """Conv head decoding per-query masks, upsampling 2x three times with FPN-style lateral backbone features.

    Args:
        dim: input channels (d_model + attention heads).
        fpn_dims: channels of the three lateral features, coarse to fine (res4, res3, res2).
        context_dim: d_model; the widths decrease as context_dim / 2, / 4, / 8, / 16.
    """

    def __init__(self, *, dim: int, fpn_dims: list[int], context_dim: int):
        super().__init__()
        inter = [dim, context_dim // 2, context_dim // 4, context_dim // 8, context_dim // 16]
        if len(fpn_dims) != 3:
            raise ValueError(f"MaskHeadSmallConv: fpn_dims must list 3 widths (res4, res3, res2), got {fpn_dims}.")
        if any(c % 8 for c in inter) or min(inter) < 8:
            raise ValueError(
                f"MaskHeadSmallConv: the widths {inter} (dim, context_dim / 2 ... / 16) must be multiples of 8 "
                "(GroupNorm with 8 groups)."
            )
        self.lay1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.gn1 = nn.GroupNorm(8, dim)
        self.lay2 = nn.Conv2d(dim, inter[1], 3, padding=1)
        self.gn2 = nn.GroupNorm(8, inter[1])
        self.lay3 = nn.Conv2d(inter[1], inter[2], 3, padding=1)
        self.gn3 = nn.GroupNorm(8, inter[2])
        self.lay4 = nn.Conv2d(inter[2], inter[3], 3, padding=1)
        self.gn4 = nn.GroupNorm(8, inter[3])
        self.lay5 = nn.Conv2d(inter[3], inter[4], 3, padding=1)
        self.gn5 = nn.GroupNorm(8, inter[4])
        self.out_lay = nn.Conv2d(inter[4], 1, 3, padding=1)
        self.adapter1 = nn.Conv2d(fpn_dims[0], inter[1], 1)
        self.adapter2 = nn.Conv2d(fpn_dims[1], inter[2], 1)
        self.adapter3 = nn.Conv2d(fpn_dims[2], inter[3], 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, bbox_mask: torch.Tensor, fpns: list[torch.Tensor]) -> torch.Tensor:
        """
        Args:
            x: (N, d_model, h, w) projected backbone feature.
            bbox_mask: (N, Q, heads, h, w) attention maps.
            fpns: res4, res3, res2 features (N, C_i, H_i, W_i).

        Returns:
            (N * Q, 1, H_res2, W_res2) mask logits.
        """
        nq = bbox_mask.shape[1]
        x = torch.cat([_expand(x, nq), bbox_mask.flatten(0, 1)], 1)
        x = F.relu(self.gn1(self.lay1(x)))
        x = F.relu(self.gn2(self.lay2(x)))
        for adapter, lay, gn, fpn in (
            (self.adapter1, self.lay3, self.gn3, fpns[0]),
            (self.adapter2, self.lay4, self.gn4, fpns[1]),
            (self.adapter3, self.lay5, self.gn5, fpns[2]),
        ):
            lateral = _expand(adapter(fpn), nq)
            x = lateral + F.interpolate(x, size=lateral.shape[-2:], mode="nearest")
            x = F.relu(gn(lay(x)))
        return self.out_lay(x)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_boxes: torch.Tensor) -> torch.Tensor:
    """Sum over masks of ``1 - dice`` (smoothed by 1), divided by ``num_boxes``; (M, P) logits and 0/1 targets."""
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(1)
    denominator = probs.sum(1) + targets.sum(1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_boxes


def panoptic_inference(
    logits: torch.Tensor,
    masks: torch.Tensor,
    *,
    output_size: tuple[int, int],
    is_thing: list[bool],
    threshold: float = 0.85,
    min_area: int = 4,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Panoptic segmentation of one image from its queries.

    Queries whose most likely class (softmax over K + 1) is a real one with probability above ``threshold`` are
    kept; each pixel goes to the kept query with the highest mask logit; kept queries of the same stuff class form
    one segment; segments of at most ``min_area`` pixels are dropped (their pixels reassigned) until none is left.

    Args:
        logits: (Q, K + 1) class logits.
        masks: (Q, h, w) mask logits over the (unpadded) input image.
        output_size: (H, W) size of the returned map (the original image).
        is_thing: K flags, True for thing classes.
        threshold: class-probability threshold.
        min_area: largest segment area (in output pixels) that is dropped.

    Returns:
        (H, W) int32 segment ids (0: no segment) and ``segments_info``: ``{"id", "category_id", "isthing",
        "score", "area"}`` per segment, ids 1, 2, ...
    """
    num_classes = logits.shape[-1] - 1
    if len(is_thing) != num_classes:
        raise ValueError(f"panoptic_inference: is_thing has {len(is_thing)} flags for {num_classes} classes.")
    scores, labels = logits.softmax(-1).max(-1)
    keep = labels.ne(num_classes) & (scores > threshold)
    scores, labels, masks = scores[keep], labels[keep], masks[keep]
    height, width = output_size
    if len(labels) == 0:
        return torch.zeros((height, width), dtype=torch.int32, device=logits.device), []
    masks = F.interpolate(masks[None].float(), size=(height, width), mode="bilinear", align_corners=False)[0]
    while True:
        if len(labels) == 0:
            return torch.zeros((height, width), dtype=torch.int32, device=logits.device), []
        # segment of each kept query: itself, or the first kept query of the same stuff class
        segment_of = torch.arange(len(labels), device=labels.device)
        first_of_class: dict[int, int] = {}
        for i, label in enumerate(labels.tolist()):
            if not is_thing[label]:
                segment_of[i] = first_of_class.setdefault(label, i)
        assignment = segment_of[masks.argmax(0)]  # (H, W) index of the segment's first query
        area = torch.bincount(assignment.flatten(), minlength=len(labels))
        small = (area <= min_area) & (segment_of == torch.arange(len(labels), device=labels.device))
        # a stuff query merged into another has no area of its own: it goes only if its segment goes
        small = small[segment_of]
        if not small.any():
            break
        scores, labels, masks = scores[~small], labels[~small], masks[~small]
    segment_ids = torch.zeros(len(labels), dtype=torch.int32, device=labels.device)
    segments_info = []
    for i in range(len(labels)):
        if segment_of[i] != i:
            continue
        segment_ids[i] = len(segments_info) + 1
        label = int(labels[i])
        segments_info.append(
            {
                "id": len(segments_info) + 1,
                "category_id": label,
                "isthing": bool(is_thing[label]),
                "score": float(scores[i]),
                "area": int(area[i]),
            }
        )
    return segment_ids[assignment], segments_info


class DETRSegm(nn.Module):
    """Panoptic DETR: a :class:`~detr.DETR` (whose backbone outputs res2-res5) plus :class:`MHAttentionMap` and
    :class:`MaskHeadSmallConv`.

    The paper trains the detector first, then freezes it and trains the mask head alone (``freeze_detr=True``);
    with ``freeze_detr=False`` the detection losses are added to the mask losses. Inference returns
    ``{"panoptic_seg": (ids (H, W), segments_info), "instances": ...}`` per image (for
    :class:`~libdet.evaluation.COCOPanopticEvaluator`); category ids are the model's contiguous class ids.

    Args:
        detr: the detector; ``detr.backbone`` must output ``mask_in_features`` besides ``detr.in_feature``.
        bbox_attention: the attention-map module.
        mask_head: the mask decoder.
        mask_in_features: backbone outputs fed to the mask head, coarse to fine.
        freeze_detr: freeze every DETR parameter (train the mask head only).
        loss_mask, loss_dice: weights of the sigmoid focal loss and the dice loss of matched masks.
        is_thing: one flag per class, True for thing classes (used by the panoptic post-processing).
        panoptic_threshold: class-probability threshold of a query to become a segment (0.85).
    """

    def __init__(
        self,
        *,
        detr: DETR,
        bbox_attention: MHAttentionMap,
        mask_head: MaskHeadSmallConv,
        mask_in_features: list[str] = ("res4", "res3", "res2"),
        freeze_detr: bool = True,
        loss_mask: float = 1.0,
        loss_dice: float = 1.0,
        is_thing: list[bool],
        panoptic_threshold: float = 0.85,
    ):
        super().__init__()
        shapes = detr.backbone.output_shape()
        missing = [f for f in mask_in_features if f not in shapes]
        if missing:
            raise ValueError(
                f"DETRSegm: the backbone does not output {missing} (mask_in_features); it gives {sorted(shapes)}."
            )
        if len(is_thing) != detr.num_classes:
            raise ValueError(f"DETRSegm: is_thing has {len(is_thing)} flags, the DETR has {detr.num_classes} classes.")
        self.detr = detr
        self.bbox_attention = bbox_attention
        self.mask_head = mask_head
        self.mask_in_features = list(mask_in_features)
        self.freeze_detr = freeze_detr
        self.weights = {"loss_mask": loss_mask, "loss_dice": loss_dice}
        self.is_thing = [bool(t) for t in is_thing]
        self.panoptic_threshold = panoptic_threshold
        if freeze_detr:
            for p in self.detr.parameters():
                p.requires_grad_(False)

    def predict(self, images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`DETR.forward_transformer`'s outputs plus "masks": (N, Q, H / 4, W / 4) mask logits over the padded
        batch (for images ``(N, 3, H, W)`` and their padding ``mask``)."""
        features = self.detr.backbone(images)
        out = self.detr.forward_transformer(features[self.detr.in_feature], mask)
        bbox_mask = self.bbox_attention(out["hs"][-1], out["memory"], mask=out["mask"])
        masks = self.mask_head(out["src"], bbox_mask, [features[f] for f in self.mask_in_features])
        out["masks"] = masks.view(images.shape[0], -1, masks.shape[-2], masks.shape[-1])
        return out

    def forward(self, batched_inputs: list[dict[str, Any]]):
        images, mask = self.detr.preprocess_image(batched_inputs)
        out = self.predict(images.tensor, mask)
        if self.training:
            return self.losses(out, batched_inputs, images)
        return self.inference(out, batched_inputs, images)

    def losses(self, out: dict[str, torch.Tensor], batched_inputs: list[dict[str, Any]], images: ImageList):
        """Mask losses of the queries matched to the ground truth (and the detection losses, unless frozen)."""
        criterion = self.detr.criterion
        if criterion is None:
            raise ValueError("DETRSegm: training needs detr.criterion (its matcher matches masks too).")
        targets = self.detr.prepare_targets(batched_inputs, images)
        losses = {}
        if not self.freeze_detr:
            logits, boxes = (
                (out["logits"], out["boxes"]) if self.detr.aux_loss else (out["logits"][-1:], out["boxes"][-1:])
            )
            losses.update(criterion(logits, boxes, targets))
        matches = criterion.matcher(out["logits"][-1], out["boxes"][-1], targets)
        num_boxes = criterion.num_boxes(targets, out["logits"].device)
        padded_h, padded_w = images.tensor.shape[-2:]
        src, tgt = [], []
        for i, (x, (pred_idx, tgt_idx)) in enumerate(zip(batched_inputs, matches)):
            gt_masks = x["instances"].gt_masks
            gt = gt_masks.tensor if hasattr(gt_masks, "tensor") else gt_masks
            gt = gt.to(out["masks"].device, torch.float32)
            if gt.shape[0] != len(targets[i]["labels"]):
                raise ValueError(
                    f"DETRSegm: input {i} has {gt.shape[0]} gt_masks for {len(targets[i]['labels'])} boxes."
                )
            gt = F.pad(gt, (0, padded_w - gt.shape[-1], 0, padded_h - gt.shape[-2]))
            src.append(out["masks"][i, pred_idx.to(gt.device)])
            tgt.append(gt[tgt_idx.to(gt.device)])
        src_masks = torch.cat(src)
        tgt_masks = torch.cat(tgt)
        src_masks = F.interpolate(src_masks[:, None], size=(padded_h, padded_w), mode="bilinear", align_corners=False)
        src_masks, tgt_masks = src_masks.flatten(1), tgt_masks.flatten(1)
        loss_mask = sigmoid_focal_loss(src_masks, tgt_masks, alpha=0.25, gamma=2.0, reduction="none").mean(1).sum()
        losses["loss_mask"] = loss_mask / num_boxes * self.weights["loss_mask"]
        losses["loss_dice"] = dice_loss(src_masks, tgt_masks, num_boxes) * self.weights["loss_dice"]
        return losses

    def inference(self, out: dict[str, torch.Tensor], batched_inputs: list[dict[str, Any]], images: ImageList):
        """Per image: the panoptic segmentation at the original size and DETR's detections."""
        detections = DETR.postprocess(
            self.detr.inference(out["logits"][-1], out["boxes"][-1], images.image_sizes), batched_inputs, images
        )
        padded_h, padded_w = images.tensor.shape[-2:]
        all_masks = F.interpolate(out["masks"], size=(padded_h, padded_w), mode="bilinear", align_corners=False)
        results = []
        for i, (x, (h, w)) in enumerate(zip(batched_inputs, images.image_sizes)):
            panoptic = panoptic_inference(
                out["logits"][-1, i],
                all_masks[i, :, :h, :w],
                output_size=(x.get("height", h), x.get("width", w)),
                is_thing=self.is_thing,
                threshold=self.panoptic_threshold,
            )
            results.append({"panoptic_seg": panoptic, "instances": detections[i]["instances"]})
        return results

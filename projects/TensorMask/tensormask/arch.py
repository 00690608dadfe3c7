"""``TensorMask``: dense sliding-window instance segmentation (Chen et al., ICCV 2019)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from libdet.layers import batched_nms, cat, paste_masks_in_image
from libdet.modeling.box_regression import Box2BoxTransform
from libdet.modeling.meta_arch import DenseDetector
from libdet.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from libdet.structures import Boxes, ImageList, Instances

from .anchor_generator import TensorMaskAnchorGenerator
from .assignment import assignment_rule
from .head import TensorMaskHead

__all__ = ["TensorMask"]


class TensorMask(DenseDetector):
    """TensorMask: a RetinaNet-style detector whose head also predicts a mask for every anchor, densely.

    Args:
        backbone: a backbone giving ``head_in_features`` (a ResNet-FPN with p2-p7 and average fusion).
        head: a :class:`TensorMaskHead`; its ``mask_sizes`` must be the first level's anchor sizes divided
            by that level's stride.
        anchor_generator: a :class:`TensorMaskAnchorGenerator`, one anchor per mask size and location.
        box2box_transform: encodes box regression targets, e.g. weights ``(1.5, 1.5, 0.75, 0.75)``.
        num_classes: number of foreground classes.
        head_in_features: backbone features given to the head, high to low resolution.
        focal_loss_alpha, focal_loss_gamma: of the focal loss* (FL*) on the class logits.
        score_threshold: smallest score of a kept detection at inference.
        topk_candidates: candidates kept (over all levels) before NMS.
        nms_threshold: IoU threshold of the per-class NMS.
        max_detections_per_image: detections kept per image.
        mask_loss_weight: weight of the mask loss (divided by each mask's number of pixels).
        mask_pos_weight: weight of the foreground pixels in the mask BCE.
        mask_threshold: threshold of the pasted mask probabilities.
        pixel_mean, pixel_std: per-channel normalisation of the input images.

    Training gives ``{"loss_cls", "loss_box_reg", "loss_mask"}`` (the last when the head predicts masks);
    inference gives per image ``{"instances": Instances}`` with ``pred_boxes``, ``scores``, ``pred_classes``
    and ``pred_masks`` (bool, image-sized).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        head: TensorMaskHead,
        anchor_generator: TensorMaskAnchorGenerator,
        box2box_transform: Box2BoxTransform,
        num_classes: int,
        head_in_features: Sequence[str] = ("p2", "p3", "p4", "p5", "p6", "p7"),
        focal_loss_alpha: float = 0.3,
        focal_loss_gamma: float = 3.0,
        score_threshold: float = 0.05,
        topk_candidates: int = 6000,
        nms_threshold: float = 0.5,
        max_detections_per_image: int = 100,
        mask_loss_weight: float = 2.0,
        mask_pos_weight: float = 1.5,
        mask_threshold: float = 0.5,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
    ):
        super().__init__(backbone, head, list(head_in_features), pixel_mean=pixel_mean, pixel_std=pixel_std)
        self.anchor_generator = anchor_generator
        self.box2box_transform = box2box_transform
        self.num_classes = num_classes
        self.num_levels = len(self.head_in_features)
        num_anchors = set(anchor_generator.num_anchors)
        if len(num_anchors) != 1:
            raise ValueError(f"TensorMask: every level needs the same number of anchors, got {num_anchors}.")
        self.num_anchors = num_anchors.pop()
        if anchor_generator.num_features != self.num_levels:
            raise ValueError(
                f"TensorMask: the anchor generator has {anchor_generator.num_features} levels, "
                f"head_in_features has {self.num_levels}."
            )
        first_stride = anchor_generator.strides[0]
        # The first level's anchor sizes (square anchors: the width is the size).
        first_cell_anchors = next(iter(anchor_generator.cell_anchors))
        first_sizes = [float(box[2] - box[0]) for box in first_cell_anchors]
        self.mask_sizes = [int(round(s)) // first_stride for s in first_sizes]
        if head.mask_on and list(head.mask_sizes) != self.mask_sizes:
            raise ValueError(
                f"TensorMask: head.mask_sizes {head.mask_sizes} must be the first level's anchor sizes over its "
                f"stride {first_stride}: {self.mask_sizes}."
            )
        self.min_anchor_size = min(first_sizes) - first_stride
        self.mask_on = head.mask_on
        self.bipyramid_on = head.bipyramid_on
        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma
        self.score_threshold = score_threshold
        self.topk_candidates = topk_candidates
        self.nms_threshold = nms_threshold
        self.max_detections_per_image = max_detections_per_image
        self.mask_loss_weight = mask_loss_weight
        self.mask_pos_weight = mask_pos_weight
        self.mask_threshold = mask_threshold

    def _mask_size(self, level: int, anchor: int) -> int:
        return self.mask_sizes[anchor] * (2**level if self.bipyramid_on else 1)

    def forward(self, batched_inputs: list[dict[str, Any]]):
        """Training: a dict of losses (needs ``"instances"``). Inference: per image, ``{"instances": Instances}``
        at the requested ``height`` x ``width``."""
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        missing = [f for f in self.head_in_features if f not in features]
        if missing:
            raise ValueError(
                f"TensorMask: head_in_features {missing} are not among the backbone outputs {sorted(features)}."
            )
        features = [features[f] for f in self.head_in_features]
        pred_logits, pred_deltas, pred_masks = self.head(features)
        anchors, unit_lengths, indexes = self.anchor_generator(features)
        if self.training:
            gt_instances = self._gt_instances(batched_inputs)
            if gt_instances is None:
                raise ValueError("TensorMask: training needs ground truth under batched_inputs[i]['instances'].")
            targets = self.get_ground_truth(anchors, unit_lengths, indexes, gt_instances)
            return self.losses(targets, pred_logits, pred_deltas, pred_masks)
        results = self.inference(pred_logits, pred_deltas, pred_masks, anchors, indexes, images)
        processed = []
        for (result, masks, mask_boxes), x, size in zip(results, batched_inputs, images.image_sizes):
            height = x.get("height", size[0])
            width = x.get("width", size[1])
            processed.append({"instances": self._postprocess(result, masks, mask_boxes, height, width)})
        return processed

    @torch.no_grad()
    def get_ground_truth(
        self,
        anchors: list[Boxes],
        unit_lengths: list[torch.Tensor],
        indexes: list[torch.Tensor],
        targets: list[Instances],
    ) -> dict[str, Any]:
        """Labels every anchor of every image with :func:`assignment_rule`.

        Returns a dict with:
            classes: int64 Tensor[N * R] (R anchors per image): class, ``num_classes`` for background, -1 ignored.
            deltas: Tensor[F, 4], box targets of the F foreground anchors (in order).
            masks: per level, per anchor: bool Tensor[Fla, M, M] (M the mask size there) or None.
            mask_locations: per level, per anchor: int64 Tensor[Fla, 3] of ``(image, row, column)`` or None.
            num_foreground: F.
        """
        anchors_all = Boxes.cat(anchors)
        lengths_all = cat(unit_lengths)
        indexes_all = cat(indexes)
        classes, deltas = [], []
        masks: list[list[list[torch.Tensor]]] = [[[] for _ in range(self.num_anchors)] for _ in range(self.num_levels)]
        locations: list[list[list[torch.Tensor]]] = [
            [[] for _ in range(self.num_anchors)] for _ in range(self.num_levels)
        ]
        num_foreground = 0
        for image_index, targets_im in enumerate(targets):
            classes_im = torch.full((len(anchors_all),), self.num_classes, dtype=torch.int64, device=self.device)
            if len(targets_im) > 0:
                matches, labels = assignment_rule(targets_im.gt_boxes, anchors_all, lengths_all, self.min_anchor_size)
                foreground = labels == 1
                fg_matches = matches[foreground]
                fg_anchors = anchors_all.tensor[foreground]
                num_foreground += int(foreground.sum())
                classes_im[foreground] = targets_im.gt_classes[fg_matches]
                classes_im[labels == -1] = -1
                deltas.append(self.box2box_transform.get_deltas(fg_anchors, targets_im.gt_boxes.tensor[fg_matches]))
                if self.mask_on:
                    if not targets_im.has("gt_masks"):
                        raise ValueError(
                            "TensorMask: the head predicts masks, but the targets have no `gt_masks` "
                            "(load the dataset with instance masks, e.g. mapper.use_instance_mask=True)."
                        )
                    fg_indexes = indexes_all[foreground]
                    for lvl in range(self.num_levels):
                        for anc in range(self.num_anchors):
                            chosen = (fg_indexes[:, 0] == lvl) & (fg_indexes[:, 4] == anc)
                            if not bool(chosen.any()):
                                continue
                            gt_masks = targets_im.gt_masks[fg_matches[chosen]]
                            masks[lvl][anc].append(
                                gt_masks.crop_and_resize(fg_anchors[chosen], self._mask_size(lvl, anc)).to(self.device)
                            )
                            location = fg_indexes[chosen][:, 1:4].clone()
                            location[:, 0] = image_index
                            locations[lvl][anc].append(location)
            classes.append(classes_im)
        return {
            "classes": cat(classes),
            "deltas": cat(deltas) if deltas else torch.zeros(0, 4, device=self.device),
            "masks": [[cat(m) if m else None for m in per_level] for per_level in masks],
            "mask_locations": [[cat(loc) if loc else None for loc in per_level] for per_level in locations],
            "num_foreground": num_foreground,
        }

    def losses(
        self,
        targets: dict[str, Any],
        pred_logits: list[torch.Tensor],
        pred_deltas: list[torch.Tensor],
        pred_masks: list[list[torch.Tensor]] | None,
    ) -> dict[str, torch.Tensor]:
        """Focal loss* on the classes, L1 (smooth-L1 with beta 0) on the boxes, weighted BCE on the masks; all
        normalised by the number of foreground anchors (at least 1)."""
        from fvcore.nn import sigmoid_focal_loss_star_jit, smooth_l1_loss

        classes = targets["classes"]
        normalizer = max(1, targets["num_foreground"])
        logits = cat([permute_to_N_HWA_K(x, self.num_classes) for x in pred_logits], dim=1).reshape(
            -1, self.num_classes
        )
        deltas = cat([permute_to_N_HWA_K(x, 4) for x in pred_deltas], dim=1).reshape(-1, 4)
        valid = classes >= 0
        foreground = valid & (classes < self.num_classes)
        class_targets = torch.zeros_like(logits)
        class_targets[foreground, classes[foreground]] = 1
        loss_cls = (
            sigmoid_focal_loss_star_jit(
                logits[valid],
                class_targets[valid],
                alpha=self.focal_loss_alpha,
                gamma=self.focal_loss_gamma,
                reduction="sum",
            )
            / normalizer
        )
        if targets["num_foreground"] == 0:
            loss_box_reg = deltas.sum() * 0
        else:
            loss_box_reg = smooth_l1_loss(deltas[foreground], targets["deltas"], beta=0.0, reduction="sum") / normalizer
        losses = {"loss_cls": loss_cls, "loss_box_reg": loss_box_reg}
        if self.mask_on:
            loss_mask = logits.sum() * 0
            pos_weight = torch.tensor(self.mask_pos_weight, dtype=logits.dtype, device=logits.device)
            for lvl in range(self.num_levels):
                for anc in range(self.num_anchors):
                    location = targets["mask_locations"][lvl][anc]
                    predicted = pred_masks[lvl][anc]
                    if location is None:
                        loss_mask = loss_mask + predicted.sum() * 0  # keeps every predictor in the graph
                        continue
                    size = self._mask_size(lvl, anc)
                    # [N, M*M, H, W] indexed at (image, :, row, column) -> [F, M*M]
                    chosen = predicted[location[:, 0], :, location[:, 1], location[:, 2]]
                    loss_mask = loss_mask + F.binary_cross_entropy_with_logits(
                        chosen.view(-1, size, size),
                        targets["masks"][lvl][anc].to(chosen.dtype),
                        weight=torch.tensor(self.mask_loss_weight / size**2, dtype=chosen.dtype, device=chosen.device),
                        pos_weight=pos_weight.to(chosen.dtype),
                        reduction="sum",
                    )
            losses["loss_mask"] = loss_mask / normalizer
        return losses

    @torch.no_grad()
    def inference(
        self,
        pred_logits: list[torch.Tensor],
        pred_deltas: list[torch.Tensor],
        pred_masks: list[list[torch.Tensor]] | None,
        anchors: list[Boxes],
        indexes: list[torch.Tensor],
        images: ImageList,
    ) -> list[tuple[Instances, list[torch.Tensor], Boxes | None]]:
        """Per image: detections at the network input resolution, their mask probabilities (one
        ``Tensor[M, M]`` each, of the size of the anchor's level) and the anchors to paste them into."""
        logits = cat([permute_to_N_HWA_K(x, self.num_classes) for x in pred_logits], dim=1)
        deltas = cat([permute_to_N_HWA_K(x, 4) for x in pred_deltas], dim=1)
        anchors_all = Boxes.cat(anchors)
        indexes_all = cat(indexes)
        results = []
        for image_index, image_size in enumerate(images.image_sizes):
            scores = logits[image_index].flatten().sigmoid()
            # The best candidates over all levels at once (faster, and no worse, says detectron2).
            candidates = torch.nonzero(scores > self.score_threshold).flatten()
            num_topk = min(self.topk_candidates, candidates.numel())
            probs, order = scores[candidates].sort(descending=True)
            probs = probs[:num_topk]
            top = candidates[order[:num_topk]]
            classes = top % self.num_classes
            top = top // self.num_classes
            boxes = self.box2box_transform.apply_deltas(deltas[image_index][top], anchors_all.tensor[top])
            keep = batched_nms(boxes, probs, classes, self.nms_threshold)[: self.max_detections_per_image]
            result = Instances(tuple(image_size))
            result.pred_boxes = Boxes(boxes[keep])
            result.scores = probs[keep]
            result.pred_classes = classes[keep]
            masks: list[torch.Tensor] = []
            mask_boxes = None
            if self.mask_on:
                kept = top[keep]
                mask_boxes = Boxes(anchors_all.tensor[kept].clone())
                for lvl, _, row, col, anc in indexes_all[kept].tolist():
                    size = self._mask_size(lvl, anc)
                    masks.append(pred_masks[lvl][anc][image_index, :, row, col].view(size, size).sigmoid())
            results.append((result, masks, mask_boxes))
        return results

    def _postprocess(
        self, result: Instances, masks: list[torch.Tensor], mask_boxes: Boxes | None, height: int, width: int
    ) -> Instances:
        """Rescales to ``height`` x ``width``, drops empty boxes, pastes each mask into its anchor's box."""
        scale_x, scale_y = width / result.image_size[1], height / result.image_size[0]
        output = Instances((height, width), **result.get_fields())
        boxes = output.pred_boxes
        boxes.tensor[:, 0::2] *= scale_x
        boxes.tensor[:, 1::2] *= scale_y
        boxes.clip(output.image_size)
        nonempty = boxes.nonempty()
        output = output[nonempty]
        if self.mask_on:
            mask_boxes.tensor[:, 0::2] *= scale_x
            mask_boxes.tensor[:, 1::2] *= scale_y
            keep = nonempty.nonzero().flatten().tolist()
            output.pred_masks = _paste_masks_of_mixed_sizes(
                [masks[i] for i in keep], mask_boxes.tensor[nonempty], (height, width), self.mask_threshold
            )
        return output


def _paste_masks_of_mixed_sizes(
    masks: list[torch.Tensor], boxes: torch.Tensor, image_shape: tuple[int, int], threshold: float
) -> torch.Tensor:
    """Pastes masks of several sizes (``Tensor[Mi, Mi]`` each) into their boxes: bool Tensor[len(masks), H, W]."""
    if not masks:
        return torch.zeros((0, *image_shape), dtype=torch.bool, device=boxes.device)
    out = torch.zeros((len(masks), *image_shape), dtype=torch.bool, device=boxes.device)
    sizes = torch.tensor([m.shape[-1] for m in masks])
    for size in sizes.unique().tolist():
        chosen = (sizes == size).nonzero().flatten()
        stacked = torch.stack([masks[i] for i in chosen.tolist()])
        out[chosen.to(boxes.device)] = paste_masks_in_image(
            stacked, boxes[chosen.to(boxes.device)], image_shape, threshold
        )
    return out

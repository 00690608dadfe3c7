"""ROI heads: sample proposals against the ground truth, pool per-ROI features, and run the box (and mask,
keypoint) branches. ``StandardROIHeads`` pools each branch from FPN levels; ``Res5ROIHeads`` is the C4 design, where
the ResNet ``res5`` stage runs on pooled ``res4`` features and is shared by the box and mask branches."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from libdet.layers import nonzero_tuple
from libdet.structures import Boxes, ImageList, Instances, pairwise_iou
from libdet.utils.events import get_event_storage, has_event_storage

from ..matcher import Matcher
from ..poolers import ROIPooler
from ..proposal_generator.proposal_utils import add_ground_truth_to_proposals
from ..registries import ROI_HEADS_REGISTRY  # noqa: F401 (detectron2 path; YAML names)
from ..sampling import subsample_labels
from .fast_rcnn import FastRCNNOutputLayers

__all__ = [
    "select_foreground_proposals",
    "select_proposals_with_visible_keypoints",
    "ROIHeads",
    "StandardROIHeads",
    "Res5ROIHeads",
]


def select_foreground_proposals(
    proposals: list[Instances], bg_label: int
) -> tuple[list[Instances], list[torch.Tensor]]:
    """Keep the proposals labelled with a foreground class.

    Args:
        proposals: per image, :class:`Instances` with ``gt_classes`` (``bg_label`` = background, -1 =
            ignored).
        bg_label: the background label (``num_classes``).

    Returns:
        per image, the foreground proposals; and per image, the ``(R_i,)`` bool mask that selected them.
    """
    if not isinstance(proposals, (list, tuple)) or (len(proposals) and not isinstance(proposals[0], Instances)):
        raise TypeError("select_foreground_proposals: `proposals` must be a list of Instances.")
    fg_proposals, fg_masks = [], []
    for i, p in enumerate(proposals):
        if not p.has("gt_classes"):
            raise ValueError(f"select_foreground_proposals: the proposals of image {i} have no `gt_classes`.")
        mask = (p.gt_classes != -1) & (p.gt_classes != bg_label)
        fg_proposals.append(p[mask.nonzero().squeeze(1)])
        fg_masks.append(mask)
    return fg_proposals, fg_masks


def select_proposals_with_visible_keypoints(proposals: list[Instances]) -> list[Instances]:
    """Keep the proposals whose matched gt has at least one visible keypoint (``v >= 1``) inside the
    proposal box (borders included): the only ones the keypoint head can learn from.

    Args:
        proposals: per image, foreground proposals with ``proposal_boxes`` and ``gt_keypoints``
            (images without proposals may lack ``gt_keypoints``).

    Returns:
        per image, the selected proposals.
    """
    selected, num_selected = [], []
    for i, p in enumerate(proposals):
        if len(p) == 0:
            selected.append(p)
            num_selected.append(0)
            continue
        if not p.has("gt_keypoints"):
            raise ValueError(
                f"select_proposals_with_visible_keypoints: the proposals of image {i} have no `gt_keypoints`; "
                "the keypoint branch needs keypoint annotations (DatasetMapper(use_keypoint=True))."
            )
        kp = p.gt_keypoints.tensor  # (R, K, 3)
        boxes = p.proposal_boxes.tensor.unsqueeze(1)  # (R, 1, 4)
        xs, ys = kp[:, :, 0], kp[:, :, 1]
        inside = (xs >= boxes[:, :, 0]) & (xs <= boxes[:, :, 2]) & (ys >= boxes[:, :, 1]) & (ys <= boxes[:, :, 3])
        keep = nonzero_tuple((inside & (kp[:, :, 2] >= 1)).any(dim=1))[0]
        selected.append(p[keep])
        num_selected.append(keep.numel())
    if has_event_storage() and len(num_selected):
        get_event_storage().put_scalar("keypoint_head/num_fg_samples", sum(num_selected) / len(num_selected))
    return selected


class ROIHeads(nn.Module):
    """Base of ROI heads: matches proposals to the ground truth and samples the ROIs each branch trains
    on. Subclasses implement :meth:`forward`."""

    def __init__(
        self,
        *,
        num_classes: int,
        batch_size_per_image: int,
        positive_fraction: float,
        proposal_matcher: Matcher,
        proposal_append_gt: bool = True,
    ):
        """
        Args:
            num_classes: foreground classes ``K``; label ``K`` is background.
            batch_size_per_image: ROIs sampled per image in training.
            positive_fraction: largest fraction of foreground ROIs among them.
            proposal_matcher: labels proposals foreground (1) / background (0) / ignored (-1) by IoU.
            proposal_append_gt: add the gt boxes to the proposals before sampling.
        """
        super().__init__()
        self.num_classes = num_classes
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.proposal_matcher = proposal_matcher
        self.proposal_append_gt = proposal_append_gt

    def _sample_proposals(
        self, matched_idxs: torch.Tensor, matched_labels: torch.Tensor, gt_classes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class of each proposal (its gt's, background ``K`` or ignored -1) and a random sample of at
        most ``batch_size_per_image``; returns (sampled indices, their classes)."""
        if gt_classes.numel() > 0:
            gt_classes = gt_classes[matched_idxs]
            gt_classes[matched_labels == 0] = self.num_classes
            gt_classes[matched_labels == -1] = -1
        else:
            gt_classes = torch.zeros_like(matched_idxs) + self.num_classes
        fg_idxs, bg_idxs = subsample_labels(
            gt_classes, self.batch_size_per_image, self.positive_fraction, self.num_classes
        )
        sampled = torch.cat([fg_idxs, bg_idxs], dim=0)
        return sampled, gt_classes[sampled]

    @torch.no_grad()
    def label_and_sample_proposals(self, proposals: list[Instances], targets: list[Instances]) -> list[Instances]:
        """Match proposals (plus the gt boxes, if ``proposal_append_gt``) to the ground truth and sample
        the training ROIs of each image.

        Args:
            proposals: per image, :class:`Instances` with ``proposal_boxes`` and ``objectness_logits``.
            targets: per image, :class:`Instances` with ``gt_boxes``, ``gt_classes`` and optionally other
                ``gt_*`` fields (``gt_masks``, ...).

        Returns:
            per image, the sampled proposals with ``gt_classes`` (``K`` = background) and, when the image
            has ground truth, every ``gt_*`` field of ``targets`` taken from each ROI's matched gt.
        """
        if targets is None or len(targets) != len(proposals):
            raise ValueError(
                f"ROIHeads: need one target Instances per image in training, got "
                f"{None if targets is None else len(targets)} targets for {len(proposals)} images."
            )
        for i, t in enumerate(targets):
            if not (t.has("gt_boxes") and t.has("gt_classes")):
                raise ValueError(f"ROIHeads: the targets of image {i} need `gt_boxes` and `gt_classes` fields.")
        if self.proposal_append_gt:
            proposals = add_ground_truth_to_proposals(targets, proposals)
        sampled_proposals = []
        for props, tgt in zip(proposals, targets):
            has_gt = len(tgt) > 0
            quality = pairwise_iou(tgt.gt_boxes, props.proposal_boxes)
            matched_idxs, matched_labels = self.proposal_matcher(quality)
            sampled_idxs, gt_classes = self._sample_proposals(matched_idxs, matched_labels, tgt.gt_classes)
            props = props[sampled_idxs]
            props.gt_classes = gt_classes
            if has_gt:
                sampled_targets = matched_idxs[sampled_idxs]
                for name, value in tgt.get_fields().items():
                    if name.startswith("gt_") and not props.has(name):
                        props.set(name, value[sampled_targets])
            # Without gt no gt_* field but gt_classes (all background) can be filled in.
            sampled_proposals.append(props)
        if has_event_storage():  # training statistics, when run under a trainer
            # tensors: read when metrics are written, not now (no device synchronisation)
            num_bg = torch.stack([(p.gt_classes == self.num_classes).sum() for p in sampled_proposals]).sum()
            num_sampled = sum(len(p) for p in sampled_proposals)
            storage = get_event_storage()
            storage.put_scalar("roi_head/num_fg_samples", (num_sampled - num_bg) / len(sampled_proposals))
            storage.put_scalar("roi_head/num_bg_samples", num_bg / len(sampled_proposals))
        return sampled_proposals

    def forward(
        self,
        images: ImageList,
        features: dict[str, torch.Tensor],
        proposals: list[Instances],
        targets: list[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, torch.Tensor]]:
        """Training: samples the ROIs (:meth:`label_and_sample_proposals`) and returns them with
        :meth:`losses`; inference: returns :meth:`inference` and ``{}``.

        Args:
            images: the input batch (unused by libdet's heads; detectron2's signature).
            features: backbone features by name.
            proposals: per image, :class:`Instances` with ``proposal_boxes`` and ``objectness_logits``.
            targets: per image, ground truth; required in training.

        Returns:
            (sampled proposals, losses) in training; (detections, ``{}``) at inference.
        """
        del images
        if self.training:
            proposals = self.label_and_sample_proposals(proposals, targets)
            return proposals, self.losses(features, proposals, targets)
        return self.inference(features, proposals), {}

    def losses(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[Instances],
        targets: list[Instances] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The losses of every branch, in train or eval mode (a validation loss needs no mode switch).

        Args:
            features: backbone features by name.
            proposals: per image, ROIs sampled and labelled by :meth:`label_and_sample_proposals`.
            targets: per image, the ground truth (heads that label ROIs again, like the cascade, need it).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement `losses`.")

    def inference(self, features: dict[str, torch.Tensor], proposals: list[Instances]) -> list[Instances]:
        """Detections per image (``pred_boxes``, ``scores``, ``pred_classes`` and the outputs of the other
        branches), from the proposals of the proposal generator."""
        raise NotImplementedError(f"{type(self).__name__} must implement `inference`.")


class StandardROIHeads(ROIHeads):
    """ROI heads where each branch pools its own features: a box branch (pooler, box head, predictor),
    an optional mask branch (pooler, mask head) and an optional keypoint branch (pooler, keypoint head).
    Another branch is added by a subclass that extends :meth:`_branch_losses` and :meth:`_branch_inference`."""

    # Constants for TorchScript (scripting_with_instances): the code of an absent branch is not compiled.
    __constants__ = ["mask_on", "keypoint_on"]

    def __init__(
        self,
        *,
        box_in_features: list[str],
        box_pooler: ROIPooler,
        box_head: nn.Module,
        box_predictor: FastRCNNOutputLayers,
        mask_in_features: list[str] | None = None,
        mask_pooler: ROIPooler | None = None,
        mask_head: nn.Module | None = None,
        keypoint_in_features: list[str] | None = None,
        keypoint_pooler: ROIPooler | None = None,
        keypoint_head: nn.Module | None = None,
        train_on_pred_boxes: bool = False,
        **kwargs,
    ):
        """
        Args:
            box_in_features: feature names the box branch pools from.
            box_pooler: pools ``(R, C, S, S)`` box features.
            box_head: maps pooled features to per-ROI features.
            box_predictor: class scores, box deltas, losses and inference.
            mask_in_features: feature names the mask branch uses; ``None`` disables masks.
            mask_pooler: pools mask features; ``None`` passes the features dict (of ``mask_in_features``)
                to the mask head unpooled.
            mask_head: mask head (e.g. :class:`MaskRCNNConvUpsampleHead`); ``None`` disables masks.
            keypoint_in_features: feature names the keypoint branch uses; ``None`` disables keypoints.
            keypoint_pooler: pools keypoint features; ``None`` passes the features dict (of
                ``keypoint_in_features``) to the keypoint head unpooled.
            keypoint_head: keypoint head (e.g. :class:`KRCNNConvDeconvUpsampleHead`); ``None`` disables
                keypoints. It trains on the foreground proposals with a visible keypoint inside.
            train_on_pred_boxes: train the later branches on the box branch's refined boxes instead of
                the proposals.
            kwargs: arguments of :class:`ROIHeads`.
        """
        super().__init__(**kwargs)
        self.in_features = self.box_in_features = list(box_in_features)
        self.box_pooler = box_pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.mask_on = mask_in_features is not None and mask_head is not None
        if (mask_in_features is None) != (mask_head is None):
            raise ValueError(
                "StandardROIHeads: `mask_in_features` and `mask_head` must be given together (or both None), "
                f"got mask_in_features={mask_in_features} and mask_head={type(mask_head).__name__}."
            )
        if self.mask_on:
            self.mask_in_features = list(mask_in_features)
            self.mask_pooler = mask_pooler
            self.mask_head = mask_head
        self.keypoint_on = keypoint_in_features is not None and keypoint_head is not None
        if (keypoint_in_features is None) != (keypoint_head is None):
            raise ValueError(
                "StandardROIHeads: `keypoint_in_features` and `keypoint_head` must be given together (or both "
                f"None), got keypoint_in_features={keypoint_in_features} and "
                f"keypoint_head={type(keypoint_head).__name__}."
            )
        if self.keypoint_on:
            self.keypoint_in_features = list(keypoint_in_features)
            self.keypoint_pooler = keypoint_pooler
            self.keypoint_head = keypoint_head
        self.train_on_pred_boxes = train_on_pred_boxes

    def losses(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[Instances],
        targets: list[Instances] | None = None,
    ) -> dict[str, torch.Tensor]:
        """See :meth:`ROIHeads.losses`: the box losses, then those of the mask and keypoint branches."""
        del targets
        losses = self._box_losses(features, proposals)
        losses.update(self._branch_losses(features, proposals))
        return losses

    def inference(self, features: dict[str, torch.Tensor], proposals: list[Instances]) -> list[Instances]:
        """See :meth:`ROIHeads.inference`: detections with ``pred_masks`` / ``pred_keypoints`` when those
        branches are on."""
        return self._branch_inference(features, self._box_inference(features, proposals))

    def forward_with_given_boxes(
        self, features: dict[str, torch.Tensor], instances: list[Instances]
    ) -> list[Instances]:
        """Run the non-box branches on given detections (inference).

        Args:
            features: backbone features by name.
            instances: per image, detections with ``pred_boxes`` and ``pred_classes``.

        Returns:
            the same instances with the branch outputs (``pred_masks``, ``pred_keypoints``, ...) added.
        """
        if self.training:
            raise RuntimeError("StandardROIHeads.forward_with_given_boxes is for inference; call model.eval().")
        if len(instances) and not (instances[0].has("pred_boxes") and instances[0].has("pred_classes")):
            raise ValueError(
                "StandardROIHeads.forward_with_given_boxes: instances need `pred_boxes` and `pred_classes`."
            )
        return self._branch_inference(features, instances)

    def _branch_losses(self, features: dict[str, torch.Tensor], proposals: list[Instances]) -> dict[str, torch.Tensor]:
        """Losses of the branches that run after the box branch."""
        losses = self._mask_losses(features, proposals)
        losses.update(self._keypoint_losses(features, proposals))
        return losses

    def _branch_inference(self, features: dict[str, torch.Tensor], instances: list[Instances]) -> list[Instances]:
        """Outputs of the branches that run after the box branch, added to the detections."""
        return self._keypoint_inference(features, self._mask_inference(features, instances))

    def _box_predictions(
        self, features: dict[str, torch.Tensor], proposals: list[Instances]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Box branch: (class scores ``(R, K + 1)``, box deltas) of the proposals' pooled features."""
        feats = [features[f] for f in self.box_in_features]
        box_features = self.box_pooler(feats, [p.proposal_boxes for p in proposals])
        return self.box_predictor(self.box_head(box_features))

    def _box_losses(self, features: dict[str, torch.Tensor], proposals: list[Instances]) -> dict[str, torch.Tensor]:
        """Box branch losses; with ``train_on_pred_boxes``, the proposals' boxes are then replaced by the
        refined boxes, in place, for the later branches."""
        predictions = self._box_predictions(features, proposals)
        losses = self.box_predictor.losses(predictions, proposals)
        if self.train_on_pred_boxes:
            with torch.no_grad():
                pred_boxes = self.box_predictor.predict_boxes_for_gt_classes(predictions, proposals)
                for p, boxes in zip(proposals, pred_boxes):
                    p.proposal_boxes = Boxes(boxes)
        return losses

    def _box_inference(self, features: dict[str, torch.Tensor], proposals: list[Instances]) -> list[Instances]:
        """Box branch detections (scored, NMSed, at most ``test_topk_per_image`` per image)."""
        detections, _ = self.box_predictor.inference(self._box_predictions(features, proposals), proposals)
        return detections

    @staticmethod
    def _branch_features(
        pooler: ROIPooler | None, in_features: list[str], features: dict[str, torch.Tensor], boxes: list[Boxes]
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Pooled ``(R, C, S, S)`` features of ``boxes``, or the unpooled features dict without a pooler."""
        if pooler is None:
            return {f: features[f] for f in in_features}
        return pooler([features[f] for f in in_features], boxes)

    def _mask_losses(self, features: dict[str, torch.Tensor], proposals: list[Instances]) -> dict[str, torch.Tensor]:
        """``{"loss_mask": ...}`` on the foreground proposals; ``{}`` without a mask branch."""
        if not self.mask_on:
            return {}
        instances, _ = select_foreground_proposals(proposals, self.num_classes)
        boxes = [x.proposal_boxes for x in instances]
        mask_features = self._branch_features(self.mask_pooler, self.mask_in_features, features, boxes)
        return self.mask_head.losses(mask_features, instances)

    def _mask_inference(self, features: dict[str, torch.Tensor], instances: list[Instances]) -> list[Instances]:
        """The detections with ``pred_masks``; unchanged without a mask branch."""
        if not self.mask_on:
            return instances
        boxes = [x.pred_boxes for x in instances]
        if torch.jit.is_scripting():  # TorchScript passes no module to a function (_branch_features)
            if self.mask_pooler is None:
                raise NotImplementedError("scripting: a mask branch without a pooler is not supported.")
            return self.mask_head.inference(
                self.mask_pooler([features[f] for f in self.mask_in_features], boxes), instances
            )
        mask_features = self._branch_features(self.mask_pooler, self.mask_in_features, features, boxes)
        return self.mask_head.inference(mask_features, instances)

    def _keypoint_losses(
        self, features: dict[str, torch.Tensor], proposals: list[Instances]
    ) -> dict[str, torch.Tensor]:
        """``{"loss_keypoint": ...}`` on the foreground proposals with a visible keypoint inside; ``{}``
        without a keypoint branch."""
        if not self.keypoint_on:
            return {}
        instances, _ = select_foreground_proposals(proposals, self.num_classes)
        instances = select_proposals_with_visible_keypoints(instances)
        boxes = [x.proposal_boxes for x in instances]
        keypoint_features = self._branch_features(self.keypoint_pooler, self.keypoint_in_features, features, boxes)
        return self.keypoint_head.losses(keypoint_features, instances)

    def _keypoint_inference(self, features: dict[str, torch.Tensor], instances: list[Instances]) -> list[Instances]:
        """The detections with ``pred_keypoints``; unchanged without a keypoint branch."""
        if not self.keypoint_on:
            return instances
        boxes = [x.pred_boxes for x in instances]
        if torch.jit.is_scripting():  # TorchScript passes no module to a function (_branch_features)
            if self.keypoint_pooler is None:
                raise NotImplementedError("scripting: a keypoint branch without a pooler is not supported.")
            keypoint_features = self.keypoint_pooler([features[f] for f in self.keypoint_in_features], boxes)
            return self.keypoint_head.inference(keypoint_features, instances)
        keypoint_features = self._branch_features(self.keypoint_pooler, self.keypoint_in_features, features, boxes)
        return self.keypoint_head.inference(keypoint_features, instances)


class Res5ROIHeads(ROIHeads):
    """The C4 ROI heads: ROIs are pooled from one feature map (``res4``), run through the ``res5`` stage and
    averaged; the box predictor uses the average and the mask head the ``res5`` feature map."""

    __constants__ = ["mask_on"]  # for TorchScript: the mask code is not compiled without a mask head

    def __init__(
        self,
        *,
        in_features: list[str],
        pooler: ROIPooler,
        res5: nn.Module | Sequence[nn.Module],
        box_predictor: FastRCNNOutputLayers,
        mask_head: nn.Module | None = None,
        **kwargs,
    ):
        """
        Args:
            in_features: the single feature name to pool from, e.g. ``["res4"]``.
            pooler: pools ``(R, C, S, S)`` features.
            res5: the ``res5`` stage, a module or a list of blocks (as ``ResNet.make_stage`` returns).
            box_predictor: predictor on the ``(R, C5)`` averaged ``res5`` features.
            mask_head: mask head on the ``(R, C5, S/2, S/2)`` ``res5`` features; ``None`` disables masks.
            kwargs: arguments of :class:`ROIHeads`.
        """
        super().__init__(**kwargs)
        if len(in_features) != 1:
            raise ValueError(f"Res5ROIHeads: `in_features` must name exactly one feature map, got {in_features}.")
        self.in_features = list(in_features)
        self.pooler = pooler
        if isinstance(res5, (list, tuple)):
            res5 = nn.Sequential(*res5)
        self.res5 = res5
        self.box_predictor = box_predictor
        self.mask_on = mask_head is not None
        if self.mask_on:
            self.mask_head = mask_head

    def _shared_roi_transform(self, features: list[torch.Tensor], boxes: list[Boxes]) -> torch.Tensor:
        """Pool the ROIs and run ``res5``: ``(R, C5, S/2, S/2)``."""
        return self.res5(self.pooler(features, boxes))

    def forward(
        self,
        images: ImageList,
        features: dict[str, torch.Tensor],
        proposals: list[Instances],
        targets: list[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, torch.Tensor]]:
        """See :meth:`ROIHeads.forward`; in training the first output is ``[]`` (as in detectron2)."""
        if torch.jit.is_scripting():  # TorchScript has no super(): ROIHeads.forward at inference
            if self.training:
                raise NotImplementedError("scripting: Res5ROIHeads in training mode is not supported.")
            return self.inference(features, proposals), {}
        detections, losses = super().forward(images, features, proposals, targets)
        return ([] if self.training else detections), losses

    def losses(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[Instances],
        targets: list[Instances] | None = None,
    ) -> dict[str, torch.Tensor]:
        """See :meth:`ROIHeads.losses`: box losses, and ``loss_mask`` on the foreground ROIs' ``res5`` features."""
        del targets
        box_features = self._shared_roi_transform(
            [features[f] for f in self.in_features], [p.proposal_boxes for p in proposals]
        )
        predictions = self.box_predictor(box_features.mean(dim=[2, 3]))
        losses = self.box_predictor.losses(predictions, proposals)
        if self.mask_on:
            fg_proposals, fg_masks = select_foreground_proposals(proposals, self.num_classes)
            mask_features = box_features[torch.cat(fg_masks, dim=0)]
            losses.update(self.mask_head.losses(mask_features, fg_proposals))
        return losses

    def inference(self, features: dict[str, torch.Tensor], proposals: list[Instances]) -> list[Instances]:
        """See :meth:`ROIHeads.inference`."""
        box_features = self._shared_roi_transform(
            [features[f] for f in self.in_features], [p.proposal_boxes for p in proposals]
        )
        predictions = self.box_predictor(box_features.mean(dim=[2, 3]))
        del box_features
        detections, _ = self.box_predictor.inference(predictions, proposals)
        return self._mask_inference(features, detections)

    def forward_with_given_boxes(
        self, features: dict[str, torch.Tensor], instances: list[Instances]
    ) -> list[Instances]:
        """Run the mask branch on given detections (inference); see :meth:`StandardROIHeads.forward_with_given_boxes`."""
        if self.training:
            raise RuntimeError("Res5ROIHeads.forward_with_given_boxes is for inference; call model.eval().")
        return self._mask_inference(features, instances)

    def _mask_inference(self, features: dict[str, torch.Tensor], instances: list[Instances]) -> list[Instances]:
        """The detections with ``pred_masks`` from their boxes' ``res5`` features; unchanged without masks."""
        if not self.mask_on:
            return instances
        x = self._shared_roi_transform([features[f] for f in self.in_features], [i.pred_boxes for i in instances])
        return self.mask_head.inference(x, instances)

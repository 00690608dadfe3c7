"""RetinaNet (Focal Loss for Dense Object Detection, https://arxiv.org/abs/1708.02002)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from libdet.layers import CycleBatchNormList, ShapeSpec, batched_nms, cat, get_norm
from libdet.layers.losses import sigmoid_focal_loss_jit
from libdet.structures import Boxes, ImageList, Instances, pairwise_iou
from libdet.utils.events import get_event_storage, has_event_storage

from ..box_regression import Box2BoxTransform, _dense_box_regression_loss
from ..matcher import Matcher
from .dense_detector import DenseDetector

__all__ = ["RetinaNet", "RetinaNetHead"]


class RetinaNet(DenseDetector):
    """RetinaNet: an FPN backbone, a class subnet and a box subnet shared by all levels, trained with the
    sigmoid focal loss on every anchor."""

    def __init__(
        self,
        *,
        backbone: nn.Module,
        head: nn.Module,
        head_in_features: list[str],
        anchor_generator: nn.Module,
        box2box_transform: Box2BoxTransform,
        anchor_matcher: Matcher,
        num_classes: int,
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        smooth_l1_beta: float = 0.1,
        box_reg_loss_type: str = "smooth_l1",
        test_score_thresh: float = 0.05,
        test_topk_candidates: int = 1000,
        test_nms_thresh: float = 0.5,
        max_detections_per_image: int = 100,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: str = "BGR",
    ):
        """
        Args:
            backbone: a :class:`Backbone` (usually an FPN with P3-P7).
            head: maps the feature list to ``(logits, deltas)``, per level ``(N, A*K, H, W)`` and
                ``(N, A*4, H, W)``, e.g. :class:`RetinaNetHead`.
            head_in_features: backbone features to use, e.g. ``["p3", ..., "p7"]``.
            anchor_generator: per-level anchors of the features.
            box2box_transform: encodes/decodes anchor deltas.
            anchor_matcher: labels anchors foreground / background / ignored by IoU with gt.
            num_classes: foreground classes ``K``.
            focal_loss_alpha, focal_loss_gamma: focal loss parameters.
            smooth_l1_beta: beta of the smooth-L1 box loss (0 = L1).
            box_reg_loss_type: ``"smooth_l1"``, ``"giou"``, ``"diou"`` or ``"ciou"``.
            test_score_thresh: candidates need a score above it.
            test_topk_candidates: candidates kept per level before NMS.
            test_nms_thresh: IoU threshold of the per-class NMS.
            max_detections_per_image: detections kept per image.
            pixel_mean, pixel_std: per-channel normalisation of the input images.
            input_format: channel order of the input images; informational.
        """
        super().__init__(backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std)
        self.num_classes = num_classes
        self.anchor_generator = anchor_generator
        self.box2box_transform = box2box_transform
        self.anchor_matcher = anchor_matcher
        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma
        self.smooth_l1_beta = smooth_l1_beta
        self.box_reg_loss_type = box_reg_loss_type
        self.test_score_thresh = test_score_thresh
        self.test_topk_candidates = test_topk_candidates
        self.test_nms_thresh = test_nms_thresh
        self.max_detections_per_image = max_detections_per_image
        self.input_format = input_format

    def forward_training(
        self,
        images: ImageList,
        features: list[torch.Tensor],
        predictions: list[list[torch.Tensor]],
        gt_instances: list[Instances],
    ) -> dict[str, torch.Tensor]:
        """``{"loss_cls", "loss_box_reg"}`` of a training batch."""
        logits, deltas = self._transpose_dense_predictions(predictions, [self.num_classes, 4])
        anchors = self.anchor_generator(features)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        return self.losses(anchors, logits, gt_labels, deltas, gt_boxes)

    def losses(
        self,
        anchors: list[Boxes],
        pred_logits: list[torch.Tensor],
        gt_labels: list[torch.Tensor],
        pred_anchor_deltas: list[torch.Tensor],
        gt_boxes: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Focal loss over all non-ignored anchors and box loss over the foreground ones, both summed and
        divided by an exponential moving average (momentum 0.9, start 100) of the number of foreground
        anchors per batch.

        Args:
            anchors: per level, ``Hi*Wi*A`` anchors.
            pred_logits: per level, ``(N, Hi*Wi*A, K)``.
            gt_labels: per image, ``(R,)`` label of each anchor (``K`` background, -1 ignored).
            pred_anchor_deltas: per level, ``(N, Hi*Wi*A, 4)``.
            gt_boxes: per image, ``(R, 4)`` matched gt box of each anchor.
        """
        labels = torch.stack(gt_labels)  # (N, R)
        valid = labels >= 0
        pos = valid & (labels != self.num_classes)
        num_pos = int(pos.sum().item())
        if has_event_storage():  # training statistics, when run under a trainer
            get_event_storage().put_scalar("num_pos_anchors", num_pos / len(gt_labels))
        normalizer = self._ema_update("loss_normalizer", max(num_pos, 1), 100)
        logits = cat(pred_logits, dim=1)
        targets = F.one_hot(labels[valid], num_classes=self.num_classes + 1)[:, :-1]
        loss_cls = sigmoid_focal_loss_jit(
            logits[valid],
            targets.to(logits.dtype),
            alpha=self.focal_loss_alpha,
            gamma=self.focal_loss_gamma,
            reduction="sum",
        )
        loss_box_reg = _dense_box_regression_loss(
            anchors,
            self.box2box_transform,
            pred_anchor_deltas,
            gt_boxes,
            pos,
            box_reg_loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        return {"loss_cls": loss_cls / normalizer, "loss_box_reg": loss_box_reg / normalizer}

    @torch.no_grad()
    def label_anchors(
        self, anchors: list[Boxes], gt_instances: list[Instances]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Label every anchor of every image.

        Args:
            anchors: per level, the anchors shared by all images.
            gt_instances: per image, :class:`Instances` with ``gt_boxes`` and ``gt_classes``.

        Returns:
            per image, ``(R,)`` labels: the matched gt class, ``K`` (background) or -1 (ignored); and per
            image, ``(R, 4)`` matched gt boxes (zeros for an image without gt).
        """
        anchors = Boxes.cat(anchors)
        gt_labels, matched_boxes = [], []
        for i, gt in enumerate(gt_instances):
            if not (gt.has("gt_boxes") and gt.has("gt_classes")):
                raise ValueError(f"RetinaNet: the ground truth of image {i} needs `gt_boxes` and `gt_classes`.")
            quality = pairwise_iou(gt.gt_boxes, anchors)
            matched_idxs, anchor_labels = self.anchor_matcher(quality)
            del quality
            if len(gt) > 0:
                boxes_i = gt.gt_boxes.tensor[matched_idxs]
                labels_i = gt.gt_classes[matched_idxs]
                labels_i[anchor_labels == 0] = self.num_classes
                labels_i[anchor_labels == -1] = -1
            else:
                boxes_i = torch.zeros_like(anchors.tensor)
                labels_i = torch.zeros_like(matched_idxs) + self.num_classes
            gt_labels.append(labels_i)
            matched_boxes.append(boxes_i)
        return gt_labels, matched_boxes

    def forward_inference(
        self, images: ImageList, features: list[torch.Tensor], predictions: list[list[torch.Tensor]]
    ) -> list[Instances]:
        """Per image, detections at the network input resolution."""
        logits, deltas = self._transpose_dense_predictions(predictions, [self.num_classes, 4])
        anchors = self.anchor_generator(features)
        results: list[Instances] = []
        for i, image_size in enumerate(images.image_sizes):
            scores_i = [x[i].sigmoid() for x in logits]
            deltas_i = [x[i] for x in deltas]
            results.append(self.inference_single_image(anchors, scores_i, deltas_i, image_size))
        return results

    def inference_single_image(
        self,
        anchors: list[Boxes],
        box_cls: list[torch.Tensor],
        box_delta: list[torch.Tensor],
        image_size: tuple[int, int],
    ) -> Instances:
        """Detections of one image: per-level candidates (score threshold, top-k), then per-class NMS over
        all levels and the ``max_detections_per_image`` best.

        Args:
            anchors: per level, ``Hi*Wi*A`` anchors.
            box_cls: per level, ``(Hi*Wi*A, K)`` class probabilities.
            box_delta: per level, ``(Hi*Wi*A, 4)`` deltas.
            image_size: ``(height, width)``.
        """
        pred = self._decode_multi_level_predictions(
            anchors, box_cls, box_delta, self.test_score_thresh, self.test_topk_candidates, image_size
        )
        keep = batched_nms(pred.pred_boxes.tensor, pred.scores, pred.pred_classes, self.test_nms_thresh)
        return pred[keep[: self.max_detections_per_image]]


class _CycleBatchNorm:
    """``get_norm``-style factory of a :class:`CycleBatchNormList` (one BN per FPN level), picklable."""

    def __init__(self, length: int, bn_class: type):
        self.length = length
        self.bn_class = bn_class

    def __call__(self, channels: int) -> nn.Module:
        return CycleBatchNormList(length=self.length, bn_class=self.bn_class, num_features=channels)


class RetinaNetHead(nn.Module):
    """RetinaNet's head, shared by all levels: two subnets of 3x3 conv + ReLU (``cls_subnet``,
    ``bbox_subnet``), then ``cls_score`` (``A*K`` logits) and ``bbox_pred`` (``A*4`` deltas)."""

    def __init__(
        self,
        *,
        input_shape: list[ShapeSpec],
        num_classes: int,
        num_anchors: int,
        conv_dims: list[int],
        norm: str = "",
        prior_prob: float = 0.01,
    ):
        """
        Args:
            input_shape: shape of each input level (all must have the same channels).
            num_classes: foreground classes ``K``.
            num_anchors: anchors per position ``A`` (the same on every level).
            conv_dims: output channels of the subnet convs.
            norm: normalisation after each subnet conv; ``"BN"``/``"SyncBN"`` use separate statistics per
                level (shared affine parameters are not used), other values go through ``get_norm``.
            prior_prob: initial foreground probability of every anchor (sets the ``cls_score`` bias).
        """
        super().__init__()
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ValueError(f"RetinaNetHead: every input level must have the same channels, got {input_shape}.")
        self._num_features = len(input_shape)
        if norm in ("BN", "SyncBN"):
            norm = _CycleBatchNorm(self._num_features, nn.BatchNorm2d if norm == "BN" else nn.SyncBatchNorm)
        cls_subnet: list[nn.Module] = []
        bbox_subnet: list[nn.Module] = []
        for cin, cout in zip([input_shape[0].channels] + list(conv_dims), conv_dims):
            for subnet in (cls_subnet, bbox_subnet):
                subnet.append(nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1))
                if norm:
                    subnet.append(get_norm(norm, cout))
                subnet.append(nn.ReLU())
        self.cls_subnet = nn.Sequential(*cls_subnet)
        self.bbox_subnet = nn.Sequential(*bbox_subnet)
        last = conv_dims[-1] if len(conv_dims) else input_shape[0].channels
        self.cls_score = nn.Conv2d(last, num_anchors * num_classes, kernel_size=3, stride=1, padding=1)
        self.bbox_pred = nn.Conv2d(last, num_anchors * 4, kernel_size=3, stride=1, padding=1)
        for module in (self.cls_subnet, self.bbox_subnet, self.cls_score, self.bbox_pred):
            for layer in module.modules():
                if isinstance(layer, nn.Conv2d):
                    nn.init.normal_(layer.weight, mean=0, std=0.01)
                    nn.init.constant_(layer.bias, 0)
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """
        Args:
            features: per level, ``(N, C, Hi, Wi)``.

        Returns:
            per level, logits ``(N, A*K, Hi, Wi)``; per level, deltas ``(N, A*4, Hi, Wi)``.
        """
        if len(features) != self._num_features:
            raise ValueError(f"RetinaNetHead: built for {self._num_features} levels, got {len(features)}.")
        logits = [self.cls_score(self.cls_subnet(x)) for x in features]
        deltas = [self.bbox_pred(self.bbox_subnet(x)) for x in features]
        return logits, deltas

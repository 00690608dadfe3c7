"""FCOS: a simple and strong anchor-free object detector (https://arxiv.org/abs/2006.09214).

One "anchor point" per feature-map location, represented (as in detectron2) by a square box of side equal
to the level's stride centred on the point, so the dense-detector machinery (anchors, box transforms,
``_dense_box_regression_loss``) is shared with RetinaNet.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from libdet.layers import ShapeSpec, batched_nms
from libdet.layers.losses import sigmoid_focal_loss_jit
from libdet.structures import Boxes, ImageList, Instances, pairwise_point_box_distance
from libdet.utils.events import get_event_storage, has_event_storage

from ..anchor_generator import DefaultAnchorGenerator
from ..box_regression import Box2BoxTransformLinear, _dense_box_regression_loss
from .dense_detector import DenseDetector
from .retinanet import RetinaNetHead

__all__ = ["FCOS", "FCOSHead"]


class FCOS(DenseDetector):
    """FCOS with center sampling, multi-level size ranges, GIoU box loss and a centerness branch.

    Training losses (each summed, then divided by an exponential moving average of the number of
    positive points per batch, momentum 0.9, start 300): ``loss_fcos_cls`` (sigmoid focal loss over all
    points), ``loss_fcos_loc`` (GIoU over positive points), ``loss_fcos_ctr`` (binary cross-entropy of the
    centerness logit vs the centerness target, over positive points). At inference the score of a
    (point, class) pair is ``sqrt(sigmoid(cls_logit) * sigmoid(ctrness_logit))``.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        head: nn.Module,
        head_in_features: list[str] | None = None,
        box2box_transform: Box2BoxTransformLinear | None = None,
        num_classes: int,
        center_sampling_radius: float = 1.5,
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        test_score_thresh: float = 0.2,
        test_topk_candidates: int = 1000,
        test_nms_thresh: float = 0.6,
        max_detections_per_image: int = 100,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
    ):
        """
        Args:
            backbone: a :class:`Backbone` (usually an FPN with P3-P7); its ``output_shape()`` strides give
                the anchor points.
            head: maps the feature list to ``(logits, deltas, ctrness)``, per level ``(N, K, Hi, Wi)``,
                ``(N, 4, Hi, Wi)`` and ``(N, 1, Hi, Wi)``, e.g. :class:`FCOSHead`.
            head_in_features: backbone features to use, e.g. ``["p3", ..., "p7"]``; default: all, by stride.
            box2box_transform: the (l, t, r, b) encoding; default
                ``Box2BoxTransformLinear(normalize_by_size=True)`` (distances in units of the stride).
            num_classes: foreground classes ``K``.
            center_sampling_radius: a point is positive for a gt box only if it lies within
                ``radius * stride`` of the box centre (in x and y); 0 disables center sampling.
            focal_loss_alpha, focal_loss_gamma: focal loss parameters.
            test_score_thresh: candidates need ``sqrt(cls * ctrness)`` above it.
            test_topk_candidates: candidates kept per level before NMS.
            test_nms_thresh: IoU threshold of the per-class NMS.
            max_detections_per_image: detections kept per image.
            pixel_mean, pixel_std: per-channel normalisation of the input images.
        """
        super().__init__(backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std)
        self.num_classes = num_classes
        shapes = backbone.output_shape()
        missing = [f for f in self.head_in_features if f not in shapes]
        if missing:
            raise ValueError(f"FCOS: head_in_features {missing} are not among the backbone outputs {sorted(shapes)}.")
        strides = [shapes[f].stride for f in self.head_in_features]
        # One anchor point per location: a stride x stride box centred at (index + 0.5) * stride.
        self.anchor_generator = DefaultAnchorGenerator(
            sizes=[[s] for s in strides], aspect_ratios=[1.0], strides=strides, offset=0.5
        )
        if box2box_transform is None:
            box2box_transform = Box2BoxTransformLinear(normalize_by_size=True)
        self.box2box_transform = box2box_transform
        if center_sampling_radius < 0:
            raise ValueError(f"FCOS: `center_sampling_radius` must be >= 0, got {center_sampling_radius}.")
        self.center_sampling_radius = float(center_sampling_radius)
        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma
        self.test_score_thresh = test_score_thresh
        self.test_topk_candidates = test_topk_candidates
        self.test_nms_thresh = test_nms_thresh
        self.max_detections_per_image = max_detections_per_image

    def forward_training(
        self,
        images: ImageList,
        features: list[torch.Tensor],
        predictions: list[list[torch.Tensor]],
        gt_instances: list[Instances],
    ) -> dict[str, torch.Tensor]:
        """``{"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}`` of a training batch."""
        logits, deltas, ctrness = self._transpose_dense_predictions(predictions, [self.num_classes, 4, 1])
        anchors = self.anchor_generator(features)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        return self.losses(anchors, logits, gt_labels, deltas, gt_boxes, ctrness)

    @torch.no_grad()
    def _match_anchors(self, gt_boxes: Boxes, anchors: list[Boxes]) -> torch.Tensor:
        """Which gt box each anchor point may be assigned to.

        A point of level ``i`` (stride ``s``) is a candidate for a gt box when (1) it lies strictly inside
        the box, (2) with center sampling, within ``center_sampling_radius * s`` of the box centre in both
        x and y, and (3) its largest distance to the box sides is in ``(4s, 8s)`` (the first level has no
        lower bound, the last level no upper bound).

        Args:
            gt_boxes: ``M`` gt boxes of one image.
            anchors: per level, the anchor boxes (side = stride).

        Returns:
            ``(M, R)`` float quality: ``1e8 - area(gt)`` where a candidate, else 0 (so the arg-max picks the
            smallest candidate box).
        """
        num_first, num_last = len(anchors[0]), len(anchors[-1])
        anchors_all = Boxes.cat(anchors)
        centers = anchors_all.get_centers()  # (R, 2)
        sizes = anchors_all.tensor[:, 2] - anchors_all.tensor[:, 0]  # (R,) = stride of each point

        lower = sizes * 4
        lower[:num_first] = 0
        upper = sizes * 8
        upper[len(sizes) - num_last :] = float("inf")

        candidate = torch.ones(len(gt_boxes), len(sizes), dtype=torch.bool, device=sizes.device)
        if self.center_sampling_radius > 0:
            center_dist = (centers[None, :, :] - gt_boxes.get_centers()[:, None, :]).abs()  # (M, R, 2)
            candidate &= center_dist.max(dim=2).values < self.center_sampling_radius * sizes[None, :]

        dist = pairwise_point_box_distance(centers, gt_boxes).permute(1, 0, 2)  # (M, R, 4)
        candidate &= dist.min(dim=2).values > 0
        max_dist = dist.max(dim=2).values
        candidate &= (max_dist > lower[None, :]) & (max_dist < upper[None, :])

        return candidate.to(torch.float32) * (1e8 - gt_boxes.area()[:, None])

    @torch.no_grad()
    def label_anchors(
        self, anchors: list[Boxes], gt_instances: list[Instances]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Assign every anchor point of every image to a gt box (the smallest candidate) or background.

        Args:
            anchors: per level, the anchor boxes shared by all images.
            gt_instances: per image, :class:`Instances` with ``gt_boxes`` and ``gt_classes``.

        Returns:
            per image, ``(R,)`` int64 labels (gt class, or ``num_classes`` for background); and per image,
            ``(R, 4)`` matched gt boxes (those of background points are meaningless, zeros without gt).
        """
        num_anchors = sum(len(a) for a in anchors)
        device = anchors[0].tensor.device
        gt_labels, matched_boxes = [], []
        for i, gt in enumerate(gt_instances):
            if not (gt.has("gt_boxes") and gt.has("gt_classes")):
                raise ValueError(f"FCOS: the ground truth of image {i} needs `gt_boxes` and `gt_classes`.")
            if len(gt) == 0:
                gt_labels.append(torch.full((num_anchors,), self.num_classes, dtype=torch.int64, device=device))
                matched_boxes.append(torch.zeros(num_anchors, 4, device=device))
                continue
            quality, matched = self._match_anchors(gt.gt_boxes, anchors).max(dim=0)  # (R,) each
            labels = gt.gt_classes[matched].clone()
            labels[quality < 1e-5] = self.num_classes
            gt_labels.append(labels)
            matched_boxes.append(gt.gt_boxes.tensor[matched])
        return gt_labels, matched_boxes

    def compute_ctrness_targets(self, anchors: list[Boxes], gt_boxes: list[torch.Tensor]) -> torch.Tensor:
        """Centerness ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` of every anchor point w.r.t.
        its matched gt box (meaningful only for points inside their box).

        Args:
            anchors: per level, the anchor boxes.
            gt_boxes: per image, ``(R, 4)`` matched gt boxes.

        Returns:
            ``(N, R)`` targets in ``[0, 1]`` for positive points.
        """
        anchors_t = Boxes.cat(anchors).tensor
        if len(gt_boxes) == 0:
            return anchors_t.new_zeros(0, len(anchors_t))
        ltrb = torch.stack([self.box2box_transform.get_deltas(anchors_t, b) for b in gt_boxes])  # (N, R, 4)
        left_right = ltrb[:, :, [0, 2]]
        top_bottom = ltrb[:, :, [1, 3]]
        ratio = (left_right.min(dim=-1).values / left_right.max(dim=-1).values) * (
            top_bottom.min(dim=-1).values / top_bottom.max(dim=-1).values
        )
        return torch.sqrt(ratio)

    def losses(
        self,
        anchors: list[Boxes],
        pred_logits: list[torch.Tensor],
        gt_labels: list[torch.Tensor],
        pred_anchor_deltas: list[torch.Tensor],
        gt_boxes: list[torch.Tensor],
        pred_centerness: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """The three FCOS losses (see the class docstring).

        Args:
            anchors: per level, ``Ri`` anchor boxes.
            pred_logits: per level, ``(N, Ri, K)``.
            gt_labels: per image, ``(R,)`` labels (``K`` = background).
            pred_anchor_deltas: per level, ``(N, Ri, 4)``.
            gt_boxes: per image, ``(R, 4)`` matched gt boxes.
            pred_centerness: per level, ``(N, Ri, 1)`` logits.
        """
        labels = torch.stack(gt_labels)  # (N, R)
        pos = (labels >= 0) & (labels != self.num_classes)
        num_pos = int(pos.sum().item())
        if has_event_storage():
            get_event_storage().put_scalar("num_pos_anchors", num_pos / len(gt_labels))
        normalizer = self._ema_update("loss_normalizer", max(num_pos, 1), 300)

        logits = torch.cat(pred_logits, dim=1)
        targets = F.one_hot(labels.clamp(min=0), num_classes=self.num_classes + 1)[:, :, :-1]
        loss_cls = sigmoid_focal_loss_jit(
            logits, targets.to(logits.dtype), alpha=self.focal_loss_alpha, gamma=self.focal_loss_gamma, reduction="sum"
        )
        loss_box_reg = _dense_box_regression_loss(
            anchors, self.box2box_transform, pred_anchor_deltas, gt_boxes, pos, box_reg_loss_type="giou"
        )
        ctrness_targets = self.compute_ctrness_targets(anchors, gt_boxes)  # (N, R)
        ctrness = torch.cat(pred_centerness, dim=1).squeeze(dim=2)  # (N, R)
        loss_ctr = F.binary_cross_entropy_with_logits(
            ctrness[pos], ctrness_targets[pos].to(ctrness.dtype), reduction="sum"
        )
        return {
            "loss_fcos_cls": loss_cls / normalizer,
            "loss_fcos_loc": loss_box_reg / normalizer,
            "loss_fcos_ctr": loss_ctr / normalizer,
        }

    def forward_inference(
        self, images: ImageList, features: list[torch.Tensor], predictions: list[list[torch.Tensor]]
    ) -> list[Instances]:
        """Per image, detections at the network input resolution."""
        logits, deltas, ctrness = self._transpose_dense_predictions(predictions, [self.num_classes, 4, 1])
        anchors = self.anchor_generator(features)
        results: list[Instances] = []
        for i, image_size in enumerate(images.image_sizes):
            scores_i = [self.combine_scores(x[i], c[i]) for x, c in zip(logits, ctrness)]
            deltas_i = [x[i] for x in deltas]
            results.append(self.inference_single_image(anchors, scores_i, deltas_i, image_size))
        return results

    @staticmethod
    def combine_scores(cls_logits: torch.Tensor, ctrness_logits: torch.Tensor) -> torch.Tensor:
        """Detection score ``sqrt(sigmoid(cls) * sigmoid(ctrness))`` (eq. 4 of the FCOS journal paper).

        Args:
            cls_logits: ``(R, K)`` class logits.
            ctrness_logits: ``(R, 1)`` centerness logits.

        Returns:
            ``(R, K)`` scores.
        """
        return torch.sqrt(cls_logits.sigmoid() * ctrness_logits.sigmoid())

    def inference_single_image(
        self,
        anchors: list[Boxes],
        box_cls: list[torch.Tensor],
        box_delta: list[torch.Tensor],
        image_size: tuple[int, int],
    ) -> Instances:
        """Detections of one image: per-level candidates (score threshold, top-k), per-class NMS over all
        levels, then the ``max_detections_per_image`` best.

        Args:
            anchors: per level, ``Ri`` anchor boxes.
            box_cls: per level, ``(Ri, K)`` combined scores.
            box_delta: per level, ``(Ri, 4)`` (l, t, r, b) predictions.
            image_size: ``(height, width)``.
        """
        pred = self._decode_multi_level_predictions(
            anchors, box_cls, box_delta, self.test_score_thresh, self.test_topk_candidates, image_size
        )
        keep = batched_nms(pred.pred_boxes.tensor, pred.scores, pred.pred_classes, self.test_nms_thresh)
        return pred[keep[: self.max_detections_per_image]]


class FCOSHead(RetinaNetHead):
    """:class:`RetinaNetHead` with one anchor per location and an extra ``ctrness`` conv (one logit per
    location) on the box subnet's features."""

    def __init__(
        self,
        *,
        input_shape: list[ShapeSpec],
        num_classes: int,
        conv_dims: list[int],
        norm: str = "",
        prior_prob: float = 0.01,
    ):
        """
        Args:
            input_shape: shape of each input level (all with the same channels).
            num_classes: foreground classes ``K``.
            conv_dims: output channels of the subnet convs (at least one).
            norm: normalisation after each subnet conv (FCOS uses ``"GN"``).
            prior_prob: initial foreground probability (sets the ``cls_score`` bias).
        """
        if len(conv_dims) == 0:
            raise ValueError("FCOSHead: `conv_dims` must have at least one conv.")
        super().__init__(
            input_shape=input_shape,
            num_classes=num_classes,
            num_anchors=1,
            conv_dims=conv_dims,
            norm=norm,
            prior_prob=prior_prob,
        )
        self.ctrness = nn.Conv2d(conv_dims[-1], 1, kernel_size=3, stride=1, padding=1)
        nn.init.normal_(self.ctrness.weight, std=0.01)
        nn.init.constant_(self.ctrness.bias, 0)

    def forward(
        self, features: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """
        Args:
            features: per level, ``(N, C, Hi, Wi)``.

        Returns:
            per level: logits ``(N, K, Hi, Wi)``; box predictions ``(N, 4, Hi, Wi)``; centerness logits
            ``(N, 1, Hi, Wi)``.
        """
        if len(features) != self._num_features:
            raise ValueError(f"FCOSHead: built for {self._num_features} levels, got {len(features)}.")
        logits, deltas, ctrness = [], [], []
        for x in features:
            logits.append(self.cls_score(self.cls_subnet(x)))
            box_feature = self.bbox_subnet(x)
            deltas.append(self.bbox_pred(box_feature))
            ctrness.append(self.ctrness(box_feature))
        return logits, deltas, ctrness

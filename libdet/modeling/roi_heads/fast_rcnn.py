"""The Fast R-CNN box predictor: per-ROI class scores and class-specific box deltas, their losses, and
the inference that turns them into detections (score threshold, per-class NMS, top-k)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from libdet.layers import ShapeSpec, batched_nms, cat, cross_entropy, nonzero_tuple
from libdet.structures import Boxes, Instances
from libdet.utils.events import get_event_storage, has_event_storage

from ..box_regression import Box2BoxTransform, _dense_box_regression_loss

__all__ = ["fast_rcnn_inference", "fast_rcnn_inference_single_image", "FastRCNNOutputLayers"]


def fast_rcnn_inference(
    boxes: list[torch.Tensor],
    scores: list[torch.Tensor],
    image_shapes: list[tuple[int, int]],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
) -> tuple[list[Instances], list[torch.Tensor]]:
    """Detections of every image: :func:`fast_rcnn_inference_single_image` applied to each.

    Args:
        boxes: per image, ``(R_i, K*4)`` (class-specific) or ``(R_i, 4)`` (class-agnostic) boxes.
        scores: per image, ``(R_i, K+1)`` class probabilities, background last.
        image_shapes: per image, ``(height, width)``.
        score_thresh: only (box, class) pairs with score ``> score_thresh`` are kept.
        nms_thresh: IoU threshold of the per-class NMS.
        topk_per_image: detections kept per image (by score); negative keeps all.

    Returns:
        per image, :class:`Instances` with ``pred_boxes``, ``scores``, ``pred_classes``; and per image,
        the ``(D,)`` index of the ROI each detection came from.
    """
    results = [
        fast_rcnn_inference_single_image(b, s, shape, score_thresh, nms_thresh, topk_per_image)
        for b, s, shape in zip(boxes, scores, image_shapes)
    ]
    return [r[0] for r in results], [r[1] for r in results]


def fast_rcnn_inference_single_image(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    image_shape: tuple[int, int],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
) -> tuple[Instances, torch.Tensor]:
    """Detections of one image. ROIs with a non-finite box or score are dropped, boxes are clipped to the
    image, every (ROI, class) pair with score ``> score_thresh`` is a candidate, NMS runs per class, and
    the ``topk_per_image`` highest-scoring survivors are returned by decreasing score.

    Args:
        boxes: ``(R, K*4)`` or ``(R, 4)`` predicted boxes.
        scores: ``(R, K+1)`` class probabilities, background last.
        image_shape: ``(height, width)``.
        score_thresh, nms_thresh, topk_per_image: see :func:`fast_rcnn_inference`.

    Returns:
        :class:`Instances` with ``pred_boxes`` (``D`` boxes), ``scores`` ``(D,)``, ``pred_classes``
        ``(D,)``; and the ``(D,)`` ROI index of each detection (into the finite ROIs).
    """
    if torch.jit.is_scripting():
        return _select_detections_scripted(boxes, scores, image_shape, score_thresh, nms_thresh, topk_per_image)
    return _select_detections(
        boxes, scores, image_shape, score_thresh, nms_thresh, topk_per_image, box_type=Boxes, box_dim=4, nms=batched_nms
    )


def _select_detections_scripted(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    image_shape: tuple[int, int],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
) -> tuple[Instances, torch.Tensor]:
    """:func:`_select_detections` for axis-aligned boxes in what TorchScript compiles (it cannot take the box
    type and the NMS as arguments); the same steps, the same results."""
    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    if not bool(valid.all()):
        boxes, scores = boxes[valid], scores[valid]
    scores = scores[:, :-1]  # drop background
    num_reg_classes = boxes.shape[1] // 4
    clipped = Boxes(boxes.reshape(-1, 4))
    clipped.clip(image_shape)
    boxes = clipped.tensor.view(-1, num_reg_classes, 4)  # (R, K or 1, 4)

    candidate = scores > score_thresh  # (R, K)
    candidate_idx = candidate.nonzero()  # (C, 2): (roi index, class)
    if num_reg_classes == 1:
        boxes = boxes[candidate_idx[:, 0], 0]
    else:
        boxes = boxes[candidate]
    scores = scores[candidate]

    keep = batched_nms(boxes, scores, candidate_idx[:, 1], nms_thresh)
    if topk_per_image >= 0:
        keep = keep[:topk_per_image]
    boxes, scores, candidate_idx = boxes[keep], scores[keep], candidate_idx[keep]
    result = Instances(image_shape)
    result.pred_boxes = Boxes(boxes)
    result.scores = scores
    result.pred_classes = candidate_idx[:, 1]
    return result, candidate_idx[:, 0]


def _select_detections(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    image_shape: tuple[int, int],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
    *,
    box_type: type,
    box_dim: int,
    nms: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor],
) -> tuple[Instances, torch.Tensor]:
    """The steps of :func:`fast_rcnn_inference_single_image` for any box type: ``box_type`` (:class:`Boxes`,
    :class:`RotatedBoxes`) clips the ``(R, K*D)`` / ``(R, D)`` boxes (``D = box_dim``) and holds the result,
    ``nms`` is the matching batched NMS."""
    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    if not bool(valid.all()):
        boxes, scores = boxes[valid], scores[valid]
    scores = scores[:, :-1]  # drop background
    num_reg_classes = boxes.shape[1] // box_dim
    clipped = box_type(boxes.reshape(-1, box_dim))
    clipped.clip(image_shape)
    boxes = clipped.tensor.view(-1, num_reg_classes, box_dim)  # (R, K or 1, D)

    candidate = scores > score_thresh  # (R, K)
    candidate_idx = candidate.nonzero()  # (C, 2): (roi index, class)
    if num_reg_classes == 1:
        boxes = boxes[candidate_idx[:, 0], 0]
    else:
        boxes = boxes[candidate]
    scores = scores[candidate]

    keep = nms(boxes, scores, candidate_idx[:, 1], nms_thresh)
    if topk_per_image >= 0:
        keep = keep[:topk_per_image]
    boxes, scores, candidate_idx = boxes[keep], scores[keep], candidate_idx[keep]
    result = Instances(image_shape)
    result.pred_boxes = box_type(boxes)
    result.scores = scores
    result.pred_classes = candidate_idx[:, 1]
    return result, candidate_idx[:, 0]


def _log_classification_stats(scores: torch.Tensor, gt_classes: torch.Tensor, num_classes: int) -> None:
    """Put ``fast_rcnn/cls_accuracy``, ``fg_cls_accuracy`` and ``false_negative`` in the event storage, when
    one is active (under a trainer)."""
    if not has_event_storage() or gt_classes.numel() == 0:
        return
    pred = scores.argmax(dim=1)
    fg = (gt_classes >= 0) & (gt_classes < num_classes)
    storage = get_event_storage()
    # a tensor: read when metrics are written (the foreground count below is read now: it decides what is logged)
    storage.put_scalar("fast_rcnn/cls_accuracy", (pred == gt_classes).float().mean())
    num_fg = int(fg.sum())
    if num_fg > 0:
        storage.put_scalar("fast_rcnn/fg_cls_accuracy", (pred[fg] == gt_classes[fg]).sum().item() / num_fg)
        storage.put_scalar("fast_rcnn/false_negative", (pred[fg] == num_classes).sum().item() / num_fg)


def _num_proposals(proposals: list[Instances]) -> list[int]:
    """Proposals per image, read from the boxes' shape: while tracing, ``tensor.shape[0]`` stays tied to the
    input (``len()`` would freeze the traced graph to the example's counts)."""
    return [p.proposal_boxes.tensor.shape[0] if p.has("proposal_boxes") else len(p) for p in proposals]


class FastRCNNOutputLayers(nn.Module):
    """Two linear layers on per-ROI features: ``cls_score`` (``K + 1`` logits, background last) and
    ``bbox_pred`` (``K * 4`` class-specific deltas, or 4 class-agnostic)."""

    def __init__(
        self,
        input_shape: int | ShapeSpec,
        *,
        box2box_transform: Box2BoxTransform,
        num_classes: int,
        test_score_thresh: float = 0.0,
        test_nms_thresh: float = 0.5,
        test_topk_per_image: int = 100,
        cls_agnostic_bbox_reg: bool = False,
        smooth_l1_beta: float = 0.0,
        box_reg_loss_type: str = "smooth_l1",
        loss_weight: float | dict[str, float] = 1.0,
        use_fed_loss: bool = False,
        use_sigmoid_ce: bool = False,
        get_fed_loss_cls_weights: Callable[[], torch.Tensor] | torch.Tensor | None = None,
        fed_loss_num_classes: int = 50,
    ):
        """
        Args:
            input_shape: shape of the per-ROI features (channels x height x width are flattened), or
                their number of channels.
            box2box_transform: encodes/decodes box deltas.
            num_classes: number of foreground classes ``K``.
            test_score_thresh: detections need a score above it.
            test_nms_thresh: IoU threshold of the per-class NMS at inference.
            test_topk_per_image: detections kept per image (negative: all).
            cls_agnostic_bbox_reg: predict one box per ROI instead of one per class.
            smooth_l1_beta: beta of the smooth-L1 box loss (0 = L1).
            box_reg_loss_type: ``"smooth_l1"``, ``"giou"``, ``"diou"`` or ``"ciou"``.
            loss_weight: a weight for both losses, or ``{"loss_cls": w, "loss_box_reg": w}``.
            use_fed_loss: federated loss (LVIS): the sigmoid CE only covers the image's gt classes plus
                sampled negatives; requires ``use_sigmoid_ce``.
            use_sigmoid_ce: per-class sigmoid cross-entropy instead of softmax cross-entropy.
            get_fed_loss_cls_weights: ``(K,)`` sampling weight of each class for the federated loss, or
                a function returning it; required with ``use_fed_loss``.
            fed_loss_num_classes: classes covered by the federated loss per iteration.
        """
        super().__init__()
        if isinstance(input_shape, int):
            input_shape = ShapeSpec(channels=input_shape)
        self.num_classes = num_classes
        input_size = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        self.cls_score = nn.Linear(input_size, num_classes + 1)
        num_reg_classes = 1 if cls_agnostic_bbox_reg else num_classes
        box_dim = len(box2box_transform.weights)
        self.bbox_pred = nn.Linear(input_size, num_reg_classes * box_dim)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        for layer in (self.cls_score, self.bbox_pred):
            nn.init.constant_(layer.bias, 0)

        self.box2box_transform = box2box_transform
        self.smooth_l1_beta = smooth_l1_beta
        self.test_score_thresh = test_score_thresh
        self.test_nms_thresh = test_nms_thresh
        self.test_topk_per_image = test_topk_per_image
        self.box_reg_loss_type = box_reg_loss_type
        if isinstance(loss_weight, (int, float)):
            loss_weight = {"loss_cls": float(loss_weight), "loss_box_reg": float(loss_weight)}
        self.loss_weight = dict(loss_weight)
        self.use_fed_loss = use_fed_loss
        self.use_sigmoid_ce = use_sigmoid_ce
        self.fed_loss_num_classes = fed_loss_num_classes
        if use_fed_loss:
            if not use_sigmoid_ce:
                raise ValueError("FastRCNNOutputLayers: `use_fed_loss=True` requires `use_sigmoid_ce=True`.")
            if get_fed_loss_cls_weights is None:
                raise ValueError(
                    "FastRCNNOutputLayers: `use_fed_loss=True` requires `get_fed_loss_cls_weights` (a (K,) "
                    "tensor of class sampling weights or a function returning one)."
                )
            weights = get_fed_loss_cls_weights() if callable(get_fed_loss_cls_weights) else get_fed_loss_cls_weights
            weights = torch.as_tensor(weights, dtype=torch.float32)
            if weights.shape != (num_classes,):
                raise ValueError(
                    f"FastRCNNOutputLayers: `get_fed_loss_cls_weights` gave shape {tuple(weights.shape)}, "
                    f"expected ({num_classes},) (one weight per class)."
                )
            self.register_buffer("fed_loss_cls_weights", weights)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x: ``(R, C, H, W)`` or ``(R, D)`` per-ROI features.

        Returns:
            scores ``(R, K+1)`` logits and deltas ``(R, K*4)`` (or ``(R, 4)``).
        """
        if x.dim() > 2:
            x = torch.flatten(x, start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)

    def losses(
        self, predictions: tuple[torch.Tensor, torch.Tensor], proposals: list[Instances]
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            predictions: output of :meth:`forward`.
            proposals: the sampled proposals the predictions were made on, with ``proposal_boxes``,
                ``gt_classes`` (background = ``K``) and, for images with ground truth, ``gt_boxes``.

        Returns:
            ``loss_cls`` (mean over the ROIs) and ``loss_box_reg`` (summed over foreground ROIs, divided
            by the number of ROIs), scaled by ``loss_weight``.
        """
        scores, deltas = predictions
        if len(proposals):
            gt_classes = cat([p.gt_classes for p in proposals], dim=0)
            proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
            gt_boxes = cat([(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals], dim=0)
        else:
            gt_classes = torch.empty(0, dtype=torch.int64, device=scores.device)
            proposal_boxes = gt_boxes = torch.empty((0, 4), device=deltas.device)
        _log_classification_stats(scores, gt_classes, self.num_classes)
        if self.use_sigmoid_ce:
            loss_cls = self.sigmoid_cross_entropy_loss(scores, gt_classes)
        else:
            loss_cls = cross_entropy(scores, gt_classes, reduction="mean")
        losses = {
            "loss_cls": loss_cls,
            "loss_box_reg": self.box_reg_loss(proposal_boxes, gt_boxes, deltas, gt_classes),
        }
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}

    @staticmethod
    def get_fed_loss_classes(
        gt_classes: torch.Tensor, num_fed_loss_classes: int, num_classes: int, weight: torch.Tensor
    ) -> torch.Tensor:
        """The classes the federated loss covers: every gt class of the batch, plus negatives sampled
        without replacement with probability proportional to ``weight`` until there are
        ``num_fed_loss_classes`` (background never counts).

        Args:
            gt_classes: ``(R,)`` classes of the ROIs (``num_classes`` = background).
            num_fed_loss_classes: how many classes to cover.
            num_classes: ``K``.
            weight: ``(K,)`` sampling weights.

        Returns:
            1-D int64 tensor of class ids.
        """
        unique = torch.unique(gt_classes)
        prob = unique.new_ones(num_classes + 1).float()
        prob[-1] = 0
        if len(unique) < num_fed_loss_classes:
            prob[:num_classes] = weight.float().clone()
            prob[unique] = 0
            sampled = torch.multinomial(prob, num_fed_loss_classes - len(unique), replacement=False)
            return torch.cat([unique, sampled])
        return unique

    def sigmoid_cross_entropy_loss(self, pred_class_logits: torch.Tensor, gt_classes: torch.Tensor) -> torch.Tensor:
        """Per-class binary cross-entropy over the ``K`` foreground logits (the background logit is
        unused), summed over classes and averaged over ROIs; with the federated loss only the sampled
        classes count.

        Args:
            pred_class_logits: ``(R, K+1)``.
            gt_classes: ``(R,)``, ``K`` for background.
        """
        if pred_class_logits.numel() == 0:
            return pred_class_logits.sum() * 0.0
        n = pred_class_logits.shape[0]
        k = pred_class_logits.shape[1] - 1
        target = pred_class_logits.new_zeros(n, k + 1)
        target[torch.arange(n, device=target.device), gt_classes] = 1
        target = target[:, :k]
        loss = F.binary_cross_entropy_with_logits(pred_class_logits[:, :-1], target, reduction="none")
        if self.use_fed_loss:
            classes = self.get_fed_loss_classes(gt_classes, self.fed_loss_num_classes, k, self.fed_loss_cls_weights)
            mask = classes.new_zeros(k + 1)
            mask[classes] = 1
            weight = mask[:k].view(1, k).expand(n, k).to(loss.dtype)
            loss = loss * weight
        return loss.sum() / n

    def box_reg_loss(
        self,
        proposal_boxes: torch.Tensor,
        gt_boxes: torch.Tensor,
        pred_deltas: torch.Tensor,
        gt_classes: torch.Tensor,
    ) -> torch.Tensor:
        """Box regression loss of the foreground ROIs (summed), divided by the number of ROIs.

        Args:
            proposal_boxes: ``(R, 4)``.
            gt_boxes: ``(R, 4)`` matched gt boxes (any value for background ROIs).
            pred_deltas: ``(R, K*4)`` or ``(R, 4)``.
            gt_classes: ``(R,)``.
        """
        box_dim = proposal_boxes.shape[1]
        fg = nonzero_tuple((gt_classes >= 0) & (gt_classes < self.num_classes))[0]
        if pred_deltas.shape[1] == box_dim:  # class-agnostic
            fg_deltas = pred_deltas[fg]
        else:
            fg_deltas = pred_deltas.view(-1, self.num_classes, box_dim)[fg, gt_classes[fg]]
        loss = _dense_box_regression_loss(
            [Boxes(proposal_boxes[fg])],
            self.box2box_transform,
            [fg_deltas.unsqueeze(0)],
            [gt_boxes[fg]],
            torch.ones((1, len(fg)), dtype=torch.bool, device=fg_deltas.device),
            box_reg_loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        return loss / max(gt_classes.numel(), 1.0)

    def inference(
        self, predictions: tuple[torch.Tensor, torch.Tensor], proposals: list[Instances]
    ) -> tuple[list[Instances], list[torch.Tensor]]:
        """Detections of every image (see :func:`fast_rcnn_inference`).

        Args:
            predictions: output of :meth:`forward`.
            proposals: per image, :class:`Instances` with ``proposal_boxes``.
        """
        boxes = self.predict_boxes(predictions, proposals)
        scores = self.predict_probs(predictions, proposals)
        image_shapes = [p.image_size for p in proposals]
        return fast_rcnn_inference(
            boxes, scores, image_shapes, self.test_score_thresh, self.test_nms_thresh, self.test_topk_per_image
        )

    def predict_boxes_for_gt_classes(
        self, predictions: tuple[torch.Tensor, torch.Tensor], proposals: list[Instances]
    ) -> list[torch.Tensor]:
        """Per image, the ``(R_i, 4)`` boxes predicted for each proposal's ``gt_classes`` (background is
        clamped to the last class; class-agnostic predictors return their single box)."""
        if not len(proposals):
            return []
        _, deltas = predictions
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
        n, b = proposal_boxes.shape
        boxes = self.box2box_transform.apply_deltas(deltas, proposal_boxes)  # (R, K*B)
        k = boxes.shape[1] // b
        if k > 1:
            gt_classes = cat([p.gt_classes for p in proposals], dim=0).clamp(0, k - 1)
            boxes = boxes.view(n, k, b)[torch.arange(n, dtype=torch.long, device=boxes.device), gt_classes]
        return boxes.split([len(p) for p in proposals])

    def predict_boxes(
        self, predictions: tuple[torch.Tensor, torch.Tensor], proposals: list[Instances]
    ) -> list[torch.Tensor]:
        """Per image, the ``(R_i, K*4)`` (or ``(R_i, 4)``) decoded boxes of each proposal."""
        if not len(proposals):
            return []
        _, deltas = predictions
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
        boxes = self.box2box_transform.apply_deltas(deltas, proposal_boxes)
        return boxes.split(_num_proposals(proposals))

    def predict_probs(
        self, predictions: tuple[torch.Tensor, torch.Tensor], proposals: list[Instances]
    ) -> list[torch.Tensor]:
        """Per image, the ``(R_i, K+1)`` class probabilities (softmax, or sigmoid with ``use_sigmoid_ce``)."""
        scores, _ = predictions
        probs = scores.sigmoid() if self.use_sigmoid_ce else F.softmax(scores, dim=-1)
        return probs.split(_num_proposals(proposals), dim=0)

"""Region Proposal Network (Faster R-CNN, https://arxiv.org/abs/1506.01497): a small conv head predicts,
for every anchor, an objectness logit and box deltas; the best decoded boxes become proposals."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from libdet.layers import Conv2d, cat
from libdet.structures import Boxes, ImageList, Instances, pairwise_iou
from libdet.utils.events import get_event_storage, has_event_storage

from ..box_regression import Box2BoxTransform, _dense_box_regression_loss
from ..matcher import Matcher
from ..registries import RPN_HEAD_REGISTRY  # noqa: F401 (detectron2 path; YAML names)
from ..sampling import subsample_labels
from .proposal_utils import find_top_rpn_proposals

__all__ = ["StandardRPNHead", "RPN"]


class StandardRPNHead(nn.Module):
    """The RPN head of Faster R-CNN: 3x3 conv(s) with ReLU shared by all levels, then two sibling 1x1
    convs predicting objectness logits and anchor deltas.

    State-dict names: ``conv`` (one conv) or ``conv.conv0``, ``conv.conv1``... (several),
    ``objectness_logits``, ``anchor_deltas``.
    """

    def __init__(self, *, in_channels: int, num_anchors: int, box_dim: int = 4, conv_dims: Sequence[int] = (-1,)):
        """
        Args:
            in_channels: channels of every input feature map (all levels must have the same).
            num_anchors: anchors per spatial position (``A``).
            box_dim: numbers per box (4 for axis-aligned boxes).
            conv_dims: output channels of each 3x3 conv; ``-1`` means "same as its input".
        """
        super().__init__()
        if len(conv_dims) == 0:
            raise ValueError("StandardRPNHead: `conv_dims` must name at least one conv layer.")
        cur = in_channels
        if len(conv_dims) == 1:
            out = cur if conv_dims[0] == -1 else conv_dims[0]
            self.conv = self._rpn_conv(cur, out)
            cur = out
        else:
            self.conv = nn.Sequential()
            for k, dim in enumerate(conv_dims):
                out = cur if dim == -1 else dim
                if out <= 0:
                    raise ValueError(f"StandardRPNHead: `conv_dims[{k}]` must be positive or -1, got {dim}.")
                self.conv.add_module(f"conv{k}", self._rpn_conv(cur, out))
                cur = out
        self.objectness_logits = nn.Conv2d(cur, num_anchors, kernel_size=1, stride=1)
        self.anchor_deltas = nn.Conv2d(cur, num_anchors * box_dim, kernel_size=1, stride=1)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.constant_(layer.bias, 0)

    @staticmethod
    def _rpn_conv(in_channels: int, out_channels: int) -> nn.Module:
        return Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, activation=nn.ReLU())

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """
        Args:
            features: ``L`` feature maps ``(N, C, Hi, Wi)``.

        Returns:
            objectness logits, ``L`` tensors ``(N, A, Hi, Wi)``; anchor deltas, ``L`` tensors
            ``(N, A*box_dim, Hi, Wi)``.
        """
        logits, deltas = [], []
        for x in features:
            t = self.conv(x)
            logits.append(self.objectness_logits(t))
            deltas.append(self.anchor_deltas(t))
        return logits, deltas


class RPN(nn.Module):
    """Region Proposal Network: labels and samples anchors against the ground truth in training, computes
    ``loss_rpn_cls`` / ``loss_rpn_loc``, and decodes + selects proposals for the ROI heads."""

    def __init__(
        self,
        *,
        in_features: list[str],
        head: nn.Module,
        anchor_generator: nn.Module,
        anchor_matcher: Matcher,
        box2box_transform: Box2BoxTransform,
        batch_size_per_image: int,
        positive_fraction: float,
        pre_nms_topk: tuple[int, int],
        post_nms_topk: tuple[int, int],
        nms_thresh: float = 0.7,
        min_box_size: float = 0.0,
        anchor_boundary_thresh: float = -1.0,
        loss_weight: float | dict[str, float] = 1.0,
        box_reg_loss_type: str = "smooth_l1",
        smooth_l1_beta: float = 0.0,
    ):
        """
        Args:
            in_features: names of the backbone features to use, e.g. ``["p2", ..., "p6"]``.
            head: maps the feature list to (objectness logits, anchor deltas), like :class:`StandardRPNHead`.
            anchor_generator: maps the feature list to per-level anchors (``list[Boxes]``).
            anchor_matcher: labels anchors foreground (1) / background (0) / ignored (-1) by IoU with gt.
            box2box_transform: encodes/decodes anchor deltas.
            batch_size_per_image: anchors sampled per image for the losses.
            positive_fraction: largest fraction of foreground anchors among the sampled ones.
            pre_nms_topk: proposals kept per level before NMS, ``(training, inference)``.
            post_nms_topk: proposals kept per image after NMS, ``(training, inference)``.
            nms_thresh: IoU threshold of the proposal NMS.
            min_box_size: proposals with a side ``<=`` this (in pixels) are removed.
            anchor_boundary_thresh: if ``>= 0``, anchors reaching more than this many pixels outside the
                image are ignored in training; ``-1`` keeps all anchors.
            loss_weight: a weight for both losses, or a dict ``{"loss_rpn_cls": w, "loss_rpn_loc": w}``.
            box_reg_loss_type: ``"smooth_l1"``, ``"giou"``, ``"diou"`` or ``"ciou"``.
            smooth_l1_beta: beta of the smooth-L1 loss (0 = L1).
        """
        super().__init__()
        if len(pre_nms_topk) != 2 or len(post_nms_topk) != 2:
            raise ValueError(
                "RPN: `pre_nms_topk` and `post_nms_topk` must be (training, inference) pairs, got "
                f"{pre_nms_topk} and {post_nms_topk}."
            )
        self.in_features = list(in_features)
        self.rpn_head = head
        self.anchor_generator = anchor_generator
        self.anchor_matcher = anchor_matcher
        self.box2box_transform = box2box_transform
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.pre_nms_topk = {True: int(pre_nms_topk[0]), False: int(pre_nms_topk[1])}
        self.post_nms_topk = {True: int(post_nms_topk[0]), False: int(post_nms_topk[1])}
        self.nms_thresh = nms_thresh
        self.min_box_size = float(min_box_size)
        self.anchor_boundary_thresh = anchor_boundary_thresh
        if isinstance(loss_weight, (int, float)):
            loss_weight = {"loss_rpn_cls": float(loss_weight), "loss_rpn_loc": float(loss_weight)}
        self.loss_weight = dict(loss_weight)
        self.box_reg_loss_type = box_reg_loss_type
        self.smooth_l1_beta = smooth_l1_beta

    def _subsample_labels(self, label: torch.Tensor) -> torch.Tensor:
        """Keep at most ``batch_size_per_image`` labels (1 or 0) at random; set the others to -1."""
        pos_idx, neg_idx = subsample_labels(label, self.batch_size_per_image, self.positive_fraction, 0)
        label.fill_(-1)
        label.scatter_(0, pos_idx, 1)
        label.scatter_(0, neg_idx, 0)
        return label

    def _match_quality(self, image_index: int, gt_boxes: Boxes, anchors: Boxes) -> torch.Tensor:
        """``(G, R)`` matching quality of the gt boxes of image ``image_index`` and the anchors: their IoU."""
        return pairwise_iou(gt_boxes, anchors)

    @torch.no_grad()
    def label_and_sample_anchors(
        self, anchors: list[Boxes], gt_instances: list[Instances]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Match anchors to ground truth and sample ``batch_size_per_image`` of them per image.

        Args:
            anchors: per level, the anchors (``Hi*Wi*A`` boxes) shared by every image.
            gt_instances: per image, :class:`Instances` with ``gt_boxes``.

        Returns:
            labels: per image, ``(R,)`` int tensor over all ``R`` anchors: 1 (sampled foreground), 0
            (sampled background) or -1 (ignored).
            matched_gt_boxes: per image, ``(R, 4)`` boxes of the gt matched to each anchor (zeros for an
            image without gt; meaningful only where the label is 1).
        """
        anchors = type(anchors[0]).cat(anchors)
        gt_labels, matched_gt_boxes = [], []
        for i, gt in enumerate(gt_instances):
            if not gt.has("gt_boxes"):
                raise ValueError(f"{type(self).__name__}: the ground truth of image {i} has no `gt_boxes` field.")
            gt_boxes = gt.gt_boxes
            quality = self._match_quality(i, gt_boxes, anchors)
            matched_idxs, labels = self.anchor_matcher(quality)
            labels = labels.to(device=gt_boxes.device)
            del quality
            if self.anchor_boundary_thresh >= 0:
                inside = anchors.inside_box(gt.image_size, self.anchor_boundary_thresh)
                labels[~inside] = -1
            labels = self._subsample_labels(labels)
            if len(gt_boxes) == 0:
                matched = torch.zeros_like(anchors.tensor)
            else:
                matched = gt_boxes[matched_idxs].tensor
            gt_labels.append(labels)
            matched_gt_boxes.append(matched)
        return gt_labels, matched_gt_boxes

    def losses(
        self,
        anchors: list[Boxes],
        pred_objectness_logits: list[torch.Tensor],
        gt_labels: list[torch.Tensor],
        pred_anchor_deltas: list[torch.Tensor],
        gt_boxes: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """The RPN losses, both summed over the sampled anchors and divided by
        ``batch_size_per_image * num_images``.

        Args:
            anchors: per level, ``Hi*Wi*A`` anchors.
            pred_objectness_logits: per level, ``(N, Hi*Wi*A)``.
            gt_labels: output of :meth:`label_and_sample_anchors`.
            pred_anchor_deltas: per level, ``(N, Hi*Wi*A, 4)``.
            gt_boxes: output of :meth:`label_and_sample_anchors`.

        Returns:
            ``{"loss_rpn_cls": binary cross-entropy of the sampled anchors, "loss_rpn_loc": box
            regression loss of the foreground anchors}``, scaled by ``loss_weight``.
        """
        num_images = len(gt_labels)
        labels = torch.stack(gt_labels)  # (N, R)
        pos_mask = labels == 1
        if has_event_storage():  # training statistics, when run under a trainer
            storage = get_event_storage()
            # tensors: read when metrics are written, not now (no device synchronisation)
            storage.put_scalar("rpn/num_pos_anchors", pos_mask.sum() / num_images)
            storage.put_scalar("rpn/num_neg_anchors", (labels == 0).sum() / num_images)
        loc_loss = _dense_box_regression_loss(
            anchors,
            self.box2box_transform,
            pred_anchor_deltas,
            gt_boxes,
            pos_mask,
            box_reg_loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        valid = labels >= 0
        logits = cat(pred_objectness_logits, dim=1)
        cls_loss = F.binary_cross_entropy_with_logits(logits[valid], labels[valid].to(logits.dtype), reduction="sum")
        normalizer = self.batch_size_per_image * num_images
        losses = {"loss_rpn_cls": cls_loss / normalizer, "loss_rpn_loc": loc_loss / normalizer}
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}

    def forward(
        self,
        images: ImageList,
        features: dict[str, torch.Tensor],
        gt_instances: list[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, torch.Tensor]]:
        """
        Args:
            images: the input batch (only ``image_sizes`` is used).
            features: backbone features by name, ``(N, C, Hi, Wi)`` each.
            gt_instances: per image, :class:`Instances` with ``gt_boxes``; required in training.

        Returns:
            proposals: per image, :class:`Instances` with ``proposal_boxes`` and ``objectness_logits``.
            losses: the RPN losses in training, else ``{}``.
        """
        missing: list[str] = []
        for f in self.in_features:  # a loop: TorchScript compiles no filtering comprehension
            if f not in features:
                missing.append(f)
        if len(missing) > 0:
            if torch.jit.is_scripting():  # TorchScript cannot build the message below
                raise ValueError("RPN: features are missing.")
            raise ValueError(f"RPN: features {missing} are missing; the backbone gives {sorted(features)}.")
        feats = [features[f] for f in self.in_features]
        anchors = self.anchor_generator(feats)
        logits, deltas = self.rpn_head(feats)
        # (N, A, Hi, Wi) -> (N, Hi*Wi*A): anchor order is (y, x, a), the anchor generator's order.
        logits = [x.permute(0, 2, 3, 1).flatten(1) for x in logits]
        # (N, A*B, Hi, Wi) -> (N, Hi*Wi*A, B)
        deltas = [
            x.view(x.shape[0], -1, self.anchor_generator.box_dim, x.shape[-2], x.shape[-1])
            .permute(0, 3, 4, 1, 2)
            .flatten(1, -2)
            for x in deltas
        ]
        if self.training:
            if gt_instances is None:
                raise ValueError("RPN: `gt_instances` is required in training mode.")
            gt_labels, gt_boxes = self.label_and_sample_anchors(anchors, gt_instances)
            losses = self.losses(anchors, logits, gt_labels, deltas, gt_boxes)
        else:
            losses = {}
        proposals = self.predict_proposals(anchors, logits, deltas, images.image_sizes)
        return proposals, losses

    def predict_proposals(
        self,
        anchors: list[Boxes],
        pred_objectness_logits: list[torch.Tensor],
        pred_anchor_deltas: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> list[Instances]:
        """Decode the deltas and select the proposals (see :func:`find_top_rpn_proposals`). Proposals are
        constants for the ROI heads (no gradient; approximate joint training, as in the paper).

        Args:
            anchors: per level, ``Hi*Wi*A`` anchors.
            pred_objectness_logits: per level, ``(N, Hi*Wi*A)``.
            pred_anchor_deltas: per level, ``(N, Hi*Wi*A, B)``.
            image_sizes: ``N`` ``(height, width)``.

        Returns:
            per image, :class:`Instances` with ``proposal_boxes`` and ``objectness_logits``.
        """
        with torch.no_grad():
            pred_proposals = self._decode_proposals(anchors, pred_anchor_deltas)
            return find_top_rpn_proposals(
                pred_proposals,
                pred_objectness_logits,
                image_sizes,
                self.nms_thresh,
                self.pre_nms_topk[self.training],
                self.post_nms_topk[self.training],
                self.min_box_size,
                self.training,
            )

    def _decode_proposals(self, anchors: list[Boxes], pred_anchor_deltas: list[torch.Tensor]) -> list[torch.Tensor]:
        """Apply per-level deltas ``(N, Hi*Wi*A, B)`` to the anchors; returns ``(N, Hi*Wi*A, B)`` boxes."""
        n = pred_anchor_deltas[0].shape[0]
        proposals = []
        for anchors_i, deltas_i in zip(anchors, pred_anchor_deltas):
            b = anchors_i.tensor.size(1)
            deltas_i = deltas_i.reshape(-1, b)
            anchors_t = anchors_i.tensor.unsqueeze(0).expand(n, -1, -1).reshape(-1, b)
            proposals.append(self.box2box_transform.apply_deltas(deltas_i, anchors_t).view(n, -1, b))
        return proposals

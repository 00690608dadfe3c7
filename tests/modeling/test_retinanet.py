"""RetinaNet: per-level top-k + cross-level NMS on hand-built scores, focal loss and its normaliser, head."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from libdet.layers import ShapeSpec
from libdet.modeling.anchor_generator import DefaultAnchorGenerator
from libdet.modeling.box_regression import Box2BoxTransform
from libdet.modeling.matcher import Matcher
from libdet.modeling.meta_arch import RetinaNet, RetinaNetHead
from libdet.structures import Boxes, Instances


def _retinanet(**kwargs):
    defaults = dict(
        backbone=nn.Identity(),
        head=nn.Identity(),
        head_in_features=["p3", "p4"],
        anchor_generator=DefaultAnchorGenerator(sizes=[[8], [16]], aspect_ratios=[1.0], strides=[8, 16], offset=0.5),
        box2box_transform=Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0)),
        anchor_matcher=Matcher(thresholds=[0.4, 0.5], labels=[0, -1, 1], allow_low_quality_matches=True),
        num_classes=2,
        pixel_mean=[0.0, 0.0, 0.0],
        pixel_std=[1.0, 1.0, 1.0],
    )
    defaults.update(kwargs)
    return RetinaNet(**defaults)


def test_inference_per_level_topk_then_nms_across_levels():
    model = _retinanet(test_score_thresh=0.05, test_topk_candidates=2, test_nms_thresh=0.5)
    anchors = [
        Boxes(torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [30, 30, 40, 40]])),
        Boxes(torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]])),
    ]
    scores = [torch.tensor([[0.9, 0.1], [0.8, 0.02], [0.04, 0.7]]), torch.tensor([[0.6, 0.3], [0.5, 0.45]])]
    deltas = [torch.zeros(3, 4), torch.zeros(2, 4)]
    result = model.inference_single_image(anchors, scores, deltas, (64, 64))
    # Level 0 keeps .9 and .8 (its top 2; .7 is dropped although it beats level 1); level 1 keeps .6 and .5.
    # NMS per class across levels: .8 and .6 overlap .9 in class 0.
    assert torch.allclose(result.scores, torch.tensor([0.9, 0.5]))
    assert result.pred_classes.tolist() == [0, 0]
    assert torch.equal(result.pred_boxes.tensor, torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]]))
    model.max_detections_per_image = 1
    assert len(model.inference_single_image(anchors, scores, deltas, (64, 64))) == 1
    model.test_score_thresh = 0.95
    assert len(model.inference_single_image(anchors, scores, deltas, (64, 64))) == 0


def test_decoding_applies_deltas_to_the_right_anchor():
    model = _retinanet(test_score_thresh=0.05)
    anchors = [Boxes(torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]))]
    scores = [torch.tensor([[0.0, 0.0], [0.0, 0.9]])]
    deltas = [torch.tensor([[5.0, 5, 0, 0], [0.1, 0.0, 0.0, math.log(2.0)]])]
    pred = model._decode_multi_level_predictions(anchors, scores, deltas, 0.05, 10, (64, 64))
    assert pred.pred_classes.tolist() == [1]
    assert torch.allclose(pred.pred_boxes.tensor, torch.tensor([[21.0, 15, 31, 35]]))


def _focal(z, t, alpha=0.25, gamma=2.0):
    p = 1 / (1 + math.exp(-z))
    ce = max(z, 0) - z * t + math.log1p(math.exp(-abs(z)))
    p_t = p * t + (1 - p) * (1 - t)
    return (alpha * t + (1 - alpha) * (1 - t)) * ce * (1 - p_t) ** gamma


def test_losses_focal_and_normalizer_ema():
    model = _retinanet()
    anchors = [Boxes(torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [5, 5, 15, 15]]))]
    logits = torch.tensor([[[1.0, -2.0], [0.5, 0.3], [-1.0, 2.0]]], requires_grad=True)
    deltas = torch.zeros(1, 3, 4, requires_grad=True)
    gt_labels = [torch.tensor([1, 2, -1])]  # anchor 0: class 1; anchor 1: background; anchor 2: ignored
    gt_boxes = [torch.tensor([[0.0, 0, 10, 12], [0, 0, 0, 0], [0, 0, 0, 0]])]
    losses = model.losses(anchors, [logits], gt_labels, [deltas], gt_boxes)
    normalizer = 0.9 * 100 + 0.1 * 1
    expected_cls = _focal(1.0, 0) + _focal(-2.0, 1) + _focal(0.5, 0) + _focal(0.3, 0)
    assert losses["loss_cls"].item() == pytest.approx(expected_cls / normalizer, rel=1e-5)
    # smooth L1 (beta 0.1) of dy = 1/10 and dh = log(1.2): both above beta.
    expected_box = (0.1 - 0.05) + (math.log(1.2) - 0.05)
    assert losses["loss_box_reg"].item() == pytest.approx(expected_box / normalizer, rel=1e-5)
    assert model.loss_normalizer == pytest.approx(normalizer)
    model.losses(anchors, [logits], [torch.tensor([2, 2, 2])], [deltas], gt_boxes)
    assert model.loss_normalizer == pytest.approx(0.9 * normalizer + 0.1 * 1)  # no positive: counts as 1
    assert "loss_normalizer" not in model.state_dict()


def test_label_anchors_with_and_without_gt():
    model = _retinanet()
    anchors = [Boxes(torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [4, 0, 14, 10]]))]
    gt = Instances((32, 32), gt_boxes=Boxes(torch.tensor([[0.0, 0, 10, 10]])), gt_classes=torch.tensor([1]))
    empty = Instances((32, 32), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64))
    labels, boxes = model.label_anchors(anchors, [gt, empty])
    assert labels[0].tolist() == [1, 2, -1]  # IoU 1, 0 and 6/14 (between 0.4 and 0.5: ignored)
    assert torch.equal(boxes[0][0], torch.tensor([0.0, 0, 10, 10]))
    assert labels[1].tolist() == [2, 2, 2] and boxes[1].abs().sum() == 0


def test_retinanet_head():
    head = RetinaNetHead(input_shape=[ShapeSpec(channels=8)] * 2, num_classes=3, num_anchors=2, conv_dims=[8, 8])
    names = [k for k, _ in head.named_parameters()]
    assert names[:4] == ["cls_subnet.0.weight", "cls_subnet.0.bias", "cls_subnet.2.weight", "cls_subnet.2.bias"]
    assert names[-4:] == ["cls_score.weight", "cls_score.bias", "bbox_pred.weight", "bbox_pred.bias"]
    assert torch.allclose(head.cls_score.bias, torch.full((6,), -math.log(99.0)))
    logits, deltas = head([torch.rand(1, 8, 4, 4), torch.rand(1, 8, 2, 2)])
    assert [tuple(x.shape) for x in logits] == [(1, 6, 4, 4), (1, 6, 2, 2)]
    assert [tuple(x.shape) for x in deltas] == [(1, 8, 4, 4), (1, 8, 2, 2)]
    normed = RetinaNetHead(
        input_shape=[ShapeSpec(channels=8)] * 2, num_classes=3, num_anchors=2, conv_dims=[8], norm="BN"
    )
    normed.train()(  # separate statistics per level
        [torch.rand(2, 8, 4, 4), torch.rand(2, 8, 2, 2)]
    )
    assert isinstance(normed.cls_subnet[1], nn.Module) and len(list(normed.cls_subnet[1].children())) == 2

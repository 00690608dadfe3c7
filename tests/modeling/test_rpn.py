"""RPN: head layout, anchor labelling and losses against a direct computation, proposal selection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from libdet.modeling.anchor_generator import DefaultAnchorGenerator
from libdet.modeling.box_regression import Box2BoxTransform
from libdet.modeling.matcher import Matcher
from libdet.modeling.proposal_generator import RPN, StandardRPNHead
from libdet.modeling.proposal_generator.proposal_utils import (
    add_ground_truth_to_proposals,
    find_top_rpn_proposals,
)
from libdet.structures import Boxes, ImageList, Instances


def test_rpn_head_names_and_shapes():
    head = StandardRPNHead(in_channels=8, num_anchors=3)
    assert [k for k, _ in head.named_parameters()] == [
        "conv.weight",
        "conv.bias",
        "objectness_logits.weight",
        "objectness_logits.bias",
        "anchor_deltas.weight",
        "anchor_deltas.bias",
    ]
    logits, deltas = head([torch.rand(2, 8, 6, 5), torch.rand(2, 8, 3, 3)])
    assert [tuple(x.shape) for x in logits] == [(2, 3, 6, 5), (2, 3, 3, 3)]
    assert [tuple(x.shape) for x in deltas] == [(2, 12, 6, 5), (2, 12, 3, 3)]
    deep = StandardRPNHead(in_channels=8, num_anchors=3, conv_dims=(16, -1))
    assert deep.conv.conv0.weight.shape == (16, 8, 3, 3) and deep.conv.conv1.weight.shape == (16, 16, 3, 3)
    assert deep.objectness_logits.weight.shape == (3, 16, 1, 1)


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _build_rpn(batch_size_per_image):
    torch.manual_seed(0)
    return RPN(
        in_features=["p3"],
        head=StandardRPNHead(in_channels=4, num_anchors=2),
        anchor_generator=DefaultAnchorGenerator(sizes=[[8, 16]], aspect_ratios=[1.0], strides=[8], offset=0.5),
        anchor_matcher=Matcher(thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True),
        box2box_transform=Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0)),
        batch_size_per_image=batch_size_per_image,
        positive_fraction=0.5,
        pre_nms_topk=(50, 40),
        post_nms_topk=(20, 10),
    )


def test_rpn_losses_match_direct_computation():
    rpn = _build_rpn(batch_size_per_image=1000).train()  # nothing is subsampled: deterministic
    features = {"p3": torch.randn(2, 4, 4, 4) * 10}
    images = ImageList(torch.zeros(2, 3, 32, 32), [(32, 32), (32, 32)])
    gt_box = [2.0, 3.0, 19.0, 14.0]
    gt = [
        Instances((32, 32), gt_boxes=Boxes(torch.tensor([gt_box]))),
        Instances((32, 32), gt_boxes=Boxes(torch.zeros(0, 4))),
    ]
    _, losses = rpn(images, features, gt)

    # Direct computation: anchors in (y, x, size) order, centred at 8 * i + 4, sides 8 and 16.
    logits_map, deltas_map = rpn.rpn_head([features["p3"]])
    logits_map, deltas_map = logits_map[0].detach(), deltas_map[0].detach()
    anchors, logits, deltas = [], [[], []], [[], []]
    for y in range(4):
        for x in range(4):
            for a, side in enumerate((8, 16)):
                cx, cy = 8 * x + 4, 8 * y + 4
                anchors.append([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])
                for n in range(2):
                    logits[n].append(logits_map[n, a, y, x].item())
                    deltas[n].append(deltas_map[n, 4 * a : 4 * a + 4, y, x].tolist())
    ious = np.array([_iou(a, gt_box) for a in anchors])
    labels = np.where(ious >= 0.7, 1, np.where(ious < 0.3, 0, -1))
    labels[ious == ious.max()] = 1  # low-quality matches: the best anchor(s) of the gt
    assert (labels == 1).sum() >= 1 and (labels == -1).sum() >= 1
    gx, gy, gw, gh = (
        (gt_box[0] + gt_box[2]) / 2,
        (gt_box[1] + gt_box[3]) / 2,
        gt_box[2] - gt_box[0],
        gt_box[3] - gt_box[1],
    )

    cls_sum, loc_sum = 0.0, 0.0
    for i, anchor in enumerate(anchors):
        ax, ay, aw, ah = (
            (anchor[0] + anchor[2]) / 2,
            (anchor[1] + anchor[3]) / 2,
            anchor[2] - anchor[0],
            anchor[3] - anchor[1],
        )
        if labels[i] >= 0:
            z = logits[0][i]
            cls_sum += max(z, 0) - z * labels[i] + math.log1p(math.exp(-abs(z)))
        if labels[i] == 1:
            target = [(gx - ax) / aw, (gy - ay) / ah, math.log(gw / aw), math.log(gh / ah)]
            loc_sum += sum(abs(p - t) for p, t in zip(deltas[0][i], target))
        z = logits[1][i]  # image without gt: every anchor is background
        cls_sum += max(z, 0) + math.log1p(math.exp(-abs(z)))
    normalizer = 1000 * 2
    assert losses["loss_rpn_cls"].item() == pytest.approx(cls_sum / normalizer, rel=1e-5)
    assert losses["loss_rpn_loc"].item() == pytest.approx(loc_sum / normalizer, rel=1e-5)


def test_rpn_loss_weight_and_sampling_budget():
    rpn = _build_rpn(batch_size_per_image=6).train()
    anchors = rpn.anchor_generator([torch.zeros(1, 4, 4, 4)])
    gt = [Instances((32, 32), gt_boxes=Boxes(torch.tensor([[2.0, 3.0, 19.0, 14.0]])))]
    labels, matched = rpn.label_and_sample_anchors(anchors, gt)
    assert (labels[0] >= 0).sum() == 6 and 1 <= (labels[0] == 1).sum() <= 3
    assert torch.equal(
        matched[0][labels[0] == 1], torch.tensor([[2.0, 3.0, 19.0, 14.0]]).expand(int((labels[0] == 1).sum()), 4)
    )

    weighted = _build_rpn(batch_size_per_image=1000)
    weighted.loss_weight = {"loss_rpn_cls": 2.0, "loss_rpn_loc": 0.5}
    plain = _build_rpn(batch_size_per_image=1000)
    feats = {"p3": torch.randn(1, 4, 4, 4)}
    images = ImageList(torch.zeros(1, 3, 32, 32), [(32, 32)])
    _, a = weighted.train()(images, feats, gt)
    _, b = plain.train()(images, feats, gt)
    assert a["loss_rpn_cls"].item() == pytest.approx(2 * b["loss_rpn_cls"].item())
    assert a["loss_rpn_loc"].item() == pytest.approx(0.5 * b["loss_rpn_loc"].item())


def test_rpn_inference_proposals_are_sorted_and_clipped():
    rpn = _build_rpn(batch_size_per_image=256).eval()
    images = ImageList(torch.zeros(2, 3, 32, 32), [(32, 30), (20, 32)])
    proposals, losses = rpn(images, {"p3": torch.randn(2, 4, 4, 4)})
    assert losses == {}
    for p, (h, w) in zip(proposals, images.image_sizes):
        assert p.image_size == (h, w) and 0 < len(p) <= 10
        boxes = p.proposal_boxes.tensor
        assert (boxes[:, 0::2] <= w).all() and (boxes[:, 1::2] <= h).all() and (boxes >= 0).all()
        assert torch.all(p.objectness_logits[:-1] >= p.objectness_logits[1:])


def test_find_top_rpn_proposals_hand_built():
    level0 = torch.tensor([[[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 0.5, 20]]], dtype=torch.float32)
    logits0 = torch.tensor([[5.0, 4.0, 3.0, 6.0]])
    level1 = torch.tensor([[[0, 0, 10, 10], [-20, -20, 30, 130], [80, 80, 90, 90]]], dtype=torch.float32)
    logits1 = torch.tensor([[4.5, 1.0, 0.5]])
    (result,) = find_top_rpn_proposals(
        [level0, level1],
        [logits0, logits1],
        [(100, 100)],
        nms_thresh=0.5,
        pre_nms_topk=3,
        post_nms_topk=3,
        min_box_size=1.0,
        training=False,
    )
    # Level 0 keeps its top 3 (drops [50, 50, 60, 60] although it outscores level 1's boxes); the thin box
    # is removed; [1, 1, 11, 11] is suppressed; the identical box of level 1 survives (NMS is per level).
    expected = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 30, 100]], dtype=torch.float32)
    assert torch.equal(result.proposal_boxes.tensor, expected)
    assert torch.equal(result.objectness_logits, torch.tensor([5.0, 4.5, 1.0]))


def test_find_top_rpn_proposals_non_finite():
    boxes = torch.tensor([[[0, 0, 10, 10], [0, 0, float("nan"), 5]]])
    logits = torch.tensor([[1.0, 2.0]])
    (result,) = find_top_rpn_proposals([boxes], [logits], [(50, 50)], 0.7, 10, 10, 0.0, training=False)
    assert torch.equal(result.proposal_boxes.tensor, torch.tensor([[0.0, 0, 10, 10]]))
    with pytest.raises(FloatingPointError, match="image 0"):
        find_top_rpn_proposals([boxes], [logits], [(50, 50)], 0.7, 10, 10, 0.0, training=True)


def test_add_ground_truth_to_proposals():
    proposals = Instances(
        (20, 20), proposal_boxes=Boxes(torch.tensor([[1.0, 1, 5, 5]])), objectness_logits=torch.tensor([0.3])
    )
    gt = Instances(
        (20, 20), gt_boxes=Boxes(torch.tensor([[2.0, 2, 8, 8], [0.0, 0, 3, 3]])), gt_classes=torch.tensor([1, 0])
    )
    (out,) = add_ground_truth_to_proposals([gt], [proposals])
    assert torch.equal(out.proposal_boxes.tensor, torch.tensor([[1.0, 1, 5, 5], [2, 2, 8, 8], [0, 0, 3, 3]]))
    assert out.objectness_logits[0].item() == pytest.approx(0.3)
    assert torch.sigmoid(out.objectness_logits[1:]).min().item() == pytest.approx(1.0)
    assert set(out.get_fields()) == {"proposal_boxes", "objectness_logits"}
    (from_boxes,) = add_ground_truth_to_proposals([gt.gt_boxes], [proposals])
    assert len(from_boxes) == 3
    with pytest.raises(ValueError, match="gt for 2 images but proposals for 1"):
        add_ground_truth_to_proposals([gt, gt], [proposals])


def test_anchor_boundary_thresh_ignores_anchors_outside_the_image():
    rpn = _build_rpn(batch_size_per_image=1000)
    rpn.anchor_boundary_thresh = 0
    anchors = rpn.anchor_generator([torch.zeros(1, 4, 4, 4)])
    gt = [Instances((32, 32), gt_boxes=Boxes(torch.tensor([[2.0, 3.0, 19.0, 14.0]])))]
    (labels,), _ = rpn.label_and_sample_anchors(anchors, gt)
    inside = anchors[0].inside_box((32, 32), 0)
    assert (~inside).sum() > 0 and labels[~inside].eq(-1).all() and labels[inside].ge(0).all()

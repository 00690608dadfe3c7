"""RRPN: rotated box encoding, rotated proposal selection, rotated anchor labelling and losses."""

from __future__ import annotations

import math

import pytest
import torch

from libdet.modeling.anchor_generator import DefaultAnchorGenerator, RotatedAnchorGenerator
from libdet.modeling.box_regression import Box2BoxTransform, Box2BoxTransformRotated
from libdet.modeling.matcher import Matcher
from libdet.modeling.proposal_generator.rpn import StandardRPNHead
from libdet.modeling.proposal_generator.rrpn import RRPN, find_top_rrpn_proposals
from libdet.structures import Boxes, ImageList, Instances, RotatedBoxes


def test_rotated_encoding_exact_values_with_angle_wrap():
    transform = Box2BoxTransformRotated(weights=(10, 10, 5, 5, 1))
    src = torch.tensor([[10.0, 20.0, 4.0, 8.0, 170.0]])
    target = torch.tensor([[12.0, 16.0, 8.0, 2.0, -170.0]])
    deltas = transform.get_deltas(src, target)
    # dx = 10 * 2 / 4, dy = 10 * -4 / 8, dw = 5 log(8 / 4), dh = 5 log(2 / 8); the angle goes from 170 to
    # -170 degrees the short way round: +20 degrees (not -340), i.e. pi / 9 radians.
    expected = torch.tensor([[5.0, -5.0, 5 * math.log(2.0), -5 * math.log(4.0), math.pi / 9]])
    torch.testing.assert_close(deltas, expected)
    decoded = transform.apply_deltas(deltas, src)
    # 170 + 20 = 190 degrees, wrapped to [-180, 180): -170.
    torch.testing.assert_close(decoded, target, rtol=0, atol=1e-4)


def test_find_top_rrpn_proposals_per_level_nms_clip_and_min_size():
    level0 = torch.tensor(
        [[[20.0, 20, 10, 10, 0], [21.0, 20, 10, 10, 0], [50.0, 50, 10, 10, 45]]]  # A, B (overlaps A), C
    )
    level1 = torch.tensor(
        [[[20.0, 20, 10, 10, 0], [70.0, 70, 1, 1, 0], [2.0, 30, 10, 10, 0.5]]]  # D (= A), E (tiny), F (clipped)
    )
    logits0 = torch.tensor([[3.0, 2.0, 1.0]])
    logits1 = torch.tensor([[0.5, 5.0, 0.7]])
    (result,) = find_top_rrpn_proposals(
        [level0, level1],
        [logits0, logits1],
        [(100, 100)],
        nms_thresh=0.5,
        pre_nms_topk=3,
        post_nms_topk=10,
        min_box_size=2.0,
        training=False,
    )
    assert isinstance(result.proposal_boxes, RotatedBoxes)
    # B is suppressed by A (same level); D is not (other level); E is too small; F is clipped to x in [0, 7].
    expected = torch.tensor(
        [[20.0, 20, 10, 10, 0], [50.0, 50, 10, 10, 45], [3.5, 30, 7, 10, 0.5], [20.0, 20, 10, 10, 0]]
    )
    torch.testing.assert_close(result.proposal_boxes.tensor, expected)
    torch.testing.assert_close(result.objectness_logits, torch.tensor([3.0, 1.0, 0.7, 0.5]))

    (top2,) = find_top_rrpn_proposals([level0, level1], [logits0, logits1], [(100, 100)], 0.5, 3, 2, 2.0, False)
    torch.testing.assert_close(top2.objectness_logits, torch.tensor([3.0, 1.0]))
    # pre_nms_topk=2 keeps E and F of level 1 (the two best): D is gone before NMS.
    (pre2,) = find_top_rrpn_proposals([level0, level1], [logits0, logits1], [(100, 100)], 0.5, 2, 10, 2.0, False)
    torch.testing.assert_close(pre2.objectness_logits, torch.tensor([3.0, 0.7]))


def test_find_top_rrpn_proposals_non_finite():
    boxes = torch.tensor([[[20.0, 20, 10, 10, 0], [float("nan"), 20, 10, 10, 0]]])
    logits = torch.tensor([[1.0, 2.0]])
    (result,) = find_top_rrpn_proposals([boxes], [logits], [(64, 64)], 0.7, 10, 10, 0.0, training=False)
    assert len(result) == 1 and result.objectness_logits.item() == 1.0
    with pytest.raises(FloatingPointError, match="image 0"):
        find_top_rrpn_proposals([boxes], [logits], [(64, 64)], 0.7, 10, 10, 0.0, training=True)


def _rrpn(**overrides):
    kwargs = dict(
        in_features=["p2"],
        head=StandardRPNHead(in_channels=4, num_anchors=1, box_dim=5),
        anchor_generator=RotatedAnchorGenerator(sizes=[[16]], aspect_ratios=[1.0], angles=[[0]], strides=[8]),
        anchor_matcher=Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True),
        box2box_transform=Box2BoxTransformRotated(weights=(1.0, 1.0, 1.0, 1.0, 1.0)),
        batch_size_per_image=64,
        positive_fraction=0.5,
        pre_nms_topk=(50, 50),
        post_nms_topk=(20, 10),
    )
    kwargs.update(overrides)
    return RRPN(**kwargs)


def _gt(boxes):
    inst = Instances((32, 32))
    inst.gt_boxes = RotatedBoxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 5))
    inst.gt_classes = torch.zeros(len(inst.gt_boxes), dtype=torch.int64)
    return inst


def test_rrpn_labels_anchors_by_rotated_iou():
    torch.manual_seed(0)
    rrpn = _rrpn()
    anchors = rrpn.anchor_generator([torch.zeros(1, 4, 4, 4)])  # 16 squares of side 16, centres 4 + 8k
    # The gt is the anchor at (12, 12) turned by 90 degrees: the same square (IoU 1). Its 4 direct
    # neighbours overlap it by half (IoU 1/3: ignored), the others by at most a quarter (negative).
    labels, matched = rrpn.label_and_sample_anchors(anchors, [_gt([[12.0, 12, 16, 16, 90]]), _gt([])])
    expected = torch.zeros(16, dtype=labels[0].dtype)
    expected[5] = 1
    expected[[1, 4, 6, 9]] = -1
    assert torch.equal(labels[0], expected)
    torch.testing.assert_close(matched[0][5], torch.tensor([12.0, 12, 16, 16, 90]))
    assert torch.equal(labels[1], torch.zeros(16, dtype=labels[1].dtype))  # no gt: all background
    assert torch.equal(matched[1], torch.zeros(16, 5))


def test_rrpn_training_losses_and_inference_proposals():
    torch.manual_seed(0)
    rrpn = _rrpn()
    images = ImageList(torch.zeros(2, 3, 32, 32), [(32, 32), (32, 32)])
    features = {"p2": torch.randn(2, 4, 4, 4)}
    proposals, losses = rrpn(images, features, [_gt([[12.0, 12, 16, 16, 30]]), _gt([])])
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_rpn_loc"] > 0
    sum(losses.values()).backward()
    assert rrpn.rpn_head.anchor_deltas.weight.grad.abs().sum() > 0
    assert len(proposals) == 2 and all(isinstance(p.proposal_boxes, RotatedBoxes) for p in proposals)

    # No gt anywhere: the localisation loss is exactly 0.
    _, losses = rrpn(images, features, [_gt([]), _gt([])])
    assert losses["loss_rpn_loc"].item() == 0.0 and torch.isfinite(losses["loss_rpn_cls"])

    rrpn.eval()
    proposals, losses = rrpn(images, features)
    assert losses == {}
    assert all(len(p) <= 10 for p in proposals)
    assert all(isinstance(p.proposal_boxes, RotatedBoxes) for p in proposals)


def test_rrpn_rejects_axis_aligned_parts_and_gt():
    with pytest.raises(TypeError, match="Box2BoxTransformRotated"):
        _rrpn(box2box_transform=Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0)))
    with pytest.raises(ValueError, match="box_dim = 5"):
        _rrpn(anchor_generator=DefaultAnchorGenerator(sizes=[[16]], aspect_ratios=[1.0], strides=[8]))
    with pytest.raises(ValueError, match="smooth_l1"):
        _rrpn(box_reg_loss_type="giou")
    rrpn = _rrpn()
    anchors = rrpn.anchor_generator([torch.zeros(1, 4, 4, 4)])
    gt = Instances((32, 32), gt_boxes=Boxes(torch.tensor([[0.0, 0, 10, 10]])))
    with pytest.raises(TypeError, match="image 0 must be RotatedBoxes"):
        rrpn.label_and_sample_anchors(anchors, [gt])

"""Fast R-CNN box predictor: inference order and thresholds on hand-built scores, losses by hand."""

from __future__ import annotations

import math

import pytest
import torch

from libdet.layers import ShapeSpec
from libdet.modeling.box_regression import Box2BoxTransform
from libdet.modeling.roi_heads import FastRCNNOutputLayers
from libdet.modeling.roi_heads.fast_rcnn import fast_rcnn_inference, fast_rcnn_inference_single_image
from libdet.structures import Boxes, Instances


def _hand_built():
    scores = torch.tensor([[0.9, 0.05, 0.05], [0.8, 0.15, 0.05], [0.3, 0.6, 0.1], [0.99, 0.99, 0.0]])
    boxes = torch.tensor(
        [
            [0, 0, 10, 10, 0, 0, 10, 10],
            [1, 1, 11, 11, 1, 1, 11, 11],
            [50, 50, 70, 70, -5, 0, 10, 200],
            [0, 0, float("inf"), 5, 0, 0, 5, 5],  # non-finite: dropped
        ],
        dtype=torch.float32,
    )
    return boxes, scores


def test_fast_rcnn_inference_order_thresholds_nms_topk():
    boxes, scores = _hand_built()
    result, rois = fast_rcnn_inference_single_image(boxes, scores, (40, 60), 0.1, 0.5, 3)
    # Candidates above 0.1: (roi 0, c0) .9, (1, c0) .8 [suppressed by roi 0], (1, c1) .15, (2, c0) .3,
    # (2, c1) .6 [clipped to (0, 0, 10, 40)]; sorted by score, top 3.
    assert torch.allclose(result.scores, torch.tensor([0.9, 0.6, 0.3]))
    assert result.pred_classes.tolist() == [0, 1, 0]
    assert rois.tolist() == [0, 2, 2]
    assert torch.equal(result.pred_boxes.tensor, torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 40], [50, 40, 60, 40]]))
    assert result.image_size == (40, 60)

    everything, _ = fast_rcnn_inference_single_image(boxes, scores, (40, 60), 0.1, 0.5, -1)
    assert torch.allclose(everything.scores, torch.tensor([0.9, 0.6, 0.3, 0.15]))
    strict, _ = fast_rcnn_inference_single_image(boxes, scores, (40, 60), 0.5, 0.5, 100)
    assert torch.allclose(strict.scores, torch.tensor([0.9, 0.6]))  # 0.8 still suppressed by 0.9


def test_fast_rcnn_inference_class_agnostic_and_batched():
    boxes = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
    scores = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    results, rois = fast_rcnn_inference([boxes, boxes[:1]], [scores, scores[:1]], [(50, 50), (50, 50)], 0.15, 0.5, 10)
    assert results[0].pred_classes.tolist() == [1, 0, 1] and rois[0].tolist() == [1, 0, 0]
    # The same box is kept for two classes: NMS is per class.
    assert torch.equal(results[0].pred_boxes.tensor[1], results[0].pred_boxes.tensor[2])
    assert results[1].pred_classes.tolist() == [0, 1] and rois[1].tolist() == [0, 0]


def _predictor(**kwargs):
    torch.manual_seed(0)
    return FastRCNNOutputLayers(
        ShapeSpec(channels=2, height=2, width=2),
        box2box_transform=Box2BoxTransform(weights=(10, 10, 5, 5)),
        num_classes=2,
        **kwargs,
    )


def _proposals():
    p = Instances((40, 40))
    p.proposal_boxes = Boxes(torch.tensor([[0.0, 0, 10, 10], [5, 5, 25, 15], [10, 10, 30, 30]]))
    p.gt_classes = torch.tensor([0, 2, 1])
    p.gt_boxes = Boxes(torch.tensor([[1.0, 0, 11, 12], [0, 0, 1, 1], [8, 12, 28, 34]]))
    return p


def test_predictor_names_shapes_init():
    predictor = _predictor()
    assert predictor.cls_score.weight.shape == (3, 8) and predictor.bbox_pred.weight.shape == (8, 8)
    assert predictor.cls_score.bias.abs().sum() == 0
    scores, deltas = predictor(torch.rand(5, 2, 2, 2))
    assert scores.shape == (5, 3) and deltas.shape == (5, 8)
    agnostic = _predictor(cls_agnostic_bbox_reg=True)
    assert agnostic.bbox_pred.weight.shape == (4, 8)
    assert (
        FastRCNNOutputLayers(16, box2box_transform=Box2BoxTransform((1, 1, 1, 1)), num_classes=4).cls_score.in_features
        == 16
    )


def _expected_box_loss(proposals, deltas, gt_classes):
    total = 0.0
    for i, c in enumerate(gt_classes):
        if c >= 2:
            continue
        x0, y0, x1, y1 = proposals.proposal_boxes.tensor[i].tolist()
        g0, h0, g1, h1 = proposals.gt_boxes.tensor[i].tolist()
        aw, ah, ax, ay = x1 - x0, y1 - y0, (x0 + x1) / 2, (y0 + y1) / 2
        gw, gh, gx, gy = g1 - g0, h1 - h0, (g0 + g1) / 2, (h0 + h1) / 2
        target = [10 * (gx - ax) / aw, 10 * (gy - ay) / ah, 5 * math.log(gw / aw), 5 * math.log(gh / ah)]
        pred = deltas[i, 4 * c : 4 * c + 4].tolist()
        total += sum(abs(p - t) for p, t in zip(pred, target))
    return total / len(gt_classes)


def test_losses_by_hand():
    predictor = _predictor(loss_weight={"loss_box_reg": 2.0})
    scores = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0]], requires_grad=True)
    deltas = torch.linspace(-1, 1, 24).view(3, 8).requires_grad_()
    proposals = _proposals()
    losses = predictor.losses((scores, deltas), [proposals])
    gt = [0, 2, 1]
    expected_cls = (
        sum(-scores[i, c].item() + math.log(sum(math.exp(s) for s in scores[i].tolist())) for i, c in enumerate(gt)) / 3
    )
    assert losses["loss_cls"].item() == pytest.approx(expected_cls, rel=1e-5)
    assert losses["loss_box_reg"].item() == pytest.approx(
        2.0 * _expected_box_loss(proposals, deltas.detach(), gt), rel=1e-5
    )
    sum(losses.values()).backward()
    assert deltas.grad[1].abs().sum() == 0  # background ROI: no box gradient
    assert deltas.grad[0, 4:].abs().sum() == 0 and deltas.grad[0, :4].abs().sum() > 0  # only its class


def test_sigmoid_ce_and_federated_loss():
    predictor = _predictor(use_sigmoid_ce=True)
    scores = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0]])
    losses = predictor.losses((scores, torch.zeros(3, 8)), [_proposals()])

    def bce(z, t):
        return max(z, 0) - z * t + math.log1p(math.exp(-abs(z)))

    gt = [0, 2, 1]
    expected = sum(bce(scores[i, k].item(), float(gt[i] == k)) for i in range(3) for k in range(2)) / 3
    assert losses["loss_cls"].item() == pytest.approx(expected, rel=1e-5)

    torch.manual_seed(0)
    classes = FastRCNNOutputLayers.get_fed_loss_classes(
        torch.tensor([3, 3, 7, 10]), num_fed_loss_classes=5, num_classes=10, weight=torch.ones(10)
    )
    # detectron2's semantics: the batch's labels (background 10 included) plus sampled foreground negatives.
    assert len(classes) == 5 and len(set(classes.tolist())) == 5 and {3, 7, 10} <= set(classes.tolist())
    with pytest.raises(ValueError, match="use_sigmoid_ce"):
        _predictor(use_fed_loss=True, get_fed_loss_cls_weights=torch.ones(2))
    with pytest.raises(ValueError, match=r"\(2,\)"):
        _predictor(use_fed_loss=True, use_sigmoid_ce=True, get_fed_loss_cls_weights=torch.ones(3))
    fed = _predictor(
        use_fed_loss=True, use_sigmoid_ce=True, get_fed_loss_cls_weights=torch.ones(2), fed_loss_num_classes=1
    )
    # One gt class (0) fills the budget: class 1's logits do not count.
    p = _proposals()
    p.gt_classes = torch.tensor([0, 0, 2])
    fed_loss = fed.losses((scores, torch.zeros(3, 8)), [p])["loss_cls"].item()
    assert fed_loss == pytest.approx(sum(bce(scores[i, 0].item(), float(i < 2)) for i in range(3)) / 3, rel=1e-5)


def test_empty_proposals_give_zero_connected_losses():
    predictor = _predictor()
    empty = Instances((40, 40), proposal_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64))
    x = torch.rand(0, 2, 2, 2, requires_grad=True)
    losses = predictor.losses(predictor(x), [empty])
    assert losses["loss_cls"].item() == 0 and losses["loss_box_reg"].item() == 0
    sum(losses.values()).backward()
    assert predictor.bbox_pred.weight.grad is not None and predictor.bbox_pred.weight.grad.abs().sum() == 0


def test_predict_boxes_probs_and_inference():
    predictor = _predictor(test_score_thresh=0.0)
    proposals = _proposals()
    deltas = torch.zeros(3, 8)
    deltas[:, 4] = 1.0  # class 1 moves x by 1/10 of the width
    scores = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0]])
    (boxes,) = predictor.predict_boxes((scores, deltas), [proposals])
    assert torch.allclose(boxes[:, :4], proposals.proposal_boxes.tensor)
    assert torch.allclose(boxes[0, 4:], torch.tensor([1.0, 0, 11, 10]))
    (for_gt,) = predictor.predict_boxes_for_gt_classes((scores, deltas), [proposals])
    assert torch.allclose(for_gt[0], torch.tensor([0.0, 0, 10, 10]))  # class 0
    assert torch.allclose(for_gt[1], boxes[1, 4:])  # background clamped to the last class
    (probs,) = predictor.predict_probs((scores, deltas), [proposals])
    assert torch.allclose(probs.sum(dim=1), torch.ones(3))
    (result,), _ = predictor.inference((scores, deltas), [proposals])
    assert torch.all(result.scores[:-1] >= result.scores[1:]) and len(result) > 0

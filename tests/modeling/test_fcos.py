"""FCOS: point assignment (center sampling, size ranges, smallest box), centerness targets, the three
losses against hand computations, score combination at inference, the head, and a tiny model end to end."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from libdet.config import instantiate
from libdet.layers import ShapeSpec
from libdet.modeling.meta_arch.fcos import FCOS, FCOSHead
from libdet.structures import Boxes, ImageList, Instances

from ._tiny_models import (  # noqa: F401 (single_thread is a fixture)
    NUM_CLASSES,
    mapped_example_with_crowd,
    single_thread,
    synthetic_image,
    tiny_fcos,
)


class _FakeBackbone(nn.Module):
    """Only what FCOS reads from a backbone at construction: the strides of its outputs."""

    size_divisibility = 0
    padding_constraints: dict = {}

    def __init__(self, strides):
        super().__init__()
        self.strides = strides

    def output_shape(self):
        return {f"p{int(math.log2(s))}": ShapeSpec(channels=1, stride=s) for s in self.strides}


def _fcos(strides=(8, 16), **kwargs):
    defaults = dict(
        backbone=_FakeBackbone(list(strides)),
        head=nn.Identity(),
        num_classes=3,
        pixel_mean=[0.0, 0.0, 0.0],
        pixel_std=[1.0, 1.0, 1.0],
    )
    defaults.update(kwargs)
    return FCOS(**defaults)


def _features(*sizes):
    return [torch.zeros(1, 1, h, w) for h, w in sizes]


def _gt(boxes, classes, size=(128, 128)):
    return Instances(size, gt_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)), gt_classes=torch.tensor(classes))


def _expected_labels(model, anchors, assigned):
    """Background everywhere except ``assigned``: {(level, x, y): class} of point centres."""
    labels = []
    for level, boxes in enumerate(anchors):
        centers = boxes.get_centers()
        for x, y in centers.tolist():
            labels.append(assigned.get((level, x, y), model.num_classes))
    return labels


def test_anchor_points_are_stride_boxes_at_cell_centres():
    model = _fcos()
    assert model.head_in_features == ["p3", "p4"]
    anchors = model.anchor_generator(_features((2, 2), (1, 1)))
    assert torch.equal(anchors[0].tensor, torch.tensor([[0.0, 0, 8, 8], [8, 0, 16, 8], [0, 8, 8, 16], [8, 8, 16, 16]]))
    assert torch.equal(anchors[1].tensor, torch.tensor([[0.0, 0, 16, 16]]))
    assert "anchor_generator" not in "".join(model.state_dict().keys())


def test_center_sampling_and_size_ranges():
    model = _fcos(center_sampling_radius=1.5)
    anchors = model.anchor_generator(_features((16, 16), (8, 8)))  # a 128 x 128 image
    # A: small, only level 0 (max distance < 64); within 12 px of its centre (12, 12): x, y in {4, 12, 20}.
    # B: 128 px, level 1 only: within 24 px of (64, 64): x, y in {56, 72} with max distance 72 > 64.
    #    Its level-0 points near the centre (60, 68) have max distance 68 > 64: too large for level 0.
    # C: 48 px centred at (64, 64): level 0, x, y in {60, 68}; on level 1 the max distance is < 64.
    gt = _gt([[0, 0, 24, 24], [0, 0, 128, 128], [40, 40, 88, 88]], [0, 1, 2])
    labels, boxes = model.label_anchors(anchors, [gt])
    assigned = {(0, x, y): 0 for x in (4, 12, 20) for y in (4, 12, 20)}
    assigned.update({(1, x, y): 1 for x in (56, 72) for y in (56, 72)})
    assigned.update({(0, x, y): 2 for x in (60, 68) for y in (60, 68)})
    assert labels[0].tolist() == _expected_labels(model, anchors, assigned)
    fg = labels[0] != model.num_classes
    assert torch.equal(boxes[0][fg], gt.gt_boxes.tensor[labels[0][fg]])  # class i is box i here

    # Without center sampling, every point inside C on level 0 is positive (x, y in 44..84).
    model.center_sampling_radius = 0.0
    labels, _ = model.label_anchors(anchors, [_gt([[40, 40, 88, 88]], [2])])
    inside = {(0, x, y): 2 for x in range(44, 88, 8) for y in range(44, 88, 8)}
    assert labels[0].tolist() == _expected_labels(model, anchors, inside)


def test_point_in_two_boxes_goes_to_the_smaller():
    model = _fcos()
    anchors = model.anchor_generator(_features((16, 16), (8, 8)))
    # Both boxes accept level-1 points (56|72, 56|72); D (124 px, centre 62) also accepts x or y = 40.
    gt = _gt([[0, 0, 128, 128], [0, 0, 124, 124]], [1, 2])
    labels, _ = model.label_anchors(anchors, [gt])
    assigned = {(1, x, y): 2 for x in (40, 56, 72) for y in (40, 56, 72)}
    assert labels[0].tolist() == _expected_labels(model, anchors, assigned)


def test_image_without_gt_is_all_background():
    model = _fcos()
    anchors = model.anchor_generator(_features((2, 2), (1, 1)))
    labels, boxes = model.label_anchors(anchors, [_gt(torch.zeros(0, 4).tolist(), [])])
    assert labels[0].tolist() == [3] * 5 and labels[0].dtype == torch.int64
    assert boxes[0].shape == (5, 4) and boxes[0].abs().sum() == 0
    with pytest.raises(ValueError, match="image 0 needs `gt_boxes`"):
        model.label_anchors(anchors, [Instances((8, 8))])


def test_centerness_targets():
    model = _fcos()
    anchors = [Boxes(torch.tensor([[8.0, 8, 16, 16], [16, 8, 24, 16]])), Boxes(torch.tensor([[0.0, 0, 16, 16]]))]
    gt = torch.tensor([[4.0, 0, 24, 20], [4, 0, 24, 20], [0, 0, 16, 16]])
    targets = model.compute_ctrness_targets(anchors, [gt])
    # (12, 12): l, t, r, b = 8, 12, 12, 8; (20, 12): 16, 12, 4, 8; (8, 8) centred in its box: 1.
    expected = torch.tensor([[math.sqrt(8 / 12 * 8 / 12), math.sqrt(4 / 16 * 8 / 12), 1.0]])
    assert targets.shape == (1, 3)
    assert torch.allclose(targets, expected, rtol=1e-6, atol=0)


def _bce(z, t):
    p = 1 / (1 + math.exp(-z))
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def _focal(z, t, alpha=0.25, gamma=2.0):
    p = 1 / (1 + math.exp(-z))
    p_t = p * t + (1 - p) * (1 - t)
    return (alpha * t + (1 - alpha) * (1 - t)) * _bce(z, t) * (1 - p_t) ** gamma


def test_losses_against_hand_computation():
    model = _fcos(num_classes=2)
    anchors = [Boxes(torch.tensor([[8.0, 8, 16, 16], [40, 40, 48, 48]]))]
    logits = torch.tensor([[[0.5, -1.0], [2.0, -0.5]]], requires_grad=True)
    # Point (12, 12), stride 8: (l, t, r, b) = (1, 1, 2, 1) strides -> box (4, 4, 28, 20).
    deltas = torch.tensor([[[1.0, 1, 2, 1], [0, 0, 0, 0]]], requires_grad=True)
    ctrness = torch.tensor([[[0.5], [3.0]]], requires_grad=True)
    gt_labels = [torch.tensor([1, 2])]  # point 0: class 1; point 1: background
    gt_boxes = [torch.tensor([[4.0, 0, 24, 20], [0, 0, 0, 0]])]
    losses = model.losses(anchors, [logits], gt_labels, [deltas], gt_boxes, [ctrness])
    normalizer = 0.9 * 300 + 0.1 * 1
    assert model.loss_normalizer == pytest.approx(normalizer)

    # GIoU: intersection (4..24) x (4..20) = 320, union 384 + 400 - 320 = 464, enclosing 24 x 20 = 480.
    giou = 320 / 464 - (480 - 464) / 480
    assert losses["loss_fcos_loc"].item() == pytest.approx((1 - giou) / normalizer, rel=1e-5)
    # Centerness target of point 0 is 2/3; background points do not count.
    assert losses["loss_fcos_ctr"].item() == pytest.approx(_bce(0.5, 2 / 3) / normalizer, rel=1e-5)
    expected_cls = _focal(0.5, 0) + _focal(-1.0, 1) + _focal(2.0, 0) + _focal(-0.5, 0)
    assert losses["loss_fcos_cls"].item() == pytest.approx(expected_cls / normalizer, rel=1e-5)
    sum(losses.values()).backward()
    assert ctrness.grad[0, 1, 0] == 0 and ctrness.grad[0, 0, 0] != 0
    assert deltas.grad[0, 1].abs().sum() == 0 and deltas.grad[0, 0].abs().sum() > 0


def test_trains_under_bf16_autocast():
    """Under CPU bf16 autocast the decoded boxes are bf16 and the targets float32: the GIoU loss runs in float32."""
    torch.manual_seed(0)
    model = instantiate(tiny_fcos()).train()
    batch = [
        synthetic_image(0, 128, 128, [[10, 10, 40, 50], [50, 20, 90, 60]], [0, 2]),
        synthetic_image(1, 128, 128, [[30, 30, 100, 90]], [1]),
    ]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(batch)
    assert losses["loss_fcos_loc"].dtype == torch.float32 and torch.isfinite(losses["loss_fcos_loc"])
    sum(losses.values()).backward()


def test_losses_without_positives_are_zero_and_connected():
    model = _fcos(num_classes=2)
    anchors = [Boxes(torch.tensor([[8.0, 8, 16, 16]]))]
    deltas = torch.ones(1, 1, 4, requires_grad=True)
    ctrness = torch.zeros(1, 1, 1, requires_grad=True)
    logits = torch.zeros(1, 1, 2, requires_grad=True)
    losses = model.losses(anchors, [logits], [torch.tensor([2])], [deltas], [torch.zeros(1, 4)], [ctrness])
    for name in ("loss_fcos_loc", "loss_fcos_ctr"):
        assert losses[name].item() == 0.0 and losses[name].requires_grad
    assert losses["loss_fcos_cls"].item() > 0


def test_inference_combines_class_and_centerness_scores():
    assert torch.allclose(
        FCOS.combine_scores(torch.tensor([[2.0, -1.0]]), torch.tensor([[0.5]])),
        torch.sqrt(torch.sigmoid(torch.tensor([2.0, -1.0])) * torch.sigmoid(torch.tensor(0.5))),
    )
    model = _fcos(strides=(8,), num_classes=2, test_score_thresh=0.2)
    logits = torch.full((1, 2, 2, 2), -10.0)
    ctrness = torch.full((1, 1, 2, 2), -10.0)
    logits[0, 1, 1, 1] = 2.0  # point (12, 12), class 1
    ctrness[0, 0, 1, 1] = -1.0
    logits[0, 0, 0, 0] = 3.0  # point (4, 4), class 0: confident class but low centerness
    ctrness[0, 0, 0, 0] = -6.0
    deltas = torch.ones(1, 4, 2, 2)  # one stride on every side
    images = ImageList(torch.zeros(1, 3, 16, 16), [(16, 16)])
    (result,) = model.forward_inference(images, _features((2, 2)), [[logits], [deltas], [ctrness]])
    score = math.sqrt(torch.sigmoid(torch.tensor(2.0)).item() * torch.sigmoid(torch.tensor(-1.0)).item())
    assert score > 0.2 > math.sqrt(torch.sigmoid(torch.tensor(3.0)).item() * torch.sigmoid(torch.tensor(-6.0)).item())
    assert result.scores.tolist() == pytest.approx([score])
    assert result.pred_classes.tolist() == [1]
    assert torch.equal(result.pred_boxes.tensor, torch.tensor([[4.0, 4, 20, 20]]))


def test_fcos_head():
    head = FCOSHead(input_shape=[ShapeSpec(channels=32)] * 2, num_classes=3, conv_dims=[32, 32], norm="GN")
    names = [k for k, _ in head.named_parameters()]
    assert names[:4] == ["cls_subnet.0.weight", "cls_subnet.0.bias", "cls_subnet.1.weight", "cls_subnet.1.bias"]
    assert names[-6:] == [
        "cls_score.weight",
        "cls_score.bias",
        "bbox_pred.weight",
        "bbox_pred.bias",
        "ctrness.weight",
        "ctrness.bias",
    ]
    assert head.ctrness.bias.abs().sum() == 0
    logits, deltas, ctrness = head([torch.rand(1, 32, 4, 4), torch.rand(1, 32, 2, 2)])
    assert [tuple(x.shape) for x in logits] == [(1, 3, 4, 4), (1, 3, 2, 2)]
    assert [tuple(x.shape) for x in deltas] == [(1, 4, 4, 4), (1, 4, 2, 2)]
    assert [tuple(x.shape) for x in ctrness] == [(1, 1, 4, 4), (1, 1, 2, 2)]
    with pytest.raises(ValueError, match="built for 2 levels"):
        head([torch.rand(1, 32, 4, 4)])


def test_unknown_head_in_features_is_reported():
    with pytest.raises(ValueError, match=r"\['p9'\]"):
        _fcos(head_in_features=["p3", "p9"])


@pytest.mark.usefixtures("single_thread")
def test_tiny_fcos_trains_and_infers(tmp_path):
    torch.manual_seed(0)
    model = instantiate(tiny_fcos())
    assert isinstance(model, FCOS) and model.anchor_generator.strides == [8, 16, 32, 64, 128]
    crowd = mapped_example_with_crowd(tmp_path, use_instance_mask=False, sem_seg=False)
    assert len(crowd["instances"]) == 1  # the crowd annotation was dropped by the mapper
    batch = [
        synthetic_image(0, 64, 96, [[10, 10, 40, 50], [50, 20, 90, 60]], [0, 2]),
        synthetic_image(1, 80, 64, [], []),  # no object
        crowd,
    ]
    model.train()
    losses = model(batch)
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
    total = sum(losses.values())
    assert torch.isfinite(total) and losses["loss_fcos_loc"] > 0
    total.backward()
    assert model.head.ctrness.weight.grad.abs().sum() > 0

    empty = model([synthetic_image(2, 64, 64, [], []), synthetic_image(3, 64, 96, [], [])])
    assert empty["loss_fcos_loc"].item() == 0.0 and empty["loss_fcos_ctr"].item() == 0.0

    model.eval()
    model.test_score_thresh = 0.0  # keep candidates from the untrained model
    with torch.no_grad():
        outputs = model([{"image": batch[0]["image"], "height": 128, "width": 192}, {"image": batch[1]["image"]}])
    assert [o["instances"].image_size for o in outputs] == [(128, 192), (80, 64)]
    for out in outputs:
        inst = out["instances"]
        assert 0 < len(inst) <= model.max_detections_per_image
        assert inst.pred_classes.lt(NUM_CLASSES).all() and (inst.scores <= 1).all()
        h, w = inst.image_size
        boxes = inst.pred_boxes.tensor
        assert (boxes >= 0).all() and (boxes[:, 0::2] <= w).all() and (boxes[:, 1::2] <= h).all()

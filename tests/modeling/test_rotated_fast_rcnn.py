"""Rotated Fast R-CNN: rotated inference, the rotated box loss, RROIHeads checks, and the rotated Faster R-CNN
config (state-dict layout, one training step and inference of a tiny version on CPU)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from libdet.config import instantiate
from libdet.layers import ShapeSpec
from libdet.modeling.box_regression import Box2BoxTransformRotated
from libdet.modeling.matcher import Matcher
from libdet.modeling.poolers import ROIPooler
from libdet.modeling.roi_heads.box_head import FastRCNNConvFCHead
from libdet.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from libdet.modeling.roi_heads.mask_head import MaskRCNNConvUpsampleHead
from libdet.modeling.roi_heads.rotated_fast_rcnn import (
    RotatedFastRCNNOutputLayers,
    RROIHeads,
    fast_rcnn_inference_rotated,
    fast_rcnn_inference_single_image_rotated,
)
from libdet.structures import Instances, RotatedBoxes

from ._tiny_models import NUM_CLASSES, _shallow_resnet, _unit_inputs, load_model_config, single_thread  # noqa: F401

REFERENCE = Path(__file__).resolve().parent / "d2_keys" / "mask_rcnn_fpn.txt"


def test_inference_single_image_rotated_nms_per_class_clip_threshold_topk():
    nan = float("nan")
    boxes = torch.tensor(
        [
            [30.0, 30, 20, 10, 30, 30, 30, 20, 10, 30],  # ROI 0: the same box for both classes
            [31.0, 30, 20, 10, 30, 31, 30, 20, 10, 30],  # ROI 1: overlaps ROI 0
            [98.0, 50, 10, 10, 0, 60, 60, 10, 10, 0],  # ROI 2: class 0 box crosses the right border
            [nan, 50, 10, 10, 0, 60, 60, 10, 10, 0],  # ROI 3: not finite
        ]
    )
    scores = torch.tensor([[0.9, 0.2, 0.0], [0.8, 0.05, 0.1], [0.3, 0.0, 0.7], [0.99, 0.0, 0.0]])
    result, rois = fast_rcnn_inference_single_image_rotated(boxes, scores, (100, 100), 0.1, 0.5, 10)
    assert isinstance(result.pred_boxes, RotatedBoxes)
    # ROI 1 / class 0 is suppressed by ROI 0 (same class); ROI 0 / class 1 is not (other class); ROI 1 /
    # class 1 is below the threshold; ROI 3 is dropped; ROI 2's horizontal box is clipped to x <= 100.
    expected = torch.tensor([[30.0, 30, 20, 10, 30], [96.5, 50, 7, 10, 0], [30.0, 30, 20, 10, 30]])
    torch.testing.assert_close(result.pred_boxes.tensor, expected)
    torch.testing.assert_close(result.scores, torch.tensor([0.9, 0.3, 0.2]))
    assert result.pred_classes.tolist() == [0, 0, 1]
    assert rois.tolist() == [0, 2, 0]

    results, _ = fast_rcnn_inference_rotated([boxes, boxes[:0]], [scores, scores[:0]], [(100, 100)] * 2, 0.1, 0.5, 2)
    assert results[0].scores.tolist() == pytest.approx([0.9, 0.3])
    assert len(results[1]) == 0 and isinstance(results[1].pred_boxes, RotatedBoxes)


def _predictor(**kwargs):
    return RotatedFastRCNNOutputLayers(
        ShapeSpec(channels=8), box2box_transform=Box2BoxTransformRotated(weights=(10, 10, 5, 5, 1)), **kwargs
    )


def test_rotated_box_loss_exact_value():
    predictor = _predictor(num_classes=1)
    proposals = Instances((64, 64))
    proposals.proposal_boxes = RotatedBoxes(torch.tensor([[10.0, 20, 4, 8, 170], [40.0, 40, 8, 8, 0]]))
    proposals.gt_boxes = RotatedBoxes(torch.tensor([[12.0, 16, 8, 2, -170], [0.0, 0, 1, 1, 0]]))
    proposals.gt_classes = torch.tensor([0, 1])  # one foreground ROI, one background
    scores = torch.zeros(2, 2, requires_grad=True)
    deltas = torch.zeros(2, 5, requires_grad=True)
    losses = predictor.losses((scores, deltas), [proposals])
    # L1 of the gt deltas (5, -5, 5 log 2, -5 log 4, pi / 9) over the 2 ROIs.
    expected = (10 + 15 * math.log(2.0) + math.pi / 9) / 2
    assert losses["loss_box_reg"].item() == pytest.approx(expected, rel=1e-5)
    assert losses["loss_cls"].item() == pytest.approx(math.log(2.0), rel=1e-5)
    sum(losses.values()).backward()
    assert deltas.grad[1].abs().sum() == 0 and deltas.grad[0].abs().sum() > 0


def test_rotated_predictor_rejects_axis_aligned_transform_and_iou_losses():
    from libdet.modeling.box_regression import Box2BoxTransform

    with pytest.raises(TypeError, match="Box2BoxTransformRotated"):
        RotatedFastRCNNOutputLayers(8, box2box_transform=Box2BoxTransform(weights=(1, 1, 1, 1)), num_classes=2)
    with pytest.raises(ValueError, match="smooth_l1"):
        _predictor(num_classes=2, box_reg_loss_type="giou")


def _rroi_heads(**overrides):
    kwargs = dict(
        num_classes=2,
        batch_size_per_image=16,
        positive_fraction=0.25,
        proposal_matcher=Matcher([0.5], [0, 1]),
        box_in_features=["p2"],
        box_pooler=ROIPooler(output_size=4, scales=(1.0 / 4,), sampling_ratio=2, pooler_type="ROIAlignRotated"),
        box_head=FastRCNNConvFCHead(ShapeSpec(channels=8, height=4, width=4), conv_dims=[], fc_dims=[8]),
        box_predictor=_predictor(num_classes=2),
    )
    kwargs.update(overrides)
    return RROIHeads(**kwargs)


def test_rroi_heads_checks_its_parts():
    with pytest.raises(ValueError, match="ROIAlignRotated"):
        _rroi_heads(box_pooler=ROIPooler(output_size=4, scales=(1.0 / 4,), sampling_ratio=2, pooler_type="ROIAlignV2"))
    with pytest.raises(TypeError, match="RotatedFastRCNNOutputLayers"):
        _rroi_heads(
            box_predictor=FastRCNNOutputLayers(
                8, box2box_transform=Box2BoxTransformRotated(weights=(10, 10, 5, 5, 1)), num_classes=2
            )
        )
    with pytest.raises(ValueError, match="mask and keypoint"):
        _rroi_heads(
            mask_in_features=["p2"],
            mask_pooler=None,
            mask_head=MaskRCNNConvUpsampleHead(ShapeSpec(channels=8), num_classes=2, conv_dims=[8]),
        )
    with pytest.raises(ValueError, match="train_on_pred_boxes"):
        _rroi_heads(train_on_pred_boxes=True)


def test_rroi_heads_sampling_matches_by_rotated_iou():
    torch.manual_seed(0)
    heads = _rroi_heads()
    proposals = Instances((64, 64))
    # The first proposal is the gt turned by 180 degrees (the same rectangle, IoU 1); the second is far away.
    proposals.proposal_boxes = RotatedBoxes(torch.tensor([[30.0, 30, 20, 10, -150], [5.0, 5, 4, 4, 0]]))
    proposals.objectness_logits = torch.tensor([1.0, 0.5])
    target = Instances((64, 64))
    target.gt_boxes = RotatedBoxes(torch.tensor([[30.0, 30, 20, 10, 30]]))
    target.gt_classes = torch.tensor([1])
    (sampled,) = heads.label_and_sample_proposals([proposals], [target])
    # 2 proposals + the appended gt; both copies of the gt rectangle are class 1, the far one background.
    assert len(sampled) == 3
    by_x = {round(float(b[0])): int(c) for b, c in zip(sampled.proposal_boxes.tensor, sampled.gt_classes)}
    assert by_x == {30: 1, 5: 2}
    assert sorted(sampled.gt_classes.tolist()) == [1, 1, 2]
    assert isinstance(sampled.gt_boxes, RotatedBoxes)


def _reference_rows():
    rows = []
    for line in REFERENCE.read_text().splitlines():
        key, shape = line.split("\t")
        rows.append((key, tuple(int(x) for x in shape.strip("[]").split(",") if x.strip())))
    return rows


def test_config_state_dict_is_faster_rcnn_with_rotated_shapes():
    """detectron2's rotated Faster R-CNN has Faster R-CNN's keys (same heads), with 21 anchors x 5 deltas in
    the RPN and 5 deltas per class in the box predictor."""
    model = instantiate(load_model_config("rotated_faster_rcnn_fpn"))
    changed = {
        "proposal_generator.rpn_head.objectness_logits.weight": (21, 256, 1, 1),
        "proposal_generator.rpn_head.objectness_logits.bias": (21,),
        "proposal_generator.rpn_head.anchor_deltas.weight": (105, 256, 1, 1),
        "proposal_generator.rpn_head.anchor_deltas.bias": (105,),
        "roi_heads.box_predictor.bbox_pred.weight": (400, 1024),
        "roi_heads.box_predictor.bbox_pred.bias": (400,),
    }
    expected = [(k, changed.get(k, s)) for k, s in _reference_rows() if not k.startswith("roi_heads.mask_head.")]
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == expected


def tiny_rotated_faster_rcnn_fpn():
    cfg = load_model_config("rotated_faster_rcnn_fpn")
    _unit_inputs(cfg)
    _shallow_resnet(cfg.backbone.bottom_up)
    cfg.backbone.out_channels = 16
    cfg.proposal_generator.update(batch_size_per_image=64, pre_nms_topk=(300, 200), post_nms_topk=(100, 50))
    cfg.proposal_generator.anchor_generator.angles = [-60, 0, 60]
    cfg.proposal_generator.head.num_anchors = 9
    cfg.roi_heads.update(num_classes=NUM_CLASSES, batch_size_per_image=64)
    cfg.roi_heads.box_head.fc_dims = [32, 32]
    cfg.roi_heads.box_predictor.input_shape.channels = 32
    return cfg


def _rotated_input(seed, boxes, classes, size=(64, 96)):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, *size, generator=g) * 255
    inst = Instances(size)
    inst.gt_boxes = RotatedBoxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 5))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    return {"image": image, "instances": inst}


def test_tiny_rotated_faster_rcnn_trains_and_infers(single_thread):  # noqa: F811
    torch.manual_seed(0)
    model = instantiate(tiny_rotated_faster_rcnn_fpn())
    batch = [
        _rotated_input(0, [[30.0, 30, 30, 14, 30], [70.0, 35, 16, 40, -75]], [0, 2]),
        _rotated_input(1, [], []),  # an image without objects
    ]
    losses = model(batch)
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_box_reg"] > 0 and losses["loss_rpn_loc"] > 0
    sum(losses.values()).backward()
    assert model.roi_heads.box_predictor.bbox_pred.weight.grad.abs().sum() > 0

    # Only the empty image: box losses are exactly zero, the classification losses finite.
    losses = model([batch[1]])
    assert losses["loss_box_reg"].item() == 0.0 and losses["loss_rpn_loc"].item() == 0.0
    assert torch.isfinite(losses["loss_cls"]) and torch.isfinite(losses["loss_rpn_cls"])

    model.eval()
    with torch.no_grad():
        model.roi_heads.box_predictor.test_score_thresh = 0.0
        raw = model.inference([{"image": batch[0]["image"]}], do_postprocess=False)[0]
        (out,) = model([{"image": batch[0]["image"], "height": 128, "width": 192}])
    inst = out["instances"]
    assert isinstance(inst.pred_boxes, RotatedBoxes) and len(inst) > 0
    assert inst.image_size == (128, 192)
    assert len(raw) == len(inst)
    # Output boxes are the network-resolution boxes scaled by 2 (uniform scaling keeps angles).
    torch.testing.assert_close(inst.pred_boxes.tensor[:, :4], raw.pred_boxes.tensor[:, :4] * 2, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(inst.pred_boxes.tensor[:, 4], raw.pred_boxes.tensor[:, 4], rtol=1e-5, atol=1e-3)
    assert inst.pred_classes.max() < NUM_CLASSES

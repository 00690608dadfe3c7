"""Mask head: loss against hand-built targets (bit masks and polygons), inference, layer names."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from libdet.layers import ShapeSpec
from libdet.modeling.roi_heads import MaskRCNNConvUpsampleHead
from libdet.modeling.roi_heads.mask_head import mask_rcnn_inference, mask_rcnn_loss
from libdet.structures import BitMasks, Boxes, Instances, PolygonMasks


def _bce(z, t):
    return max(z, 0) - z * t + math.log1p(math.exp(-abs(z)))


def _fg_proposals(polygons: bool):
    inst = Instances((16, 16))
    inst.proposal_boxes = Boxes(torch.tensor([[0.0, 0, 16, 16], [8, 0, 16, 8]]))
    inst.gt_classes = torch.tensor([2, 0])
    if polygons:  # both instances: the top half of the image
        half = np.array([0, 0, 16, 0, 16, 8, 0, 8], dtype=np.float64)
        inst.gt_masks = PolygonMasks([[half], [half]])
    else:
        masks = torch.zeros(2, 16, 16, dtype=torch.bool)
        masks[:, :8, :] = True
        inst.gt_masks = BitMasks(masks)
    return inst


@pytest.mark.parametrize("polygons", [False, True], ids=["bitmasks", "polygons"])
def test_mask_rcnn_loss_by_hand(polygons):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = mask_rcnn_loss(logits, [_fg_proposals(polygons)])
    # ROI 0 covers the image: its 4x4 target is 1 in the top two rows. ROI 1 lies in the top half: all 1.
    target0 = [[1.0] * 4] * 2 + [[0.0] * 4] * 2
    expected = sum(_bce(logits[0, 2, i, j].item(), target0[i][j]) for i in range(4) for j in range(4))
    expected += sum(_bce(logits[1, 0, i, j].item(), 1.0) for i in range(4) for j in range(4))
    assert loss.item() == pytest.approx(expected / 32, rel=1e-5)
    loss.backward()
    assert logits.grad[0, 2].abs().sum() > 0 and logits.grad[0, :2].abs().sum() == 0  # only the gt class


def test_mask_rcnn_loss_class_agnostic_and_empty():
    logits = torch.zeros(2, 1, 4, 4, requires_grad=True)
    assert mask_rcnn_loss(logits, [_fg_proposals(False)]).item() == pytest.approx(math.log(2))
    empty_logits = torch.zeros(0, 3, 4, 4, requires_grad=True)
    empty = Instances((16, 16), proposal_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64))
    loss = mask_rcnn_loss(empty_logits, [empty])
    assert loss.item() == 0 and loss.requires_grad
    with pytest.raises(ValueError, match="square"):
        mask_rcnn_loss(torch.zeros(2, 3, 4, 5), [_fg_proposals(False)])


def test_mask_rcnn_inference_picks_predicted_class():
    logits = torch.arange(3 * 2 * 2 * 2, dtype=torch.float32).view(3, 2, 2, 2) / 10
    a = Instances((8, 8), pred_classes=torch.tensor([1, 0]))
    b = Instances((8, 8), pred_classes=torch.tensor([1]))
    mask_rcnn_inference(logits, [a, b])
    assert a.pred_masks.shape == (2, 1, 2, 2) and b.pred_masks.shape == (1, 1, 2, 2)
    assert torch.allclose(a.pred_masks[0, 0], logits[0, 1].sigmoid())
    assert torch.allclose(a.pred_masks[1, 0], logits[1, 0].sigmoid())
    assert torch.allclose(b.pred_masks[0, 0], logits[2, 1].sigmoid())


def test_conv_upsample_head():
    head = MaskRCNNConvUpsampleHead(ShapeSpec(channels=8, height=7, width=7), num_classes=3, conv_dims=[4, 4, 6])
    assert [k for k, _ in head.named_parameters()] == [
        "mask_fcn1.weight",
        "mask_fcn1.bias",
        "mask_fcn2.weight",
        "mask_fcn2.bias",
        "deconv.weight",
        "deconv.bias",
        "predictor.weight",
        "predictor.bias",
    ]
    assert head.deconv.weight.shape == (4, 6, 2, 2) and head.predictor.weight.shape == (3, 6, 1, 1)
    x = torch.randn(2, 8, 7, 7)
    assert head.layers(x).shape == (2, 3, 14, 14)
    inst = Instances((16, 16))
    inst.proposal_boxes = Boxes(torch.tensor([[0.0, 0, 16, 16], [8, 0, 16, 8]]))
    inst.gt_classes = torch.tensor([2, 0])
    inst.gt_masks = BitMasks(torch.ones(2, 16, 16, dtype=torch.bool))
    head.loss_weight = 3.0
    losses = head.train()(x, [inst])
    assert set(losses) == {"loss_mask"}
    assert losses["loss_mask"].item() == pytest.approx(3.0 * mask_rcnn_loss(head.layers(x), [inst]).item(), rel=1e-6)
    det = Instances((16, 16), pred_classes=torch.tensor([0, 2]))
    head.eval()(x, [det])
    assert det.pred_masks.shape == (2, 1, 14, 14)
    with pytest.raises(ValueError, match="conv_dims"):
        MaskRCNNConvUpsampleHead(ShapeSpec(channels=8), num_classes=3, conv_dims=[])


@pytest.mark.parametrize("vis_period,iteration,expected_images", [(0, 0, 0), (2, 4, 2), (2, 3, 0)])
def test_mask_rcnn_loss_visualises_prediction_next_to_gt(vis_period, iteration, expected_images):
    from libdet.utils.events import EventStorage

    logits = torch.full((2, 3, 4, 4), 20.0)  # predicted foreground everywhere: sigmoid ~ 1
    with EventStorage(start_iter=iteration) as storage:
        mask_rcnn_loss(logits, [_fg_proposals(polygons=False)], vis_period=vis_period)
    images = storage.vis_data
    assert len(images) == expected_images
    if expected_images:
        name, img, _ = images[0]
        assert name == "Left: mask prediction;   Right: mask GT (0)"
        assert img.shape == (3, 4, 8)
        torch.testing.assert_close(img[:, :, :4], torch.ones(3, 4, 4))  # the prediction
        expected_gt = torch.tensor([1.0, 1.0, 0.0, 0.0])[:, None].expand(4, 4)  # top half of ROI 0
        torch.testing.assert_close(img[0, :, 4:], expected_gt)


def test_mask_head_rejects_negative_vis_period():
    with pytest.raises(ValueError, match="vis_period"):
        MaskRCNNConvUpsampleHead(ShapeSpec(channels=4, height=4, width=4), num_classes=1, conv_dims=[4], vis_period=-1)

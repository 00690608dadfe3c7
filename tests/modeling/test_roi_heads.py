"""ROI heads: proposal labelling and sampling, foreground selection, the box head, the standard heads."""

from __future__ import annotations

import pytest
import torch

from libdet.layers import ShapeSpec
from libdet.modeling.box_regression import Box2BoxTransform
from libdet.modeling.matcher import Matcher
from libdet.modeling.poolers import ROIPooler
from libdet.modeling.roi_heads import (
    FastRCNNConvFCHead,
    FastRCNNOutputLayers,
    MaskRCNNConvUpsampleHead,
    Res5ROIHeads,
    ROIHeads,
    StandardROIHeads,
    select_foreground_proposals,
)
from libdet.structures import BitMasks, Boxes, ImageList, Instances


def _roi_heads(batch_size_per_image=512, **kwargs):
    return ROIHeads(
        num_classes=3,
        batch_size_per_image=batch_size_per_image,
        positive_fraction=0.25,
        proposal_matcher=Matcher(thresholds=[0.5], labels=[0, 1], allow_low_quality_matches=False),
        **kwargs,
    )


def _targets():
    t = Instances((40, 40))
    t.gt_boxes = Boxes(torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40]]))
    t.gt_classes = torch.tensor([2, 0])
    masks = torch.zeros(2, 40, 40, dtype=torch.bool)
    masks[0, :10, :10] = True
    masks[1, 20:, 20:] = True
    t.gt_masks = BitMasks(masks)
    return t


def _proposals():
    p = Instances((40, 40))
    p.proposal_boxes = Boxes(torch.tensor([[0.0, 0, 10, 11], [21, 20, 40, 40], [0, 20, 10, 30], [5, 5, 15, 15]]))
    p.objectness_logits = torch.tensor([1.0, 0.5, 0.2, 0.1])
    return p


def _by_box(instances):
    return {tuple(b.tolist()): i for i, b in enumerate(instances.proposal_boxes.tensor)}


def test_label_and_sample_proposals():
    torch.manual_seed(0)
    (out,) = _roi_heads().label_and_sample_proposals([_proposals()], [_targets()])
    rows = _by_box(out)
    assert len(out) == 6  # 4 proposals + 2 appended gt boxes, nothing subsampled
    expected_class = {
        (0.0, 0.0, 10.0, 11.0): 2,
        (21.0, 20.0, 40.0, 40.0): 0,
        (0.0, 20.0, 10.0, 30.0): 3,
        (5.0, 5.0, 15.0, 15.0): 3,
        (0.0, 0.0, 10.0, 10.0): 2,
        (20.0, 20.0, 40.0, 40.0): 0,
    }
    assert {box: out.gt_classes[i].item() for box, i in rows.items()} == expected_class
    # Foreground first; gt_* fields come from the matched gt.
    assert out.gt_classes[:4].lt(3).all() and out.gt_classes[4:].eq(3).all()
    fg = rows[(21.0, 20.0, 40.0, 40.0)]
    assert out.gt_boxes.tensor[fg].tolist() == [20.0, 20.0, 40.0, 40.0]
    assert out.gt_masks.tensor[fg, 30, 30] and not out.gt_masks.tensor[fg, 5, 5]
    assert set(out.get_fields()) == {"proposal_boxes", "objectness_logits", "gt_classes", "gt_boxes", "gt_masks"}


def test_label_and_sample_without_gt_and_budget():
    empty = Instances((40, 40), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64))
    (out,) = _roi_heads().label_and_sample_proposals([_proposals()], [empty])
    assert len(out) == 4 and out.gt_classes.eq(3).all() and not out.has("gt_boxes")
    (no_append,) = _roi_heads(proposal_append_gt=False).label_and_sample_proposals([_proposals()], [_targets()])
    assert len(no_append) == 4
    torch.manual_seed(0)
    (small,) = _roi_heads(batch_size_per_image=4).label_and_sample_proposals([_proposals()], [_targets()])
    # 25% of 4 = 1 foreground, and the 2 background proposals there are.
    assert len(small) == 3 and (small.gt_classes < 3).sum() == 1
    with pytest.raises(ValueError, match="image 0"):
        _roi_heads().label_and_sample_proposals(
            [_proposals()], [Instances((40, 40), gt_boxes=Boxes(torch.zeros(0, 4)))]
        )


def test_select_foreground_proposals():
    p = Instances((10, 10), gt_classes=torch.tensor([0, 3, -1, 2]), proposal_boxes=Boxes(torch.rand(4, 4)))
    (fg,), (mask,) = select_foreground_proposals([p], bg_label=3)
    assert fg.gt_classes.tolist() == [0, 2] and mask.tolist() == [True, False, False, True]


def test_fast_rcnn_conv_fc_head():
    head = FastRCNNConvFCHead(ShapeSpec(channels=4, height=5, width=5), conv_dims=[6, 6], fc_dims=[16, 8])
    assert [k for k, _ in head.named_parameters()] == [
        "conv1.weight",
        "conv1.bias",
        "conv2.weight",
        "conv2.bias",
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
    ]
    assert head.fc1.weight.shape == (16, 150)
    assert head(torch.rand(3, 4, 5, 5)).shape == (3, 8) and head.output_shape == ShapeSpec(channels=8)
    conv_only = FastRCNNConvFCHead(ShapeSpec(channels=4, height=5, width=5), conv_dims=[6], fc_dims=[], conv_norm="BN")
    assert conv_only.output_shape == ShapeSpec(channels=6, height=5, width=5)
    assert conv_only.conv1.bias is None and conv_only(torch.rand(2, 4, 5, 5)).shape == (2, 6, 5, 5)
    with pytest.raises(ValueError, match="empty"):
        FastRCNNConvFCHead(ShapeSpec(channels=4, height=5, width=5), conv_dims=[], fc_dims=[])


def _standard_heads(mask=True, **kwargs):
    torch.manual_seed(0)
    pooler = ROIPooler(output_size=4, scales=(1.0 / 4,), sampling_ratio=0, pooler_type="ROIAlignV2")
    mask_kwargs = {}
    if mask:
        mask_kwargs = dict(
            mask_in_features=["p2"],
            mask_pooler=ROIPooler(output_size=4, scales=(1.0 / 4,), sampling_ratio=0, pooler_type="ROIAlignV2"),
            mask_head=MaskRCNNConvUpsampleHead(ShapeSpec(channels=4), num_classes=3, conv_dims=[4]),
        )
    return StandardROIHeads(
        num_classes=3,
        batch_size_per_image=16,
        positive_fraction=0.25,
        proposal_matcher=Matcher(thresholds=[0.5], labels=[0, 1], allow_low_quality_matches=False),
        box_in_features=["p2"],
        box_pooler=pooler,
        box_head=FastRCNNConvFCHead(ShapeSpec(channels=4, height=4, width=4), conv_dims=[], fc_dims=[8]),
        box_predictor=FastRCNNOutputLayers(8, box2box_transform=Box2BoxTransform((10, 10, 5, 5)), num_classes=3),
        **mask_kwargs,
        **kwargs,
    )


def test_standard_roi_heads_train_and_infer():
    features = {"p2": torch.randn(1, 4, 10, 10)}
    images = ImageList(torch.zeros(1, 3, 40, 40), [(40, 40)])
    plain = _standard_heads().train()
    torch.manual_seed(1)
    sampled_plain, losses = plain(images, features, [_proposals()], [_targets()])
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask"}
    heads = _standard_heads(train_on_pred_boxes=True).train()
    with torch.no_grad():
        heads.box_predictor.bbox_pred.bias.fill_(1.0)  # every prediction moves its box
    torch.manual_seed(1)
    sampled, _ = heads(images, features, [_proposals()], [_targets()])
    # train_on_pred_boxes: the proposals (the same sample) now carry the refined boxes.
    assert torch.equal(sampled[0].gt_classes, sampled_plain[0].gt_classes)
    moved = sampled[0].proposal_boxes.tensor - sampled_plain[0].proposal_boxes.tensor
    assert moved.abs().min() > 0

    heads.eval()
    (det,), none = heads(images, features, [_proposals()])
    assert none == {} and det.has("pred_masks") and det.pred_masks.shape[1:] == (1, 8, 8)
    given = Instances((40, 40), pred_boxes=Boxes(torch.tensor([[0.0, 0, 20, 20]])), pred_classes=torch.tensor([1]))
    (with_masks,) = heads.forward_with_given_boxes(features, [given])
    assert with_masks.pred_masks.shape == (1, 1, 8, 8)

    boxes_only = _standard_heads(mask=False).eval()
    (det,), _ = boxes_only(images, features, [_proposals()])
    assert not det.has("pred_masks")
    with pytest.raises(ValueError, match="together"):
        _standard_heads(mask=False, mask_in_features=["p2"])


def test_losses_and_inference_are_separate_methods():
    """A validation loss needs no mode switch: ``losses`` in eval mode equals the training forward's losses,
    and ``inference`` in train mode equals the eval forward's detections."""
    features = {"p2": torch.randn(1, 4, 10, 10)}
    images = ImageList(torch.zeros(1, 3, 40, 40), [(40, 40)])
    heads = _standard_heads().train()
    torch.manual_seed(1)
    sampled, expected = heads(images, features, [_proposals()], [_targets()])
    heads.eval()
    torch.manual_seed(1)
    resampled = heads.label_and_sample_proposals([_proposals()], [_targets()])
    assert torch.equal(resampled[0].proposal_boxes.tensor, sampled[0].proposal_boxes.tensor)
    losses = heads.losses(features, resampled, [_targets()])
    assert set(losses) == set(expected) == {"loss_cls", "loss_box_reg", "loss_mask"}
    for name in expected:
        torch.testing.assert_close(losses[name], expected[name], rtol=0, atol=0)

    (det,), _ = heads(images, features, [_proposals()])
    heads.train()
    (same,) = heads.inference(features, [_proposals()])
    assert torch.equal(same.pred_boxes.tensor, det.pred_boxes.tensor)
    assert torch.equal(same.pred_masks, det.pred_masks)


def test_res5_roi_heads_requires_one_feature():
    with pytest.raises(ValueError, match="exactly one"):
        Res5ROIHeads(
            num_classes=3,
            batch_size_per_image=8,
            positive_fraction=0.25,
            proposal_matcher=Matcher(thresholds=[0.5], labels=[0, 1]),
            in_features=["res4", "res5"],
            pooler=ROIPooler(output_size=4, scales=(1.0 / 16,), sampling_ratio=0, pooler_type="ROIAlignV2"),
            res5=torch.nn.Identity(),
            box_predictor=FastRCNNOutputLayers(8, box2box_transform=Box2BoxTransform((10, 10, 5, 5)), num_classes=3),
        )

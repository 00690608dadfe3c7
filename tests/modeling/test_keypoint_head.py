"""Keypoint R-CNN: heatmap targets and decoding (exact values), the keypoint loss against a plain reference,
the keypoint branch of StandardROIHeads, and a tiny Keypoint R-CNN trained and run on CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from libdet.config import instantiate
from libdet.data.dataset_mapper import DatasetMapper
from libdet.layers import ShapeSpec
from libdet.modeling.roi_heads.keypoint_head import (
    BaseKeypointRCNNHead,
    KRCNNConvDeconvUpsampleHead,
    keypoint_rcnn_inference,
    keypoint_rcnn_loss,
)
from libdet.modeling.roi_heads.roi_heads import select_proposals_with_visible_keypoints
from libdet.structures import Boxes, BoxMode, Instances, Keypoints
from libdet.utils.events import EventStorage

from ._tiny_models import NUM_TINY_KEYPOINTS, single_thread, tiny_keypoint_rcnn_fpn  # noqa: F401


def _rois(boxes, keypoints):
    inst = Instances((100, 100))
    inst.proposal_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.gt_keypoints = Keypoints(torch.tensor(keypoints, dtype=torch.float32))
    return inst


def test_hand_placed_keypoint_maps_to_expected_heatmap_bin():
    # box 28 x 14 over a 7 x 7 grid: a bin is 4 px wide and 2 px high.
    # (10, 9) -> column floor(10 / 4) = 2, row floor(9 / 2) = 4 -> index 4 * 7 + 2 = 30.
    inst = _rois([[0.0, 0.0, 28.0, 14.0]], [[[10.0, 9.0, 2.0], [30.0, 5.0, 2.0], [3.0, 3.0, 0.0]]])
    heatmaps, valid = inst.gt_keypoints.to_heatmap(inst.proposal_boxes, 7)
    assert heatmaps.tolist() == [[30, 0, 0]]
    assert valid.tolist() == [[1, 0, 0]]  # outside the box; not labeled

    # the loss puts its softmax target on bin 30: a logit of 5 there, 0 in the other 48 bins
    logits = torch.zeros(1, 3, 7, 7)
    logits[0, 0].view(-1)[30] = 5.0
    loss = keypoint_rcnn_loss(logits, [inst], normalizer=None)
    assert loss.item() == pytest.approx(math.log(math.exp(5.0) + 48) - 5.0, rel=1e-6)
    logits_elsewhere = torch.zeros(1, 3, 7, 7)
    logits_elsewhere[0, 0].view(-1)[31] = 5.0
    loss = keypoint_rcnn_loss(logits_elsewhere, [inst], normalizer=None)
    assert loss.item() == pytest.approx(math.log(math.exp(5.0) + 48), rel=1e-6)


def _reference_loss(logits, boxes, keypoints, normalizer=None):
    """Per keypoint: labeled (v > 0) and inside its box -> -log softmax at its bin."""
    side = logits.shape[-1]
    total, count = 0.0, 0
    for r, (x0, y0, x1, y1) in enumerate(boxes):
        for k, (x, y, v) in enumerate(keypoints[r]):
            if v <= 0:
                continue
            col = math.floor((x - x0) * side / (x1 - x0))
            row = math.floor((y - y0) * side / (y1 - y0))
            if x == x1:
                col = side - 1
            if y == y1:
                row = side - 1
            if not (0 <= col < side and 0 <= row < side):
                continue
            total += -F.log_softmax(logits[r, k].reshape(-1).double(), dim=0)[row * side + col].item()
            count += 1
    return total / (count if normalizer is None else normalizer), count


def test_keypoint_loss_matches_reference_and_ignores_invisible_keypoints():
    g = torch.Generator().manual_seed(0)
    boxes = [[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 33.0, 17.0], [5.0, 5.0, 25.0, 45.0]]
    keypoints = [
        [[12.0, 25.0, 2.0], [49.9, 59.0, 1.0], [0.0, 0.0, 0.0], [70.0, 30.0, 2.0]],  # last one outside
        [[33.0, 17.0, 2.0], [16.5, 8.5, 1.0], [3.0, 3.0, 2.0], [0.0, 0.0, 0.0]],  # first one on the corner
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [6.0, 44.0, 2.0], [24.0, 6.0, 1.0]],
    ]
    logits = torch.randn(3, 4, 8, 8, generator=g, requires_grad=True)
    insts = [_rois(boxes[:2], keypoints[:2]), _rois(boxes[2:], keypoints[2:])]
    loss = keypoint_rcnn_loss(logits, insts, normalizer=None)
    expected, count = _reference_loss(logits.detach(), boxes, keypoints)
    assert count == 7
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert keypoint_rcnn_loss(logits, insts, normalizer=3.0).item() == pytest.approx(expected * count / 3.0, rel=1e-5)

    loss.backward()
    # not labeled (v = 0) or outside the box: no gradient reaches their heatmaps
    for r, k in [(0, 2), (0, 3), (1, 3), (2, 0), (2, 1)]:
        assert logits.grad[r, k].abs().sum() == 0, (r, k)
    for r, k in [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 2), (2, 3)]:
        assert logits.grad[r, k].abs().sum() > 0, (r, k)


def test_no_visible_keypoint_gives_zero_loss_connected_to_the_graph():
    logits = torch.randn(2, 3, 6, 6, requires_grad=True)
    inst = _rois([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 20.0, 20.0]], [[[1.0, 1.0, 0.0]] * 3, [[50.0, 50.0, 2.0]] * 3])
    loss = keypoint_rcnn_loss(logits, [inst, _rois(np.zeros((0, 4)), np.zeros((0, 3, 3)))], normalizer=None)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() == 0
    # no ROI at all
    empty = torch.zeros(0, 3, 6, 6, requires_grad=True)
    loss = keypoint_rcnn_loss(empty, [_rois(np.zeros((0, 4)), np.zeros((0, 3, 3)))], normalizer=None)
    assert loss.item() == 0.0 and loss.requires_grad


def test_loss_rejects_mismatched_inputs():
    inst = _rois([[0.0, 0.0, 10.0, 10.0]], [[[1.0, 1.0, 2.0]]])
    with pytest.raises(ValueError, match="square"):
        keypoint_rcnn_loss(torch.zeros(1, 1, 4, 5), [inst], None)
    with pytest.raises(ValueError, match="2 heatmaps for 1 ROIs"):
        keypoint_rcnn_loss(torch.zeros(2, 1, 4, 4), [inst], None)
    no_kp = Instances((10, 10), proposal_boxes=Boxes(torch.tensor([[0.0, 0.0, 5.0, 5.0]])))
    with pytest.raises(ValueError, match="image 0 have no `gt_keypoints`"):
        keypoint_rcnn_loss(torch.zeros(1, 1, 4, 4), [no_kp], None)


def test_inference_decodes_one_hot_heatmap_to_hand_computed_keypoints():
    side, peak = 56, 10.0
    logits = torch.zeros(2, 2, side, side)
    logits[0, 0, 10, 5] = peak  # row 10, column 5
    logits[0, 1, 0, 55] = peak
    logits[1, 0, 20, 30] = peak
    logits[1, 1, 3, 4] = peak
    first = Instances((300, 300), pred_boxes=Boxes(torch.tensor([[100.0, 200.0, 156.0, 256.0]])))
    # 55.5 px wide: the heatmap is resized to ceil(55.5) = 56 columns, each 55.5 / 56 px
    second = Instances((300, 300), pred_boxes=Boxes(torch.tensor([[10.0, 20.0, 65.5, 76.0]])))
    empty = Instances((300, 300), pred_boxes=Boxes(torch.zeros(0, 4)))
    keypoint_rcnn_inference(logits, [first, empty, second])

    # a 56 x 56 box keeps the heatmap's size: pixel (col, row) -> (x0 + col + 0.5, y0 + row + 0.5)
    score = 1.0 / (1.0 + (side * side - 1) * math.exp(-peak))
    expected_first = [[105.5, 210.5, score], [155.5, 200.5, score]]
    assert first.pred_keypoints.shape == (1, 2, 3)
    assert torch.allclose(first.pred_keypoints[0], torch.tensor(expected_first), rtol=1e-5, atol=1e-4)
    c = 55.5 / 56
    assert torch.allclose(second.pred_keypoints[0, :, :2], torch.tensor([[10 + 30.5 * c, 40.5], [10 + 4.5 * c, 23.5]]))
    assert torch.equal(first.pred_keypoint_heatmaps, logits[:1])
    assert torch.equal(second.pred_keypoint_heatmaps, logits[1:])
    assert empty.pred_keypoints.shape == (0, 2, 3) and empty.pred_keypoint_heatmaps.shape == (0, 2, side, side)


def test_conv_deconv_head_shapes_names_and_normalizer():
    head = KRCNNConvDeconvUpsampleHead(ShapeSpec(channels=8), num_keypoints=5, conv_dims=[16, 16], loss_normalizer=2.0)
    names = [n for n, _ in head.named_parameters()]
    assert names == [
        "conv_fcn1.weight",
        "conv_fcn1.bias",
        "conv_fcn2.weight",
        "conv_fcn2.bias",
        "score_lowres.weight",
        "score_lowres.bias",
    ]
    assert head.score_lowres.weight.shape == (16, 5, 4, 4)
    assert all(p.abs().sum() == 0 for n, p in head.named_parameters() if n.endswith("bias"))
    x = torch.randn(3, 8, 7, 7)
    assert head.layers(x).shape == (3, 5, 28, 28)  # x2 deconv, x2 bilinear

    # a numeric normalizer is per image: 2 images x 2.0
    inst = _rois([[0.0, 0.0, 28.0, 28.0]] * 2, [[[1.0, 1.0, 2.0]] * 5, [[20.0, 3.0, 1.0]] * 5])
    empty = _rois(np.zeros((0, 4)), np.zeros((0, 5, 3)))
    head.train()
    loss = head(x[:2], [inst, empty])["loss_keypoint"]
    expected = keypoint_rcnn_loss(head.layers(x[:2]), [inst, empty], normalizer=4.0)
    assert torch.allclose(loss, expected)
    head.eval()
    with torch.no_grad():
        dets = Instances((50, 50), pred_boxes=Boxes(torch.tensor([[1.0, 2.0, 30.0, 40.0]])))
        out = head(x[:1], [dets])
    assert out[0].pred_keypoints.shape == (1, 5, 3)


def test_head_argument_errors():
    with pytest.raises(ValueError, match="loss_normalizer"):
        KRCNNConvDeconvUpsampleHead(ShapeSpec(channels=4), num_keypoints=3, conv_dims=[], loss_normalizer="all")
    with pytest.raises(ValueError, match="num_keypoints"):
        KRCNNConvDeconvUpsampleHead(ShapeSpec(channels=4), num_keypoints=0, conv_dims=[])
    with pytest.raises(NotImplementedError):
        BaseKeypointRCNNHead(num_keypoints=2)(torch.zeros(1, 1, 2, 2), [])


def test_select_proposals_with_visible_keypoints():
    kp = [[[5.0, 5.0, 2.0], [30.0, 30.0, 0.0]], [[5.0, 5.0, 0.0], [12.0, 12.0, 1.0]]]
    boxes = [
        [0.0, 0.0, 10.0, 10.0],  # gt 0: visible (5, 5) inside
        [20.0, 20.0, 40.0, 40.0],  # gt 0: only the unlabeled (30, 30) inside
        [0.0, 0.0, 10.0, 10.0],  # gt 1: only the unlabeled (5, 5) inside
        [0.0, 0.0, 12.0, 12.0],  # gt 1: occluded (v=1) (12, 12) on the border counts
    ]
    inst = _rois(boxes, [kp[0], kp[0], kp[1], kp[1]])
    empty = Instances((10, 10), proposal_boxes=Boxes(torch.zeros(0, 4)))  # no gt_keypoints needed when empty
    with EventStorage() as storage:
        out = select_proposals_with_visible_keypoints([inst, empty])
    assert out[0].proposal_boxes.tensor.tolist() == [boxes[0], boxes[3]]
    assert len(out[1]) == 0
    assert storage.latest()["keypoint_head/num_fg_samples"][0] == 1.0


def test_standard_roi_heads_keypoint_arguments_must_come_together():
    from libdet.modeling.roi_heads.roi_heads import StandardROIHeads

    heads = instantiate(tiny_keypoint_rcnn_fpn().roi_heads)
    assert isinstance(heads, StandardROIHeads) and heads.keypoint_on and not heads.mask_on
    common = dict(
        num_classes=1,
        batch_size_per_image=8,
        positive_fraction=0.5,
        proposal_matcher=heads.proposal_matcher,
        box_in_features=["p2"],
        box_pooler=heads.box_pooler,
        box_head=heads.box_head,
        box_predictor=heads.box_predictor,
    )
    with pytest.raises(ValueError, match="keypoint_in_features"):
        StandardROIHeads(**common, keypoint_head=heads.keypoint_head)
    with pytest.raises(ValueError, match="keypoint_in_features"):
        StandardROIHeads(**common, keypoint_in_features=["p2"])
    assert not StandardROIHeads(**common).keypoint_on


def _person_keypoints(box, visibilities):
    x0, y0, x1, y1 = box
    points = [(x0 + 3, y0 + 3), (x1 - 3, y0 + 3), (x0 + 3, y1 - 3), ((x0 + x1) / 2, (y0 + y1) / 2)]
    flat = []
    for (x, y), v in zip(points, visibilities):
        flat += [0.0, 0.0, 0] if v == 0 else [float(x), float(y), v]
    return flat


def _dataset_dict(tmp_path, image_id, height, width, persons, crowd_boxes=()):
    """A COCO-style dataset dict with its image on disk: person boxes (XYXY) with keypoint visibilities,
    plus crowd annotations (which the mapper drops)."""
    from PIL import Image

    rng = np.random.default_rng(image_id)
    image = (rng.random((height, width, 3)) * 60).astype(np.uint8)
    annos = []
    for box, vis in persons:
        x0, y0, x1, y1 = box
        image[y0:y1, x0:x1] = (230, 40, 40)
        annos.append(
            {
                "bbox": list(box),
                "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": 0,
                "iscrowd": 0,
                "keypoints": _person_keypoints(box, vis),
            }
        )
    for box in crowd_boxes:
        annos.append(
            {
                "bbox": list(box),
                "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": 0,
                "iscrowd": 1,
                "keypoints": [0.0] * (3 * NUM_TINY_KEYPOINTS),
            }
        )
    path = tmp_path / f"{image_id}.png"
    Image.fromarray(image).save(path)
    return {"file_name": str(path), "image_id": image_id, "height": height, "width": width, "annotations": annos}


def _mapped(dicts):
    mapper = DatasetMapper(is_train=True, augmentations=[], image_format="BGR", use_keypoint=True)
    return [mapper(d) for d in dicts]


@pytest.mark.usefixtures("single_thread")
def test_tiny_keypoint_rcnn_trains_and_infers(tmp_path):
    torch.manual_seed(0)
    dicts = [
        _dataset_dict(
            tmp_path,
            1,
            64,
            96,
            persons=[((8, 6, 40, 58), (2, 1, 0, 2)), ((50, 10, 90, 60), (0, 1, 0, 1))],
            crowd_boxes=[(0, 0, 30, 30)],
        ),
        _dataset_dict(tmp_path, 2, 80, 64, persons=[], crowd_boxes=[(10, 10, 50, 70)]),  # no object
    ]
    batch = _mapped(dicts)
    assert len(batch[0]["instances"]) == 2 and len(batch[1]["instances"]) == 0  # crowd dropped
    vis = batch[0]["instances"].gt_keypoints.tensor[:, :, 2]
    assert vis.tolist() == [[2, 1, 0, 2], [0, 1, 0, 1]]

    cfg = tiny_keypoint_rcnn_fpn()
    cfg.roi_heads.box_predictor.test_score_thresh = 0.0
    model = instantiate(cfg).train()
    with EventStorage() as storage:
        losses = model(batch)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_keypoint"}
    assert storage.latest()["keypoint_head/num_fg_samples"][0] > 0
    assert losses["loss_keypoint"].item() > 0
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.roi_heads.keypoint_head.score_lowres.weight.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        outputs = model([{"image": batch[0]["image"], "height": 128, "width": 192}, {"image": batch[1]["image"]}])
    assert [o["instances"].image_size for o in outputs] == [(128, 192), (80, 64)]
    for out in outputs:
        inst = out["instances"]
        assert len(inst) > 0
        assert inst.pred_keypoints.shape == (len(inst), NUM_TINY_KEYPOINTS, 3)
        assert inst.pred_keypoint_heatmaps.shape == (len(inst), NUM_TINY_KEYPOINTS, 28, 28)
        boxes, kp = inst.pred_boxes.tensor, inst.pred_keypoints
        assert (kp[:, :, 0] >= boxes[:, None, 0] - 2).all() and (kp[:, :, 0] <= boxes[:, None, 2] + 2).all()
        assert (kp[:, :, 1] >= boxes[:, None, 1] - 2).all() and (kp[:, :, 1] <= boxes[:, None, 3] + 2).all()
        assert ((kp[:, :, 2] > 0) & (kp[:, :, 2] <= 1)).all()


@pytest.mark.usefixtures("single_thread")
def test_tiny_keypoint_rcnn_without_labeled_keypoints_gives_zero_keypoint_loss(tmp_path):
    torch.manual_seed(0)
    batch = _mapped([_dataset_dict(tmp_path, 3, 64, 64, persons=[((10, 10, 50, 50), (0, 0, 0, 0))])])
    model = instantiate(tiny_keypoint_rcnn_fpn()).train()
    losses = model(batch)
    assert losses["loss_keypoint"].item() == 0.0 and losses["loss_keypoint"].requires_grad
    assert losses["loss_box_reg"].item() > 0
    sum(losses.values()).backward()
    assert model.roi_heads.keypoint_head.score_lowres.weight.grad.abs().sum() == 0

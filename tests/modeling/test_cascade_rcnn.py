"""Cascade R-CNN ROI heads: per-stage labels and regression targets (exact), score averaging at inference
against a manual run of the stages, gradient scaling, and a tiny cascade Mask R-CNN on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from libdet.config import instantiate
from libdet.data.dataset_mapper import DatasetMapper
from libdet.layers import ShapeSpec
from libdet.modeling.box_regression import Box2BoxTransform
from libdet.modeling.matcher import Matcher
from libdet.modeling.poolers import ROIPooler
from libdet.modeling.roi_heads.box_head import FastRCNNConvFCHead
from libdet.modeling.roi_heads.cascade_rcnn import CascadeROIHeads, _ScaleGradient
from libdet.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers, fast_rcnn_inference
from libdet.structures import Boxes, BoxMode, Instances
from libdet.utils.events import EventStorage

from ._tiny_models import NUM_CLASSES, single_thread, tiny_cascade_mask_rcnn_fpn  # noqa: F401

WEIGHTS = [(10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0)]
IMAGE_SIZE = (32, 32)
CHANNELS = 4


def _heads(num_classes=2, **kwargs):
    torch.manual_seed(0)
    return CascadeROIHeads(
        num_classes=num_classes,
        batch_size_per_image=512,
        positive_fraction=1.0,
        proposal_append_gt=False,
        box_in_features=["p2"],
        box_pooler=ROIPooler(output_size=4, scales=(1.0,), sampling_ratio=0, pooler_type="ROIAlignV2"),
        box_heads=[
            FastRCNNConvFCHead(ShapeSpec(channels=CHANNELS, height=4, width=4), conv_dims=[], fc_dims=[8])
            for _ in WEIGHTS
        ],
        box_predictors=[
            FastRCNNOutputLayers(
                ShapeSpec(channels=8),
                box2box_transform=Box2BoxTransform(weights=w),
                num_classes=num_classes,
                cls_agnostic_bbox_reg=True,
                test_score_thresh=0.0,
                test_topk_per_image=1000,
            )
            for w in WEIGHTS
        ],
        proposal_matchers=[Matcher([t], [0, 1]) for t in (0.5, 0.6, 0.7)],
        **kwargs,
    )


GT = [0.0, 0.0, 10.0, 10.0]
# IoU with GT: 0.818, 0.65, 0.667, 0.538, 0.75, 0
PROPOSALS = [
    [1.0, 0.0, 11.0, 10.0],
    [0.0, 0.0, 10.0, 6.5],
    [2.0, 0.0, 12.0, 10.0],
    [3.0, 0.0, 13.0, 10.0],
    [0.0, 0.0, 10.0, 7.5],
    [20.0, 20.0, 30.0, 30.0],
]
FG_PER_STAGE = [[0, 1, 2, 3, 4], [0, 1, 2, 4], [0, 4]]


def _proposals(boxes=PROPOSALS):
    p = Instances(IMAGE_SIZE)
    p.proposal_boxes = Boxes(torch.tensor(boxes))
    p.objectness_logits = torch.zeros(len(boxes))
    return p


def _targets():
    t = Instances(IMAGE_SIZE)
    t.gt_boxes = Boxes(torch.tensor([GT]))
    t.gt_classes = torch.tensor([1])
    return t


def _features(requires_grad=False):
    g = torch.Generator().manual_seed(1)
    return {"p2": torch.randn(1, CHANNELS, *IMAGE_SIZE, generator=g).requires_grad_(requires_grad)}


def test_each_stage_labels_boxes_with_its_own_iou_threshold():
    heads = _heads()
    for stage, fg in enumerate(FG_PER_STAGE):
        empty_image = Instances(IMAGE_SIZE, gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0).long())
        p, q = _proposals(), _proposals()
        with EventStorage() as storage:
            labelled = heads._match_and_label_boxes([p, q], stage, [_targets(), empty_image])
        expected = [1 if i in fg else 2 for i in range(len(PROPOSALS))]  # class 1, background 2
        assert labelled[0].gt_classes.tolist() == expected, stage
        assert labelled[0].gt_boxes.tensor[fg].tolist() == [GT] * len(fg)
        assert labelled[1].gt_classes.tolist() == [2] * len(PROPOSALS)  # no gt: all background
        assert labelled[1].gt_boxes.tensor.abs().sum() == 0
        assert storage.latest()[f"stage{stage}/roi_head/num_fg_samples"][0] == len(fg) / 2


def test_stage_losses_use_stage_labels_and_box_weights():
    heads = _heads().train()
    for predictor in heads.box_predictor:  # zero deltas: every stage sees the same boxes
        torch.nn.init.zeros_(predictor.bbox_pred.weight)
        torch.nn.init.zeros_(predictor.bbox_pred.bias)
    _, losses = heads(None, _features(), [_proposals()], [_targets()])
    assert set(losses) == {f"loss_{n}_stage{k}" for n in ("cls", "box_reg") for k in range(3)}
    proposals = torch.tensor(PROPOSALS)
    for stage, (fg, w) in enumerate(zip(FG_PER_STAGE, WEIGHTS)):
        targets = Box2BoxTransform(w).get_deltas(proposals[fg], torch.tensor([GT] * len(fg)))
        expected = targets.abs().sum() / len(PROPOSALS)  # L1 (beta 0) of zero predictions, over all ROIs
        assert losses[f"loss_box_reg_stage{stage}"].item() == pytest.approx(expected.item(), rel=1e-5), stage
    # a stage's targets do depend on its weights: stage 2 would differ under stage 0's weights
    other = Box2BoxTransform(WEIGHTS[0]).get_deltas(proposals[FG_PER_STAGE[2]], torch.tensor([GT] * 2))
    assert abs(other.abs().sum().item() / 6 - losses["loss_box_reg_stage2"].item()) > 1e-3


def test_losses_in_eval_mode_equal_the_training_forward():
    """A validation loss needs no mode switch: ``losses`` labels and scores the later stages as in training."""
    heads = _heads().train()
    torch.manual_seed(0)
    sampled, expected = heads(None, _features(), [_proposals()], [_targets()])
    heads.eval()
    losses = heads.losses(_features(), sampled, [_targets()])
    assert set(losses) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(losses[name], value, rtol=0, atol=0)
    with pytest.raises(ValueError, match="targets"):
        heads.losses(_features(), sampled)


def test_later_stages_train_on_detached_refined_boxes():
    heads = _heads().train()
    seen = []
    original = heads._match_and_label_boxes

    def spy(proposals, stage, targets):
        seen.append([p.proposal_boxes.tensor.clone() for p in proposals])
        return original(proposals, stage, targets)

    heads._match_and_label_boxes = spy
    features = _features()
    sampled, _ = heads(None, features, [_proposals()], [_targets()])
    assert len(seen) == 2  # stages 1 and 2
    pooled = heads.box_pooler([features["p2"]], [sampled[0].proposal_boxes])
    predictions = heads.box_predictor[0](heads.box_head[0](pooled))
    refined = heads.box_predictor[0].predict_boxes(predictions, sampled)[0]
    clipped = Boxes(refined.detach().clone())
    clipped.clip(IMAGE_SIZE)
    assert torch.allclose(seen[0][0], clipped.tensor[clipped.nonempty()])
    assert not seen[0][0].requires_grad
    assert not torch.allclose(seen[0][0], seen[1][0])  # stage 2 refines again


def test_inference_averages_stage_scores_and_uses_last_stage_boxes():
    heads = _heads().eval()
    features = _features()
    proposals = [_proposals()]
    with torch.no_grad():
        detections, _ = heads(None, features, proposals, None)

        # manual run of the three stages
        boxes, stage_probs = proposals[0].proposal_boxes, []
        for k in range(3):
            x = heads.box_pooler([features["p2"]], [boxes])
            pred = heads.box_predictor[k](heads.box_head[k](x))
            props = Instances(IMAGE_SIZE, proposal_boxes=boxes)
            stage_probs.append(heads.box_predictor[k].predict_probs(pred, [props])[0])
            last = heads.box_predictor[k].predict_boxes(pred, [props])[0]
            boxes = Boxes(last.clone())
            boxes.clip(IMAGE_SIZE)
        mean = (stage_probs[0] + stage_probs[1] + stage_probs[2]) / 3
        expected, _ = fast_rcnn_inference([last], [mean], [IMAGE_SIZE], 0.0, 0.5, 1000)

    got, want = detections[0], expected[0]
    assert len(got) == len(want) > 0
    assert torch.allclose(got.scores, want.scores)
    assert torch.equal(got.pred_classes, want.pred_classes)
    assert torch.allclose(got.pred_boxes.tensor, want.pred_boxes.tensor)
    assert not torch.allclose(mean, stage_probs[2], atol=1e-4)  # the average is not just the last stage


def test_scale_gradient():
    x = torch.randn(3, 4, requires_grad=True)
    y = _ScaleGradient.apply(x, 1.0 / 3)
    assert torch.equal(y, x)
    g = torch.randn(3, 4)
    y.backward(g)
    assert torch.allclose(x.grad, g / 3)


def test_gradient_into_pooled_features_is_divided_by_the_number_of_stages():
    heads = _heads().train()
    features = _features(requires_grad=True)
    sampled, losses = heads(None, features, [_proposals()], [_targets()])
    (grad_cascade,) = torch.autograd.grad(losses["loss_cls_stage0"], features["p2"])

    # the same stage-0 computation without the scaling
    x = heads.box_pooler([features["p2"]], [sampled[0].proposal_boxes])
    predictions = heads.box_predictor[0](heads.box_head[0](x))
    (grad_plain,) = torch.autograd.grad(heads.box_predictor[0].losses(predictions, sampled)["loss_cls"], features["p2"])
    assert grad_plain.abs().sum() > 0
    assert torch.allclose(grad_cascade, grad_plain / 3, atol=1e-9)


def test_constructor_errors():
    with pytest.raises(ValueError, match="one box head, box predictor and proposal matcher per stage"):
        CascadeROIHeads(
            num_classes=2,
            batch_size_per_image=8,
            positive_fraction=0.5,
            box_in_features=["p2"],
            box_pooler=None,
            box_heads=[torch.nn.Identity()] * 2,
            box_predictors=[torch.nn.Identity()],
            proposal_matchers=[Matcher([0.5], [0, 1])] * 2,
        )
    with pytest.raises(ValueError, match="proposal_matchers"):
        CascadeROIHeads(
            num_classes=2,
            batch_size_per_image=8,
            positive_fraction=0.5,
            box_in_features=["p2"],
            box_pooler=None,
            box_heads=[torch.nn.Identity()],
            box_predictors=[torch.nn.Identity()],
            proposal_matchers=[Matcher([0.4, 0.5], [0, -1, 1])],
        )
    with pytest.raises(ValueError, match="cls_agnostic_bbox_reg=True"):
        CascadeROIHeads(
            num_classes=2,
            batch_size_per_image=8,
            positive_fraction=0.5,
            box_in_features=["p2"],
            box_pooler=None,
            box_heads=[torch.nn.Identity()],
            box_predictors=[FastRCNNOutputLayers(8, box2box_transform=Box2BoxTransform(WEIGHTS[0]), num_classes=2)],
            proposal_matchers=[Matcher([0.5], [0, 1])],
        )
    with pytest.raises(ValueError, match="proposal_matchers"):
        _heads(proposal_matcher=Matcher([0.5], [0, 1]))


def _dataset_dict(tmp_path, image_id, height, width, objects, crowd_boxes=()):
    from PIL import Image

    rng = np.random.default_rng(image_id)
    image = (rng.random((height, width, 3)) * 60).astype(np.uint8)
    annos = []
    for (x0, y0, x1, y1), c in objects:
        image[y0:y1, x0:x1] = [(230, 40, 40), (40, 230, 40), (40, 40, 230)][c]
        annos.append(
            {
                "bbox": [x0, y0, x1, y1],
                "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": c,
                "iscrowd": 0,
                "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
            }
        )
    for x0, y0, x1, y1 in crowd_boxes:
        annos.append(
            {
                "bbox": [x0, y0, x1, y1],
                "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": 0,
                "iscrowd": 1,
                "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
            }
        )
    path = tmp_path / f"{image_id}.png"
    Image.fromarray(image).save(path)
    return {"file_name": str(path), "image_id": image_id, "height": height, "width": width, "annotations": annos}


@pytest.mark.usefixtures("single_thread")
def test_tiny_cascade_mask_rcnn_trains_and_infers(tmp_path):
    torch.manual_seed(0)
    mapper = DatasetMapper(is_train=True, augmentations=[], image_format="BGR", use_instance_mask=True)
    batch = [
        mapper(_dataset_dict(tmp_path, 1, 64, 96, [((10, 10, 40, 50), 0), ((50, 20, 90, 60), 2)], [(0, 40, 20, 64)])),
        mapper(_dataset_dict(tmp_path, 2, 80, 64, [], [(5, 5, 40, 40)])),  # only a crowd region: no object
    ]
    assert [len(b["instances"]) for b in batch] == [2, 0]

    cfg = tiny_cascade_mask_rcnn_fpn()
    for predictor in cfg.roi_heads.box_predictors:
        predictor.test_score_thresh = 0.0
    model = instantiate(cfg).train()
    with EventStorage() as storage:
        losses = model(batch)
    expected = {"loss_rpn_cls", "loss_rpn_loc", "loss_mask"}
    expected |= {f"loss_{n}_stage{k}" for n in ("cls", "box_reg") for k in range(3)}
    assert set(losses) == expected
    latest = storage.latest()
    for k in range(3):
        assert f"stage{k}/fast_rcnn/cls_accuracy" in latest
    assert "stage2/roi_head/num_fg_samples" in latest
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for k in range(3):
        assert model.roi_heads.box_predictor[k].bbox_pred.weight.grad.abs().sum() > 0, k
    assert model.roi_heads.mask_head.predictor.weight.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        outputs = model([{"image": batch[0]["image"], "height": 128, "width": 192}, {"image": batch[1]["image"]}])
    assert [o["instances"].image_size for o in outputs] == [(128, 192), (80, 64)]
    for out in outputs:
        inst = out["instances"]
        h, w = inst.image_size
        assert len(inst) > 0 and inst.pred_classes.lt(NUM_CLASSES).all()
        boxes = inst.pred_boxes.tensor
        assert (boxes[:, 0::2] <= w).all() and (boxes[:, 1::2] <= h).all() and (boxes >= 0).all()
        assert inst.pred_masks.shape == (len(inst), h, w) and inst.pred_masks.dtype == torch.bool


@pytest.mark.usefixtures("single_thread")
def test_tiny_cascade_without_objects_gives_zero_connected_box_losses(tmp_path):
    torch.manual_seed(0)
    mapper = DatasetMapper(is_train=True, augmentations=[], image_format="BGR", use_instance_mask=True)
    batch = [mapper(_dataset_dict(tmp_path, 3, 64, 64, [], [(0, 0, 30, 30)]))]
    model = instantiate(tiny_cascade_mask_rcnn_fpn()).train()
    losses = model(batch)
    for name in ["loss_rpn_loc", "loss_mask"] + [f"loss_box_reg_stage{k}" for k in range(3)]:
        assert losses[name].item() == 0.0 and losses[name].requires_grad, name
    assert all(losses[f"loss_cls_stage{k}"].item() > 0 for k in range(3))
    sum(losses.values()).backward()

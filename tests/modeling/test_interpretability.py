"""libdet.modeling.interpretability: maps have the documented shapes and ranges for R-CNN and dense detectors,
the saliency is the gradient of the chosen detection's score, errors name the problem, and (slow) on a briefly
trained RetinaNet the saliency of a detection concentrates on the object it detects."""

import numpy as np
import pytest
import torch

from libdet.config import instantiate
from libdet.modeling.interpretability import explain_detections, feature_maps_and_objectness
from libdet.structures import pairwise_iou

from ._tiny_models import (
    synthetic_image,
    tiny_cascade_mask_rcnn_fpn,
    tiny_fcos,
    tiny_keypoint_rcnn_fpn,
    tiny_mask_rcnn_c4,
    tiny_mask_rcnn_fpn,
    tiny_panoptic_fpn,
    tiny_retinanet,
)


def _model(factory):
    torch.manual_seed(0)
    cfg = factory()
    if "roi_heads" in cfg:
        for predictor in cfg.roi_heads.get("box_predictors", None) or [cfg.roi_heads.box_predictor]:
            predictor.test_score_thresh = 0.0
    else:
        cfg.test_score_thresh = 0.0
    return instantiate(cfg).eval()


# 160 x 192: FCOS's GroupNorm needs more than one cell on p7 (stride 128)
IMAGE = synthetic_image(0, 160, 192, [(10, 20, 60, 70), (90, 40, 150, 110)], [0, 1])["image"]


@pytest.mark.parametrize(
    "factory,levels,source",
    [
        (tiny_mask_rcnn_fpn, ["p2", "p3", "p4", "p5", "p6"], "rpn_objectness"),
        (tiny_retinanet, ["p3", "p4", "p5", "p6", "p7"], "class_probability"),
        (tiny_fcos, ["p3", "p4", "p5", "p6", "p7"], "class_probability"),
    ],
)
def test_maps_shapes_and_ranges(factory, levels, source):
    model = _model(factory)
    exps = explain_detections(model, IMAGE, detections=[0, 1])
    assert [e.detection for e in exps] == [0, 1]
    e = exps[0]
    assert e.objectness_source == source and sorted(e.features) == levels and sorted(e.objectness) == levels
    # 160 x 192 is divisible by 32: p3 (stride 8) has 20 x 24 cells
    assert e.features["p3"].shape == (20, 24) and e.objectness["p3"].shape == (20, 24)
    for m in (e.saliency, e.grad_cam):
        assert m.shape == (160, 192) and m.dtype == np.float32
        assert m.min() >= 0 and m.max() == pytest.approx(1.0)
    assert all(0 <= v.min() and v.max() <= 1 for v in e.objectness.values())
    assert sum(float(v.max()) for v in e.grad_cam_per_level.values()) > 0
    assert not exps[0].instances.scores.requires_grad
    # the same maps without gradients
    _, features, objectness, src = feature_maps_and_objectness(model, IMAGE)
    assert src == source and all(np.allclose(features[k], e.features[k], atol=1e-5) for k in levels)


def test_saliency_is_the_gradient_of_the_detection_score():
    model = _model(tiny_retinanet)
    e = explain_detections(model, IMAGE, detections=[1])[0]
    pixels = IMAGE.clone().requires_grad_(True)
    score = model([{"image": pixels}])[0]["instances"].scores[1]
    (grad,) = torch.autograd.grad(score, pixels)
    reference = grad.abs().amax(0)
    np.testing.assert_allclose(e.saliency, (reference / reference.max()).numpy(), atol=1e-5)


def test_mask_target_on_mask_rcnn_and_errors():
    mask_rcnn = _model(tiny_mask_rcnn_fpn)
    e = explain_detections(mask_rcnn, IMAGE.permute(1, 2, 0).numpy(), target="mask")[0]  # (H, W, C) array
    assert e.target == "mask" and e.saliency.max() == pytest.approx(1.0)
    retinanet = _model(tiny_retinanet)
    with pytest.raises(ValueError, match="target='mask' but RetinaNet predicts no masks"):
        explain_detections(retinanet, IMAGE, target="mask")
    with pytest.raises(ValueError, match="target must be one of"):
        explain_detections(retinanet, IMAGE, target="box")
    with pytest.raises(ValueError, match=r"detection 1000 requested, but the model made 100 detections"):
        explain_detections(retinanet, IMAGE, detections=[1000])
    with pytest.raises(RuntimeError, match="eval mode"):
        explain_detections(retinanet.train(), IMAGE)
    with pytest.raises(TypeError, match="Linear is not supported"):
        explain_detections(torch.nn.Linear(2, 2).eval(), IMAGE)


def _two_objects(seed: int):
    """128 px noise with two disjoint flat rectangles of random classes (24-43 px)."""
    rng = np.random.RandomState(seed)
    boxes = []
    while len(boxes) < 2:
        w, h = rng.randint(24, 44, size=2)
        x0, y0 = int(rng.randint(0, 128 - w)), int(rng.randint(0, 128 - h))
        b = (x0, y0, x0 + int(w), y0 + int(h))
        if boxes and not (b[2] < boxes[0][0] or b[0] > boxes[0][2] or b[3] < boxes[0][1] or b[1] > boxes[0][3]):
            continue
        boxes.append(b)
    return synthetic_image(seed, 128, 128, boxes, [int(c) for c in rng.randint(0, 3, size=2)])


@pytest.mark.slow
def test_saliency_concentrates_on_the_detected_object_after_training():
    """A tiny RetinaNet trained for 100 iterations (~10 s) on two-object images; on 5 new images its top
    detection must match an object (IoU >= 0.5), and that detection's gradient saliency per pixel must be
    several times higher inside the object's box than outside it and than inside the other object's box.
    (The dense head's receptive field covers much of the 128 px image, so this is learned, not built in.)"""
    torch.manual_seed(0)
    model = instantiate(tiny_retinanet())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for it in range(100):
        losses = model([_two_objects(it * 4 + k) for k in range(4)])
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    model.eval()
    for seed in range(10000, 10005):
        data = _two_objects(seed)
        e = explain_detections(model, data["image"])[0]
        gt = data["instances"].gt_boxes
        iou = pairwise_iou(e.instances.pred_boxes[[0]], gt)[0]
        j = int(iou.argmax())
        assert iou[j] >= 0.5, f"image {seed}: the top detection matches no object (IoU {iou.tolist()})"
        inside, other = np.zeros((128, 128), bool), np.zeros((128, 128), bool)
        x0, y0, x1, y1 = gt.tensor[j].int().tolist()
        inside[y0:y1, x0:x1] = True
        x0, y0, x1, y1 = gt.tensor[1 - j].int().tolist()
        other[y0:y1, x0:x1] = True
        density = e.saliency[inside].mean()
        assert density > 3 * e.saliency[~inside].mean(), f"image {seed}"
        assert density > 2 * e.saliency[other].mean(), f"image {seed}"
        assert e.grad_cam[inside].mean() > 2 * e.grad_cam[~inside].mean(), f"image {seed}"


def test_padding_is_cropped_from_the_maps():
    """150 x 170 is padded to 160 x 192 (FPN size divisibility 32); maps cover the image, not the padding."""
    model = _model(tiny_mask_rcnn_fpn)
    image = synthetic_image(1, 150, 170, [(10, 20, 60, 70)], [0])["image"]
    e = explain_detections(model, image)[0]
    assert e.saliency.shape == (150, 170) and e.grad_cam.shape == (150, 170)
    assert e.features["p2"].shape == (38, 43) and e.objectness["p3"].shape == (19, 22)
    assert all(v.shape == (150, 170) for v in e.grad_cam_per_level.values())


@pytest.mark.parametrize(
    "factory,levels",
    [
        (tiny_cascade_mask_rcnn_fpn, ["p2", "p3", "p4", "p5", "p6"]),
        (tiny_keypoint_rcnn_fpn, ["p2", "p3", "p4", "p5", "p6"]),
        (tiny_panoptic_fpn, ["p2", "p3", "p4", "p5", "p6"]),
        (tiny_mask_rcnn_c4, ["res4"]),
    ],
)
def test_other_rcnn_models(factory, levels):
    """The same hooks serve every GeneralizedRCNN: cascade, keypoints, panoptic (instance branch), C4."""
    e = explain_detections(_model(factory), IMAGE)[0]
    assert sorted(e.features) == levels and sorted(e.objectness) == levels
    assert e.saliency.max() == pytest.approx(1.0) and e.grad_cam.max() == pytest.approx(1.0)

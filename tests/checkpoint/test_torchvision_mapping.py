"""torchvision ``maskrcnn_resnet50_fpn`` weights loaded into libdet give torchvision's features and detections."""

from pathlib import Path

import pytest
import torch

from libdet.checkpoint.torchvision_conversion import (
    convert_torchvision_maskrcnn_state_dict,
    load_torchvision_maskrcnn,
)
from libdet.config import LazyConfig, instantiate

detection = pytest.importorskip("torchvision.models.detection")
backbone_utils = pytest.importorskip("torchvision.models.detection.backbone_utils")

CONFIG = Path(__file__).resolve().parents[2] / "configs/common/models/mask_rcnn_fpn_torchvision.py"
H, W = 128, 192


@pytest.fixture(scope="module")
def models():
    """A random torchvision Mask R-CNN (FrozenBN backbone, as for pretrained weights) with trained-looking
    statistics, and the libdet model that loaded its weights."""
    torch.manual_seed(0)
    tv = detection.MaskRCNN(
        backbone_utils.resnet_fpn_backbone(backbone_name="resnet50", weights=None),
        num_classes=6,
        min_size=H,  # the transform keeps the H x W test image as it is
        max_size=W,
        box_score_thresh=0.0,
    ).eval()
    with torch.no_grad():
        for m in tv.modules():
            if type(m).__name__ == "FrozenBatchNorm2d":  # identity at construction: give it real statistics
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.normal_(0, 0.1)
                m.weight.uniform_(0.2, 0.5)
                m.bias.normal_(0, 0.1)
        for p in tv.roi_heads.box_predictor.parameters():  # spread the scores so the ranking is stable
            p.normal_(0, 0.05)
    cfg = LazyConfig.load(str(CONFIG))
    cfg.model.roi_heads.num_classes = 5
    cfg.model.roi_heads.box_predictor.test_score_thresh = 0.0
    model = instantiate(cfg.model).eval()
    load_torchvision_maskrcnn(model, tv.state_dict())
    return tv, model


def test_predictor_layout():
    torch.manual_seed(0)
    sd = {
        "roi_heads.box_predictor.cls_score.weight": torch.randn(4, 8),
        "roi_heads.box_predictor.bbox_pred.bias": torch.randn(16),
        "roi_heads.mask_predictor.mask_fcn_logits.bias": torch.randn(4),
        "backbone.body.layer3.0.downsample.1.running_var": torch.rand(8),
        "backbone.body.layer1.0.bn1.num_batches_tracked": torch.tensor(3),
    }
    out = convert_torchvision_maskrcnn_state_dict(sd)
    cls = sd["roi_heads.box_predictor.cls_score.weight"]
    assert torch.equal(out["roi_heads.box_predictor.cls_score.weight"], torch.cat([cls[1:], cls[:1]]))
    assert torch.equal(out["roi_heads.box_predictor.bbox_pred.bias"], sd["roi_heads.box_predictor.bbox_pred.bias"][4:])
    assert torch.equal(
        out["roi_heads.mask_head.predictor.bias"], sd["roi_heads.mask_predictor.mask_fcn_logits.bias"][1:]
    )
    assert "backbone.bottom_up.res4.0.shortcut.norm.running_var" in out
    assert len(out) == 4  # the counter is dropped


def test_bad_key_is_named():
    with pytest.raises(ValueError, match="roi_heads.keypoint_head"):
        convert_torchvision_maskrcnn_state_dict({"roi_heads.keypoint_head.0.weight": torch.zeros(1)})


def test_wrong_num_classes_is_explained(models):
    tv, _ = models
    cfg = LazyConfig.load(str(CONFIG))
    cfg.model.roi_heads.num_classes = 4
    with pytest.raises(ValueError, match="num_classes"):
        load_torchvision_maskrcnn(instantiate(cfg.model), tv.state_dict())


def test_anchors_are_torchvision_anchors(models):
    tv, model = models
    tv_cells = tv.rpn.anchor_generator.cell_anchors
    for ours, theirs in zip(model.proposal_generator.anchor_generator.cell_anchors, tv_cells):
        assert torch.equal(ours, theirs.float())


@torch.no_grad()
def test_same_features_and_detections(models):
    tv, model = models
    torch.manual_seed(1)
    image = torch.rand(3, H, W)  # torchvision's input in [0, 1]; libdet's in [0, 255]
    inputs = [{"image": image * 255, "height": H, "width": W}]

    tv_images, _ = tv.transform([image])
    assert tuple(tv_images.image_sizes[0]) == (H, W)  # no resize: both see the same pixels
    tv_features = tv.backbone(tv_images.tensors)
    features = model.backbone(model.preprocess_image(inputs).tensor)
    for tv_name, name in zip(["0", "1", "2", "3", "pool"], ["p2", "p3", "p4", "p5", "p6"]):
        # Only the input scaling (x / 255 - mean) / std vs (255 x - 255 mean) / (255 std) differs.
        torch.testing.assert_close(features[name], tv_features[tv_name], rtol=0, atol=1e-5)

    expected = tv([image])[0]
    raw = model.inference(inputs, do_postprocess=False)[0]
    result = model(inputs)[0]["instances"]
    assert len(result) == len(expected["boxes"]) == 100
    torch.testing.assert_close(result.pred_boxes.tensor, expected["boxes"], rtol=0, atol=1e-3)
    torch.testing.assert_close(result.scores, expected["scores"], rtol=0, atol=1e-5)
    assert torch.equal(result.pred_classes, expected["labels"] - 1)

    # Mask probabilities on the same boxes before pasting (the paste algorithms differ, see the module doc).
    tv_feats = tv.backbone(tv_images.tensors)
    rois = tv.roi_heads.mask_roi_pool(tv_feats, [expected["boxes"]], tv_images.image_sizes)
    logits = tv.roi_heads.mask_predictor(tv.roi_heads.mask_head(rois))
    tv_probs = logits[torch.arange(len(logits)), expected["labels"]].sigmoid()
    torch.testing.assert_close(raw.pred_masks[:, 0], tv_probs, rtol=0, atol=1e-4)

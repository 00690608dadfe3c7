"""The Keypoint R-CNN and cascade Mask R-CNN configs build detectron2's exact state dicts (keys, shapes,
order) with the model-zoo settings, and their COCO leaf configs use the model-zoo data and schedule."""

from __future__ import annotations

from pathlib import Path

from libdet.config import LazyConfig, instantiate

from ._tiny_models import load_model_config

# detectron2 state_dict of each config: "key<TAB>[shape]" per line, in order.
REFERENCE = Path(__file__).resolve().parent / "d2_keys"
COCO_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "COCO"


def _reference_keys(name):
    rows = []
    for line in (REFERENCE / f"{name}.txt").read_text().splitlines():
        key, shape = line.split("\t")
        rows.append((key, tuple(int(x) for x in shape.strip("[]").split(",") if x.strip())))
    return rows


def _keys(model):
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def test_keypoint_rcnn_fpn_matches_detectron2():
    model = instantiate(load_model_config("keypoint_rcnn_fpn"))
    assert _keys(model) == _reference_keys("keypoint_rcnn_fpn")  # same keys, shapes and order
    roi = model.roi_heads
    assert roi.keypoint_on and not roi.mask_on and roi.num_classes == 1
    assert roi.keypoint_in_features == ["p2", "p3", "p4", "p5"]
    assert roi.keypoint_head.num_keypoints == 17 and roi.keypoint_head.loss_normalizer == "visible"
    assert roi.keypoint_pooler.output_size == (14, 14)
    assert roi.box_predictor.smooth_l1_beta == 0.5
    assert model.proposal_generator.post_nms_topk == {True: 1500, False: 1000}


def test_cascade_rcnn_matches_detectron2():
    model = instantiate(load_model_config("cascade_rcnn"))
    assert _keys(model) == _reference_keys("cascade_rcnn")
    roi = model.roi_heads
    assert type(roi).__name__ == "CascadeROIHeads" and roi.num_cascade_stages == 3 and roi.mask_on
    assert [m.thresholds[1] for m in roi.proposal_matchers] == [0.5, 0.6, 0.7]
    assert roi.proposal_matcher is roi.proposal_matchers[0]
    weights = [p.box2box_transform.weights for p in roi.box_predictor]
    assert weights == [(10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15)]
    assert all(p.bbox_pred.out_features == 4 and p.test_score_thresh == 0.05 for p in roi.box_predictor)


def test_coco_leaf_configs_use_the_model_zoo_settings():
    kp = LazyConfig.load(str(COCO_CONFIGS / "keypoint_rcnn_r50.py"))
    assert kp.model.roi_heads.keypoint_head.num_keypoints == 17
    assert kp.dataloader.train.dataset.names == "keypoints_coco_2017_train"
    assert kp.dataloader.test.dataset.names == "keypoints_coco_2017_val"
    assert kp.dataloader.train.mapper.use_keypoint
    cascade = LazyConfig.load(str(COCO_CONFIGS / "cascade_mask_rcnn_r50.py"))
    assert cascade.model.roi_heads._target_.__name__ == "CascadeROIHeads"
    assert list(cascade.model.proposal_generator.post_nms_topk) == [2000, 1000]  # Misc/cascade_mask_rcnn_R_50_FPN_1x
    assert cascade.dataloader.train.dataset.names == "coco_2017_train"
    for cfg in (kp, cascade):
        assert cfg.train.init_checkpoint == "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
        assert cfg.model.backbone.bottom_up.freeze_at == 2
        assert cfg.optimizer.lr == 0.02 and cfg.dataloader.train.total_batch_size == 16
        assert list(cfg.lr_multiplier.scheduler.milestones) == [60000, 80000, 90000]

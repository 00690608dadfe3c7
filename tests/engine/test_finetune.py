"""Fine-tuning with another class count: shape-compatible weights load, the predictor layers stay fresh, and the
log names every skipped key with both shapes; model-zoo names stand for their published weights."""

import logging
import os

import pytest
import torch

from libdet.checkpoint import DetectionCheckpointer
from libdet.config import LazyConfig, instantiate
from libdet.engine.training import resolve_init_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREDICTOR_KEYS = {
    "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.cls_score.bias",
    "roi_heads.box_predictor.bbox_pred.weight",
    "roi_heads.box_predictor.bbox_pred.bias",
    "roi_heads.mask_head.predictor.weight",
    "roi_heads.mask_head.predictor.bias",
}


def _tiny_mask_rcnn(num_classes):
    cfg = LazyConfig.load(os.path.join(ROOT, "configs/common/models/mask_rcnn_fpn.py"))
    model_cfg = cfg.model
    model_cfg.backbone.bottom_up.stages.depth = 18
    model_cfg.backbone.bottom_up.stages.pop("stride_in_1x1")
    model_cfg.backbone.bottom_up.stages.res2_out_channels = 64
    model_cfg.backbone.out_channels = 16
    model_cfg.roi_heads.box_head.fc_dims = [32]
    model_cfg.roi_heads.box_predictor.input_shape.channels = 32
    model_cfg.roi_heads.mask_head.conv_dims = [8]
    model_cfg.roi_heads.num_classes = num_classes
    torch.manual_seed(num_classes)
    return instantiate(model_cfg)


def test_an_80_class_checkpoint_loads_into_a_3_class_model(tmp_path, caplog):
    coco_model, model = _tiny_mask_rcnn(80), _tiny_mask_rcnn(3)
    path = str(tmp_path / "coco.pth")
    torch.save({"model": coco_model.state_dict()}, path)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}

    with caplog.at_level(logging.WARNING):
        DetectionCheckpointer(model).resume_or_load(resolve_init_checkpoint(path), resume=False, allow_partial=True)

    loaded, ckpt = model.state_dict(), coco_model.state_dict()
    mismatched = {k for k in loaded if loaded[k].shape != ckpt[k].shape}
    assert mismatched == PREDICTOR_KEYS
    for key in PREDICTOR_KEYS:  # re-initialised: the fresh model's values, not the checkpoint's
        assert torch.equal(loaded[key], fresh[key]), key
    for key in loaded.keys() - PREDICTOR_KEYS:
        assert torch.equal(loaded[key], ckpt[key]), key
    for key in PREDICTOR_KEYS:
        records = [r.getMessage() for r in caplog.records if f"'{key}'" in r.getMessage()]
        assert records, f"no log line names the skipped key {key}"
        assert str(tuple(ckpt[key].shape)) in records[0] and str(tuple(loaded[key].shape)) in records[0]


def test_model_zoo_names_resolve_to_published_weights(tmp_path):
    url = resolve_init_checkpoint("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
    assert url.startswith("https://dl.fbaipublicfiles.com/detectron2/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x/")
    assert resolve_init_checkpoint("COCO/mask_rcnn_r50.py").endswith(".pkl")
    local = tmp_path / "weights.py"  # an existing file is a file, whatever its name
    local.write_text("")
    assert resolve_init_checkpoint(str(local)) == str(local)
    assert resolve_init_checkpoint("") == ""
    with pytest.raises(FileNotFoundError, match="COCO/no_such_model.py"):
        resolve_init_checkpoint("COCO/no_such_model.py")


def test_the_finetune_example_config_starts_from_the_model_zoo():
    cfg = LazyConfig.load(os.path.join(ROOT, "configs/finetune/mask_rcnn_r50_coco_to_shapes.py"))
    assert cfg.model.roi_heads.num_classes == 3 and cfg.dataloader.train.dataset.names == "shapes_train"
    assert resolve_init_checkpoint(cfg.train.init_checkpoint).endswith(".pkl")

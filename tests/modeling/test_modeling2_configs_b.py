"""The FCOS, Panoptic FPN and semantic FPN configs build detectron2's exact state dicts, and the COCO leaf
configs carry detectron2's 1x model-zoo settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from libdet.config import LazyConfig, instantiate
from libdet.modeling.meta_arch.fcos import FCOS
from libdet.modeling.meta_arch.panoptic_fpn import PanopticFPN

from ._tiny_models import load_model_config

REFERENCE = Path(__file__).resolve().parent / "d2_keys"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _reference_keys(name):
    """detectron2 state_dict of a config: ``key<TAB>[shape]`` per line, in order."""
    rows = []
    for line in (REFERENCE / f"{name}.txt").read_text().splitlines():
        key, shape = line.split("\t")
        rows.append((key, tuple(int(x) for x in shape.strip("[]").split(",") if x.strip())))
    return rows


def _keys(model):
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


@pytest.mark.parametrize("name", ["fcos", "panoptic_fpn"])
def test_state_dict_matches_detectron2(name):
    model = instantiate(load_model_config(name))
    assert _keys(model) == _reference_keys(name)  # same keys, shapes and order


def test_semantic_fpn_is_the_backbone_and_semantic_head_of_panoptic_fpn():
    model = instantiate(load_model_config("semantic_fpn"))
    expected = [r for r in _reference_keys("panoptic_fpn") if r[0].startswith(("backbone.", "sem_seg_head."))]
    assert _keys(model) == expected
    assert model.sem_seg_head.loss_weight == 1.0 and model.sem_seg_head.ignore_value == 255


def test_fcos_config_values():
    cfg = load_model_config("fcos")
    assert cfg.backbone.top_block.in_feature == "p5"
    model = instantiate(cfg)
    assert isinstance(model, FCOS)
    assert (model.test_score_thresh, model.test_nms_thresh, model.center_sampling_radius) == (0.2, 0.6, 1.5)
    assert model.anchor_generator.strides == [8, 16, 32, 64, 128]
    assert model.box2box_transform.normalize_by_size


def test_coco_leaf_configs_are_the_1x_schedules(tmp_path):
    fcos = LazyConfig.load(str(CONFIGS / "COCO" / "fcos_r50.py"))
    assert fcos.optimizer.lr == 0.01 and fcos.train.max_iter == 90000
    assert fcos.dataloader.train.mapper.use_instance_mask is False
    assert fcos.train.init_checkpoint == "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    assert fcos.model.backbone.bottom_up.freeze_at == 2

    panoptic = LazyConfig.load(str(CONFIGS / "COCO" / "panoptic_fpn_r50.py"))
    assert panoptic.optimizer.lr == 0.02 and panoptic.train.max_iter == 90000
    assert panoptic.dataloader.train.dataset.names == "coco_2017_train_panoptic_separated"
    assert panoptic.model.sem_seg_head.loss_weight == 0.5
    assert panoptic.model._target_ is PanopticFPN
    for cfg in (fcos, panoptic):
        assert set(cfg.keys()) >= {"model", "dataloader", "optimizer", "lr_multiplier", "train"}
        path = tmp_path / "saved.yaml"
        LazyConfig.save(cfg, str(path))
        assert LazyConfig.load(str(path)).model.backbone.out_channels == 256

"""A small DensePose R-CNN trains on a few synthetic images through the core ``tools/lazyconfig_train_net.py``
and is evaluated (GPS / GPSm / IoU AP) by :class:`DensePoseCOCOEvaluator`."""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os

import pytest
import torch

from libdet.data import DatasetCatalog, MetadataCatalog
from libdet.engine import default_argument_parser

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(os.path.dirname(PROJECT))
CONFIG = os.path.join(PROJECT, "configs", "densepose_rcnn_R_50_FPN_synthetic_cpu.py")
NAME = "_densepose_test_overfit"


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "_densepose_tool_lazyconfig_train_net", os.path.join(ROOT, "tools", "lazyconfig_train_net.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def overfit_images(tmp_path):
    from densepose.data import generate_synthetic_densepose, load_densepose_coco_json

    paths = generate_synthetic_densepose(str(tmp_path / "data"), num_images=2, seed=0)
    DatasetCatalog.register(NAME, functools.partial(load_densepose_coco_json, paths["json_file"], paths["image_root"]))
    MetadataCatalog.get(NAME).set(thing_classes=["person"], json_file=paths["json_file"])
    yield paths
    DatasetCatalog.remove(NAME)
    MetadataCatalog.remove(NAME)


@pytest.mark.slow
def test_small_densepose_rcnn_trains_through_the_trainer(overfit_images, tmp_path):
    torch.set_num_threads(1)
    resize = "libdet.data.transforms.ResizeShortestEdge"
    opts = {
        "train.output_dir": str(tmp_path / "out"),
        "train.max_iter": 60,
        "train.device": "cpu",
        "train.seed": 0,
        "train.log_period": 10,
        "train.checkpointer.period": 1000,
        "dataloader.train.dataset.names": NAME,
        "dataloader.test.dataset.names": NAME,
        "dataloader.train.num_workers": 0,
        "dataloader.test.num_workers": 0,
        "dataloader.train.total_batch_size": 2,
        "dataloader.train.mapper.uv_symmetries_path": overfit_images["uv_symmetries"],
        "dataloader.train.mapper.augmentations": f"[{{_target_:{resize},short_edge_length:96,max_size:96}}]",
        "dataloader.test.mapper.augmentations": f"[{{_target_:{resize},short_edge_length:96,max_size:96}}]",
        "model.backbone.bottom_up.stem.out_channels": 16,
        "model.backbone.bottom_up.stages.depth": 18,
        "model.backbone.bottom_up.stages.stem_out_channels": 16,
        "model.backbone.bottom_up.stages.res2_out_channels": 16,
        "~model.backbone.bottom_up.stages.stride_in_1x1": None,
        "~model.backbone.bottom_up.stages.width_per_group": None,
        "model.backbone.out_channels": 32,
        "model.roi_heads.decoder.conv_dims": 32,
        "model.roi_heads.decoder.num_classes": 32,
        "model.roi_heads.densepose_head.num_stacked_convs": 2,
        "model.roi_heads.densepose_head.conv_head_dim": 32,
        "model.roi_heads.box_predictor.test_topk_per_image": 5,
    }
    argv = ["--config-file", CONFIG] + [k if v is None else f"{k}={v}" for k, v in opts.items()]
    args = default_argument_parser().parse_args(argv)
    _load_tool().main(args)
    with open(tmp_path / "out" / "metrics.json") as f:
        rows = [json.loads(line) for line in f if '"loss_densepose_I"' in line]
    first, last = rows[0], rows[-1]
    for name in ("loss_densepose_I", "loss_densepose_S", "loss_densepose_U"):
        assert last[name] < 0.7 * first[name], (name, first[name], last[name])
    with open(tmp_path / "out" / "eval_results.json") as f:
        results = json.load(f)
    assert set(results) >= {"densepose_gps", "densepose_gpsm", "densepose_segm"}
    for task in ("densepose_gps", "densepose_gpsm", "densepose_segm"):
        assert all(math.isfinite(results[task][m]) for m in ("AP", "AP50", "AR")), results

"""A small TensorMask learns a few synthetic images through the core ``tools/lazyconfig_train_net.py``."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

from libdet.data import DatasetCatalog, MetadataCatalog
from libdet.data.datasets import register_coco_instances
from libdet.data.datasets.shapes import SHAPES_CLASSES, generate_shapes_dataset
from libdet.engine import default_argument_parser

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(os.path.dirname(PROJECT))
CONFIG = os.path.join(PROJECT, "configs", "tensormask_R_18_shapes_cpu.py")
TRAIN_NAME = "_tensormask_test_overfit"
# Measured: about 1 minute on one core; box AP50 100 and mask AP50 100 on the two training images.
ITERATIONS = 200
BOX_AP50 = 90
MASK_AP50 = 80


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "_tensormask_tool_lazyconfig_train_net", os.path.join(ROOT, "tools", "lazyconfig_train_net.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def overfit_images(tmp_path):
    paths = generate_shapes_dataset(
        str(tmp_path), "train", num_images=2, seed=0, image_sizes=((96, 96),), max_objects=2
    )
    register_coco_instances(
        TRAIN_NAME, {"thing_classes": list(SHAPES_CLASSES)}, paths["json_file"], paths["image_root"]
    )
    yield
    DatasetCatalog.remove(TRAIN_NAME)
    MetadataCatalog.remove(TRAIN_NAME)


@pytest.mark.slow
def test_small_tensormask_learns_through_the_trainer(overfit_images, tmp_path):
    torch.set_num_threads(1)
    resize = "libdet.data.transforms.ResizeShortestEdge"
    opts = {
        "train.output_dir": str(tmp_path / "out"),
        "train.max_iter": ITERATIONS,
        "train.device": "cpu",
        "train.seed": 0,
        "train.log_period": 20,
        "train.checkpointer.period": 1000,
        "dataloader.train.dataset.names": TRAIN_NAME,
        "dataloader.test.dataset.names": TRAIN_NAME,  # evaluate on the training images
        "dataloader.train.num_workers": 0,
        "dataloader.test.num_workers": 0,
        "dataloader.train.total_batch_size": 2,
        "dataloader.train.mapper.augmentations": f"[{{_target_:{resize},short_edge_length:96,max_size:96}}]",
        "dataloader.test.mapper.augmentations": f"[{{_target_:{resize},short_edge_length:96,max_size:96}}]",
        "model.backbone.out_channels": 32,
        "model.head.num_convs": 1,
        "model.head.cls_channels": 32,
        "model.head.bbox_channels": 16,
        "model.head.mask_channels": 16,
        "optimizer.lr": 2e-3,
    }
    args = default_argument_parser().parse_args(["--config-file", CONFIG] + [f"{k}={v}" for k, v in opts.items()])
    _load_tool().main(args)
    with open(tmp_path / "out" / "eval_results.json") as f:
        results = json.load(f)
    assert results["bbox"]["AP50"] > BOX_AP50, results
    assert results["segm"]["AP50"] > MASK_AP50, results
    with open(tmp_path / "out" / "metrics.json") as f:
        losses = [json.loads(line)["total_loss"] for line in f if "total_loss" in line]
    assert losses[-1] < 0.5 * losses[0], losses

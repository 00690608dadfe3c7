"""Panoptic DETR end to end: a synthetic COCO-panoptic dataset, the panoptic mapper, training and evaluation
(COCOPanopticEvaluator) through the core ``tools/lazyconfig_train_net.py``."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest
import torch
from detr.panoptic_mapper import PanopticDETRDatasetMapper
from PIL import Image

from libdet.data import DatasetCatalog, MetadataCatalog
from libdet.data.datasets import register_coco_panoptic
from libdet.engine import default_argument_parser

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(os.path.dirname(PROJECT))
CONFIG = os.path.join(PROJECT, "configs", "detr_r50_panoptic.py")
NAME = "_detr_test_panoptic"
CATEGORIES = [
    {"id": 1, "name": "box", "isthing": 1, "color": [220, 20, 60]},
    {"id": 2, "name": "disc", "isthing": 1, "color": [0, 0, 142]},
    {"id": 5, "name": "sky", "isthing": 0, "color": [70, 130, 180]},
]


def _id_to_rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def _make_dataset(root: str, num_images: int = 2) -> None:
    """Images of 64 x 80 px with a box (thing), a disc (thing) and sky (stuff), as COCO panoptic files."""
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "panoptic"))
    images, annotations = [], []
    yy, xx = np.mgrid[:64, :80]
    for i in range(num_images):
        ids = np.full((64, 80), 3, dtype=np.int64)  # segment 3: sky
        x0, y0 = rng.integers(4, 30, size=2)
        ids[y0 : y0 + 20, x0 : x0 + 24] = 1  # segment 1: box
        cx, cy = rng.integers(50, 70), rng.integers(15, 50)
        ids[(xx - cx) ** 2 + (yy - cy) ** 2 < 100] = 2  # segment 2: disc
        colors = {1: (200, 40, 40), 2: (40, 40, 200), 3: (120, 180, 230)}
        image = np.zeros((64, 80, 3), dtype=np.uint8)
        for sid, c in colors.items():
            image[ids == sid] = c
        Image.fromarray(image).save(os.path.join(root, "images", f"{i}.jpg"), quality=95)
        Image.fromarray(_id_to_rgb(ids)).save(os.path.join(root, "panoptic", f"{i}.png"))
        segments = []
        for sid, cat in ((1, 1), (2, 2), (3, 5)):
            ys, xs = np.nonzero(ids == sid)
            bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            segments.append({"id": sid, "category_id": cat, "iscrowd": 0, "bbox": bbox, "area": int(len(xs))})
        images.append({"id": i, "file_name": f"{i}.jpg", "height": 64, "width": 80})
        annotations.append({"image_id": i, "file_name": f"{i}.png", "segments_info": segments})
    with open(os.path.join(root, "panoptic.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": CATEGORIES}, f)


@pytest.fixture
def panoptic_dataset(tmp_path):
    root = str(tmp_path / "pan")
    _make_dataset(root)
    register_coco_panoptic(
        NAME, {}, os.path.join(root, "images"), os.path.join(root, "panoptic"), os.path.join(root, "panoptic.json")
    )
    yield root
    DatasetCatalog.remove(NAME)
    MetadataCatalog.remove(NAME)


def test_panoptic_mapper_targets(panoptic_dataset):
    import libdet.data.transforms as T

    (d, *_) = DatasetCatalog.get(NAME)
    mapper = PanopticDETRDatasetMapper(is_train=True, augmentations=[T.Resize((32, 40))], image_format="RGB")
    out = mapper(d)
    inst = out["instances"]
    assert out["image"].shape == (3, 32, 40)
    assert inst.gt_classes.tolist() == [0, 1, 2]  # contiguous ids of the panoptic categories 1, 2, 5
    assert inst.gt_masks.tensor.shape == (3, 32, 40)
    assert inst.gt_masks.tensor.sum(0).eq(1).all()  # the segments tile the image
    box = inst.gt_boxes.tensor[0]
    assert 8 <= float(box[2] - box[0]) <= 14 and 8 <= float(box[3] - box[1]) <= 12  # the 24 x 20 box, halved


@pytest.mark.slow
def test_panoptic_detr_trains_and_evaluates(panoptic_dataset, tmp_path):
    torch.set_num_threads(1)
    resize = "libdet.data.transforms.ResizeShortestEdge"
    opts = {
        "train.output_dir": str(tmp_path / "out"),
        "train.max_iter": 20,
        "train.device": "cpu",
        "train.seed": 0,
        "train.log_period": 10,
        "train.checkpointer.period": 1000,
        "train.eval_period": 0,
        "dataloader.train.dataset.names": NAME,
        "dataloader.test.dataset.names": NAME,
        "dataloader.train.num_workers": 0,
        "dataloader.test.num_workers": 0,
        "dataloader.train.total_batch_size": 2,
        "dataloader.train.mapper.augmentations": f"[{{_target_:{resize},short_edge_length:64,max_size:80}}]",
        "dataloader.test.mapper.augmentations": f"[{{_target_:{resize},short_edge_length:64,max_size:80}}]",
        "+model.detr.backbone.stages.res2_out_channels": 32,
        "+model.detr.backbone.stages.stem_out_channels": 16,
        "+model.detr.backbone.stages.width_per_group": 8,
        "model.detr.backbone.stem.out_channels": 16,
        "model.detr.transformer.d_model": 128,
        "model.detr.transformer.dim_feedforward": 64,
        "model.detr.transformer.num_encoder_layers": 1,
        "model.detr.transformer.num_decoder_layers": 1,
        "model.detr.position_embedding.num_pos_feats": 64,
        "model.detr.num_queries": 5,
        "model.detr.num_classes": 3,
        "model.bbox_attention.query_dim": 128,
        "model.bbox_attention.hidden_dim": 128,
        "model.mask_head.dim": 136,
        "model.mask_head.fpn_dims": "[128,64,32]",
        "model.mask_head.context_dim": 128,
        "model.is_thing": "[true,true,false]",
        "model.freeze_detr": False,  # no trained detector here: train everything
        "model.panoptic_threshold": 0.0,
        "optimizer.lr": 1e-3,
    }
    args = default_argument_parser().parse_args(["--config-file", CONFIG] + [f"{k}={v}" for k, v in opts.items()])
    spec = importlib.util.spec_from_file_location(
        "_detr_pan_tool", os.path.join(ROOT, "tools", "lazyconfig_train_net.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(args)
    with open(tmp_path / "out" / "eval_results.json") as f:
        results = json.load(f)
    assert {"PQ", "SQ", "RQ", "PQ_th", "PQ_st"} <= set(results["panoptic_seg"])
    with open(tmp_path / "out" / "metrics.json") as f:
        rows = [json.loads(line) for line in f if '"loss_dice"' in line]
    assert rows and all(np.isfinite(r["total_loss"]) for r in rows)

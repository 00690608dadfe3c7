"""The ViTDet / MViTv2 / Swin detector configs (``configs/{COCO,LVIS}``) train on CPU once shrunk by config
overrides: 2 iterations with their own optimizer (layer-wise lr decay included) and lr schedule, on tiny
images that went through their large-scale-jitter data pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from libdet.config import LazyConfig, instantiate
from libdet.data.transforms import FixedSizeCrop, ResizeScale

from ._tiny_models import NUM_CLASSES, single_thread, synthetic_image  # noqa: F401 (single_thread: fixture)

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[2]
IMAGE_SIZE = 64  # the LSJ crop and the square padding, instead of 1024

CONFIGS = [
    "COCO/mask_rcnn_vitdet_b_100ep.py",
    "COCO/mask_rcnn_vitdet_l_100ep.py",
    "COCO/mask_rcnn_vitdet_h_75ep.py",
    "COCO/cascade_mask_rcnn_vitdet_b_100ep.py",
    "COCO/cascade_mask_rcnn_vitdet_l_100ep.py",
    "COCO/cascade_mask_rcnn_vitdet_h_75ep.py",
    "COCO/cascade_mask_rcnn_mvitv2_b_in21k_100ep.py",
    "COCO/cascade_mask_rcnn_mvitv2_l_in21k_50ep.py",
    "COCO/cascade_mask_rcnn_mvitv2_h_in21k_36ep.py",
    "COCO/cascade_mask_rcnn_swin_b_in21k_50ep.py",
    "COCO/cascade_mask_rcnn_swin_l_in21k_50ep.py",
    "LVIS/mask_rcnn_vitdet_b_100ep.py",
    "LVIS/cascade_mask_rcnn_vitdet_b_100ep.py",
    "LVIS/cascade_mask_rcnn_mvitv2_b_in21k_100ep.py",
    "LVIS/cascade_mask_rcnn_swin_b_in21k_50ep.py",
]


def _shrink_backbone(backbone) -> None:
    target = backbone.get("net", backbone.get("bottom_up"))._target_.__name__
    if target == "ViT":
        backbone.net.update(img_size=IMAGE_SIZE, embed_dim=32, depth=2, num_heads=2, window_size=2)
        backbone.net.window_block_indexes = [0]  # block 1 attends globally
    elif target == "MViT":
        backbone.bottom_up.update(img_size=IMAGE_SIZE, embed_dim=8, depth=4, num_heads=1, adaptive_window_size=4)
        backbone.bottom_up.last_block_indexes = (0, 1, 2, 3)
        backbone.bottom_up.use_act_checkpoint = False
    elif target == "SwinTransformer":
        backbone.bottom_up.update(embed_dim=8, window_size=2)
        backbone.bottom_up.depths = [2, 2, 2, 2]
        backbone.bottom_up.num_heads = [1, 1, 2, 2]
    else:
        raise AssertionError(f"unexpected backbone {target}")
    backbone.out_channels = 16
    backbone.square_pad = IMAGE_SIZE


def _shrink_heads(roi_heads) -> None:
    roi_heads.num_classes = NUM_CLASSES
    roi_heads.batch_size_per_image = 32
    heads = roi_heads.box_heads if "box_heads" in roi_heads else [roi_heads.box_head]
    predictors = roi_heads.box_predictors if "box_predictors" in roi_heads else [roi_heads.box_predictor]
    for head, predictor in zip(heads, predictors, strict=True):
        head.update(conv_dims=[16], fc_dims=[32])
        head.input_shape.channels = 16
        predictor.input_shape.channels = 32
        if "get_fed_loss_cls_weights" in predictor:  # LVIS: class weights of a 3-class toy dataset
            predictor.update(get_fed_loss_cls_weights=_uniform_class_weights, fed_loss_num_classes=2)
    if "get_fed_loss_cls_weights" in predictors[0]:
        predictors[0].use_fed_loss = True  # the switch of the LVIS configs (cascade stages follow the first)
    roi_heads.mask_head.conv_dims = [16]
    roi_heads.mask_head.input_shape.channels = 16


def _uniform_class_weights() -> torch.Tensor:
    return torch.ones(NUM_CLASSES)


def _load(config: str):
    cfg = LazyConfig.load(str(REPO / "configs" / config))
    _shrink_backbone(cfg.model.backbone)
    _shrink_heads(cfg.model.roi_heads)
    cfg.model.proposal_generator.head.in_channels = 16
    cfg.model.proposal_generator.pre_nms_topk = (200, 100)
    cfg.model.proposal_generator.post_nms_topk = (50, 50)
    return cfg


def _lsj_batch(cfg, tmp_path) -> list[dict]:
    """Two synthetic images through the config's training mapper, with the LSJ crop shrunk to IMAGE_SIZE."""
    augs = cfg.dataloader.train.mapper.augmentations
    assert [a._target_ for a in augs[1:]] == [ResizeScale, FixedSizeCrop]
    augs[1].update(target_height=IMAGE_SIZE, target_width=IMAGE_SIZE)
    augs[2].crop_size = (IMAGE_SIZE, IMAGE_SIZE)
    mapper = instantiate(cfg.dataloader.train.mapper)
    batch = []
    for seed, (h, w) in enumerate([(56, 72), (80, 64)]):
        sample = synthetic_image(seed, h, w, [[8, 8, 40, 40], [30, 20, 60, 50]], [0, 2])
        path = tmp_path / f"{seed}.png"
        Image.fromarray(sample["image"].permute(1, 2, 0).byte().numpy()).save(path)
        boxes = sample["instances"].gt_boxes.tensor.tolist()
        annotations = [
            {"bbox": box, "bbox_mode": 0, "category_id": c, "segmentation": [[box[0], box[1], box[2], box[1], box[2],
             box[3], box[0], box[3]]]} for box, c in zip(boxes, [0, 2], strict=True)
        ]  # fmt: skip
        batch.append(mapper({"file_name": str(path), "height": h, "width": w, "image_id": seed,
                             "annotations": annotations}))  # fmt: skip
    return batch


@pytest.mark.parametrize("config", CONFIGS)
def test_config_trains_two_iterations_on_cpu(config, tmp_path):
    torch.manual_seed(0)
    np.random.seed(0)
    cfg = _load(config)
    model = instantiate(cfg.model)
    model.train()
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    scheduler = instantiate(cfg.lr_multiplier)
    batch = _lsj_batch(cfg, tmp_path)
    assert all(d["image"].shape[1:] == (IMAGE_SIZE, IMAGE_SIZE) or max(d["image"].shape[1:]) <= IMAGE_SIZE
               for d in batch)  # fmt: skip
    for it in range(2):
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * scheduler(it / cfg.train.max_iter)
        losses = model(batch)
        total = sum(losses.values())
        assert torch.isfinite(total), (config, it, losses)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert {"loss_rpn_cls", "loss_mask"} <= set(losses)
    if config.startswith("LVIS"):
        predictors = model.roi_heads.box_predictor  # a ModuleList of the stages in Cascade R-CNN
        predictors = list(predictors) if isinstance(predictors, torch.nn.ModuleList) else [predictors]
        assert all(p.use_fed_loss for p in predictors)
    if "vitdet" in config:  # layer-wise lr decay: the patch embedding learns slowest
        lrs = {g["initial_lr"] for g in optimizer.param_groups}
        assert len(lrs) > 2
    model.eval()
    with torch.no_grad():
        out = model([{"image": batch[0]["image"]}])
    assert out[0]["instances"].image_size == tuple(batch[0]["image"].shape[1:])

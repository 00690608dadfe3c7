"""Shrink the model configs of ``configs/common/models`` for CPU tests: a narrow 4-block ResNet, narrow
FPN and heads, few classes. Only config edits, so the tests exercise the configs users get."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from libdet.config import LazyCall as L
from libdet.config import LazyConfig
from libdet.modeling.backbone import BasicBlock
from libdet.structures import BitMasks, Boxes, Instances, PolygonMasks


@pytest.fixture
def single_thread():
    """Run a test on one intra-op thread: these models are tiny, and on a shared, loaded CPU the
    synchronisation of several threads costs far more than it saves (10x slower observed)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "common" / "models"
NUM_CLASSES = 3


def load_model_config(name: str):
    """The ``model`` node of ``configs/common/models/<name>.py``."""
    return LazyConfig.load(str(CONFIG_DIR / f"{name}.py")).model


# Channels of res2..res5 of the narrow ResNet used in tests (one BasicBlock per stage, 16-channel stem).
WIDTHS = (16, 32, 64, 128)


def _shallow_resnet(bottom_up) -> None:
    """Replace ResNet-50 by a narrow 4-stage ResNet of BasicBlocks: strides 4, 8, 16, 32 as the original."""
    bottom_up.stem.out_channels = WIDTHS[0]
    stages, in_channels = [], WIDTHS[0]
    for i, width in enumerate(WIDTHS):
        stride = 1 if i == 0 else 2
        stages.append([L(BasicBlock)(in_channels=in_channels, out_channels=width, stride=stride, norm="FrozenBN")])
        in_channels = width
    bottom_up.stages = stages


def _unit_inputs(cfg) -> None:
    """Random weights with FrozenBN do not normalise activations: scale the inputs to about unit range
    (the pixel std of torchvision-style models) so that training from scratch is stable."""
    cfg.pixel_std = [57.375, 57.120, 58.395]


def tiny_mask_rcnn_fpn(mask: bool = True):
    cfg = load_model_config("mask_rcnn_fpn")
    _unit_inputs(cfg)
    _shallow_resnet(cfg.backbone.bottom_up)
    cfg.backbone.out_channels = 16
    rpn = cfg.proposal_generator
    rpn.update(batch_size_per_image=64, pre_nms_topk=(300, 200), post_nms_topk=(100, 50))
    roi = cfg.roi_heads
    roi.update(num_classes=NUM_CLASSES, batch_size_per_image=64)
    roi.box_head.fc_dims = [32, 32]
    roi.box_predictor.input_shape.channels = 32
    roi.mask_head.conv_dims = [16, 16]
    if not mask:
        roi.update(mask_in_features=None, mask_pooler=None, mask_head=None)
    return cfg


def tiny_mask_rcnn_c4():
    cfg = load_model_config("mask_rcnn_c4")
    _unit_inputs(cfg)
    _shallow_resnet(cfg.backbone)
    rpn = cfg.proposal_generator
    rpn.head.in_channels = WIDTHS[2]  # res4
    rpn.update(batch_size_per_image=64, pre_nms_topk=(300, 200), post_nms_topk=(100, 50))
    roi = cfg.roi_heads
    roi.update(num_classes=NUM_CLASSES, batch_size_per_image=64)
    roi.pooler.output_size = 8
    roi.res5 = [
        L(BasicBlock)(in_channels=WIDTHS[2], out_channels=32, stride=2, norm="FrozenBN"),
    ]
    roi.mask_head.conv_dims = [16]
    return cfg


def tiny_retinanet():
    cfg = load_model_config("retinanet")
    _unit_inputs(cfg)
    _shallow_resnet(cfg.backbone.bottom_up)
    cfg.backbone.out_channels = 16
    cfg.backbone.top_block.in_channels = WIDTHS[3]  # res5
    cfg.head.conv_dims = [16, 16]
    cfg.num_classes = NUM_CLASSES
    return cfg


def synthetic_image(seed: int, height: int, width: int, boxes, classes, polygons: bool = False):
    """A noisy BGR image with a flat coloured rectangle per box (colour = class), and its ground truth."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, height, width, generator=g) * 60
    colours = torch.tensor([[250.0, 20, 20], [20, 250, 20], [20, 20, 250], [250, 250, 20]])
    masks = torch.zeros(len(boxes), height, width, dtype=torch.bool)
    for i, ((x0, y0, x1, y1), c) in enumerate(zip(boxes, classes)):
        image[:, y0:y1, x0:x1] = colours[c][:, None, None]
        masks[i, y0:y1, x0:x1] = True
    inst = Instances((height, width))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    if polygons:
        inst.gt_masks = PolygonMasks(
            [[np.array([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float64)] for x0, y0, x1, y1 in boxes]
        )
    else:
        inst.gt_masks = BitMasks(masks)
    return {"image": image, "instances": inst, "height": height, "width": width}


def tiny_fcos():
    """``fcos`` shrunk; 32 channels because its GroupNorm has 32 groups."""
    cfg = load_model_config("fcos")
    _unit_inputs(cfg)
    _shallow_resnet(cfg.backbone.bottom_up)
    cfg.backbone.out_channels = 32
    cfg.head.conv_dims = [32, 32]
    cfg.num_classes = NUM_CLASSES
    return cfg


# Semantic classes of the tiny semantic / panoptic models: 0 = "thing", 1..3 = stuff.
NUM_SEM_CLASSES = 4


def _tiny_sem_seg_head(head) -> None:
    head.conv_dims = 32  # GroupNorm(32 groups)
    head.num_classes = NUM_SEM_CLASSES


def tiny_semantic_fpn():
    cfg = load_model_config("semantic_fpn")
    _unit_inputs(cfg)
    _shallow_resnet(cfg.backbone.bottom_up)
    cfg.backbone.out_channels = 16
    _tiny_sem_seg_head(cfg.sem_seg_head)
    return cfg


def tiny_panoptic_fpn():
    """``panoptic_fpn`` shrunk as :func:`tiny_mask_rcnn_fpn` shrinks ``mask_rcnn_fpn``."""
    cfg = load_model_config("panoptic_fpn")
    _unit_inputs(cfg)
    _shallow_resnet(cfg.backbone.bottom_up)
    cfg.backbone.out_channels = 16
    cfg.proposal_generator.update(batch_size_per_image=64, pre_nms_topk=(300, 200), post_nms_topk=(100, 50))
    roi = cfg.roi_heads
    roi.update(num_classes=NUM_CLASSES, batch_size_per_image=64)
    roi.box_head.fc_dims = [32, 32]
    roi.box_predictor.input_shape.channels = 32
    roi.mask_head.conv_dims = [16, 16]
    _tiny_sem_seg_head(cfg.sem_seg_head)
    return cfg


# Keypoints per person of the tiny keypoint R-CNN.
NUM_TINY_KEYPOINTS = 4


def tiny_keypoint_rcnn_fpn():
    """``keypoint_rcnn_fpn`` shrunk: narrow backbone and heads, 4 keypoints, 7x7 keypoint pooling."""
    cfg = load_model_config("keypoint_rcnn_fpn")
    _unit_inputs(cfg)
    _shallow_resnet(cfg.backbone.bottom_up)
    cfg.backbone.out_channels = 16
    cfg.proposal_generator.update(batch_size_per_image=64, pre_nms_topk=(300, 200), post_nms_topk=(100, 50))
    roi = cfg.roi_heads
    roi.batch_size_per_image = 64
    roi.box_head.fc_dims = [32, 32]
    roi.box_predictor.input_shape.channels = 32
    roi.keypoint_pooler.output_size = 7
    roi.keypoint_head.update(num_keypoints=NUM_TINY_KEYPOINTS, conv_dims=[16, 16])
    return cfg


def tiny_cascade_mask_rcnn_fpn():
    """``cascade_rcnn`` (cascade Mask R-CNN) shrunk as :func:`tiny_mask_rcnn_fpn`."""
    cfg = load_model_config("cascade_rcnn")
    _unit_inputs(cfg)
    _shallow_resnet(cfg.backbone.bottom_up)
    cfg.backbone.out_channels = 16
    cfg.proposal_generator.update(batch_size_per_image=64, pre_nms_topk=(300, 200), post_nms_topk=(100, 50))
    roi = cfg.roi_heads
    roi.update(num_classes=NUM_CLASSES, batch_size_per_image=64)
    for head, predictor in zip(roi.box_heads, roi.box_predictors):
        head.fc_dims = [32, 32]
        predictor.input_shape.channels = 32
    roi.mask_head.conv_dims = [16, 16]
    return cfg


def mapped_example_with_crowd(directory: Path, use_instance_mask: bool = True, sem_seg: bool = True):
    """A 64x96 image written to ``directory`` with one object (class 1, box (10, 10, 40, 50)) and one
    crowd region (box (50, 20, 90, 60)), passed through the training ``DatasetMapper``: the crowd
    annotation is dropped there. With ``sem_seg``: a semantic map (0 = thing, stuff 1 above row 32 and
    2 below, 255 on the last column) is added as ``"sem_seg"``."""
    from PIL import Image

    from libdet.data import DatasetMapper
    from libdet.structures import BoxMode

    height, width = 64, 96
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
    image[10:50, 10:40] = (20, 250, 20)
    image[20:60, 50:90] = (20, 20, 250)
    Image.fromarray(image).save(directory / "image.png")

    def ann(x0, y0, x1, y1, crowd):
        polygon = [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]
        return {
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": 1,
            "iscrowd": crowd,
            "segmentation": [polygon],
        }

    record = {
        "file_name": str(directory / "image.png"),
        "height": height,
        "width": width,
        "image_id": 7,
        "annotations": [ann(10, 10, 40, 50, 0), ann(50, 20, 90, 60, 1)],
    }
    if sem_seg:
        labels = np.ones((height, width), dtype=np.uint8)
        labels[32:] = 2
        labels[10:50, 10:40] = 0
        labels[20:60, 50:90] = 0
        labels[:, -1] = 255
        Image.fromarray(labels).save(directory / "sem_seg.png")
        record["sem_seg_file_name"] = str(directory / "sem_seg.png")
    mapper = DatasetMapper(is_train=True, augmentations=[], image_format="BGR", use_instance_mask=use_instance_mask)
    return mapper(record)

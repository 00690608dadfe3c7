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

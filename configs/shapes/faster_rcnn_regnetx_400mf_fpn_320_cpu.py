"""Faster R-CNN RegNetX-400MF FPN at 320 px (``configs/COCO/faster_rcnn_regnetx_400mf_fpn_320.py``) trained from
scratch on the synthetic shapes dataset (3 classes) on CPU::

    python tools/lazyconfig_train_net.py --config-file configs/shapes/faster_rcnn_regnetx_400mf_fpn_320_cpu.py

Data, heads, optimizer and schedule as ``faster_rcnn_mnv3_fpn_320_cpu.py``; a trainable BatchNorm backbone without
pretrained weights.
"""

from ..COCO.faster_rcnn_regnetx_400mf_fpn_320 import model
from .faster_rcnn_mnv3_fpn_320_cpu import dataloader, lr_multiplier, optimizer, train
from .faster_rcnn_mnv3_fpn_320_cpu import model as mobilenet_model

model.backbone.bottom_up.update(norm="BN", freeze_at=0)
model.proposal_generator = mobilenet_model.proposal_generator  # anchors from 16 px
model.roi_heads = mobilenet_model.roi_heads  # 3 classes
del mobilenet_model

dataloader.train.mapper.image_format = "BGR"
train.output_dir = "./output/shapes_faster_rcnn_regnetx_400mf_fpn_320_cpu"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]

"""FCOS MobileNetV3-Large FPN at 320 px (``configs/COCO/fcos_mnv3_fpn_320.py``) trained from scratch on the synthetic
shapes dataset (3 classes) on CPU::

    python tools/lazyconfig_train_net.py --config-file configs/shapes/fcos_mnv3_fpn_320_cpu.py

Data, optimizer and schedule as ``mask_rcnn_mnv3_fpn_320_cpu.py``; a trainable BatchNorm backbone without
pretrained weights.
"""

from ..COCO.fcos_mnv3_fpn_320 import model
from .retinanet_mnv3_fpn_320_cpu import dataloader, lr_multiplier, optimizer, train

model.backbone.bottom_up.update(norm="BN", freeze_at=0, weights=None)
model.num_classes = 3
train.output_dir = "./output/shapes_fcos_mnv3_fpn_320_cpu"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]

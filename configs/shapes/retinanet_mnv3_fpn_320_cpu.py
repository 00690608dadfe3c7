"""RetinaNet MobileNetV3-Large FPN at 320 px (``configs/COCO/retinanet_mnv3_fpn_320.py``) trained from scratch on
the synthetic shapes dataset (3 classes) on CPU::

    python tools/lazyconfig_train_net.py --config-file configs/shapes/retinanet_mnv3_fpn_320_cpu.py

Data, optimizer and schedule as ``mask_rcnn_mnv3_fpn_320_cpu.py``; a trainable BatchNorm backbone without
pretrained weights and anchors from 16 px (three scales per octave).
"""

from ..COCO.retinanet_mnv3_fpn_320 import model
from .mask_rcnn_mnv3_fpn_320_cpu import dataloader, lr_multiplier, optimizer, train

model.backbone.bottom_up.update(norm="BN", freeze_at=0, weights=None)
model.num_classes = 3
model.anchor_generator.sizes = [
    [16, 16 * 2 ** (1.0 / 3), 16 * 2 ** (2.0 / 3)],
    [32, 32 * 2 ** (1.0 / 3), 32 * 2 ** (2.0 / 3)],
    [64, 64 * 2 ** (1.0 / 3), 64 * 2 ** (2.0 / 3)],
    [128, 128 * 2 ** (1.0 / 3), 128 * 2 ** (2.0 / 3)],
    [256, 256 * 2 ** (1.0 / 3), 256 * 2 ** (2.0 / 3)],
]

dataloader.train.mapper.use_instance_mask = False
dataloader.evaluator.tasks = ["bbox"]
train.output_dir = "./output/shapes_retinanet_mnv3_fpn_320_cpu"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]

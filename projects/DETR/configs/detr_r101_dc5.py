"""DETR DC5-R101 (paper: 44.9 box AP): ResNet-101 with a dilated res5; otherwise as ``detr_r50.py``."""

from .detr_r50 import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401  (config keys)

model.backbone.stages.update(depth=101, dc5=True)
train.output_dir = "./output/detr_r101_dc5"

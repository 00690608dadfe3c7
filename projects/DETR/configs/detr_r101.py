"""DETR R101 (paper: 43.5 box AP): ResNet-101 backbone; otherwise as ``detr_r50.py``."""

from .detr_r50 import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401  (config keys)

model.backbone.stages.depth = 101
train.output_dir = "./output/detr_r101"

"""DETR DC5-R50 (paper: 43.3 box AP): res5 dilated (stride 16) instead of strided, as torchvision / the official
weights (the first res5 block undilated); otherwise as ``detr_r50.py``."""

from .detr_r50 import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401  (config keys)

model.backbone.stages.dc5 = True
train.output_dir = "./output/detr_r50_dc5"

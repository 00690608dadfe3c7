"""Mask R-CNN ViTDet-H, 75 epochs on COCO with LSJ (detectron2's ``ViTDet/configs/COCO/mask_rcnn_vitdet_h_75ep.py``).

ViT-H (1280 channels, 32 blocks, 16 heads; blocks 7, 15, 23, 31 attend globally), drop path 0.5, layer-wise
lr decay 0.9; MAE ViT-H pre-training (14 px patches resampled to 16). The 100-epoch schedule shortened to 3/4.
"""

from .mask_rcnn_vitdet_b_100ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.net.embed_dim = 1280
model.backbone.net.depth = 32
model.backbone.net.num_heads = 16
model.backbone.net.drop_path_rate = 0.5
# 7, 15, 23, 31 for global attention
model.backbone.net.window_block_indexes = [
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    8,
    9,
    10,
    11,
    12,
    13,
    14,
    16,
    17,
    18,
    19,
    20,
    21,
    22,
    24,
    25,
    26,
    27,
    28,
    29,
    30,
]

optimizer.params.lr_factor_func.update(lr_decay_rate=0.9, num_layers=32)
train.init_checkpoint = "detectron2://ImageNetPretrained/MAE/mae_pretrain_vit_huge_p14to16.pth?matching_heuristics=True"

train.max_iter = 138281  # 3/4 of 184375: 100 ep -> 75 ep
lr_multiplier.scheduler.milestones = [122916, 133159]  # 3/4 of [163889, 177546]
lr_multiplier.warmup_length = 250 / 138281

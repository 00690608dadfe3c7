"""Cascade Mask R-CNN MViTv2-H, 50 epochs on LVIS v1 with LSJ (detectron2's
``projects/ViTDet/configs/LVIS/cascade_mask_rcnn_mvitv2_h_in21k_50ep.py``).

``cascade_mask_rcnn_mvitv2_b_in21k_100ep.py`` (LVIS) with MViTv2-H (192 channels, 80 blocks, 3 heads, stages ending
at blocks 3, 11, 71, 79, drop path 0.6, activation checkpointing, ImageNet-21k pre-training), half the schedule,
lr 2e-5.
"""

from .cascade_mask_rcnn_mvitv2_b_in21k_100ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.embed_dim = 192
model.backbone.bottom_up.depth = 80
model.backbone.bottom_up.num_heads = 3
model.backbone.bottom_up.last_block_indexes = (3, 11, 71, 79)
model.backbone.bottom_up.drop_path_rate = 0.6
model.backbone.bottom_up.use_act_checkpoint = True

train.init_checkpoint = "detectron2://ImageNetPretrained/mvitv2/MViTv2_H_in21k.pyth"

train.max_iter = 78125  # 100 ep -> 50 ep
lr_multiplier.scheduler.milestones = [69444, 75231]
lr_multiplier.scheduler.num_updates = 78125
lr_multiplier.warmup_length = 250 / 78125

optimizer.lr = 2e-5

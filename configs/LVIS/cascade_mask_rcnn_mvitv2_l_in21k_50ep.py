"""Cascade Mask R-CNN MViTv2-L, 50 epochs on LVIS v1 with LSJ (detectron2's
``projects/ViTDet/configs/LVIS/cascade_mask_rcnn_mvitv2_l_in21k_50ep.py``).

``cascade_mask_rcnn_mvitv2_b_in21k_100ep.py`` (LVIS) with MViTv2-L (144 channels, 48 blocks, 2 heads, stages ending
at blocks 1, 7, 43, 47, drop path 0.5, ImageNet-21k pre-training), half the schedule, lr 4e-5.
"""

from .cascade_mask_rcnn_mvitv2_b_in21k_100ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.embed_dim = 144
model.backbone.bottom_up.depth = 48
model.backbone.bottom_up.num_heads = 2
model.backbone.bottom_up.last_block_indexes = (1, 7, 43, 47)
model.backbone.bottom_up.drop_path_rate = 0.5

train.init_checkpoint = "detectron2://ImageNetPretrained/mvitv2/MViTv2_L_in21k.pyth"

train.max_iter = 78125  # 100 ep -> 50 ep
lr_multiplier.scheduler.milestones = [69444, 75231]
lr_multiplier.scheduler.num_updates = 78125
lr_multiplier.warmup_length = 250 / 78125

optimizer.lr = 4e-5

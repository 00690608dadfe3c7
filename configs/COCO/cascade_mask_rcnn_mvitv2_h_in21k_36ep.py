"""Cascade Mask R-CNN MViTv2-H, 36 epochs on COCO with LSJ (detectron2's
``projects/ViTDet/configs/COCO/cascade_mask_rcnn_mvitv2_h_in21k_36ep.py``).

MViTv2-H (192 channels, 80 blocks, 3 heads; stages ending at blocks 3, 11, 71, 79), drop path 0.6, activation
checkpointing, ImageNet-21k pre-training; 67500 iterations (36 epochs) with the same relative milestones.
"""

from .cascade_mask_rcnn_mvitv2_b_in21k_100ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.embed_dim = 192
model.backbone.bottom_up.depth = 80
model.backbone.bottom_up.num_heads = 3
model.backbone.bottom_up.last_block_indexes = (3, 11, 71, 79)
model.backbone.bottom_up.drop_path_rate = 0.6
model.backbone.bottom_up.use_act_checkpoint = True

train.init_checkpoint = "detectron2://ImageNetPretrained/mvitv2/MViTv2_H_in21k.pyth"

train.max_iter = 67500  # 36 epochs
lr_multiplier.scheduler.milestones = [60000, 65000]  # ~88.9% and ~96.3% of training
lr_multiplier.warmup_length = 250 / 67500

"""Cascade Mask R-CNN MViTv2-L, 50 epochs on COCO with LSJ (detectron2's
``projects/ViTDet/configs/COCO/cascade_mask_rcnn_mvitv2_l_in21k_50ep.py``).

MViTv2-L (144 channels, 48 blocks, 2 heads; stages ending at blocks 1, 7, 43, 47), drop path 0.5, ImageNet-21k
pre-training; the 100-epoch schedule halved. Everything else as ``cascade_mask_rcnn_mvitv2_b_in21k_100ep.py``.
"""

from .cascade_mask_rcnn_mvitv2_b_in21k_100ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.embed_dim = 144
model.backbone.bottom_up.depth = 48
model.backbone.bottom_up.num_heads = 2
model.backbone.bottom_up.last_block_indexes = (1, 7, 43, 47)
model.backbone.bottom_up.drop_path_rate = 0.5

train.init_checkpoint = "detectron2://ImageNetPretrained/mvitv2/MViTv2_L_in21k.pyth"

train.max_iter = 92187  # 50 epochs
lr_multiplier.scheduler.milestones = [81944, 88773]  # halves of [163889, 177546]
lr_multiplier.warmup_length = 250 / 92187

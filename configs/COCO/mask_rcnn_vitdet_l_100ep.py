"""Mask R-CNN ViTDet-L, 100 epochs on COCO with LSJ (detectron2's ``ViTDet/configs/COCO/mask_rcnn_vitdet_l_100ep.py``).

ViT-L (1024 channels, 24 blocks, 16 heads; blocks 5, 11, 17, 23 attend globally), drop path 0.4, layer-wise
lr decay 0.8; MAE ViT-L pre-training. Everything else as ``mask_rcnn_vitdet_b_100ep.py``.
"""

from .mask_rcnn_vitdet_b_100ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.net.embed_dim = 1024
model.backbone.net.depth = 24
model.backbone.net.num_heads = 16
model.backbone.net.drop_path_rate = 0.4
# 5, 11, 17, 23 for global attention
model.backbone.net.window_block_indexes = [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 18, 19, 20, 21, 22]

optimizer.params.lr_factor_func.update(lr_decay_rate=0.8, num_layers=24)
train.init_checkpoint = "detectron2://ImageNetPretrained/MAE/mae_pretrain_vit_large.pth?matching_heuristics=True"

"""Mask R-CNN ViTDet-L, 100 epochs on LVIS v1 with LSJ (detectron2's
``projects/ViTDet/configs/LVIS/mask_rcnn_vitdet_l_100ep.py``).

``mask_rcnn_vitdet_b_100ep.py`` (LVIS) with ViT-L: 1024 channels, 24 blocks, 16 heads, blocks 5, 11, 17, 23
attending globally, drop path 0.4, layer-wise lr decay 0.8, MAE ViT-L pre-training.
"""

from .mask_rcnn_vitdet_b_100ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.net.embed_dim = 1024
model.backbone.net.depth = 24
model.backbone.net.num_heads = 16
model.backbone.net.drop_path_rate = 0.4
model.backbone.net.window_block_indexes = [i for i in range(24) if i % 6 != 5]  # 5, 11, 17, 23 are global

optimizer.params.lr_factor_func.update(lr_decay_rate=0.8, num_layers=24)
train.init_checkpoint = "detectron2://ImageNetPretrained/MAE/mae_pretrain_vit_large.pth?matching_heuristics=True"

"""Mask R-CNN ViTDet-H, 100 epochs on LVIS v1 with LSJ (detectron2's
``projects/ViTDet/configs/LVIS/mask_rcnn_vitdet_h_100ep.py``).

``mask_rcnn_vitdet_b_100ep.py`` (LVIS) with ViT-H: 1280 channels, 32 blocks, 16 heads, blocks 7, 15, 23, 31
attending globally, drop path 0.4, layer-wise lr decay 0.9, MAE ViT-H pre-training (14 px patches resampled to
16); lr 1e-4, and weight decay on every parameter (no exceptions for norms or the position embedding).
"""

from .mask_rcnn_vitdet_b_100ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.net.embed_dim = 1280
model.backbone.net.depth = 32
model.backbone.net.num_heads = 16
model.backbone.net.drop_path_rate = 0.4
model.backbone.net.window_block_indexes = [i for i in range(32) if i % 8 != 7]  # 7, 15, 23, 31 are global

optimizer.lr = 1e-4
optimizer.params.lr_factor_func.update(lr_decay_rate=0.9, num_layers=32)
optimizer.params.overrides = {}
optimizer.params.weight_decay_norm = None
train.init_checkpoint = "detectron2://ImageNetPretrained/MAE/mae_pretrain_vit_huge_p14to16.pth?matching_heuristics=True"

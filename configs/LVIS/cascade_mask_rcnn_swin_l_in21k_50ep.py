"""Cascade Mask R-CNN Swin-L, 50 epochs on LVIS v1 with LSJ (detectron2's
``projects/ViTDet/configs/LVIS/cascade_mask_rcnn_swin_l_in21k_50ep.py``).

``cascade_mask_rcnn_swin_b_in21k_50ep.py`` (LVIS) with Swin-L: 192 channels, heads 6/12/24/48, ImageNet-22k
pre-training.
"""

from .cascade_mask_rcnn_swin_b_in21k_50ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.embed_dim = 192
model.backbone.bottom_up.num_heads = [6, 12, 24, 48]

train.init_checkpoint = "detectron2://ImageNetPretrained/swin/swin_large_patch4_window7_224_22k.pth"

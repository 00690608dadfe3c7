"""Cascade Mask R-CNN Swin-L, 50 epochs on COCO with LSJ (detectron2's
``projects/ViTDet/configs/COCO/cascade_mask_rcnn_swin_l_in21k_50ep.py``).

Swin-L (192 channels, heads 6-12-24-48) from ImageNet-21k pre-training; otherwise as
``cascade_mask_rcnn_swin_b_in21k_50ep.py``.
"""

from .cascade_mask_rcnn_swin_b_in21k_50ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.embed_dim = 192
model.backbone.bottom_up.num_heads = [6, 12, 24, 48]

train.init_checkpoint = "detectron2://ImageNetPretrained/swin/swin_large_patch4_window7_224_22k.pth"

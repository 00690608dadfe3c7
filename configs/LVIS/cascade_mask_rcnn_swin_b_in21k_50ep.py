"""Cascade Mask R-CNN Swin-B, 50 epochs on LVIS v1 with LSJ (detectron2's
``projects/ViTDet/configs/LVIS/cascade_mask_rcnn_swin_b_in21k_50ep.py``).

The COCO model (``configs/COCO/cascade_mask_rcnn_swin_b_in21k_50ep.py``) with drop path 0.3 and the LVIS
heads, data and evaluation of ``cascade_mask_rcnn_mvitv2_b_in21k_100ep.py``; 78125 iterations at lr 1e-4.
Federated loss: ``model.roi_heads.box_predictors[0].use_fed_loss = True`` in an importing config (see there).
"""

from ..COCO.cascade_mask_rcnn_swin_b_in21k_50ep import model as _swin
from .cascade_mask_rcnn_mvitv2_b_in21k_100ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up = _swin.backbone.bottom_up
model.backbone.bottom_up.drop_path_rate = 0.3
model.backbone.in_features = ("p0", "p1", "p2", "p3")

train.init_checkpoint = "detectron2://ImageNetPretrained/swin/swin_base_patch4_window7_224_22k.pth"
# 100 ep -> 50 ep, as the model does better with 50 epochs
train.max_iter = 78125
lr_multiplier.scheduler.milestones = [69444, 75231]
lr_multiplier.warmup_length = 250 / 78125

optimizer.lr = 1e-4
optimizer.weight_decay = 0.05
optimizer.params.overrides = {"relative_position_bias_table": {"weight_decay": 0.0}}

"""Cascade Mask R-CNN with a Swin-B FPN backbone, 50 epochs on COCO with LSJ (detectron2's
``projects/ViTDet/configs/COCO/cascade_mask_rcnn_swin_b_in21k_50ep.py``).

Swin-B (128 channels, depths 2-2-18-2, heads 4-8-16-32, 7 x 7 windows), drop path 0.4, ImageNet-21k
pre-training; the detector of ``cascade_mask_rcnn_mvitv2_b_in21k_100ep.py`` on top. AdamW lr 4e-5, weight
decay 0.05 (none on relative position tables), the 100-epoch schedule halved.
"""

from libdet.config import LazyCall as L
from libdet.modeling.backbone import SwinTransformer

from .cascade_mask_rcnn_mvitv2_b_in21k_100ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up = L(SwinTransformer)(
    depths=[2, 2, 18, 2],
    drop_path_rate=0.4,
    embed_dim=128,
    num_heads=[4, 8, 16, 32],
)
model.backbone.in_features = ("p0", "p1", "p2", "p3")
model.backbone.square_pad = 1024

train.init_checkpoint = "detectron2://ImageNetPretrained/swin/swin_base_patch4_window7_224_22k.pth"

train.max_iter = 92187  # 50 epochs
lr_multiplier.scheduler.milestones = [81944, 88773]  # halves of [163889, 177546]
lr_multiplier.warmup_length = 250 / 92187

optimizer.lr = 4e-5
optimizer.weight_decay = 0.05
optimizer.params.overrides = {"relative_position_bias_table": {"weight_decay": 0.0}}

"""Mask R-CNN R101-FPN, 3x schedule on COCO 2017 (detectron2's ``COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x``).

The R50 config with a ResNet-101 backbone (MSRA ImageNet weights) and the 270k-iteration schedule.
"""

from ..common.coco_schedule import lr_multiplier_3x as lr_multiplier
from .mask_rcnn_r50 import dataloader, model, optimizer, train

model.backbone.bottom_up.stages.depth = 101
train.max_iter = 270000
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"

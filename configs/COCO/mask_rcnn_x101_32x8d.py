"""Mask R-CNN X101-32x8d-FPN, 3x schedule on COCO 2017
(detectron2's ``COCO-InstanceSegmentation/mask_rcnn_X_101_32x8d_FPN_3x``).

ResNeXt-101 with 32 groups of width 8, initialised from FAIR's ImageNet model, which was trained on
RGB-normalised images: stride in the 3x3 conv and the torchvision pixel std (in BGR order).
"""

from ..common.coco_schedule import lr_multiplier_3x as lr_multiplier
from .mask_rcnn_r50 import dataloader, model, optimizer, train

model.backbone.bottom_up.stages.update(depth=101, stride_in_1x1=False, num_groups=32, width_per_group=8)
model.pixel_std = [57.375, 57.120, 58.395]
train.max_iter = 270000
train.init_checkpoint = "detectron2://ImageNetPretrained/FAIR/X-101-32x8d.pkl"

"""Panoptic FPN R50, 1x schedule on COCO 2017 panoptic (detectron2's
``COCO-PanopticSegmentation/panoptic_fpn_R_50_1x``).

16 images per iteration, SGD lr 0.02, 90k iterations; backbone initialised from the MSRA ImageNet ResNet-50.
Evaluated with box/mask AP, stuff mIoU and PQ.
"""

from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
from ..common.data.coco_panoptic_separated import dataloader
from ..common.models.panoptic_fpn import model
from ..common.optim import SGD as optimizer
from ..common.train import train

model.backbone.bottom_up.freeze_at = 2
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"

"""Mask R-CNN R50-FPN, 1x schedule on COCO 2017 (detectron2's ``COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x``).

16 images per iteration (8 GPUs x 2), SGD lr 0.02, 90k iterations; backbone initialised from the MSRA
ImageNet ResNet-50 (caffe2 weights, BGR input, stride in the 1x1 conv).
"""

from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
from ..common.data.coco import dataloader
from ..common.models.mask_rcnn_fpn import model
from ..common.optim import SGD as optimizer
from ..common.train import train

model.backbone.bottom_up.freeze_at = 2
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"

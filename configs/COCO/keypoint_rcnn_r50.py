"""Keypoint R-CNN R50-FPN, 1x schedule on COCO 2017 person keypoints (detectron2's
``COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x``).

16 images per iteration, SGD lr 0.02, 90k iterations on ``keypoints_coco_2017_train`` (images with at least
one keypoint), evaluated on ``keypoints_coco_2017_val``; backbone initialised from the MSRA ImageNet
ResNet-50 (caffe2 weights, BGR input).
"""

from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
from ..common.data.coco_keypoint import dataloader
from ..common.models.keypoint_rcnn_fpn import model
from ..common.optim import SGD as optimizer
from ..common.train import train

model.backbone.bottom_up.freeze_at = 2
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"

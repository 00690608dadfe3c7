"""Cascade Mask R-CNN R50-FPN, 1x schedule on COCO 2017 (detectron2's ``Misc/cascade_mask_rcnn_R_50_FPN_1x``).

16 images per iteration, SGD lr 0.02, 90k iterations; backbone initialised from the MSRA ImageNet
ResNet-50 (caffe2 weights, BGR input). As in the model zoo, the RPN keeps 2000 proposals per training image.
"""

from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
from ..common.data.coco import dataloader
from ..common.models.cascade_rcnn import model
from ..common.optim import SGD as optimizer
from ..common.train import train

model.backbone.bottom_up.freeze_at = 2
model.proposal_generator.post_nms_topk = (2000, 1000)
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"

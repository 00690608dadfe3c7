"""Faster R-CNN R50-FPN, 1x schedule on COCO 2017 (detectron2's ``COCO-Detection/faster_rcnn_R_50_FPN_1x``).

The Mask R-CNN R50-FPN config without the mask branch; boxes only in data and evaluation.
"""

from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
from ..common.data.coco import dataloader
from ..common.models.mask_rcnn_fpn import model
from ..common.optim import SGD as optimizer
from ..common.train import train

model.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
model.backbone.bottom_up.freeze_at = 2
dataloader.train.mapper.use_instance_mask = False
dataloader.evaluator.tasks = ["bbox"]
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"

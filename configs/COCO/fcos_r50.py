"""FCOS R50-FPN, 1x schedule on COCO 2017 (detectron2's ``COCO-Detection/fcos_R_50_FPN_1x``).

As detectron2: SGD lr 0.01, boxes only, backbone initialised from the MSRA ImageNet ResNet-50.
"""

from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
from ..common.data.coco import dataloader
from ..common.models.fcos import model
from ..common.optim import SGD as optimizer
from ..common.train import train

dataloader.train.mapper.use_instance_mask = False
dataloader.evaluator.tasks = ["bbox"]
optimizer.lr = 0.01

model.backbone.bottom_up.freeze_at = 2
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"

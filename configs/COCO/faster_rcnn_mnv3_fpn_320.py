"""Faster R-CNN on a MobileNetV3-Large FPN at 320 px (COCO 2017, 3x schedule): ``mask_rcnn_mnv3_fpn_320.py``
without the mask branch, boxes only in data and evaluation. See that file for the recipe and the ImageNet weights.
"""

from .mask_rcnn_mnv3_fpn_320 import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
dataloader.train.mapper.use_instance_mask = False
dataloader.evaluator.tasks = ["bbox"]

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]

"""Faster R-CNN MobileNetV3-Large FPN at 320 px trained from scratch on the synthetic shapes dataset on CPU:
``mask_rcnn_mnv3_fpn_320_cpu.py`` without the mask branch (boxes only in data and evaluation)::

    python tools/lazyconfig_train_net.py --config-file configs/shapes/faster_rcnn_mnv3_fpn_320_cpu.py
"""

from .mask_rcnn_mnv3_fpn_320_cpu import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
dataloader.train.mapper.use_instance_mask = False
dataloader.evaluator.tasks = ["bbox"]
train.output_dir = "./output/shapes_faster_rcnn_mnv3_fpn_320_cpu"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]

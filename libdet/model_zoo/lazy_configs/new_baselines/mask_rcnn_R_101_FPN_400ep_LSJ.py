"""detectron2's ``new_baselines/mask_rcnn_R_101_FPN_400ep_LSJ.py``: the R50 recipe with a ResNet-101."""

from .mask_rcnn_R_50_FPN_400ep_LSJ import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.depth = 101

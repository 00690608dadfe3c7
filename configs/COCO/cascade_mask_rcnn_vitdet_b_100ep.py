"""Cascade Mask R-CNN ViTDet-B, 100 epochs on COCO with LSJ (detectron2's
``projects/ViTDet/configs/COCO/cascade_mask_rcnn_vitdet_b_100ep.py``).

``mask_rcnn_vitdet_b_100ep.py`` with three cascade box stages (IoU 0.5 / 0.6 / 0.7), each a 4conv1fc head
with LayerNorm and class-agnostic box regression.
"""

from ..common.models.cascade_rcnn import model as _cascade
from .mask_rcnn_vitdet_b_100ep import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads = _cascade.roi_heads
model.roi_heads.box_heads[0].update(conv_dims=[256, 256, 256, 256], fc_dims=[1024], conv_norm="LN")
model.roi_heads.box_heads[1].update(conv_dims=[256, 256, 256, 256], fc_dims=[1024], conv_norm="LN")
model.roi_heads.box_heads[2].update(conv_dims=[256, 256, 256, 256], fc_dims=[1024], conv_norm="LN")
model.roi_heads.mask_head.conv_norm = "LN"

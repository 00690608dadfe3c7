"""Cascade Mask R-CNN ViTDet-H, 75 epochs on COCO with LSJ (detectron2's
``projects/ViTDet/configs/COCO/cascade_mask_rcnn_vitdet_h_75ep.py``: 58.7 box AP in the model zoo).

``mask_rcnn_vitdet_h_75ep.py`` with the cascade box stages of ``cascade_mask_rcnn_vitdet_b_100ep.py``.
"""

from .cascade_mask_rcnn_vitdet_b_100ep import model as _cascade
from .mask_rcnn_vitdet_h_75ep import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads = _cascade.roi_heads

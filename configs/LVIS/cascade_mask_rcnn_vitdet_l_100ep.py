"""Cascade Mask R-CNN ViTDet-L, 100 epochs on LVIS v1 with LSJ (detectron2's
``projects/ViTDet/configs/LVIS/cascade_mask_rcnn_vitdet_l_100ep.py``).

``mask_rcnn_vitdet_l_100ep.py`` (LVIS) with the three cascade box stages of ``cascade_mask_rcnn_vitdet_b_100ep.py``
(LVIS: sigmoid cross-entropy, up to 300 detections with score > 0.02; the federated-loss switch is
``model.roi_heads.box_predictors[0].use_fed_loss``, off by default as explained there).
"""

from .cascade_mask_rcnn_vitdet_b_100ep import model as _cascade
from .mask_rcnn_vitdet_l_100ep import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads = _cascade.roi_heads

"""Cascade Mask R-CNN ViTDet-B, 100 epochs on LVIS v1 with LSJ (detectron2's
``projects/ViTDet/configs/LVIS/cascade_mask_rcnn_vitdet_b_100ep.py``).

``mask_rcnn_vitdet_b_100ep.py`` (LVIS) with three cascade box stages; each stage's predictor uses sigmoid
cross-entropy and keeps up to 300 detections with score > 0.02.

As in ``mask_rcnn_vitdet_b_100ep.py``, detectron2's federated loss is off by default because its class weights
need the LVIS training json when the model is built. It is one switch, the first stage's (the other stages
follow it); a config that imports this one turns it on with::

    model.roi_heads.box_predictors[0].use_fed_loss = True
"""

from libdet.config import LazyCall as L
from libdet.data.detection_utils import fed_loss_cls_weights_fn

from ..COCO.cascade_mask_rcnn_vitdet_b_100ep import model as _cascade
from .mask_rcnn_vitdet_b_100ep import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads = _cascade.roi_heads
model.roi_heads.num_classes = 1203
_lvis_predictor = dict(
    test_score_thresh=0.02,
    test_topk_per_image=300,
    use_sigmoid_ce=True,
    # one federated-loss switch for the three stages, off by default (see the module docstring)
    use_fed_loss="${model.roi_heads.box_predictors[0].use_fed_loss}",
    get_fed_loss_cls_weights=L(fed_loss_cls_weights_fn)(
        dataset_names="${dataloader.train.dataset.names}", freq_weight_power=0.5
    ),
    fed_loss_num_classes=50,
)
model.roi_heads.box_predictors[0].update(_lvis_predictor)
model.roi_heads.box_predictors[1].update(_lvis_predictor)
model.roi_heads.box_predictors[2].update(_lvis_predictor)
model.roi_heads.box_predictors[0].use_fed_loss = False  # detectron2's recipe: True

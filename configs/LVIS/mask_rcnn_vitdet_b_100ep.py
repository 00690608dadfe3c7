"""Mask R-CNN ViTDet-B, 100 epochs on LVIS v1 with LSJ (detectron2's
``projects/ViTDet/configs/LVIS/mask_rcnn_vitdet_b_100ep.py``).

The COCO recipe (``configs/COCO/mask_rcnn_vitdet_b_100ep.py``) with 1203 classes, repeat factor sampling
(threshold 0.001), sigmoid cross-entropy, up to 300 detections per image with score > 0.02, LVIS evaluation;
156250 iterations (100 epochs of 100k images) at lr 2e-4.

detectron2's recipe adds the federated loss (50 classes per iteration, class weights = training image counts to
the power 0.5). Its weights are computed from the LVIS training json when the model is built, so it is one
switch here, off by default so that the model builds without the dataset::

    python tools/lazyconfig_train_net.py --config-file configs/LVIS/mask_rcnn_vitdet_b_100ep.py \
        model.roi_heads.box_predictor.use_fed_loss=True
"""

from libdet.config import LazyCall as L
from libdet.data.detection_utils import fed_loss_cls_weights_fn
from libdet.data.samplers import RepeatFactorTrainingSampler
from libdet.evaluation import LVISEvaluator

from ..COCO.mask_rcnn_vitdet_b_100ep import dataloader, lr_multiplier, model, optimizer, train

dataloader.train.dataset.names = "lvis_v1_train"
dataloader.train.sampler = L(RepeatFactorTrainingSampler)(
    repeat_factors=L(RepeatFactorTrainingSampler.repeat_factors_from_category_frequency)(
        dataset_dicts="${dataloader.train.dataset}", repeat_thresh=0.001
    )
)
dataloader.test.dataset.names = "lvis_v1_val"
dataloader.evaluator = L(LVISEvaluator)(dataset_name="${..test.dataset.names}", max_dets_per_image=300)

model.roi_heads.num_classes = 1203
model.roi_heads.box_predictor.update(
    test_score_thresh=0.02,
    test_topk_per_image=300,
    use_sigmoid_ce=True,
    use_fed_loss=False,  # detectron2's recipe: True (see the module docstring)
    get_fed_loss_cls_weights=L(fed_loss_cls_weights_fn)(
        dataset_names="${dataloader.train.dataset.names}", freq_weight_power=0.5
    ),
    fed_loss_num_classes=50,
)

# 100 ep = 156250 iters * 64 images/iter / 100000 images/ep
train.max_iter = 156250
train.eval_period = 30000
lr_multiplier.scheduler.milestones = [138889, 150463]
lr_multiplier.warmup_length = 250 / 156250

optimizer.lr = 2e-4

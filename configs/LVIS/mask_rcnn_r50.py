"""Mask R-CNN R50-FPN on LVIS v1 (the setting of detectron2's ``LVISv1-InstanceSegmentation/mask_rcnn_R_50_FPN_1x``).

1203 classes; images repeated by category frequency (repeat factor sampling, threshold 0.001); 180k
iterations at batch size 16 with decays at 120k and 160k; up to 300 detections per image with score > 1e-4,
evaluated with the LVIS API (needs the ``lvis`` package).

Federated loss (https://arxiv.org/abs/2103.07461) with per-class sigmoid cross-entropy, detectron2's LVIS
fed-loss setting, is one switch, off by default (detectron2's LVIS baseline)::

    python tools/lazyconfig_train_net.py --config-file configs/LVIS/mask_rcnn_r50.py \
        model.roi_heads.box_predictor.use_fed_loss=True

The class weights (number of training images that contain each class, to the power 0.5) are then computed
when the model is built, from the training set's ``class_image_count`` metadata (or its annotations), never
when the config is loaded.
"""

from libdet.config import LazyCall as L
from libdet.data.detection_utils import fed_loss_cls_weights_fn
from libdet.data.samplers import RepeatFactorTrainingSampler
from libdet.evaluation import LVISEvaluator

from ..common.coco_schedule import lr_multiplier_2x as lr_multiplier
from ..common.data.coco import dataloader
from ..common.models.mask_rcnn_fpn import model
from ..common.optim import SGD as optimizer
from ..common.train import train

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
    test_score_thresh=0.0001,
    test_topk_per_image=300,
    # The federated-loss switch (see the module docstring); when on, 50 classes are covered per iteration.
    use_fed_loss=False,
    use_sigmoid_ce="${.use_fed_loss}",
    get_fed_loss_cls_weights=L(fed_loss_cls_weights_fn)(
        dataset_names="${dataloader.train.dataset.names}", freq_weight_power=0.5
    ),
    fed_loss_num_classes=50,
)
model.backbone.bottom_up.freeze_at = 2

train.max_iter = 180000
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"

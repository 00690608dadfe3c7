"""Mask R-CNN R50-FPN on LVIS v1 (the setting of detectron2's ``LVISv1-InstanceSegmentation/mask_rcnn_R_50_FPN_1x``).

1203 classes; images repeated by category frequency (repeat factor sampling, threshold 0.001); 180k
iterations at batch size 16 with decays at 120k and 160k; up to 300 detections per image with score > 1e-4,
evaluated with the LVIS API (needs the ``lvis`` package).
"""

from libdet.config import LazyCall as L
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
model.roi_heads.box_predictor.update(test_score_thresh=0.0001, test_topk_per_image=300)
model.backbone.bottom_up.freeze_at = 2

train.max_iter = 180000
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"

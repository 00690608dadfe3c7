"""COCO 2017 panoptic segmentation in the "separated" format of PanopticFPN: instances plus semantic
"stuff" maps (detectron2's ``configs/common/data/coco_panoptic_separated.py``).

Evaluated with COCO AP (instances), mIoU (stuff) and PQ (panoptic).
"""

from libdet.config import LazyCall as L
from libdet.evaluation import COCOEvaluator, COCOPanopticEvaluator, SemSegEvaluator

from .coco import dataloader

dataloader.train.dataset.names = "coco_2017_train_panoptic_separated"
dataloader.train.dataset.filter_empty = False
dataloader.test.dataset.names = "coco_2017_val_panoptic_separated"

dataloader.evaluator = [
    L(COCOEvaluator)(dataset_name="${...test.dataset.names}"),
    L(SemSegEvaluator)(dataset_name="${...test.dataset.names}"),
    L(COCOPanopticEvaluator)(dataset_name="${...test.dataset.names}"),
]

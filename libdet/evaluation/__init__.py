"""Evaluation: the evaluator interface, ``inference_on_dataset`` and dataset-specific metrics.

Names follow ``detectron2.evaluation``. Optional dependencies (``lvis``, ``cityscapesscripts``) are imported
only when the matching evaluator runs.
"""

from . import (
    cityscapes_evaluation,
    coco_evaluation,
    evaluator,
    fast_eval_api,
    lvis_evaluation,
    panoptic_evaluation,
    pascal_voc_evaluation,
    results,
    rotated_coco_evaluation,
    sem_seg_evaluation,
    testing,
)
from .cityscapes_evaluation import CityscapesInstanceEvaluator, CityscapesSemSegEvaluator
from .coco_evaluation import COCOEvaluator
from .evaluator import DatasetEvaluator, DatasetEvaluators, inference_context, inference_on_dataset
from .lvis_evaluation import LVISEvaluator
from .panoptic_evaluation import COCOPanopticEvaluator
from .pascal_voc_evaluation import PascalVOCDetectionEvaluator
from .results import print_csv_format, verify_results
from .rotated_coco_evaluation import RotatedCOCOEvaluator
from .sem_seg_evaluation import SemSegEvaluator

__all__ = [
    "COCOEvaluator",
    "COCOPanopticEvaluator",
    "CityscapesInstanceEvaluator",
    "CityscapesSemSegEvaluator",
    "DatasetEvaluator",
    "DatasetEvaluators",
    "LVISEvaluator",
    "PascalVOCDetectionEvaluator",
    "RotatedCOCOEvaluator",
    "SemSegEvaluator",
    "cityscapes_evaluation",
    "coco_evaluation",
    "evaluator",
    "fast_eval_api",
    "inference_context",
    "inference_on_dataset",
    "lvis_evaluation",
    "panoptic_evaluation",
    "pascal_voc_evaluation",
    "print_csv_format",
    "results",
    "rotated_coco_evaluation",
    "sem_seg_evaluation",
    "testing",
    "verify_results",
]

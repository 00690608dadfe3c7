"""The built-in synthetic shapes dataset (``shapes_train`` / ``shapes_val``: 3 classes, 192-256 px images,
generated into a cache folder on first use; see ``libdet/data/datasets/shapes.py``).

Small inputs for CPU training: shorter side 224-256 in training, 256 at test time. Boxes, masks and
keypoints are all annotated; this loader uses boxes and masks.
"""

from omegaconf import OmegaConf

import libdet.data.transforms as T
from libdet.config import LazyCall as L
from libdet.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from libdet.evaluation import COCOEvaluator

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="shapes_train"),
    mapper=L(DatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=(224, 240, 256), sample_style="choice", max_size=352),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
        use_instance_mask=True,
    ),
    total_batch_size=4,
    num_workers=2,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="shapes_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=256, max_size=352)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=2,
)

dataloader.evaluator = L(COCOEvaluator)(dataset_name="${..test.dataset.names}")

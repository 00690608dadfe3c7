"""COCO 2017 person keypoints (detectron2's ``configs/common/data/coco_keypoint.py``).

The flip permutation of the keypoints is computed from the dataset's metadata when the loader is built.
"""

from libdet.config import LazyCall as L
from libdet.data.detection_utils import create_keypoint_hflip_indices

from .coco import dataloader

dataloader.train.dataset.min_keypoints = 1
dataloader.train.dataset.names = "keypoints_coco_2017_train"
dataloader.test.dataset.names = "keypoints_coco_2017_val"

dataloader.train.mapper.update(
    use_instance_mask=False,
    use_keypoint=True,
    keypoint_hflip_indices=L(create_keypoint_hflip_indices)(dataset_names="${...dataset.names}"),
)

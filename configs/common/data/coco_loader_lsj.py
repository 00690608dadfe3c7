"""COCO 2017 with large-scale jitter (LSJ), the data pipeline of ViTDet / MViTv2 / Swin detectors (detectron2's
``projects/ViTDet/configs/common/coco_loader_lsj.py``; https://arxiv.org/abs/2012.07177).

Training: horizontal flip, resize to 0.1x-2.0x of 1024 x 1024 (keeping the aspect ratio), random 1024 x 1024
crop; boxes are recomputed from the cropped masks; RGB input; 64 images per iteration. Testing: longer side
1024. The models pad every input to a 1024 x 1024 square (``square_pad``).
"""

import libdet.data.transforms as T
from libdet.config import LazyCall as L

from .coco import dataloader

image_size = 1024

dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),  # flip first, as in detectron2
    L(T.ResizeScale)(min_scale=0.1, max_scale=2.0, target_height=image_size, target_width=image_size),
    L(T.FixedSizeCrop)(crop_size=(image_size, image_size), pad=False),
]
dataloader.train.mapper.image_format = "RGB"
dataloader.train.mapper.recompute_boxes = True  # crops cut objects: boxes follow the masks
dataloader.train.total_batch_size = 64

dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=image_size, max_size=image_size),
]

"""TensorMask R50-FPN, 6x schedule with scale augmentation (detectron2's ``tensormask_R_50_FPN_6x``: 41.4 box AP,
35.8 mask AP): the 1x model and optimizer, 540k iterations with the lr / 10 at 480k and 520k, training images
with their shorter side drawn uniformly from 640-800 px.

    python tools/lazyconfig_train_net.py --config-file projects/TensorMask/configs/tensormask_R_50_FPN_6x.py --num-gpus 8
"""

import libdet.data.transforms as T
from libdet.config import LazyCall as L

from ....configs.common.coco_schedule import lr_multiplier_6x as lr_multiplier
from .tensormask_R_50_FPN_1x import dataloader, model, optimizer, train

dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(640, 800), sample_style="range", max_size=1333),
    L(T.RandomFlip)(horizontal=True),
]
train.max_iter = 540000
train.output_dir = "./output/tensormask_R_50_FPN_6x"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]

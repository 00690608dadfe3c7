"""Mask R-CNN MobileNetV3-Large FPN at 320 px (``configs/COCO/mask_rcnn_mnv3_fpn_320.py``) trained from scratch on the
built-in synthetic shapes dataset (3 classes) on CPU::

    python tools/lazyconfig_train_net.py --config-file configs/shapes/mask_rcnn_mnv3_fpn_320_cpu.py

The COCO model with 3 classes, a trainable BatchNorm backbone without pretrained weights (``norm="BN"``,
``freeze_at=0``), anchors from 16 px (the shapes are 12-140 px across in 192-256 px images, so about 15-175 px at
320), images resized to a 320-px shorter side, AdamW with warmup and cosine decay, 4 images per iteration;
bfloat16 autocast on CPUs with native bf16 (as ``mask_rcnn_cpu.py``).
"""

import torch
from fvcore.common.param_scheduler import CosineParamScheduler

from libdet.config import LazyCall as L
from libdet.solver import WarmupParamScheduler
from libdet.utils.env import cpu_has_native_bf16

from ..COCO.mask_rcnn_mnv3_fpn_320 import model
from ..common.data.shapes import dataloader
from ..common.optim import AdamW as optimizer
from ..common.train import train

model.backbone.bottom_up.update(norm="BN", freeze_at=0, weights=None)
model.proposal_generator.anchor_generator.sizes = [[16, 22.63], [32, 45.25], [64, 90.51], [128, 181.02]]
model.proposal_generator.batch_size_per_image = 128
model.roi_heads.num_classes = 3
model.roi_heads.batch_size_per_image = 128

dataloader.train.mapper.image_format = "RGB"
dataloader.train.mapper.augmentations[0].short_edge_length = (288, 320, 352)
dataloader.train.mapper.augmentations[0].max_size = 480
dataloader.test.mapper.augmentations[0].short_edge_length = 320
dataloader.test.mapper.augmentations[0].max_size = 480
dataloader.train.num_workers = 1  # the other core trains

optimizer.lr = 2e-3
optimizer.weight_decay = 0.05
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.02),
    warmup_length=0.05,
    warmup_factor=0.01,
)

train.output_dir = "./output/shapes_mask_rcnn_mnv3_fpn_320_cpu"
train.max_iter = (
    900  # ~1 CPU-second per iteration on one thread with bf16 (timed on a loaded machine): ~10 min on 2 idle cores
)
train.amp.update(enabled=cpu_has_native_bf16() and not torch.cuda.is_available(), precision="bfloat16")
train.eval_period = 0  # evaluate once, after training
train.checkpointer.period = 300
train.checkpointer.max_to_keep = 2
train.log_period = 50
train.seed = 0
train.device = "auto"
dataloader.evaluator.output_dir = "${train.output_dir}/inference"

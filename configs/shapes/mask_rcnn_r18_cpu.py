"""Baseline for the CPU quickstart: a standard Mask R-CNN R18-FPN trained from scratch on the built-in synthetic
shapes dataset (ResNet-18 with trainable BatchNorm, a 64-channel FPN, shorter image side 224-256, AdamW with
warmup and cosine decay, 4 images per iteration), in about 10 minutes on 2 CPU cores::

    python tools/lazyconfig_train_net.py --config-file configs/shapes/mask_rcnn_r18_cpu.py

The quickstart recipe, ``mask_rcnn_cpu.py``, trains a narrower network for more iterations in the same time and
reaches a clearly higher AP; this config is kept to compare against it.
"""

from fvcore.common.param_scheduler import CosineParamScheduler

from libdet.config import LazyCall as L
from libdet.solver import WarmupParamScheduler

from ..common.data.shapes import dataloader
from ..common.models.mask_rcnn_fpn import model
from ..common.optim import AdamW as optimizer
from ..common.train import train

# Model: R18-FPN, 3 classes, sized for 224-256 px images with objects of about 12-140 px
model.backbone.bottom_up.stem.norm = "BN"
model.backbone.bottom_up.stages.update(depth=18, norm="BN")
model.backbone.bottom_up.stages.pop("stride_in_1x1")  # BasicBlock has a single 3x3 conv per branch
model.backbone.bottom_up.freeze_at = 0
model.backbone.out_channels = 64
model.pixel_std = [57.375, 57.120, 58.395]

model.proposal_generator.anchor_generator.sizes = [[16], [32], [64], [128], [256]]
model.proposal_generator.batch_size_per_image = 128
model.proposal_generator.pre_nms_topk = (1000, 500)
model.proposal_generator.post_nms_topk = (500, 200)

model.roi_heads.num_classes = 3
model.roi_heads.batch_size_per_image = 128
model.roi_heads.box_head.fc_dims = [256, 256]
model.roi_heads.box_predictor.input_shape.channels = "${...box_head.fc_dims[1]}"
model.roi_heads.mask_head.conv_dims = [64, 64]

# Optimization: AdamW, 1e-3, warmup then cosine decay to 5%
optimizer.lr = 1e-3
optimizer.weight_decay = 0.05
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.05),
    warmup_length=0.05,
    warmup_factor=0.01,
)

train.output_dir = "./output/shapes_mask_rcnn_r18_cpu"
train.max_iter = 650  # about 0.9 s per iteration on 2 idle cores: about 10 minutes
train.eval_period = 0  # evaluate once, after training
train.checkpointer.period = 325
train.checkpointer.max_to_keep = 2
train.log_period = 50
train.seed = 0
train.device = "auto"

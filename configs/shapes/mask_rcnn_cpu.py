"""The CPU quickstart: Mask R-CNN trained from scratch on the built-in synthetic shapes dataset in about 10 minutes
on 2 CPU cores (``bash tools/quickstart.sh``, or directly)::

    python tools/lazyconfig_train_net.py --config-file configs/shapes/mask_rcnn_cpu.py

A recipe made for CPU training, compared with the standard from-scratch ResNet-18-FPN Mask R-CNN of
``mask_rcnn_r18_cpu.py`` (the baseline):

* a half-width ResNet-18 (stages of 32-64-128-256 channels, trainable BatchNorm, no pretrained weights) and a
  64-channel FPN: about a quarter of the backbone FLOPs, so about twice as many iterations fit in the budget;
* images at their native 224-256 px, anchors from 16 px (half of the objects are under 32x32 px);
* fewer proposals and ROI samples than the COCO defaults (images hold 1-6 objects), small box and mask heads;
* AdamW with a short warmup and cosine decay, 4 images per iteration, 1400 iterations;
* bfloat16 autocast on CPUs that compute bf16 natively (AVX512-BF16 or AMX, e.g. AMD Zen 4 and later, Intel Xeon
  Sapphire Rapids and later): about 1.45x faster iterations. Elsewhere training stays in float32 and takes about
  1.45x longer (``train.max_iter=1000`` keeps the 10 minutes at a lower AP).

``train.device="auto"`` uses a GPU when there is one (in float32).
"""

import torch
from fvcore.common.param_scheduler import CosineParamScheduler

from libdet.config import LazyCall as L
from libdet.solver import WarmupParamScheduler
from libdet.utils.env import cpu_has_native_bf16

from ..common.data.shapes import dataloader
from ..common.models.mask_rcnn_fpn import model
from ..common.optim import AdamW as optimizer
from ..common.train import train

# Model: half-width ResNet-18 + FPN, 3 classes
model.backbone.bottom_up.stem.update(out_channels=32, norm="BN")
model.backbone.bottom_up.stages.update(depth=18, norm="BN", stem_out_channels=32, res2_out_channels=32)
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

# Optimization: AdamW, warmup then cosine decay
optimizer.lr = 2e-3
optimizer.weight_decay = 0.05
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.02),
    warmup_length=0.05,
    warmup_factor=0.01,
)

dataloader.train.num_workers = 1  # one worker keeps up with ~8 images/s; the other core trains

train.output_dir = "./output/shapes_mask_rcnn_cpu"
train.max_iter = 1400  # about 0.4 s per iteration on 2 cores with bf16: about 9.5 minutes
train.amp.update(enabled=cpu_has_native_bf16() and not torch.cuda.is_available(), precision="bfloat16")
train.eval_period = 0  # evaluate once, after training
train.checkpointer.period = 500
train.checkpointer.max_to_keep = 2
train.log_period = 50
train.seed = 0
train.device = "auto"

# COCO-format results of the final evaluation, for tools/visualize_json_results.py
dataloader.evaluator.output_dir = "${train.output_dir}/inference"

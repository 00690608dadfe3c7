"""A small ViTDet (plain ViT + simple feature pyramid) Mask R-CNN trained from scratch on the built-in synthetic
shapes dataset on CPU::

    python tools/lazyconfig_train_net.py --config-file configs/shapes/mask_rcnn_vitdet_cpu.py

The architecture of ``configs/COCO/mask_rcnn_vitdet_b_100ep.py`` at CPU scale, next to the ResNet quickstart
(``mask_rcnn_cpu.py``, same data, optimizer, schedule and heads):

* ViT with 16 px patches, 192 channels, 6 blocks of 3 heads; 8 x 8 windows except blocks 2 and 5 (global
  attention), decomposed relative position biases, absolute position embeddings for a 16 x 16 grid (256 px, no
  class token) interpolated to each input;
* residual conv blocks after blocks 1, 3 and 5: with no pre-training, their 3x3 convs give the plain ViT the
  locality that MAE pre-training gives it on COCO;
* a 64-channel simple feature pyramid (``p2``-``p6`` from the stride-16 map) with LayerNorm, two convs in the RPN
  head, LayerNorm in the mask head;
* AdamW lr 1e-3 with a short warmup and cosine decay, 4 images per iteration; no layer-wise lr decay, which
  protects pre-trained layers and would only slow a model trained from scratch;
* bfloat16 autocast on CPUs that compute bf16 natively, as the ResNet quickstart.
"""

import torch
from fvcore.common.param_scheduler import CosineParamScheduler

from libdet.config import LazyCall as L
from libdet.solver import WarmupParamScheduler
from libdet.utils.env import cpu_has_native_bf16

from ..common.data.shapes import dataloader
from ..common.models.mask_rcnn_vitdet import model
from ..common.optim import AdamW as optimizer
from ..common.train import train

# Model: ViT-Tiny-like backbone + simple feature pyramid, 3 classes, BGR input as the shapes loader
model.pixel_mean = [103.530, 116.280, 123.675]
model.pixel_std = [57.375, 57.120, 58.395]
model.input_format = "BGR"
model.backbone.net.update(
    img_size=256,
    embed_dim=192,
    depth=6,
    num_heads=3,
    drop_path_rate=0.0,
    window_size=8,
    pretrain_img_size=256,
    pretrain_use_cls_token=False,
)
model.backbone.net.window_block_indexes = [0, 1, 3, 4]  # 2 and 5 attend globally
model.backbone.net.residual_block_indexes = [1, 3, 5]
model.backbone.out_channels = 64
model.backbone.square_pad = 0  # pad to a multiple of 64 only: shapes images are 192-352 px

model.proposal_generator.anchor_generator.sizes = [[16], [32], [64], [128], [256]]
model.proposal_generator.batch_size_per_image = 128
model.proposal_generator.pre_nms_topk = (1000, 500)
model.proposal_generator.post_nms_topk = (500, 200)

model.roi_heads.num_classes = 3
model.roi_heads.batch_size_per_image = 128
model.roi_heads.box_head.conv_dims = []  # the 2fc head of the ResNet quickstart: 4 convs cost too much on CPU
model.roi_heads.box_head.fc_dims = [256, 256]
model.roi_heads.box_predictor.input_shape.channels = "${...box_head.fc_dims[1]}"
model.roi_heads.mask_head.conv_dims = [64, 64]

# Optimization: AdamW, warmup then cosine decay
optimizer.lr = 1e-3
optimizer.weight_decay = 0.05
optimizer.params.overrides = {"pos_embed": {"weight_decay": 0.0}}
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.02),
    warmup_length=0.05,
    warmup_factor=0.01,
)

dataloader.train.num_workers = 1

train.output_dir = "./output/shapes_mask_rcnn_vitdet_cpu"
train.max_iter = 1400
train.amp.update(enabled=cpu_has_native_bf16() and not torch.cuda.is_available(), precision="bfloat16")
train.eval_period = 0  # evaluate once, after training
train.checkpointer.period = 500
train.checkpointer.max_to_keep = 2
train.log_period = 50
train.seed = 0
train.device = "auto"

dataloader.evaluator.output_dir = "${train.output_dir}/inference"

"""A small DETR for the built-in synthetic shapes dataset (3 classes, 192-256 px images), trained from scratch on
CPU: ResNet-18 (trainable BatchNorm) up to res4 (stride 16), a 3+3-layer transformer of width 128, 20 queries;
AdamW 2e-4 everywhere (nothing is pretrained, so the backbone gets the full lr), cosine decay, clipping 0.1::

    python tools/lazyconfig_train_net.py --config-file projects/DETR/configs/detr_r18_shapes_cpu.py

900 iterations of 4 images (about 0.3 s each on 2 idle cores); box AP 0.01 after them: see the README.
"""

from fvcore.common.param_scheduler import CosineParamScheduler

import libdet.data.transforms as T
from libdet.config import LazyCall as L
from libdet.modeling.backbone import ResNet
from libdet.solver import WarmupParamScheduler

from ....configs.common.data.shapes import dataloader
from .detr_r50 import model, optimizer, train

model.backbone.stem.norm = "BN"
model.backbone.stages = L(ResNet.make_default_stages)(depth=18, norm="BN")
model.backbone.out_features = ["res4"]
model.backbone.freeze_at = 0
model.in_feature = "res4"
model.position_embedding.num_pos_feats = 64
model.transformer.update(d_model=128, nhead=8, num_encoder_layers=3, num_decoder_layers=3, dim_feedforward=512)
model.transformer.dropout = 0.0  # a short schedule on easy data: dropout only slows it down
model.num_classes = 3
model.num_queries = 20

dataloader.train.mapper.image_format = "RGB"
dataloader.train.mapper.use_instance_mask = False
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(T.ResizeShortestEdge)(short_edge_length=(192, 224, 256), sample_style="choice", max_size=352),
]
dataloader.train.total_batch_size = 4

optimizer.lr = 2e-4
optimizer.params.backbone_lr_multiplier = 1.0
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.05),
    warmup_length=0.02,
    warmup_factor=0.01,
)

train.output_dir = "./output/shapes_detr_r18_cpu"
train.max_iter = 900
train.eval_period = 0
train.checkpointer.period = 300
train.checkpointer.max_to_keep = 2
train.log_period = 50
train.seed = 0
train.device = "auto"

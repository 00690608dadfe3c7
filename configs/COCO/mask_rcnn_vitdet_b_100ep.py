"""Mask R-CNN ViTDet-B, 100 epochs on COCO with large-scale jitter (detectron2's
``projects/ViTDet/configs/COCO/mask_rcnn_vitdet_b_100ep.py``: 51.6 box AP in the model zoo).

64 images per iteration, 184375 iterations (100 epochs of 118k images), AdamW lr 1e-4 with weight decay 0.1
(none on position embeddings), layer-wise lr decay 0.7 over the 12 ViT blocks, lr / 10 at 88.9% and 96.3% of
training after a 250-iteration warmup. The ViT starts from MAE pre-training (224 px, class token; position
embeddings are interpolated to the detection input at every forward pass).
"""

from fvcore.common.param_scheduler import MultiStepParamScheduler

from libdet.config import LazyCall as L
from libdet.modeling.backbone.vit import vit_lr_decay
from libdet.solver import WarmupParamScheduler

from ..common.data.coco_loader_lsj import dataloader
from ..common.models.mask_rcnn_vitdet import model
from ..common.optim import AdamW as optimizer
from ..common.train import train

train.amp.enabled = True
train.ddp.fp16_compression = True
train.init_checkpoint = "detectron2://ImageNetPretrained/MAE/mae_pretrain_vit_base.pth?matching_heuristics=True"

# 100 ep = 184375 iters * 64 images/iter / 118000 images/ep
train.max_iter = 184375
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01],
        milestones=[163889, 177546],
        num_updates="${train.max_iter}",
    ),
    warmup_length=250 / 184375,
    warmup_factor=0.001,
)

optimizer.params.lr_factor_func = L(vit_lr_decay)(lr_decay_rate=0.7, num_layers=12)
optimizer.params.overrides = {"pos_embed": {"weight_decay": 0.0}}

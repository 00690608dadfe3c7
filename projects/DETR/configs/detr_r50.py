"""DETR R50 on COCO (the paper's 42.0 box AP model): ResNet-50 (FrozenBN, stem and res2 frozen), sine positional
encoding, 6+6 post-norm transformer (d 256, 8 heads, FFN 2048, dropout 0.1), 100 queries; AdamW 1e-4 (backbone
1e-5), weight decay 1e-4, gradients clipped to norm 0.1; 500 epochs at 64 images per batch, lr / 10 after 400.

    python tools/lazyconfig_train_net.py --config-file projects/DETR/configs/detr_r50.py --num-gpus 8
"""

from ._project import PROJECT_ROOT  # noqa: F401  (puts the `detr` package on sys.path: keep it first)

# isort: split

import torch
from detr import DETR, HungarianMatcher, PositionEmbeddingSine, SetCriterion, Transformer
from detr.backbone import make_detr_resnet_stages
from detr.optim import detr_optimizer_params
from fvcore.common.param_scheduler import MultiStepParamScheduler
from omegaconf import OmegaConf

import libdet.data.transforms as T
from libdet.config import LazyCall as L
from libdet.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from libdet.engine.optimizer_step import ClipGradNorm
from libdet.evaluation import COCOEvaluator
from libdet.modeling.backbone import BasicStem, ResNet

from ....configs.common.train import train

model = L(DETR)(
    backbone=L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
        # torchvision's ResNet (the official weights): stride in the 3x3 conv; dc5=True for the DC5 models
        stages=L(make_detr_resnet_stages)(depth=50, dc5=False, stride_in_1x1=False, norm="FrozenBN"),
        out_features=["res5"],
        freeze_at=2,  # stem and res2 frozen, as the official training
    ),
    in_feature="res5",
    position_embedding=L(PositionEmbeddingSine)(num_pos_feats=128, normalize=True),  # 2 * 128 = d_model
    transformer=L(Transformer)(
        d_model=256, nhead=8, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=2048, dropout=0.1
    ),
    num_classes=80,
    num_queries=100,
    criterion=L(SetCriterion)(
        num_classes="${..num_classes}",
        matcher=L(HungarianMatcher)(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0),
        eos_coef=0.1,
        loss_ce=1.0,
        loss_bbox=5.0,
        loss_giou=2.0,
    ),
    aux_loss=True,
    pixel_mean=[123.675, 116.280, 103.530],
    pixel_std=[58.395, 57.120, 57.375],
    input_format="RGB",
)

# Data: the paper's augmentations. Flip; then either resize the shorter side to 480-800 (step 32, longer side
# at most 1333) or, with probability 0.5, first resize to 400/500/600, crop a random 384-600 px window, then resize.
_MULTI_SCALE = list(range(480, 801, 32))
dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_train"),
    mapper=L(DatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.RandomFlip)(horizontal=True),
            L(T.RandomApply)(
                tfm_or_aug=L(T.AugmentationList)(
                    augs=[
                        L(T.ResizeShortestEdge)(short_edge_length=[400, 500, 600], sample_style="choice"),
                        L(T.RandomCrop)(crop_type="absolute_range", crop_size=(384, 600)),
                    ]
                ),
                prob=0.5,
            ),
            L(T.ResizeShortestEdge)(short_edge_length=_MULTI_SCALE, max_size=1333, sample_style="choice"),
        ],
        image_format="RGB",
        use_instance_mask=False,
    ),
    total_batch_size=64,
    num_workers=4,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333)],
        image_format="RGB",
    ),
    num_workers=4,
)
dataloader.evaluator = L(COCOEvaluator)(dataset_name="${..test.dataset.names}")

optimizer = L(torch.optim.AdamW)(
    params=L(detr_optimizer_params)(base_lr="${..lr}", weight_decay="${..weight_decay}", backbone_lr_multiplier=0.1),
    lr=1e-4,
    weight_decay=1e-4,
)

# 118287 images / 64 per batch = 1849 iterations per epoch
_EPOCH = 1849
lr_multiplier = L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[400 * _EPOCH], num_updates=500 * _EPOCH)

train.max_iter = 500 * _EPOCH
train.output_dir = "./output/detr_r50"
train.checkpointer.period = 10 * _EPOCH
train.eval_period = 50 * _EPOCH
# one gradient norm over all parameters, clipped to 0.1 (the official training's max_norm)
train.grad_transforms = [L(ClipGradNorm)(max_norm=0.1)]

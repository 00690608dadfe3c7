"""detectron2's ``new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py``: Mask R-CNN R50-FPN trained from scratch with
SyncBN everywhere, large-scale jitter (resize by 0.1-2.0, 1024 px crops), batch 64 for 100 epochs
(184375 iterations), a 2-conv RPN head and a 4-conv-1-fc box head."""

from fvcore.common.param_scheduler import MultiStepParamScheduler

import libdet.data.transforms as T
from libdet.config import LazyCall as L
from libdet.model_zoo import get_config
from libdet.solver import WarmupParamScheduler

dataloader = get_config("common/data/coco.py").dataloader
model = get_config("common/models/mask_rcnn_fpn.py").model
optimizer = get_config("common/optim.py").SGD
train = get_config("common/train.py").train

# from scratch, mixed precision
train.init_checkpoint = ""
train.amp.enabled = True
train.ddp.fp16_compression = True
model.backbone.bottom_up.freeze_at = 0

model.backbone.bottom_up.stem.norm = "SyncBN"
model.backbone.bottom_up.stages.norm = "SyncBN"
model.backbone.norm = "SyncBN"
# the heads may see no ROI on a process: NaiveSyncBatchNorm weighted by batch size allows empty inputs
model.roi_heads.box_head.conv_norm = "naiveSyncBN_N"
model.roi_heads.mask_head.conv_norm = "naiveSyncBN_N"

# two 3x3 convs in the RPN head
model.proposal_generator.head.conv_dims = [-1, -1]
# 4conv1fc box head
model.roi_heads.box_head.conv_dims = [256, 256, 256, 256]
model.roi_heads.box_head.fc_dims = [1024]

# large-scale jitter: resize to 0.1-2.0 of 1024 px, crop or pad to 1024 x 1024
image_size = 1024
dataloader.train.mapper.augmentations = [
    L(T.ResizeScale)(min_scale=0.1, max_scale=2.0, target_height=image_size, target_width=image_size),
    L(T.FixedSizeCrop)(crop_size=(image_size, image_size)),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.mapper.recompute_boxes = True  # the crop cuts boxes
dataloader.train.total_batch_size = 64

# 100 epochs = 184375 iterations x 64 images / 118000 images per epoch
train.max_iter = 184375
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01], milestones=[163889, 177546], num_updates=train.max_iter
    ),
    warmup_length=500 / train.max_iter,
    warmup_factor=0.067,
)

optimizer.lr = 0.1
optimizer.weight_decay = 4e-5

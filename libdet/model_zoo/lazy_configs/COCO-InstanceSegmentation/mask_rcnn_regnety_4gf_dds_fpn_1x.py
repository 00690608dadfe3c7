"""detectron2's ``COCO-InstanceSegmentation/mask_rcnn_regnety_4gf_dds_fpn_1x.py``: Mask R-CNN FPN with the
RegNetY-4GF backbone of the DDS paper (ImageNet weights from pycls), 1x schedule."""

from libdet.config import LazyCall as L
from libdet.model_zoo import get_config
from libdet.modeling.backbone import RegNet
from libdet.modeling.backbone.regnet import ResBottleneckBlock, SimpleStem

lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_1x
dataloader = get_config("common/data/coco.py").dataloader
model = get_config("common/models/mask_rcnn_fpn.py").model
optimizer = get_config("common/optim.py").SGD
train = get_config("common/train.py").train

model.backbone.bottom_up = L(RegNet)(
    stem_class=SimpleStem,
    stem_width=32,
    block_class=ResBottleneckBlock,
    depth=22,
    w_a=31.41,
    w_0=96,
    w_m=2.24,
    group_width=64,
    se_ratio=0.25,
    freeze_at=2,
    norm="FrozenBN",
    out_features=["s1", "s2", "s3", "s4"],
)
model.pixel_std = [57.375, 57.120, 58.395]

optimizer.weight_decay = 5e-5
train.init_checkpoint = "https://dl.fbaipublicfiles.com/pycls/dds_baselines/160906838/RegNetY-4.0GF_dds_8gpu.pyth"
train.cudnn_benchmark = True  # RegNets gain from cudnn's algorithm search

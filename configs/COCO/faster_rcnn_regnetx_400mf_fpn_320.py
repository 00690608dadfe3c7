"""Faster R-CNN on a RegNetX-400MF FPN at 320 px (COCO 2017, 3x schedule): ``faster_rcnn_mnv3_fpn_320.py`` with
detectron2's RegNet (pycls parameter names) instead of MobileNetV3.

RegNetX-400MF ("Designing Network Design Spaces", https://arxiv.org/abs/2003.13678): stages of 32-64-160-384
channels (1, 2, 7, 12 blocks), group width 16, no squeeze-excitation; about 0.4 GFLOPs at 224 px. The FPN sits on
``s2``-``s4`` (strides 8-32) as in the MobileNetV3 configs. The backbone starts from pycls's ImageNet weights
(BGR input, as detectron2's RegNet configs), with frozen BatchNorm and a frozen stem and first stage.
"""

from libdet.config import LazyCall as L
from libdet.config import locate
from libdet.modeling.backbone import RegNet

from .faster_rcnn_mnv3_fpn_320 import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up = L(RegNet)(
    # classes given by import path (located when the model is built), so that the config saves as YAML
    stem_class=L(locate)(path="libdet.modeling.backbone.regnet.SimpleStem"),
    stem_width=32,
    block_class=L(locate)(path="libdet.modeling.backbone.regnet.ResBottleneckBlock"),
    depth=22,
    w_a=24.48,
    w_0=24,
    w_m=2.54,
    group_width=16,
    norm="FrozenBN",
    freeze_at=2,
    out_features=["s2", "s3", "s4"],
)
# pycls's ImageNet RegNets take BGR images normalised by ImageNet's mean and std (detectron2's RegNet configs)
model.input_format = "BGR"
model.pixel_mean = [103.530, 116.280, 123.675]
model.pixel_std = [57.375, 57.120, 58.395]
dataloader.train.mapper.image_format = "BGR"

train.init_checkpoint = "https://dl.fbaipublicfiles.com/pycls/dds_baselines/160905967/RegNetX-400MF_dds_8gpu.pyth"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]

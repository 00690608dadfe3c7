"""detectron2's ``new_baselines/mask_rcnn_regnety_4gf_dds_FPN_100ep_LSJ.py``: the 100-epoch LSJ recipe with a
RegNetY-4GF backbone (squeeze-excitation, the DDS paper's), SyncBN."""

from libdet.config import LazyCall as L
from libdet.modeling.backbone import RegNet
from libdet.modeling.backbone.regnet import ResBottleneckBlock, SimpleStem

from .mask_rcnn_R_50_FPN_100ep_LSJ import dataloader, lr_multiplier, model, optimizer, train

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
    norm="SyncBN",
    out_features=["s1", "s2", "s3", "s4"],
)
model.pixel_std = [57.375, 57.120, 58.395]
train.cudnn_benchmark = True  # RegNets gain from cudnn's algorithm search

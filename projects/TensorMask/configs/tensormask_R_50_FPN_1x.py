"""TensorMask R50-FPN, 1x schedule on COCO 2017 (detectron2's ``projects/TensorMask/configs/tensormask_R_50_FPN_1x``:
37.6 box AP, 32.4 mask AP).

A ResNet-50 FPN with p2-p7 and average fusion; two anchors per location (44 and 60 px at p2, doubling per
level), aligned masks and the tensor bipyramid; focal loss* (gamma 3, alpha 0.3). 16 images per iteration,
SGD lr 0.02, 90k iterations with the lr / 10 at 60k and 80k; the backbone starts from the MSRA ImageNet
ResNet-50 (caffe2 weights, BGR input). Training images: shorter side 800 (detectron2's default input).

    python tools/lazyconfig_train_net.py --config-file projects/TensorMask/configs/tensormask_R_50_FPN_1x.py --num-gpus 8

detectron2's checkpoint (``model_final_8f325c.pkl``) loads as it is with ``train.init_checkpoint=<path>``.
"""

from ._project import PROJECT_ROOT  # noqa: F401  (puts the `tensormask` package on sys.path: keep it first)

# isort: split

from tensormask import TensorMask, TensorMaskAnchorGenerator, TensorMaskHead

import libdet.data.transforms as T
from libdet.config import LazyCall as L
from libdet.layers import ShapeSpec
from libdet.modeling.backbone import FPN, BasicStem, LastLevelP6P7, ResNet
from libdet.modeling.box_regression import Box2BoxTransform

from ....configs.common.data.coco import dataloader
from ....configs.common.optim import SGD as optimizer
from ....configs.common.train import train

_FEATURE = L(ShapeSpec)(channels="${....backbone.out_channels}")

model = L(TensorMask)(
    backbone=L(FPN)(
        bottom_up=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
            stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=True, norm="FrozenBN"),
            out_features=["res2", "res3", "res4", "res5"],
            freeze_at=2,
        ),
        in_features="${.bottom_up.out_features}",
        out_channels=256,
        fuse_type="avg",
        top_block=L(LastLevelP6P7)(in_channels=2048, out_channels="${..out_channels}"),
    ),
    head=L(TensorMaskHead)(
        # One shape per level of head_in_features (p2-p7).
        input_shape=[_FEATURE, _FEATURE, _FEATURE, _FEATURE, _FEATURE, _FEATURE],
        num_classes="${..num_classes}",
        num_anchors=2,
        mask_sizes=[11, 15],  # the p2 anchor sizes (44, 60) over the p2 stride (4)
        num_convs=4,
        cls_channels=256,
        bbox_channels=128,
        mask_channels=128,
        aligned_on=True,
        bipyramid_on=True,
    ),
    anchor_generator=L(TensorMaskAnchorGenerator)(
        sizes=[[44, 60], [88, 120], [176, 240], [352, 480], [704, 960], [1408, 1920]],
        aspect_ratios=[1.0],
        strides=[4, 8, 16, 32, 64, 128],
        offset=0.0,
    ),
    box2box_transform=L(Box2BoxTransform)(weights=[1.5, 1.5, 0.75, 0.75]),
    num_classes=80,
    head_in_features=["p2", "p3", "p4", "p5", "p6", "p7"],
    focal_loss_alpha=0.3,
    focal_loss_gamma=3.0,
    score_threshold=0.05,
    topk_candidates=6000,
    nms_threshold=0.5,
    max_detections_per_image=100,
    mask_loss_weight=2.0,
    mask_pos_weight=1.5,
    pixel_mean=[103.530, 116.280, 123.675],
    pixel_std=[1.0, 1.0, 1.0],
)

# detectron2's default training input: shorter side 800 (max 1333), horizontal flip.
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.mapper.image_format = "BGR"

optimizer.lr = 0.02
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.output_dir = "./output/tensormask_R_50_FPN_1x"

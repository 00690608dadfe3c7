"""RetinaNet with a ResNet-50 FPN (P3-P7) backbone: detectron2's ``configs/common/models/retinanet.py``.

State-dict keys and shapes equal detectron2's, so its model-zoo checkpoints load unchanged.
"""

from libdet.config import LazyCall as L
from libdet.layers import ShapeSpec
from libdet.modeling.anchor_generator import DefaultAnchorGenerator
from libdet.modeling.backbone import FPN, BasicStem, LastLevelP6P7, ResNet
from libdet.modeling.box_regression import Box2BoxTransform
from libdet.modeling.matcher import Matcher
from libdet.modeling.meta_arch import RetinaNet, RetinaNetHead

_FEATURE = L(ShapeSpec)(channels="${....backbone.out_channels}")

model = L(RetinaNet)(
    backbone=L(FPN)(
        bottom_up=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
            stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=True, norm="FrozenBN"),
            out_features=["res3", "res4", "res5"],
            freeze_at=2,
        ),
        in_features="${.bottom_up.out_features}",
        out_channels=256,
        top_block=L(LastLevelP6P7)(in_channels=2048, out_channels="${..out_channels}"),
    ),
    head=L(RetinaNetHead)(
        # One shape per level of head_in_features (p3-p7).
        input_shape=[_FEATURE, _FEATURE, _FEATURE, _FEATURE, _FEATURE],
        num_classes="${..num_classes}",
        conv_dims=[256, 256, 256, 256],
        prior_prob=0.01,
        num_anchors=9,
    ),
    anchor_generator=L(DefaultAnchorGenerator)(
        # Three scales per octave: size * 2**(0/3, 1/3, 2/3).
        sizes=[
            [32, 32 * 2 ** (1.0 / 3), 32 * 2 ** (2.0 / 3)],
            [64, 64 * 2 ** (1.0 / 3), 64 * 2 ** (2.0 / 3)],
            [128, 128 * 2 ** (1.0 / 3), 128 * 2 ** (2.0 / 3)],
            [256, 256 * 2 ** (1.0 / 3), 256 * 2 ** (2.0 / 3)],
            [512, 512 * 2 ** (1.0 / 3), 512 * 2 ** (2.0 / 3)],
        ],
        aspect_ratios=[0.5, 1.0, 2.0],
        strides=[8, 16, 32, 64, 128],
        offset=0.0,
    ),
    box2box_transform=L(Box2BoxTransform)(weights=[1.0, 1.0, 1.0, 1.0]),
    anchor_matcher=L(Matcher)(thresholds=[0.4, 0.5], labels=[0, -1, 1], allow_low_quality_matches=True),
    num_classes=80,
    head_in_features=["p3", "p4", "p5", "p6", "p7"],
    focal_loss_alpha=0.25,
    focal_loss_gamma=2.0,
    # detectron2's lazy config leaves RetinaNet's smooth_l1_beta at its signature default, 0.0.
    smooth_l1_beta=0.0,
    pixel_mean=[103.530, 116.280, 123.675],
    pixel_std=[1.0, 1.0, 1.0],
    input_format="BGR",
)

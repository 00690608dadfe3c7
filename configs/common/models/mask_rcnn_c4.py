"""Mask R-CNN with a ResNet-50 C4 backbone: detectron2's ``configs/common/models/mask_rcnn_c4.py``.

The backbone stops at ``res4``; the ROI heads run ``res5`` on pooled ``res4`` features and share it
between the box predictor and the mask head. State-dict keys and shapes equal detectron2's.
"""

from libdet.config import LazyCall as L
from libdet.layers import ShapeSpec
from libdet.modeling.anchor_generator import DefaultAnchorGenerator
from libdet.modeling.backbone import BasicStem, BottleneckBlock, ResNet
from libdet.modeling.box_regression import Box2BoxTransform
from libdet.modeling.matcher import Matcher
from libdet.modeling.meta_arch import GeneralizedRCNN
from libdet.modeling.poolers import ROIPooler
from libdet.modeling.proposal_generator import RPN, StandardRPNHead
from libdet.modeling.roi_heads import FastRCNNOutputLayers, MaskRCNNConvUpsampleHead, Res5ROIHeads

model = L(GeneralizedRCNN)(
    backbone=L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
        stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=True, norm="FrozenBN"),
        out_features=["res4"],
        freeze_at=2,
    ),
    proposal_generator=L(RPN)(
        in_features=["res4"],
        head=L(StandardRPNHead)(in_channels=1024, num_anchors=15),  # res4 channels; 5 sizes x 3 ratios
        anchor_generator=L(DefaultAnchorGenerator)(
            sizes=[[32, 64, 128, 256, 512]],
            aspect_ratios=[0.5, 1.0, 2.0],
            strides=[16],
            offset=0.0,
        ),
        anchor_matcher=L(Matcher)(thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True),
        box2box_transform=L(Box2BoxTransform)(weights=[1.0, 1.0, 1.0, 1.0]),
        batch_size_per_image=256,
        positive_fraction=0.5,
        pre_nms_topk=(12000, 6000),
        post_nms_topk=(2000, 1000),
        nms_thresh=0.7,
    ),
    roi_heads=L(Res5ROIHeads)(
        num_classes=80,
        batch_size_per_image=512,
        positive_fraction=0.25,
        proposal_matcher=L(Matcher)(thresholds=[0.5], labels=[0, 1], allow_low_quality_matches=False),
        in_features=["res4"],
        pooler=L(ROIPooler)(
            output_size=14,
            scales=(1.0 / 16,),
            sampling_ratio=0,
            pooler_type="ROIAlignV2",
        ),
        # The res5 stage as its three blocks (what ResNet.make_stage would build), so the config holds no
        # class object and saves as YAML.
        res5=[
            L(BottleneckBlock)(
                in_channels=1024,
                out_channels=2048,
                bottleneck_channels=512,
                stride=2,
                norm="FrozenBN",
                stride_in_1x1=True,
            ),
            L(BottleneckBlock)(
                in_channels=2048,
                out_channels=2048,
                bottleneck_channels=512,
                stride=1,
                norm="FrozenBN",
                stride_in_1x1=True,
            ),
            L(BottleneckBlock)(
                in_channels=2048,
                out_channels=2048,
                bottleneck_channels=512,
                stride=1,
                norm="FrozenBN",
                stride_in_1x1=True,
            ),
        ],
        box_predictor=L(FastRCNNOutputLayers)(
            input_shape=L(ShapeSpec)(channels="${...res5.0.out_channels}", height=1, width=1),
            test_score_thresh=0.05,
            box2box_transform=L(Box2BoxTransform)(weights=(10, 10, 5, 5)),
            num_classes="${..num_classes}",
        ),
        mask_head=L(MaskRCNNConvUpsampleHead)(
            input_shape=L(ShapeSpec)(
                channels="${...res5.0.out_channels}",
                width="${...pooler.output_size}",
                height="${...pooler.output_size}",
            ),
            num_classes="${..num_classes}",
            conv_dims=[256],
        ),
    ),
    pixel_mean=[103.530, 116.280, 123.675],
    pixel_std=[1.0, 1.0, 1.0],
    input_format="BGR",
)

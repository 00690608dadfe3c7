"""Rotated Faster R-CNN with a ResNet-50 FPN backbone: RRPN proposals and RROIHeads on rotated boxes
``(cx, cy, w, h, angle)`` (detectron2's ``RRPN`` + ``RROIHeads`` defaults).

The backbone is the one of ``mask_rcnn_fpn.py``. The RPN has 3 aspect ratios x 7 angles = 21 rotated anchors
per location and predicts 5 deltas per anchor; the box predictor regresses ``K * 5`` rotated deltas, weighted
``(10, 10, 5, 5, 1)``. Ground truth ``gt_boxes`` must be :class:`RotatedBoxes`; there is no mask branch.
"""

from libdet.config import LazyCall as L
from libdet.layers import ShapeSpec
from libdet.modeling.anchor_generator import RotatedAnchorGenerator
from libdet.modeling.box_regression import Box2BoxTransformRotated
from libdet.modeling.matcher import Matcher
from libdet.modeling.poolers import ROIPooler
from libdet.modeling.proposal_generator.rpn import StandardRPNHead
from libdet.modeling.proposal_generator.rrpn import RRPN
from libdet.modeling.roi_heads.box_head import FastRCNNConvFCHead
from libdet.modeling.roi_heads.rotated_fast_rcnn import RotatedFastRCNNOutputLayers, RROIHeads

from .mask_rcnn_fpn import model

model.proposal_generator = L(RRPN)(
    in_features=["p2", "p3", "p4", "p5", "p6"],
    head=L(StandardRPNHead)(in_channels="${...backbone.out_channels}", num_anchors=21, box_dim=5),
    anchor_generator=L(RotatedAnchorGenerator)(
        sizes=[[32], [64], [128], [256], [512]],
        aspect_ratios=[0.5, 1.0, 2.0],
        angles=[-90, -60, -30, 0, 30, 60, 90],
        strides=[4, 8, 16, 32, 64],
        offset=0.0,
    ),
    anchor_matcher=L(Matcher)(thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True),
    box2box_transform=L(Box2BoxTransformRotated)(weights=[1.0, 1.0, 1.0, 1.0, 1.0]),
    batch_size_per_image=256,
    positive_fraction=0.5,
    pre_nms_topk=(2000, 1000),
    post_nms_topk=(1000, 1000),
    nms_thresh=0.7,
)

model.roi_heads = L(RROIHeads)(
    num_classes=80,
    batch_size_per_image=512,
    positive_fraction=0.25,
    proposal_matcher=L(Matcher)(thresholds=[0.5], labels=[0, 1], allow_low_quality_matches=False),
    box_in_features=["p2", "p3", "p4", "p5"],
    box_pooler=L(ROIPooler)(
        output_size=7,
        scales=(1.0 / 4, 1.0 / 8, 1.0 / 16, 1.0 / 32),
        sampling_ratio=0,
        pooler_type="ROIAlignRotated",
    ),
    box_head=L(FastRCNNConvFCHead)(
        input_shape=L(ShapeSpec)(
            channels="${....backbone.out_channels}",
            height="${...box_pooler.output_size}",
            width="${...box_pooler.output_size}",
        ),
        conv_dims=[],
        fc_dims=[1024, 1024],
    ),
    box_predictor=L(RotatedFastRCNNOutputLayers)(
        input_shape=L(ShapeSpec)(channels=1024),  # = box_head.fc_dims[-1]
        test_score_thresh=0.05,
        box2box_transform=L(Box2BoxTransformRotated)(weights=(10, 10, 5, 5, 1)),
        num_classes="${..num_classes}",
    ),
)

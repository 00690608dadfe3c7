"""Cascade Mask R-CNN with a ResNet-50 FPN backbone: detectron2's ``configs/common/models/cascade_rcnn.py``.

The Mask R-CNN FPN model whose box branch is three cascade stages (:class:`CascadeROIHeads`) trained at
IoU 0.5 / 0.6 / 0.7 with box-delta weights (10, 10, 5, 5) / (20, 20, 10, 10) / (30, 30, 15, 15) and
class-agnostic box regression. Instantiating ``model`` gives the state-dict keys and shapes of detectron2's
model.
"""

from libdet.config import LazyCall as L
from libdet.layers import ShapeSpec
from libdet.modeling.box_regression import Box2BoxTransform
from libdet.modeling.matcher import Matcher
from libdet.modeling.roi_heads.box_head import FastRCNNConvFCHead
from libdet.modeling.roi_heads.cascade_rcnn import CascadeROIHeads
from libdet.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers

from .mask_rcnn_fpn import model

# Arguments that Cascade R-CNN takes once per stage.
model.roi_heads.pop("box_head")
model.roi_heads.pop("box_predictor")
model.roi_heads.pop("proposal_matcher")

model.roi_heads.update(
    _target_=CascadeROIHeads,
    box_heads=[
        L(FastRCNNConvFCHead)(
            input_shape=L(ShapeSpec)(
                channels="${.....backbone.out_channels}",
                height="${....box_pooler.output_size}",
                width="${....box_pooler.output_size}",
            ),
            conv_dims=[],
            fc_dims=[1024, 1024],
        ),
        L(FastRCNNConvFCHead)(
            input_shape=L(ShapeSpec)(
                channels="${.....backbone.out_channels}",
                height="${....box_pooler.output_size}",
                width="${....box_pooler.output_size}",
            ),
            conv_dims=[],
            fc_dims=[1024, 1024],
        ),
        L(FastRCNNConvFCHead)(
            input_shape=L(ShapeSpec)(
                channels="${.....backbone.out_channels}",
                height="${....box_pooler.output_size}",
                width="${....box_pooler.output_size}",
            ),
            conv_dims=[],
            fc_dims=[1024, 1024],
        ),
    ],
    box_predictors=[
        L(FastRCNNOutputLayers)(
            input_shape=L(ShapeSpec)(channels=1024),  # = box_heads[0].fc_dims[-1]
            test_score_thresh=0.05,
            box2box_transform=L(Box2BoxTransform)(weights=(10, 10, 5, 5)),
            cls_agnostic_bbox_reg=True,
            num_classes="${...num_classes}",
        ),
        L(FastRCNNOutputLayers)(
            input_shape=L(ShapeSpec)(channels=1024),
            test_score_thresh=0.05,
            box2box_transform=L(Box2BoxTransform)(weights=(20, 20, 10, 10)),
            cls_agnostic_bbox_reg=True,
            num_classes="${...num_classes}",
        ),
        L(FastRCNNOutputLayers)(
            input_shape=L(ShapeSpec)(channels=1024),
            test_score_thresh=0.05,
            box2box_transform=L(Box2BoxTransform)(weights=(30, 30, 15, 15)),
            cls_agnostic_bbox_reg=True,
            num_classes="${...num_classes}",
        ),
    ],
    proposal_matchers=[
        L(Matcher)(thresholds=[0.5], labels=[0, 1], allow_low_quality_matches=False),
        L(Matcher)(thresholds=[0.6], labels=[0, 1], allow_low_quality_matches=False),
        L(Matcher)(thresholds=[0.7], labels=[0, 1], allow_low_quality_matches=False),
    ],
)

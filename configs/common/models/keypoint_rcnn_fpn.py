"""Keypoint R-CNN with a ResNet-50 FPN backbone: detectron2's ``configs/common/models/keypoint_rcnn_fpn.py``.

The Mask R-CNN FPN model with one class (person), no mask branch and a keypoint branch predicting the 17
COCO keypoints as 56 x 56 heatmaps, with the settings of detectron2's COCO-Keypoints model zoo. Instantiating
``model`` gives the state-dict keys and shapes of detectron2's model.
"""

from libdet.config import LazyCall as L
from libdet.layers import ShapeSpec
from libdet.modeling.poolers import ROIPooler
from libdet.modeling.roi_heads.keypoint_head import KRCNNConvDeconvUpsampleHead

from .mask_rcnn_fpn import model

model.roi_heads.pop("mask_in_features")
model.roi_heads.pop("mask_pooler")
model.roi_heads.pop("mask_head")

model.roi_heads.update(
    num_classes=1,
    keypoint_in_features=["p2", "p3", "p4", "p5"],
    keypoint_pooler=L(ROIPooler)(
        output_size=14,
        scales=(1.0 / 4, 1.0 / 8, 1.0 / 16, 1.0 / 32),
        sampling_ratio=0,
        pooler_type="ROIAlignV2",
    ),
    keypoint_head=L(KRCNNConvDeconvUpsampleHead)(
        input_shape=L(ShapeSpec)(
            channels="${....backbone.out_channels}",
            width="${...keypoint_pooler.output_size}",
            height="${...keypoint_pooler.output_size}",
        ),
        num_keypoints=17,
        conv_dims=[512, 512, 512, 512, 512, 512, 512, 512],
        loss_normalizer="visible",
    ),
)

# Detectron1 sampled 2000 proposals per batch; detectron2's value is per image, where 1000 hurts box AP.
model.proposal_generator.post_nms_topk = (1500, 1000)

# Keypoint AP degrades (box AP improves) with a plain L1 box loss.
model.roi_heads.box_predictor.smooth_l1_beta = 0.5

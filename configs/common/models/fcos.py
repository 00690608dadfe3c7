"""FCOS with a ResNet-50 FPN (P3-P7) backbone: detectron2's ``configs/common/models/fcos.py``.

RetinaNet's tree with FCOS as the target: no anchor generator / matcher / box transform (FCOS builds its
anchor points from the backbone strides and uses ``Box2BoxTransformLinear``), P6/P7 computed from P5, and a
GroupNorm head with a centerness branch. State-dict keys and shapes equal detectron2's.
"""

from libdet.modeling.meta_arch.fcos import FCOS, FCOSHead

from .retinanet import model

model._target_ = FCOS

del model.anchor_generator
del model.box2box_transform
del model.anchor_matcher
del model.input_format
del model.smooth_l1_beta

# P6 from P5 instead of C5 (Sec 2.2 of https://arxiv.org/abs/2006.09214).
model.backbone.top_block.in_feature = "p5"
model.backbone.top_block.in_channels = "${..out_channels}"

# Thresholds on the combined score sqrt(cls * centerness).
model.test_score_thresh = 0.2
model.test_nms_thresh = 0.6

model.head._target_ = FCOSHead
del model.head.num_anchors
model.head.norm = "GN"

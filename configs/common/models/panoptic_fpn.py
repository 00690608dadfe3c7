"""Panoptic FPN with a ResNet-50 FPN backbone: detectron2's ``configs/common/models/panoptic_fpn.py``.

Mask R-CNN (``mask_rcnn_fpn``) plus a semantic FPN head on P2-P5 for the 53 COCO stuff classes and one
"thing" class. State-dict keys and shapes equal detectron2's.
"""

from libdet.config import LazyCall as L
from libdet.layers import ShapeSpec
from libdet.modeling.meta_arch.panoptic_fpn import PanopticFPN
from libdet.modeling.meta_arch.semantic_seg import SemSegFPNHead

from .mask_rcnn_fpn import model

model._target_ = PanopticFPN
model.sem_seg_head = L(SemSegFPNHead)(
    input_shape={
        "p2": L(ShapeSpec)(stride=4, channels="${....backbone.out_channels}"),
        "p3": L(ShapeSpec)(stride=8, channels="${....backbone.out_channels}"),
        "p4": L(ShapeSpec)(stride=16, channels="${....backbone.out_channels}"),
        "p5": L(ShapeSpec)(stride=32, channels="${....backbone.out_channels}"),
    },
    ignore_value=255,
    num_classes=54,  # COCO stuff + 1 ("thing")
    conv_dims=128,
    common_stride=4,
    loss_weight=0.5,
    norm="GN",
)

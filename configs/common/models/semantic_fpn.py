"""Semantic FPN with a ResNet-50 FPN backbone: the semantic branch of Panoptic FPN alone, as a
:class:`SemanticSegmentor` (detectron2's ``Misc/semantic_R_50_FPN_1x``: 54 COCO-stuff classes with all
things merged into one, label 255 ignored).
"""

from libdet.config import LazyCall as L
from libdet.layers import ShapeSpec
from libdet.modeling.backbone import FPN, BasicStem, LastLevelMaxPool, ResNet
from libdet.modeling.meta_arch.semantic_seg import SemanticSegmentor, SemSegFPNHead

model = L(SemanticSegmentor)(
    backbone=L(FPN)(
        bottom_up=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
            stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=True, norm="FrozenBN"),
            out_features=["res2", "res3", "res4", "res5"],
            freeze_at=2,
        ),
        in_features="${.bottom_up.out_features}",
        out_channels=256,
        top_block=L(LastLevelMaxPool)(),
    ),
    sem_seg_head=L(SemSegFPNHead)(
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
        loss_weight=1.0,
        norm="GN",
    ),
    pixel_mean=[103.530, 116.280, 123.675],
    pixel_std=[1.0, 1.0, 1.0],
)

"""Make the ``tensormask`` package (``projects/TensorMask/tensormask``) importable in these tests."""

import os
import sys

_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _PROJECT_ROOT not in sys.path:
    sys.path.insert(0, _PROJECT_ROOT)

import pytest  # noqa: E402
import torch  # noqa: E402


def build_tiny_tensormask(*, num_classes: int = 3, mask_on: bool = True, bipyramid_on: bool = True, **kwargs):
    """A TensorMask small enough for unit tests: a narrow ResNet-18 FPN (16 channels) with p2-p7, one conv per
    tower of width 8, anchors of 16 and 24 px at p2 (masks of 4 and 6 px there)."""
    from tensormask import TensorMask, TensorMaskAnchorGenerator, TensorMaskHead

    from libdet.layers import ShapeSpec
    from libdet.modeling.backbone import FPN, BasicStem, LastLevelP6P7, ResNet
    from libdet.modeling.box_regression import Box2BoxTransform

    bottom_up = ResNet(
        stem=BasicStem(in_channels=3, out_channels=8, norm="BN"),
        stages=ResNet.make_default_stages(depth=18, stem_out_channels=8, res2_out_channels=8, norm="BN"),
        out_features=["res2", "res3", "res4", "res5"],
    )
    backbone = FPN(
        bottom_up=bottom_up,
        in_features=["res2", "res3", "res4", "res5"],
        out_channels=16,
        fuse_type="avg",
        top_block=LastLevelP6P7(in_channels=64, out_channels=16),
    )
    sizes = [[16 * 2**lvl, 24 * 2**lvl] for lvl in range(6)]
    head = TensorMaskHead(
        input_shape=[ShapeSpec(channels=16)] * 6,
        num_classes=num_classes,
        num_anchors=2,
        mask_sizes=[4, 6],
        num_convs=1,
        cls_channels=8,
        bbox_channels=8,
        mask_channels=8,
        mask_on=mask_on,
        aligned_on=True,
        bipyramid_on=bipyramid_on,
    )
    return TensorMask(
        backbone=backbone,
        head=head,
        anchor_generator=TensorMaskAnchorGenerator(
            sizes=sizes, aspect_ratios=[1.0], strides=[4, 8, 16, 32, 64, 128], offset=0.0
        ),
        box2box_transform=Box2BoxTransform(weights=[1.5, 1.5, 0.75, 0.75]),
        num_classes=num_classes,
        pixel_mean=[103.53, 116.28, 123.675],
        pixel_std=[57.375, 57.12, 58.395],
        **kwargs,
    )


@pytest.fixture
def tiny_tensormask():
    """Factory of seeded tiny TensorMasks (see :func:`build_tiny_tensormask`)."""

    def make(**kwargs):
        torch.manual_seed(0)
        return build_tiny_tensormask(**kwargs)

    return make

"""ResNet stages in the layout of the official DETR weights (torchvision's ResNet), including its DC5 variant."""

from __future__ import annotations

from typing import Any

from libdet.modeling.backbone import ResNet
from libdet.modeling.backbone.resnet import BottleneckBlock, CNNBlockBase

__all__ = ["make_detr_resnet_stages"]


def make_detr_resnet_stages(*, depth: int, dc5: bool = False, **kwargs: Any) -> list[list[CNNBlockBase]]:
    """The four stages of a ResNet-50/101 for DETR, to pass as ``ResNet(stages=...)``.

    Without ``dc5`` this is ``ResNet.make_default_stages(depth=depth, **kwargs)``. With ``dc5`` res5 keeps stride 16
    and dilates its 3x3 convs by 2 *except in its first block*, as torchvision's ``replace_stride_with_dilation``
    (and timm's ``output_stride=16``) do, so that the DC5 weights of the official release and of Hugging Face give
    the same features (detectron2's ``res5_dilation=2`` dilates the first block too).

    Args:
        depth: 50 or 101 (Bottleneck ResNets).
        dc5: the dilated-res5 variant.
        kwargs: further ``make_default_stages`` arguments (``norm``, ``stride_in_1x1``, ``stem_out_channels``,
            ``res2_out_channels``, ``width_per_group``).
    """
    if depth < 50:
        raise ValueError(f"make_detr_resnet_stages: depth {depth}: DETR's ResNets are Bottleneck ones (50, 101, ...).")
    if "res5_dilation" in kwargs:
        raise ValueError("make_detr_resnet_stages: use dc5=True instead of res5_dilation.")
    stages = ResNet.make_default_stages(depth=depth, **kwargs)
    if not dc5:
        return stages
    first = stages[3][0]
    num_blocks = len(stages[3])
    block_kwargs = {k: v for k, v in kwargs.items() if k in ("norm", "stride_in_1x1", "num_groups")}
    stages[3] = ResNet.make_stage(
        BottleneckBlock,
        num_blocks,
        in_channels=first.in_channels,
        out_channels=first.out_channels,
        bottleneck_channels=first.conv1.out_channels,
        stride_per_block=[1] * num_blocks,
        dilation_per_block=[1] + [2] * (num_blocks - 1),
        **block_kwargs,
    )
    return stages

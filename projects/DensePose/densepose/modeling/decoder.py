"""The Panoptic-FPN-style decoder of DensePose R-CNN: fuses the FPN levels into one stride-4 map that the
DensePose pooler crops from."""

from __future__ import annotations

import math

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn
from torch.nn import functional as F

from libdet.layers import Conv2d, get_norm

__all__ = ["Decoder"]


class Decoder(nn.Module):
    """Each level goes through ``max(1, log2(stride / common_stride))`` 3x3 conv (+ norm) + ReLU blocks, each
    followed by a 2x bilinear upsampling while the level is coarser than ``common_stride``; the levels are summed
    and projected by a 1x1 conv. Submodules are named after the levels (``p2``, ``p3``, ...), then ``predictor``.
    """

    def __init__(
        self,
        *,
        in_features: list[str],
        in_strides: list[int],
        in_channels: int,
        conv_dims: int = 256,
        num_classes: int = 256,
        common_stride: int = 4,
        norm: str = "",
    ):
        """
        Args:
            in_features: names of the fused levels, finest first (``["p2", "p3", "p4", "p5"]``).
            in_strides: their strides (``[4, 8, 16, 32]``).
            in_channels: channels of every level (FPN ``out_channels``).
            conv_dims: channels of the level convs.
            num_classes: output channels of the 1x1 projection (256: it feeds the DensePose head).
            common_stride: stride of the output map.
            norm: norm of the level convs (``""`` for none, then convs have biases).
        """
        super().__init__()
        if len(in_features) != len(in_strides):
            raise ValueError(f"Decoder: {len(in_features)} in_features but {len(in_strides)} in_strides.")
        self.in_features = list(in_features)
        self.common_stride = common_stride
        self.scale_heads = []
        for name, stride in zip(in_features, in_strides):
            ops = []
            for k in range(max(1, int(math.log2(stride) - math.log2(common_stride)))):
                conv = Conv2d(
                    in_channels if k == 0 else conv_dims,
                    conv_dims,
                    kernel_size=3,
                    padding=1,
                    bias=not norm,
                    norm=get_norm(norm, conv_dims),
                    activation=F.relu,
                )
                weight_init.c2_msra_fill(conv)
                ops.append(conv)
                if stride != common_stride:
                    ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*ops))
            self.add_module(name, self.scale_heads[-1])
        self.predictor = Conv2d(conv_dims, num_classes, kernel_size=1)
        weight_init.c2_msra_fill(self.predictor)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """``features``: the levels of ``in_features`` in order, ``(B, C, H_l, W_l)``; returns
        ``(B, num_classes, H, W)`` at ``common_stride``."""
        x = self.scale_heads[0](features[0])
        for head, f in zip(self.scale_heads[1:], features[1:]):
            x = x + head(f)
        return self.predictor(x)

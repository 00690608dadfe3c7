"""Atrous Spatial Pyramid Pooling (DeepLabV3, https://arxiv.org/abs/1706.05587)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from copy import deepcopy

import torch
from torch import nn
from torch.nn import functional as F

from libdet.utils.fvcore_nn import c2_xavier_fill

from .batch_norm import get_norm
from .blocks import DepthwiseSeparableConv2d
from .wrappers import Conv2d

__all__ = ["ASPP"]


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling.

    Five parallel branches on the input: a 1x1 conv, three 3x3 atrous convs, and image pooling (average
    pooling + 1x1 conv, upsampled back to the input size); their outputs are concatenated and projected
    by a 1x1 conv to ``out_channels``. State_dict keys: ``convs.0`` (1x1), ``convs.1-3`` (atrous),
    ``convs.4.1`` (pooling conv), ``project``.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels of every branch and of the projection.
        dilations: the three dilation rates of the atrous convs.
        norm: normalisation of every conv but the pooling one (a ``get_norm`` name or callable); convs
            have a bias only when it is empty.
        activation: activation after every conv (deep-copied for each).
        pool_kernel_size: ``None`` for global average pooling; otherwise (kh, kw) (or an int) of a
            stride-1 average pooling, as used when training on fixed-size crops. The input height and
            width must then be multiples of it.
        dropout: dropout probability applied to the output in training.
        use_depthwise_separable_conv: use ``DepthwiseSeparableConv2d`` for the atrous convs.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dilations: Sequence[int],
        *,
        norm: str | Callable[[int], nn.Module] | None,
        activation: Callable[[torch.Tensor], torch.Tensor] | None,
        pool_kernel_size: int | tuple[int, int] | list[int] | None = None,
        dropout: float = 0.0,
        use_depthwise_separable_conv: bool = False,
    ):
        super().__init__()
        if len(dilations) != 3:
            raise ValueError(f"ASPP: `dilations` must hold 3 rates, got {len(dilations)}: {dilations}.")
        if pool_kernel_size is not None:
            if isinstance(pool_kernel_size, int):
                pool_kernel_size = (pool_kernel_size, pool_kernel_size)
            pool_kernel_size = tuple(pool_kernel_size)
            if len(pool_kernel_size) != 2:
                raise ValueError(f"ASPP: `pool_kernel_size` must be an int or (h, w), got {pool_kernel_size}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ASPP: `dropout` must be in [0, 1), got {dropout}.")
        self.in_channels = in_channels
        self.pool_kernel_size = pool_kernel_size
        self.dropout = dropout
        use_bias = not norm

        self.convs = nn.ModuleList()
        self.convs.append(
            Conv2d(
                in_channels,
                out_channels,
                kernel_size=1,
                bias=use_bias,
                norm=get_norm(norm, out_channels),
                activation=deepcopy(activation),
            )
        )
        c2_xavier_fill(self.convs[-1])
        for dilation in dilations:
            if use_depthwise_separable_conv:
                self.convs.append(
                    DepthwiseSeparableConv2d(
                        in_channels,
                        out_channels,
                        kernel_size=3,
                        padding=dilation,
                        dilation=dilation,
                        norm1=norm,
                        activation1=deepcopy(activation),
                        norm2=norm,
                        activation2=deepcopy(activation),
                    )
                )
            else:
                self.convs.append(
                    Conv2d(
                        in_channels,
                        out_channels,
                        kernel_size=3,
                        padding=dilation,
                        dilation=dilation,
                        bias=use_bias,
                        norm=get_norm(norm, out_channels),
                        activation=deepcopy(activation),
                    )
                )
                c2_xavier_fill(self.convs[-1])

        # The pooling branch has no norm: its output is (close to) 1x1, too small for batch statistics.
        if pool_kernel_size is None:
            pool = nn.AdaptiveAvgPool2d(1)
        else:
            pool = nn.AvgPool2d(pool_kernel_size, stride=1)
        pool_conv = Conv2d(in_channels, out_channels, 1, bias=True, activation=deepcopy(activation))
        c2_xavier_fill(pool_conv)
        self.convs.append(nn.Sequential(pool, pool_conv))

        self.project = Conv2d(
            5 * out_channels,
            out_channels,
            kernel_size=1,
            bias=use_bias,
            norm=get_norm(norm, out_channels),
            activation=deepcopy(activation),
        )
        c2_xavier_fill(self.project)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: Tensor[N, in_channels, H, W].

        Returns:
            Tensor[N, out_channels, H, W].
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ASPP: expected an input of shape (N, {self.in_channels}, H, W), got {x.shape}.")
        size = x.shape[-2:]
        if self.pool_kernel_size is not None:
            kh, kw = self.pool_kernel_size
            if size[0] % kh != 0 or size[1] % kw != 0:
                raise ValueError(
                    f"ASPP: input height and width {size} must be multiples of "
                    f"`pool_kernel_size` {self.pool_kernel_size}."
                )
        res = []
        for conv in self.convs:
            res.append(conv(x))
        res[-1] = F.interpolate(res[-1], size=size, mode="bilinear", align_corners=False)
        out = self.project(torch.cat(res, dim=1))
        if self.dropout > 0:
            out = F.dropout(out, self.dropout, training=self.training)
        return out

"""Building blocks shared by CNN backbones and heads."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from libdet.utils.fvcore_nn import c2_msra_fill

from .batch_norm import FrozenBatchNorm2d, get_norm
from .wrappers import Conv2d

__all__ = ["CNNBlockBase", "DepthwiseSeparableConv2d"]

_Norm = str | Callable[[int], nn.Module] | None
_Activation = Callable[[torch.Tensor], torch.Tensor] | None


class CNNBlockBase(nn.Module):
    """Base class of a CNN block: a module with known input/output channels and stride.

    Subclasses implement ``forward(x)`` taking and returning an (N, C, H, W) tensor.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels.
        stride: total stride of the block (output size = input size / stride).

    Attributes:
        in_channels, out_channels, stride: as given.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def freeze(self) -> CNNBlockBase:
        """Make the block untrainable: parameters stop requiring grad and every BatchNorm becomes a
        ``FrozenBatchNorm2d`` (in place).

        Returns:
            the block itself.
        """
        for p in self.parameters():
            p.requires_grad = False
        FrozenBatchNorm2d.convert_frozen_batchnorm(self)
        return self


class DepthwiseSeparableConv2d(nn.Module):
    """A depthwise k x k convolution followed by a pointwise 1 x 1 convolution.

    Each conv owns its norm and activation, so state_dict keys are ``depthwise.*`` and ``pointwise.*``.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels.
        kernel_size: kernel size of the depthwise conv.
        padding: padding of the depthwise conv.
        dilation: dilation of the depthwise conv.
        norm1, norm2: normalisation after the depthwise / pointwise conv (a ``get_norm`` name or
            callable); the conv has a bias only when its norm is empty.
        activation1, activation2: activation after the depthwise / pointwise conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int = 1,
        dilation: int = 1,
        *,
        norm1: _Norm = None,
        activation1: _Activation = None,
        norm2: _Norm = None,
        activation2: _Activation = None,
    ):
        super().__init__()
        self.depthwise = Conv2d(
            in_channels,
            in_channels,
            kernel_size=kernel_size,
            padding=padding,
            dilation=dilation,
            groups=in_channels,
            bias=not norm1,
            norm=get_norm(norm1, in_channels),
            activation=activation1,
        )
        self.pointwise = Conv2d(
            in_channels,
            out_channels,
            kernel_size=1,
            bias=not norm2,
            norm=get_norm(norm2, out_channels),
            activation=activation2,
        )
        c2_msra_fill(self.depthwise)
        c2_msra_fill(self.pointwise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))

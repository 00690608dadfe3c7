"""Deformable convolutions (v1 https://arxiv.org/abs/1703.06211, v2 https://arxiv.org/abs/1811.11168)
on top of ``torchvision.ops.deform_conv2d``, which runs on CPU and CUDA.

Offset layout (the same as detectron2's kernels and torchvision's): for deformable group ``g`` and
kernel position ``k = i * kw + j``, channel ``2 * (g * kh * kw + k)`` is the vertical (y) offset and the
next channel the horizontal (x) offset, in input pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d

__all__ = ["DeformConv", "ModulatedDeformConv"]

_IntOrPair = int | tuple[int, int]


class _DeformConvBase(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _IntOrPair,
        stride: _IntOrPair,
        padding: _IntOrPair,
        dilation: _IntOrPair,
        groups: int,
        deformable_groups: int,
        bias: bool,
        norm: nn.Module | None,
        activation: Callable[[torch.Tensor], torch.Tensor] | None,
    ):
        super().__init__()
        name = type(self).__name__
        if groups < 1 or in_channels % groups != 0 or out_channels % groups != 0:
            raise ValueError(
                f"{name}: `in_channels` ({in_channels}) and `out_channels` ({out_channels}) must be "
                f"divisible by `groups` ({groups})."
            )
        if deformable_groups < 1 or in_channels % deformable_groups != 0:
            raise ValueError(
                f"{name}: `in_channels` ({in_channels}) must be divisible by `deformable_groups` ({deformable_groups})."
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.with_bias = bias
        self.norm = norm
        self.activation = activation

        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")

    def _output_size(self, x: torch.Tensor) -> list[int]:
        size = [x.shape[0], self.out_channels]
        for i in range(2):
            k = self.dilation[i] * (self.kernel_size[i] - 1) + 1
            size.append((x.shape[i + 2] + 2 * self.padding[i] - k) // self.stride[i] + 1)
        return size

    def _check_shape(self, what: str, t: torch.Tensor, channels: int, x: torch.Tensor) -> None:
        expected = [x.shape[0], channels] + self._output_size(x)[2:]
        if list(t.shape) != expected:
            raise ValueError(
                f"{type(self).__name__}: `{what}` must have shape {tuple(expected)} for an input of shape "
                f"{tuple(x.shape)} (deformable_groups={self.deformable_groups}, "
                f"kernel_size={self.kernel_size}), got {tuple(t.shape)}."
            )

    def _forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__}: `x` must have shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}."
            )
        kk = self.kernel_size[0] * self.kernel_size[1]
        self._check_shape("offset", offset, 2 * self.deformable_groups * kk, x)
        if mask is not None:
            self._check_shape("mask", mask, self.deformable_groups * kk, x)

        if x.shape[0] == 0:
            # Empty batch: an empty output still connected to the inputs and parameters.
            out = x.new_zeros(self._output_size(x)) + (x.sum() + offset.sum() + self.weight.sum()) * 0.0
            if self.bias is not None:
                out = out + self.bias.sum() * 0.0
        else:
            out = deform_conv2d(
                x,
                offset.to(x.dtype),
                self.weight.to(x.dtype),
                bias=None if self.bias is None else self.bias.to(x.dtype),
                stride=self.stride,
                padding=self.padding,
                dilation=self.dilation,
                mask=None if mask is None else mask.to(x.dtype),
            )
        if self.norm is not None:
            out = self.norm(out)
        if self.activation is not None:
            out = self.activation(out)
        return out

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, groups={self.groups}, "
            f"deformable_groups={self.deformable_groups}, bias={self.with_bias}"
        )


class DeformConv(_DeformConvBase):
    """Deformable convolution (v1): a conv whose sampling positions are shifted by learned offsets.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels.
        kernel_size, stride, padding, dilation: as for ``torch.nn.Conv2d`` (int or (h, w)).
        groups: number of convolution groups.
        deformable_groups: number of channel groups sharing one set of offsets.
        bias: add a learned bias (detectron2 always uses False; default False).
        norm: optional normalisation module applied to the output (stored as ``norm``).
        activation: optional activation applied after the norm.

    Parameters are ``weight`` of shape (out_channels, in_channels // groups, kh, kw) and, with
    ``bias``, ``bias`` of shape (out_channels,), as in detectron2 checkpoints.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _IntOrPair,
        stride: _IntOrPair = 1,
        padding: _IntOrPair = 0,
        dilation: _IntOrPair = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = False,
        norm: nn.Module | None = None,
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            deformable_groups,
            bias,
            norm,
            activation,
        )

    def forward(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: Tensor[N, in_channels, H, W].
            offset: Tensor[N, 2 * deformable_groups * kh * kw, Ho, Wo], (y, x) pairs in input pixels.

        Returns:
            Tensor[N, out_channels, Ho, Wo].
        """
        return self._forward(x, offset, None)


class ModulatedDeformConv(_DeformConvBase):
    """Modulated deformable convolution (v2): offsets plus a per-sample modulation mask.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels.
        kernel_size, stride, padding, dilation: as for ``torch.nn.Conv2d`` (int or (h, w)).
        groups: number of convolution groups.
        deformable_groups: number of channel groups sharing one set of offsets and masks.
        bias: add a learned bias (default True).
        norm: optional normalisation module applied to the output (stored as ``norm``).
        activation: optional activation applied after the norm.

    Parameters are ``weight`` (out_channels, in_channels // groups, kh, kw) and ``bias``
    (out_channels,), as in detectron2 checkpoints.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _IntOrPair,
        stride: _IntOrPair = 1,
        padding: _IntOrPair = 0,
        dilation: _IntOrPair = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = True,
        norm: nn.Module | None = None,
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            deformable_groups,
            bias,
            norm,
            activation,
        )

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: Tensor[N, in_channels, H, W].
            offset: Tensor[N, 2 * deformable_groups * kh * kw, Ho, Wo], (y, x) pairs in input pixels.
            mask: Tensor[N, deformable_groups * kh * kw, Ho, Wo] modulation scalars (usually after a
                sigmoid).

        Returns:
            Tensor[N, out_channels, Ho, Wo].
        """
        return self._forward(x, offset, mask)

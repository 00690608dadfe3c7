"""Fold each convolution's normalisation into its weights, so that quantizers see plain ``nn.Conv2d`` layers.

PT2E quantizers (e.g. ``X86InductorQuantizer``) find convolutions by the module class that produced them:
``torch.nn.Conv2d`` exactly, not subclasses such as :class:`libdet.layers.Conv2d`, which also carries the
norm and activation that follow the convolution. A frozen or eval-mode BatchNorm is an affine map per
channel; folded into the convolution it costs nothing at inference and leaves one int8 convolution instead
of a float multiply-add between two quantize/dequantize steps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from libdet.layers import Conv2d
from libdet.layers.conv_bn_folding import fold_conv_batchnorm

__all__ = ["PlainConv2d", "fold_conv_norms"]


class PlainConv2d(nn.Module):
    """A ``torch.nn.Conv2d`` followed by an optional norm (one that could not be folded) and activation.

    Args:
        conv: the convolution, with any foldable norm already folded into its weight and bias.
        norm: a normalisation module left unfolded (e.g. ``GroupNorm``), or ``None``.
        activation: a callable applied last, or ``None``.
    """

    def __init__(
        self,
        *,
        conv: nn.Conv2d,
        norm: nn.Module | None = None,
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        super().__init__()
        self.conv = conv
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, H, W) -> (N, C_out, H', W')``."""
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


def _plain_conv(conv: Conv2d) -> PlainConv2d:
    plain = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    fold_conv_batchnorm(conv)  # FrozenBN / eval BatchNorm into the weights; other norms (GroupNorm) stay
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels, device=weight.device)
    with torch.no_grad():
        plain.weight.copy_(weight)
        plain.bias.copy_(bias)
    return PlainConv2d(conv=plain, norm=conv.norm, activation=conv.activation)


def fold_conv_norms(module: nn.Module) -> nn.Module:
    """Replace, in place, every :class:`libdet.layers.Conv2d` under ``module`` by a :class:`PlainConv2d`
    (an ``nn.Conv2d`` with the BatchNorm / FrozenBatchNorm that followed it folded in), so that the
    outputs stay the same up to float rounding. Call it on a copy in eval mode: BatchNorm layers are
    folded with their running statistics.

    Returns:
        ``module`` (itself replaced when it is a ``Conv2d``).
    """
    if isinstance(module, Conv2d):
        return _plain_conv(module)
    replaced: dict[int, nn.Module] = {}
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv2d):
                replaced[id(child)] = replaced.get(id(child)) or _plain_conv(child)
                setattr(parent, name, replaced[id(child)])
    # Modules may also keep their layers in plain Python lists next to the registered names (FPN's
    # lateral_convs / output_convs, as in detectron2): those references must point to the new layers too.
    for parent in module.modules():
        for name, value in list(vars(parent).items()):
            if isinstance(value, (list, tuple)) and any(id(v) in replaced for v in value):
                setattr(parent, name, type(value)(replaced.get(id(v), v) for v in value))
    return module

"""Fold inference-time BatchNorm layers into the convolutions before them (one pass over the activations less per
convolution; float rounding only). Used by the fast inference mode (:mod:`libdet.engine.fast_mode`) and by int8
quantization (:mod:`libdet.quantization`)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .batch_norm import FrozenBatchNorm2d

__all__ = ["fold_conv_batchnorm"]


def _fixed_affine(norm: nn.Module | None) -> bool:
    """True for a norm that is a fixed per-channel affine map: FrozenBN, or BatchNorm in eval mode with running
    statistics (a training-mode BatchNorm normalises with batch statistics: nothing fixed to fold)."""
    if isinstance(norm, FrozenBatchNorm2d):
        return True
    return isinstance(norm, nn.BatchNorm2d) and not norm.training and norm.running_var is not None


def _fold(conv: nn.Conv2d, norm: nn.Module) -> None:
    weight, bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias
    )
    conv.weight = nn.Parameter(weight.detach(), requires_grad=False)
    conv.bias = nn.Parameter(bias.detach(), requires_grad=False)


@torch.no_grad()
def fold_conv_batchnorm(model: nn.Module) -> int:
    """Fold, in place, every fixed BatchNorm (see above) that follows a convolution into that convolution's weight
    and bias: the ``norm`` of a :class:`libdet.layers.Conv2d` (set to ``None``), and a BatchNorm that comes right
    after an ``nn.Conv2d`` in an ``nn.Sequential`` (torchvision's Conv-BN-activation blocks; replaced by
    ``nn.Identity``). ``conv(x) * scale + shift`` is a convolution with weight ``w * scale`` per output channel and
    bias ``b * scale + shift``.

    The ``state_dict`` changes (norm entries become conv biases): fold a copy, keep the original for saving.

    Returns:
        the number of folded layers.
    """
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Conv2d) and _fixed_affine(getattr(module, "norm", None)):
            _fold(module, module.norm)
            module.norm = None
            folded += 1
        elif isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (_, first), (name, second) in zip(children, children[1:]):
                if type(first) is nn.Conv2d and _fixed_affine(second):
                    _fold(first, second)
                    setattr(module, name, nn.Identity())
                    folded += 1
    return folded

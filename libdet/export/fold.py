"""Fold frozen normalisations into the convolutions before export."""

from __future__ import annotations

import copy

from torch import nn

from libdet.layers import Conv2d

__all__ = ["fold_frozen_batchnorm"]


def fold_frozen_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose :class:`~libdet.layers.Conv2d` layers hold their ``FrozenBatchNorm2d`` norm
    folded into weight and bias (:meth:`Conv2d.fold_frozen_norm_`); ``model`` itself is unchanged, and
    returned as is when it has nothing to fold.

    Eager mode folds on each call; an exported graph would otherwise keep each norm as a multiply and an add
    after the convolution, which onnxruntime leaves unfused (it then converts every map out of and back into
    its blocked layout around them): folding made Mask R-CNN R50-FPN 1.12x faster there (1.67 s to 1.49 s
    at 800 x 1333 on 2 cores). Only the export copy changes, so its state dict has no ``norm`` entries.
    """
    if not any(isinstance(m, Conv2d) and m._folds_frozen_norm() for m in model.modules()):
        return model
    folded = copy.deepcopy(model)
    for module in folded.modules():
        if isinstance(module, Conv2d):
            module.fold_frozen_norm_()
    return folded

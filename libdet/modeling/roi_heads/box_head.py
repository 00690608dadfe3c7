"""Box heads: turn pooled per-ROI features into a feature vector for the box predictor."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from libdet.layers import Conv2d, ShapeSpec, get_norm
from libdet.utils.fvcore_nn import c2_msra_fill, c2_xavier_fill

from ..registries import ROI_BOX_HEAD_REGISTRY  # noqa: F401 (detectron2 path; YAML names)

__all__ = ["FastRCNNConvFCHead"]


class FastRCNNConvFCHead(nn.Sequential):
    """3x3 convs (``conv1``, ``conv2``, ...; each with optional norm and ReLU) followed by fully
    connected layers (``fc1``, ``fc2``, ...; each with ReLU).

    With ``fc_dims`` empty the output stays a feature map.
    """

    __jit_unused_properties__ = ["output_shape"]  # a Python-side description TorchScript need not compile

    def __init__(
        self, input_shape: ShapeSpec, *, conv_dims: Sequence[int], fc_dims: Sequence[int], conv_norm: str = ""
    ):
        """
        Args:
            input_shape: shape of the pooled features (channels, height, width).
            conv_dims: output channels of the convs.
            fc_dims: output sizes of the fully connected layers.
            conv_norm: normalisation of the convs (see :func:`libdet.layers.get_norm`); ``""`` for none
                (the convs then have a bias).
        """
        super().__init__()
        if len(conv_dims) + len(fc_dims) == 0:
            raise ValueError("FastRCNNConvFCHead: `conv_dims` and `fc_dims` are both empty; the head would be empty.")
        if input_shape.channels is None:
            raise ValueError("FastRCNNConvFCHead: `input_shape.channels` is required.")
        size = (input_shape.channels, input_shape.height, input_shape.width)
        convs: list[nn.Module] = []
        for k, dim in enumerate(conv_dims):
            conv = Conv2d(
                size[0],
                dim,
                kernel_size=3,
                padding=1,
                bias=not conv_norm,
                norm=get_norm(conv_norm, dim),
                activation=nn.ReLU(),
            )
            self.add_module(f"conv{k + 1}", conv)
            convs.append(conv)
            size = (dim, size[1], size[2])
        fcs: list[nn.Module] = []
        for k, dim in enumerate(fc_dims):
            if k == 0:
                if size[1] is None or size[2] is None:
                    raise ValueError(
                        "FastRCNNConvFCHead: `input_shape.height` and `.width` are required with fc layers."
                    )
                self.add_module("flatten", nn.Flatten())
                in_size = int(np.prod(size))
            else:
                in_size = fc_dims[k - 1]
            fc = nn.Linear(in_size, dim)
            self.add_module(f"fc{k + 1}", fc)
            self.add_module(f"fc_relu{k + 1}", nn.ReLU())
            fcs.append(fc)
        self._output_size = fc_dims[-1] if len(fc_dims) else size
        for layer in convs:
            c2_msra_fill(layer)
        for layer in fcs:
            c2_xavier_fill(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(R, C, H, W)`` pooled features -> ``(R, fc_dims[-1])`` (or ``(R, C', H, W)`` without fcs)."""
        for layer in self:
            x = layer(x)
        return x

    @property
    def output_shape(self) -> ShapeSpec:
        """Shape of the output: ``ShapeSpec(channels=fc_dims[-1])`` or the conv output's (C, H, W)."""
        out = self._output_size
        if isinstance(out, int):
            return ShapeSpec(channels=out)
        return ShapeSpec(channels=out[0], height=out[1], width=out[2])

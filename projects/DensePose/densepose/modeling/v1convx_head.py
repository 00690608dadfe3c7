"""DensePose V1ConvX head: a stack of 3x3 conv + ReLU layers on the pooled ROI features."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .init import initialize_module_params

__all__ = ["DensePoseV1ConvXHead"]


class DensePoseV1ConvXHead(nn.Module):
    """``num_stacked_convs`` convs (``body_conv_fcn1``, ...) of ``conv_head_dim`` channels, each followed by ReLU;
    ``(R, in_channels, S, S) -> (R, conv_head_dim, S, S)``."""

    def __init__(
        self, *, in_channels: int, num_stacked_convs: int = 8, conv_head_dim: int = 512, conv_head_kernel: int = 3
    ):
        """
        Args:
            in_channels: channels of the pooled features.
            num_stacked_convs: number of conv layers.
            conv_head_dim: their output channels (``n_out_channels``).
            conv_head_kernel: their (odd) kernel size; padding keeps the resolution.
        """
        super().__init__()
        self.n_stacked_convs = num_stacked_convs
        self.n_out_channels = conv_head_dim
        n_channels = in_channels
        for i in range(num_stacked_convs):
            layer = nn.Conv2d(n_channels, conv_head_dim, conv_head_kernel, stride=1, padding=conv_head_kernel // 2)
            self.add_module(f"body_conv_fcn{i + 1}", layer)
            n_channels = conv_head_dim
        initialize_module_params(self)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features
        for i in range(self.n_stacked_convs):
            x = F.relu(getattr(self, f"body_conv_fcn{i + 1}")(x))
        return x

"""DensePose DeepLab head: ASPP (atrous rates 6, 12, 56, GroupNorm) on the pooled ROI features, an optional
non-local block, then a stack of 3x3 conv (+ GroupNorm) + ReLU layers."""

from __future__ import annotations

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn
from torch.nn import functional as F

from libdet.layers import Conv2d

__all__ = ["ASPP", "NonLocalBlock2D", "DensePoseDeepLabHead"]


def _gn_relu_conv(in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation, bias=False
        ),
        nn.GroupNorm(32, out_channels),
        nn.ReLU(),
    ]


class _ASPPPooling(nn.Sequential):
    """Image-level branch: global average, 1x1 conv + GN + ReLU, upsampled back to the input size."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), *_gn_relu_conv(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1x1 branch, three dilated 3x3 branches and an image-pooling branch
    (``convs.0`` .. ``convs.4``), concatenated and projected by a 1x1 conv + ReLU (``project``)."""

    def __init__(self, *, in_channels: int, atrous_rates: tuple[int, int, int], out_channels: int):
        super().__init__()
        branches = [nn.Sequential(*_gn_relu_conv(in_channels, out_channels, 1))]
        branches += [nn.Sequential(*_gn_relu_conv(in_channels, out_channels, 3, rate)) for rate in atrous_rates]
        branches.append(_ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class NonLocalBlock2D(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al. 2018) with 2x max-pooled keys/values and a GroupNorm on the
    output projection, initialised to zero so the block starts as the identity."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.inter_channels = max(in_channels // 2, 1)
        self.g = nn.Sequential(nn.Conv2d(in_channels, self.inter_channels, 1), nn.MaxPool2d(2))
        self.theta = nn.Conv2d(in_channels, self.inter_channels, 1)
        self.phi = nn.Sequential(nn.Conv2d(in_channels, self.inter_channels, 1), nn.MaxPool2d(2))
        self.W = nn.Sequential(nn.Conv2d(self.inter_channels, in_channels, 1), nn.GroupNorm(32, in_channels))
        nn.init.constant_(self.W[1].weight, 0)
        nn.init.constant_(self.W[1].bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        g_x = self.g(x).flatten(2).transpose(1, 2)  # (B, HW/4, C')
        theta_x = self.theta(x).flatten(2).transpose(1, 2)  # (B, HW, C')
        phi_x = self.phi(x).flatten(2)  # (B, C', HW/4)
        attention = torch.softmax(theta_x @ phi_x, dim=-1)
        y = (attention @ g_x).transpose(1, 2).reshape(b, self.inter_channels, h, w)
        return self.W(y) + x


class DensePoseDeepLabHead(nn.Module):
    """``(R, in_channels, S, S) -> (R, conv_head_dim, S, S)``: ASPP to 256 channels (``ASPP``), optional non-local
    block (``NLBlock``), then ``num_stacked_convs`` convs ``body_conv_fcn1..`` with ``norm`` (GN) and ReLU."""

    def __init__(
        self,
        *,
        in_channels: int,
        num_stacked_convs: int = 8,
        conv_head_dim: int = 512,
        conv_head_kernel: int = 3,
        norm: str = "GN",
        nonlocal_on: bool = False,
        aspp_channels: int = 256,
        atrous_rates: tuple[int, int, int] = (6, 12, 56),
    ):
        """
        Args:
            in_channels: channels of the pooled features.
            num_stacked_convs, conv_head_dim, conv_head_kernel: the conv stack after ASPP.
            norm: ``"GN"`` (32 groups, convs without bias) or ``""``.
            nonlocal_on: add the non-local block after ASPP.
            aspp_channels: ASPP output channels.
            atrous_rates: dilations of the three 3x3 ASPP branches.
        """
        super().__init__()
        if norm not in ("GN", ""):
            raise ValueError(f"DensePoseDeepLabHead: norm must be 'GN' or '', got {norm!r}.")
        self.ASPP = ASPP(in_channels=in_channels, atrous_rates=tuple(atrous_rates), out_channels=aspp_channels)
        self.use_nonlocal = nonlocal_on
        if nonlocal_on:
            self.NLBlock = NonLocalBlock2D(aspp_channels)
        self.n_stacked_convs = num_stacked_convs
        self.n_out_channels = conv_head_dim
        n_channels = aspp_channels
        for i in range(num_stacked_convs):
            layer = Conv2d(
                n_channels,
                conv_head_dim,
                conv_head_kernel,
                padding=conv_head_kernel // 2,
                bias=not norm,
                norm=nn.GroupNorm(32, conv_head_dim) if norm == "GN" else None,
            )
            weight_init.c2_msra_fill(layer)
            self.add_module(f"body_conv_fcn{i + 1}", layer)
            n_channels = conv_head_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.ASPP(features)
        if self.use_nonlocal:
            x = self.NLBlock(x)
        for i in range(self.n_stacked_convs):
            x = F.relu(getattr(self, f"body_conv_fcn{i + 1}")(x))
        return x

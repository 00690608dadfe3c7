"""Plain Vision Transformer backbone and the simple feature pyramid of ViTDet
("Exploring Plain Vision Transformer Backbones for Object Detection", https://arxiv.org/abs/2203.16527).

:class:`ViT` keeps one stride-16 feature map throughout: most blocks attend inside non-overlapping windows,
a few attend globally, and attention logits get decomposed relative position biases. Its absolute position
embeddings keep the pre-training grid (MAE: 14 x 14 + class token) and are interpolated at every forward pass,
so MAE / ImageNet checkpoints load unchanged. :class:`SimpleFeaturePyramid` builds ``p2``-``p6`` from that
single map with (de)convolutions and pooling. State-dict keys match detectron2's ``modeling/backbone/vit.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from libdet.layers import CNNBlockBase, Conv2d, get_norm
from libdet.utils.fvcore_nn import c2_msra_fill

from .backbone import Backbone
from .utils import (
    DropPath,
    Mlp,
    PatchEmbed,
    add_decomposed_rel_pos,
    get_abs_pos,
    linear_drop_path_rates,
    window_partition,
    window_unpartition,
)

__all__ = ["SimpleFeaturePyramid", "ViT", "get_vit_lr_decay_rate", "vit_lr_decay"]

_NormLayer = Callable[[int], nn.Module]


class Attention(nn.Module):
    """Multi-head self-attention on a channels-last grid, with optional decomposed relative position biases.

    Args:
        dim: input channels.
        num_heads: attention heads (``dim`` must be divisible by it).
        qkv_bias: learn a bias in the query/key/value projection.
        use_rel_pos: add decomposed relative position biases (``rel_pos_h`` / ``rel_pos_w``).
        rel_pos_zero_init: zero-initialise the relative position tables (else truncated normal, std 0.02).
        input_size: (H, W) of the grid the tables are sized for (the window size for windowed blocks); other
            sizes are handled by interpolating the tables.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        input_size: tuple[int, int] | None = None,
    ):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"Attention: dim={dim} is not divisible by num_heads={num_heads}.")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("Attention: use_rel_pos=True needs input_size to size the relative position tables.")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))
            if not rel_pos_zero_init:
                nn.init.trunc_normal_(self.rel_pos_h, std=0.02)
                nn.init.trunc_normal_(self.rel_pos_w, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[B, H, W, dim] -> Tensor[B, H, W, dim]."""
        B, H, W, _ = x.shape
        # (3, B, heads, H*W, head_dim) -> q, k, v of (B*heads, H*W, head_dim)
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, B * self.num_heads, H * W, -1).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.use_rel_pos:
            attn = add_decomposed_rel_pos(attn, q, self.rel_pos_h, self.rel_pos_w, (H, W), (H, W))
        attn = attn.softmax(dim=-1)
        x = (attn @ v).view(B, self.num_heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)
        return self.proj(x)


class ResBottleneckBlock(CNNBlockBase):
    """A residual 1x1-3x3-1x1 conv bottleneck with LayerNorm, inserted after some ViT blocks to mix information
    across windows; the last norm is zero-initialised so the block starts as the identity.

    Args:
        in_channels: input channels.
        out_channels: output channels (equal to ``in_channels`` for the residual sum).
        bottleneck_channels: channels of the 3x3 conv.
        norm: normalisation (``get_norm`` name or callable).
        act_layer: activation class.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        bottleneck_channels: int,
        norm: str | _NormLayer = "LN",
        act_layer: Callable[[], nn.Module] = nn.GELU,
    ):
        super().__init__(in_channels, out_channels, 1)
        self.conv1 = Conv2d(in_channels, bottleneck_channels, 1, bias=False)
        self.norm1 = get_norm(norm, bottleneck_channels)
        self.act1 = act_layer()
        self.conv2 = Conv2d(bottleneck_channels, bottleneck_channels, 3, padding=1, bias=False)
        self.norm2 = get_norm(norm, bottleneck_channels)
        self.act2 = act_layer()
        self.conv3 = Conv2d(bottleneck_channels, out_channels, 1, bias=False)
        self.norm3 = get_norm(norm, out_channels)
        for layer in (self.conv1, self.conv2, self.conv3):
            c2_msra_fill(layer)
        for layer in (self.norm1, self.norm2):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.norm3.weight)
        nn.init.zeros_(self.norm3.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[B, C, H, W] -> Tensor[B, C, H, W]."""
        out = x
        for layer in self.children():
            out = layer(out)
        return x + out


class Block(nn.Module):
    """A pre-norm transformer block with windowed (``window_size > 0``) or global attention, and an optional
    residual conv block after it.

    Args:
        dim: channels.
        num_heads: attention heads.
        mlp_ratio: MLP hidden channels / ``dim``.
        qkv_bias: learn a bias in the query/key/value projection.
        drop_path: stochastic depth rate.
        norm_layer: ``dim -> norm module`` (channels-last).
        act_layer: activation class.
        use_rel_pos: add decomposed relative position biases.
        rel_pos_zero_init: zero-initialise the relative position tables.
        window_size: attention window side; 0 for global attention.
        use_residual_block: append a :class:`ResBottleneckBlock`.
        input_size: (H, W) of the patch grid, used to size the tables of global attention.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_layer: _NormLayer = nn.LayerNorm,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        window_size: int = 0,
        use_residual_block: bool = False,
        input_size: tuple[int, int] | None = None,
    ):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            rel_pos_zero_init=rel_pos_zero_init,
            input_size=input_size if window_size == 0 else (window_size, window_size),
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer)
        self.window_size = window_size
        self.use_residual_block = use_residual_block
        if use_residual_block:
            self.residual = ResBottleneckBlock(
                in_channels=dim, out_channels=dim, bottleneck_channels=dim // 2, norm="LN", act_layer=act_layer
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[B, H, W, dim] -> Tensor[B, H, W, dim]."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            H, W = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, pad_hw, (H, W))
        else:
            x = self.attn(x)
        x = shortcut + self.drop_path(x)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        if self.use_residual_block:
            x = self.residual(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x


class ViT(Backbone):
    """A plain ViT backbone with one output, ``out_feature`` of stride ``patch_size`` and ``embed_dim`` channels.

    Args:
        img_size: input image size the global-attention relative position tables are sized for.
        patch_size: patch side (= output stride).
        in_chans: input image channels.
        embed_dim: channels of every block.
        depth: number of blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden channels / ``embed_dim``.
        qkv_bias: learn a bias in the query/key/value projections.
        drop_path_rate: stochastic depth rate of the last block (linearly increasing from 0).
        norm_layer: ``dim -> norm module`` (channels-last), e.g. ``layer_norm(eps=1e-6)``.
        act_layer: activation class.
        use_abs_pos: add absolute position embeddings (sized for ``pretrain_img_size``, interpolated).
        use_rel_pos: add decomposed relative position biases in attention.
        rel_pos_zero_init: zero-initialise the relative position tables.
        window_size: attention window side of the windowed blocks.
        window_block_indexes: indexes of the blocks with windowed attention; the others attend globally.
        residual_block_indexes: indexes of the blocks followed by a residual conv block.
        use_act_checkpoint: recompute block activations in the backward pass (less memory, more compute).
        pretrain_img_size: image size of pre-training, which sets the absolute position grid.
        pretrain_use_cls_token: whether the pre-trained position embeddings include a class token.
        out_feature: name of the output feature.
    """

    def __init__(
        self,
        *,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        norm_layer: _NormLayer = nn.LayerNorm,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        use_abs_pos: bool = True,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        window_size: int = 0,
        window_block_indexes: Sequence[int] = (),
        residual_block_indexes: Sequence[int] = (),
        use_act_checkpoint: bool = False,
        pretrain_img_size: int = 224,
        pretrain_use_cls_token: bool = True,
        out_feature: str = "last_feat",
    ):
        super().__init__()
        self.pretrain_use_cls_token = pretrain_use_cls_token
        self.use_act_checkpoint = use_act_checkpoint
        self.patch_embed = PatchEmbed(
            kernel_size=(patch_size, patch_size),
            stride=(patch_size, patch_size),
            in_chans=in_chans,
            embed_dim=embed_dim,
        )
        if use_abs_pos:
            num_patches = (pretrain_img_size // patch_size) ** 2
            num_positions = num_patches + 1 if pretrain_use_cls_token else num_patches
            self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, embed_dim))
        else:
            self.pos_embed = None

        drop_path_rates = linear_drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_path=drop_path_rates[i],
                norm_layer=norm_layer,
                act_layer=act_layer,
                use_rel_pos=use_rel_pos,
                rel_pos_zero_init=rel_pos_zero_init,
                window_size=window_size if i in window_block_indexes else 0,
                use_residual_block=i in residual_block_indexes,
                input_size=(img_size // patch_size, img_size // patch_size),
            )
            for i in range(depth)
        )
        self._out_feature_channels = {out_feature: embed_dim}
        self._out_feature_strides = {out_feature: patch_size}
        self._out_features = [out_feature]

        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(_init_transformer_weights)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tensor[B, in_chans, H, W] -> {out_feature: Tensor[B, embed_dim, H / patch, W / patch]}."""
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + get_abs_pos(self.pos_embed, self.pretrain_use_cls_token, (x.shape[1], x.shape[2]))
        for block in self.blocks:
            if self.use_act_checkpoint and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return {self._out_features[0]: x.permute(0, 3, 1, 2)}


def _init_transformer_weights(m: nn.Module) -> None:
    """Normal (std 0.02) linear weights with zero biases; unit LayerNorms (channels-last ones only: the
    zero-initialised channels-first norms of residual conv blocks are left alone)."""
    if isinstance(m, nn.Linear):
        # detectron2 / timm call trunc_normal_(std=0.02), whose default bounds are +-2 (absolute), i.e. 100 std:
        # the same distribution as normal_, which is ~2.5x faster (seconds when building ViT-H / MViTv2-H on CPU)
        nn.init.normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.zeros_(m.bias)
        nn.init.ones_(m.weight)


class SimpleFeaturePyramid(Backbone):
    """ViTDet's simple feature pyramid: parallel (de)convolution / pooling branches turn the single feature
    map of ``net`` into one level per scale factor, each followed by a 1x1 and a 3x3 conv.

    Outputs are named ``p{log2(stride)}`` (``p2``-``p5`` for scale factors 4, 2, 1, 0.5 on a stride-16 map),
    plus the levels of ``top_block`` (``p6`` with :class:`LastLevelMaxPool`).

    Args:
        net: a backbone with a single-scale output (e.g. :class:`ViT`).
        in_feature: name of the ``net`` output to use.
        out_channels: channels of every level.
        scale_factors: resolution of each level relative to the input feature; each of 4.0, 2.0, 1.0, 0.5,
            giving strides that double from one to the next.
        top_block: optional module adding coarser levels (see :class:`libdet.modeling.backbone.FPN`).
        norm: normalisation of the convs (``get_norm`` name or callable); convs have biases when it is "".
        square_pad: if > 0, inputs are padded to this square size (``padding_constraints``).
    """

    def __init__(
        self,
        *,
        net: Backbone,
        in_feature: str,
        out_channels: int,
        scale_factors: Sequence[float],
        top_block: nn.Module | None = None,
        norm: str | _NormLayer = "LN",
        square_pad: int = 0,
    ):
        super().__init__()
        if not isinstance(net, Backbone):
            raise TypeError(f"SimpleFeaturePyramid: net must be a Backbone, got {type(net).__name__}.")
        input_shapes = net.output_shape()
        if in_feature not in input_shapes:
            raise ValueError(
                f"SimpleFeaturePyramid: in_feature={in_feature!r} is not an output of net {list(input_shapes)}."
            )
        self.scale_factors = tuple(scale_factors)
        strides = [int(input_shapes[in_feature].stride / scale) for scale in self.scale_factors]
        for finer, coarser in zip(strides[:-1], strides[1:], strict=False):
            if coarser != 2 * finer:
                raise ValueError(
                    f"SimpleFeaturePyramid: scale_factors {scale_factors} give strides {strides}; "
                    "each must be twice the previous one."
                )
        dim = input_shapes[in_feature].channels
        use_bias = norm == ""
        self.stages = []
        for scale, stride in zip(self.scale_factors, strides, strict=True):
            layers, out_dim = _rescaling_layers(scale, dim, norm)
            layers.extend(
                [
                    Conv2d(out_dim, out_channels, kernel_size=1, bias=use_bias, norm=get_norm(norm, out_channels)),
                    Conv2d(
                        out_channels,
                        out_channels,
                        kernel_size=3,
                        padding=1,
                        bias=use_bias,
                        norm=get_norm(norm, out_channels),
                    ),
                ]
            )
            stage = nn.Sequential(*layers)
            self.add_module(f"simfp_{int(math.log2(stride))}", stage)
            self.stages.append(stage)

        self.net = net
        self.in_feature = in_feature
        self.top_block = top_block
        self._out_feature_strides = {f"p{int(math.log2(s))}": s for s in strides}
        if top_block is not None:
            last_stage = int(math.log2(strides[-1]))
            for s in range(last_stage + 1, last_stage + 1 + top_block.num_levels):
                self._out_feature_strides[f"p{s}"] = 2**s
        self._out_features = list(self._out_feature_strides)
        if top_block is not None and top_block.in_feature not in input_shapes:
            # the top block reads a pyramid level, which must come before its own levels
            if top_block.in_feature not in self._out_features[: len(strides)]:
                raise ValueError(
                    f"SimpleFeaturePyramid: top_block reads {top_block.in_feature!r}, which is neither an output "
                    f"of net nor a pyramid level {self._out_features[: len(strides)]}."
                )
        self._out_feature_channels = {k: out_channels for k in self._out_features}
        self._size_divisibility = strides[-1]
        self._square_pad = square_pad

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    @property
    def padding_constraints(self) -> dict[str, int]:
        return {"size_divisibility": self._size_divisibility, "square_size": self._square_pad}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tensor[B, C, H, W] -> {"p2": Tensor[B, out_channels, H / 4, W / 4], ..., "p6": ...}."""
        bottom_up_features = self.net(x)
        features = bottom_up_features[self.in_feature]
        results = [stage(features) for stage in self.stages]
        if self.top_block is not None:
            if self.top_block.in_feature in bottom_up_features:
                top_input = bottom_up_features[self.top_block.in_feature]
            else:
                top_input = results[self._out_features.index(self.top_block.in_feature)]
            results.extend(self.top_block(top_input))
        return dict(zip(self._out_features, results, strict=True))


def _rescaling_layers(scale: float, dim: int, norm: str | _NormLayer) -> tuple[list[nn.Module], int]:
    """The layers that bring a ``dim``-channel map to ``scale`` times its resolution, and their output channels."""
    if scale == 4.0:
        layers = [
            nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
            get_norm(norm, dim // 2),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2),
        ]
        return layers, dim // 4
    if scale == 2.0:
        return [nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2)], dim // 2
    if scale == 1.0:
        return [], dim
    if scale == 0.5:
        return [nn.MaxPool2d(kernel_size=2, stride=2)], dim
    raise ValueError(f"SimpleFeaturePyramid: scale factor {scale} is not supported (use 4.0, 2.0, 1.0 or 0.5).")


def get_vit_lr_decay_rate(name: str, lr_decay_rate: float = 1.0, num_layers: int = 12) -> float:
    """Layer-wise lr decay (https://arxiv.org/abs/2111.06377): the lr multiplier of a parameter of a ViTDet model.

    Layer ids: 0 for the patch and position embeddings, ``i + 1`` for block ``i``, and ``num_layers + 1`` for
    everything else (the pyramid, heads and residual conv blocks), whose multiplier is 1. A parameter with
    layer id ``l`` gets ``lr_decay_rate ** (num_layers + 1 - l)``.

    Args:
        name: full parameter name, e.g. ``"backbone.net.blocks.3.attn.qkv.weight"``.
        lr_decay_rate: decay per layer.
        num_layers: number of ViT blocks.

    Returns:
        the lr multiplier.
    """
    layer_id = num_layers + 1
    if name.startswith("backbone"):
        if ".pos_embed" in name or ".patch_embed" in name:
            layer_id = 0
        elif ".blocks." in name and ".residual." not in name:
            layer_id = int(name[name.find(".blocks.") :].split(".")[2]) + 1
    return lr_decay_rate ** (num_layers + 1 - layer_id)


def vit_lr_decay(lr_decay_rate: float, num_layers: int) -> Callable[[str], float]:
    """``get_vit_lr_decay_rate`` with fixed arguments, for ``get_default_optimizer_params(lr_factor_func=...)``.

    Configs write ``optimizer.params.lr_factor_func = L(vit_lr_decay)(lr_decay_rate=0.7, num_layers=12)``
    (detectron2's configs use ``functools.partial``, which YAML cannot save).
    """
    return partial(get_vit_lr_decay_rate, lr_decay_rate=lr_decay_rate, num_layers=num_layers)

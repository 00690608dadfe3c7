"""Swin Transformer backbone ("Swin Transformer: Hierarchical Vision Transformer using Shifted Windows",
https://arxiv.org/abs/2103.14030).

Four stages at strides 4, 8, 16, 32 (outputs ``p0``-``p3``, each layer-normalised). Blocks attend inside
``window_size`` windows with a learnt relative position bias; every second block shifts the windows by half a
window (with a mask so that tokens only attend to tokens that were adjacent before the cyclic shift), and a
patch-merging layer halves the resolution between stages. State-dict keys match detectron2's
``modeling/backbone/swin.py`` (and the official ImageNet checkpoints).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .backbone import Backbone
from .utils import DropPath, Mlp, linear_drop_path_rates, window_partition, window_unpartition
from .vit import _init_transformer_weights

__all__ = ["SwinTransformer"]

_NormLayer = Callable[[int], nn.Module]


class WindowAttention(nn.Module):
    """Multi-head self-attention within a window, with a relative position bias table of
    ``(2 * Wh - 1) * (2 * Ww - 1)`` entries per head.

    Args:
        dim: channels.
        window_size: (Wh, Ww).
        num_heads: attention heads.
        qkv_bias: learn a bias in the query/key/value projection.
        qk_scale: logit scale (default ``head_dim ** -0.5``).
        attn_drop: dropout on attention weights.
        proj_drop: dropout on the output.
    """

    def __init__(
        self,
        dim: int,
        window_size: tuple[int, int],
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        Wh, Ww = window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * Wh - 1) * (2 * Ww - 1), num_heads))
        # index into the table for each (query, key) pair of a window: row-major (dy, dx) offsets made >= 0
        coords = torch.stack(torch.meshgrid(torch.arange(Wh), torch.arange(Ww), indexing="ij")).flatten(1)  # 2, N
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # N, N, 2
        index = (relative[..., 0] + Wh - 1) * (2 * Ww - 1) + (relative[..., 1] + Ww - 1)
        self.register_buffer("relative_position_index", index)  # persistent: it is in the checkpoints
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            x: Tensor[B * num_windows, N, C] with N = Wh * Ww tokens per window.
            mask: Tensor[num_windows, N, N] of 0 / -100 added to the logits, or None.

        Returns:
            Tensor[B * num_windows, N, C].
        """
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B_, heads, N, C_head)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(N, N, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            num_windows = mask.shape[0]
            attn = attn.view(B_ // num_windows, num_windows, self.num_heads, N, N) + mask[None, :, None]
            attn = attn.view(-1, self.num_heads, N, N)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(B_, N, C)
        return self.proj_drop(self.proj(x))


class SwinTransformerBlock(nn.Module):
    """A Swin block: (shifted) window attention and an MLP, both pre-norm residual.

    Args:
        dim: channels.
        num_heads: attention heads.
        window_size: window side.
        shift_size: cyclic shift of the windows (0 for regular windows).
        mlp_ratio: MLP hidden channels / ``dim``.
        qkv_bias, qk_scale: see :class:`WindowAttention`.
        drop: dropout in the MLP and after attention.
        attn_drop: dropout on attention weights.
        drop_path: stochastic depth rate.
        act_layer: activation class.
        norm_layer: ``dim -> norm module``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: _NormLayer = nn.LayerNorm,
    ):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"SwinTransformerBlock: shift_size={shift_size} must be in [0, {window_size}).")
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(
            dim,
            window_size=(window_size, window_size),
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            attn_drop=attn_drop,
            proj_drop=drop,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """
        Args:
            x: Tensor[B, H, W, C].
            attn_mask: the shifted-window mask of :func:`_shifted_window_mask` (used when ``shift_size > 0``).

        Returns:
            Tensor[B, H, W, C].
        """
        H, W, C = x.shape[1:]
        shortcut = x
        x = self.norm1(x)
        # pad to whole windows first, then shift the padded map (the mask assumes this order)
        pad_b = (self.window_size - H % self.window_size) % self.window_size
        pad_r = (self.window_size - W % self.window_size) % self.window_size
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        windows, pad_hw = window_partition(x, self.window_size)
        windows = self.attn(windows.view(-1, self.window_size**2, C), mask=attn_mask if self.shift_size > 0 else None)
        windows = windows.view(-1, self.window_size, self.window_size, C)
        x = window_unpartition(windows, self.window_size, pad_hw, pad_hw)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = x[:, :H, :W, :]
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _shifted_window_mask(
    H: int, W: int, window_size: int, shift_size: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """The attention mask of shifted windows on an ``H x W`` map padded to whole windows: Tensor[num_windows,
    N, N] with -100 between tokens that come from different regions of the cyclically shifted map."""
    Hp = -(-H // window_size) * window_size
    Wp = -(-W // window_size) * window_size
    region = torch.zeros((1, Hp, Wp, 1), device=device, dtype=dtype)
    slices = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    label = 0
    for h in slices:
        for w in slices:
            region[:, h, w, :] = label
            label += 1
    region_windows = window_partition(region, window_size)[0].view(-1, window_size * window_size)
    mask = region_windows.unsqueeze(1) - region_windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class PatchMerging(nn.Module):
    """Halve the resolution: concatenate each 2x2 neighbourhood (4C channels), normalise, project to 2C.

    Args:
        dim: input channels C.
        norm_layer: ``dim -> norm module``.
    """

    def __init__(self, dim: int, norm_layer: _NormLayer = nn.LayerNorm):
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[B, H, W, C] -> Tensor[B, ceil(H / 2), ceil(W / 2), 2C]."""
        H, W = x.shape[1], x.shape[2]
        if H % 2 == 1 or W % 2 == 1:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        # channel order (0,0), (1,0), (0,1), (1,1) as in the official checkpoints
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class BasicLayer(nn.Module):
    """One Swin stage: ``depth`` blocks alternating regular and shifted windows, then optional patch merging.

    Args:
        dim: channels.
        depth: number of blocks.
        num_heads: attention heads.
        window_size: window side.
        drop_path: stochastic depth rate of each block (a list) or of all blocks.
        downsample: patch-merging class applied at the end, or None.
        use_checkpoint: recompute block activations in the backward pass.
        Other arguments: see :class:`SwinTransformerBlock`.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float | Sequence[float] = 0.0,
        norm_layer: _NormLayer = nn.LayerNorm,
        downsample: Callable[..., nn.Module] | None = None,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim=dim,
                num_heads=num_heads,
                window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop=drop,
                attn_drop=attn_drop,
                drop_path=drop_path[i] if isinstance(drop_path, Sequence) else drop_path,
                norm_layer=norm_layer,
            )
            for i in range(depth)
        )
        self.downsample = downsample(dim=dim, norm_layer=norm_layer) if downsample is not None else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tensor[B, H, W, C] -> (stage output Tensor[B, H, W, C], input of the next stage)."""
        H, W = x.shape[1], x.shape[2]
        attn_mask = _shifted_window_mask(H, W, self.window_size, self.shift_size, x.device, x.dtype)
        for block in self.blocks:
            if self.use_checkpoint and self.training:
                x = checkpoint(block, x, attn_mask, use_reentrant=False)
            else:
                x = block(x, attn_mask)
        return x, (self.downsample(x) if self.downsample is not None else x)


class PatchEmbed(nn.Module):
    """Swin's patch embedding: pad to a multiple of the patch, strided conv, optional norm (channels-first out).

    Args:
        patch_size: patch side (= stride).
        in_chans: input channels.
        embed_dim: output channels.
        norm_layer: ``dim -> norm module`` applied channels-last, or None.
    """

    def __init__(
        self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96, norm_layer: _NormLayer | None = None
    ):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[B, in_chans, H, W] -> Tensor[B, embed_dim, ceil(H / patch), ceil(W / patch)]."""
        H, W = x.shape[2], x.shape[3]
        p = self.patch_size
        if H % p or W % p:
            x = F.pad(x, (0, (p - W % p) % p, 0, (p - H % p) % p))
        x = self.proj(x)
        if self.norm is not None:
            x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x


class SwinTransformer(Backbone):
    """The Swin Transformer backbone with outputs ``p{i}`` (stride ``2 ** (i + 2)``, ``embed_dim * 2 ** i``
    channels) for ``i`` in ``out_indices``.

    Args:
        pretrain_img_size: pre-training image size (sizes the absolute position embedding with ``ape``).
        patch_size: patch side.
        in_chans: input image channels.
        embed_dim: channels of the first stage (doubled at each stage).
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window_size: window side.
        mlp_ratio: MLP hidden channels / channels.
        qkv_bias, qk_scale: see :class:`WindowAttention`.
        drop_rate: dropout after the patch embedding, in MLPs and after attention.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth rate of the last block (linearly increasing from 0).
        norm_layer: ``dim -> norm module`` (channels-last).
        ape: add an absolute position embedding (bicubically resized to the input).
        patch_norm: normalise the patch embeddings.
        out_indices: stages to output.
        frozen_stages: -1 trains everything; 0 freezes the patch embedding; ``k >= 1`` also freezes the
            absolute position embedding and stages ``0 .. k - 2`` (the reference implementation's convention).
        use_checkpoint: recompute block activations in the backward pass.
    """

    def __init__(
        self,
        *,
        pretrain_img_size: int = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        norm_layer: _NormLayer = nn.LayerNorm,
        ape: bool = False,
        patch_norm: bool = True,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"SwinTransformer: depths {depths} and num_heads {num_heads} differ in length.")
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.ape = ape
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.patch_embed = PatchEmbed(
            patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, norm_layer=norm_layer if patch_norm else None
        )
        if ape:
            grid = pretrain_img_size // patch_size
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, grid, grid))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)

        drop_path_rates = linear_drop_path_rates(drop_path_rate, sum(depths))
        self.layers = nn.ModuleList(
            BasicLayer(
                dim=embed_dim * 2**i,
                depth=depths[i],
                num_heads=num_heads[i],
                window_size=window_size,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=drop_path_rates[sum(depths[:i]) : sum(depths[: i + 1])],
                norm_layer=norm_layer,
                downsample=PatchMerging if i < self.num_layers - 1 else None,
                use_checkpoint=use_checkpoint,
            )
            for i in range(self.num_layers)
        )
        self.num_features = [embed_dim * 2**i for i in range(self.num_layers)]
        for i in self.out_indices:
            self.add_module(f"norm{i}", norm_layer(self.num_features[i]))

        self._out_features = [f"p{i}" for i in self.out_indices]
        self._out_feature_channels = {f"p{i}": self.num_features[i] for i in self.out_indices}
        self._out_feature_strides = {f"p{i}": 2 ** (i + 2) for i in self.out_indices}
        self.apply(_init_transformer_weights)
        self._freeze_stages()

    def _freeze_stages(self) -> None:
        frozen: list[nn.Module | nn.Parameter] = []
        if self.frozen_stages >= 0:
            frozen.append(self.patch_embed)
        if self.frozen_stages >= 1 and self.ape:
            frozen.append(self.absolute_pos_embed)
        if self.frozen_stages >= 2:
            frozen.extend(self.layers[: self.frozen_stages - 1])
        for item in frozen:
            for p in [item] if isinstance(item, nn.Parameter) else item.parameters():
                p.requires_grad = False

    @property
    def size_divisibility(self) -> int:
        return 32

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tensor[B, in_chans, H, W] -> {"p{i}": Tensor[B, embed_dim * 2**i, H / 2**(i+2), W / 2**(i+2)]}."""
        x = self.patch_embed(x)
        if self.ape:
            x = x + F.interpolate(self.absolute_pos_embed, size=x.shape[2:], mode="bicubic")
        x = self.pos_drop(x.permute(0, 2, 3, 1))  # channels-last from here on
        outputs = {}
        for i, layer in enumerate(self.layers):
            out, x = layer(x)
            if i in self.out_indices:
                outputs[f"p{i}"] = getattr(self, f"norm{i}")(out).permute(0, 3, 1, 2).contiguous()
        return outputs

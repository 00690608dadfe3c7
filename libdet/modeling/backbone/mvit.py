"""Multiscale Vision Transformer v2 backbone ("MViTv2: Improved Multiscale Vision Transformers for
Classification and Detection", https://arxiv.org/abs/2112.01526).

Four stages at strides 4, 8, 16, 32 (``scale2``-``scale5``). Attention pools its queries (stride 2 at the
first block of a stage, which downsamples the map) and its keys/values (an adaptive stride that keeps the
key grid small), adds the pooled queries back to the output (residual pooling) and decomposed relative
position biases to the logits. The first stage attends within windows, the others globally at their last
block only ("hybrid window attention"). State-dict keys match detectron2's ``modeling/backbone/mvit.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

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
from .vit import _init_transformer_weights

__all__ = ["MViT"]

_NormLayer = Callable[[int], nn.Module]


def attention_pool(x: torch.Tensor, pool: nn.Module, norm: nn.Module | None = None) -> torch.Tensor:
    """Apply a 2D pooling module to a channels-last map: Tensor[B, H, W, C] -> Tensor[B, H', W', C]."""
    x = pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return norm(x) if norm is not None else x


class MultiScaleAttention(nn.Module):
    """Pooling attention with residual pooling and decomposed relative position biases.

    Args:
        dim: input channels.
        dim_out: output channels.
        num_heads: attention heads (``dim_out`` must be divisible by it).
        qkv_bias: learn a bias in the query/key/value projection.
        norm_layer: ``dim -> norm module`` applied after each pooling.
        pool_kernel: kernel of the depthwise pooling convs.
        stride_q: pooling stride of the queries (= downsampling of the block).
        stride_kv: pooling stride of the keys and values.
        residual_pooling: add the pooled queries to the attention output.
        window_size: attention window side on the input grid; 0 for global attention.
        use_rel_pos: add decomposed relative position biases.
        rel_pos_zero_init: zero-initialise the relative position tables.
        input_size: (H, W) of the input grid the tables are sized for (must be square with ``use_rel_pos``).
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        qkv_bias: bool = True,
        norm_layer: _NormLayer = nn.LayerNorm,
        pool_kernel: tuple[int, int] = (3, 3),
        stride_q: int = 1,
        stride_kv: int = 1,
        residual_pooling: bool = True,
        window_size: int = 0,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        input_size: tuple[int, int] | None = None,
    ):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim_out // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim_out * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim_out, dim_out)

        # depthwise pooling convs, shared by all heads (they run on (B * heads, C_head, H, W))
        padding = [k // 2 for k in pool_kernel]
        self.pool_q = nn.Conv2d(
            head_dim, head_dim, pool_kernel, stride=stride_q, padding=padding, groups=head_dim, bias=False
        )
        self.norm_q = norm_layer(head_dim)
        self.pool_k = nn.Conv2d(
            head_dim, head_dim, pool_kernel, stride=stride_kv, padding=padding, groups=head_dim, bias=False
        )
        self.norm_k = norm_layer(head_dim)
        self.pool_v = nn.Conv2d(
            head_dim, head_dim, pool_kernel, stride=stride_kv, padding=padding, groups=head_dim, bias=False
        )
        self.norm_v = norm_layer(head_dim)

        self.window_size = window_size
        if window_size:
            self.q_win_size = window_size // stride_q
            self.kv_win_size = window_size // stride_kv
        self.residual_pooling = residual_pooling

        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None or input_size[0] != input_size[1]:
                raise ValueError(f"MultiScaleAttention: use_rel_pos needs a square input_size, got {input_size}.")
            size = input_size[0]
            rel_dim = 2 * max(size // stride_q, size // stride_kv) - 1
            self.rel_pos_h = nn.Parameter(torch.zeros(rel_dim, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(rel_dim, head_dim))
            if not rel_pos_zero_init:
                nn.init.trunc_normal_(self.rel_pos_h, std=0.02)
                nn.init.trunc_normal_(self.rel_pos_w, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[B, H, W, dim] -> Tensor[B, H / stride_q, W / stride_q, dim_out] (ceil)."""
        B, H, W, _ = x.shape
        # (3, B, heads, H, W, C_head) -> q, k, v of (B * heads, H, W, C_head)
        qkv = self.qkv(x).reshape(B, H, W, 3, self.num_heads, -1).permute(3, 0, 4, 1, 2, 5)
        q, k, v = qkv.reshape(3, B * self.num_heads, H, W, -1).unbind(0)
        q = attention_pool(q, self.pool_q, self.norm_q)
        k = attention_pool(k, self.pool_k, self.norm_k)
        v = attention_pool(v, self.pool_v, self.norm_v)

        pooled_q = q
        if self.window_size:
            q, q_pad_hw = window_partition(q, self.q_win_size)
            k, _ = window_partition(k, self.kv_win_size)
            v, _ = window_partition(v, self.kv_win_size)
            q_hw = (self.q_win_size, self.q_win_size)
            kv_hw = (self.kv_win_size, self.kv_win_size)
        else:
            q_hw = (q.shape[1], q.shape[2])
            kv_hw = (k.shape[1], k.shape[2])
        q = q.reshape(q.shape[0], q_hw[0] * q_hw[1], -1)
        k = k.reshape(k.shape[0], kv_hw[0] * kv_hw[1], -1)
        v = v.reshape(v.shape[0], kv_hw[0] * kv_hw[1], -1)

        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.use_rel_pos:
            attn = add_decomposed_rel_pos(attn, q, self.rel_pos_h, self.rel_pos_w, q_hw, kv_hw)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).view(-1, q_hw[0], q_hw[1], v.shape[-1])
        if self.window_size:
            x = window_unpartition(x, self.q_win_size, q_pad_hw, (pooled_q.shape[1], pooled_q.shape[2]))
        if self.residual_pooling:
            x = x + pooled_q

        H, W = x.shape[1], x.shape[2]
        x = x.view(B, self.num_heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)
        return self.proj(x)


class MultiScaleBlock(nn.Module):
    """An MViTv2 block: pooling attention and an MLP, with a projected / max-pooled shortcut when the block
    changes the channels / resolution.

    Args: as :class:`MultiScaleAttention`, plus
        mlp_ratio: MLP hidden channels / ``dim_out``.
        drop_path: stochastic depth rate.
        act_layer: activation class.
        qkv_pool_kernel: kernel of the attention pooling.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_layer: _NormLayer = nn.LayerNorm,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        qkv_pool_kernel: tuple[int, int] = (3, 3),
        stride_q: int = 1,
        stride_kv: int = 1,
        residual_pooling: bool = True,
        window_size: int = 0,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        input_size: tuple[int, int] | None = None,
    ):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = MultiScaleAttention(
            dim,
            dim_out,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            norm_layer=norm_layer,
            pool_kernel=qkv_pool_kernel,
            stride_q=stride_q,
            stride_kv=stride_kv,
            residual_pooling=residual_pooling,
            window_size=window_size,
            use_rel_pos=use_rel_pos,
            rel_pos_zero_init=rel_pos_zero_init,
            input_size=input_size,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim_out)
        self.mlp = Mlp(in_features=dim_out, hidden_features=int(dim_out * mlp_ratio), act_layer=act_layer)
        self.proj = nn.Linear(dim, dim_out) if dim != dim_out else None
        if stride_q > 1:
            kernel_skip = stride_q + 1
            self.pool_skip = nn.MaxPool2d(kernel_skip, stride_q, kernel_skip // 2, ceil_mode=False)
        else:
            self.pool_skip = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[B, H, W, dim] -> Tensor[B, H / stride_q, W / stride_q, dim_out]."""
        x_norm = self.norm1(x)
        x_block = self.attn(x_norm)
        if self.proj is not None:
            x = self.proj(x_norm)  # the shortcut is projected from the normalised input, as in MViTv2
        if self.pool_skip is not None:
            x = attention_pool(x, self.pool_skip)
        x = x + self.drop_path(x_block)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class MViT(Backbone):
    """The MViTv2 backbone with outputs ``scale2``-``scale5`` (strides 4-32), each layer-normalised.

    Args:
        img_size: input size the relative position tables are sized for (other sizes interpolate them).
        patch_kernel, patch_stride, patch_padding: the patch embedding conv.
        in_chans: input image channels.
        embed_dim: channels of the first stage (doubled at each stage).
        depth: number of blocks.
        num_heads: heads of the first stage (doubled at each stage).
        last_block_indexes: index of the last block of each of the four stages.
        qkv_pool_kernel: kernel of the attention pooling.
        adaptive_kv_stride: key/value pooling stride in the first stage (halved at each stage, at least 1).
        adaptive_window_size: attention window side in the first stage (halved at each stage).
        residual_pooling: add the pooled queries to the attention output.
        mlp_ratio: MLP hidden channels / channels.
        qkv_bias: learn a bias in the query/key/value projections.
        drop_path_rate: stochastic depth rate of the last block (linearly increasing from 0).
        norm_layer: ``dim -> norm module`` (channels-last).
        act_layer: activation class.
        use_abs_pos: add absolute position embeddings (sized for ``pretrain_img_size``, interpolated).
        use_rel_pos: add decomposed relative position biases.
        rel_pos_zero_init: zero-initialise the relative position tables.
        use_act_checkpoint: recompute block activations in the backward pass.
        pretrain_img_size: pre-training image size (absolute position grid).
        pretrain_use_cls_token: whether pre-trained position embeddings include a class token.
        out_features: names of the outputs, among ``scale2``-``scale5``.
    """

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_kernel: tuple[int, int] = (7, 7),
        patch_stride: tuple[int, int] = (4, 4),
        patch_padding: tuple[int, int] = (3, 3),
        in_chans: int = 3,
        embed_dim: int = 96,
        depth: int = 16,
        num_heads: int = 1,
        last_block_indexes: Sequence[int] = (0, 2, 11, 15),
        qkv_pool_kernel: tuple[int, int] = (3, 3),
        adaptive_kv_stride: int = 4,
        adaptive_window_size: int = 56,
        residual_pooling: bool = True,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        norm_layer: _NormLayer = nn.LayerNorm,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        use_abs_pos: bool = False,
        use_rel_pos: bool = True,
        rel_pos_zero_init: bool = True,
        use_act_checkpoint: bool = False,
        pretrain_img_size: int = 224,
        pretrain_use_cls_token: bool = True,
        out_features: Sequence[str] = ("scale2", "scale3", "scale4", "scale5"),
    ):
        super().__init__()
        last_block_indexes = tuple(last_block_indexes)
        if len(last_block_indexes) != 4 or list(last_block_indexes) != sorted(last_block_indexes):
            raise ValueError(f"MViT: last_block_indexes must be 4 increasing indexes, got {last_block_indexes}.")
        if last_block_indexes[-1] != depth - 1:
            raise ValueError(
                f"MViT: the last stage must end at block depth - 1 = {depth - 1}, got {last_block_indexes}."
            )
        self.pretrain_use_cls_token = pretrain_use_cls_token
        self.use_act_checkpoint = use_act_checkpoint
        self.patch_embed = PatchEmbed(
            kernel_size=patch_kernel, stride=patch_stride, padding=patch_padding, in_chans=in_chans, embed_dim=embed_dim
        )
        if use_abs_pos:
            num_patches = (pretrain_img_size // patch_stride[0]) * (pretrain_img_size // patch_stride[1])
            num_positions = num_patches + 1 if pretrain_use_cls_token else num_patches
            self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, embed_dim))
        else:
            self.pos_embed = None

        drop_path_rates = linear_drop_path_rates(drop_path_rate, depth)
        dim_out = embed_dim
        stride_kv = adaptive_kv_stride
        window_size = adaptive_window_size
        input_size = (img_size // patch_stride[0], img_size // patch_stride[1])
        stage, stride = 2, patch_stride[0]
        self._out_feature_strides: dict[str, int] = {}
        self._out_feature_channels: dict[str, int] = {}
        self.blocks = nn.ModuleList()
        for i in range(depth):
            # the last blocks of stages 3 and 4 attend globally: pool their keys/values twice as much
            block_stride_kv = stride_kv * 2 if i in (last_block_indexes[1], last_block_indexes[2]) else stride_kv
            self.blocks.append(
                MultiScaleBlock(
                    dim=embed_dim,
                    dim_out=dim_out,
                    num_heads=num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop_path=drop_path_rates[i],
                    norm_layer=norm_layer,
                    act_layer=act_layer,
                    qkv_pool_kernel=qkv_pool_kernel,
                    stride_q=2 if i - 1 in last_block_indexes else 1,
                    stride_kv=block_stride_kv,
                    residual_pooling=residual_pooling,
                    # hybrid window attention: global attention at the last block of stages 3-5
                    window_size=0 if i in last_block_indexes[1:] else window_size,
                    use_rel_pos=use_rel_pos,
                    rel_pos_zero_init=rel_pos_zero_init,
                    input_size=input_size,
                )
            )
            embed_dim = dim_out
            if i in last_block_indexes:
                name = f"scale{stage}"
                if name in out_features:
                    self._out_feature_channels[name] = dim_out
                    self._out_feature_strides[name] = stride
                    self.add_module(f"{name}_norm", norm_layer(dim_out))
                dim_out *= 2
                num_heads *= 2
                stride_kv = max(stride_kv // 2, 1)
                stride *= 2
                stage += 1
            if i - 1 in last_block_indexes:
                # the first block of a stage pooled its queries: the next blocks see a halved grid
                window_size //= 2
                input_size = (input_size[0] // 2, input_size[1] // 2)

        unknown = [f for f in out_features if f not in self._out_feature_channels]
        if unknown:
            raise ValueError(f"MViT: out_features {unknown} are not among scale2..scale5.")
        self._out_features = list(out_features)
        self._last_block_indexes = last_block_indexes

        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(_init_transformer_weights)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tensor[B, in_chans, H, W] -> {"scale{k}": Tensor[B, C_k, H / 2**k, W / 2**k]}."""
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + get_abs_pos(self.pos_embed, self.pretrain_use_cls_token, (x.shape[1], x.shape[2]))
        outputs = {}
        stage = 2
        for i, block in enumerate(self.blocks):
            x = checkpoint(block, x, use_reentrant=False) if self.use_act_checkpoint and self.training else block(x)
            if i in self._last_block_indexes:
                name = f"scale{stage}"
                if name in self._out_features:
                    outputs[name] = getattr(self, f"{name}_norm")(x).permute(0, 3, 1, 2)
                stage += 1
        return outputs

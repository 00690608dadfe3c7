"""Building blocks shared by the transformer backbones (ViT, MViTv2, Swin): window partitioning, decomposed
relative position biases, absolute position embedding interpolation, patch embedding, MLP and drop path
(detectron2's ``modeling/backbone/utils.py``).

Feature maps inside these backbones are channels-last: ``Tensor[B, H, W, C]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DropPath",
    "Mlp",
    "PatchEmbed",
    "add_decomposed_rel_pos",
    "get_abs_pos",
    "get_rel_pos",
    "layer_norm",
    "linear_drop_path_rates",
    "window_partition",
    "window_unpartition",
]


def layer_norm(eps: float = 1e-6) -> Callable[[int], nn.LayerNorm]:
    """A ``norm_layer`` factory: ``layer_norm(eps)(dim)`` is ``nn.LayerNorm(dim, eps=eps)``.

    Configs write ``norm_layer=L(layer_norm)(eps=1e-6)`` instead of ``functools.partial(nn.LayerNorm,
    eps=1e-6)`` so that they stay saveable as YAML.
    """
    return partial(nn.LayerNorm, eps=eps)


def linear_drop_path_rates(drop_path_rate: float, depth: int) -> list[float]:
    """Stochastic depth rates rising linearly from 0 at the first block to ``drop_path_rate`` at the last
    (computed in Python, so models can be built on the meta device)."""
    if depth <= 1:
        return [0.0] * depth
    return [drop_path_rate * i / (depth - 1) for i in range(depth)]


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Split a feature map into non-overlapping windows, zero-padding the bottom/right to a multiple of the window.

    Args:
        x: Tensor[B, H, W, C].
        window_size: side of the square windows.

    Returns:
        windows: Tensor[B * num_windows, window_size, window_size, C], row-major over the padded map.
        (Hp, Wp): the padded height and width.
    """
    B, H, W, C = x.shape
    pad_h = (window_size - H % window_size) % window_size
    pad_w = (window_size - W % window_size) % window_size
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    x = x.view(B, Hp // window_size, window_size, Wp // window_size, window_size, C)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, C)
    return windows, (Hp, Wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: reassemble windows and drop the padding.

    Args:
        windows: Tensor[B * num_windows, window_size, window_size, C].
        window_size: side of the windows.
        pad_hw: (Hp, Wp), the padded size returned by :func:`window_partition`.
        hw: (H, W), the size before padding.

    Returns:
        Tensor[B, H, W, C].
    """
    Hp, Wp = pad_hw
    H, W = hw
    B = windows.shape[0] // (Hp * Wp // window_size // window_size)
    x = windows.view(B, Hp // window_size, Wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)
    if Hp > H or Wp > W:
        x = x[:, :H, :W, :].contiguous()
    return x


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative position embeddings for every (query, key) pair along one axis.

    The table holds one embedding per relative offset. When the query and key axes have different lengths
    (pooled attention), the coarser axis is stretched so that both span the same extent. A table learnt for
    another size (e.g. a different window or input size) is linearly interpolated to ``2 * max(q, k) - 1``.

    Args:
        q_size: query length along the axis.
        k_size: key length along the axis.
        rel_pos: Tensor[L, C], the table (``L = 2 * size - 1`` for the size it was made for).

    Returns:
        Tensor[q_size, k_size, C].
    """
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        # (L, C) -> (1, C, L) -> interpolate over L -> (max_rel_dist, C)
        resized = F.interpolate(rel_pos.t().unsqueeze(0), size=max_rel_dist, mode="linear")
        rel_pos = resized.squeeze(0).t()
    # scale the coordinates of the shorter axis so both axes cover the same extent
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative_coords = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative_coords.long()]


def add_decomposed_rel_pos(
    attn: torch.Tensor,
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> torch.Tensor:
    """Add MViTv2's decomposed relative position bias ``q . R_h + q . R_w`` to attention logits
    (https://arxiv.org/abs/2112.01526).

    Args:
        attn: Tensor[B, q_h * q_w, k_h * k_w], attention logits.
        q: Tensor[B, q_h * q_w, C], the (unscaled) queries.
        rel_pos_h, rel_pos_w: Tensor[L, C], relative position tables of the height and width axes.
        q_size: (q_h, q_w).
        k_size: (k_h, k_w).

    Returns:
        Tensor[B, q_h * q_w, k_h * k_w].
    """
    q_h, q_w = q_size
    k_h, k_w = k_size
    Rh = get_rel_pos(q_h, k_h, rel_pos_h)  # (q_h, k_h, C)
    Rw = get_rel_pos(q_w, k_w, rel_pos_w)  # (q_w, k_w, C)
    B, _, dim = q.shape
    r_q = q.reshape(B, q_h, q_w, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, Rh)  # (B, q_h, q_w, k_h)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, Rw)  # (B, q_h, q_w, k_w)
    attn = attn.view(B, q_h, q_w, k_h, k_w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return attn.view(B, q_h * q_w, k_h * k_w)


def get_abs_pos(abs_pos: torch.Tensor, has_cls_token: bool, hw: tuple[int, int]) -> torch.Tensor:
    """Absolute position embeddings for an ``hw`` grid, bicubically interpolated from the pre-training grid.

    Pre-trained ViTs (MAE, ImageNet) learn embeddings for a square grid (e.g. 14 x 14 at 224 px with 16 px
    patches) plus a class token; detection inputs are larger, so the grid is resized at every forward pass
    and the class token's embedding is dropped. The stored parameter keeps its pre-training shape, so
    pre-trained checkpoints load unchanged.

    Args:
        abs_pos: Tensor[1, num_positions, C], ``num_positions = S * S (+ 1 with a class token)``.
        has_cls_token: whether ``abs_pos[:, 0]`` is the class token's embedding.
        hw: (H, W) of the patch grid.

    Returns:
        Tensor[1, H, W, C].
    """
    h, w = hw
    if has_cls_token:
        abs_pos = abs_pos[:, 1:]
    num_positions = abs_pos.shape[1]
    size = int(math.sqrt(num_positions))
    if size * size != num_positions:
        raise ValueError(
            f"get_abs_pos: {num_positions} position embeddings (without class token) do not form a square grid; "
            f"check `pretrain_use_cls_token` (has_cls_token={has_cls_token})."
        )
    grid = abs_pos.reshape(1, size, size, -1)
    if size == h and size == w:
        return grid
    resized = F.interpolate(grid.permute(0, 3, 1, 2), size=(h, w), mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    """Image to patch embeddings: a strided convolution, output channels-last.

    Args:
        kernel_size: kernel of the projection.
        stride: stride of the projection.
        padding: padding of the projection.
        in_chans: input image channels.
        embed_dim: embedding dimension.
    """

    def __init__(
        self,
        kernel_size: tuple[int, int] = (16, 16),
        stride: tuple[int, int] = (16, 16),
        padding: tuple[int, int] = (0, 0),
        in_chans: int = 3,
        embed_dim: int = 768,
    ):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[B, in_chans, H, W] -> Tensor[B, H', W', embed_dim]."""
        return self.proj(x).permute(0, 2, 3, 1)


class Mlp(nn.Module):
    """The transformer feed-forward block ``fc2(drop(act(fc1(x))))`` on the last dimension (keys ``fc1``, ``fc2``).

    Args:
        in_features: input dimension.
        hidden_features: hidden dimension (default: ``in_features``).
        out_features: output dimension (default: ``in_features``).
        act_layer: activation class.
        drop: dropout after the activation and after ``fc2``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        drop: float = 0.0,
    ):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[..., in_features] -> Tensor[..., out_features]."""
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth (https://arxiv.org/abs/1603.09382): in training, zero a residual branch for a random
    ``drop_prob`` fraction of the samples and scale the kept ones by ``1 / (1 - drop_prob)``; identity in eval.

    Args:
        drop_prob: probability of dropping the branch of a sample.
    """

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"DropPath: drop_prob must be in [0, 1), got {drop_prob}.")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[B, ...] -> Tensor[B, ...]."""
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # one draw per sample
        mask = x.new_empty(mask_shape).bernoulli_(keep_prob)
        return x * mask / keep_prob

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"

"""Positional encodings of a feature map for the DETR transformer.

Both encodings take the padding mask of the batch: padded pixels must not shift the coordinates of real ones, so
that an image gets the same encoding whatever it is batched with.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["PositionEmbeddingLearned", "PositionEmbeddingSine"]


class PositionEmbeddingSine(nn.Module):
    """Sine/cosine encoding of the (normalised) row and column of every unpadded pixel (the DETR paper's).

    Args:
        num_pos_feats: channels per axis; the output has ``2 * num_pos_feats`` channels (y first, then x).
        temperature: base of the geometric frequency progression.
        normalize: divide the coordinates by the image's own (unpadded) height / width and multiply by
            ``scale``, so that the encoding spans the same range for every image size.
        scale: the range of normalised coordinates (``2 * pi`` by default).
    """

    def __init__(
        self,
        *,
        num_pos_feats: int = 128,
        temperature: float = 10000.0,
        normalize: bool = True,
        scale: float | None = None,
    ):
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("PositionEmbeddingSine: `scale` is only used with normalize=True.")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            mask: (N, H, W) bool, True at padded pixels.

        Returns:
            (N, 2 * num_pos_feats, H, W) float32 encoding (zero-based coordinates count only unpadded pixels).
        """
        not_mask = (~mask).to(torch.float32)
        # cumulative counts of real pixels: 1-based row / column index inside the unpadded image
        y_embed = not_mask.cumsum(1)
        x_embed = not_mask.cumsum(2)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = x_embed[:, :, :, None] / dim_t  # (N, H, W, F)
        pos_y = y_embed[:, :, :, None] / dim_t
        # interleave sin (even channels) and cos (odd channels)
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class PositionEmbeddingLearned(nn.Module):
    """Learned absolute encoding: one embedding per row and per column (the paper's ablation).

    Args:
        num_pos_feats: channels per axis; the output has ``2 * num_pos_feats`` channels (x first, then y, as in
            the official release).
        max_size: largest feature-map height / width supported.
    """

    def __init__(self, *, num_pos_feats: int = 128, max_size: int = 50):
        super().__init__()
        self.row_embed = nn.Embedding(max_size, num_pos_feats)
        self.col_embed = nn.Embedding(max_size, num_pos_feats)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            mask: (N, H, W) bool, True at padded pixels. A learned table indexes absolute positions, which
                padding at the bottom / right never moves, so only its shape is used.

        Returns:
            (N, 2 * num_pos_feats, H, W) encoding.
        """
        n, h, w = mask.shape
        max_size = self.row_embed.num_embeddings
        if h > max_size or w > max_size:
            raise ValueError(
                f"PositionEmbeddingLearned: feature map {h}x{w} exceeds max_size={max_size}; raise `max_size`."
            )
        i = torch.arange(w, device=mask.device)
        j = torch.arange(h, device=mask.device)
        x_emb = self.col_embed(i)  # (W, F)
        y_emb = self.row_embed(j)  # (H, F)
        pos = torch.cat([x_emb.unsqueeze(0).expand(h, -1, -1), y_emb.unsqueeze(1).expand(-1, w, -1)], dim=-1)
        return pos.permute(2, 0, 1).unsqueeze(0).expand(n, -1, -1, -1)

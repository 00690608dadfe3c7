"""The DETR encoder-decoder transformer (post-norm, as in the paper and the official release).

Sequences are batch-first: ``(N, L, C)``. Positional encodings are added to the queries and keys of every
attention (never to the values); the object queries are positional encodings of the decoder, whose content
starts at zero.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Transformer",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
]

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def _activation(name: str):
    if name not in _ACTIVATIONS:
        raise ValueError(f"DETR transformer: unknown activation {name!r}; expected one of {sorted(_ACTIVATIONS)}.")
    return _ACTIVATIONS[name]


def _with_pos(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return x if pos is None else x + pos


class TransformerEncoderLayer(nn.Module):
    """Self-attention then feed-forward, each followed by residual + LayerNorm (post-norm).

    Args:
        d_model: width of the sequence.
        nhead: attention heads.
        dim_feedforward: hidden width of the feed-forward network.
        dropout: dropout after attention, inside and after the feed-forward network.
        activation: "relu" or "gelu".
    """

    def __init__(
        self, *, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1, activation: str = "relu"
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = _activation(activation)

    def forward(self, src: torch.Tensor, *, key_padding_mask: torch.Tensor | None, pos: torch.Tensor | None):
        """
        Args:
            src: (N, HW, C) flattened feature map.
            key_padding_mask: (N, HW) bool, True at padded pixels (ignored as keys).
            pos: (N, HW, C) positional encoding.

        Returns:
            (N, HW, C).
        """
        q = k = _with_pos(src, pos)
        attn = self.self_attn(q, k, src, key_padding_mask=key_padding_mask, need_weights=False)[0]
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


class TransformerDecoderLayer(nn.Module):
    """Self-attention among the object queries, cross-attention to the encoder memory, feed-forward; each with
    residual + LayerNorm (post-norm). Arguments as :class:`TransformerEncoderLayer`."""

    def __init__(
        self, *, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1, activation: str = "relu"
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = _activation(activation)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        *,
        memory_key_padding_mask: torch.Tensor | None,
        pos: torch.Tensor | None,
        query_pos: torch.Tensor | None,
    ) -> torch.Tensor:
        """
        Args:
            tgt: (N, Q, C) decoder content.
            memory: (N, HW, C) encoder output.
            memory_key_padding_mask: (N, HW) bool, True at padded pixels.
            pos: (N, HW, C) positional encoding of the memory.
            query_pos: (N, Q, C) object queries.

        Returns:
            (N, Q, C).
        """
        q = k = _with_pos(tgt, query_pos)
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, tgt, need_weights=False)[0]))
        attn = self.multihead_attn(
            _with_pos(tgt, query_pos),
            _with_pos(memory, pos),
            memory,
            key_padding_mask=memory_key_padding_mask,
            need_weights=False,
        )[0]
        tgt = self.norm2(tgt + self.dropout2(attn))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))


def _clones(layer: nn.Module, n: int) -> nn.ModuleList:
    # independent copies (each initialised with the same values, then trained separately), as the paper does
    return nn.ModuleList([copy.deepcopy(layer) for _ in range(n)])


class TransformerEncoder(nn.Module):
    """``num_layers`` copies of ``encoder_layer`` (post-norm: no final norm)."""

    def __init__(self, *, encoder_layer: TransformerEncoderLayer, num_layers: int):
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers)

    def forward(self, src: torch.Tensor, *, key_padding_mask: torch.Tensor | None, pos: torch.Tensor | None):
        for layer in self.layers:
            src = layer(src, key_padding_mask=key_padding_mask, pos=pos)
        return src


class TransformerDecoder(nn.Module):
    """``num_layers`` copies of ``decoder_layer`` and a LayerNorm applied to the output of every layer (those of
    the earlier layers feed the auxiliary losses)."""

    def __init__(self, *, decoder_layer: TransformerDecoderLayer, num_layers: int, d_model: int):
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt, memory, *, memory_key_padding_mask, pos, query_pos) -> torch.Tensor:
        """Returns: (num_layers, N, Q, C) normalised output of every layer."""
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, memory, memory_key_padding_mask=memory_key_padding_mask, pos=pos, query_pos=query_pos)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)


class Transformer(nn.Module):
    """DETR's encoder-decoder.

    Args:
        d_model: width (256 in the paper).
        nhead: attention heads (8).
        num_encoder_layers, num_decoder_layers: depths (6 and 6).
        dim_feedforward: feed-forward hidden width (2048).
        dropout: dropout rate (0.1).
        activation: "relu" (the paper) or "gelu".
    """

    def __init__(
        self,
        *,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
    ):
        super().__init__()
        if d_model % nhead != 0:
            raise ValueError(f"DETR Transformer: d_model={d_model} must be divisible by nhead={nhead}.")
        layer_args = dict(
            d_model=d_model, nhead=nhead, dim_feedforward=dim_feedforward, dropout=dropout, activation=activation
        )
        self.encoder = TransformerEncoder(
            encoder_layer=TransformerEncoderLayer(**layer_args), num_layers=num_encoder_layers
        )
        self.decoder = TransformerDecoder(
            decoder_layer=TransformerDecoderLayer(**layer_args), num_layers=num_decoder_layers, d_model=d_model
        )
        self.d_model = d_model
        self.nhead = nhead
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(
        self, src: torch.Tensor, mask: torch.Tensor, query_embed: torch.Tensor, pos_embed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            src: (N, C, H, W) projected backbone features.
            mask: (N, H, W) bool, True at padded pixels.
            query_embed: (Q, C) object queries.
            pos_embed: (N, C, H, W) positional encoding.

        Returns:
            hs: (num_decoder_layers, N, Q, C) output of every decoder layer.
            memory: (N, C, H, W) encoder output.
        """
        n, c, h, w = src.shape
        src = src.flatten(2).transpose(1, 2)  # (N, HW, C)
        pos = pos_embed.flatten(2).transpose(1, 2).to(src.dtype)
        key_padding_mask = mask.flatten(1)
        query_pos = query_embed.unsqueeze(0).expand(n, -1, -1)
        tgt = torch.zeros_like(query_pos)
        memory = self.encoder(src, key_padding_mask=key_padding_mask, pos=pos)
        hs = self.decoder(tgt, memory, memory_key_padding_mask=key_padding_mask, pos=pos, query_pos=query_pos)
        return hs, memory.transpose(1, 2).reshape(n, c, h, w)

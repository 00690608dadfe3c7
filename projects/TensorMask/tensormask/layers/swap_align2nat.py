"""``SwapAlign2Nat``: TensorMask's aligned -> natural mask representation, as a compiled op and its twin.

The input ``X[N, V*V, H, W]`` holds a ``V x V`` mask per location in the *aligned* representation; the output
``Y[N, (λV)², ⌈H/λ⌉, ⌈W/λ⌉]`` holds ``λV x λV`` masks in the *natural* representation, one per location of a
λ-times coarser grid. Output mask pixel ``(v, u)`` of window ``(y, x)`` is a 4-D multilinear sample of ``X``
at::

    spatial row    y·λ + v - λV/2 + 0.5        mask row     (v + 0.5)/λ - 0.5
    spatial column x·λ + u - λV/2 + 0.5        mask column  (u + 0.5)/λ - 0.5

between ``floor(p)`` and ``floor(p) + 1`` on each axis; a corner outside ``X`` on any axis contributes
``pad_val`` (-6 by default: a logit of "background"). With ``λ = 1`` and an odd ``V`` every position is an
integer and the op is an exact shift. These are the semantics of detectron2's TensorMask ``SwapAlign2Nat``
(which exists only as a CUDA kernel there); here the compiled op has CPU and CUDA kernels
(``projects/TensorMask/csrc/swap_align2nat``), built on first use, and the pure-PyTorch twin below serves
wherever no kernel is available.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from libdet.utils.compiled_ops import register_op

__all__ = ["SWAP_ALIGN2NAT_OP", "SwapAlign2Nat", "swap_align2nat"]

_CSRC = Path(__file__).resolve().parents[2] / "csrc" / "swap_align2nat"


def _geometry(channels: int, height: int, width: int, lambda_val: int) -> tuple[int, int, int, int]:
    """``(V, λV, ⌈H/λ⌉, ⌈W/λ⌉)`` of an input with ``channels`` = V·V, or a ValueError."""
    side = math.isqrt(channels)
    if side * side != channels:
        raise ValueError(
            f"swap_align2nat: the input's channels must be a square number V*V (a V x V mask per location), "
            f"got {channels}."
        )
    return side, lambda_val * side, -(-height // lambda_val), -(-width // lambda_val)


def swap_align2nat(X: Tensor, lambda_val: int, pad_val: float = -6.0) -> Tensor:
    """Aligned -> natural representation (see the module docstring).

    Args:
        X: ``Tensor[N, V*V, H, W]`` of aligned masks (floating point).
        lambda_val: integer ``λ >= 1``: the output grid is λ times coarser, its masks λ times larger.
        pad_val: the value read outside ``X``.

    Returns:
        ``Tensor[N, (λV)², ⌈H/λ⌉, ⌈W/λ⌉]`` of ``X``'s dtype (float16/bfloat16 are computed in float32).
        Differentiable with respect to ``X``.
    """
    if X.dim() != 4:
        raise ValueError(f"swap_align2nat: `X` must have shape [N, V*V, H, W], got {tuple(X.shape)}.")
    if not X.is_floating_point():
        raise TypeError(f"swap_align2nat: `X` must be floating point, got {X.dtype}.")
    if isinstance(lambda_val, bool) or int(lambda_val) != lambda_val or lambda_val < 1:
        raise ValueError(f"swap_align2nat: `lambda_val` must be an integer >= 1, got {lambda_val!r}.")
    _geometry(X.shape[1], X.shape[2], X.shape[3], int(lambda_val))
    orig_dtype = X.dtype
    if orig_dtype in (torch.float16, torch.bfloat16):
        X = X.float()
    return SWAP_ALIGN2NAT_OP(X, int(lambda_val), float(pad_val)).to(orig_dtype)


class SwapAlign2Nat(nn.Module):
    """Module form of :func:`swap_align2nat` (detectron2's ``tensormask.layers.SwapAlign2Nat``).

    Args:
        lambda_val: integer ``λ >= 1``, the ratio of the output masks' size to the input masks' size.
        pad_val: the value read outside the input (a background logit).

    ``forward(X: Tensor[N, V*V, H, W]) -> Tensor[N, (λV)², ⌈H/λ⌉, ⌈W/λ⌉]``.
    """

    def __init__(self, lambda_val: int, pad_val: float = -6.0):
        super().__init__()
        if isinstance(lambda_val, bool) or int(lambda_val) != lambda_val or lambda_val < 1:
            raise ValueError(f"SwapAlign2Nat: `lambda_val` must be an integer >= 1, got {lambda_val!r}.")
        self.lambda_val = int(lambda_val)
        self.pad_val = float(pad_val)

    def forward(self, X: Tensor) -> Tensor:
        return swap_align2nat(X, self.lambda_val, self.pad_val)

    def extra_repr(self) -> str:
        return f"lambda_val={self.lambda_val}, pad_val={self.pad_val}"


def _axis_samples(position: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Linear samples at float64 ``position``: indices ``[..., 2]`` (floor, floor + 1; clamped into range) and
    weights ``[..., 2]`` (0 for an index outside ``[0, size)``)."""
    low = torch.floor(position)
    t = position - low
    index = torch.stack([low, low + 1], dim=-1).long()
    weight = torch.stack([1 - t, t], dim=-1)
    inside = (index >= 0) & (index < size)
    return index.clamp(0, max(size - 1, 0)), torch.where(inside, weight, torch.zeros_like(weight))


def _swap_align2nat_twin(X: Tensor, lambda_val: int, pad_val: float) -> Tensor:
    """Pure-PyTorch twin of the kernels (autograd gives the backward).

    The sample is multilinear with separable weights, so it is computed as two 2-D gathers: first the
    (mask row, spatial row) pairs, then the (mask column, spatial column) pairs, each a weighted sum of four
    ``index_select``s with out-of-range corners weighted 0. Out-of-range corners add ``pad_val`` times their
    total weight, which is ``1 - (in-range weight of each axis, multiplied)``.
    """
    n, channels, height, width = X.shape
    side, side_out, height_out, width_out = _geometry(channels, height, width, lambda_val)
    if n * side * height * width == 0:
        # Empty output (or input): zeros that stay in the graph.
        return X.new_zeros((n, side_out * side_out, height_out, width_out)) + X.sum() * 0
    device = X.device
    f64 = dict(dtype=torch.float64, device=device)
    sub = torch.arange(side_out, **f64)
    mask_index, mask_weight = _axis_samples((sub + 0.5) / lambda_val - 0.5, side)  # [S, 2]
    row_pos = torch.arange(height_out, **f64)[None, :] * lambda_val + sub[:, None] - side_out / 2 + 0.5
    col_pos = torch.arange(width_out, **f64)[None, :] * lambda_val + sub[:, None] - side_out / 2 + 0.5
    row_index, row_weight = _axis_samples(row_pos, height)  # [S, Hout, 2]
    col_index, col_weight = _axis_samples(col_pos, width)  # [S, Wout, 2]

    def gather_pairs(source: Tensor, mask_size: int, spatial_size: int, spatial_index: Tensor, spatial_weight: Tensor):
        """``source[mask_size * spatial_size, M]`` -> ``[S * out, M]``: sum over the 4 (mask, spatial) corners."""
        total = None
        for a in range(2):
            for c in range(2):
                flat = (mask_index[:, a, None] * spatial_size + spatial_index[..., c]).reshape(-1)
                weight = (mask_weight[:, a, None] * spatial_weight[..., c]).reshape(-1, 1).to(source.dtype)
                term = source.index_select(0, flat) * weight
                total = term if total is None else total + term
        return total

    # Rows: X[n, iv, iu, iy, ix] as [(iv, iy), (n, iu, ix)] -> [(v, y), (n, iu, ix)].
    source = X.reshape(n, side, side, height, width).permute(1, 3, 0, 2, 4).reshape(side * height, -1)
    rows = gather_pairs(source, side, height, row_index, row_weight)
    # Columns: [(v, y), (n, iu, ix)] as [(iu, ix), (v, y, n)] -> [(u, x), (v, y, n)].
    source = rows.reshape(side_out * height_out, n, side, width).permute(2, 3, 0, 1).reshape(side * width, -1)
    out = gather_pairs(source, side, width, col_index, col_weight)
    out = out.reshape(side_out, width_out, side_out, height_out, n).permute(4, 2, 0, 3, 1)  # [n, v, u, y, x]
    # The weight of the corners inside X, per output element; the rest reads pad_val.
    inside_rows = mask_weight.sum(-1)[:, None] * row_weight.sum(-1)  # [v, y]
    inside_cols = mask_weight.sum(-1)[:, None] * col_weight.sum(-1)  # [u, x]
    outside = 1 - inside_rows[:, None, :, None] * inside_cols[None, :, None, :]  # [v, u, y, x]
    out = out + (outside * pad_val).to(X.dtype)
    return out.reshape(n, side_out * side_out, height_out, width_out)


class _SwapAlign2NatFunction(torch.autograd.Function):
    """Autograd around the compiled forward/backward operators."""

    @staticmethod
    def forward(ctx, X: Tensor, lambda_val: int, pad_val: float) -> Tensor:
        ctx.lambda_val = lambda_val
        ctx.input_shape = tuple(X.shape)
        return torch.ops.tensormask.swap_align2nat_forward(X, lambda_val, pad_val)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        batch, channels, height, width = ctx.input_shape
        grad_input = torch.ops.tensormask.swap_align2nat_backward(
            grad_output, ctx.lambda_val, batch, channels, height, width
        )
        return grad_input, None, None


def _forward_fake(X: Tensor, lambda_val: int, pad_val: float) -> Tensor:
    _, side_out, height_out, width_out = _geometry(X.shape[1], X.shape[2], X.shape[3], lambda_val)
    return X.new_empty((X.shape[0], side_out * side_out, height_out, width_out))


def _backward_fake(gY: Tensor, lambda_val: int, batch_size: int, channel: int, height: int, width: int) -> Tensor:
    return gY.new_empty((batch_size, channel, height, width))


#: The compiled op (``projects/TensorMask/csrc/swap_align2nat``, forward and backward, CPU and CUDA); calling it
#: with ``(X, lambda_val, pad_val)`` runs the autograd Function around the kernels, or the twin.
SWAP_ALIGN2NAT_OP = register_op(
    "swap_align2nat",
    sources=_CSRC,
    schemas={
        "swap_align2nat_forward": "swap_align2nat_forward(Tensor X, int lambda_val, float pad_val) -> Tensor",
        "swap_align2nat_backward": "swap_align2nat_backward(Tensor gY, int lambda_val, int batch_size, "
        "int channel, int height, int width) -> Tensor",
    },
    fakes={"swap_align2nat_forward": _forward_fake, "swap_align2nat_backward": _backward_fake},
    twin=_swap_align2nat_twin,
    kernel=_SwapAlign2NatFunction.apply,
    namespace="tensormask",
)

"""RoIAlign over rotated regions: the compiled ``libdet::roi_align_rotated_*`` ops and their twin.

Semantics are detectron2's ``ROIAlignRotated``: a RoI ``(batch_index, cx, cy, w, h, angle)`` is given in
input-image coordinates (angle in degrees, counter-clockwise on screen); ``spatial_scale`` maps it to the
feature map, whose pixel centres sit at ``index + 0.5`` (the "aligned" half-pixel shift). Each output bin
averages ``grid_h x grid_w`` bilinear samples placed on a regular grid inside the bin; the grid is rotated
by the angle around the RoI centre. ``sampling_ratio > 0`` fixes the grid, ``<= 0`` uses
``ceil(roi_size / output_size)`` per RoI. Samples more than one pixel outside the map contribute 0, and
the average always divides by the number of grid points. With angle 0 this is exactly
``torchvision.ops.roi_align(..., aligned=True)`` of the RoI's axis-aligned box.

The twin mirrors ``csrc/roi_align_rotated/roi_align_rotated.h`` step by step; keep the two in sync.
Neither implementation gives gradients for the RoIs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

from libdet.utils.compiled_ops import libdet_csrc, register_op

__all__ = ["ROIAlignRotated", "roi_align_rotated"]

_DEGREES_TO_RADIANS = math.pi / 180.0
# The twin gathers at most about this many feature values per step (RoIs x bins x samples x channels).
_TWIN_ELEMENTS_PER_CHUNK = 1 << 23


def roi_align_rotated(
    input: Tensor,
    rois: Tensor,
    output_size: int | Sequence[int],
    spatial_scale: float,
    sampling_ratio: int,
) -> Tensor:
    """Pools a fixed-size feature from each rotated RoI.

    Args:
        input: ``Tensor[B, C, H, W]`` feature map (floating point).
        rois: ``Tensor[K, 6]``, rows ``(batch_index, cx, cy, w, h, angle_degrees)`` in image coordinates.
        output_size: ``(ph, pw)``, or an int for a square output.
        spatial_scale: factor from image to feature-map coordinates, e.g. ``1 / 16``.
        sampling_ratio: bilinear samples per bin along each axis; ``<= 0`` picks
            ``ceil(roi_size / output_size)`` per RoI.

    Returns:
        ``Tensor[K, C, ph, pw]`` of ``input``'s dtype. float16/bfloat16 inputs are pooled in float32 and
        cast back. Differentiable with respect to ``input`` (not ``rois``). Uses the compiled kernel when
        it is loaded and supports the device, else the pure-PyTorch twin.
    """
    if input.dim() != 4:
        raise ValueError(f"roi_align_rotated: `input` must have shape [B, C, H, W], got {tuple(input.shape)}.")
    if rois.dim() != 2 or rois.shape[1] != 6:
        raise ValueError(
            f"roi_align_rotated: `rois` must have shape [K, 6] (batch_index, cx, cy, w, h, angle), got {tuple(rois.shape)}."
        )
    if not input.is_floating_point():
        raise TypeError(f"roi_align_rotated: `input` must be floating point, got {input.dtype}.")
    if rois.device != input.device:
        raise ValueError(
            f"roi_align_rotated: `rois` and `input` must be on the same device, got {rois.device} and {input.device}."
        )
    pooled_height, pooled_width = (int(v) for v in _pair(output_size))
    if pooled_height <= 0 or pooled_width <= 0:
        raise ValueError(f"roi_align_rotated: `output_size` must be positive, got {output_size}.")
    orig_dtype = input.dtype
    if orig_dtype in (torch.float16, torch.bfloat16):
        input = input.float()
    rois = rois.to(input.dtype)
    args = ((pooled_height, pooled_width), float(spatial_scale), int(sampling_ratio))
    return ROI_ALIGN_ROTATED_OP(input, rois, *args).to(orig_dtype)


class ROIAlignRotated(nn.Module):
    """Module form of :func:`roi_align_rotated` (detectron2's ``ROIAlignRotated``).

    Args:
        output_size: ``(ph, pw)`` of each pooled feature, or an int for a square one.
        spatial_scale: factor from image to feature-map coordinates, e.g. ``1 / 16``.
        sampling_ratio: bilinear samples per bin along each axis; ``0`` picks
            ``ceil(roi_size / output_size)`` per RoI.

    ``forward(input: Tensor[B, C, H, W], rois: Tensor[K, 6]) -> Tensor[K, C, ph, pw]``.
    """

    def __init__(self, output_size: int | Sequence[int], spatial_scale: float, sampling_ratio: int):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio

    def forward(self, input: Tensor, rois: Tensor) -> Tensor:
        return roi_align_rotated(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio})"
        )


class _ROIAlignRotatedFunction(torch.autograd.Function):
    """Autograd around the compiled forward/backward ops (gradient for the input only)."""

    @staticmethod
    def forward(
        ctx, input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float, sampling_ratio: int
    ):
        ctx.save_for_backward(rois)
        ctx.output_size = output_size
        ctx.spatial_scale = spatial_scale
        ctx.sampling_ratio = sampling_ratio
        ctx.input_shape = tuple(input.shape)
        return torch.ops.libdet.roi_align_rotated_forward(
            input, rois, spatial_scale, output_size[0], output_size[1], sampling_ratio
        )

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        (rois,) = ctx.saved_tensors
        batch_size, channels, height, width = ctx.input_shape
        grad_input = torch.ops.libdet.roi_align_rotated_backward(
            grad_output,
            rois,
            ctx.spatial_scale,
            ctx.output_size[0],
            ctx.output_size[1],
            batch_size,
            channels,
            height,
            width,
            ctx.sampling_ratio,
        )
        return grad_input, None, None, None, None


def _roi_align_rotated_twin(
    input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float, sampling_ratio: int
) -> Tensor:
    """Vectorised bilinear sampling; differentiable through autograd with respect to ``input``.

    RoIs are processed in chunks of similar sampling-grid size (sorted by grid size), so that the gathered
    ``[k, ph, grid_h, pw, grid_w, C]`` block stays near ``_TWIN_ELEMENTS_PER_CHUNK`` elements.
    """
    pooled_height, pooled_width = output_size
    batch_size, channels, height, width = input.shape
    num_rois = rois.shape[0]
    if num_rois == 0 or height == 0 or width == 0 or channels == 0:
        # Zeros that are still part of the graph, so that backward works (and gives zeros).
        return input.new_zeros((num_rois, channels, pooled_height, pooled_width)) + input.reshape(-1)[:0].sum()
    rois = rois.detach()
    dtype = input.dtype
    scale = torch.tensor(spatial_scale, dtype=dtype, device=input.device)

    batch = rois[:, 0].long()
    batch_ok = (batch >= 0) & (batch < batch_size)
    if input.device.type == "cpu":
        if not bool(batch_ok.all()):
            bad = int((~batch_ok).nonzero()[0, 0])
            raise ValueError(
                f"roi_align_rotated: rois[{bad}, 0] is batch index {int(batch[bad])}, but the input has {batch_size} images."
            )
    else:
        # As the CUDA kernel: a RoI naming a missing image pools zeros (checking would need a device sync,
        # and an out-of-range gather would be a device-side assert). Clamp so the gather stays in range.
        batch = batch.clamp(0, batch_size - 1)
    center_x = rois[:, 1] * scale - 0.5
    center_y = rois[:, 2] * scale - 0.5
    roi_width = rois[:, 3] * scale
    roi_height = rois[:, 4] * scale
    theta = rois[:, 5] * torch.tensor(_DEGREES_TO_RADIANS, dtype=dtype, device=input.device)
    cos_theta = torch.cos(theta)
    sin_theta = torch.sin(theta)
    bin_w = roi_width / pooled_width
    bin_h = roi_height / pooled_height
    if sampling_ratio > 0:
        grid_w = torch.full((num_rois,), sampling_ratio, dtype=torch.int64, device=input.device)
        grid_h = grid_w
    else:
        grid_w = torch.ceil(roi_width / pooled_width).clamp(min=0).long()
        grid_h = torch.ceil(roi_height / pooled_height).clamp(min=0).long()
    start_w = -roi_width / 2
    start_h = -roi_height / 2
    count = (grid_h * grid_w).clamp(min=1).to(dtype)

    # Channels-last rows: feature[(b * H + y) * W + x] is the C-vector of pixel (y, x) of image b.
    feature = input.permute(0, 2, 3, 1).reshape(batch_size * height * width, channels)
    roi_params = (
        batch,
        batch_ok,
        center_x,
        center_y,
        cos_theta,
        sin_theta,
        start_w,
        start_h,
        bin_w,
        bin_h,
        grid_w,
        grid_h,
        count,
    )
    pieces = []
    order = []
    for idx, max_grid_h, max_grid_w in _twin_chunks(grid_h, grid_w, pooled_height * pooled_width * channels):
        chunk_params = [p[idx] for p in roi_params]
        pieces.append(
            _twin_pool_chunk(feature, chunk_params, height, width, pooled_height, pooled_width, max_grid_h, max_grid_w)
        )
        order.append(idx)
    output = torch.cat(pieces)[torch.argsort(torch.cat(order))]
    return output


def _twin_chunks(grid_h: Tensor, grid_w: Tensor, elements_per_sample: int):
    """Yields ``(roi indices, max grid_h, max grid_w)`` of RoI groups sorted by grid size."""
    gh = grid_h.tolist()
    gw = grid_w.tolist()
    order = sorted(range(len(gh)), key=lambda k: (gh[k] * gw[k], gh[k], gw[k]))
    device = grid_h.device
    start = 0
    while start < len(order):
        max_h, max_w, stop = 0, 0, start
        while stop < len(order):
            k = order[stop]
            new_h, new_w = max(max_h, gh[k]), max(max_w, gw[k])
            if (
                stop > start
                and (stop - start + 1) * max(new_h, 1) * max(new_w, 1) * elements_per_sample > _TWIN_ELEMENTS_PER_CHUNK
            ):
                break
            max_h, max_w, stop = new_h, new_w, stop + 1
        yield torch.tensor(order[start:stop], dtype=torch.int64, device=device), max_h, max_w
        start = stop


def _twin_pool_chunk(
    feature: Tensor,
    params: list[Tensor],
    height: int,
    width: int,
    pooled_height: int,
    pooled_width: int,
    max_grid_h: int,
    max_grid_w: int,
) -> Tensor:
    """Pools one group of ``k`` RoIs: returns ``[k, C, ph, pw]``."""
    batch, batch_ok, center_x, center_y, cos_theta, sin_theta, start_w, start_h, bin_w, bin_h, grid_w, grid_h, count = (
        params
    )
    k = batch.shape[0]
    channels = feature.shape[1]
    if max_grid_h == 0 or max_grid_w == 0:
        return feature.new_zeros((k, channels, pooled_height, pooled_width)) + feature[:0].sum()
    dtype = feature.dtype
    device = feature.device

    def col(t: Tensor) -> Tensor:  # [k] -> [k, 1, 1, 1, 1] for [k, ph, grid_h, pw, grid_w] broadcasting
        return t.view(k, 1, 1, 1, 1)

    ph = torch.arange(pooled_height, dtype=dtype, device=device).view(1, pooled_height, 1, 1, 1)
    pw = torch.arange(pooled_width, dtype=dtype, device=device).view(1, 1, 1, pooled_width, 1)
    iy = torch.arange(max_grid_h, device=device).view(1, 1, max_grid_h, 1, 1)
    ix = torch.arange(max_grid_w, device=device).view(1, 1, 1, 1, max_grid_w)
    # Same expression order as sample_position() in the kernel.
    gh = col(grid_h.clamp(min=1).to(dtype))
    gw = col(grid_w.clamp(min=1).to(dtype))
    yy = col(start_h) + ph * col(bin_h) + (iy.to(dtype) + 0.5) * col(bin_h) / gh
    xx = col(start_w) + pw * col(bin_w) + (ix.to(dtype) + 0.5) * col(bin_w) / gw
    y = yy * col(cos_theta) - xx * col(sin_theta) + col(center_y)
    x = yy * col(sin_theta) + xx * col(cos_theta) + col(center_x)
    in_grid = (iy < col(grid_h)) & (ix < col(grid_w)) & col(batch_ok)

    # Bilinear terms, as bilinear_terms() in the kernel.
    valid = in_grid & (y >= -1) & (y <= height) & (x >= -1) & (x <= width)
    zero = torch.zeros((), dtype=dtype, device=device)
    y = torch.where(valid, y.clamp(min=0), zero)
    x = torch.where(valid, x.clamp(min=0), zero)
    y_low = y.long().clamp(max=height - 1)
    x_low = x.long().clamp(max=width - 1)
    y = torch.where(y_low >= height - 1, y_low.to(dtype), y)
    x = torch.where(x_low >= width - 1, x_low.to(dtype), x)
    y_high = (y_low + 1).clamp(max=height - 1)
    x_high = (x_low + 1).clamp(max=width - 1)
    ly = y - y_low.to(dtype)
    lx = x - x_low.to(dtype)
    hy = 1 - ly
    hx = 1 - lx
    mask = valid.to(dtype)  # invalid samples (outside the map or the RoI's grid) contribute 0
    base = col(batch) * (height * width)
    total = None
    for yi, xi, weight in (
        (y_low, x_low, hy * hx),
        (y_low, x_high, hy * lx),
        (y_high, x_low, ly * hx),
        (y_high, x_high, ly * lx),
    ):
        index = (base + yi * width + xi).reshape(-1)
        term = feature.index_select(0, index) * (weight * mask).reshape(-1, 1)
        total = term if total is None else total + term
    # [k, ph, grid_h, pw, grid_w, C] -> sum over the samples -> [k, C, ph, pw]
    pooled = total.view(k, pooled_height, max_grid_h, pooled_width, max_grid_w, channels).sum(dim=(2, 4))
    return (pooled / count.view(k, 1, 1, 1)).permute(0, 3, 1, 2)


def _forward_fake(
    input: Tensor, rois: Tensor, spatial_scale: float, pooled_height: int, pooled_width: int, sampling_ratio: int
) -> Tensor:
    return input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))


def _backward_fake(
    grad: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    batch_size: int,
    channels: int,
    height: int,
    width: int,
    sampling_ratio: int,
) -> Tensor:
    return grad.new_empty((batch_size, channels, height, width))


#: The compiled op (``csrc/roi_align_rotated``, forward and backward); calling it with
#: ``(input, rois, output_size, spatial_scale, sampling_ratio)`` picks the autograd Function around the kernels
#: or the twin by device.
ROI_ALIGN_ROTATED_OP = register_op(
    "roi_align_rotated",
    sources=libdet_csrc("roi_align_rotated"),
    include_dirs=[libdet_csrc("common")],
    schemas={
        "roi_align_rotated_forward": "roi_align_rotated_forward(Tensor input, Tensor rois, float spatial_scale, "
        "int pooled_height, int pooled_width, int sampling_ratio) -> Tensor",
        "roi_align_rotated_backward": "roi_align_rotated_backward(Tensor grad, Tensor rois, float spatial_scale, "
        "int pooled_height, int pooled_width, int batch_size, int channels, int height, int width, "
        "int sampling_ratio) -> Tensor",
    },
    fakes={"roi_align_rotated_forward": _forward_fake, "roi_align_rotated_backward": _backward_fake},
    twin=_roi_align_rotated_twin,
    kernel=_ROIAlignRotatedFunction.apply,
)

"""ROIAlign (Mask R-CNN, https://arxiv.org/abs/1703.06870) on top of ``torchvision.ops.roi_align``.

On CPU, libdet's compiled ``roi_align`` op (``csrc/roi_align``) replaces torchvision's CPU kernels where they
are slow, with bit-identical results:

- the forward pass of a channels-last feature map (the default layout of libdet's CNN backbones on CPU, see
  ``libdet.layers.memory_format``): torchvision copies the map to NCHW and pools on one thread;
- the input gradient in training: torchvision's recomputes every bilinear weight once per channel, on one
  thread (4-13% of a Mask R-CNN training step before, ``benchmarks/README.md``).

Elsewhere (CUDA, float16, an NCHW map's forward pass, scripting, tracing, ``torch.compile``/``torch.export``,
``LIBDET_DISABLE_OPS=roi_align``, or when the op cannot be built) torchvision's kernels run.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair
from torchvision.ops import roi_align

from libdet.utils.compiled_ops import libdet_csrc, register_op

__all__ = ["ROIAlign", "roi_align"]


class ROIAlign(nn.Module):
    """Pool a fixed-size feature for each region of interest by bilinear sampling.

    Args:
        output_size: (h, w) of each pooled feature, or an int for a square one.
        spatial_scale: factor mapping box coordinates to feature-map coordinates, e.g. 1/16 for a
            stride-16 feature map.
        sampling_ratio: number of sampling points per bin along each axis; ``0`` (or negative)
            samples ``ceil(roi_size / output_size)`` points, adaptively per RoI.
        aligned: if True (the default, as in detectron2), shift box coordinates by -0.5 pixel so that
            the continuous coordinate of a pixel's centre is ``index + 0.5``, which removes the
            misalignment between the box and its sampling grid. ``False`` gives the legacy
            Detectron (Caffe2) behaviour. It matters little for detection but improves masks.

    ``forward(input, rois)`` returns ``Tensor[K, C, output_size[0], output_size[1]]``. Float16 inputs
    are pooled in float16 (boxes are cast to match); bfloat16 inputs are pooled in float32 and cast
    back, since torchvision's kernels do not support bfloat16 everywhere.
    """

    def __init__(
        self,
        output_size: int | tuple[int, int],
        spatial_scale: float,
        sampling_ratio: int,
        aligned: bool = True,
    ):
        super().__init__()
        self.output_size = output_size
        self._output_hw: tuple[int, int] = _pair(output_size)
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: Tensor[N, C, H, W] feature map.
            rois: Tensor[K, 5], each row (batch_index, x0, y0, x1, y1) in image coordinates (they
                are multiplied by ``spatial_scale``).

        Returns:
            Tensor[K, C, output_size[0], output_size[1]] of ``input``'s dtype.
        """
        if input.dim() != 4:
            raise ValueError(f"ROIAlign: `input` must have shape (N, C, H, W), got {input.shape}.")
        if rois.dim() != 2 or rois.shape[1] != 5:
            raise ValueError(
                f"ROIAlign: `rois` must have shape (K, 5) with rows (batch_index, x0, y0, x1, y1), got {rois.shape}."
            )
        if input.is_quantized:
            input = input.dequantize()
        out_dtype = input.dtype
        if out_dtype == torch.bfloat16:
            input = input.float()
        rois = rois.to(dtype=input.dtype)
        if torch.jit.is_scripting():
            out = roi_align(input, rois, self._output_hw, self.spatial_scale, self.sampling_ratio, self.aligned)
        else:
            out = _roi_align_eager(input, rois, self._output_hw, self.spatial_scale, self.sampling_ratio, self.aligned)
        return out.to(out_dtype)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned})"
        )


def _roi_align_eager(
    input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float, sampling_ratio: int, aligned: bool
) -> Tensor:
    """torchvision's ``roi_align``, with libdet's CPU kernels where they apply (see the module docstring)."""
    if not (
        input.device.type == "cpu"
        and input.dtype in (torch.float32, torch.float64)
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
        and ROI_ALIGN_OP.use_kernel(input.device)
    ):
        return roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)
    if input.requires_grad and torch.is_grad_enabled():
        return _ROIAlignFunction.apply(input, rois, output_size, spatial_scale, sampling_ratio, aligned)
    return _forward(input, rois, output_size, spatial_scale, sampling_ratio, aligned)


def _is_channels_last(input: Tensor) -> bool:
    return input.dim() == 4 and not input.is_contiguous() and input.is_contiguous(memory_format=torch.channels_last)


def _forward(
    input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float, sampling_ratio: int, aligned: bool
) -> Tensor:
    """libdet's kernel for a channels-last map (no NCHW copy, RoIs over threads), else torchvision's."""
    op = torch.ops.libdet.roi_align_forward if _is_channels_last(input) else torch.ops.torchvision.roi_align
    return op(input, rois, spatial_scale, output_size[0], output_size[1], sampling_ratio, aligned)


class _ROIAlignFunction(torch.autograd.Function):
    """The forward pass of :func:`_forward`; the input gradient from ``libdet::roi_align_backward`` (none for
    the RoIs)."""

    @staticmethod
    def forward(
        ctx,
        input: Tensor,
        rois: Tensor,
        output_size: tuple[int, int],
        spatial_scale: float,
        sampling_ratio: int,
        aligned: bool,
    ) -> Tensor:
        ctx.save_for_backward(rois)
        ctx.args = (output_size, spatial_scale, sampling_ratio, aligned)
        ctx.input_shape = tuple(input.shape)
        # Hand the gradient back in the input's layout, so that a channels-last network stays channels-last.
        ctx.channels_last = _is_channels_last(input)
        return _forward(input, rois, output_size, spatial_scale, sampling_ratio, aligned)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        (rois,) = ctx.saved_tensors
        (pooled_height, pooled_width), spatial_scale, sampling_ratio, aligned = ctx.args
        batch_size, channels, height, width = ctx.input_shape
        grad_input = torch.ops.libdet.roi_align_backward(
            grad_output.contiguous(),
            rois,
            spatial_scale,
            pooled_height,
            pooled_width,
            batch_size,
            channels,
            height,
            width,
            sampling_ratio,
            aligned,
            ctx.channels_last,
        )
        return grad_input, None, None, None, None, None


def _roi_align_forward_fake(
    input: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    return input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))


def _roi_align_backward_fake(
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
    aligned: bool,
    channels_last: bool,
) -> Tensor:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return grad.new_empty((batch_size, channels, height, width)).contiguous(memory_format=memory_format)


# No twin: the callers above check `use_kernel` and fall back to torchvision's kernels themselves.
ROI_ALIGN_OP = register_op(
    "roi_align",
    sources=libdet_csrc("roi_align"),
    include_dirs=[libdet_csrc("common")],
    schemas={
        "roi_align_forward": "roi_align_forward(Tensor input, Tensor rois, float spatial_scale, int pooled_height, "
        "int pooled_width, int sampling_ratio, bool aligned) -> Tensor",
        "roi_align_backward": "roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, int pooled_height, "
        "int pooled_width, int batch_size, int channels, int height, int width, int sampling_ratio, bool aligned, "
        "bool channels_last) -> Tensor",
    },
    fakes={"roi_align_forward": _roi_align_forward_fake, "roi_align_backward": _roi_align_backward_fake},
    cuda=False,
    fallback="torchvision's kernels",
)

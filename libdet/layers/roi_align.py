"""ROIAlign (Mask R-CNN, https://arxiv.org/abs/1703.06870) on top of ``torchvision.ops.roi_align``."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.utils import _pair
from torchvision.ops import roi_align

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
        out = roi_align(
            input,
            rois.to(dtype=input.dtype),
            self._output_hw,
            self.spatial_scale,
            self.sampling_ratio,
            self.aligned,
        )
        return out.to(out_dtype)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned})"
        )

"""The memory format convolutional backbones run in: channels-last on the CPU by default.

oneDNN, which runs PyTorch's CPU convolutions, works in NHWC: given NCHW tensors it reorders every
convolution's input and output. A backbone that makes its input channels-last once keeps every following
convolution, norm, activation, residual add and pooling in NHWC (PyTorch propagates the format), and so do
the FPN and the heads that consume its features. Measured on Mask R-CNN R50-FPN (800 x 1333, 2 threads;
``benchmarks/README.md``): inference and training steps both run faster; outputs differ only by rounding.
On CUDA the default stays NCHW (the detectron2 behaviour); pass ``channels_last=True`` to opt in there.
Eager and scripted models only (see :func:`to_backbone_memory_format`).
"""

from __future__ import annotations

import torch

__all__ = ["to_backbone_memory_format"]


def to_backbone_memory_format(x: torch.Tensor, channels_last: bool | None) -> torch.Tensor:
    """``x`` (``Tensor[N, C, H, W]``) in channels-last memory when ``channels_last`` is True, or when it is
    None and ``x`` is on the CPU; otherwise ``x`` unchanged. Same values and shape either way.

    Tracing, ``torch.compile`` and ``torch.export`` get ``x`` unchanged: exported graphs stay free of layout
    copies (their runtimes choose layouts themselves), and under dynamic shapes the channels-last
    contiguity check would specialise the batch size (a guard ``N > 1``).
    """
    if not torch.jit.is_scripting():
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return x
    if channels_last is None:
        channels_last = x.device.type == "cpu"
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x

"""Fast inference mode: make an eval-mode detector faster in place, keeping its call interface.

``optimize_for_inference(model)`` applies, each optional:

* ``fold_frozen_bn``: every convolution followed by a ``FrozenBatchNorm2d`` (or an eval-mode ``BatchNorm2d``)
  gets the affine transform folded into its weight and bias (one pass over the activations less per conv); float32 rounding only.
* ``channels_last``: 4-D weights and the backbone's input in NHWC layout, which oneDNN's CPU convolutions
  run faster than NCHW.
* ``bf16``: the convolution and fully-connected blocks (backbone, RPN head, box head, mask head layers) run
  under bfloat16 autocast and hand float32 back, so box decoding, NMS, scores and mask pasting stay float32.
  ``"auto"`` enables it on CPUs that compute bf16 natively (``avx512_bf16`` / ``amx_bf16``); elsewhere bf16
  is emulated and slower than float32, so it stays off (``bf16=True`` forces it).
* ``compile``: ``torch.compile`` of the backbone (static image sizes compile once per size).

The model keeps its type, attributes and ``forward`` signature (``model(batched_inputs)`` as before); its
``state_dict`` changes when FrozenBN is folded (the ``norm`` entries become conv biases), so save the
original model, not this one.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from libdet.layers.conv_bn_folding import fold_conv_batchnorm

__all__ = ["optimize_for_inference", "fold_conv_batchnorm"]

logger = logging.getLogger(__name__)

# Sub-modules (attribute paths) run under bf16 autocast, and the method of each that does the heavy work.
_BF16_BLOCKS: list[tuple[str, str]] = [
    ("backbone", "forward"),
    ("proposal_generator.rpn_head", "forward"),
    ("proposal_generator.head", "forward"),
    ("roi_heads.box_head", "forward"),
    ("roi_heads.mask_head", "layers"),
    ("roi_heads.keypoint_head", "layers"),
]


def _to_float32(x: Any) -> Any:
    """``x`` with every low-precision floating tensor in it (nested in dicts, lists, tuples) as float32."""
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() and x.dtype != torch.float32 else x
    if isinstance(x, dict):
        return {k: _to_float32(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_float32(v) for v in x)
    return x


def _bf16_call(fn: Callable, device_type: str, *args, **kwargs):
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
        out = fn(*args, **kwargs)
    return _to_float32(out)


def _get_path(model: nn.Module, path: str) -> nn.Module | None:
    module: Any = model
    for name in path.split("."):
        module = getattr(module, name, None)
        if module is None:
            return None
    return module if isinstance(module, nn.Module) else None


def _channels_last_input(module: nn.Module, args: tuple) -> tuple:
    if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
        return (args[0].contiguous(memory_format=torch.channels_last),) + tuple(args[1:])
    return args


def _model_device(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def optimize_for_inference(
    model: nn.Module,
    *,
    bf16: bool | str = "auto",
    channels_last: bool = True,
    compile: bool = True,
    fold_frozen_bn: bool = True,
    example_inputs: list[dict[str, Any]] | None = None,
) -> nn.Module:
    """Speed up an R-CNN-style detector (``backbone``, ``proposal_generator``, ``roi_heads``) for inference, in
    place; see the module docstring for what each option does.

    Args:
        model: the detector; put in eval mode.
        bf16: ``"auto"`` (bf16 autocast where the CPU computes it natively, or on CUDA with bf16 support),
            ``True`` or ``False``.
        channels_last: NHWC weights and backbone input.
        compile: ``torch.compile`` the backbone.
        fold_frozen_bn: fold ``FrozenBatchNorm2d`` (and eval-mode ``BatchNorm2d``) into their convolutions.
        example_inputs: if given, the model is run once on them (``torch.compile`` compiles on the first call;
            this moves that time out of the first real call).

    Returns:
        ``model`` itself (same object, same call interface).

    Raises:
        ValueError: ``bf16`` is not ``"auto"``, ``True`` or ``False``.
    """
    if bf16 not in ("auto", True, False):
        raise ValueError(f"optimize_for_inference: `bf16` must be 'auto', True or False, got {bf16!r}.")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    device = _model_device(model)
    if bf16 == "auto":
        if device.type == "cpu":
            from libdet.utils.env import cpu_has_native_bf16

            bf16 = cpu_has_native_bf16()
            if not bf16:
                logger.info("optimize_for_inference: this CPU has no native bf16 (avx512_bf16/amx_bf16); float32 kept.")
        else:
            bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()

    if fold_frozen_bn:
        fold_conv_batchnorm(model)
    backbone = getattr(model, "backbone", None)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        if backbone is not None:
            backbone.register_forward_pre_hook(_channels_last_input)
    if bf16:
        for path, method in _BF16_BLOCKS:
            module = _get_path(model, path)
            if module is not None and hasattr(module, method):
                # An instance attribute shadows the class method; nn.Module.__call__ calls self.forward.
                setattr(module, method, functools.partial(_bf16_call, getattr(module, method), device.type))
    if compile and backbone is not None:
        backbone.compile()
    if example_inputs is not None:
        with torch.inference_mode():
            model(example_inputs)
    return model

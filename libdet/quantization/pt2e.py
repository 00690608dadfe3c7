"""Static int8 post-training quantization of a detector's backbone (bottom-up network + FPN) with PyTorch 2
export quantization (PT2E): ``torch.export`` → ``prepare_pt2e`` with ``X86InductorQuantizer`` → calibration
→ ``convert_pt2e`` → ``torch.compile`` (Inductor fuses the quantize/dequantize pairs into int8 oneDNN kernels).

The backbone is where a two-stage or dense detector spends most of its CPU time, and it is a static graph of
convolutions; the RPN / ROI post-processing (top-k, NMS, ROIAlign, box decoding) stays in float, where
rounding would move boxes for little gain. The result is a drop-in module: :class:`QuantizedBackbone` has the
float backbone's inputs, outputs, ``output_shape()``, ``size_divisibility`` and ``padding_constraints``.

Needs ``torchao`` (``pip install 'libdet[quantization]'``), where the PT2E APIs live since they left
``torch.ao.quantization``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from libdet.modeling.backbone import Backbone

from .fold import fold_conv_norms

__all__ = [
    "QuantizedBackbone",
    "load_quantized_backbone",
    "quantize_backbone_pt2e",
    "quantize_pt2e",
    "record_backbone_inputs",
    "save_quantized_backbone",
]


def _torchao_pt2e():
    """The PT2E entry points of torchao (imported here: torchao is an optional dependency)."""
    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as e:
        raise RuntimeError(
            "libdet.quantization: PT2E quantization needs torchao: pip install 'libdet[quantization]'."
        ) from e
    return prepare_pt2e, convert_pt2e, x86


def _dynamic_shapes() -> tuple[dict[int, Any]]:
    # Batch size, height and width stay dynamic, so one quantized program serves every image size.
    auto = torch.export.Dim.AUTO
    return ({0: auto, 2: auto, 3: auto},)


def _export_sample(inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The largest recorded input, as a batch of at least two: torch.export specialises a dimension whose
    sample size is 1 (a batch of one, or a 1-pixel coarsest feature map of a small image)."""
    sample = max(inputs, key=lambda t: t.shape[-2] * t.shape[-1])
    return torch.cat([sample, sample]) if sample.shape[0] == 1 else sample


class QuantizedBackbone(Backbone):
    """An int8 backbone in place of a float one: the same ``forward(x) -> dict[str, Tensor]`` and shape
    contract, computed by a PT2E-quantized program (optionally compiled by Inductor).

    Args:
        program: the converted (quantized) ``GraphModule``; ``program(x)`` returns the feature dict.
        float_backbone: the backbone it replaces; only its shape contract is kept.
        example: an input ``(N, C, H, W)`` the program ran on (to export it again when saving).
        compile: run through ``torch.compile`` (Inductor, with weight freezing, dynamic sizes). Without it,
            the program computes in float with explicit quantize/dequantize steps: the same numbers, slower.
    """

    def __init__(self, *, program: nn.Module, float_backbone: nn.Module, example: torch.Tensor, compile: bool = True):
        super().__init__()
        self.program = program
        self._shapes = dict(float_backbone.output_shape())
        self._out_features = list(self._shapes)
        self._size_divisibility = int(getattr(float_backbone, "size_divisibility", 0))
        self._padding_constraints = dict(getattr(float_backbone, "padding_constraints", {}))
        self.register_buffer("example", example.detach().clone(), persistent=False)
        self.compiled = compile
        # Not a submodule: the compiled wrapper would register the program's weights a second time.
        self._runner = (torch.compile(program, dynamic=True) if compile else program,)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(N, C, H, W)`` normalised, padded images → ``{name: (N, C_i, H / s_i, W / s_i)}``."""
        if not self.compiled:
            with torch.no_grad():
                return dict(self.program(x))
        # Inductor turns quantize -> dequantize -> conv into an int8 oneDNN convolution only when it may treat
        # the weights as constants ("freezing", inference without autograd). Set for these calls only, as
        # the global config would change every other compiled model; `options={"freezing": True}` of
        # torch.compile does not reach that pass (torch 2.15).
        import torch._inductor.config as inductor_config

        # Always outside inference mode and on a normal tensor: Dynamo guards on both, and a caller under
        # torch.inference_mode (inference_on_dataset) would otherwise pay a second compilation (minutes).
        with torch.inference_mode(False), torch.no_grad(), inductor_config.patch(freezing=True):
            x = x.clone() if x.is_inference() else x
            return dict(self._runner[0](x))

    def train(self, mode: bool = True) -> QuantizedBackbone:
        """Inference only: ``eval()`` is a no-op (an exported program has no train/eval modes and refuses
        both), ``train()`` raises."""
        if mode:
            raise RuntimeError(
                "QuantizedBackbone is inference-only: train the float model and quantize it again afterwards."
            )
        self.training = False
        return self

    def output_shape(self):
        return dict(self._shapes)

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    @property
    def padding_constraints(self) -> dict[str, int]:
        return dict(self._padding_constraints)


def record_backbone_inputs(model: nn.Module, batches: Iterable[list[dict]], max_batches: int | None = None):
    """Run ``model`` (eval mode, no grad) on detectron2-style input batches and return the tensors its
    ``backbone`` received: normalised, padded ``(N, C, H, W)`` images, exactly as at inference.

    Raises:
        ValueError: if ``model`` has no ``backbone`` or no batch reached it.
    """
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ValueError(f"record_backbone_inputs: {type(model).__name__} has no `backbone` module to quantize.")
    recorded: list[torch.Tensor] = []
    handle = backbone.register_forward_pre_hook(lambda _m, args: recorded.append(args[0].detach().clone()))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                if max_batches is not None and i >= max_batches:
                    break
                model(batch)
    finally:
        handle.remove()
        model.train(was_training)
    if not recorded:
        raise ValueError("record_backbone_inputs: no calibration batch reached the backbone (empty loader?).")
    return recorded


def quantize_backbone_pt2e(
    backbone: nn.Module, calib_inputs: Sequence[torch.Tensor], compile: bool = True
) -> QuantizedBackbone:
    """Static int8 quantization of ``backbone`` (left unchanged) calibrated on ``calib_inputs``.

    Args:
        backbone: a :class:`Backbone` (e.g. FPN over a ResNet) in eval mode.
        calib_inputs: backbone inputs ``(N, C, H, W)`` (see :func:`record_backbone_inputs`); sizes may differ.
        compile: compile the quantized program with Inductor (see :class:`QuantizedBackbone`).

    Returns:
        the :class:`QuantizedBackbone` (on the CPU: the x86 int8 kernels are CPU kernels).
    """
    if not calib_inputs:
        raise ValueError("quantize_backbone_pt2e: `calib_inputs` is empty; calibration needs at least one input.")
    prepare_pt2e, convert_pt2e, x86 = _torchao_pt2e()
    folded = fold_conv_norms(copy.deepcopy(backbone).cpu().eval())
    sample = _export_sample(calib_inputs).cpu()
    with torch.no_grad():
        program = torch.export.export(folded, (sample,), dynamic_shapes=_dynamic_shapes(), strict=False).module()
    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(program, quantizer)
    with torch.no_grad():
        for x in calib_inputs:
            prepared(x.cpu())
    converted = convert_pt2e(prepared)
    return QuantizedBackbone(program=converted, float_backbone=backbone, example=sample, compile=compile)


def quantize_pt2e(
    model: nn.Module, calib_batches: Iterable[list[dict]], compile: bool = True, max_batches: int | None = None
) -> nn.Module:
    """A copy of ``model`` (on the CPU, eval mode) whose backbone is int8 (:func:`quantize_backbone_pt2e`);
    everything after the backbone stays float. ``model`` itself is left unchanged.

    Args:
        model: a libdet model with a ``backbone`` (R-CNN, RetinaNet, FCOS, panoptic / semantic FPN, ...).
        calib_batches: detectron2-style input batches (lists of dicts with ``"image"``), e.g. from the
            config's test loader; the backbone is calibrated on what it receives from them.
        compile: compile the quantized backbone with Inductor.
        max_batches: stop after this many batches.
    """
    inputs = record_backbone_inputs(model, calib_batches, max_batches=max_batches)
    quantized = copy.deepcopy(model).cpu().eval()
    quantized.backbone = quantize_backbone_pt2e(model.backbone, inputs, compile=compile)
    return quantized


def save_quantized_backbone(backbone: QuantizedBackbone, path: str | os.PathLike) -> Path:
    """Save the quantized program as a ``torch.export`` file (atomically: a temporary file renamed).

    Reload it into a model built from the same config with :func:`load_quantized_backbone`.
    """
    from libdet.utils.file_io import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        program = torch.export.export(
            backbone.program, (backbone.example,), dynamic_shapes=_dynamic_shapes(), strict=False
        )
    with atomic_write(str(path), "wb") as f:
        torch.export.save(program, f)
    return path


def load_quantized_backbone(path: str | os.PathLike, model: nn.Module, compile: bool = True) -> nn.Module:
    """Put the quantized backbone saved at ``path`` into ``model`` (built from the config it was quantized
    from, so that the shape contract matches) in place of its float backbone; returns ``model``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
    """
    _torchao_pt2e()  # registers the quantize/dequantize ops the saved program calls
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_quantized_backbone: no quantized backbone at {path}.")
    program = torch.export.load(str(path))
    example = program.example_inputs[0][0] if program.example_inputs else None
    if example is None:
        raise ValueError(
            f"load_quantized_backbone: {path} holds no example input; save it with save_quantized_backbone."
        )
    model.backbone = QuantizedBackbone(
        program=program.module(), float_backbone=model.backbone, example=example, compile=compile
    )
    return model

"""FLOP, activation and parameter counts of libdet models with fvcore.

fvcore traces a model with ``torch.jit.trace``, which needs tensors in and tensors out. Detection models take
``list[dict]`` inputs (``{"image": (C, H, W) tensor, "height": H, "width": W}``) and return ``Instances``;
:class:`FlopCountAnalysis` and the ``*_operators`` functions flatten both, so a model is analysed with the
inputs it is normally called with. One fused multiply-add counts as one flop (fvcore's convention).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from libdet.utils.fvcore_nn import fvcore_nn

__all__ = [
    "FlopCountAnalysis",
    "ActivationCountAnalysis",
    "activation_count_operators",
    "flop_count_operators",
    "parameter_count",
    "parameter_count_table",
]

parameter_count = fvcore_nn.parameter_count
parameter_count_table = fvcore_nn.parameter_count_table

# Element-wise and indexing ops fvcore has no formula for: not counted (as in detectron2), and silenced so that
# the warnings list only ops that matter. batch_norm is left out too: at inference it folds into the conv.
_IGNORED_OPS = {
    f"aten::{name}"
    for name in (
        "batch_norm",
        "div",
        "div_",
        "meshgrid",
        "rsub",
        "sub",
        "relu_",
        "add_",
        "mul",
        "add",
        "relu",
        "sigmoid",
        "sigmoid_",
        "sort",
        "exp",
        "mul_",
        "cat",
        "index",
        "topk",
        "nonzero",
        "max_pool2d",
        "clamp",
        "clamp_",
        "where",
        "zeros_like",
    )
}


def _flatten(obj: Any) -> list[torch.Tensor]:
    """Every tensor inside nested lists / tuples / dicts / ``Instances`` / ``Boxes``-like objects, in order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for x in obj for t in _flatten(x)]
    if isinstance(obj, dict):
        return [t for k in sorted(obj, key=str) for t in _flatten(obj[k])]
    if hasattr(obj, "get_fields"):  # Instances
        return _flatten(obj.get_fields())
    if isinstance(getattr(obj, "tensor", None), torch.Tensor):  # Boxes, BitMasks, Keypoints, ...
        return [obj.tensor]
    return []  # numbers, strings, PolygonMasks (numpy): invisible to tracing


def _tensor_slots(inputs: Any) -> list[tuple[int, str]]:
    """Positions ``(item, key)`` of the tensors in ``list[dict]`` inputs."""
    return [(i, k) for i, item in enumerate(inputs) for k, v in item.items() if isinstance(v, torch.Tensor)]


class _FlatAdapter(nn.Module):
    """Calls ``model`` on its usual inputs rebuilt from positional tensors and returns a flat tuple of tensors."""

    def __init__(self, model: nn.Module, inputs: Any):
        super().__init__()
        self.model = model
        self.template = inputs
        self.detection_inputs = isinstance(inputs, (list, tuple)) and all(isinstance(x, dict) for x in inputs)
        self.slots = _tensor_slots(inputs) if self.detection_inputs else []

    def flat_inputs(self) -> tuple[torch.Tensor, ...]:
        if self.detection_inputs:
            return tuple(self.template[i][k] for i, k in self.slots)
        return tuple(_flatten(self.template))

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.detection_inputs:
            inputs = [dict(item) for item in self.template]
            for (i, k), t in zip(self.slots, tensors, strict=True):
                inputs[i][k] = t
            outputs = self.model(inputs)
        else:
            outputs = self.model(*tensors)
        flat = _flatten(outputs)
        if not flat:
            raise ValueError(f"{type(self.model).__name__} returned no tensors; fvcore can only trace tensor outputs.")
        return tuple(flat)


def _check_inputs(inputs: Any) -> None:
    if isinstance(inputs, (list, tuple)) and all(isinstance(x, dict) for x in inputs):
        if not any(isinstance(v, torch.Tensor) for x in inputs for v in x.values()):
            raise ValueError("analysis: the input dicts hold no tensor (expected e.g. {'image': (C, H, W) tensor}).")
        return
    if not _flatten(inputs):
        raise ValueError(f"analysis: inputs must be tensors or list[dict] of tensors, got {type(inputs).__name__}.")


class FlopCountAnalysis(fvcore_nn.FlopCountAnalysis):
    """fvcore's ``FlopCountAnalysis`` for a model called as ``model(inputs)`` with detection inputs
    (``list[dict]``) or as ``model(*tensors)`` with a tensor or tuple of tensors.

    Args:
        model: the model (analysed as it is: call ``model.eval()`` for inference counts).
        inputs: ``list[dict]`` of a detection model, or a tensor / tuple of tensors.
    """

    def __init__(self, model: nn.Module, inputs: Any):
        _check_inputs(inputs)
        adapter = _FlatAdapter(model, inputs if not isinstance(inputs, torch.Tensor) else (inputs,))
        super().__init__(adapter, adapter.flat_inputs())
        self.set_op_handle(**dict.fromkeys(_IGNORED_OPS))


class ActivationCountAnalysis(fvcore_nn.ActivationCountAnalysis):
    """fvcore's ``ActivationCountAnalysis`` with the input handling of :class:`FlopCountAnalysis`."""

    def __init__(self, model: nn.Module, inputs: Any):
        _check_inputs(inputs)
        adapter = _FlatAdapter(model, inputs if not isinstance(inputs, torch.Tensor) else (inputs,))
        super().__init__(adapter, adapter.flat_inputs())


def _by_operator(analysis: Any, scale: float, model: nn.Module) -> defaultdict[str, float]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            counts = analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).by_operator()
    finally:
        model.train(was_training)
    return defaultdict(float, {op: n / scale for op, n in counts.items()})


def flop_count_operators(model: nn.Module, inputs: Sequence[dict[str, Any]]) -> defaultdict[str, float]:
    """GFLOPs of one inference (``model.eval()``, restored afterwards) per operator type (``"conv"``, ...).

    Args:
        model: a detection model.
        inputs: its usual inputs, e.g. ``[{"image": (3, H, W) tensor}]``.
    """
    return _by_operator(FlopCountAnalysis(model, inputs), 1e9, model)


def activation_count_operators(model: nn.Module, inputs: Sequence[dict[str, Any]]) -> defaultdict[str, float]:
    """Millions of activations (output elements) of one inference, per operator type (see
    :func:`flop_count_operators`)."""
    return _by_operator(ActivationCountAnalysis(model, inputs), 1e6, model)

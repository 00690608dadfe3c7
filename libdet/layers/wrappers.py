"""Thin wrappers around ``torch.nn`` / ``torch.nn.functional`` used across libdet.

They add what detection models need on top of PyTorch: a ``Conv2d`` that owns its normalisation and
activation (so checkpoints store the norm at ``<conv>.norm.*``), losses that stay connected to the graph
when an image has no target, and small helpers that behave well under tracing and scripting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "cat",
    "shapes_to_tensor",
    "nonzero_tuple",
    "move_device_like",
    "Conv2d",
    "ConvTranspose2d",
    "BatchNorm2d",
    "Linear",
    "interpolate",
    "cross_entropy",
    "empty_input_loss_func_wrapper",
]

# Plain re-exports: the torch versions already handle empty inputs.
ConvTranspose2d = nn.ConvTranspose2d
BatchNorm2d = nn.BatchNorm2d
Linear = nn.Linear
interpolate = F.interpolate


def shapes_to_tensor(x: list[int], device: torch.device | None = None) -> torch.Tensor:
    """Turn a list of sizes into a 1-D tensor, keeping them dynamic under tracing.

    In eager mode and under scripting this is ``torch.as_tensor(x)``. Under tracing, sizes read from
    ``tensor.shape`` are 0-d tensors; stacking them (rather than ``as_tensor``, which records
    constants) keeps the traced graph valid for other input sizes.

    Args:
        x: sizes, as ints (eager/scripting) or 0-d tensors (tracing).
        device: device of the returned tensor.

    Returns:
        Tensor[len(x)] of sizes.
    """
    if torch.jit.is_scripting():
        return torch.as_tensor(x, device=device)
    if torch.jit.is_tracing():
        if not all(isinstance(t, torch.Tensor) for t in x):
            raise ValueError(
                "shapes_to_tensor: under tracing every element of `x` must be a tensor (a size read from "
                f"`tensor.shape`), got types {[type(t).__name__ for t in x]}."
            )
        ret = torch.stack(x)
        if ret.device != device:  # avoid recording a hard-coded device when unnecessary
            ret = ret.to(device=device)
        return ret
    return torch.as_tensor(x, device=device)


def cat(tensors: list[torch.Tensor], dim: int = 0) -> torch.Tensor:
    """``torch.cat`` that returns the only element of a one-element list without copying it.

    Args:
        tensors: list or tuple of tensors to concatenate.
        dim: dimension to concatenate along.
    """
    if not isinstance(tensors, (list, tuple)):
        raise TypeError(f"cat: `tensors` must be a list or tuple of tensors, got {type(tensors).__name__}.")
    if len(tensors) == 1:
        return tensors[0]
    return torch.cat(tensors, dim)


def empty_input_loss_func_wrapper(loss_func: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Wrap a ``loss_func(input, target, reduction=...)`` so an empty ``target`` with ``reduction="mean"``
    returns ``input.sum() * 0.0`` (a zero that keeps the graph connected) instead of NaN.
    """

    def wrapped_loss_func(input, target, *, reduction="mean", **kwargs):
        if target.numel() == 0 and reduction == "mean":
            return input.sum() * 0.0
        return loss_func(input, target, reduction=reduction, **kwargs)

    wrapped_loss_func.__name__ = getattr(loss_func, "__name__", "loss_func")
    wrapped_loss_func.__doc__ = (
        f"{wrapped_loss_func.__name__} that returns a graph-connected 0 for an empty target "
        '(with reduction="mean") instead of NaN.'
    )
    return wrapped_loss_func


cross_entropy = empty_input_loss_func_wrapper(F.cross_entropy)


# Functions that detectron2 code passes as ``Conv2d(activation=...)`` (e.g. ``F.relu``) and the module that
# computes the same with the functions' default arguments. TorchScript cannot call a function stored as a
# module attribute, so Conv2d stores the module instead; the outputs are the same.
_FUNCTIONAL_ACTIVATIONS: tuple[tuple[str, Callable[..., torch.Tensor], type[nn.Module]], ...] = (
    ("F.relu", F.relu, nn.ReLU),
    ("torch.relu", torch.relu, nn.ReLU),
    ("F.relu6", F.relu6, nn.ReLU6),
    ("F.leaky_relu", F.leaky_relu, nn.LeakyReLU),
    ("F.elu", F.elu, nn.ELU),
    ("F.gelu", F.gelu, nn.GELU),
    ("F.silu", F.silu, nn.SiLU),
    ("F.mish", F.mish, nn.Mish),
    ("F.hardswish", F.hardswish, nn.Hardswish),
    ("F.hardsigmoid", F.hardsigmoid, nn.Hardsigmoid),
    ("F.sigmoid", F.sigmoid, nn.Sigmoid),
    ("torch.sigmoid", torch.sigmoid, nn.Sigmoid),
    ("F.tanh", F.tanh, nn.Tanh),
    ("torch.tanh", torch.tanh, nn.Tanh),
)


def _function_name(fn: Callable[..., Any]) -> str:
    """``module.qualname`` of a function (``repr`` for other callables), for messages and ``repr``."""
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None)
    return f"{module}.{name}" if module and name else repr(fn)


class Conv2d(nn.Conv2d):
    """``torch.nn.Conv2d`` with an optional normalisation and activation applied after it.

    All positional and keyword arguments of ``torch.nn.Conv2d`` are accepted; in addition:

    Args:
        norm: a normalisation module (e.g. from ``get_norm``) applied to the output; stored as the
            submodule ``norm`` so its state_dict keys are ``<conv>.norm.*``.
        activation: a callable (module or function) applied after the norm. The common functions
            (``F.relu``, ``torch.relu``, ``F.gelu``, ``F.silu``, ``torch.sigmoid``, ... with their default
            arguments) are stored as the equivalent module (``nn.ReLU()``, ...), which TorchScript can
            script; other functions work in eager mode and tracing, and scripting names them in its error.

    Empty batches (``N == 0``) are supported in training and inference.
    """

    def __init__(
        self,
        *args: Any,
        norm: nn.Module | None = None,
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        if activation is not None and not isinstance(activation, nn.Module):
            if not callable(activation):
                raise TypeError(
                    f"Conv2d: `activation` must be a callable (e.g. nn.ReLU() or F.relu) or None, got "
                    f"{type(activation).__name__}."
                )
            module_class = next((m for _, f, m in _FUNCTIONAL_ACTIVATIONS if f is activation), None)
            if module_class is not None:
                activation = module_class()
        self.norm = norm
        self.activation = activation

    def __prepare_scriptable__(self) -> Conv2d:
        """Called by ``torch.jit.script`` before compiling: a function activation that has no module
        equivalent would otherwise fail with TorchScript's "function cannot be used as a value"."""
        if self.activation is not None and not isinstance(self.activation, nn.Module):
            known = ", ".join(name for name, _, _ in _FUNCTIONAL_ACTIVATIONS)
            raise TypeError(
                f"Conv2d: cannot script activation={_function_name(self.activation)}, a Python function that "
                "TorchScript cannot call as a module attribute. Pass an nn.Module (e.g. nn.ReLU()) or one of "
                f"the functions stored as modules ({known}) as `activation`."
            )
        return self

    def extra_repr(self) -> str:
        # A module activation prints as a child; show a function one too (it is not a child).
        if self.activation is None or isinstance(self.activation, nn.Module):
            return super().extra_repr()
        return f"{super().extra_repr()}, activation={_function_name(self.activation)}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # TorchScript compiles only the other path
            if self._folds_frozen_norm():
                x = self._conv_forward(x, *self._weight_and_bias_with_frozen_norm())
                return x if self.activation is None else self.activation(x)
        x = self._conv_forward(x, self.weight, self.bias)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def _folds_frozen_norm(self) -> bool:
        """Whether to fold a ``FrozenBatchNorm2d`` norm into the convolution (in eager mode).

        A frozen norm is a per-channel affine map, so ``norm(conv(x, W, b)) == conv(x, W * scale, b * scale +
        shift)``: the same result up to rounding, one pass over the activations instead of two (forward and
        backward), and the gradient still reaches ``W``. Tracing, ``torch.compile`` and ``torch.export`` see
        the unfolded layers (PT2E quantization annotates the convolution's own weight); ``export_model`` folds
        the norms of its copy with :meth:`fold_frozen_norm_` instead. A norm with forward hooks (e.g. to read or
        calibrate its statistics) runs as a module, so that its hooks see its input.
        """
        norm = self.norm
        return (
            isinstance(norm, _batch_norm.FrozenBatchNorm2d)
            and not (norm._forward_hooks or norm._forward_pre_hooks or _global_forward_hooks_exist())
            and not self.weight.is_quantized
            and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
        )

    @torch.no_grad()
    def fold_frozen_norm_(self) -> bool:
        """Fold a ``FrozenBatchNorm2d`` norm into ``weight`` and ``bias`` in place and drop the norm, for
        deployment: exported graphs then hold one convolution with a bias, which graph compilers fuse with the
        activation and the residual add. The weights are those the eager fold computes on each call, so the
        outputs stay the same. Returns whether it folded (not for another norm, or one with hooks)."""
        if not self._folds_frozen_norm():
            return False
        weight, bias = self._weight_and_bias_with_frozen_norm()
        self.weight.copy_(weight)
        self.bias = nn.Parameter(bias, requires_grad=self.weight.requires_grad)
        self.norm = None
        return True

    def _weight_and_bias_with_frozen_norm(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift = self.norm.scale_and_shift()
        weight = self.weight * scale.to(self.weight.dtype).reshape(-1, 1, 1, 1)
        bias = shift if self.bias is None else self.bias * scale + shift
        return weight, bias.to(self.weight.dtype)


def nonzero_tuple(x: torch.Tensor):
    """``x.nonzero(as_tuple=True)``, also usable under TorchScript (which lacks ``as_tuple``).

    Returns:
        tuple of ``x.dim()`` (at least 1) 1-D index tensors.
    """
    if torch.jit.is_scripting():
        if x.dim() == 0:
            return x.unsqueeze(0).nonzero().unbind(1)
        return x.nonzero().unbind(1)
    return x.nonzero(as_tuple=True)


@torch.jit.script_if_tracing
def move_device_like(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """``src.to(dst.device)``, written so that tracing does not hard-code the device of ``dst``."""
    return src.to(dst.device)


def _global_forward_hooks_exist() -> bool:
    """Whether ``nn.modules.module.register_module_forward(_pre)_hook`` hooks are registered (they run for
    every module, a folded norm included)."""
    module_globals = nn.modules.module
    return bool(
        getattr(module_globals, "_global_forward_hooks", None)
        or getattr(module_globals, "_global_forward_pre_hooks", None)
    )


# The module, not the class, and at the end: batch_norm imports this module's BatchNorm2d.
from . import batch_norm as _batch_norm  # noqa: E402

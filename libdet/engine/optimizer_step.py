"""What one training iteration does between "here are the batches" and "the weights moved": the trainer's step seam.

An :class:`OptimizerStep` is composed of three independent parts, each replaceable on its own:

* a precision: :class:`FullPrecision` (float32, the default) or :class:`MixedPrecision` (forward under
  ``torch.autocast`` in float16 with a grad scaler, or bfloat16);
* gradient transforms, applied in order to the true (unscaled) gradients after the backward and before the
  optimizer step: :class:`ClipGradNorm` (one norm over all parameters), :class:`ClipGradNormPerGroup` (one norm per
  optimizer parameter group), or any callable ``transform(optimizer) -> dict[str, Tensor]`` of metrics to log;
* ``accumulation_steps``: the gradients of that many batches (each loss divided by it) make one optimizer step.

:class:`~libdet.engine.train_loop.SimpleTrainer` calls, each iteration::

    step.zero_grad(optimizer)
    for _ in range(step.accumulation_steps):
        loss_dict = step.forward_backward(model, next_batch)  # detached losses, nothing synchronised
    <after_backward hooks>
    metrics = step.update(optimizer)  # unscale, transforms, optimizer (+ scaler) step; lazy tensors to log

Weight averaging (EMA) is not part of the step: :class:`~libdet.engine.hooks.EMAHook` updates after every step, so
it composes with any of the above. Parameter-group hyper-parameters (e.g. a 10x lower backbone lr for AdamW) belong
to the optimizer's groups (:func:`libdet.solver.get_default_optimizer_params` with ``lr_factor_func`` or
``overrides``), which :class:`ClipGradNormPerGroup` then clips group by group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

__all__ = [
    "ClipGradNorm",
    "ClipGradNormPerGroup",
    "FullPrecision",
    "GradientTransform",
    "MixedPrecision",
    "OptimizerStep",
]

GradientTransform = Callable[[torch.optim.Optimizer], Mapping[str, torch.Tensor]]
"""``transform(optimizer) -> {metric name: 0-dim tensor}``: edits the ``.grad`` of the optimizer's parameters in
place (they hold true, unscaled gradients when it runs) and returns metrics to log (tensors, so that logging them
costs no device synchronisation until the trainer writes metrics)."""


class FullPrecision:
    """Forward and backward in the parameters' own precision (float32); the optimizer steps directly."""

    grad_scaler: Any = None

    def autocast(self) -> AbstractContextManager:
        """The context the forward runs in."""
        return nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of a 0-dim loss."""
        loss.backward()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Make the ``.grad`` of ``optimizer``'s parameters hold true gradients (before gradient transforms)."""

    def step(self, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        """Step ``optimizer``; returns metrics to log."""
        optimizer.step()
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Resumable state, merged into the trainer's state (see :meth:`OptimizerStep.state_dict`)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (keys of other parts of the trainer state are ignored)."""


class MixedPrecision(FullPrecision):
    """The forward under ``torch.autocast(device_type, dtype)``; float16 scales the loss with a grad scaler.

    Args:
        dtype: ``torch.float16`` (with a grad scaler) or ``torch.bfloat16`` (float32's range: no scaler).
        device_type: the device type the model runs on (``"cuda"``, ``"cpu"``, ...).
        grad_scaler: a ``torch.amp.GradScaler`` for float16 (default: a new one for ``device_type``).
        log_grad_scaler: log the scaler's scale as ``[metric]grad_scaler``.
    """

    def __init__(
        self,
        dtype: torch.dtype = torch.float16,
        *,
        device_type: str,
        grad_scaler: Any | None = None,
        log_grad_scaler: bool = False,
    ) -> None:
        if dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"MixedPrecision: precision must be torch.float16 or torch.bfloat16, got {dtype}.")
        if dtype == torch.bfloat16:
            if grad_scaler is not None:
                raise ValueError(
                    "MixedPrecision: a grad scaler is only used with precision=torch.float16; "
                    "bfloat16 has float32's range and needs none."
                )
        elif grad_scaler is None:
            grad_scaler = torch.amp.GradScaler(device_type)
        self.dtype = dtype
        self.device_type = device_type
        self.grad_scaler = grad_scaler
        self.log_grad_scaler = log_grad_scaler

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        if self.grad_scaler is None:
            loss.backward()
        else:
            self.grad_scaler.scale(loss).backward()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        if self.grad_scaler is not None:
            self.grad_scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        if self.grad_scaler is None:
            optimizer.step()
            return {}
        self.grad_scaler.step(optimizer)
        self.grad_scaler.update()
        if not self.log_grad_scaler:
            return {}
        # the scale as a tensor, read without a device synchronisation (torch's GradScaler keeps it on the device)
        scale = getattr(self.grad_scaler, "_get_scale_async", lambda: None)()
        if not isinstance(scale, torch.Tensor):
            scale = torch.tensor(float(self.grad_scaler.get_scale()))
        return {"[metric]grad_scaler": scale.detach().clone()}

    def state_dict(self) -> dict[str, Any]:
        return {} if self.grad_scaler is None else {"grad_scaler": self.grad_scaler.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.grad_scaler is not None and "grad_scaler" in state:
            self.grad_scaler.load_state_dict(state["grad_scaler"])


def _params_with_grad(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [p for p in params if p.grad is not None]


class ClipGradNorm:
    """Clip the gradient norm over all parameters of the optimizer to ``max_norm``; logs the norm before clipping
    as ``grad_norm``.

    Args:
        max_norm: the largest norm allowed (> 0).
        norm_type: the p of the p-norm (``float("inf")`` for the max-norm).
    """

    def __init__(self, max_norm: float, *, norm_type: float = 2.0) -> None:
        if not max_norm > 0:
            raise ValueError(f"{type(self).__name__}: max_norm must be positive, got {max_norm}.")
        self.max_norm = float(max_norm)
        self.norm_type = float(norm_type)

    def __call__(self, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        params = _params_with_grad([p for g in optimizer.param_groups for p in g["params"]])
        if not params:
            return {}
        return {"grad_norm": torch.nn.utils.clip_grad_norm_(params, self.max_norm, norm_type=self.norm_type)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_norm={self.max_norm}, norm_type={self.norm_type})"


class ClipGradNormPerGroup(ClipGradNorm):
    """Clip the gradient norm of each optimizer parameter group separately; logs group ``i``'s norm before clipping
    as ``grad_norm/group{i}``.

    A group may carry its own limit under the key ``"max_grad_norm"`` (e.g. a backbone group built by
    :func:`libdet.solver.get_default_optimizer_params` with ``overrides``); the others use ``max_norm``.

    Args:
        max_norm, norm_type: see :class:`ClipGradNorm`.
    """

    def __call__(self, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        metrics = {}
        for i, group in enumerate(optimizer.param_groups):
            params = _params_with_grad(group["params"])
            if params:
                max_norm = float(group.get("max_grad_norm", self.max_norm))
                metrics[f"grad_norm/group{i}"] = torch.nn.utils.clip_grad_norm_(
                    params, max_norm, norm_type=self.norm_type
                )
        return metrics


def loss_dict_of(output: Any) -> dict[str, torch.Tensor]:
    """A model's training output as a loss dict: a dict of scalar losses as is, one tensor as ``total_loss``."""
    if isinstance(output, torch.Tensor):
        return {"total_loss": output}
    if not isinstance(output, Mapping):
        raise TypeError(
            f"SimpleTrainer: the model in training mode must return a dict of losses or a loss tensor, "
            f"got {type(output).__name__}."
        )
    return dict(output)


class OptimizerStep:
    """One optimizer step from ``accumulation_steps`` batches: forward (under the precision's autocast), backward of
    the summed losses, gradient transforms on the true gradients, optimizer step (see the module docstring).

    Args:
        precision: :class:`FullPrecision` (default) or :class:`MixedPrecision`.
        grad_transforms: gradient transforms run in order before the optimizer step, e.g.
            ``[ClipGradNorm(max_norm=1.0)]``.
        accumulation_steps: batches per optimizer step (>= 1); each batch's loss is divided by it, so ``k``
            batches of ``n`` images step like one batch of ``k * n``.
    """

    def __init__(
        self,
        *,
        precision: FullPrecision | None = None,
        grad_transforms: Sequence[GradientTransform] = (),
        accumulation_steps: int = 1,
    ) -> None:
        if int(accumulation_steps) != accumulation_steps or accumulation_steps < 1:
            raise ValueError(f"OptimizerStep: accumulation_steps must be an integer >= 1, got {accumulation_steps!r}.")
        for t in grad_transforms:
            if not callable(t):
                raise TypeError(f"OptimizerStep: gradient transform {t!r} is not callable.")
        self.precision = precision if precision is not None else FullPrecision()
        self.grad_transforms = list(grad_transforms)
        self.accumulation_steps = int(accumulation_steps)

    def zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        """Drop the previous gradients (before the forward: their memory is free for the activations)."""
        optimizer.zero_grad(set_to_none=True)

    def forward_backward(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Forward ``batch``, backward the sum of its losses (divided by ``accumulation_steps``).

        Returns:
            The model's losses, detached (still on their device: reading them is left to metric writing).
        """
        with self.precision.autocast():
            loss_dict = loss_dict_of(model(batch))
        losses = sum(loss_dict.values())
        if self.accumulation_steps > 1:
            losses = losses / self.accumulation_steps
        self.precision.backward(losses)
        return {k: v.detach() for k, v in loss_dict.items()}

    def update(self, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        """Unscale the gradients, run the gradient transforms, step the optimizer.

        Returns:
            Metrics to log (tensors, e.g. ``grad_norm``).
        """
        metrics: dict[str, torch.Tensor] = {}
        if self.grad_transforms:
            self.precision.unscale_(optimizer)
            for transform in self.grad_transforms:
                metrics.update(transform(optimizer) or {})
        metrics.update(self.precision.step(optimizer))
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """Resumable state (the grad scaler's, as ``{"grad_scaler": ...}``), stored in the trainer's state."""
        return self.precision.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; ``state`` may be the whole trainer state (other keys are ignored)."""
        self.precision.load_state_dict(state)

    def __repr__(self) -> str:
        return (
            f"OptimizerStep(precision={type(self.precision).__name__}, grad_transforms={self.grad_transforms}, "
            f"accumulation_steps={self.accumulation_steps})"
        )

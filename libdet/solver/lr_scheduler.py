"""Learning-rate schedules: fvcore ``ParamScheduler`` curves (a multiplier as a function of training progress
in ``[0, 1]``) with a warmup, applied to an optimizer through :class:`LRMultiplier`.

Typical config::

    lr_multiplier = L(WarmupParamScheduler)(
        scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01], milestones=[60000, 80000], num_updates=90000),
        warmup_length=1000 / 90000, warmup_factor=0.001)
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    LinearParamScheduler,
    ParamScheduler,
)

try:  # torch >= 2.0
    from torch.optim.lr_scheduler import LRScheduler
except ImportError:  # pragma: no cover - older torch
    from torch.optim.lr_scheduler import _LRScheduler as LRScheduler

__all__ = [
    "LRMultiplier",
    "LRScheduler",
    "WarmupCosineLR",
    "WarmupMultiStepLR",
    "WarmupParamScheduler",
]


class WarmupParamScheduler(CompositeParamScheduler):
    """``scheduler`` preceded by a warmup over the first ``warmup_length`` fraction of training.

    The warmup goes from ``warmup_factor * scheduler(0)`` to ``scheduler(warmup_length)`` (linearly, or stays
    constant at the start value with ``warmup_method="constant"``); afterwards the value is ``scheduler(where)``.

    Args:
        scheduler: the main schedule, defined on ``[0, 1]``.
        warmup_factor: multiplier of the first warmup value.
        warmup_length: fraction of training (``warmup_iters / max_iter``) used for warmup, in ``[0, 1)``.
        warmup_method: ``"linear"`` or ``"constant"``.
        rescale_interval: if True, the main schedule is stretched over ``[warmup_length, 1]`` (it starts from
            ``scheduler(0)`` after warmup) instead of being evaluated at the absolute progress.
    """

    def __init__(
        self,
        scheduler: ParamScheduler,
        warmup_factor: float,
        warmup_length: float,
        warmup_method: str = "linear",
        rescale_interval: bool = False,
    ):
        if not 0.0 <= warmup_length < 1.0:
            raise ValueError(f"WarmupParamScheduler: warmup_length must be in [0, 1), got {warmup_length}.")
        end_value = scheduler(0.0) if rescale_interval else scheduler(warmup_length)
        start_value = warmup_factor * scheduler(0.0)
        if warmup_method == "constant":
            warmup: ParamScheduler = ConstantParamScheduler(start_value)
        elif warmup_method == "linear":
            warmup = LinearParamScheduler(start_value, end_value)
        else:
            raise ValueError(
                f"WarmupParamScheduler: unknown warmup_method {warmup_method!r} (expected 'linear' or 'constant')."
            )
        super().__init__(
            [warmup, scheduler],
            interval_scaling=["rescaled", "rescaled" if rescale_interval else "fixed"],
            lengths=[warmup_length, 1.0 - warmup_length],
        )


class LRMultiplier(LRScheduler):
    """A torch LR scheduler whose lr is ``base_lr * multiplier(iteration / max_iter)`` for every param group.

    Step it once per iteration. Its :meth:`state_dict` holds only numbers and lists (``weights_only``-safe);
    the multiplier itself is configuration, rebuilt from the config on resume.

    Args:
        optimizer: the optimizer whose ``lr`` is set (``initial_lr`` of each group is the base lr).
        multiplier: a fvcore ``ParamScheduler`` on ``[0, 1]``.
        max_iter: total number of iterations.
        last_iter: the last iteration done (``-1`` for a fresh start). When ``>= 0``, groups without
            ``initial_lr`` (no restored optimizer state) take their current ``lr`` as base lr.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, multiplier: ParamScheduler, max_iter: int, last_iter: int = -1
    ):
        if not isinstance(multiplier, ParamScheduler):
            raise TypeError(
                f"LRMultiplier: `multiplier` must be a fvcore ParamScheduler, got {type(multiplier).__name__}."
            )
        if max_iter <= 0:
            raise ValueError(f"LRMultiplier: max_iter must be positive, got {max_iter}.")
        self._multiplier = multiplier
        self._max_iter = int(max_iter)
        if last_iter >= 0:
            # starting mid-schedule without a restored optimizer state: the current lr is the base lr
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        super().__init__(optimizer, last_epoch=last_iter)

    _STATE_KEYS = ("base_lrs", "last_epoch", "_last_lr", "_step_count", "_max_iter")

    def state_dict(self) -> dict[str, Any]:
        """``{"base_lrs", "last_epoch", "_last_lr", "_step_count", "_max_iter"}``."""
        return {k: self.__dict__[k] for k in self._STATE_KEYS if k in self.__dict__}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        unknown = set(state_dict) - set(self._STATE_KEYS)
        if unknown:
            raise ValueError(f"LRMultiplier.load_state_dict: unexpected keys {sorted(unknown)}.")
        if "_max_iter" in state_dict and state_dict["_max_iter"] != self._max_iter:
            raise ValueError(
                f"LRMultiplier.load_state_dict: the state was saved with max_iter="
                f"{state_dict['_max_iter']}, this scheduler has max_iter={self._max_iter}."
            )
        self.__dict__.update(state_dict)
        if "_last_lr" in state_dict:
            # make the optimizer use the restored schedule's current lr right away
            for group, lr in zip(self.optimizer.param_groups, self._last_lr):
                group["lr"] = lr

    def get_lr(self) -> list[float]:
        # The step after the last iteration asks for iteration max_iter, which never runs; fvcore schedulers are
        # only defined on [0, 1) (ConstantParamScheduler rejects 1.0), so it keeps the last iteration's value.
        multiplier = self._multiplier(min(self.last_epoch, self._max_iter - 1) / self._max_iter)
        return [base_lr * multiplier for base_lr in self.base_lrs]


def _warmup_factor_at_iter(method: str, it: int, warmup_iters: int, warmup_factor: float) -> float:
    if it >= warmup_iters:
        return 1.0
    if method == "constant":
        return warmup_factor
    if method == "linear":
        alpha = it / warmup_iters
        return warmup_factor * (1 - alpha) + alpha
    raise ValueError(f"Unknown warmup method {method!r} (expected 'linear' or 'constant').")


class WarmupMultiStepLR(LRScheduler):
    """Step decay by ``gamma`` at each milestone iteration, after a warmup (detectron2's legacy scheduler;
    prefer ``LRMultiplier(WarmupParamScheduler(MultiStepParamScheduler(...)))``).

    Args:
        optimizer: the optimizer.
        milestones: increasing iterations at which the lr is multiplied by ``gamma``.
        gamma: decay factor.
        warmup_factor, warmup_iters, warmup_method: warmup from ``warmup_factor * base_lr`` over
            ``warmup_iters`` iterations (``"linear"`` or ``"constant"``).
        last_epoch: the last iteration done.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        milestones: Sequence[int],
        gamma: float = 0.1,
        warmup_factor: float = 0.001,
        warmup_iters: int = 1000,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ):
        if list(milestones) != sorted(milestones):
            raise ValueError(f"WarmupMultiStepLR: milestones must be increasing, got {list(milestones)}.")
        self.milestones = list(milestones)
        self.gamma = gamma
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        warmup = _warmup_factor_at_iter(self.warmup_method, self.last_epoch, self.warmup_iters, self.warmup_factor)
        decay = self.gamma ** bisect_right(self.milestones, self.last_epoch)
        return [base_lr * warmup * decay for base_lr in self.base_lrs]


class WarmupCosineLR(LRScheduler):
    """Half-cosine decay from ``base_lr`` to 0 over ``max_iters``, after a warmup (detectron2's legacy scheduler;
    prefer ``LRMultiplier(WarmupParamScheduler(CosineParamScheduler(1, 0)))``).

    Args:
        optimizer: the optimizer.
        max_iters: total iterations.
        warmup_factor, warmup_iters, warmup_method: see :class:`WarmupMultiStepLR`.
        last_epoch: the last iteration done.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iters: int,
        warmup_factor: float = 0.001,
        warmup_iters: int = 1000,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ):
        self.max_iters = max_iters
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        warmup = _warmup_factor_at_iter(self.warmup_method, self.last_epoch, self.warmup_iters, self.warmup_factor)
        cosine = 0.5 * (1.0 + math.cos(math.pi * self.last_epoch / self.max_iters))
        return [base_lr * warmup * cosine for base_lr in self.base_lrs]

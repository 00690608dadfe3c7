"""Exponential moving average (EMA) of a model's weights.

:class:`EMAState` holds a copy of a model's state (parameters and buffers); :class:`EMAUpdater` blends the model
into it after each optimizer step. The training hook that drives them is ``libdet.engine.hooks.EMAHook``.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["EMAState", "EMAUpdater", "apply_model_ema_and_restore"]


def _unwrap(model: nn.Module) -> nn.Module:
    # DistributedDataParallel / DataParallel keep the real model in `.module`
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


class EMAState:
    """Averaged copies of a model's parameters and buffers.

    Args:
        state: ``{name: tensor}`` (names as in ``model.state_dict()``), or None for an empty state.
    """

    def __init__(self, state: dict[str, torch.Tensor] | None = None):
        self.state: dict[str, torch.Tensor] = dict(state or {})

    @classmethod
    def from_model(cls, model: nn.Module, device: str = "") -> EMAState:
        """A state initialised with a copy of ``model``'s parameters and buffers (on ``device`` if given)."""
        ret = cls()
        ret.save_from(model, device)
        return ret

    @staticmethod
    def _model_tensors(model: nn.Module) -> Iterator[tuple]:
        model = _unwrap(model)
        yield from model.named_parameters()
        yield from model.named_buffers()

    def save_from(self, model: nn.Module, device: str = "") -> None:
        """Overwrite the state with a detached copy of ``model``'s tensors."""
        self.state = {}
        for name, val in self._model_tensors(model):
            val = val.detach().clone()
            self.state[name] = val.to(device) if device else val

    def apply_to(self, model: nn.Module) -> None:
        """Copy the state into ``model``'s parameters and buffers in place.

        Raises:
            KeyError: if the model has a tensor the state lacks.
        """
        with torch.no_grad():
            for name, val in self._model_tensors(model):
                if name not in self.state:
                    raise KeyError(
                        f"EMAState.apply_to: the EMA state has no tensor {name!r}; was it created "
                        f"from a different model?"
                    )
                val.copy_(self.state[name])

    @contextlib.contextmanager
    def apply_and_restore(self, model: nn.Module) -> Iterator[nn.Module]:
        """Within the block ``model`` holds the EMA weights; its own weights are restored afterwards."""
        old = EMAState.from_model(model)
        self.apply_to(model)
        try:
            yield model
        finally:
            old.apply_to(model)

    def get_ema_model(self, model: nn.Module) -> nn.Module:
        """A deep copy of ``model`` holding the EMA weights."""
        ret = copy.deepcopy(_unwrap(model))
        self.apply_to(ret)
        return ret

    @property
    def device(self) -> torch.device | None:
        return next(iter(self.state.values())).device if self.state else None

    def to(self, device: torch.device | str) -> EMAState:
        """Move the state to ``device`` (in place); returns self."""
        self.state = {k: v.to(device) for k, v in self.state.items()}
        return self

    def has_inited(self) -> bool:
        return bool(self.state)

    def clear(self) -> EMAState:
        self.state.clear()
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.state)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.state = dict(state)

    def __repr__(self) -> str:
        return f"EMAState(num_tensors={len(self.state)}, device={self.device})"


class EMAUpdater:
    """``ema = decay * ema + (1 - decay) * model`` for floating-point tensors; other tensors (e.g. BN's
    ``num_batches_tracked``) are copied.

    Args:
        state: the :class:`EMAState` to update.
        decay: EMA decay in ``[0, 1)``.
        device: device the state lives on ("" keeps the model's).
        yolox: use YOLOX's warm decay ``decay * (1 - exp(-num_updates / 2000))``.
    """

    def __init__(self, state: EMAState, decay: float = 0.999, device: str = "", yolox: bool = False):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMAUpdater: decay must be in [0, 1), got {decay}.")
        self.decay = decay
        self.device = device
        self.state = state
        self.yolox = yolox
        self.num_updates = 0

    def init_state(self, model: nn.Module) -> None:
        """(Re)initialise the state from ``model``."""
        self.state.save_from(model, self.device)

    def get_decay(self) -> float:
        if self.yolox:
            return self.decay * (1 - math.exp(-self.num_updates / 2000))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend ``model``'s current tensors into the state."""
        if not self.state.has_inited():
            raise RuntimeError("EMAUpdater.update: the EMA state is empty; call init_state(model) first.")
        self.num_updates += 1
        d = self.get_decay()
        for name, val in EMAState._model_tensors(model):
            ema = self.state.state[name]
            val = val.detach().to(ema.device)
            if ema.is_floating_point():
                ema.mul_(d).add_(val.to(ema.dtype), alpha=1.0 - d)
            else:
                ema.copy_(val)


@contextlib.contextmanager
def apply_model_ema_and_restore(model: nn.Module, state: EMAState) -> Iterator[nn.Module]:
    """Within the block ``model`` holds the EMA weights of ``state``; its weights are restored afterwards."""
    with state.apply_and_restore(model) as m:
        yield m

"""The training loop: :class:`TrainerBase` (iterations + hooks), :class:`SimpleTrainer` (one optimizer step per
iteration) and :class:`AMPTrainer` (the same under ``torch.autocast``).

Exact resume
------------
``trainer.state_dict()`` holds everything a resumed run needs beyond the model, optimizer and LR scheduler
(which the checkpointer saves itself): the iteration, each hook's state (LR scheduler, EMA, best metric, early
stopping...), the data loader's position when it has ``state_dict()``, the grad scaler, and the RNG states of
torch (CPU and CUDA), numpy and python ``random``. It contains only tensors, numbers, strings, ``None``, lists,
tuples and dicts, so a checkpoint holding it loads with ``torch.load(..., weights_only=True)``.

Resume with ``trainer.load_state_dict(state)`` then ``trainer.train(trainer.iter + 1, max_iter)``: the data
iterator is (re)created after loading, and a resumable loader never consumes the training RNGs, so the resumed run
reproduces the uninterrupted one exactly (on CPU) as long as the loader is resumable (libdet's
``TrainDataLoader``: per-sample seeds, batches independent of ``num_workers``).
"""

from __future__ import annotations

import logging
import random
import time
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from libdet.utils import comm
from libdet.utils.events import EventStorage, get_event_storage

__all__ = ["AMPTrainer", "HookBase", "SimpleTrainer", "TrainerBase"]

logger = logging.getLogger(__name__)


class HookBase:
    """Base class of training hooks. The trainer calls, in order::

        before_train()
        for iter in range(start_iter, max_iter):
            before_step(); [forward, backward]; after_backward(); [optimizer step]; after_step()
        after_train()

    ``self.trainer`` (a weak proxy of the trainer) is set by :meth:`TrainerBase.register_hooks`. A hook with
    state to resume overrides :meth:`state_dict` / :meth:`load_state_dict` (weights_only-safe contents).
    """

    trainer: TrainerBase = None  # type: ignore[assignment]

    def before_train(self) -> None:
        """Called once before the first iteration."""

    def after_train(self) -> None:
        """Called once after the last iteration (also when training stops on an exception or a stop request)."""

    def before_step(self) -> None:
        """Called before each iteration."""

    def after_backward(self) -> None:
        """Called after the backward pass of each iteration, before the optimizer step."""

    def after_step(self) -> None:
        """Called after each iteration."""

    def state_dict(self) -> dict[str, Any]:
        """The hook's resumable state (empty by default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (a stateless hook accepts only an empty state)."""
        if state:
            raise ValueError(f"{type(self).__name__} has no state to load but got keys {sorted(state)}.")


# ---------------------------------------------------------------------------------------------------------- RNG
def _rng_state() -> dict[str, Any]:
    """RNG states of python ``random``, numpy and torch (CPU, and CUDA when initialised), weights_only-safe."""
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py_version, list(py_internal), py_gauss],
        "numpy": [
            np_name,
            torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            int(np_pos),
            int(np_has_gauss),
            float(np_gauss),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, np_gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, np_gauss))
    torch.set_rng_state(state["torch"].cpu() if isinstance(state["torch"], torch.Tensor) else state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            logger.warning(
                f"Not restoring CUDA RNG states: saved for {len(cuda_states)} devices, "
                f"{torch.cuda.device_count()} visible."
            )


@contextmanager
def _preserve_cpu_rng() -> Iterator[None]:
    """Restore python/numpy/torch-CPU RNG states after the block (data loading must not move them)."""
    py, npy, th = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(th)


# ------------------------------------------------------------------------------------------------------ trainer
class TrainerBase:
    """An iteration loop with hooks.

    Attributes:
        iter: the current iteration.
        start_iter: the iteration training started at.
        max_iter: the iteration to end at (exclusive).
        storage: the :class:`EventStorage` active during :meth:`train`.
    """

    def __init__(self) -> None:
        self._hooks: list[HookBase] = []
        self.iter: int = 0
        self.start_iter: int = 0
        self.max_iter: int = 0
        self.storage: EventStorage | None = None
        self._stop_requested = False

    def register_hooks(self, hooks: Sequence[HookBase | None]) -> None:
        """Append hooks (``None`` entries are skipped); they run in registration order."""
        hooks = [h for h in hooks if h is not None]
        for h in hooks:
            if not isinstance(h, HookBase):
                raise TypeError(f"register_hooks: {h!r} is not a HookBase.")
            # a weak proxy avoids a reference cycle trainer <-> hook
            h.trainer = weakref.proxy(self)
        self._hooks.extend(hooks)

    def request_stop(self) -> None:
        """End training cleanly after the current iteration (``after_step`` hooks and ``after_train`` still run)."""
        self._stop_requested = True

    @property
    def stop_requested(self) -> bool:
        """Whether :meth:`request_stop` was called during this :meth:`train`."""
        return self._stop_requested

    def train(self, start_iter: int, max_iter: int) -> None:
        """Run iterations ``start_iter .. max_iter - 1``.

        After a normal end (or a stop request) ``self.iter`` is one past the last iteration run, so
        ``after_train`` hooks can tell a completed run (``iter == max_iter``) from an early end.
        """
        logger.info(f"Starting training from iteration {start_iter}")
        self.iter = self.start_iter = int(start_iter)
        self.max_iter = int(max_iter)
        self._stop_requested = False
        with EventStorage(start_iter) as self.storage:
            try:
                self.before_train()
                for self.iter in range(start_iter, max_iter):
                    self.before_step()
                    self.run_step()
                    self.after_step()
                    if self._stop_requested:
                        logger.info(f"Training stopped on request after iteration {self.iter}.")
                        break
                self.iter += 1
            except Exception:
                logger.exception(f"Exception during training at iteration {self.iter}:")
                raise
            finally:
                self.after_train()

    def before_train(self) -> None:
        for h in self._hooks:
            h.before_train()

    def after_train(self) -> None:
        self.storage.iter = self.iter
        for h in self._hooks:
            h.after_train()

    def before_step(self) -> None:
        self.storage.iter = self.iter
        for h in self._hooks:
            h.before_step()

    def after_backward(self) -> None:
        for h in self._hooks:
            h.after_backward()

    def after_step(self) -> None:
        for h in self._hooks:
            h.after_step()

    def run_step(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement run_step().")

    def _hook_keys(self) -> list[str]:
        names = [type(h).__qualname__ for h in self._hooks]
        counts: Counter = Counter()
        keys = []
        for n in names:
            keys.append(n if counts[n] == 0 else f"{n}#{counts[n]}")
            counts[n] += 1
        return keys

    def state_dict(self) -> dict[str, Any]:
        """``{"iteration", "hooks": {hook name: state}, "rng": ...}`` (see the module docstring)."""
        hooks_state = {}
        for key, h in zip(self._hook_keys(), self._hooks):
            s = h.state_dict()
            if s:
                hooks_state[key] = s
        return {"iteration": self.iter, "hooks": hooks_state, "rng": _rng_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`: iteration, hook states (matched by hook class name), RNG states.

        Hook states without a matching registered hook are reported with a warning.
        """
        self.iter = int(state["iteration"])
        hooks_state = dict(state.get("hooks", {}))
        for key, h in zip(self._hook_keys(), self._hooks):
            if key in hooks_state:
                h.load_state_dict(hooks_state.pop(key))
        if hooks_state:
            logger.warning(f"Trainer state has states of hooks that are not registered: {sorted(hooks_state)}")
        if "rng" in state:
            _set_rng_state(state["rng"])


def _loss_dict_of(output: Any) -> dict[str, torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return {"total_loss": output}
    if not isinstance(output, Mapping):
        raise TypeError(
            f"SimpleTrainer: the model in training mode must return a dict of losses or a loss tensor, "
            f"got {type(output).__name__}."
        )
    return dict(output)


class SimpleTrainer(TrainerBase):
    """Each iteration: load a batch, ``loss_dict = model(batch)``, backward the sum of the losses, step the
    optimizer. Logs every loss, ``total_loss`` and ``data_time`` (averaged / maxed over processes).

    Args:
        model: in training mode, returns a dict of scalar losses (or one loss tensor).
        data_loader: an iterable of batches; infinite for iteration-based training. Its ``state_dict()`` (if any)
            is part of the trainer state.
        optimizer: a ``torch.optim.Optimizer``.
        gather_metric_period: log metrics every this many iterations.
        zero_grad_before_forward: zero the gradients before the forward instead of between forward and
            backward (frees the previous gradients' memory before the forward's activations are allocated).
        grad_accumulation_steps: batches per iteration; the gradients of ``k`` batches (each loss divided by
            ``k``) are accumulated before one optimizer step.
        clip_grad_norm: clip the global gradient norm (over all parameters) to this value; its value before
            clipping is logged as ``grad_norm``.
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable,
        optimizer: torch.optim.Optimizer,
        *,
        gather_metric_period: int = 1,
        zero_grad_before_forward: bool = False,
        grad_accumulation_steps: int = 1,
        clip_grad_norm: float | None = None,
    ):
        super().__init__()
        model.train()
        if grad_accumulation_steps < 1:
            raise ValueError(f"SimpleTrainer: grad_accumulation_steps must be >= 1, got {grad_accumulation_steps}.")
        if gather_metric_period < 1:
            raise ValueError(f"SimpleTrainer: gather_metric_period must be >= 1, got {gather_metric_period}.")
        if clip_grad_norm is not None and clip_grad_norm <= 0:
            raise ValueError(f"SimpleTrainer: clip_grad_norm must be positive or None, got {clip_grad_norm}.")
        self.model = model
        self.data_loader = data_loader
        self._data_loader_iter_obj: Iterator | None = None
        self.optimizer = optimizer
        self.gather_metric_period = gather_metric_period
        self.zero_grad_before_forward = zero_grad_before_forward
        self.grad_accumulation_steps = grad_accumulation_steps
        self.clip_grad_norm = clip_grad_norm

    @property
    def _data_loader_iter(self) -> Iterator:
        # created lazily, so that load_state_dict() of a resumable loader happens before iteration starts
        if self._data_loader_iter_obj is None:
            self._data_loader_iter_obj = iter(self.data_loader)
        return self._data_loader_iter_obj

    def reset_data_loader(self, data_loader_builder: Any | None = None) -> None:
        """Drop the current data iterator (optionally replacing the loader by ``data_loader_builder()``)."""
        self._data_loader_iter_obj = None
        if data_loader_builder is not None:
            self.data_loader = data_loader_builder()

    def _next_batch(self) -> Any:
        # A resumable loader (libdet's TrainDataLoader) seeds every sample itself; keeping the training RNGs out
        # of its way (e.g. the base seed torch's DataLoader draws when it starts) makes resumes exact. Other
        # iterables may rely on the global RNGs for their randomness, so they get them as they are.
        resumable = hasattr(self.data_loader, "state_dict")
        with _preserve_cpu_rng() if resumable else nullcontext():
            try:
                return next(self._data_loader_iter)
            except StopIteration:
                raise RuntimeError(
                    f"SimpleTrainer: the data loader is exhausted at iteration {self.iter}; "
                    f"iteration-based training needs an infinite loader (e.g. TrainingSampler)."
                ) from None

    def _forward(self, data: Any) -> dict[str, torch.Tensor]:
        return _loss_dict_of(self.model(data))

    def _check_finite(self, loss_dict: Mapping[str, torch.Tensor]) -> None:
        values = torch.stack([v.detach().float().reshape(()) for v in loss_dict.values()])
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            bad = [k for k, ok in zip(loss_dict.keys(), finite.tolist()) if not ok]
            raise FloatingPointError(
                f"Loss became infinite or NaN at iteration={self.iter}! Non-finite losses: {bad} "
                f"(loss_dict = { {k: float(v.detach()) for k, v in loss_dict.items()} })"
            )

    def _backward(self, losses: torch.Tensor) -> None:
        losses.backward()

    def _unscale(self) -> None:
        """Hook for subclasses: make ``.grad`` hold true gradients before clipping."""

    def _optimizer_step(self) -> None:
        self.optimizer.step()

    def _clip(self) -> float | None:
        if self.clip_grad_norm is None:
            return None
        self._unscale()
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
        return float(norm)

    def _autocast(self) -> Any:
        return nullcontext()

    def run_step(self) -> None:
        """One iteration: ``grad_accumulation_steps`` forward/backward passes and one optimizer step."""
        if not self.model.training:
            raise RuntimeError(
                "SimpleTrainer: the model was switched to eval mode during training; hooks that "
                "evaluate must restore training mode."
            )
        steps = self.grad_accumulation_steps
        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        data_time = 0.0
        summed: dict[str, float] = {}
        for micro in range(steps):
            start = time.perf_counter()
            data = self._next_batch()
            data_time += time.perf_counter() - start
            with self._autocast():
                loss_dict = self._forward(data)
            self._check_finite(loss_dict)
            losses = sum(loss_dict.values())
            if steps > 1:
                losses = losses / steps
            if not self.zero_grad_before_forward and micro == 0:
                self.optimizer.zero_grad()
            self._backward(losses)
            for k, v in loss_dict.items():
                summed[k] = summed.get(k, 0.0) + float(v.detach()) / steps
        self.after_backward()
        grad_norm = self._clip()
        self._optimizer_step()
        if (self.iter + 1) % self.gather_metric_period == 0 or self.iter == self.max_iter - 1:
            self._write_metrics(summed, data_time)
            if grad_norm is not None and comm.is_main_process():
                self.storage.put_scalar("grad_norm", grad_norm)

    def _write_metrics(self, loss_dict: Mapping[str, float], data_time: float, prefix: str = "") -> None:
        SimpleTrainer.write_metrics(loss_dict, data_time, self.iter, prefix)

    @staticmethod
    def write_metrics(loss_dict: Mapping[str, Any], data_time: float, cur_iter: int, prefix: str = "") -> None:
        """Gather ``loss_dict`` (scalars) and ``data_time`` from all processes; the main process logs the mean of
        each metric, the max data time and ``{prefix}total_loss`` (sum of all entries)."""
        metrics = {
            k: float(v.detach().cpu().item()) if isinstance(v, torch.Tensor) else float(v) for k, v in loss_dict.items()
        }
        metrics["data_time"] = data_time
        all_metrics = comm.gather(metrics)
        if not comm.is_main_process():
            return
        storage = get_event_storage()
        storage.put_scalar("data_time", max(m.pop("data_time") for m in all_metrics), cur_iter=cur_iter)
        reduced = {k: float(np.mean([m[k] for m in all_metrics])) for k in all_metrics[0]}
        total = sum(reduced.values())
        storage.put_scalar(f"{prefix}total_loss", total, cur_iter=cur_iter)
        reduced = {f"{prefix}{k}": v for k, v in reduced.items() if k != "total_loss"}
        if reduced:
            storage.put_scalars(cur_iter=cur_iter, **reduced)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if hasattr(self.data_loader, "state_dict"):
            state["data_loader"] = self.data_loader.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if "data_loader" in state:
            if not hasattr(self.data_loader, "load_state_dict"):
                raise ValueError(
                    "SimpleTrainer.load_state_dict: the state has a data loader state but the "
                    f"trainer's data loader ({type(self.data_loader).__name__}) cannot load it."
                )
            self.data_loader.load_state_dict(state["data_loader"])
        # the next batch must come from the restored position
        self._data_loader_iter_obj = None


class AMPTrainer(SimpleTrainer):
    """:class:`SimpleTrainer` with the forward under ``torch.autocast``.

    Args:
        model, data_loader, optimizer, kwargs: see :class:`SimpleTrainer`.
        precision: ``torch.float16`` (with a grad scaler) or ``torch.bfloat16`` (no scaler needed).
        grad_scaler: a ``torch.amp.GradScaler`` for float16 (default: a new one on the model's device type).
        log_grad_scaler: log the scaler's scale as ``[metric]grad_scaler``.
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable,
        optimizer: torch.optim.Optimizer,
        *,
        precision: torch.dtype = torch.float16,
        grad_scaler: Any | None = None,
        log_grad_scaler: bool = False,
        **kwargs: Any,
    ):
        super().__init__(model, data_loader, optimizer, **kwargs)
        if precision not in (torch.float16, torch.bfloat16):
            raise ValueError(f"AMPTrainer: precision must be torch.float16 or torch.bfloat16, got {precision}.")
        param = next(iter(model.parameters()), None)
        self.device_type = param.device.type if param is not None else "cpu"
        self.precision = precision
        if precision == torch.bfloat16:
            if grad_scaler is not None:
                raise ValueError(
                    "AMPTrainer: a grad scaler is only used with precision=torch.float16; "
                    "bfloat16 has float32's range and needs none."
                )
        elif grad_scaler is None:
            grad_scaler = torch.amp.GradScaler(self.device_type)
        self.grad_scaler = grad_scaler
        self.log_grad_scaler = log_grad_scaler
        self._unscaled = False

    def _autocast(self) -> Any:
        return torch.autocast(device_type=self.device_type, dtype=self.precision)

    def _backward(self, losses: torch.Tensor) -> None:
        self._unscaled = False
        if self.grad_scaler is None:
            losses.backward()
        else:
            self.grad_scaler.scale(losses).backward()

    def _unscale(self) -> None:
        if self.grad_scaler is not None and not self._unscaled:
            self.grad_scaler.unscale_(self.optimizer)
            self._unscaled = True

    def _optimizer_step(self) -> None:
        if self.grad_scaler is None:
            self.optimizer.step()
            return
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        if self.log_grad_scaler:
            self.storage.put_scalar("[metric]grad_scaler", self.grad_scaler.get_scale())

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.grad_scaler is not None:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if self.grad_scaler is not None and "grad_scaler" in state:
            self.grad_scaler.load_state_dict(state["grad_scaler"])

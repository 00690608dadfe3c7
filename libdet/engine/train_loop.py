"""The training loop: :class:`TrainerBase` (iterations + hooks), :class:`SimpleTrainer` (batches -> one optimizer
step per iteration) and :class:`AMPTrainer` (detectron2's name for a mixed-precision :class:`SimpleTrainer`).

The step seam
-------------
What an iteration does to the weights is one public object, an
:class:`~libdet.engine.optimizer_step.OptimizerStep` given to :class:`SimpleTrainer` as ``step=``. It is composed
of a precision (``FullPrecision`` / ``MixedPrecision``), gradient transforms (``ClipGradNorm``,
``ClipGradNormPerGroup`` or any ``transform(optimizer) -> metrics`` callable) and ``accumulation_steps``; weight
averaging composes as the :class:`~libdet.engine.hooks.EMAHook`. For example, DETR-style training (AdamW with a
10x lower backbone lr, gradients clipped to 0.1, bf16)::

    from libdet.engine.optimizer_step import ClipGradNormPerGroup, MixedPrecision, OptimizerStep
    from libdet.solver import get_default_optimizer_params

    params = get_default_optimizer_params(
        model, base_lr=1e-4, lr_factor_func=lambda name: 0.1 if name.startswith("backbone.") else 1.0)
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4)
    step = OptimizerStep(
        precision=MixedPrecision(torch.bfloat16, device_type="cuda"),
        grad_transforms=[ClipGradNormPerGroup(max_norm=0.1)],  # or ClipGradNorm(0.1): one norm over all groups
    )
    trainer = SimpleTrainer(model, loader, optimizer, step=step, gather_metric_period=20)

In a lazy config the same is ``train.amp``, ``train.grad_transforms = [L(ClipGradNormPerGroup)(max_norm=0.1)]`` and
``train.grad_accumulation_steps`` (``tools/lazyconfig_train_net.py`` composes the step). Another kind of step is a
subclass of ``OptimizerStep`` overriding ``forward_backward`` / ``update``.

Losses are not read from the device every iteration: :class:`SimpleTrainer` reads, checks (finite) and writes
them every ``gather_metric_period`` iterations.

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

import dataclasses
import logging
import math
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

from .optimizer_step import MixedPrecision, OptimizerStep

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


class SimpleTrainer(TrainerBase):
    """Each iteration: load a batch, ``loss_dict = model(batch)``, backward the sum of the losses, step the
    optimizer, as composed by ``step`` (an :class:`~libdet.engine.optimizer_step.OptimizerStep`: precision, gradient
    transforms such as clipping, gradient accumulation). Logs every loss, ``total_loss``, ``data_time`` (averaged /
    maxed over processes) and the step's metrics (e.g. ``grad_norm``).

    Losses stay on their device until metrics are written (every ``gather_metric_period`` iterations, at the last
    iteration and when training stops on request): then the losses of every iteration since the last write are
    read at once (one device synchronisation), checked to be finite, and put into the event storage under their
    own iterations. The check runs before that iteration's optimizer step: a non-finite loss raises
    ``FloatingPointError`` naming the iteration and the losses, at most ``gather_metric_period - 1`` optimizer
    steps after it appeared (none with the default period of 1).

    Args:
        model: in training mode, returns a dict of scalar losses (or one loss tensor).
        data_loader: an iterable of batches; infinite for iteration-based training. Its ``state_dict()`` (if any)
            is part of the trainer state.
        optimizer: a ``torch.optim.Optimizer``.
        step: how the batches become a weight update (default: ``OptimizerStep()``, float32, one batch, no
            gradient transform).
        gather_metric_period: write metrics every this many iterations (e.g. the log period).
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable,
        optimizer: torch.optim.Optimizer,
        *,
        step: OptimizerStep | None = None,
        gather_metric_period: int = 1,
    ):
        super().__init__()
        model.train()
        if gather_metric_period < 1:
            raise ValueError(f"SimpleTrainer: gather_metric_period must be >= 1, got {gather_metric_period}.")
        if step is not None and not isinstance(step, OptimizerStep):
            raise TypeError(f"SimpleTrainer: step must be an OptimizerStep, got {type(step).__name__}.")
        self.model = model
        self.data_loader = data_loader
        self._data_loader_iter_obj: Iterator | None = None
        self.optimizer = optimizer
        self.step = step if step is not None else OptimizerStep()
        self.gather_metric_period = gather_metric_period
        self._pending: list[_StepRecord] = []

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

    def run_step(self) -> None:
        """One iteration: ``step.accumulation_steps`` forward/backward passes and one optimizer step."""
        if not self.model.training:
            raise RuntimeError(
                "SimpleTrainer: the model was switched to eval mode during training; hooks that "
                "evaluate must restore training mode."
            )
        self.step.zero_grad(self.optimizer)
        record = _StepRecord(self.iter)
        for _ in range(self.step.accumulation_steps):
            start = time.perf_counter()
            data = self._next_batch()
            record.data_time += time.perf_counter() - start
            record.losses.append(self.step.forward_backward(self.model, data))
        self._pending.append(record)
        self.after_backward()
        write = (self.iter + 1) % self.gather_metric_period == 0 or self.iter == self.max_iter - 1
        if write:
            self._read_pending_losses()  # raises before the optimizer steps on a non-finite loss
        record.step_metrics = self.step.update(self.optimizer)
        if write:
            self._write_pending()

    def after_step(self) -> None:
        super().after_step()
        if self._stop_requested and self._pending:
            # training ends before the next metric write: write what the last iterations logged (the writers'
            # after_train still runs after this)
            self._read_pending_losses()
            self._write_pending()

    def _read_pending_losses(self) -> None:
        """Read the pending losses to floats (one synchronisation per device) and check that they are finite."""
        tensors = [v for r in self._pending if r.loss_values is None for d in r.losses for v in d.values()]
        values = iter(_to_floats(tensors))
        for r in self._pending:
            if r.loss_values is None:
                r.loss_values = [{k: next(values) for k in d} for d in r.losses]
                r.losses = []  # the device tensors are no longer needed
        for r in self._pending:
            bad = sorted({k for d in r.loss_values for k, v in d.items() if not math.isfinite(v)})
            if bad:
                self._pending.clear()
                raise FloatingPointError(
                    f"Loss became infinite or NaN at iteration={r.iteration}! Non-finite losses: {bad} "
                    f"(loss_dict = {r.loss_values[0] if len(r.loss_values) == 1 else r.loss_values})"
                )

    def _write_pending(self) -> None:
        """Put the pending iterations' metrics into the event storage (gathered over processes) and clear them."""
        records, self._pending = self._pending, []
        step_values = iter(_to_floats([v for r in records for v in r.step_metrics.values()]))
        per_iter = []
        for r in records:
            steps = len(r.loss_values)
            summed: dict[str, float] = {}
            for d in r.loss_values:
                for k, v in d.items():
                    summed[k] = summed.get(k, 0.0) + v / steps
            per_iter.append((r.iteration, {**summed, "data_time": r.data_time}))
            r.step_values = {k: next(step_values) for k in r.step_metrics}
        all_ranks = comm.gather(per_iter)
        if not comm.is_main_process():
            return
        storage = get_event_storage()
        for i, r in enumerate(records):
            _put_reduced_metrics(storage, [rank[i][1] for rank in all_ranks], r.iteration)
            for name, value in r.step_values.items():
                storage.put_scalar(name, value, cur_iter=r.iteration)

    @staticmethod
    def write_metrics(loss_dict: Mapping[str, Any], data_time: float, cur_iter: int, prefix: str = "") -> None:
        """Gather ``loss_dict`` (scalars) and ``data_time`` from all processes; the main process logs the mean of
        each metric, the max data time and ``{prefix}total_loss`` (sum of all entries)."""
        metrics = {
            k: float(v.detach().cpu().item()) if isinstance(v, torch.Tensor) else float(v) for k, v in loss_dict.items()
        }
        metrics["data_time"] = data_time
        all_metrics = comm.gather(metrics)
        if comm.is_main_process():
            _put_reduced_metrics(get_event_storage(), all_metrics, cur_iter, prefix)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(self.step.state_dict())
        if hasattr(self.data_loader, "state_dict"):
            state["data_loader"] = self.data_loader.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.step.load_state_dict(state)
        if "data_loader" in state:
            if not hasattr(self.data_loader, "load_state_dict"):
                raise ValueError(
                    "SimpleTrainer.load_state_dict: the state has a data loader state but the "
                    f"trainer's data loader ({type(self.data_loader).__name__}) cannot load it."
                )
            self.data_loader.load_state_dict(state["data_loader"])
        # the next batch must come from the restored position
        self._data_loader_iter_obj = None
        self._pending = []


class AMPTrainer(SimpleTrainer):
    """detectron2's ``AMPTrainer``: a :class:`SimpleTrainer` whose step runs under
    :class:`~libdet.engine.optimizer_step.MixedPrecision` (the forward under ``torch.autocast``).

    To combine mixed precision with gradient transforms or accumulation, give :class:`SimpleTrainer` an
    ``OptimizerStep(precision=MixedPrecision(...), grad_transforms=[...], accumulation_steps=k)``.

    Args:
        model, data_loader, optimizer, gather_metric_period: see :class:`SimpleTrainer`.
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
        gather_metric_period: int = 1,
    ):
        param = next(iter(model.parameters()), None)
        mixed = MixedPrecision(
            precision,
            device_type=param.device.type if param is not None else "cpu",
            grad_scaler=grad_scaler,
            log_grad_scaler=log_grad_scaler,
        )
        super().__init__(
            model,
            data_loader,
            optimizer,
            step=OptimizerStep(precision=mixed),
            gather_metric_period=gather_metric_period,
        )

    @property
    def grad_scaler(self) -> Any:
        """The float16 grad scaler (``None`` with bfloat16)."""
        return self.step.precision.grad_scaler

    @property
    def precision(self) -> torch.dtype:
        """The autocast dtype."""
        return self.step.precision.dtype


@dataclasses.dataclass
class _StepRecord:
    """What one iteration logs, kept on the device until metrics are written."""

    iteration: int
    data_time: float = 0.0
    losses: list[dict[str, torch.Tensor]] = dataclasses.field(default_factory=list)  # one dict per batch
    loss_values: list[dict[str, float]] | None = None  # ``losses`` read to floats
    step_metrics: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    step_values: dict[str, float] = dataclasses.field(default_factory=dict)


def _to_floats(tensors: Sequence[torch.Tensor]) -> list[float]:
    """The values of 1-element tensors as floats, reading each device's tensors in one transfer."""
    out: list[float | None] = [None] * len(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    for indices in by_device.values():
        values = torch.stack([tensors[i].detach().float().reshape(()) for i in indices]).tolist()
        for i, v in zip(indices, values):
            out[i] = v
    return out  # type: ignore[return-value]


def _put_reduced_metrics(storage: EventStorage, all_metrics: list[dict[str, float]], cur_iter: int, prefix="") -> None:
    """Put the mean over processes of each metric, the max ``data_time`` and ``{prefix}total_loss``."""
    all_metrics = [dict(m) for m in all_metrics]
    storage.put_scalar("data_time", max(m.pop("data_time") for m in all_metrics), cur_iter=cur_iter)
    reduced = {k: float(np.mean([m[k] for m in all_metrics])) for k in all_metrics[0]}
    total = sum(reduced.values())
    storage.put_scalar(f"{prefix}total_loss", total, cur_iter=cur_iter)
    reduced = {f"{prefix}{k}": v for k, v in reduced.items() if k != "total_loss"}
    if reduced:
        storage.put_scalars(cur_iter=cur_iter, **reduced)

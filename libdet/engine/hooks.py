"""Training hooks: timing, writers, checkpoints, LR scheduling, evaluation, EMA, validation loss, early stopping,
precise BN, profiling.

Order matters (hooks run in registration order). For an exact resume, register hooks that change state in
``after_step`` (``LRScheduler``, ``EMAHook``, ``EvalHook``, ``BestCheckpointer``, ``EarlyStopping``) *before*
``PeriodicCheckpointer``, and ``PeriodicWriter`` last, e.g.::

    IterationTimer(), LRScheduler(), EMAHook(model), EvalHook(...), BestCheckpointer(...), EarlyStopping(...),
    PeriodicCheckpointer(checkpointer, period), PeriodicWriter(writers)
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from fvcore.common.checkpoint import Checkpointer
from fvcore.common.checkpoint import PeriodicCheckpointer as _PeriodicCheckpointer
from fvcore.common.param_scheduler import ParamScheduler
from torch import nn

from libdet.evaluation.results import flatten_results_dict
from libdet.solver import LRMultiplier
from libdet.solver import LRScheduler as _TorchLRScheduler
from libdet.solver.ema import EMAState, EMAUpdater
from libdet.utils import comm
from libdet.utils.events import EventStorage, EventWriter
from libdet.utils.fvcore_nn import fvcore_nn

from .train_loop import HookBase, _preserve_cpu_rng

__all__ = [
    "BestCheckpointer",
    "CallbackHook",
    "EMAHook",
    "EarlyStopping",
    "EvalHook",
    "IterationTimer",
    "LRScheduler",
    "PeriodicCheckpointer",
    "PeriodicWriter",
    "PreciseBN",
    "TorchMemoryStats",
    "TorchProfiler",
    "ValidationLoss",
]

logger = logging.getLogger(__name__)


def _is_period_end(trainer: Any, period: int) -> bool:
    """Whether the current iteration ends a period (``(iter + 1) % period == 0``) and is not the last one."""
    next_iter = trainer.iter + 1
    return period > 0 and next_iter % period == 0 and next_iter != trainer.max_iter


def _is_last_iter(trainer: Any) -> bool:
    return trainer.iter + 1 >= trainer.max_iter


class CallbackHook(HookBase):
    """Call ``fn(trainer)`` at the stages given.

    Args:
        before_train, after_train, before_step, after_backward, after_step: callables taking the trainer.
    """

    def __init__(
        self,
        *,
        before_train: Callable | None = None,
        after_train: Callable | None = None,
        before_step: Callable | None = None,
        after_backward: Callable | None = None,
        after_step: Callable | None = None,
    ):
        self._before_train = before_train
        self._after_train = after_train
        self._before_step = before_step
        self._after_backward = after_backward
        self._after_step = after_step

    def before_train(self) -> None:
        if self._before_train:
            self._before_train(self.trainer)

    def after_train(self) -> None:
        if self._after_train:
            self._after_train(self.trainer)
        # the callables may hold the trainer: drop them to avoid a reference cycle
        self._before_train = self._after_train = self._before_step = self._after_backward = self._after_step = None

    def before_step(self) -> None:
        if self._before_step:
            self._before_step(self.trainer)

    def after_backward(self) -> None:
        if self._after_backward:
            self._after_backward(self.trainer)

    def after_step(self) -> None:
        if self._after_step:
            self._after_step(self.trainer)


class IterationTimer(HookBase):
    """Log the duration of each iteration as ``time`` (after ``warmup_iter`` iterations) and the total training
    time at the end.

    Args:
        warmup_iter: iterations excluded from the timing at the start.
    """

    def __init__(self, warmup_iter: int = 3):
        self._warmup_iter = warmup_iter
        self._step_start = 0.0
        self._start_time = 0.0
        self._total_step_time = 0.0
        self._timed_steps = 0

    def before_train(self) -> None:
        self._start_time = time.perf_counter()
        self._total_step_time = 0.0
        self._timed_steps = 0

    def before_step(self) -> None:
        self._step_start = time.perf_counter()

    def after_step(self) -> None:
        seconds = time.perf_counter() - self._step_start
        if self.trainer.iter >= self.trainer.start_iter + self._warmup_iter:
            self._total_step_time += seconds
            self._timed_steps += 1
            self.trainer.storage.put_scalars(time=seconds)

    def after_train(self) -> None:
        total = time.perf_counter() - self._start_time
        if self._timed_steps > 0:
            logger.info(
                f"Overall training speed: {self._timed_steps} iterations in {self._total_step_time:.4f} s "
                f"({self._total_step_time / self._timed_steps:.4f} s / it)"
            )
        logger.info(f"Total training time: {total:.2f} s ({total - self._total_step_time:.2f} s on hooks)")


class PeriodicWriter(HookBase):
    """Call each writer's ``write()`` every ``period`` iterations and at the end; close them after training.

    Args:
        writers: :class:`~libdet.utils.events.EventWriter` objects.
        period: iterations between writes.
    """

    def __init__(self, writers: Sequence[EventWriter], period: int = 20):
        for w in writers:
            if not isinstance(w, EventWriter):
                raise TypeError(f"PeriodicWriter: {w!r} is not an EventWriter.")
        self._writers = list(writers)
        self._period = period

    def after_step(self) -> None:
        if (self.trainer.iter + 1) % self._period == 0 or self.trainer.iter == self.trainer.max_iter - 1:
            for writer in self._writers:
                writer.write()

    def after_train(self) -> None:
        for writer in self._writers:
            # write what the last iteration and the after_train hooks logged
            writer.write()
            writer.close()


class PeriodicCheckpointer(_PeriodicCheckpointer, HookBase):
    """Save a checkpoint every ``period`` iterations and at the last iteration (fvcore's
    ``PeriodicCheckpointer``), with ``trainer=trainer.state_dict()`` as extra state. When training stops early on
    request, ``{file_prefix}_final`` is saved at the end.

    Args:
        checkpointer: e.g. a ``DetectionCheckpointer`` of the model, optimizer and scheduler.
        period: iterations between checkpoints.
        max_iter: default: the trainer's.
        max_to_keep: keep only this many periodic checkpoints.
        file_prefix: checkpoint name prefix.
    """

    def __init__(
        self,
        checkpointer: Checkpointer,
        period: int,
        max_iter: int | None = None,
        max_to_keep: int | None = None,
        file_prefix: str = "model",
    ):
        super().__init__(checkpointer, period, max_iter=max_iter, max_to_keep=max_to_keep, file_prefix=file_prefix)

    def before_train(self) -> None:
        self.max_iter = self.trainer.max_iter

    def after_step(self) -> None:
        it = self.trainer.iter
        if (it + 1) % self.period == 0 or (self.max_iter is not None and it >= self.max_iter - 1):
            # trainer.state_dict() copies RNG and loader states: only build it when saving
            self.step(it, trainer=self.trainer.state_dict())

    def after_train(self) -> None:
        if getattr(self.trainer, "stop_requested", False):
            state = self.trainer.state_dict()
            last_iter = self.trainer.iter - 1  # train() leaves `iter` one past the last iteration run
            state["iteration"] = last_iter
            self.checkpointer.save(f"{self.file_prefix}_final", iteration=last_iter, trainer=state)


class BestCheckpointer(HookBase):
    """Save ``{file_prefix}.pth`` whenever the metric ``val_metric`` (put into the storage by an
    :class:`EvalHook` registered before this hook) improves. Checks every ``eval_period`` iterations and at the
    end of training.

    Args:
        eval_period: iterations between checks (use the EvalHook's period).
        checkpointer: the checkpointer to save with.
        val_metric: storage name of the metric, e.g. ``"bbox/AP50"``.
        mode: ``"max"`` or ``"min"``.
        file_prefix: checkpoint file name.
    """

    def __init__(
        self,
        eval_period: int,
        checkpointer: Checkpointer,
        val_metric: str,
        mode: str = "max",
        file_prefix: str = "model_best",
    ):
        if mode not in ("max", "min"):
            raise ValueError(f"BestCheckpointer: mode must be 'max' or 'min', got {mode!r}.")
        self._period = eval_period
        self._val_metric = val_metric
        self._mode = mode
        self._checkpointer = checkpointer
        self._file_prefix = file_prefix
        self.best_metric: float | None = None
        self.best_iter: int | None = None

    def _improved(self, new: float) -> bool:
        if self.best_metric is None:
            return True
        return new > self.best_metric if self._mode == "max" else new < self.best_metric

    def _best_checking(self) -> None:
        latest = self.trainer.storage.latest().get(self._val_metric)
        if latest is None:
            logger.warning(
                f"BestCheckpointer: metric {self._val_metric!r} not found in the event storage; "
                f"is an EvalHook registered before it? Not saving."
            )
            return
        value, metric_iter = latest
        if not math.isfinite(value):
            logger.warning(f"BestCheckpointer: {self._val_metric} = {value} is not finite; not saving.")
            return
        if self._improved(value):
            previous = self.best_metric
            self.best_metric, self.best_iter = float(value), int(metric_iter)
            state = self.trainer.state_dict()
            self._checkpointer.save(self._file_prefix, iteration=int(metric_iter), trainer=state)
            logger.info(
                f"Saved best model ({self._val_metric} = {value:.5f}, previous best {previous}) "
                f"at iteration {metric_iter}."
            )

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if self._period > 0 and next_iter % self._period == 0 and next_iter != self.trainer.max_iter:
            self._best_checking()

    def after_train(self) -> None:
        if self.trainer.iter >= self.trainer.max_iter:
            self._best_checking()

    def state_dict(self) -> dict[str, Any]:
        return {"best_metric": self.best_metric, "best_iter": self.best_iter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_metric, self.best_iter = state["best_metric"], state["best_iter"]


class LRScheduler(HookBase):
    """Log the lr (as ``lr``) and step the LR scheduler after each iteration.

    Args:
        optimizer: default: ``trainer.optimizer``.
        scheduler: a torch LR scheduler, or a fvcore ``ParamScheduler`` (wrapped in :class:`LRMultiplier` over
            ``trainer.max_iter`` iterations when training starts); default: ``trainer.scheduler``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None):
        self._optimizer = optimizer
        self._scheduler = scheduler
        self._pending_state: dict[str, Any] | None = None
        self._best_param_group_id = 0

    @property
    def scheduler(self) -> Any:
        return self._scheduler

    @staticmethod
    def get_best_param_group_id(optimizer: torch.optim.Optimizer) -> int:
        """The group whose lr is logged: the largest one among those with the most common initial lr."""
        groups = optimizer.param_groups
        lrs = [g.get("initial_lr", g["lr"]) for g in groups]
        common = max(set(lrs), key=lrs.count)
        candidates = [i for i, lr in enumerate(lrs) if lr == common]
        return max(candidates, key=lambda i: len(groups[i]["params"]))

    def before_train(self) -> None:
        self._optimizer = self._optimizer or self.trainer.optimizer
        if self._scheduler is None:
            self._scheduler = getattr(self.trainer, "scheduler", None)
            if self._scheduler is None:
                raise ValueError("LRScheduler hook: no scheduler given and the trainer has no `scheduler`.")
        if isinstance(self._scheduler, ParamScheduler):
            self._scheduler = LRMultiplier(
                self._optimizer, self._scheduler, self.trainer.max_iter, last_iter=self.trainer.iter - 1
            )
        if self._pending_state is not None:
            self._scheduler.load_state_dict(self._pending_state)
            self._pending_state = None
        self._best_param_group_id = LRScheduler.get_best_param_group_id(self._optimizer)

    def after_step(self) -> None:
        lr = self._optimizer.param_groups[self._best_param_group_id]["lr"]
        self.trainer.storage.put_scalar("lr", lr, smoothing_hint=False)
        self._scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        if isinstance(self._scheduler, _TorchLRScheduler):
            return self._scheduler.state_dict()
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if isinstance(self._scheduler, _TorchLRScheduler):
            self._scheduler.load_state_dict(state)
        else:  # built in before_train
            self._pending_state = dict(state)


class TorchProfiler(HookBase):
    """Profile the iterations selected by ``enable_predicate(trainer)`` with ``torch.profiler`` and write a
    Chrome trace per profiled iteration to ``output_dir/profiler-trace-iter{N}.json``.

    Args:
        enable_predicate: ``trainer -> bool``; e.g. ``lambda t: 5 < t.iter < 8``.
        output_dir: where traces are written.
        activities: ``torch.profiler.ProfilerActivity`` values (default: CPU, plus CUDA when available).
    """

    def __init__(
        self, enable_predicate: Callable[[Any], bool], output_dir: str, *, activities: Iterable[Any] | None = None
    ):
        self._enable_predicate = enable_predicate
        self._activities = activities
        self._output_dir = output_dir
        self._profiler: Any = None

    def before_step(self) -> None:
        if not self._enable_predicate(self.trainer):
            self._profiler = None
            return
        from torch.profiler import ProfilerActivity, profile

        activities = self._activities
        if activities is None:
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        self._profiler = profile(activities=list(activities), record_shapes=True)
        self._profiler.__enter__()

    def after_step(self) -> None:
        if self._profiler is None:
            return
        self._profiler.__exit__(None, None, None)
        os.makedirs(self._output_dir, exist_ok=True)
        suffix = f"-rank{comm.get_rank()}" if comm.get_world_size() > 1 else ""  # one trace per process
        path = os.path.join(self._output_dir, f"profiler-trace-iter{self.trainer.iter}{suffix}.json")
        self._profiler.export_chrome_trace(path)
        self._profiler = None


class TorchMemoryStats(HookBase):
    """Log CUDA memory statistics (``max_reserved_mem``, ``max_allocated_mem``, in MB) every ``period``
    iterations, at most ``max_runs`` times, resetting the peaks after each log. Without CUDA it logs once that
    it is inactive and does nothing.

    Args:
        period: iterations between logs.
        max_runs: number of logs.
    """

    def __init__(self, period: int = 20, max_runs: int = 10):
        self._period = period
        self._max_runs = max_runs
        self._runs = 0

    def before_train(self) -> None:
        if not torch.cuda.is_available():
            logger.info("TorchMemoryStats: CUDA is not available; no memory statistics will be recorded.")

    def after_step(self) -> None:
        if not torch.cuda.is_available() or self._runs >= self._max_runs:
            return
        if (self.trainer.iter + 1) % self._period == 0 or self.trainer.iter == self.trainer.max_iter - 1:
            mb = 1024.0 * 1024.0
            reserved = torch.cuda.max_memory_reserved() / mb
            allocated = torch.cuda.max_memory_allocated() / mb
            self.trainer.storage.put_scalars(
                max_reserved_mem=reserved, max_allocated_mem=allocated, smoothing_hint=False
            )
            logger.info(
                f"iter {self.trainer.iter}: max_reserved_mem {reserved:.0f}M, max_allocated_mem "
                f"{allocated:.0f}M\n{torch.cuda.memory_summary()}"
            )
            torch.cuda.reset_peak_memory_stats()
            self._runs += 1


class EMAHook(HookBase):
    """Keep an exponential moving average of ``model``'s weights, updated after every iteration.

    Its state (the averaged tensors) is part of the trainer state. Pass it as ``ema`` to :class:`EvalHook` to
    evaluate with the EMA weights; :meth:`ema_weights` swaps them in for any block.

    Args:
        model: the trained model (DDP-wrapped or not).
        decay: EMA decay.
        device: device of the EMA state ("" : the model's).
        yolox: use YOLOX's warm decay.
    """

    def __init__(self, model: nn.Module, *, decay: float = 0.999, device: str = "", yolox: bool = False):
        self.model = model
        self.state = EMAState()
        self.updater = EMAUpdater(self.state, decay=decay, device=device, yolox=yolox)

    def before_train(self) -> None:
        if not self.state.has_inited():
            self.updater.init_state(self.model)

    def after_step(self) -> None:
        self.updater.update(self.model)

    @contextlib.contextmanager
    def ema_weights(self) -> Iterator[nn.Module]:
        """Within the block the model holds the EMA weights."""
        if not self.state.has_inited():
            self.updater.init_state(self.model)
        with self.state.apply_and_restore(self.model) as m:
            yield m

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.state.state_dict(), "num_updates": self.updater.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state.load_state_dict(state["ema"])
        self.updater.num_updates = int(state["num_updates"])


class EvalHook(HookBase):
    """Run ``eval_function()`` every ``eval_period`` iterations and after training; put its results (a possibly
    nested dict of numbers, flattened to ``"bbox/AP"``-style names) into the event storage.

    Args:
        eval_period: iterations between evaluations (0: only after training).
        eval_function: no-argument callable returning a dict of results (may be empty on non-main processes).
        eval_after_train: also evaluate when training completes.
        ema: if given, evaluation runs with the EMA weights swapped in.
    """

    def __init__(
        self,
        eval_period: int,
        eval_function: Callable[[], Mapping[str, Any] | None],
        eval_after_train: bool = True,
        *,
        ema: EMAHook | None = None,
    ):
        self._period = eval_period
        self._func = eval_function
        self._eval_after_train = eval_after_train
        self._ema = ema
        self._last_eval_iter: int | None = None

    def _do_eval(self) -> None:
        context = self._ema.ema_weights() if self._ema is not None else contextlib.nullcontext()
        with _preserve_cpu_rng(), context:
            results = self._func()
        self._last_eval_iter = self.trainer.iter
        if results:
            if not isinstance(results, Mapping):
                raise TypeError(f"EvalHook: eval_function must return a dict, got {type(results).__name__}.")
            flattened = flatten_results_dict(results)
            for k, v in flattened.items():
                try:
                    flattened[k] = float(v)
                except (TypeError, ValueError) as e:
                    raise TypeError(
                        f"EvalHook: eval_function returned a non-number {v!r} for {k!r}; it must "
                        f"return a (nested) dict of numbers."
                    ) from e
            self.trainer.storage.put_scalars(**flattened, smoothing_hint=False)
        # evaluation may take different times on different ranks
        comm.synchronize()

    def after_step(self) -> None:
        if _is_period_end(self.trainer, self._period):
            self._do_eval()

    def after_train(self) -> None:
        # train() leaves `iter == max_iter` when every iteration ran
        if self._eval_after_train and self.trainer.iter >= self.trainer.max_iter:
            self._do_eval()
        # the function may hold references to the trainer
        del self._func


class ValidationLoss(HookBase):
    """Every ``period`` iterations (and at the last one), compute the model's losses on validation batches:
    the model stays in training mode, under ``torch.no_grad()``; the training RNG states and the model's
    buffers (e.g. BatchNorm statistics) are restored afterwards. Logged as ``val_<loss>`` and
    ``val_total_loss`` (averaged over batches and processes).

    Args:
        period: iterations between validations.
        data_loader: iterable of batches in the training format (each process its own shard).
        num_batches: batches per validation (None: the whole loader, which must then be finite).
    """

    def __init__(self, period: int, data_loader: Iterable, *, num_batches: int | None = None):
        if num_batches is not None and num_batches < 1:
            raise ValueError(f"ValidationLoss: num_batches must be >= 1 or None, got {num_batches}.")
        self._period = period
        self._data_loader = data_loader
        self._num_batches = num_batches

    def _validate(self) -> None:
        model = self.trainer.model
        buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
        sums: dict[str, float] = {}
        n = 0
        batches = iter(self._data_loader)
        if self._num_batches is not None:
            batches = itertools.islice(batches, self._num_batches)
        with _preserve_cpu_rng(), torch.no_grad(), EventStorage(self.trainer.iter):
            # a private storage: scalars the model logs during validation must not mix with training metrics
            for batch in batches:
                losses = model(batch)
                if isinstance(losses, torch.Tensor):
                    losses = {"total_loss": losses}
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                n += 1
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
        if n == 0:
            raise ValueError("ValidationLoss: the validation data loader yielded no batch.")
        mean = {k: torch.tensor(v / n) for k, v in sums.items()}
        mean = comm.reduce_dict(mean)
        if comm.is_main_process():
            values = {f"val_{k}": float(v) for k, v in mean.items() if k != "total_loss"}
            total = sum(float(v) for v in mean.values())
            self.trainer.storage.put_scalars(**values, val_total_loss=total, smoothing_hint=False)

    def after_step(self) -> None:
        it = self.trainer.iter + 1
        if (self._period > 0 and it % self._period == 0) or it == self.trainer.max_iter:
            self._validate()


class EarlyStopping(HookBase):
    """Stop training when ``metric`` has not improved by more than ``min_delta`` for ``patience`` consecutive
    checks. Checks every ``period`` iterations, reading the latest value of ``metric`` in the event storage
    (put there by an :class:`EvalHook` or :class:`ValidationLoss` registered before this hook); a value already
    seen at an earlier check is not counted again. The trainer then finishes the current iteration, runs
    ``after_train`` hooks (a ``PeriodicCheckpointer`` saves ``model_final``) and returns.

    Args:
        period: iterations between checks.
        metric: storage name of the metric (e.g. ``"bbox/AP"``, ``"val_total_loss"``).
        mode: ``"max"`` (higher is better) or ``"min"``.
        patience: checks without improvement tolerated.
        min_delta: minimum change that counts as an improvement.
    """

    def __init__(self, period: int, metric: str, mode: str = "max", patience: int = 3, min_delta: float = 0.0):
        if mode not in ("max", "min"):
            raise ValueError(f"EarlyStopping: mode must be 'max' or 'min', got {mode!r}.")
        if patience < 1 or period < 1:
            raise ValueError(f"EarlyStopping: period and patience must be >= 1, got {period} and {patience}.")
        self._period = period
        self._metric = metric
        self._mode = mode
        self._patience = patience
        self._min_delta = abs(min_delta)
        self.best: float | None = None
        self.num_bad_checks = 0
        self._last_metric_iter: int | None = None

    def _check(self) -> bool:
        latest = self.trainer.storage.latest().get(self._metric)
        if latest is None:
            logger.warning(
                f"EarlyStopping: metric {self._metric!r} is not in the event storage; is the hook "
                f"that computes it registered before EarlyStopping?"
            )
            return False
        value, metric_iter = latest
        if metric_iter == self._last_metric_iter:
            return False
        self._last_metric_iter = int(metric_iter)
        if self.best is None or (
            value > self.best + self._min_delta if self._mode == "max" else value < self.best - self._min_delta
        ):
            self.best = float(value)
            self.num_bad_checks = 0
            return False
        self.num_bad_checks += 1
        return self.num_bad_checks >= self._patience

    def after_step(self) -> None:
        if (self.trainer.iter + 1) % self._period != 0:
            return
        stop = self._check() if comm.is_main_process() else False
        stop = comm.all_gather(stop)[0]  # rank 0 decides for everyone
        if stop:
            logger.info(
                f"EarlyStopping: {self._metric} did not improve for {self._patience} checks "
                f"(best {self.best}); stopping after iteration {self.trainer.iter}."
            )
            self.trainer.request_stop()

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "num_bad_checks": self.num_bad_checks, "last_metric_iter": self._last_metric_iter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]
        self.num_bad_checks = int(state["num_bad_checks"])
        self._last_metric_iter = state["last_metric_iter"]


class PreciseBN(HookBase):
    """Recompute BatchNorm statistics with the current weights on ``num_iter`` batches ("precise BN"), every
    ``period`` iterations and after the last one. Does nothing (with a log line) if the model has no BN layer
    in training mode.

    Args:
        period: iterations between recomputations (0: only at the end).
        model: the model whose BN statistics are recomputed (training mode).
        data_loader: iterable of training batches (a separate loader from the trainer's).
        num_iter: batches used per recomputation.
    """

    def __init__(self, period: int, model: nn.Module, data_loader: Iterable, num_iter: int):
        self._bn_layers = fvcore_nn.get_bn_modules(model)
        if len(self._bn_layers) == 0:
            logger.info("PreciseBN is disabled: the model has no BatchNorm layer in training mode.")
            self._disabled = True
            return
        self._disabled = False
        self._model = model
        self._data_loader = data_loader
        self._num_iter = num_iter
        self._period = period

    def after_step(self) -> None:
        if self._disabled:
            return
        next_iter = self.trainer.iter + 1
        if next_iter == self.trainer.max_iter or (self._period > 0 and next_iter % self._period == 0):
            self.update_stats()

    def update_stats(self) -> None:
        """Recompute the statistics now."""
        if self._disabled:
            return
        logger.info(f"Running precise-BN for {self._num_iter} iterations ...")
        with _preserve_cpu_rng(), EventStorage():  # the model may log scalars in its forward
            fvcore_nn.update_bn_stats(self._model, iter(self._data_loader), self._num_iter)

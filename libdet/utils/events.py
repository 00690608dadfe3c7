"""Training metrics: the :class:`EventStorage` that the trainer and hooks write into, and the writers that
periodically print, append to ``metrics.json`` or send to TensorBoard what the storage holds.

A storage is active inside ``with EventStorage(start_iter):``; code anywhere in the training step reaches it
with :func:`get_event_storage` (e.g. a model logging an accuracy). Storages nest as a stack.

Scalars put as tensors are not read from their device when they are put: they wait in the storage until something
reads it (a writer, a hook looking at :meth:`EventStorage.latest`), and are then read together, one transfer per
device and dtype. A model can log ``(pred == gt).float().mean()`` every iteration without a device synchronisation.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import torch
from fvcore.common.history_buffer import HistoryBuffer

from libdet.utils.file_io import PathManager

__all__ = [
    "CommonMetricPrinter",
    "EventStorage",
    "EventWriter",
    "JSONWriter",
    "TensorboardXWriter",
    "get_event_storage",
    "has_event_storage",
]

_CURRENT_STORAGE_STACK: list[EventStorage] = []


def get_event_storage() -> EventStorage:
    """The innermost active :class:`EventStorage`.

    Raises:
        RuntimeError: outside any ``with EventStorage(...):`` block.
    """
    if not _CURRENT_STORAGE_STACK:
        raise RuntimeError(
            "get_event_storage() was called outside an EventStorage context. Wrap the code in "
            "`with EventStorage(start_iter):` (the trainer does this inside `train()`)."
        )
    return _CURRENT_STORAGE_STACK[-1]


def has_event_storage() -> bool:
    """Whether an :class:`EventStorage` context is active."""
    return bool(_CURRENT_STORAGE_STACK)


_MAX_PENDING_SCALARS = 10_000
"""Tensor scalars kept waiting at most: a run without any reader (no writer registered) stays bounded in memory."""


def _to_float(value: Any, name: str) -> float:
    if isinstance(value, torch.Tensor):
        return float(_checked_scalar_tensor(value, name).item())
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"EventStorage: scalar {name!r} must be a number, got {type(value).__name__}.") from e


def _checked_scalar_tensor(value: torch.Tensor, name: str) -> torch.Tensor:
    """``value`` as a detached 0-dim tensor (a check of its shape, which reads nothing from the device)."""
    if value.numel() != 1:
        raise ValueError(f"EventStorage: scalar {name!r} must have one element, got shape {tuple(value.shape)}.")
    return value.detach().reshape(())


def _read_scalars(tensors: list[torch.Tensor]) -> list[float]:
    """The values of 0-dim tensors as floats, as ``.item()`` gives them, one transfer per device and dtype."""
    out: list[float] = [0.0] * len(tensors)
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(i)
    for indices in groups.values():
        for i, v in zip(indices, torch.stack([tensors[i] for i in indices]).tolist()):
            out[i] = float(v)
    return out


class EventStorage:
    """Per-iteration scalars, images and histograms of a training run.

    Args:
        start_iter: the iteration number the storage starts at.
    """

    def __init__(self, start_iter: int = 0):
        self._history: dict[str, HistoryBuffer] = defaultdict(HistoryBuffer)
        self._smoothing_hints: dict[str, bool] = {}
        self._latest_scalars: dict[str, tuple[float, int]] = {}
        self._iter = int(start_iter)
        self._current_prefix = ""
        self._vis_data: list[tuple[str, torch.Tensor, int]] = []
        self._histograms: list[dict[str, Any]] = []
        # puts not in the histories yet, in order: (name, value, iteration); values are floats or 0-dim tensors
        self._pending: list[tuple[str, float | torch.Tensor, int]] = []

    def put_image(self, img_name: str, img_tensor: torch.Tensor) -> None:
        """Queue an image for the writers (e.g. TensorBoard).

        Args:
            img_name: tag of the image.
            img_tensor: float tensor ``(3, H, W)`` in ``[0, 1]`` or uint8 in ``[0, 255]``.
        """
        if not isinstance(img_tensor, torch.Tensor) or img_tensor.dim() != 3 or img_tensor.shape[0] not in (1, 3):
            raise ValueError(
                f"EventStorage.put_image({img_name!r}): expected a (C, H, W) tensor with C in (1, 3), "
                f"got {getattr(img_tensor, 'shape', type(img_tensor))}."
            )
        self._vis_data.append((img_name, img_tensor.detach().cpu(), self._iter))

    def put_scalar(self, name: str, value: Any, smoothing_hint: bool = True, cur_iter: int | None = None) -> None:
        """Record a scalar for the current (or given) iteration.

        Args:
            name: metric name (prefixed by the active :meth:`name_scope`).
            value: a number or one-element tensor. A tensor is read from its device only when the storage is read
                (see the module docstring), so it costs no synchronisation now.
            smoothing_hint: whether writers should report a windowed median/average rather than the latest
                value. A metric must keep the same hint for the whole run.
            cur_iter: iteration to record at (default: the storage's current iteration).
        """
        name = self._current_prefix + name
        cur_iter = self._iter if cur_iter is None else int(cur_iter)
        existing = self._smoothing_hints.get(name)
        if existing is not None and existing != smoothing_hint:
            raise ValueError(
                f"EventStorage: scalar {name!r} was put with smoothing_hint={existing} before and "
                f"smoothing_hint={smoothing_hint} now; use one hint per metric."
            )
        self._smoothing_hints[name] = smoothing_hint
        if isinstance(value, torch.Tensor):
            # a copy: the caller may change its tensor in place before the storage reads it
            self._pending.append((name, _checked_scalar_tensor(value, name).clone(), cur_iter))
            if len(self._pending) >= _MAX_PENDING_SCALARS:
                self._read_pending()
        elif self._pending:  # after waiting tensors: keep the order of the puts
            self._pending.append((name, _to_float(value, name), cur_iter))
        else:
            self._record(name, _to_float(value, name), cur_iter)

    def _record(self, name: str, value: float, cur_iter: int) -> None:
        self._history[name].update(value, cur_iter)
        self._latest_scalars[name] = (value, cur_iter)

    def _read_pending(self) -> None:
        """Read the waiting tensor scalars (one transfer per device and dtype) into the histories, in put order."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        tensor_idx = [i for i, (_, v, _) in enumerate(pending) if isinstance(v, torch.Tensor)]
        values: list[Any] = [v for _, v, _ in pending]
        for i, v in zip(tensor_idx, _read_scalars([values[i] for i in tensor_idx])):
            values[i] = v
        for (name, _, cur_iter), value in zip(pending, values):
            self._record(name, value, cur_iter)

    def put_scalars(self, *, smoothing_hint: bool = True, cur_iter: int | None = None, **kwargs: Any) -> None:
        """Record several scalars: ``storage.put_scalars(loss=1.0, accuracy=0.5)``."""
        for k, v in kwargs.items():
            self.put_scalar(k, v, smoothing_hint=smoothing_hint, cur_iter=cur_iter)

    def put_histogram(self, hist_name: str, hist_tensor: torch.Tensor, bins: int = 1000) -> None:
        """Record a histogram of the values of ``hist_tensor`` (any shape) with ``bins`` equal bins."""
        values = hist_tensor.detach().flatten().float().cpu()
        if values.numel() == 0:
            raise ValueError(f"EventStorage.put_histogram({hist_name!r}): the tensor is empty.")
        ht_min, ht_max = values.min().item(), values.max().item()
        counts = torch.histc(values, bins=bins, min=ht_min, max=ht_max)
        edges = torch.linspace(ht_min, ht_max, bins + 1)
        self._histograms.append(
            {
                "tag": hist_name,
                "min": ht_min,
                "max": ht_max,
                "num": int(values.numel()),
                "sum": float(values.sum().item()),
                "sum_squares": float((values**2).sum().item()),
                "bucket_limits": edges[1:].tolist(),
                "bucket_counts": counts.tolist(),
                "global_step": self._iter,
            }
        )

    def history(self, name: str) -> HistoryBuffer:
        """The :class:`HistoryBuffer` of scalar ``name`` (values and iterations).

        Raises:
            KeyError: if no scalar of that name was put.
        """
        self._read_pending()
        if name not in self._history:
            raise KeyError(f"EventStorage: no history for scalar {name!r}; known: {sorted(self._history)}.")
        return self._history[name]

    def count_samples(self, name: str, window_size: int = 20) -> int:
        """How many values of scalar ``name`` were put during the last ``window_size`` iterations (counted back
        from the iteration of its latest value). Metric writers use it to average a scalar that is not put
        every iteration over the values that exist.

        Raises:
            KeyError: if no scalar of that name was put.
        """
        values = self.history(name).values()
        if not values:
            return 0
        last_iter = values[-1][1]
        samples = 0
        for _, it in reversed(values):
            if it <= last_iter - window_size:
                break
            samples += 1
        return samples

    def histories(self) -> dict[str, HistoryBuffer]:
        """All history buffers, by name."""
        self._read_pending()
        return dict(self._history)

    def latest(self) -> dict[str, tuple[float, int]]:
        """``{name: (latest value, iteration it was put at)}``."""
        self._read_pending()
        return dict(self._latest_scalars)

    def latest_with_smoothing_hint(self, window_size: int = 20) -> dict[str, tuple[float, int]]:
        """Like :meth:`latest`, but smoothed scalars are the median of their last ``window_size`` values."""
        self._read_pending()
        result = {}
        for name, (value, it) in self._latest_scalars.items():
            if self._smoothing_hints[name]:
                value = self._history[name].median(window_size)
            result[name] = (value, it)
        return result

    def smoothing_hints(self) -> dict[str, bool]:
        """``{name: smoothing_hint}`` of every scalar put so far."""
        return dict(self._smoothing_hints)

    def step(self) -> None:
        """Advance the iteration counter by one (the trainer sets :attr:`iter` directly instead)."""
        self._iter += 1

    @property
    def iter(self) -> int:
        """The current iteration; scalars put now are recorded at it."""
        return self._iter

    @iter.setter
    def iter(self, val: int) -> None:
        self._iter = int(val)

    @property
    def iteration(self) -> int:
        """Alias of :attr:`iter`."""
        return self._iter

    @property
    def vis_data(self) -> list[tuple[str, torch.Tensor, int]]:
        """Queued images: ``(name, tensor, iteration)``."""
        return self._vis_data

    @property
    def histograms(self) -> list[dict[str, Any]]:
        """Queued histograms (dicts in TensorBoard's ``add_histogram_raw`` format plus ``tag``/``global_step``)."""
        return self._histograms

    def __enter__(self) -> EventStorage:
        _CURRENT_STORAGE_STACK.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if not _CURRENT_STORAGE_STACK or _CURRENT_STORAGE_STACK[-1] is not self:
            raise RuntimeError("EventStorage contexts must be exited in the reverse order they were entered.")
        _CURRENT_STORAGE_STACK.pop()

    @contextlib.contextmanager
    def name_scope(self, name: str) -> Iterator[None]:
        """Prefix the names of scalars put inside the block with ``name + "/"`` (scopes nest)."""
        old_prefix = self._current_prefix
        self._current_prefix = old_prefix + name.rstrip("/") + "/"
        try:
            yield
        finally:
            self._current_prefix = old_prefix

    def clear_images(self) -> None:
        """Drop queued images (writers call this after writing them)."""
        self._vis_data = []

    def clear_histograms(self) -> None:
        """Drop queued histograms (writers call this after writing them)."""
        self._histograms = []


class EventWriter:
    """Base class of writers: :meth:`write` is called periodically inside an :class:`EventStorage` context."""

    def write(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement write().")

    def close(self) -> None:
        """Release files / handles (default: nothing to release)."""


class JSONWriter(EventWriter):
    """Append the scalars of each iteration not written yet as one JSON line (``{"iteration": i, name:
    value, ...}``) to ``json_file``, flushing after each write.

    Args:
        json_file: path of the file (appended to, so resumed runs continue it).
        window_size: window of the median of smoothed scalars.
    """

    def __init__(self, json_file: str, window_size: int = 20):
        self._file_handle = PathManager.open(json_file, "a")
        self._window_size = window_size
        self._last_write = -1

    def write(self) -> None:
        storage = get_event_storage()
        to_save: dict[int, dict[str, float]] = defaultdict(dict)
        for name, (value, it) in storage.latest_with_smoothing_hint(self._window_size).items():
            if it <= self._last_write:
                continue
            to_save[it][name] = value
        if to_save:
            self._last_write = max(to_save)
        for it in sorted(to_save):
            self._file_handle.write(json.dumps({"iteration": it, **to_save[it]}, sort_keys=True) + "\n")
        self._file_handle.flush()
        with contextlib.suppress(AttributeError, OSError, ValueError):
            os.fsync(self._file_handle.fileno())

    def close(self) -> None:
        self._file_handle.close()


class TensorboardXWriter(EventWriter):
    """Write scalars, images and histograms to TensorBoard event files (``torch.utils.tensorboard``; needs the
    ``tensorboard`` package).

    Args:
        log_dir: directory of the event files.
        window_size: window of the median of smoothed scalars.
        kwargs: passed to ``torch.utils.tensorboard.SummaryWriter``.
    """

    def __init__(self, log_dir: str, window_size: int = 20, **kwargs: Any):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError("TensorboardXWriter needs the `tensorboard` package: pip install tensorboard") from e
        self._window_size = window_size
        self._writer = SummaryWriter(log_dir, **kwargs)
        self._last_write = -1

    def write(self) -> None:
        storage = get_event_storage()
        new_last_write = self._last_write
        for name, (value, it) in storage.latest_with_smoothing_hint(self._window_size).items():
            if it > self._last_write:
                self._writer.add_scalar(name, value, it)
                new_last_write = max(new_last_write, it)
        self._last_write = new_last_write
        if storage.vis_data:
            for img_name, img, step_num in storage.vis_data:
                self._writer.add_image(img_name, img, step_num)
            storage.clear_images()
        if storage.histograms:
            for params in storage.histograms:
                params = dict(params)
                self._writer.add_histogram_raw(params.pop("tag"), global_step=params.pop("global_step"), **params)
            storage.clear_histograms()
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class CommonMetricPrinter(EventWriter):
    """Log one line per write: ETA, iteration, losses (``*loss*`` scalars), other smoothed metrics, step time,
    data time, learning rate and (with CUDA) max memory allocated.

    Args:
        max_iter: total iterations of the run; enables the ETA.
        window_size: window of the smoothed values.
    """

    def __init__(self, max_iter: int | None = None, window_size: int = 20):
        self.logger = logging.getLogger("libdet.utils.events")
        self._max_iter = max_iter
        self._window_size = window_size
        self._last_write: tuple[int, float] | None = None

    def _get_eta(self, storage: EventStorage) -> str | None:
        if self._max_iter is None:
            return None
        iteration = storage.iter
        remaining = self._max_iter - iteration - 1
        try:
            eta_seconds = storage.history("time").median(1000) * remaining
            storage.put_scalar("eta_seconds", eta_seconds, smoothing_hint=False)
            return str(datetime.timedelta(seconds=int(eta_seconds)))
        except KeyError:
            # no "time" history yet (e.g. IterationTimer not registered): estimate from wall time between writes
            eta = None
            if self._last_write is not None:
                last_iter, last_time = self._last_write
                if iteration > last_iter:
                    per_iter = (time.perf_counter() - last_time) / (iteration - last_iter)
                    eta = str(datetime.timedelta(seconds=int(per_iter * remaining)))
            self._last_write = (iteration, time.perf_counter())
            return eta

    def write(self) -> None:
        storage = get_event_storage()
        iteration = storage.iter
        if self._max_iter is not None and iteration == self._max_iter:
            # after training ends the trainer's counter is max_iter; nothing new to print
            return
        histories = storage.histories()

        def window_avg(name: str) -> float | None:
            buf = histories.get(name)
            if buf is None or not buf.values():
                return None
            return buf.avg(self._window_size)

        data_time = window_avg("data_time")
        iter_time = window_avg("time")
        lr = histories["lr"].latest() if "lr" in histories else None
        eta = self._get_eta(storage)
        max_mem_mb = None
        if torch.cuda.is_available():
            max_mem_mb = torch.cuda.max_memory_allocated() / 1024.0 / 1024.0

        losses = "  ".join(
            f"{k}: {v.median(self._window_size):.4g}" for k, v in sorted(histories.items()) if "loss" in k
        )
        skip = {"data_time", "time", "lr", "eta_seconds"}
        hints = storage.smoothing_hints()
        others = "  ".join(
            f"{k}: {v.median(self._window_size):.4g}"
            for k, v in sorted(histories.items())
            if "loss" not in k
            and k not in skip
            and hints.get(k, False)
            and v.values()
            and v.values()[-1][1] == iteration
        )
        parts = [f"eta: {eta}" if eta else "", f"iter: {iteration}", losses, others]
        if iter_time is not None:
            parts.append(f"time: {iter_time:.4f}")
        if data_time is not None:
            parts.append(f"data_time: {data_time:.4f}")
        if lr is not None:
            parts.append(f"lr: {lr:.5g}")
        if max_mem_mb is not None:
            parts.append(f"max_mem: {max_mem_mb:.0f}M")
        self.logger.info("  ".join(p for p in parts if p))

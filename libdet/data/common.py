"""Dataset wrappers: serialised lists, mapping with retries, sampler-driven iteration, aspect-ratio grouping.

Reproducible mapping: :class:`MapDataset` accepts either a plain integer index or a :class:`SeededIndex`
``(index, seed)``. With a seeded index it seeds Python's ``random``, ``numpy.random`` and ``torch`` with
``seed`` right before calling the mapper, and draws retry indices from an RNG seeded by ``seed`` too, so the
mapped sample depends only on ``(index, seed)``, not on which worker process maps it or what that worker
mapped before. The training loader (:mod:`libdet.data.build`) passes seeded indices.
"""

from __future__ import annotations

import copy
import itertools
import logging
import pickle
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.utils.data as data
from torch.utils.data.sampler import Sampler

from libdet.utils.logger import log_first_n

from .errors import DataError

__all__ = [
    "AspectRatioGroupedDataset",
    "DatasetFromList",
    "MapDataset",
    "SeededIndex",
    "ToIterableDataset",
    "derive_seed",
]

logger = logging.getLogger(__name__)


class SeededIndex(NamedTuple):
    """A dataset index together with the RNG seed to map it with (see :class:`MapDataset`)."""

    index: int
    seed: int


def derive_seed(*entropy: int) -> int:
    """A well-mixed seed in ``[0, 2**32)`` from a tuple of non-negative ints (e.g. ``(base_seed, position)``)."""
    return int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1)[0])


def _describe(item: Any, index: int) -> str:
    """A short description of a dataset item for error messages: its file name and image id if it has them."""
    if isinstance(item, dict):
        parts = [f"index {index}"]
        if "file_name" in item:
            parts.append(f"file_name='{item['file_name']}'")
        if "image_id" in item:
            parts.append(f"image_id={item['image_id']}")
        return ", ".join(parts)
    return f"index {index}"


class _SeededRNGs:
    """Seed ``random``/``numpy``/``torch`` for one mapping call; in the main process restore them afterwards
    (so data loading with ``num_workers=0`` does not reset the training process's RNGs)."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self) -> None:
        self._restore = torch.utils.data.get_worker_info() is None
        if self._restore:
            self._states = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
        random.seed(self.seed)
        np.random.seed(self.seed % 2**32)
        torch.manual_seed(self.seed)

    def __exit__(self, *exc: Any) -> None:
        if self._restore:
            random.setstate(self._states[0])
            np.random.set_state(self._states[1])
            torch.random.set_rng_state(self._states[2])


class MapDataset(data.Dataset):
    """Map ``map_func`` over a map-style dataset, replacing samples whose data is bad by other samples.

    When ``map_func`` returns ``None`` (the sample should be skipped) or raises a
    :class:`~libdet.data.errors.DataError` (an unreadable image, a malformed annotation, ...), another index
    is drawn at random and mapped instead; each failure is logged with the image's file name / id. Any other
    exception is a programming error and propagates at once (with a note naming the sample), so that a bug
    which breaks some of the images stops training instead of biasing it.

    Two bounds stop a run whose data is broken, with a ``RuntimeError`` summarising the failures:

    * more than ``max_failed_fraction`` of the dataset's samples raised a ``DataError`` (distinct samples, counted
      in this process: each data-loader worker counts the samples it mapped);
    * ``max_consecutive_failures`` failed attempts (``None`` or ``DataError``) in a row for one ``__getitem__``.

    Args:
        dataset: a map-style dataset (anything with ``__len__`` and ``__getitem__``, e.g. a list).
        map_func: callable applied to each item.
        max_consecutive_failures: bound on consecutive failed mapping attempts for one ``__getitem__``.
        max_failed_fraction: fraction of the dataset that may fail with a ``DataError`` (default 1 %; a dataset
            of fewer than 100 samples thus tolerates none). 1.0 disables the bound.

    ``__getitem__`` accepts an int, or a :class:`SeededIndex` for reproducible mapping (module docstring).
    """

    def __init__(
        self,
        dataset: Any,
        map_func: Callable[[Any], Any],
        *,
        max_consecutive_failures: int = 10,
        max_failed_fraction: float = 0.01,
    ):
        if max_consecutive_failures < 1:
            raise ValueError(f"MapDataset: max_consecutive_failures must be >= 1, got {max_consecutive_failures}.")
        if not 0.0 <= max_failed_fraction <= 1.0:
            raise ValueError(f"MapDataset: max_failed_fraction must lie in [0, 1], got {max_failed_fraction}.")
        self._dataset = dataset
        self._map_func = map_func
        self._max_failures = max_consecutive_failures
        self._max_failed_fraction = max_failed_fraction
        self._rng = random.Random(42)  # retries for plain int indices, as detectron2
        self._known_bad: set = set()  # plain-int path only: avoid re-picking samples that failed before
        self._data_errors: dict[int, str] = {}  # index -> "where: error" of samples that raised a DataError

    @property
    def dataset(self) -> Any:
        """The wrapped (unmapped) dataset."""
        return self._dataset

    @property
    def failed_samples(self) -> dict[int, str]:
        """``{index: description}`` of the samples that raised a ``DataError`` in this process."""
        return dict(self._data_errors)

    def __len__(self) -> int:
        return len(self._dataset)

    def _next_index(self, rng: random.Random, seeded: bool) -> int:
        n = len(self._dataset)
        idx = rng.randrange(n)
        if not seeded:  # the seeded path must not depend on what this process mapped before
            for _ in range(10):
                if idx not in self._known_bad:
                    break
                idx = rng.randrange(n)
        return idx

    def _map(self, item: Any, where: str, seed: int | None) -> Any:
        try:
            if seed is None:
                return self._map_func(item)
            with _SeededRNGs(seed):
                return self._map_func(item)
        except DataError:
            raise
        except Exception as e:
            if hasattr(e, "add_note"):  # Python >= 3.11
                e.add_note(
                    f"MapDataset: raised while mapping {where}. Only libdet.data.errors.DataError (bad data) makes "
                    "MapDataset try another sample; other exceptions are bugs and stop the run."
                )
            raise

    def _record_data_error(self, idx: int, where: str, error: DataError) -> None:
        self._data_errors[idx] = f"{where}: {type(error).__name__}: {error}"
        n, allowed = len(self._data_errors), self._max_failed_fraction * len(self._dataset)
        if n > allowed:
            listed = "\n  ".join(list(self._data_errors.values())[:10])
            more = f"\n  ... and {n - 10} more" if n > 10 else ""
            raise RuntimeError(
                f"MapDataset: {n} of {len(self._dataset)} samples failed with bad data, more than "
                f"max_failed_fraction={self._max_failed_fraction} allows; fix or remove them (or raise "
                f"max_failed_fraction). Failed samples:\n  {listed}{more}"
            ) from error

    def __getitem__(self, idx: int | SeededIndex) -> Any:
        seeded = isinstance(idx, SeededIndex)
        if seeded:
            requested, seed = int(idx.index), int(idx.seed)
            retry_rng = random.Random(derive_seed(seed, 1))
        else:
            requested, seed = int(idx), 0
            retry_rng = self._rng
        cur_idx = requested
        failures = 0
        while True:
            item = self._dataset[cur_idx]
            where = _describe(item, cur_idx)
            error: DataError | None = None
            attempt_seed = None if not seeded else seed if failures == 0 else derive_seed(seed, 2, failures)
            try:
                data_out = self._map(item, where, attempt_seed)
            except DataError as e:
                error, data_out = e, None
            if data_out is not None:
                self._known_bad.discard(cur_idx)
                return data_out
            failures += 1
            self._known_bad.add(cur_idx)
            if error is not None:
                logger.warning(
                    f"MapDataset: mapping {where} raised {type(error).__name__}: {error}; trying another sample."
                )
                self._record_data_error(cur_idx, where, error)
            else:
                log_first_n(
                    logging.WARNING,
                    f"MapDataset: the mapper returned None for {where}; trying another sample.",
                    n=1,
                    key="message",
                    name=__name__,
                )
            if failures >= self._max_failures:
                reason = f"{type(error).__name__}: {error}" if error is not None else "the mapper returned None"
                raise RuntimeError(
                    f"MapDataset: mapping failed {failures} times in a row (requested index {requested}); the "
                    f"last failure was {where}: {reason}"
                ) from error
            cur_idx = self._next_index(retry_rng, seeded)


class _PickledBuffer:
    """Items pickled into one uint8 numpy buffer plus an offsets array (few Python objects, so worker
    processes forked from the main process do not copy it through reference-count writes)."""

    def __init__(self, lst: Sequence[Any]):
        blobs = [np.frombuffer(pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8) for x in lst]
        self._addr = np.cumsum(np.asarray([len(b) for b in blobs], dtype=np.int64))
        self._buffer = np.concatenate(blobs) if blobs else np.zeros(0, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._addr)

    def __getitem__(self, idx: int) -> Any:
        start = 0 if idx == 0 else int(self._addr[idx - 1])
        end = int(self._addr[idx])
        return pickle.loads(memoryview(self._buffer[start:end]))

    def nbytes(self) -> int:
        return int(self._buffer.nbytes + self._addr.nbytes)


class DatasetFromList(data.Dataset):
    """A map-style dataset over a Python list.

    Args:
        lst: the items (e.g. dataset dicts).
        copy: with ``serialize=False``, return deep copies so mappers may modify items freely.
        serialize: store items pickled in one numpy buffer (memory-efficient with forked workers);
            every access then returns a fresh object.
    """

    def __init__(self, lst: list[Any], copy: bool = True, serialize: bool = True):
        self._copy = copy
        self._serialize = serialize
        if serialize:
            self._lst: Any = _PickledBuffer(lst)
            logger.info(f"Serialized dataset takes {self._lst.nbytes() / 1024**2:.2f} MiB")
        else:
            self._lst = lst

    def __len__(self) -> int:
        return len(self._lst)

    def __getitem__(self, idx: int) -> Any:
        if self._copy and not self._serialize:
            return copy.deepcopy(self._lst[idx])
        return self._lst[idx]


def _shard_for_workers(iterable: Any, chunk_size: int = 1) -> Iterator[Any]:
    """This data-loader worker's share of ``iterable``: chunks ``w, w + n, ...`` of ``chunk_size`` items."""
    worker_info = data.get_worker_info()
    if worker_info is None or worker_info.num_workers == 1:
        yield from iterable
        return
    it = iter(iterable)
    w, n = worker_info.id, worker_info.num_workers
    while True:
        chunk = list(itertools.islice(it, chunk_size * n))
        if not chunk:
            return
        yield from chunk[w * chunk_size : (w + 1) * chunk_size]


class ToIterableDataset(data.IterableDataset):
    """Turn a map-style dataset into an iterable one that yields ``dataset[i]`` for ``i`` from ``sampler``.

    Args:
        dataset: map-style dataset.
        sampler: an iterable of indices (e.g. a :class:`TrainingSampler`).
        shard_sampler: give each data-loader worker a disjoint share of the indices (set False when the
            sampler is already sharded per worker).
        shard_chunk_size: consecutive indices per worker share.
    """

    def __init__(self, dataset: Any, sampler: Sampler, shard_sampler: bool = True, shard_chunk_size: int = 1):
        if isinstance(dataset, data.IterableDataset):
            raise TypeError("ToIterableDataset: `dataset` must be map-style, got an IterableDataset.")
        if not isinstance(sampler, Sampler) and not hasattr(sampler, "__iter__"):
            raise TypeError(f"ToIterableDataset: `sampler` must be iterable, got {type(sampler)}.")
        self.dataset = dataset
        self.sampler = sampler
        self.shard_sampler = shard_sampler
        self.shard_chunk_size = shard_chunk_size

    def __iter__(self) -> Iterator[Any]:
        indices = _shard_for_workers(self.sampler, self.shard_chunk_size) if self.shard_sampler else self.sampler
        for idx in indices:
            yield self.dataset[idx]

    def __len__(self) -> int:
        return len(self.sampler)


class AspectRatioGroupedDataset(data.IterableDataset):
    """Batch an iterable of dataset dicts so each batch holds only landscape (``w > h``) or only portrait
    images, judged by each dict's ``width``/``height``. Yields lists of ``batch_size`` dicts."""

    def __init__(self, dataset: Any, batch_size: int):
        self.dataset = dataset
        self.batch_size = batch_size
        self._buckets: list[list[Any]] = [[], []]

    def __iter__(self) -> Iterator[list[Any]]:
        for d in self.dataset:
            try:
                w, h = d["width"], d["height"]
            except (KeyError, TypeError) as e:
                raise ValueError(
                    "AspectRatioGroupedDataset: items need 'width' and 'height' (got "
                    f"{sorted(d) if isinstance(d, dict) else type(d)})."
                ) from e
            bucket = self._buckets[0 if w > h else 1]
            bucket.append(d)
            if len(bucket) == self.batch_size:
                batch = bucket[:]
                del bucket[:]
                yield batch

"""Batch indices so that each batch holds elements of one group (e.g. one aspect-ratio class)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data.sampler import BatchSampler, Sampler

__all__ = ["GroupedBatchSampler"]


class GroupedBatchSampler(BatchSampler):
    """Wrap a sampler and yield batches of ``batch_size`` indices that share a group id.

    Indices are kept per group in arrival order; a batch is emitted as soon as its group has
    ``batch_size`` indices. Indices left over when a finite sampler ends are dropped.

    Args:
        sampler: the index sampler.
        group_ids: ``group_ids[i]`` is the group (an int in ``[0, G)``) of index ``i``.
        batch_size: batch size.
    """

    def __init__(self, sampler: Sampler, group_ids: Sequence[int], batch_size: int):
        if not isinstance(sampler, Sampler) and not hasattr(sampler, "__iter__"):
            raise TypeError(f"GroupedBatchSampler: `sampler` must be an iterable of indices, got {type(sampler)}.")
        if batch_size <= 0:
            raise ValueError(f"GroupedBatchSampler: batch_size must be positive, got {batch_size}.")
        self.sampler = sampler
        self.group_ids = np.asarray(group_ids)
        if self.group_ids.ndim != 1:
            raise ValueError(f"GroupedBatchSampler: group_ids must be 1D, got shape {self.group_ids.shape}.")
        self.batch_size = batch_size
        groups = np.unique(self.group_ids).tolist()
        self.buffer_per_group: dict[Any, list[int]] = {k: [] for k in groups}

    def __iter__(self) -> Iterator[list[int]]:
        for idx in self.sampler:
            group_buffer = self.buffer_per_group[self.group_ids[idx].item()]
            group_buffer.append(idx)
            if len(group_buffer) == self.batch_size:
                yield group_buffer[:]
                del group_buffer[:]

    def __len__(self) -> int:
        raise TypeError("GroupedBatchSampler has no length: the number of batches depends on the grouping.")

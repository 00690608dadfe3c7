"""Resumable, rank-aware index samplers for training and inference.

Training samplers produce one infinite *global* stream of indices made of consecutive "epochs"; epoch ``k``
(a permutation, or a repeat-factor resampling) is a pure function of ``(seed, k)``. Rank ``r`` of ``W``
takes the global positions ``r, r + W, r + 2W, ...``, so all ranks together see the stream exactly once.

Resuming: every training sampler has ``state_dict()`` / ``load_state_dict(state)``. ``position`` is the number
of indices this rank's stream has yielded; iterating again continues from there. Starting at position ``p``
costs one epoch's generation (epoch ``k`` is computed directly from ``(seed, k)``), not ``p`` draws.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data.sampler import Sampler

from libdet.utils import comm

__all__ = [
    "InferenceSampler",
    "RandomSubsetTrainingSampler",
    "RepeatFactorTrainingSampler",
    "TrainingSampler",
]

logger = logging.getLogger(__name__)


def _epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A torch generator seeded from ``(seed, epoch, stream)`` only."""
    state = np.random.SeedSequence([int(seed) % 2**63, int(epoch), int(stream)]).generate_state(2, dtype=np.uint32)
    g = torch.Generator()
    g.manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
    return g


class _EpochStreamSampler(Sampler[int]):
    """Infinite stream of epochs (``_epoch_indices(k)``), sharded over ranks, with resumable position."""

    def __init__(self, seed: int | None):
        if seed is None:
            seed = comm.shared_random_seed()
        self._seed = int(seed)
        self._rank = comm.get_rank()
        self._world_size = comm.get_world_size()
        self._position = 0
        self._epoch = 0  # the epoch containing global position self._position * W + rank (or an earlier one)
        self._epoch_start = 0  # global position where self._epoch starts

    @property
    def seed(self) -> int:
        return self._seed

    def _epoch_indices(self, epoch: int) -> torch.Tensor:
        raise NotImplementedError

    def _fast_locate(self, global_pos: int) -> tuple | None:
        """``(epoch, epoch_start)`` for a global position when epochs have a fixed length, else None."""
        return None

    def __iter__(self) -> Iterator[int]:
        g = self._position * self._world_size + self._rank
        located = self._fast_locate(g)
        if located is not None:
            self._epoch, self._epoch_start = located
        epoch, start = self._epoch, self._epoch_start
        indices = self._epoch_indices(epoch)
        while True:
            while g >= start + len(indices):
                start += len(indices)
                epoch += 1
                indices = self._epoch_indices(epoch)
            self._epoch, self._epoch_start = epoch, start
            self._position += 1
            yield int(indices[g - start])
            g += self._world_size

    def state_dict(self) -> dict[str, Any]:
        """``{"seed", "position", "epoch", "epoch_start", "world_size", "rank"}`` of this rank's stream."""
        return {
            "seed": self._seed,
            "position": self._position,
            "epoch": self._epoch,
            "epoch_start": self._epoch_start,
            "world_size": self._world_size,
            "rank": self._rank,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` (``epoch``/``epoch_start`` are optional hints).

        Raises:
            ValueError: if the state was saved with a different world size (the per-rank streams differ).
        """
        ws = state.get("world_size", self._world_size)
        if ws != self._world_size:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: state was saved with world_size={ws}, this run has "
                f"world_size={self._world_size}; an exact resume needs the same number of processes."
            )
        self._seed = int(state["seed"])
        self._position = int(state["position"])
        self._epoch = int(state.get("epoch", 0))
        self._epoch_start = int(state.get("epoch_start", 0))
        if self._epoch_start > self._position * self._world_size + self._rank:
            self._epoch, self._epoch_start = 0, 0


class TrainingSampler(_EpochStreamSampler):
    """Infinite stream of shuffled permutations of ``range(size)``, sharded across ranks.

    Args:
        size: dataset size.
        shuffle: shuffle each epoch (else ``0..size-1`` repeated).
        seed: shared by all ranks; ``None`` draws one with ``comm.shared_random_seed()``.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int | None = None):
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"TrainingSampler: `size` must be a positive int, got {size!r}.")
        super().__init__(seed)
        self._size = size
        self._shuffle = shuffle

    def _epoch_indices(self, epoch: int) -> torch.Tensor:
        if self._shuffle:
            return torch.randperm(self._size, generator=_epoch_generator(self._seed, epoch))
        return torch.arange(self._size)

    def _fast_locate(self, global_pos: int) -> tuple | None:
        epoch = global_pos // self._size
        return epoch, epoch * self._size

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "size": self._size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "size" in state and state["size"] != self._size:
            raise ValueError(
                f"TrainingSampler.load_state_dict: state is for a dataset of size {state['size']}, "
                f"this sampler has size {self._size}."
            )
        super().load_state_dict(state)


class RandomSubsetTrainingSampler(TrainingSampler):
    """Like :class:`TrainingSampler`, over a fixed random subset of ``subset_ratio * size`` indices.

    Args:
        size: dataset size.
        subset_ratio: fraction in ``(0, 1]`` of the dataset to use.
        shuffle: shuffle each epoch.
        seed_shuffle: seed of the epoch permutations (``None``: shared random seed).
        seed_subset: seed of the subset choice (``None``: shared random seed).
    """

    def __init__(
        self,
        size: int,
        subset_ratio: float,
        shuffle: bool = True,
        seed_shuffle: int | None = None,
        seed_subset: int | None = None,
    ):
        if not 0.0 < subset_ratio <= 1.0:
            raise ValueError(f"RandomSubsetTrainingSampler: subset_ratio must be in (0, 1], got {subset_ratio}.")
        self._size_subset = max(1, int(size * subset_ratio))
        super().__init__(self._size_subset, shuffle=shuffle, seed=seed_shuffle)
        if seed_subset is None:
            seed_subset = comm.shared_random_seed()
        self._seed_subset = int(seed_subset)
        g = torch.Generator()
        g.manual_seed(self._seed_subset)
        self._indexes_subset = torch.randperm(size, generator=g)[: self._size_subset]
        self._full_size = size
        logger.info(f"Using RandomSubsetTrainingSampler with {self._size_subset} of {size} images.")

    def _epoch_indices(self, epoch: int) -> torch.Tensor:
        return self._indexes_subset[super()._epoch_indices(epoch)]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "seed_subset": self._seed_subset}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "seed_subset" in state and state["seed_subset"] != self._seed_subset:
            raise ValueError(
                f"RandomSubsetTrainingSampler.load_state_dict: state has seed_subset={state['seed_subset']}, this "
                f"sampler {self._seed_subset}; construct it with seed_subset={state['seed_subset']}."
            )
        super().load_state_dict(state)


class RepeatFactorTrainingSampler(_EpochStreamSampler):
    """Infinite stream where image ``i`` appears ``r_i`` times per epoch on average (``r_i`` = repeat factor).

    Each epoch rounds every fractional factor stochastically (``floor(r) + (u < frac(r))``, ``u ~ U[0,1)``,
    as in the LVIS paper) and shuffles the repeated indices; both draws depend only on ``(seed, epoch)``.

    Args:
        repeat_factors: ``(N,)`` float tensor of factors, see :meth:`repeat_factors_from_category_frequency`.
        shuffle: shuffle each epoch.
        seed: shared by all ranks; ``None``: ``comm.shared_random_seed()``.
    """

    def __init__(self, repeat_factors: torch.Tensor, *, shuffle: bool = True, seed: int | None = None):
        super().__init__(seed)
        repeat_factors = torch.as_tensor(repeat_factors, dtype=torch.float32)
        if repeat_factors.dim() != 1 or len(repeat_factors) == 0 or bool((repeat_factors < 0).any()):
            raise ValueError(
                "RepeatFactorTrainingSampler: repeat_factors must be a non-empty 1D tensor of non-negative factors."
            )
        if float(repeat_factors.sum()) <= 0:
            raise ValueError("RepeatFactorTrainingSampler: all repeat factors are zero.")
        self._shuffle = shuffle
        self._int_part = torch.trunc(repeat_factors)
        self._frac_part = repeat_factors - self._int_part

    @staticmethod
    def repeat_factors_from_category_frequency(
        dataset_dicts: list[dict[str, Any]], repeat_thresh: float, sqrt: bool = True
    ) -> torch.Tensor:
        """Per-image repeat factors from category frequency (LVIS).

        For category ``c`` with image frequency ``f(c)`` (fraction of images containing it),
        ``r(c) = max(1, sqrt(t / f(c)))`` (``t / f(c)`` without ``sqrt``); an image's factor is the
        maximum ``r(c)`` over its categories (1 for images without annotations).

        Args:
            dataset_dicts: dataset dicts with ``annotations``.
            repeat_thresh: the threshold ``t``.
            sqrt: use the square root.

        Returns:
            ``(N,)`` float32 tensor.
        """
        category_freq: dict[int, float] = defaultdict(int)
        for d in dataset_dicts:
            for cat_id in {ann["category_id"] for ann in d.get("annotations", [])}:
                category_freq[cat_id] += 1
        num_images = len(dataset_dicts)
        category_rep = {}
        for cat_id, count in category_freq.items():
            ratio = repeat_thresh / (count / num_images)
            category_rep[cat_id] = max(1.0, math.sqrt(ratio) if sqrt else ratio)
        rep_factors = []
        for d in dataset_dicts:
            cat_ids = {ann["category_id"] for ann in d.get("annotations", [])}
            rep_factors.append(max((category_rep[c] for c in cat_ids), default=1.0))
        return torch.tensor(rep_factors, dtype=torch.float32)

    def _epoch_indices(self, epoch: int) -> torch.Tensor:
        g = _epoch_generator(self._seed, epoch)
        rands = torch.rand(len(self._frac_part), generator=g)
        reps = (self._int_part + (rands < self._frac_part).float()).long()
        indices = torch.from_numpy(np.repeat(np.arange(len(reps), dtype=np.int64), reps.numpy()))
        if self._shuffle:
            indices = indices[torch.randperm(len(indices), generator=g)]
        return indices


class InferenceSampler(Sampler[int]):
    """Every index of ``range(size)`` exactly once across ranks, each rank a contiguous shard (rank 0 first;
    the first ``size % world_size`` ranks get one extra index)."""

    def __init__(self, size: int):
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"InferenceSampler: `size` must be a non-negative int, got {size!r}.")
        self._size = size
        self._rank = comm.get_rank()
        self._world_size = comm.get_world_size()
        self._local_indices = self._get_local_indices(size, self._world_size, self._rank)

    @staticmethod
    def _get_local_indices(total_size: int, world_size: int, rank: int) -> range:
        shard_size = total_size // world_size
        left = total_size % world_size
        shard_sizes = [shard_size + int(r < left) for r in range(world_size)]
        begin = sum(shard_sizes[:rank])
        return range(begin, begin + shard_sizes[rank])

    def __iter__(self) -> Iterator[int]:
        yield from self._local_indices

    def __len__(self) -> int:
        return len(self._local_indices)

"""Helpers for multi-process (``torch.distributed``) code that are also correct in a single process.

Every function works whether or not ``torch.distributed`` is initialised; without it the world has
one process of rank 0.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "all_gather",
    "create_local_process_group",
    "gather",
    "get_local_process_group",
    "get_local_rank",
    "get_local_size",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "reduce_dict",
    "shared_random_seed",
    "synchronize",
]

_LOCAL_PROCESS_GROUP: Any = None
"""Process group of the processes on this machine; set by ``create_local_process_group``."""
_MISSING_LOCAL_PG_ERROR = (
    "Local process group is not yet created! Call libdet.utils.comm.create_local_process_group() "
    "(libdet.engine.launch does) before asking for local ranks."
)


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes in the job (1 without ``torch.distributed``)."""
    return dist.get_world_size() if _is_distributed() else 1


def get_rank() -> int:
    """Global rank of this process (0 without ``torch.distributed``)."""
    return dist.get_rank() if _is_distributed() else 0


@functools.lru_cache
def create_local_process_group(num_workers_per_machine: int) -> None:
    """Create the process group of the processes on this machine (call once, in every process)."""
    global _LOCAL_PROCESS_GROUP
    if _LOCAL_PROCESS_GROUP is not None:
        raise RuntimeError("The local process group was already created.")
    world_size = get_world_size()
    if world_size % num_workers_per_machine != 0:
        raise ValueError(
            f"num_workers_per_machine={num_workers_per_machine} does not divide the world size {world_size}."
        )
    num_machines = world_size // num_workers_per_machine
    machine_rank = get_rank() // num_workers_per_machine
    for i in range(num_machines):
        ranks = list(range(i * num_workers_per_machine, (i + 1) * num_workers_per_machine))
        group = dist.new_group(ranks)
        if i == machine_rank:
            _LOCAL_PROCESS_GROUP = group


def get_local_process_group() -> Any:
    """The process group of this machine's processes (see ``create_local_process_group``)."""
    if _LOCAL_PROCESS_GROUP is None:
        raise RuntimeError(_MISSING_LOCAL_PG_ERROR)
    return _LOCAL_PROCESS_GROUP


def get_local_rank() -> int:
    """Rank of this process among the processes on its machine (0 without ``torch.distributed``)."""
    if not _is_distributed():
        return 0
    return dist.get_rank(group=get_local_process_group())


def get_local_size() -> int:
    """Number of processes on this machine (1 without ``torch.distributed``)."""
    if not _is_distributed():
        return 1
    return dist.get_world_size(group=get_local_process_group())


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes; a no-op with one process."""
    if get_world_size() == 1:
        return
    if dist.get_backend() == dist.Backend.NCCL and torch.cuda.is_available():
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


@functools.lru_cache
def _gloo_group() -> Any:
    """A gloo group over all ranks, for gathering picklable Python objects on the CPU."""
    if dist.get_backend() == "nccl":
        return dist.new_group(backend="gloo")
    return dist.group.WORLD


def destroy_process_groups() -> None:
    """Tear down ``torch.distributed`` and forget every group this module created or cached.

    Call at the end of a worker: process-group objects that outlive ``destroy_process_group`` are otherwise
    destroyed during interpreter shutdown, which can abort the process.
    """
    global _LOCAL_PROCESS_GROUP
    _LOCAL_PROCESS_GROUP = None
    create_local_process_group.cache_clear()
    _gloo_group.cache_clear()
    if _is_distributed():
        dist.destroy_process_group()


def all_gather(data: Any, group: Any = None) -> list[Any]:
    """Gather any picklable object from every process; returns the list ordered by rank."""
    if get_world_size() == 1:
        return [data]
    group = _gloo_group() if group is None else group
    if dist.get_world_size(group) == 1:
        return [data]
    output: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(output, data, group=group)
    return output


def gather(data: Any, dst: int = 0, group: Any = None) -> list[Any]:
    """Gather any picklable object to rank ``dst``: it gets the list by rank, the others get ``[]``."""
    if get_world_size() == 1:
        return [data]
    group = _gloo_group() if group is None else group
    world = dist.get_world_size(group=group)
    if world == 1:
        return [data]
    if dist.get_rank(group=group) == dst:
        output: list[Any] = [None] * world
        dist.gather_object(data, output, dst=dst, group=group)
        return output
    dist.gather_object(data, None, dst=dst, group=group)
    return []


def shared_random_seed() -> int:
    """A random int in ``[0, 2**31)`` that is the same in every process (rank 0's draw)."""
    seed = int(np.random.randint(2**31))
    return all_gather(seed)[0]


def reduce_dict(input_dict: dict[str, torch.Tensor], average: bool = True) -> dict[str, torch.Tensor]:
    """Sum (or average) a dict of scalar tensors over processes; rank 0 receives the result.

    Keys are reduced in sorted order so every process must hold the same keys. With one process
    the input is returned unchanged.
    """
    world_size = get_world_size()
    if world_size < 2:
        return input_dict
    with torch.no_grad():
        names = sorted(input_dict.keys())
        values = torch.stack([input_dict[k] for k in names], dim=0)
        dist.reduce(values, dst=0)
        if dist.get_rank() == 0 and average:
            values /= world_size
        return dict(zip(names, values))

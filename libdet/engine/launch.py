"""Start a (possibly multi-process, multi-machine) job: one process per GPU, or CPU processes over gloo."""

from __future__ import annotations

import logging
import socket
from datetime import timedelta
from typing import Any, Callable, Optional, Sequence

import torch
import torch.distributed as dist

from libdet.utils import comm

__all__ = ["DEFAULT_TIMEOUT", "launch"]

DEFAULT_TIMEOUT = timedelta(minutes=30)
"""Default timeout of collective operations."""

logger = logging.getLogger(__name__)


def _find_free_port() -> int:
    """A TCP port on this machine that is free right now (another process may still take it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])
    finally:
        sock.close()


def launch(
    main_func: Callable[..., Any],
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: Optional[str] = None,
    args: Sequence[Any] = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> None:
    """Run ``main_func(*args)`` in every process of the job.

    With a world size of 1 the function runs in this process. Otherwise ``num_gpus_per_machine``
    processes are spawned on this machine, each joins the process group (NCCL on GPUs, gloo on CPU) and
    the per-machine group (:func:`libdet.utils.comm.create_local_process_group`) before calling
    ``main_func``; ``main_func`` and ``args`` must be picklable.

    Args:
        main_func: the function to run (module-level, so that spawned processes can import it).
        num_gpus_per_machine: processes per machine (one per GPU; on a CPU-only machine, CPU workers).
        num_machines: number of machines.
        machine_rank: rank of this machine, in ``[0, num_machines)``.
        dist_url: ``torch.distributed`` init method, e.g. ``"tcp://10.0.0.1:29500"``; ``"auto"`` or ``None``
            picks a free local port (single machine only).
        args: positional arguments for ``main_func``.
        timeout: timeout of collective operations.
    """
    if num_gpus_per_machine < 1 or num_machines < 1:
        raise ValueError(
            f"launch: num_gpus_per_machine ({num_gpus_per_machine}) and num_machines ({num_machines}) must be >= 1."
        )
    if not 0 <= machine_rank < num_machines:
        raise ValueError(f"launch: machine_rank={machine_rank} is not in [0, num_machines={num_machines}).")
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        main_func(*args)
        return
    if dist_url in (None, "auto"):
        if num_machines != 1:
            raise ValueError('launch: dist_url="auto" only works on one machine; pass the main machine\'s URL.')
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    if num_machines > 1 and dist_url.startswith("file://"):
        logger.warning("file:// is not a reliable init method across machines; prefer a tcp:// URL.")

    import torch.multiprocessing as mp

    mp.start_processes(
        _distributed_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, tuple(args), timeout),
        daemon=False,
        start_method="spawn",
    )


def _distributed_worker(
    local_rank: int,
    main_func: Callable[..., Any],
    world_size: int,
    num_gpus_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: tuple,
    timeout: timedelta,
) -> None:
    has_gpu = torch.cuda.is_available()
    if has_gpu and num_gpus_per_machine > torch.cuda.device_count():
        raise ValueError(
            f"launch: num_gpus_per_machine={num_gpus_per_machine} but this machine has "
            f"{torch.cuda.device_count()} GPUs."
        )
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    if has_gpu:
        torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group(
            backend="nccl" if has_gpu else "gloo",
            init_method=dist_url,
            world_size=world_size,
            rank=global_rank,
            timeout=timeout,
        )
    except Exception as e:
        raise RuntimeError(f"Process {global_rank} could not join the process group at {dist_url}: {e}") from e
    try:
        comm.create_local_process_group(num_gpus_per_machine)
        comm.synchronize()
        main_func(*args)
        comm.synchronize()  # no process tears the group down while another still communicates
    finally:
        comm.destroy_process_groups()

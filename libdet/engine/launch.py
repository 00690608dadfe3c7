"""Start a job's processes: ``launch(main, world, args=...)`` runs ``main(*args)`` in every process of the world.

A world description says where the processes come from:

* :class:`LocalWorld`: spawn ``num_gpus_per_machine`` processes on this machine and join them to the group at
  ``dist_url`` (``"auto"``: a free local port; ``"tcp://host:port"`` for several machines, each run with its
  ``machine_rank``). One process in all runs ``main`` in this process. A worker that raises stops the others and the
  error names its rank.
* :class:`EnvWorld`: the processes were started by someone else (``srun``, ``torchrun``); this one joins the group
  its environment describes (:meth:`DistributedEnv.from_environ`).
* :class:`libdet.engine.slurm.SubmititWorld`: submit ``main`` as a submitit job (SLURM, or local processes); the
  job requeues itself on preemption or time-out and calls ``main`` again. ``launch`` returns the submitit job.

detectron2's form ``launch(main_func, num_gpus_per_machine, num_machines=1, machine_rank=0, dist_url=None,
args=(), timeout=...)`` describes a :class:`LocalWorld` (or an :class:`EnvWorld` with ``dist_url="env://"``).
:func:`run_in_process_group` joins a group described explicitly.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import pickle
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from libdet.utils import comm

from .dist_env import DistributedEnv

__all__ = ["DEFAULT_TIMEOUT", "DistributedEnv", "EnvWorld", "LocalWorld", "World", "launch", "run_in_process_group"]

DEFAULT_TIMEOUT = timedelta(minutes=30)
"""Default timeout of collective operations."""

_FAILURE_GRACE_S = 2.0
"""After a worker fails, seconds the others get to exit by themselves before SIGTERM (and again before SIGKILL)."""

logger = logging.getLogger(__name__)


def _find_free_port() -> int:
    """A TCP port on this machine that is free right now (another process may still take it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])
    finally:
        sock.close()


def _check_layout(num_gpus_per_machine: int, num_machines: int, machine_rank: int) -> None:
    if num_gpus_per_machine < 1 or num_machines < 1:
        raise ValueError(
            f"launch: num_gpus_per_machine ({num_gpus_per_machine}) and num_machines ({num_machines}) must be >= 1."
        )
    if not 0 <= machine_rank < num_machines:
        raise ValueError(f"launch: machine_rank={machine_rank} is not in [0, num_machines={num_machines}).")


class World:
    """Where a job's processes come from. :func:`launch` calls :meth:`start`."""

    def start(self, main_func: Callable[..., Any], args: tuple, timeout: timedelta) -> Any:
        """Run ``main_func(*args)`` in every process of this world (collective timeout ``timeout``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement start().")


@dataclasses.dataclass(frozen=True)
class LocalWorld(World):
    """Processes spawned on this machine, one per GPU (CPU processes over gloo on a machine without GPU).

    Args:
        num_gpus_per_machine: processes per machine.
        num_machines: number of machines (each runs ``launch`` with its ``machine_rank``).
        machine_rank: rank of this machine, in ``[0, num_machines)``.
        dist_url: ``torch.distributed`` init method, e.g. ``"tcp://10.0.0.1:29500"``; ``"auto"`` or ``None`` picks a
            free local port (one machine only).
    """

    num_gpus_per_machine: int = 1
    num_machines: int = 1
    machine_rank: int = 0
    dist_url: str | None = "auto"

    def __post_init__(self) -> None:
        _check_layout(self.num_gpus_per_machine, self.num_machines, self.machine_rank)
        if self.dist_url in (None, "auto") and self.num_machines != 1:
            raise ValueError('launch: dist_url="auto" only works on one machine; pass the main machine\'s URL.')
        if self.dist_url == "env://":
            raise ValueError("LocalWorld: dist_url='env://' means the processes exist already; use EnvWorld().")

    @property
    def world_size(self) -> int:
        return self.num_machines * self.num_gpus_per_machine

    def start(self, main_func: Callable[..., Any], args: tuple, timeout: timedelta) -> None:
        if self.world_size == 1:
            main_func(*args)
            return
        dist_url = self.dist_url
        if dist_url in (None, "auto"):
            dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
        if self.num_machines > 1 and dist_url.startswith("file://"):
            logger.warning("file:// is not a reliable init method across machines; prefer a tcp:// URL.")
        _spawn(main_func, self, dist_url, args, timeout)


@dataclasses.dataclass(frozen=True)
class EnvWorld(World):
    """This process is one of a job's processes started by ``torchrun`` or ``srun``: it joins the group its
    environment describes (:meth:`DistributedEnv.from_environ`) and runs ``main_func`` there.

    Args:
        world_size: the number of processes the caller expects (checked against the environment); ``None``: any.
    """

    world_size: int | None = None

    def start(self, main_func: Callable[..., Any], args: tuple, timeout: timedelta) -> None:
        env = DistributedEnv.from_environ()
        if self.world_size is not None and self.world_size != env.world_size:
            raise ValueError(
                f"launch: num_machines * num_gpus_per_machine = {self.world_size} but the environment "
                f"describes {env.world_size} processes; pass 1 (or the same count) with env://."
            )
        run_in_process_group(main_func, env, args=args, timeout=timeout)


def launch(
    main_func: Callable[..., Any],
    num_gpus_per_machine: int | World = 1,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = None,
    args: Sequence[Any] = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> Any:
    """Run ``main_func(*args)`` in every process of a world: ``launch(main, LocalWorld(...) | EnvWorld() |
    SubmititWorld(...), args=(cfg_or_args,))``, or detectron2's ``launch(main, num_gpus_per_machine, num_machines,
    machine_rank, dist_url, args)``.

    Spawned and submitted processes receive ``main_func`` and ``args`` pickled (``main_func`` at module level).
    Each process of a multi-process world joins the process group (NCCL on GPUs, gloo on CPU) and the per-machine
    group (:func:`libdet.utils.comm.create_local_process_group`) before ``main_func`` runs.

    Args:
        main_func: the function to run.
        num_gpus_per_machine: a :class:`World`, or detectron2's processes per machine (then ``num_machines``,
            ``machine_rank`` and ``dist_url`` describe a :class:`LocalWorld`; ``dist_url="env://"`` an
            :class:`EnvWorld` whose size is checked when it is not 1).
        num_machines, machine_rank, dist_url: see :class:`LocalWorld` (only with a process count).
        args: positional arguments for ``main_func``.
        timeout: timeout of collective operations.

    Returns:
        ``None``, or what the world's ``start`` returns (the submitit ``Job`` of a ``SubmititWorld``).

    Raises:
        ValueError: for inconsistent arguments.
        RuntimeError: when a spawned worker fails (the message names its global rank).
    """
    if isinstance(num_gpus_per_machine, World):
        if (num_machines, machine_rank, dist_url) != (1, 0, None):
            raise ValueError(
                "launch: num_machines, machine_rank and dist_url belong to the world description; "
                f"got them next to {num_gpus_per_machine!r}."
            )
        world = num_gpus_per_machine
    elif dist_url == "env://":
        _check_layout(num_gpus_per_machine, num_machines, machine_rank)
        size = num_machines * num_gpus_per_machine
        world = EnvWorld(world_size=None if size == 1 else size)
    else:
        world = LocalWorld(num_gpus_per_machine, num_machines, machine_rank, dist_url)
    return world.start(main_func, tuple(args), timeout)


def _spawn(main_func: Callable[..., Any], world: LocalWorld, dist_url: str, args: tuple, timeout: timedelta) -> None:
    """Start this machine's processes of ``world``; a worker that fails stops the others (see :func:`launch`)."""
    import torch.multiprocessing as mp

    num_gpus_per_machine, machine_rank = world.num_gpus_per_machine, world.machine_rank
    stamp_dir = tempfile.mkdtemp(prefix="libdet-launch-")  # workers record when main_func raised
    try:
        context = mp.start_processes(
            _distributed_worker,
            nprocs=num_gpus_per_machine,
            args=(main_func, world.world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout, stamp_dir),
            daemon=False,
            start_method="spawn",
            join=False,
        )
        try:
            while not context.join(grace_period=_FAILURE_GRACE_S):
                pass
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as e:
            msg = _describe_failure(context, e, num_gpus_per_machine, machine_rank, stamp_dir)
            raise RuntimeError(msg) from None
        except BaseException:  # e.g. KeyboardInterrupt in the parent: do not leave workers behind
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
            for process in context.processes:
                process.join(_FAILURE_GRACE_S)
                if process.is_alive():
                    process.kill()
            raise
    finally:
        shutil.rmtree(stamp_dir, ignore_errors=True)


def _describe_failure(
    context: Any, error: Exception, num_gpus_per_machine: int, machine_rank: int, stamp_dir: str | None = None
) -> str:
    """The message for a failed spawn: the worker that failed first, its traceback (or exit status), and the
    workers that failed after it (often only as a consequence).

    A worker that raised leaves a traceback report (torch writes one per worker). The first exception is the one
    ``main_func`` raised first: workers stamp that time in ``stamp_dir`` before leaving the process group (the
    others' collective errors follow the teardown), else the report's time counts. A worker that died without a
    report (signal, ``os._exit``) is first when torch saw it fail first: the others' errors then followed from it.
    """
    reports = {}  # local rank -> (time of failure, traceback)
    for local_rank, path in enumerate(context.error_files):
        try:
            stamp = os.stat(path).st_mtime_ns
            with open(path, "rb") as f:
                trace = pickle.load(f)
        except (OSError, EOFError, pickle.UnpicklingError):
            continue
        if stamp_dir is not None:
            try:
                with open(os.path.join(stamp_dir, str(local_rank))) as f:
                    stamp = int(f.read())
            except (OSError, ValueError):
                pass
        reports[local_rank] = (stamp, trace)
    detected = int(getattr(error, "error_index", 0))
    if detected not in reports:  # killed by a signal or exited without a Python exception: torch's message says how
        failed_index, trace = detected, str(error).strip() + "\n"
    else:
        failed_index = min(reports, key=lambda r: reports[r][0])
        trace = reports[failed_index][1]
    rank = machine_rank * num_gpus_per_machine + failed_index
    others = sorted(machine_rank * num_gpus_per_machine + r for r in reports if r != failed_index)
    msg = (
        f"launch: the process of rank {rank} (machine {machine_rank}, local rank {failed_index}) failed; "
        f"the other processes of this machine were stopped.\n\n-- Rank {rank} traceback:\n{trace}"
    )
    if others:
        msg += f"\n(ranks {others} failed afterwards, probably as a consequence.)"
    return msg


def run_in_process_group(
    main_func: Callable[..., Any],
    env: DistributedEnv,
    *,
    args: Sequence[Any] = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
    init_method: str | None = None,
) -> Any:
    """Join this process to the job's process group, run ``main_func(*args)``, then leave the group.

    The backend is NCCL when CUDA is available (this process uses GPU ``local_rank``) and gloo otherwise. The
    per-machine group (:func:`libdet.utils.comm.create_local_process_group`) is created too, and every process
    synchronises before and after ``main_func``.

    Args:
        main_func: the function to run.
        env: this process's place in the job.
        args: positional arguments for ``main_func``.
        timeout: timeout of collective operations.
        init_method: ``torch.distributed`` init method (default: ``env.dist_url``).

    Returns:
        What ``main_func`` returns.
    """
    has_gpu = torch.cuda.is_available()
    if has_gpu:
        count = torch.cuda.device_count()
        if count == 1:  # e.g. a scheduler that shows each task only its own GPU
            torch.cuda.set_device(0)
        elif env.local_rank < count:
            torch.cuda.set_device(env.local_rank)
        else:
            raise ValueError(
                f"launch: local rank {env.local_rank} has no GPU: this machine shows {count} GPUs "
                f"for {env.local_world_size} processes."
            )
    url = init_method or env.dist_url
    try:
        dist.init_process_group(
            backend="nccl" if has_gpu else "gloo",
            init_method=url,
            world_size=env.world_size,
            rank=env.rank,
            timeout=timeout,
        )
    except Exception as e:
        raise RuntimeError(f"Process {env.rank} could not join the process group at {url}: {e}") from e
    try:
        comm.create_local_process_group(env.local_world_size)
        comm.synchronize()
        result = main_func(*args)
        comm.synchronize()  # no process tears the group down while another still communicates
        return result
    finally:
        comm.destroy_process_groups()


def _stamped_call(main_func: Callable[..., Any], stamp_file: str, *args: Any) -> Any:
    """``main_func(*args)``, writing the time (ns) to ``stamp_file`` if it raises (before any teardown)."""
    try:
        return main_func(*args)
    except BaseException:
        try:
            with open(stamp_file, "w") as f:
                f.write(str(time.time_ns()))
        except OSError:
            pass
        raise


def _distributed_worker(
    local_rank: int,
    main_func: Callable[..., Any],
    world_size: int,
    num_gpus_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: tuple,
    timeout: timedelta,
    stamp_dir: str,
) -> None:
    if torch.cuda.is_available() and num_gpus_per_machine > torch.cuda.device_count():
        raise ValueError(
            f"launch: num_gpus_per_machine={num_gpus_per_machine} but this machine has "
            f"{torch.cuda.device_count()} GPUs."
        )
    env = DistributedEnv(
        rank=machine_rank * num_gpus_per_machine + local_rank,
        world_size=world_size,
        local_rank=local_rank,
        local_world_size=num_gpus_per_machine,
        master_addr="",
        master_port=0,
    )
    stamped = functools.partial(_stamped_call, main_func, os.path.join(stamp_dir, str(local_rank)))
    run_in_process_group(stamped, env, args=args, timeout=timeout, init_method=dist_url)

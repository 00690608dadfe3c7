"""Start a (possibly multi-process, multi-machine) job: one process per GPU, or CPU processes over gloo.

Three ways to get a job's processes into one ``torch.distributed`` group:

* :func:`launch` with ``num_gpus_per_machine > 1`` spawns the processes of this machine and joins them to the
  group at ``dist_url`` (``"auto"``: a free local port; ``"tcp://host:port"`` for several machines, each run
  with its ``machine_rank``). A worker that raises stops the others and the error names its rank.
* :func:`launch` with ``dist_url="env://"``: the processes were started by someone else (``srun``, ``torchrun``,
  submitit); each one joins the group described by its environment (:meth:`DistributedEnv.from_environ`).
* :func:`run_in_process_group`: join a group described explicitly (used by :mod:`libdet.engine.slurm`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import pickle
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from libdet.utils import comm

__all__ = ["DEFAULT_TIMEOUT", "DistributedEnv", "launch", "run_in_process_group"]

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


def _first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``"gpu[003-005,010],cpu1"`` -> ``"gpu003"``."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?([^,]*)", nodelist.strip())
    if match is None or not match.group(1):
        raise ValueError(f"SLURM_JOB_NODELIST={nodelist!r} is not a SLURM node list.")
    prefix, ranges, suffix = match.groups()
    if ranges is None:
        return prefix + suffix
    first = ranges.split(",")[0].split("-")[0]  # zero padding is kept: "003" stays "003"
    return prefix + first + suffix


@dataclasses.dataclass(frozen=True)
class DistributedEnv:
    """Where one process sits in a job: its ranks and the address of rank 0.

    Attributes:
        rank: global rank, in ``[0, world_size)``.
        world_size: number of processes in the job.
        local_rank: rank among the processes of this machine.
        local_world_size: processes per machine (the same on every machine).
        master_addr: host name or IP address of the machine of rank 0.
        master_port: TCP port rank 0 listens on.
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"DistributedEnv: rank={self.rank} is not in [0, world_size={self.world_size}).")
        if self.local_world_size < 1 or not 0 <= self.local_rank < self.local_world_size:
            raise ValueError(
                f"DistributedEnv: local_rank={self.local_rank} is not in [0, local_world_size={self.local_world_size})."
            )
        if self.world_size % self.local_world_size != 0:
            raise ValueError(
                f"DistributedEnv: world_size={self.world_size} is not a multiple of "
                f"local_world_size={self.local_world_size} (every machine must run as many processes)."
            )

    @property
    def dist_url(self) -> str:
        """``tcp://master_addr:master_port``."""
        return f"tcp://{self.master_addr}:{self.master_port}"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> DistributedEnv:
        """Read the process layout from environment variables.

        ``torchrun`` style (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``,
        ``MASTER_PORT``) when ``RANK`` and ``WORLD_SIZE`` are set; otherwise SLURM's (one task per process:
        ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``, ``SLURM_NNODES``, the first host of
        ``SLURM_JOB_NODELIST``; ``MASTER_ADDR``/``MASTER_PORT`` override, and the port otherwise derives from
        ``SLURM_JOB_ID`` so that every task picks the same one).

        Args:
            environ: the variables (default: ``os.environ``).

        Raises:
            ValueError: naming the variables that are missing or malformed.
        """
        env = os.environ if environ is None else environ

        def integer(name: str, default: int | None = None) -> int:
            value = env.get(name)
            if value is None or value == "":
                if default is None:
                    raise ValueError(f"DistributedEnv.from_environ: environment variable {name} is not set.")
                return default
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"DistributedEnv.from_environ: {name}={value!r} is not an integer.") from None

        if "RANK" in env and "WORLD_SIZE" in env:
            world_size = integer("WORLD_SIZE")
            local_world_size = integer("LOCAL_WORLD_SIZE", world_size)
            return cls(
                rank=integer("RANK"),
                world_size=world_size,
                local_rank=integer("LOCAL_RANK", 0),
                local_world_size=local_world_size,
                master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
                master_port=integer("MASTER_PORT", 29500),
            )
        if "SLURM_PROCID" in env:
            world_size = integer("SLURM_NTASKS")
            num_nodes = integer("SLURM_NNODES", 1)
            if world_size % num_nodes != 0:
                raise ValueError(
                    f"DistributedEnv.from_environ: SLURM_NTASKS={world_size} is not a multiple of "
                    f"SLURM_NNODES={num_nodes}; request the same number of tasks on every node."
                )
            if "MASTER_ADDR" in env:
                master_addr = env["MASTER_ADDR"]
            elif num_nodes == 1:
                master_addr = "127.0.0.1"
            else:
                nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
                if not nodelist:
                    raise ValueError("DistributedEnv.from_environ: neither MASTER_ADDR nor SLURM_JOB_NODELIST is set.")
                master_addr = _first_slurm_host(nodelist)
            master_port = integer("MASTER_PORT", 20000 + integer("SLURM_JOB_ID", 0) % 40000)
            return cls(
                rank=integer("SLURM_PROCID"),
                world_size=world_size,
                local_rank=integer("SLURM_LOCALID", 0),
                local_world_size=world_size // num_nodes,
                master_addr=master_addr,
                master_port=master_port,
            )
        raise ValueError(
            "DistributedEnv.from_environ: found neither RANK/WORLD_SIZE (torchrun) nor SLURM_PROCID "
            "(srun) in the environment; start the processes with torchrun or srun, or use "
            "launch(..., dist_url='auto'/'tcp://host:port') to spawn them."
        )


def launch(
    main_func: Callable[..., Any],
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = None,
    args: Sequence[Any] = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> None:
    """Run ``main_func(*args)`` in every process of the job.

    With a world size of 1 the function runs in this process. Otherwise ``num_gpus_per_machine``
    processes are spawned on this machine, each joins the process group (NCCL on GPUs, gloo on CPU) and
    the per-machine group (:func:`libdet.utils.comm.create_local_process_group`) before calling
    ``main_func``; ``main_func`` and ``args`` must be picklable. When a worker raises (or dies), the other
    workers of this machine are stopped within seconds and a ``RuntimeError`` names the rank that failed
    first and carries its traceback.

    With ``dist_url="env://"`` nothing is spawned: this process is one of the job's processes, started by
    ``srun``/``torchrun``, and joins the group its environment describes (:meth:`DistributedEnv.from_environ`).

    Args:
        main_func: the function to run (module-level, so that spawned processes can import it).
        num_gpus_per_machine: processes per machine (one per GPU; on a CPU-only machine, CPU workers).
        num_machines: number of machines.
        machine_rank: rank of this machine, in ``[0, num_machines)``.
        dist_url: ``torch.distributed`` init method, e.g. ``"tcp://10.0.0.1:29500"``; ``"auto"`` or ``None``
            picks a free local port (single machine only); ``"env://"``: see above.
        args: positional arguments for ``main_func``.
        timeout: timeout of collective operations.

    Raises:
        ValueError: for inconsistent arguments.
        RuntimeError: when a spawned worker fails (the message names its global rank).
    """
    if num_gpus_per_machine < 1 or num_machines < 1:
        raise ValueError(
            f"launch: num_gpus_per_machine ({num_gpus_per_machine}) and num_machines ({num_machines}) must be >= 1."
        )
    if not 0 <= machine_rank < num_machines:
        raise ValueError(f"launch: machine_rank={machine_rank} is not in [0, num_machines={num_machines}).")
    world_size = num_machines * num_gpus_per_machine
    if dist_url == "env://":
        env = DistributedEnv.from_environ()
        if world_size not in (1, env.world_size):
            raise ValueError(
                f"launch: num_machines * num_gpus_per_machine = {world_size} but the environment "
                f"describes {env.world_size} processes; pass 1 (or the same count) with env://."
            )
        run_in_process_group(main_func, env, args=args, timeout=timeout)
        return
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

    stamp_dir = tempfile.mkdtemp(prefix="libdet-launch-")  # workers record when main_func raised
    try:
        context = mp.start_processes(
            _distributed_worker,
            nprocs=num_gpus_per_machine,
            args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, tuple(args), timeout, stamp_dir),
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

"""Submitit jobs (SLURM, or local processes) as a :func:`~libdet.engine.launch.launch` world.

``launch(main, SubmititWorld(job_dir=..., nodes=2, gpus_per_node=8, ...), args=(...,))`` submits a job whose tasks
(one per GPU) each join the job's process group (:meth:`DistributedEnv.from_submitit`) and call ``main(*args)``.
On preemption or time-out submitit calls :meth:`SubmititEntryPoint.checkpoint`, which hands back a copy of itself,
and the job is requeued: the new run calls ``main(*args)`` again, so ``main`` should resume from its last checkpoint
when there is one (``tools/lazyconfig_train_net.py --resume`` does; ``tools/submit_slurm.py`` is the command line).

Everything the job reads (the config file, ``train.output_dir``, the job directory) must be on a file system the
compute nodes share with the machine that submits. Submit from the directory that makes the config's imports work
(usually the repository root): the job runs there with the same Python.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from libdet.config import LazyConfig
from libdet.utils.logger import setup_logger

from .dist_env import DistributedEnv
from .launch import DEFAULT_TIMEOUT, World, run_in_process_group

__all__ = ["EXECUTORS", "SubmititEntryPoint", "SubmititWorld", "resolve_job_config"]

logger = logging.getLogger(__name__)

EXECUTORS = ("slurm", "local")
"""Executors of :class:`SubmititWorld` (submitit's cluster names)."""


class SubmititEntryPoint:
    """The callable a submitit job runs in each task: join the job's process group, then ``main_func(*args)``.

    Follows submitit's checkpointing protocol: on preemption or time-out submitit calls :meth:`checkpoint`, whose
    ``DelayedSubmission`` of a fresh copy is what the requeued job runs.

    Args:
        main_func: the function to run; picklable (by reference, or by value with cloudpickle).
        args: its positional arguments (each task gets its own copy).
        timeout: timeout of collective operations.
    """

    def __init__(
        self, main_func: Callable[..., Any], args: Sequence[Any] = (), timeout: timedelta = DEFAULT_TIMEOUT
    ) -> None:
        if not callable(main_func):
            raise TypeError(f"SubmititEntryPoint: main_func must be callable, got {type(main_func).__name__}.")
        self.main_func = main_func
        self.args = tuple(args)
        self.timeout = timeout

    def __call__(self) -> Any:
        """Run in each task of the job; returns what ``main_func`` returns in this task."""
        env = DistributedEnv.from_submitit()
        _job_logger(env.rank).info(
            f"submitit task: rank {env.rank}/{env.world_size}, local rank {env.local_rank}/{env.local_world_size}, "
            f"process group at {env.dist_url}; running {getattr(self.main_func, '__qualname__', self.main_func)}."
        )
        # a copy: main_func may edit its arguments, and a requeued run must start from the submitted ones
        return run_in_process_group(self.main_func, env, args=copy.deepcopy(self.args), timeout=self.timeout)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit when the job is preempted or times out: requeue a copy that calls ``main_func`` again.

        Returns:
            ``submitit.helpers.DelayedSubmission`` of a new :class:`SubmititEntryPoint`.
        """
        from submitit.helpers import DelayedSubmission

        _job_logger(0).info("Preempted or timed out: requeuing; the new run calls main again.")
        return DelayedSubmission(type(self)(self.main_func, self.args, self.timeout))


def _job_logger(rank: int) -> logging.Logger:
    """This module's logger, printing to the job's stdout on rank 0 (libdet's logging is set up later)."""
    if not logger.handlers:
        setup_logger(distributed_rank=rank, name=__name__, abbrev_name="ld.slurm", color=False)
    return logger


@dataclasses.dataclass(frozen=True)
class SubmititWorld(World):
    """A submitit job: ``nodes`` machines x ``tasks_per_node`` processes, requeued on preemption / time-out.

    Args:
        job_dir: where submitit writes the job's pickles and per-task ``stdout``/``stderr`` logs.
        executor: ``"slurm"`` (sbatch) or ``"local"`` (processes on this machine; one node only).
        nodes: number of machines.
        tasks_per_node: processes per machine (default: ``gpus_per_node``, or 1 without GPUs); must equal
            ``gpus_per_node`` when GPUs are requested.
        gpus_per_node: GPUs per machine (0: CPU processes over gloo).
        cpus_per_task: CPU cores per process (data-loader workers + 1 is a good value).
        mem_gb: memory per machine, in GB.
        timeout_min: time limit of one run of the job (it is requeued when the time runs out).
        partition: SLURM partition.
        job_name: the job's name in the queue.
        slurm_opts: more ``#SBATCH`` options, e.g. ``{"constraint": "volta32gb", "account": "det"}``
            (``--constraint=volta32gb``); ignored, with a warning, by the local executor.
        max_num_timeout: how many times a timed-out job is requeued (preemptions do not count).

    Raises:
        ValueError: naming the argument that is out of range.
    """

    job_dir: str
    executor: str = "slurm"
    nodes: int = 1
    tasks_per_node: int | None = None
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    timeout_min: int = 60
    partition: str | None = None
    job_name: str = "libdet"
    slurm_opts: Mapping[str, Any] | None = None
    max_num_timeout: int = 3

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"SubmititWorld: executor={self.executor!r}; expected one of {EXECUTORS}.")
        if self.tasks_per_node is None:
            object.__setattr__(self, "tasks_per_node", self.gpus_per_node if self.gpus_per_node > 0 else 1)
        for name, low in (
            ("nodes", 1),
            ("tasks_per_node", 1),
            ("gpus_per_node", 0),
            ("timeout_min", 1),
            ("max_num_timeout", 0),
        ):
            value = getattr(self, name)
            if int(value) != value or value < low:
                raise ValueError(f"SubmititWorld: {name}={value!r} must be an integer >= {low}.")
        if self.gpus_per_node > 0 and self.tasks_per_node != self.gpus_per_node:
            raise ValueError(
                f"SubmititWorld: tasks_per_node={self.tasks_per_node} but gpus_per_node={self.gpus_per_node}; "
                "libdet runs one process per GPU."
            )
        if self.executor == "local" and self.nodes != 1:
            raise ValueError(f"SubmititWorld: the local executor runs on this machine only; nodes={self.nodes}.")
        if self.cpus_per_task is not None and self.cpus_per_task < 1:
            raise ValueError(f"SubmititWorld: cpus_per_task={self.cpus_per_task!r} must be >= 1.")

    def parameters(self) -> dict[str, Any]:
        """The parameters given to the executor's ``update_parameters`` (submitit's generic names, with
        ``slurm_``-prefixed SLURM-only ones)."""
        params: dict[str, Any] = dict(
            name=self.job_name,
            nodes=int(self.nodes),
            tasks_per_node=int(self.tasks_per_node),
            gpus_per_node=int(self.gpus_per_node),
            timeout_min=int(self.timeout_min),
        )
        if self.cpus_per_task is not None:
            params["cpus_per_task"] = int(self.cpus_per_task)
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        if self.executor == "slurm":
            if self.partition:
                params["slurm_partition"] = self.partition
            if self.slurm_opts:
                params["slurm_additional_parameters"] = dict(self.slurm_opts)
        return params

    def build_executor(self) -> Any:
        """A submitit ``AutoExecutor`` with :meth:`parameters` (creates ``job_dir``). The SLURM executor needs
        ``srun`` on this machine."""
        import submitit

        if self.executor == "local" and (self.partition or self.slurm_opts):
            logger.warning("SubmititWorld: partition/slurm_opts are ignored by the local executor.")
        os.makedirs(self.job_dir, exist_ok=True)
        ex = submitit.AutoExecutor(
            folder=self.job_dir,
            cluster=self.executor,
            slurm_max_num_timeout=self.max_num_timeout,
            local_max_num_timeout=self.max_num_timeout,
        )
        ex.update_parameters(**self.parameters())
        return ex

    def start(self, main_func: Callable[..., Any], args: tuple, timeout: timedelta) -> Any:
        """Submit the job; returns the submitit ``Job`` (``job.job_id``, ``job.results()``, ``job.stdout()``)."""
        job = self.build_executor().submit(SubmititEntryPoint(main_func, args, timeout))
        logger.info(
            f"Submitted job {job.job_id} ({self.executor}, {self.nodes} node(s) x {self.tasks_per_node} task(s)); "
            f"logs in {self.job_dir}."
        )
        return job


def resolve_job_config(config_file: str, overrides: Sequence[str] = ()) -> tuple[Any, list[str]]:
    """Check a lazy config and its overrides before a job is queued, and make ``train.output_dir`` absolute.

    The config is loaded and the overrides applied here, so that a wrong path or key fails now and not after hours
    in the queue. ``train.output_dir`` is made absolute (relative to the current directory), since the job may run
    elsewhere.

    Args:
        config_file: the lazy config (any path: ``configs/...``, ``projects/<X>/configs/...``).
        overrides: config overrides ``"path.key=value"``.

    Returns:
        The resolved config, and the overrides to give the job (ending with ``train.output_dir=<absolute path>``).

    Raises:
        FileNotFoundError: the config file does not exist.
        ValueError: the config lacks ``train.output_dir``.
    """
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"resolve_job_config: config file {config_file!r} does not exist.")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(os.path.abspath(config_file)), list(overrides))
    train = cfg.get("train") if "train" in cfg else None
    output_dir = train.get("output_dir") if train is not None else None
    if not output_dir:
        raise ValueError(
            f"resolve_job_config: config {config_file!r} has no train.output_dir; the job needs one to "
            "write and resume checkpoints (override it: train.output_dir=/shared/path)."
        )
    output_dir = os.path.abspath(str(output_dir))
    cfg.train.output_dir = output_dir
    overrides = [o for o in overrides if not o.startswith("train.output_dir=")] + [f"train.output_dir={output_dir}"]
    return cfg, overrides

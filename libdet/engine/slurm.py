"""Run training on a SLURM cluster (or on this machine) through submitit, with requeue-and-resume on preemption.

:func:`submit_training` validates a lazy config, saves it to the job directory, builds a submitit executor
(:func:`build_executor`) and submits a :class:`SubmititTrainer`. Each task of the job (one per GPU, or CPU
processes over gloo) reads its rank, the world size and rank 0's address from submitit's job environment, joins
the process group and runs the training ``main`` with ``--resume`` semantics: it continues from the last
checkpoint in ``train.output_dir`` when there is one. When SLURM preempts the job or its time runs out, SLURM sends
the job a signal (USR2), submitit calls :meth:`SubmititTrainer.checkpoint`, which hands back a copy of itself, and
the job is requeued; the new run resumes from the last periodic checkpoint. ``tools/submit_slurm.py`` is the
command line.

Everything the job reads (the config file, the training script, ``train.output_dir``, the job directory) must be
on a file system the compute nodes share with the machine that submits. Submit from the directory that makes the
config's imports work (usually the repository root): the job runs there with the same Python.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from .launch import DEFAULT_TIMEOUT, DistributedEnv, run_in_process_group

__all__ = ["EXECUTORS", "ScriptFunction", "SubmititTrainer", "build_executor", "job_distributed_env", "submit_training"]

logger = logging.getLogger(__name__)

EXECUTORS = ("slurm", "local")
"""Names accepted by :func:`build_executor` (submitit's cluster names)."""


class ScriptFunction:
    """A picklable reference to a function defined in a script file, e.g. ``tools/lazyconfig_train_net.py:main``.

    Scripts are not importable modules; the job loads the file by path (the first call) and calls the function.

    Args:
        path: the script; made absolute, so that a job started in another directory finds it.
        name: the function's name in the script.
    """

    def __init__(self, path: str, name: str = "main") -> None:
        self.path = os.path.abspath(path)
        self.name = name
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"ScriptFunction: script {self.path!r} does not exist.")

    def load(self) -> Callable[..., Any]:
        """The function, loading the script as a module named after its file (once per process)."""
        module_name = "_libdet_script_" + os.path.splitext(os.path.basename(self.path))[0]
        module = sys.modules.get(module_name)
        if module is None or os.path.abspath(getattr(module, "__file__", "")) != self.path:
            spec = importlib.util.spec_from_file_location(module_name, self.path)
            if spec is None or spec.loader is None:
                raise ImportError(f"ScriptFunction: cannot load {self.path!r} as a Python module.")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(module_name, None)
                raise
        func = getattr(module, self.name, None)
        if not callable(func):
            raise AttributeError(f"ScriptFunction: {self.path!r} defines no function {self.name!r}.")
        return func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.load()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"ScriptFunction({self.path!r}, {self.name!r})"


def job_distributed_env() -> DistributedEnv:
    """This submitit task's place in its job (call inside a running submitit job).

    Ranks come from ``submitit.JobEnvironment``; rank 0's address and port from
    ``submitit.helpers.TorchDistributedEnvironment`` (its port derives from the job id, so every task and every
    requeued run of the job agree; ``MASTER_PORT`` overrides it). A one-node job uses ``127.0.0.1``.

    Raises:
        RuntimeError: outside a submitit job.
    """
    import submitit

    try:
        job_env = submitit.JobEnvironment()
    except Exception as e:  # submitit raises when no cluster environment is active
        raise RuntimeError(f"job_distributed_env: not inside a submitit job ({e}).") from e
    num_nodes = int(job_env.num_nodes)
    world_size = int(job_env.num_tasks)
    torch_env = getattr(submitit.helpers, "TorchDistributedEnvironment", None)
    if torch_env is not None:
        info = torch_env()
        master_addr, master_port = info.master_addr, int(info.master_port)
    else:  # submitit < 1.5: same rule as TorchDistributedEnvironment
        import random

        master_addr = job_env.hostnames[0]
        master_port = int(os.environ.get("MASTER_PORT") or random.Random(job_env.job_id).randint(20000, 60000))
    return DistributedEnv(
        rank=int(job_env.global_rank),
        world_size=world_size,
        local_rank=int(job_env.local_rank),
        local_world_size=world_size // max(num_nodes, 1),
        master_addr="127.0.0.1" if num_nodes == 1 else master_addr,
        master_port=master_port,
    )


class SubmititTrainer:
    """The callable a submitit job runs: join the job's process group, then ``main_func(args)`` with resume.

    Follows submitit's checkpointing protocol: on preemption or time-out submitit calls :meth:`checkpoint`, whose
    ``DelayedSubmission`` of a fresh copy is what the requeued job runs.

    Args:
        main_func: the training entry point taking an ``argparse.Namespace`` (e.g.
            ``ScriptFunction("tools/lazyconfig_train_net.py", "main")``); picklable.
        args: its arguments (``config_file``, ``opts``, ``eval_only``, ...). ``resume`` is set to True for
            training, so that every start (first, requeued, restarted after a node failure) continues from the last
            checkpoint in ``train.output_dir`` when there is one and starts from ``train.init_checkpoint``
            otherwise.
        timeout: timeout of collective operations.
    """

    def __init__(
        self,
        *,
        main_func: Callable[[argparse.Namespace], Any],
        args: argparse.Namespace,
        timeout: timedelta = DEFAULT_TIMEOUT,
    ) -> None:
        if not callable(main_func):
            raise TypeError(f"SubmititTrainer: main_func must be callable, got {type(main_func).__name__}.")
        self.main_func = main_func
        self.args = copy.deepcopy(args)
        if not getattr(self.args, "eval_only", False):
            self.args.resume = True
        self.timeout = timeout

    def __call__(self) -> Any:
        """Run in each task of the job; returns what ``main_func`` returns in this task."""
        env = job_distributed_env()
        _job_logger(env.rank).info(
            f"submitit task: rank {env.rank}/{env.world_size}, local rank {env.local_rank}/{env.local_world_size}, "
            f"process group at {env.dist_url}; running {self.main_func!r} with resume={self.args.resume}."
        )
        return run_in_process_group(self.main_func, env, args=(copy.deepcopy(self.args),), timeout=self.timeout)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit when the job is preempted or times out: requeue a copy that resumes.

        Returns:
            ``submitit.helpers.DelayedSubmission`` of a new :class:`SubmititTrainer`.
        """
        from submitit.helpers import DelayedSubmission

        _job_logger(0).info("Preempted or timed out: requeuing; the next run resumes from the last checkpoint.")
        return DelayedSubmission(type(self)(main_func=self.main_func, args=self.args, timeout=self.timeout))


def _job_logger(rank: int) -> logging.Logger:
    """This module's logger, printing to the job's stdout on rank 0 (libdet's logging is set up later)."""
    if not logger.handlers:
        from libdet.utils.logger import setup_logger

        setup_logger(distributed_rank=rank, name=__name__, abbrev_name="ld.slurm", color=False)
    return logger


def build_executor(
    *,
    job_dir: str,
    executor: str = "slurm",
    nodes: int = 1,
    tasks_per_node: int = 1,
    gpus_per_node: int = 0,
    cpus_per_task: int | None = None,
    mem_gb: float | None = None,
    timeout_min: int = 60,
    partition: str | None = None,
    job_name: str = "libdet",
    slurm_opts: Mapping[str, Any] | None = None,
    max_num_timeout: int = 3,
) -> Any:
    """A submitit ``AutoExecutor`` for a training job.

    Args:
        job_dir: where submitit writes the job's pickles and per-task ``stdout``/``stderr`` logs.
        executor: ``"slurm"`` (sbatch) or ``"local"`` (processes on this machine; one node only).
        nodes: number of machines.
        tasks_per_node: processes per machine; must equal ``gpus_per_node`` when GPUs are requested.
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
    import submitit

    if executor not in EXECUTORS:
        raise ValueError(f"build_executor: executor={executor!r}; expected one of {EXECUTORS}.")
    for name, value, low in (
        ("nodes", nodes, 1),
        ("tasks_per_node", tasks_per_node, 1),
        ("gpus_per_node", gpus_per_node, 0),
        ("timeout_min", timeout_min, 1),
        ("max_num_timeout", max_num_timeout, 0),
    ):
        if int(value) != value or value < low:
            raise ValueError(f"build_executor: {name}={value!r} must be an integer >= {low}.")
    if gpus_per_node > 0 and tasks_per_node != gpus_per_node:
        raise ValueError(
            f"build_executor: tasks_per_node={tasks_per_node} but gpus_per_node={gpus_per_node}; "
            "libdet runs one process per GPU."
        )
    if executor == "local" and nodes != 1:
        raise ValueError(f"build_executor: the local executor runs on this machine only; nodes={nodes}.")
    if cpus_per_task is not None and cpus_per_task < 1:
        raise ValueError(f"build_executor: cpus_per_task={cpus_per_task!r} must be >= 1.")
    os.makedirs(job_dir, exist_ok=True)
    ex = submitit.AutoExecutor(
        folder=job_dir, cluster=executor, slurm_max_num_timeout=max_num_timeout, local_max_num_timeout=max_num_timeout
    )
    params: dict[str, Any] = dict(
        name=job_name,
        nodes=int(nodes),
        tasks_per_node=int(tasks_per_node),
        gpus_per_node=int(gpus_per_node),
        timeout_min=int(timeout_min),
    )
    if cpus_per_task is not None:
        params["cpus_per_task"] = int(cpus_per_task)
    if mem_gb is not None:
        params["mem_gb"] = mem_gb
    if executor == "slurm":
        if partition:
            params["slurm_partition"] = partition
        if slurm_opts:
            params["slurm_additional_parameters"] = dict(slurm_opts)
    elif partition or slurm_opts:
        logger.warning("build_executor: --partition/--slurm-opt are ignored by the local executor.")
    ex.update_parameters(**params)
    return ex


def submit_training(
    *,
    config_file: str,
    main_func: Callable[[argparse.Namespace], Any],
    overrides: Sequence[str] = (),
    job_dir: str | None = None,
    eval_only: bool = False,
    executor: str = "slurm",
    nodes: int = 1,
    tasks_per_node: int | None = None,
    gpus_per_node: int = 0,
    **executor_kwargs: Any,
) -> Any:
    """Check a lazy config, save it to the job directory and submit its training as a submitit job.

    The config is loaded and the overrides applied here first, so that a wrong path or key fails now and not
    after hours in the queue. ``train.output_dir`` is made absolute (relative to the current directory) and passed
    to the job as an override, as is everything needed to rebuild the run; ``<job_dir>/config.yaml`` holds the
    resolved config as submitted (the job also saves ``<output_dir>/config.yaml``).

    Args:
        config_file: the lazy config (any path: ``configs/...``, ``projects/<X>/configs/...``).
        main_func: the training entry point, called in each task as ``main_func(args)`` (see
            :class:`SubmititTrainer`).
        overrides: config overrides ``"path.key=value"``.
        job_dir: submitit's directory (logs, pickles); default ``<train.output_dir>/submitit``.
        eval_only: evaluate ``train.init_checkpoint`` instead of training.
        executor, nodes, gpus_per_node: see :func:`build_executor`.
        tasks_per_node: default ``gpus_per_node``, or 1 without GPUs.
        executor_kwargs: the other arguments of :func:`build_executor` (``cpus_per_task``, ``mem_gb``,
            ``timeout_min``, ``partition``, ``job_name``, ``slurm_opts``, ``max_num_timeout``).

    Returns:
        The submitit ``Job`` (``job.job_id``, ``job.result()``, ``job.stdout()``).

    Raises:
        FileNotFoundError: the config file does not exist.
        ValueError: the config lacks ``train.output_dir``, or a bad executor argument.
    """
    from libdet.config import LazyConfig

    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"submit_training: config file {config_file!r} does not exist.")
    config_file = os.path.abspath(config_file)
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config_file), list(overrides))
    train = cfg.get("train") if "train" in cfg else None
    output_dir = train.get("output_dir") if train is not None else None
    if not output_dir:
        raise ValueError(
            f"submit_training: config {config_file!r} has no train.output_dir; the job needs one to "
            "write and resume checkpoints (override it: train.output_dir=/shared/path)."
        )
    output_dir = os.path.abspath(str(output_dir))
    overrides = [o for o in overrides if not o.startswith("train.output_dir=")] + [f"train.output_dir={output_dir}"]
    cfg.train.output_dir = output_dir
    job_dir = os.path.abspath(job_dir or os.path.join(output_dir, "submitit"))
    if tasks_per_node is None:
        tasks_per_node = gpus_per_node if gpus_per_node > 0 else 1
    ex = build_executor(
        job_dir=job_dir,
        executor=executor,
        nodes=nodes,
        tasks_per_node=tasks_per_node,
        gpus_per_node=gpus_per_node,
        **executor_kwargs,
    )
    written = LazyConfig.save(cfg, os.path.join(job_dir, "config.yaml"))

    args = argparse.Namespace(
        config_file=config_file,
        opts=list(overrides),
        eval_only=bool(eval_only),
        resume=not eval_only,
        num_gpus=tasks_per_node,
        num_machines=nodes,
        machine_rank=0,
        dist_url="env://",
    )
    job = ex.submit(SubmititTrainer(main_func=main_func, args=args))
    logger.info(
        f"Submitted job {job.job_id} ({executor}, {nodes} node(s) x {tasks_per_node} task(s)); "
        f"logs in {job_dir}, checkpoints in {output_dir}, submitted config {written}."
    )
    return job

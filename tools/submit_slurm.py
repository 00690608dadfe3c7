#!/usr/bin/env python
"""Submit a lazy-config training to SLURM (or run it on this machine) through submitit.

Usage::

    # 2 nodes x 8 GPUs, 24 h per run, requeued and resumed on preemption / time-out
    python tools/submit_slurm.py --config-file configs/COCO/mask_rcnn_r50.py --nodes 2 --gpus-per-node 8 \\
        --partition learnlab --timeout 1440 --cpus-per-task 10 --mem-gb 400 \\
        --slurm-opt constraint=volta32gb --slurm-opt account=det  train.output_dir=/checkpoint/me/mrcnn

    # the same job as local processes (debugging the submission; CPU processes over gloo without GPUs)
    python tools/submit_slurm.py --executor local --tasks-per-node 2 --config-file cfg.py --wait \\
        train.max_iter=20 train.output_dir=/tmp/run

Each task runs ``tools/lazyconfig_train_net.py``'s ``main`` with ``--resume`` (through ``launch(main,
SubmititWorld(...))``): the job continues from the
last checkpoint in ``train.output_dir`` (so resubmitting the same command continues a run). Submitit's logs (one
``<jobid>_<task>_log.out``/``.err`` per task) go to ``--job-dir`` (default ``<train.output_dir>/submitit``), with
``config.yaml``, the resolved config as submitted. Works for any lazy config path (core or ``projects/``); submit
from the repository root so that the job can import what the config imports, and keep every path on a file system
the compute nodes share.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from libdet.config import LazyConfig
from libdet.engine import launch
from libdet.engine.slurm import EXECUTORS, SubmititWorld, resolve_job_config
from libdet.utils.logger import setup_logger

TRAIN_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lazyconfig_train_net.py")

__all__ = ["build_parser", "load_train_net", "main", "parse_slurm_opts"]


def build_parser() -> argparse.ArgumentParser:
    """The command line of this tool (overrides ``path.key=value`` come last)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the lazy config to train")
    parser.add_argument("--nodes", type=int, default=1, help="number of machines")
    parser.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per machine (0: CPU processes, gloo)")
    parser.add_argument(
        "--tasks-per-node",
        type=int,
        default=None,
        help="processes per machine (default: --gpus-per-node, or 1 without GPUs)",
    )
    parser.add_argument("--cpus-per-task", type=int, default=None, help="CPU cores per process")
    parser.add_argument("--mem-gb", type=float, default=None, help="memory per machine in GB")
    parser.add_argument("--partition", default=None, help="SLURM partition")
    parser.add_argument(
        "--timeout",
        type=int,
        default=60 * 24,
        metavar="MIN",
        help="time limit of one run in minutes (the job is requeued when it runs out)",
    )
    parser.add_argument("--max-requeues", type=int, default=3, help="requeues allowed after time-outs")
    parser.add_argument("--job-dir", default=None, help="submitit logs (default: <train.output_dir>/submitit)")
    parser.add_argument("--job-name", default=None, help="job name (default: the config file's name)")
    parser.add_argument(
        "--slurm-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra #SBATCH option --KEY=VALUE (repeatable), e.g. constraint=volta32gb",
    )
    parser.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="slurm",
        help="slurm: sbatch; local: processes on this machine (one node)",
    )
    parser.add_argument("--eval-only", action="store_true", help="evaluate train.init_checkpoint instead")
    parser.add_argument("--wait", action="store_true", help="wait for the job and print its result")
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        default=None,
        help="config overrides 'path.key=value' at the end of the command",
    )
    return parser


def parse_slurm_opts(items: Sequence[str]) -> dict[str, str]:
    """``["constraint=volta32gb", "exclusive="]`` -> ``{"constraint": "volta32gb", "exclusive": ""}``.

    Raises:
        ValueError: naming the item that is not ``KEY=VALUE``.
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--slurm-opt {item!r}: expected KEY=VALUE, e.g. constraint=volta32gb.")
        out[key] = value
    return out


def load_train_net() -> ModuleType:
    """``tools/lazyconfig_train_net.py``, the script whose ``main`` each task runs, as a module pickled by value.

    Scripts are not importable where the job runs, so cloudpickle ships the module's functions with the job.
    """
    import cloudpickle

    name = "libdet_tool_lazyconfig_train_net"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, TRAIN_SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        cloudpickle.register_pickle_by_value(module)
    return module


def main(argv: list[str] | None = None) -> Any:
    """Parse ``argv``, submit the job and return it (after it finished with ``--wait``)."""
    args = build_parser().parse_args(argv)
    setup_logger(name="libdet.engine.slurm", abbrev_name="ld.slurm", color=False)
    cfg, overrides = resolve_job_config(args.config_file, list(args.opts or []))
    world = SubmititWorld(
        job_dir=os.path.abspath(args.job_dir or os.path.join(cfg.train.output_dir, "submitit")),
        executor=args.executor,
        nodes=args.nodes,
        tasks_per_node=args.tasks_per_node,
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task,
        mem_gb=args.mem_gb,
        timeout_min=args.timeout,
        partition=args.partition,
        job_name=args.job_name or os.path.splitext(os.path.basename(args.config_file))[0],
        slurm_opts=parse_slurm_opts(args.slurm_opt),
        max_num_timeout=args.max_requeues,
    )
    train_net = load_train_net()
    # every start of the job (first, requeued, restarted after a node failure) resumes from the last checkpoint in
    # train.output_dir when there is one, and starts from train.init_checkpoint otherwise
    train_args = train_net.default_argument_parser().parse_args(
        [
            "--config-file",
            os.path.abspath(args.config_file),
            "--eval-only" if args.eval_only else "--resume",
            "--num-gpus",
            str(world.tasks_per_node),
            "--num-machines",
            str(world.nodes),
            "--dist-url",
            "env://",
            *overrides,
        ]
    )
    os.makedirs(world.job_dir, exist_ok=True)
    written = LazyConfig.save(cfg, os.path.join(world.job_dir, "config.yaml"))  # the config as submitted
    job = launch(train_net.main, world, args=(train_args,))
    print(f"Submitted job {job.job_id}; logs: {job.paths.folder}; submitted config: {written}")
    if args.wait:
        results = job.results()  # one per task; rank 0's holds the training's latest metrics
        print(f"Job {job.job_id} finished: {results[0]}")
    return job


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"submit_slurm: {e}")

"""Where a process sits in a distributed job (:class:`DistributedEnv`), read from the environment that started it:
``torchrun``'s variables, SLURM's (``srun``) or a submitit job's. All of libdet's parsing of SLURM variables is
here.
"""

from __future__ import annotations

import dataclasses
import os
import re
import zlib
from collections.abc import Mapping

__all__ = ["DistributedEnv", "job_port"]


def job_port(job_id: str) -> int:
    """The TCP port rank 0 of a job listens on, derived from the job id so that every task computes the same one:
    ``20000 + id % 40000`` for a numeric id, a hash of the id otherwise (array jobs: ``"123_4"``)."""
    job_id = str(job_id).strip()
    number = int(job_id) if job_id.isdigit() else zlib.crc32(job_id.encode())
    return 20000 + number % 40000


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
            master_port = integer("MASTER_PORT", job_port(env.get("SLURM_JOB_ID", "0")))
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

    @classmethod
    def from_submitit(cls) -> DistributedEnv:
        """This task's place in the submitit job running it (SLURM or submitit's local executor).

        Ranks and hosts come from ``submitit.JobEnvironment``; rank 0's port from the job id (:func:`job_port`: every
        task, and every requeued run of the job, computes the same one; ``MASTER_PORT`` overrides it). A one-node
        job uses ``127.0.0.1``.

        Raises:
            RuntimeError: outside a submitit job.
        """
        import submitit

        try:
            job_env = submitit.JobEnvironment()
        except Exception as e:  # submitit raises when no cluster environment is active
            raise RuntimeError(f"DistributedEnv.from_submitit: not inside a submitit job ({e}).") from e
        num_nodes = max(int(job_env.num_nodes), 1)
        world_size = int(job_env.num_tasks)
        return cls(
            rank=int(job_env.global_rank),
            world_size=world_size,
            local_rank=int(job_env.local_rank),
            local_world_size=world_size // num_nodes,
            master_addr="127.0.0.1" if num_nodes == 1 else str(job_env.hostnames[0]),
            master_port=int(os.environ.get("MASTER_PORT") or job_port(str(job_env.job_id))),
        )

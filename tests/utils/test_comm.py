import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from libdet.utils import comm


def test_single_process_helpers():
    assert not dist.is_initialized()
    assert comm.get_world_size() == 1
    assert comm.get_rank() == 0
    assert comm.get_local_rank() == 0 and comm.get_local_size() == 1
    assert comm.is_main_process()
    comm.synchronize()  # no-op, must not raise
    payload = {"a": [1, 2], "b": torch.ones(2)}
    gathered = comm.all_gather(payload)
    assert len(gathered) == 1 and gathered[0] is payload
    assert comm.gather(5) == [5]
    losses = {"loss_a": torch.tensor(1.5), "loss_b": torch.tensor(2.0)}
    assert comm.reduce_dict(losses) is losses
    seed = comm.shared_random_seed()
    assert isinstance(seed, int) and 0 <= seed < 2**31


def test_local_process_group_requires_creation():
    with pytest.raises(RuntimeError, match="create_local_process_group"):
        comm.get_local_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        comm.create_local_process_group(world_size)
        results = {
            "all_gather": comm.all_gather({"rank": rank}),
            "gather": comm.gather(rank * 10, dst=0),
            "reduce": {
                k: v.item()
                for k, v in comm.reduce_dict(
                    {"b": torch.tensor(float(rank)), "a": torch.tensor(2.0 * rank + 1)}
                ).items()
            },
            "seed": comm.shared_random_seed(),
            "local_rank": comm.get_local_rank(),
            "local_size": comm.get_local_size(),
        }
        comm.synchronize()
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        comm.destroy_process_groups()


def test_two_processes_gloo(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["all_gather"] == r1["all_gather"] == [{"rank": 0}, {"rank": 1}]
    assert r0["gather"] == [0, 10] and r1["gather"] == []
    assert r0["reduce"] == {"a": 2.0, "b": 0.5}  # averaged on rank 0: a=(1+3)/2, b=(0+1)/2
    assert r0["seed"] == r1["seed"]
    assert (r0["local_rank"], r1["local_rank"]) == (0, 1)
    assert r0["local_size"] == r1["local_size"] == 2

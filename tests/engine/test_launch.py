import json
import os
import pickle
import socket
import time
import types

import pytest
import torch

from libdet.engine.dist_env import _first_slurm_host, job_port
from libdet.engine.launch import DistributedEnv, EnvWorld, LocalWorld, _describe_failure, _find_free_port, launch


def test_single_process_runs_in_this_process():
    calls = []
    launch(lambda *a: calls.append((os.getpid(), a)), num_gpus_per_machine=1, args=(1, "x"))
    assert calls == [(os.getpid(), (1, "x"))]


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="machine_rank"):
        launch(print, 1, num_machines=2, machine_rank=2)
    with pytest.raises(ValueError, match="num_gpus_per_machine"):
        launch(print, 0)
    with pytest.raises(ValueError, match="auto"):
        launch(print, 1, num_machines=2, machine_rank=0, dist_url="auto")
    with pytest.raises(ValueError, match="belong to the world description"):
        launch(print, LocalWorld(2), num_machines=2)
    with pytest.raises(ValueError, match="EnvWorld"):
        LocalWorld(2, dist_url="env://")


def test_world_description_runs_in_this_process():
    calls = []
    assert launch(lambda *a: calls.append(a), LocalWorld(), args=(1,)) is None
    assert calls == [(1,)]


def test_find_free_port_is_bindable():
    port = _find_free_port()
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", port))


def _worker(out_dir: str) -> None:
    import torch.distributed as dist

    from libdet.engine.defaults import create_ddp_model
    from libdet.utils import comm

    rank = comm.get_rank()
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.ones_(model.weight)
    ddp = create_ddp_model(model)
    # each rank sees a different input; DDP averages the gradients over the two ranks
    x = torch.full((1, 2), float(rank + 1))
    ddp(x).sum().backward()
    result = {
        "rank": rank,
        "world": comm.get_world_size(),
        "local_rank": comm.get_local_rank(),
        "local_size": comm.get_local_size(),
        "gathered": comm.all_gather(rank * 10),
        "backend": dist.get_backend(),
        "is_ddp": type(ddp).__name__,
        "grad": model.weight.grad.tolist(),
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


def test_two_cpu_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # spawned workers see no GPU: gloo on CPU everywhere
    launch(_worker, num_gpus_per_machine=2, dist_url="auto", args=(str(tmp_path),))
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r, res in enumerate(results):
        assert res["rank"] == r and res["world"] == 2
        assert res["local_rank"] == r and res["local_size"] == 2
        assert res["gathered"] == [0, 10]
        assert res["is_ddp"] == "DistributedDataParallel"
        assert res["grad"] == [[1.5, 1.5]]  # mean of 1 and 2
        assert res["backend"] == "gloo"


def test_first_slurm_host():
    assert _first_slurm_host("node7") == "node7"
    assert _first_slurm_host("gpu[003-005,010],cpu01") == "gpu003"
    assert _first_slurm_host("a-b[12,14]-ib,c") == "a-b12-ib"
    assert _first_slurm_host("x1,x2") == "x1"


def test_distributed_env_from_torchrun_variables():
    env = DistributedEnv.from_environ(
        {
            "RANK": "5",
            "WORLD_SIZE": "8",
            "LOCAL_RANK": "1",
            "LOCAL_WORLD_SIZE": "4",
            "MASTER_ADDR": "10.0.0.1",
            "MASTER_PORT": "1234",
        }
    )
    assert env == DistributedEnv(5, 8, 1, 4, "10.0.0.1", 1234)
    assert env.dist_url == "tcp://10.0.0.1:1234"


def test_distributed_env_from_slurm_variables():
    base = {
        "SLURM_PROCID": "3",
        "SLURM_NTASKS": "4",
        "SLURM_LOCALID": "1",
        "SLURM_NNODES": "2",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_JOB_ID": "123456",
    }
    env = DistributedEnv.from_environ(base)
    # the port derives from the job id, so every task (and a requeued run) computes the same one
    assert env == DistributedEnv(3, 4, 1, 2, "gpu07", 20000 + 123456 % 40000)
    assert job_port("123456") == 20000 + 123456 % 40000 and 20000 <= job_port("123_4") < 60000
    one_node = DistributedEnv.from_environ({**base, "SLURM_NNODES": "1", "SLURM_LOCALID": "3", "MASTER_PORT": "99"})
    assert (one_node.master_addr, one_node.master_port, one_node.local_world_size) == ("127.0.0.1", 99, 4)
    with pytest.raises(ValueError, match="SLURM_NTASKS=3 is not a multiple of SLURM_NNODES=2"):
        DistributedEnv.from_environ({**base, "SLURM_NTASKS": "3", "SLURM_PROCID": "0"})
    with pytest.raises(ValueError, match="SLURM_PROCID='x' is not an integer"):
        DistributedEnv.from_environ({**base, "SLURM_PROCID": "x"})
    with pytest.raises(ValueError, match="neither RANK/WORLD_SIZE"):
        DistributedEnv.from_environ({})
    with pytest.raises(ValueError, match="rank=4 is not in"):
        DistributedEnv(4, 4, 0, 1, "h", 1)


def _env_main(out):
    import torch.distributed as dist

    from libdet.utils import comm

    out.append((dist.is_initialized(), comm.get_world_size(), comm.get_local_size(), dist.get_backend()))
    return "done"


def test_launch_env_url_joins_the_group_described_by_the_environment(monkeypatch):
    for key, value in {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_find_free_port()),
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = []
    launch(_env_main, num_gpus_per_machine=1, dist_url="env://", args=(out,))
    import torch.distributed as dist

    assert out == [(True, 1, 1, "gloo")]
    assert not dist.is_initialized()  # the group is torn down afterwards
    with pytest.raises(ValueError, match="describes 1 processes"):
        launch(_env_main, num_gpus_per_machine=4, dist_url="env://", args=(out,))
    launch(_env_main, EnvWorld(), args=(out,))  # the same through a world description
    assert out[-1] == (True, 1, 1, "gloo")


def _write_report(path, text):
    with open(path, "wb") as f:
        pickle.dump(text, f)


def test_failure_message_names_the_first_failing_rank(tmp_path):
    from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

    files = [str(tmp_path / f"err{i}") for i in range(3)]
    _write_report(files[2], "Traceback ...\nValueError: the real cause\n")
    time.sleep(0.02)
    _write_report(files[0], "Traceback ...\nRuntimeError: Connection reset by peer\n")
    ctx = types.SimpleNamespace(error_files=files)
    # torch happened to notice local rank 0 first; the earliest report (local rank 2) is the cause
    msg = _describe_failure(ctx, ProcessRaisedException("x", 0, 1), num_gpus_per_machine=3, machine_rank=1)
    assert msg.startswith("launch: the process of rank 5 (machine 1, local rank 2) failed")
    assert "ValueError: the real cause" in msg and "ranks [3] failed afterwards" in msg
    # a worker that died without a Python exception (os._exit, signal) and was seen first is the cause
    exited = ProcessExitedException("process 1 terminated with exit code 3", 1, 1, exit_code=3)
    msg = _describe_failure(ctx, exited, num_gpus_per_machine=3, machine_rank=0)
    assert "rank 1 (machine 0, local rank 1)" in msg and "exit code 3" in msg and "ranks [0, 2]" in msg


def test_failure_time_stamps_beat_report_times(tmp_path):
    """A worker stamps when its main_func raised, before it leaves the group; the others' collective errors can be
    reported sooner than its own traceback, but their stamps are later."""
    from torch.multiprocessing import ProcessRaisedException

    files = [str(tmp_path / f"err{i}") for i in range(2)]
    _write_report(files[0], "Traceback ...\nRuntimeError: Connection reset by peer\n")
    time.sleep(0.02)
    _write_report(files[1], "Traceback ...\nValueError: the real cause\n")
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    (stamps / "1").write_text(str(time.time_ns() - 10**9))
    (stamps / "0").write_text(str(time.time_ns()))
    ctx = types.SimpleNamespace(error_files=files)
    msg = _describe_failure(ctx, ProcessRaisedException("x", 0, 1), 2, 0, str(stamps))
    assert "rank 1 (machine 0, local rank 1)" in msg and "the real cause" in msg and "ranks [0]" in msg

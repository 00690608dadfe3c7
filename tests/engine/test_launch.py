import json
import os
import socket

import pytest
import torch

from libdet.engine.launch import _find_free_port, launch


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

"""Data-parallel training over gloo: 2 CPU processes through ``launch`` train exactly what 1 process trains with
the same total batch (same samples, same per-sample augmentation seeds), with synchronised BatchNorm statistics;
a failing worker stops the job promptly and is named."""

import time

import pytest
import torch
from torch import nn

from libdet.engine import SimpleTrainer, create_ddp_model, launch
from libdet.layers import NaiveSyncBatchNorm
from libdet.utils import comm

from ._tiny import train_loader

TOTAL_BATCH, ITERS = 4, 4


class SyncBNRegressor(nn.Module):
    """conv -> NaiveSyncBatchNorm -> conv -> GroupNorm -> pooled linear head, MSE to the sample's target.

    Per-sample computation except for the batch statistics, which NaiveSyncBatchNorm averages over all processes
    (equal per-process batches): a 2-process step then computes the same function as a 1-process step on the union
    of the batches. No dropout or random subsampling, so both runs draw nothing from the global RNGs.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = NaiveSyncBatchNorm(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.gn = nn.GroupNorm(2, 4)
        self.head = nn.Linear(4, 1)

    def forward(self, batch):
        x = torch.stack([b["image"] for b in batch])  # N, 3, 16, 16
        t = torch.stack([b["target"] for b in batch]).float()  # N
        f = torch.relu(self.gn(self.conv2(torch.relu(self.bn(self.conv1(x))))))
        pred = self.head(f.mean((2, 3))).squeeze(1)
        return {"loss_reg": ((pred - t) ** 2).mean()}


def _train(out_file):
    """Train ITERS steps on the shared loader stream; rank 0 saves every rank's final state."""
    torch.manual_seed(0)  # same initial weights everywhere (DDP would broadcast rank 0's anyway)
    model = SyncBNRegressor()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = train_loader(batch_size=TOTAL_BATCH, seed=7, size=12)  # per-rank batch: TOTAL_BATCH / world size
    trainer = SimpleTrainer(create_ddp_model(model), loader, optimizer)
    trainer.train(0, ITERS)
    states = comm.all_gather({k: v.detach().clone() for k, v in model.state_dict().items()})
    if comm.is_main_process():
        torch.save({"states": states, "world": comm.get_world_size()}, out_file)


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    launch(_train, num_gpus_per_machine=2, dist_url="auto", args=(str(tmp_path / "two.pt"),))
    launch(_train, num_gpus_per_machine=1, args=(str(tmp_path / "one.pt"),))
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    assert two["world"] == 2 and one["world"] == 1
    rank0, rank1 = two["states"]
    (single,) = one["states"]
    torch.manual_seed(0)
    init = SyncBNRegressor().state_dict()
    for name, value in rank0.items():
        # DDP keeps replicas identical: same all-reduced gradients, same optimizer arithmetic
        assert torch.equal(value, rank1[name]), name
        if name == "bn.running_var":
            continue  # NaiveSyncBatchNorm tracks the biased batch variance, BatchNorm2d the unbiased one
        if name.endswith("num_batches_tracked"):
            assert int(value) == int(single[name]) == ITERS
            continue
        torch.testing.assert_close(value, single[name], rtol=1e-5, atol=1e-6, msg=name)
    # training moved every parameter (but conv1.bias, which the batch norm cancels): the runs are not compared on
    # untouched initial weights
    for name, _ in SyncBNRegressor().named_parameters():
        if name == "conv1.bias":
            continue
        assert not torch.allclose(single[name], init[name], rtol=1e-3, atol=1e-4), name
    # the synchronised running variance is the biased estimate over the 4-sample total batch: close to 1-process
    torch.testing.assert_close(rank0["bn.running_var"], single["bn.running_var"], rtol=0.1, atol=1e-3)


def _fail_on_rank_1(stamp_file):
    if comm.get_rank() == 1:
        with open(stamp_file, "w") as f:
            f.write(repr(time.time()))
        raise ValueError("rank one exploded on purpose")
    comm.synchronize()  # rank 0 waits in a collective that rank 1 never joins (30 min timeout)
    time.sleep(600)


@pytest.mark.slow
def test_failing_rank_stops_the_job_promptly(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    stamp = tmp_path / "failed_at"
    with pytest.raises(RuntimeError) as info:
        launch(_fail_on_rank_1, num_gpus_per_machine=2, dist_url="auto", args=(str(stamp),))
    since_failure = time.time() - float(stamp.read_text())
    msg = str(info.value)
    assert "rank 1 (machine 0, local rank 1)" in msg
    assert "ValueError: rank one exploded on purpose" in msg and "Traceback" in msg
    assert since_failure < 20, f"launch returned {since_failure:.0f} s after rank 1 failed"

"""Exact resume: a run interrupted at iteration k and resumed from the saved state reproduces the
uninterrupted run's per-iteration losses exactly (CPU), whatever the data loader's num_workers."""

import io
import random

import numpy as np
import pytest
import torch
from fvcore.common.param_scheduler import MultiStepParamScheduler

from libdet.engine import SimpleTrainer, hooks
from libdet.solver import LRMultiplier, WarmupParamScheduler

from ._tiny import TinyNet, train_loader

MAX_ITER = 8
STOP_AT = 4  # the state is captured after iteration STOP_AT - 1


class _LossRecorder(hooks.HookBase):
    def __init__(self):
        self.losses = {}

    def after_step(self):
        self.losses[self.trainer.iter] = self.trainer.storage.history("total_loss").latest()


class _Snapshot(hooks.HookBase):
    """Save model/optimizer/scheduler/trainer state into a bytes buffer after iteration ``at`` (a checkpoint)."""

    def __init__(self, at, scheduler):
        self.at = at
        self.scheduler = scheduler
        self.blob = None

    def after_step(self):
        if self.trainer.iter == self.at:
            buf = io.BytesIO()
            torch.save(
                {
                    "model": self.trainer.model.state_dict(),
                    "optimizer": self.trainer.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "trainer": self.trainer.state_dict(),
                },
                buf,
            )
            self.blob = buf.getvalue()


def _build(num_workers, seed):
    # building consumes global RNG state differently from the original run: resume must not depend on it
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = LRMultiplier(
        opt,
        WarmupParamScheduler(
            MultiStepParamScheduler([1.0, 0.1], milestones=[5], num_updates=MAX_ITER), 0.1, 2 / MAX_ITER
        ),
        MAX_ITER,
    )
    trainer = SimpleTrainer(model, train_loader(num_workers=num_workers), opt)
    recorder = _LossRecorder()
    ema = hooks.EMAHook(model, decay=0.9)
    trainer.register_hooks([hooks.LRScheduler(scheduler=sched), ema, recorder])
    return trainer, sched, recorder, ema


@pytest.mark.parametrize("num_workers", [0, 2])
def test_exact_resume(num_workers):
    trainer, sched, recorder, ema = _build(num_workers, seed=0)
    snap = _Snapshot(STOP_AT - 1, sched)
    trainer.register_hooks([snap])
    trainer.train(0, MAX_ITER)
    reference = recorder.losses
    assert len(reference) == MAX_ITER
    assert snap.blob is not None

    trainer2, sched2, recorder2, ema2 = _build(num_workers, seed=123)
    ckpt = torch.load(io.BytesIO(snap.blob), weights_only=True)  # the trainer state is weights_only-safe
    trainer2.model.load_state_dict(ckpt["model"])
    trainer2.optimizer.load_state_dict(ckpt["optimizer"])
    sched2.load_state_dict(ckpt["scheduler"])
    trainer2.load_state_dict(ckpt["trainer"])
    assert trainer2.iter == STOP_AT - 1
    trainer2.train(trainer2.iter + 1, MAX_ITER)

    assert sorted(recorder2.losses) == list(range(STOP_AT, MAX_ITER))
    for it in range(STOP_AT, MAX_ITER):
        assert recorder2.losses[it] == reference[it], f"iteration {it}: {recorder2.losses[it]} != {reference[it]}"
    for (k, a), b in zip(trainer.model.state_dict().items(), trainer2.model.state_dict().values()):
        assert torch.equal(a, b), k
    for k, v in ema.state.state.items():
        assert torch.equal(v, ema2.state.state[k]), k
    assert trainer2.optimizer.param_groups[0]["lr"] == trainer.optimizer.param_groups[0]["lr"]


def test_state_dict_contents():
    trainer, sched, _, _ = _build(0, seed=0)
    trainer.train(0, 2)
    state = trainer.state_dict()
    assert set(state) >= {"iteration", "hooks", "rng", "data_loader"}
    assert set(state["hooks"]) == {"LRScheduler", "EMAHook"}
    assert state["data_loader"]["batches_consumed"] == 2
    assert set(state["rng"]) >= {"python", "numpy", "torch"}
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    torch.load(buf, weights_only=True)


def test_rng_state_round_trip():
    from libdet.engine.train_loop import _rng_state, _set_rng_state

    state = _rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    _set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    assert a == b

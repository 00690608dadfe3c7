import logging
import os

import pytest
import torch
from fvcore.common.checkpoint import Checkpointer
from fvcore.common.param_scheduler import LinearParamScheduler
from torch import nn

from libdet.engine import SimpleTrainer, hooks
from libdet.utils.events import EventWriter

from ._tiny import LinearModel, TinyNet, cycle, train_loader


def _batches(n=4, bs=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(bs, 3, generator=g)
        out.append((x, x.sum(1)))
    return out


def _linear_trainer(lr=0.1, **kw):
    model = LinearModel()
    return SimpleTrainer(model, cycle(_batches()), torch.optim.SGD(model.parameters(), lr=lr), **kw)


def _metric_hook(values, name="metric"):
    """Puts ``values[k]`` as ``name`` after iteration k (when present): a stand-in for an evaluation."""

    def put(t):
        if t.iter in values:
            t.storage.put_scalar(name, values[t.iter], smoothing_hint=False)

    return hooks.CallbackHook(after_step=put)


def test_iteration_timer(caplog):
    trainer = _linear_trainer()
    trainer.register_hooks([hooks.IterationTimer(warmup_iter=2)])
    with caplog.at_level(logging.INFO, logger="libdet.engine.hooks"):
        trainer.train(0, 5)
    assert [it for _, it in trainer.storage.history("time").values()] == [2, 3, 4]
    assert all(v > 0 for v, _ in trainer.storage.history("time").values())
    assert "Overall training speed: 3 iterations" in caplog.text


class _CountingWriter(EventWriter):
    def __init__(self):
        self.writes, self.closed = [], False

    def write(self):
        from libdet.utils.events import get_event_storage

        self.writes.append(get_event_storage().iter)

    def close(self):
        self.closed = True


def test_periodic_writer():
    w = _CountingWriter()
    trainer = _linear_trainer()
    trainer.register_hooks([hooks.PeriodicWriter([w], period=3)])
    trainer.train(0, 7)
    assert w.writes == [2, 5, 6, 7]  # every 3rd, the last iteration, and after training
    assert w.closed
    with pytest.raises(TypeError, match="EventWriter"):
        hooks.PeriodicWriter([object()])


def test_lr_scheduler_hook_with_param_scheduler():
    trainer = _linear_trainer(lr=1.0)
    lr_hook = hooks.LRScheduler(scheduler=LinearParamScheduler(1.0, 0.0))
    trainer.register_hooks([lr_hook])
    trainer.train(0, 4)
    lrs = [v for v, _ in trainer.storage.history("lr").values()]
    assert lrs == pytest.approx([1.0, 0.75, 0.5, 0.25])
    state = lr_hook.state_dict()
    assert state["last_epoch"] == 4
    # a fresh hook loads the state before training builds its scheduler (resume)
    t2 = _linear_trainer(lr=1.0)
    hook2 = hooks.LRScheduler(scheduler=LinearParamScheduler(1.0, 0.0))
    t2.register_hooks([hook2])
    hook2.load_state_dict(state)
    t2.train(2, 4)
    assert hook2.scheduler.last_epoch == 6


def test_lr_scheduler_hook_requires_a_scheduler():
    trainer = _linear_trainer()
    trainer.register_hooks([hooks.LRScheduler()])
    with pytest.raises(ValueError, match="no scheduler"):
        trainer.train(0, 1)


def test_best_param_group_id():
    model = nn.Sequential(nn.Linear(2, 8), nn.Linear(8, 1))
    opt = torch.optim.SGD(
        [
            {"params": [model[0].bias], "lr": 0.1},
            {"params": [model[1].weight], "lr": 0.5},
            {"params": [model[0].weight, model[1].bias], "lr": 0.1},
        ],
        lr=0.1,
    )
    assert hooks.LRScheduler.get_best_param_group_id(opt) == 2


def test_periodic_checkpointer(tmp_path):
    trainer = _linear_trainer()
    ckpt = Checkpointer(trainer.model, str(tmp_path), optimizer=trainer.optimizer)
    trainer.register_hooks([hooks.PeriodicCheckpointer(ckpt, period=2)])
    trainer.train(0, 5)
    files = sorted(os.listdir(tmp_path))
    assert files == ["last_checkpoint", "model_0000001.pth", "model_0000003.pth", "model_final.pth"]
    data = torch.load(tmp_path / "model_0000003.pth", weights_only=True)
    assert data["iteration"] == 3
    assert data["trainer"]["iteration"] == 3
    assert "rng" in data["trainer"]


def test_early_stopping_writes_final_checkpoint(tmp_path):
    trainer = _linear_trainer()
    ckpt = Checkpointer(trainer.model, str(tmp_path))
    stopper = hooks.EarlyStopping(period=2, metric="metric", mode="max", patience=2, min_delta=0.05)
    # improves at 1, then only by less than min_delta at 3 and 5 -> stop after iteration 5
    trainer.register_hooks(
        [_metric_hook({1: 0.5, 3: 0.52, 5: 0.53, 7: 0.9}), stopper, hooks.PeriodicCheckpointer(ckpt, period=100)]
    )
    trainer.train(0, 20)
    assert trainer.stop_requested and trainer.iter == 6
    assert stopper.best == 0.5 and stopper.num_bad_checks == 2
    data = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert data["iteration"] == 5 and data["trainer"]["iteration"] == 5
    assert data["trainer"]["hooks"]["EarlyStopping"]["num_bad_checks"] == 2


def test_early_stopping_min_mode_and_no_double_count():
    trainer = _linear_trainer()
    stopper = hooks.EarlyStopping(period=1, metric="val", mode="min", patience=2)
    # the metric is only refreshed at iterations 0 and 4: stale values must not count as bad checks
    trainer.register_hooks([_metric_hook({0: 1.0, 4: 0.5}, name="val"), stopper])
    trainer.train(0, 8)
    assert not trainer.stop_requested and stopper.best == 0.5 and stopper.num_bad_checks == 0
    with pytest.raises(ValueError, match="mode"):
        hooks.EarlyStopping(1, "m", mode="up")


def test_best_checkpointer(tmp_path):
    trainer = _linear_trainer()
    ckpt = Checkpointer(trainer.model, str(tmp_path))
    best = hooks.BestCheckpointer(2, ckpt, "metric", mode="max")
    saves = []
    orig = ckpt.save
    ckpt.save = lambda name, **kw: (saves.append((name, kw["iteration"])), orig(name, **kw))
    trainer.register_hooks([_metric_hook({1: 0.3, 3: 0.2, 5: 0.6, 7: 0.5}), best])
    trainer.train(0, 8)
    assert saves == [("model_best", 1), ("model_best", 5)]
    assert best.state_dict() == {"best_metric": 0.6, "best_iter": 5}
    assert (tmp_path / "model_best.pth").exists()


def test_best_checkpointer_missing_metric_warns(tmp_path, caplog):
    trainer = _linear_trainer()
    trainer.register_hooks([hooks.BestCheckpointer(1, Checkpointer(trainer.model, str(tmp_path)), "nope")])
    with caplog.at_level(logging.WARNING, logger="libdet.engine.hooks"):
        trainer.train(0, 2)
    assert "'nope' not found" in caplog.text
    assert not (tmp_path / "model_best.pth").exists()


def test_eval_hook_flattens_and_runs_after_train():
    calls = []

    def eval_fn():
        calls.append(trainer.iter)
        return {"bbox": {"AP": 10.0 + len(calls), "AP50": 20.0}}

    trainer = _linear_trainer()
    trainer.register_hooks([hooks.EvalHook(2, eval_fn)])
    trainer.train(0, 6)
    assert calls == [1, 3, 6]  # periodic (not at the last iteration), then after training
    assert trainer.storage.latest()["bbox/AP"] == (13.0, 6)
    assert trainer.storage.latest()["bbox/AP50"][0] == 20.0


def test_eval_hook_rejects_non_numbers():
    trainer = _linear_trainer()
    trainer.register_hooks([hooks.EvalHook(1, lambda: {"a": "text"})])
    with pytest.raises(TypeError, match="non-number"):
        trainer.train(0, 2)


def test_ema_hook_and_eval_under_ema_weights():
    trainer = _linear_trainer(lr=0.2)
    model = trainer.model
    ema = hooks.EMAHook(model, decay=0.5)
    seen = []
    trainer.register_hooks([ema, hooks.EvalHook(3, lambda: seen.append(model.fc.weight.detach().clone()), ema=ema)])
    init = model.fc.weight.detach().clone()
    trainer.train(0, 3)
    ema_w = ema.state.state["fc.weight"]
    # ema differs from both the initial and the final weights, and eval saw the EMA weights
    assert not torch.equal(ema_w, init) and not torch.equal(ema_w, model.fc.weight)
    assert len(seen) == 1 and torch.equal(seen[0], ema_w)
    state = ema.state_dict()
    assert state["num_updates"] == 3
    other = hooks.EMAHook(LinearModel())
    other.load_state_dict(state)
    assert torch.equal(other.state.state["fc.weight"], ema_w)


def test_validation_loss():
    model = TinyNet()
    trainer = SimpleTrainer(model, train_loader(), torch.optim.SGD(model.parameters(), lr=0.01))
    bn_means = []
    val = hooks.ValidationLoss(2, train_loader(seed=99), num_batches=2)
    trainer.register_hooks(
        [
            hooks.CallbackHook(after_step=lambda t: bn_means.append(model.bn.running_mean.clone())),
            val,
            hooks.CallbackHook(after_step=lambda t: bn_means.append(model.bn.running_mean.clone())),
        ]
    )
    trainer.train(0, 4)
    hist = trainer.storage.history("val_total_loss").values()
    assert [it for _, it in hist] == [1, 3]
    latest = trainer.storage.latest()
    assert latest["val_total_loss"][0] == pytest.approx(latest["val_loss_reg"][0] + latest["val_loss_l1"][0])
    assert model.training
    for a, b in zip(bn_means[0::2], bn_means[1::2]):
        assert torch.equal(a, b)  # validation left BatchNorm statistics untouched


def test_validation_loss_does_not_perturb_training():
    def run(with_val):
        torch.manual_seed(0)
        model = TinyNet()
        trainer = SimpleTrainer(model, train_loader(), torch.optim.SGD(model.parameters(), lr=0.01))
        if with_val:
            trainer.register_hooks([hooks.ValidationLoss(1, train_loader(seed=5), num_batches=1)])
        trainer.train(0, 3)
        return [v for v, _ in trainer.storage.history("total_loss").values()]

    assert run(True) == run(False)  # the training RNGs and buffers are restored after each validation


def test_precise_bn():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, batch):
            x = batch[0] if isinstance(batch, tuple) else batch
            return {"loss": self.m(x).pow(2).mean()}

    wrapped = Wrapped()
    data = [torch.randn(8, 3) * 3 + 5 for _ in range(4)]
    trainer = SimpleTrainer(wrapped, cycle([(d,) for d in data]), torch.optim.SGD(wrapped.parameters(), lr=0.0))
    trainer.register_hooks([hooks.PreciseBN(0, wrapped, [(d,) for d in data] * 2, num_iter=4)])
    trainer.train(0, 2)
    with torch.no_grad():
        feats = [model[0](d) for d in data]
    expected_mean = torch.stack([f.mean(0) for f in feats]).mean(0)
    torch.testing.assert_close(model[1].running_mean, expected_mean, rtol=1e-4, atol=1e-5)


def test_precise_bn_disabled_without_bn(caplog):
    with caplog.at_level(logging.INFO, logger="libdet.engine.hooks"):
        hook = hooks.PreciseBN(1, LinearModel(), [], num_iter=2)
    assert "disabled" in caplog.text
    hook.update_stats()  # no-op


def test_torch_profiler_writes_trace(tmp_path):
    trainer = _linear_trainer()
    trainer.register_hooks([hooks.TorchProfiler(lambda t: t.iter == 1, str(tmp_path))])
    trainer.train(0, 3)
    assert os.listdir(tmp_path) == ["profiler-trace-iter1.json"]
    assert (tmp_path / "profiler-trace-iter1.json").stat().st_size > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU behaviour")
def test_torch_memory_stats_cpu(caplog):
    trainer = _linear_trainer()
    trainer.register_hooks([hooks.TorchMemoryStats(period=1)])
    with caplog.at_level(logging.INFO, logger="libdet.engine.hooks"):
        trainer.train(0, 2)
    assert "CUDA is not available" in caplog.text
    assert "max_reserved_mem" not in trainer.storage.latest()


def test_callback_hook_all_stages():
    stages = []
    trainer = _linear_trainer()
    trainer.register_hooks(
        [
            hooks.CallbackHook(
                before_train=lambda t: stages.append("bt"),
                before_step=lambda t: stages.append("bs"),
                after_backward=lambda t: stages.append("ab"),
                after_step=lambda t: stages.append("as"),
                after_train=lambda t: stages.append("at"),
            )
        ]
    )
    trainer.train(0, 1)
    assert stages == ["bt", "bs", "ab", "as", "at"]


def test_stateless_hook_rejects_state():
    with pytest.raises(ValueError, match="no state"):
        hooks.IterationTimer().load_state_dict({"x": 1})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_memory_stats_cuda():
    model = LinearModel().cuda()
    batches = [(x.cuda(), y.cuda()) for x, y in _batches()]
    trainer = SimpleTrainer(model, cycle(batches), torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.register_hooks([hooks.TorchMemoryStats(period=1, max_runs=2)])
    trainer.train(0, 3)
    assert [it for _, it in trainer.storage.history("max_reserved_mem").values()] == [0, 1]

import copy

import pytest
import torch
from torch import nn

from libdet.engine import AMPTrainer, HookBase, SimpleTrainer, TrainerBase, train_loop
from libdet.engine.hooks import CallbackHook
from libdet.engine.optimizer_step import (
    ClipGradNorm,
    ClipGradNormPerGroup,
    FullPrecision,
    MixedPrecision,
    OptimizerStep,
)
from libdet.utils.events import get_event_storage

from ._tiny import LinearModel, TinyNet, cycle, train_loader


def _linear_batches(n, batch_size, dim=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.tensor([1.0, -2.0, 0.5])
    out = []
    for _ in range(n):
        x = torch.randn(batch_size, dim, generator=g)
        out.append((x, x @ w + 0.3))
    return out


def test_hook_call_order():
    calls = []

    class Rec(HookBase):
        def before_train(self):
            calls.append(("before_train", self.trainer.iter))

        def before_step(self):
            calls.append(("before_step", self.trainer.iter))

        def after_backward(self):
            calls.append(("after_backward", self.trainer.iter))

        def after_step(self):
            calls.append(("after_step", self.trainer.iter))

        def after_train(self):
            calls.append(("after_train", self.trainer.iter))

    model = LinearModel()
    trainer = SimpleTrainer(model, cycle(_linear_batches(2, 4)), torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.register_hooks([Rec(), None])
    trainer.train(3, 5)
    assert calls == [
        ("before_train", 3),
        ("before_step", 3),
        ("after_backward", 3),
        ("after_step", 3),
        ("before_step", 4),
        ("after_backward", 4),
        ("after_step", 4),
        ("after_train", 5),
    ]
    with pytest.raises(TypeError, match="HookBase"):
        trainer.register_hooks([object()])


def test_metrics_logged():
    model = TinyNet()
    trainer = SimpleTrainer(model, train_loader(), torch.optim.SGD(model.parameters(), lr=0.01))
    trainer.train(0, 3)
    storage = trainer.storage
    latest = storage.latest()
    assert {"loss_reg", "loss_l1", "total_loss", "data_time"} <= set(latest)
    assert latest["total_loss"][0] == pytest.approx(latest["loss_reg"][0] + latest["loss_l1"][0])
    assert [it for _, it in storage.history("total_loss").values()] == [0, 1, 2]


def _logged_iterations(trainer, name):
    history = trainer.storage.histories().get(name)
    return len(history.values()) if history is not None else 0


def test_gather_metric_period():
    """Metrics are read every 2 iterations (and at the last); every iteration's values are still logged."""
    model = LinearModel()
    reads = []
    trainer = SimpleTrainer(
        model, cycle(_linear_batches(2, 4)), torch.optim.SGD(model.parameters(), lr=0.1), gather_metric_period=2
    )
    trainer.register_hooks([CallbackHook(after_step=lambda t: reads.append(_logged_iterations(t, "total_loss")))])
    trainer.train(0, 5)
    assert [it for _, it in trainer.storage.history("total_loss").values()] == [0, 1, 2, 3, 4]
    assert reads == [0, 2, 2, 4, 5]  # nothing is in the storage before the write iterations 1, 3 and 4


def test_losses_are_read_from_the_device_once_per_write(monkeypatch):
    calls = []
    real = train_loop._to_floats
    monkeypatch.setattr(train_loop, "_to_floats", lambda tensors: calls.append(len(tensors)) or real(tensors))
    model = TinyNet()
    trainer = SimpleTrainer(
        model,
        train_loader(),
        torch.optim.SGD(model.parameters(), lr=0.01),
        step=OptimizerStep(grad_transforms=[ClipGradNorm(10.0)]),
        gather_metric_period=3,
    )
    trainer.train(0, 6)
    # per write (iterations 2 and 5): the 3 iterations' 2 losses in one read, then the 3 grad norms in one read
    assert calls == [6, 3, 6, 3]
    assert [it for _, it in trainer.storage.history("grad_norm").values()] == list(range(6))


class _NaNAt(nn.Module):
    def __init__(self, at):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.at = at
        self.calls = 0

    def forward(self, batch):
        self.calls += 1
        bad = torch.tensor(float("nan")) if self.calls > self.at else torch.tensor(0.0)
        return {"loss_ok": self.w.sum() ** 2, "loss_bad": self.w.sum() * 0 + bad}


def test_nan_loss_stops_training():
    model = _NaNAt(at=2)
    seen = []
    trainer = SimpleTrainer(model, cycle([0]), torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.register_hooks([CallbackHook(after_train=lambda t: seen.append(t.iter))])
    with pytest.raises(FloatingPointError, match=r"iteration=2.*\['loss_bad'\]"):
        trainer.train(0, 10)
    assert seen == [2]  # after_train ran, at the failing iteration
    assert torch.isfinite(model.w).all()  # the optimizer did not step with the NaN loss


def test_nan_loss_between_writes_names_its_iteration():
    model = _NaNAt(at=1)  # iteration 1 (the 2nd forward) is the first with a NaN loss
    trainer = SimpleTrainer(model, cycle([0]), torch.optim.SGD(model.parameters(), lr=0.1), gather_metric_period=4)
    with pytest.raises(FloatingPointError, match=r"iteration=1!.*\['loss_bad'\]"):
        trainer.train(0, 10)
    assert trainer.iter == 3  # found when iteration 3 reads the losses, before its optimizer step
    assert _logged_iterations(trainer, "loss_ok") == 0


def test_grad_accumulation_equals_bigger_batch():
    batches = _linear_batches(6, 4)
    small = [(x[i : i + 2], y[i : i + 2]) for x, y in batches for i in (0, 2)]
    m1, m2 = LinearModel(), LinearModel()
    m2.load_state_dict(m1.state_dict())
    t1 = SimpleTrainer(m1, iter(batches), torch.optim.SGD(m1.parameters(), lr=0.1))
    t1.train(0, 6)
    t2 = SimpleTrainer(
        m2, iter(small), torch.optim.SGD(m2.parameters(), lr=0.1), step=OptimizerStep(accumulation_steps=2)
    )
    t2.train(0, 6)
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the logged loss is the mean over the accumulated batches: the big batch's loss
    losses1 = [v for v, _ in t1.storage.history("loss").values()]
    losses2 = [v for v, _ in t2.storage.history("loss").values()]
    assert losses2 == pytest.approx(losses1, rel=1e-5)
    with pytest.raises(ValueError, match="accumulation_steps"):
        OptimizerStep(accumulation_steps=0)


def test_step_default_is_full_precision_without_transforms():
    model = LinearModel()
    trainer = SimpleTrainer(model, cycle(_linear_batches(1, 2)), torch.optim.SGD(model.parameters(), lr=0.1))
    assert isinstance(trainer.step.precision, FullPrecision) and trainer.step.grad_transforms == []
    assert trainer.step.accumulation_steps == 1
    with pytest.raises(TypeError, match="OptimizerStep"):
        SimpleTrainer(model, cycle(_linear_batches(1, 2)), trainer.optimizer, step=ClipGradNorm(1.0))
    with pytest.raises(TypeError, match="not callable"):
        OptimizerStep(grad_transforms=[1.0])


def test_clip_grad_norm():
    model = LinearModel()
    before = copy.deepcopy(model.state_dict())
    batches = [(torch.full((2, 3), 100.0), torch.zeros(2))]
    step = OptimizerStep(grad_transforms=[ClipGradNorm(max_norm=0.5)])
    trainer = SimpleTrainer(model, iter(batches), torch.optim.SGD(model.parameters(), lr=1.0), step=step)
    trainer.train(0, 1)
    delta = torch.cat([(model.state_dict()[k] - before[k]).flatten() for k in before])
    assert delta.norm().item() == pytest.approx(0.5, rel=1e-4)  # lr 1: the step is the clipped gradient
    assert trainer.storage.latest()["grad_norm"][0] > 100
    with pytest.raises(ValueError, match="max_norm"):
        ClipGradNorm(0.0)


def test_clip_grad_norm_per_group():
    """Each parameter group is clipped to its own norm (``max_grad_norm`` in the group overrides the default)."""
    model = LinearModel()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    groups = [
        {"params": [model.fc.weight], "lr": 1.0},
        {"params": [model.fc.bias], "lr": 0.5, "max_grad_norm": 0.01},  # a lower lr too, like a backbone group
    ]
    optimizer = torch.optim.SGD(groups, lr=1.0)
    batches = [(torch.full((2, 3), 100.0), torch.zeros(2))]
    step = OptimizerStep(grad_transforms=[ClipGradNormPerGroup(max_norm=0.5)])
    trainer = SimpleTrainer(model, iter(batches), optimizer, step=step)
    trainer.train(0, 1)
    weight_step = (model.fc.weight - before["fc.weight"]).norm().item()
    bias_step = (model.fc.bias - before["fc.bias"]).norm().item()
    assert weight_step == pytest.approx(0.5, rel=1e-4)  # lr 1 x clipped to 0.5
    assert bias_step == pytest.approx(0.5 * 0.01, rel=1e-4)  # lr 0.5 x clipped to 0.01
    latest = trainer.storage.latest()
    assert latest["grad_norm/group0"][0] > 100 and latest["grad_norm/group1"][0] > 1


def test_custom_gradient_transform_sees_true_gradients_and_logs():
    seen = []

    def record(optimizer):
        grad = optimizer.param_groups[0]["params"][0].grad
        seen.append(grad.clone())
        return {"grad_max": grad.abs().max()}

    model = LinearModel()
    step = OptimizerStep(grad_transforms=[record])
    trainer = SimpleTrainer(model, cycle(_linear_batches(1, 4)), torch.optim.SGD(model.parameters(), lr=0.0), step=step)
    trainer.train(0, 2)
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])  # lr 0: the same gradient twice
    assert trainer.storage.latest()["grad_max"][0] == pytest.approx(seen[0].abs().max().item())


def test_exhausted_loader_and_eval_mode_errors():
    model = LinearModel()
    trainer = SimpleTrainer(model, iter(_linear_batches(1, 2)), torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(RuntimeError, match="exhausted at iteration 1"):
        trainer.train(0, 3)
    trainer = SimpleTrainer(model, cycle(_linear_batches(1, 2)), torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.register_hooks([CallbackHook(after_step=lambda t: t.model.eval())])
    with pytest.raises(RuntimeError, match="eval mode"):
        trainer.train(0, 3)


def test_request_stop():
    model = LinearModel()
    trainer = SimpleTrainer(
        model, cycle(_linear_batches(2, 2)), torch.optim.SGD(model.parameters(), lr=0.1), gather_metric_period=5
    )
    ends = []
    trainer.register_hooks(
        [
            CallbackHook(
                after_step=lambda t: t.request_stop() if t.iter == 2 else None,
                after_train=lambda t: ends.append(t.iter),
            )
        ]
    )
    trainer.train(0, 10)
    assert ends == [3]
    assert trainer.stop_requested
    assert [it for _, it in trainer.storage.history("total_loss").values()] == [0, 1, 2]


def test_trainer_base_run_step_required_and_storage():
    class Counting(TrainerBase):
        def run_step(self):
            get_event_storage().put_scalar("x", self.iter)

    t = Counting()
    t.train(0, 3)
    assert t.storage.history("x").values() == [(0.0, 0), (1.0, 1), (2.0, 2)]
    with pytest.raises(NotImplementedError):
        TrainerBase().train(0, 1)


def test_load_state_dict_warns_on_unknown_hook(caplog):
    model = LinearModel()
    trainer = SimpleTrainer(model, cycle(_linear_batches(1, 2)), torch.optim.SGD(model.parameters(), lr=0.1))
    with caplog.at_level("WARNING"):
        trainer.load_state_dict({"iteration": 5, "hooks": {"Missing": {"a": 1}}})
    assert trainer.iter == 5
    assert "Missing" in caplog.text


def test_amp_bf16_cpu():
    model = TinyNet()
    trainer = AMPTrainer(model, train_loader(), torch.optim.SGD(model.parameters(), lr=0.01), precision=torch.bfloat16)
    assert trainer.grad_scaler is None
    seen_dtypes = []
    model.conv.register_forward_hook(lambda m, i, o: seen_dtypes.append(o.dtype))
    before = model.conv.weight.detach().clone()
    trainer.train(0, 2)
    assert seen_dtypes == [torch.bfloat16, torch.bfloat16]
    assert model.conv.weight.dtype == torch.float32
    assert not torch.equal(before, model.conv.weight)
    assert "grad_scaler" not in trainer.state_dict()
    with pytest.raises(ValueError, match="only used with precision=torch.float16"):
        AMPTrainer(
            model, train_loader(), trainer.optimizer, precision=torch.bfloat16, grad_scaler=torch.amp.GradScaler("cpu")
        )
    with pytest.raises(ValueError, match="precision"):
        AMPTrainer(model, train_loader(), trainer.optimizer, precision=torch.float32)


def _cpu_fp16_autocast_works():
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            out = nn.Conv2d(3, 4, 3)(torch.randn(1, 3, 8, 8))
        return out.dtype == torch.float16
    except Exception:  # noqa: BLE001 - any failure means unsupported
        return False


@pytest.mark.skipif(not _cpu_fp16_autocast_works(), reason="float16 autocast is not supported on this CPU build")
def test_amp_fp16_cpu_with_scaler():
    model = LinearModel()
    trainer = AMPTrainer(
        model,
        cycle(_linear_batches(2, 4)),
        torch.optim.SGD(model.parameters(), lr=0.1),
        precision=torch.float16,
        log_grad_scaler=True,
    )
    trainer.train(0, 3)
    assert trainer.grad_scaler is not None
    state = trainer.state_dict()
    assert "scale" in state["grad_scaler"]
    assert "[metric]grad_scaler" in trainer.storage.latest()


@pytest.mark.skipif(not _cpu_fp16_autocast_works(), reason="float16 autocast is not supported on this CPU build")
def test_fp16_clipping_and_accumulation_compose():
    """float16 + grad scaler + clipping + accumulation: the clip sees unscaled gradients, and the update equals a
    float32 step with the same clipping on the big batch (tolerance of float16 arithmetic)."""
    batches = [(torch.ones(4, 3) * torch.arange(1, 5).unsqueeze(1), torch.zeros(4))]
    small = [(x[i : i + 2], y[i : i + 2]) for x, y in batches for i in (0, 2)]
    torch.manual_seed(0)
    m1, m2 = LinearModel(), LinearModel()
    m2.load_state_dict(m1.state_dict())
    step32 = OptimizerStep(grad_transforms=[ClipGradNorm(1.0)])
    t1 = SimpleTrainer(m1, iter(batches), torch.optim.SGD(m1.parameters(), lr=0.1), step=step32)
    t1.train(0, 1)
    step16 = OptimizerStep(
        precision=MixedPrecision(torch.float16, device_type="cpu", grad_scaler=torch.amp.GradScaler("cpu", 2.0**8)),
        grad_transforms=[ClipGradNorm(1.0)],
        accumulation_steps=2,
    )
    t2 = SimpleTrainer(m2, iter(small), torch.optim.SGD(m2.parameters(), lr=0.1), step=step16)
    t2.train(0, 1)
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)
    norm32, norm16 = t1.storage.latest()["grad_norm"][0], t2.storage.latest()["grad_norm"][0]
    assert norm16 == pytest.approx(norm32, rel=1e-2)  # unscaled: not 256 times larger
    assert "grad_scaler" in t2.state_dict()


def test_plain_iterable_loader_keeps_global_randomness():
    """A non-resumable loader drawing from the global RNG gets fresh randomness each iteration."""

    def random_batches():
        while True:
            x = torch.randn(4, 3)
            yield x, x.sum(1)

    model = LinearModel()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.zero_()
    trainer = SimpleTrainer(model, random_batches(), torch.optim.SGD(model.parameters(), lr=0.0))
    trainer.train(0, 3)
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(set(losses)) == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_amp_fp16_cuda():
    model = LinearModel().cuda()
    batches = [(x.cuda(), y.cuda()) for x, y in _linear_batches(2, 4)]
    trainer = AMPTrainer(model, cycle(batches), torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.train(0, 3)
    assert trainer.grad_scaler is not None and "grad_scaler" in trainer.state_dict()
    assert "cuda" in trainer.state_dict()["rng"]

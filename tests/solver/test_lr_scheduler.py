import io
import math

import pytest
import torch
from fvcore.common.param_scheduler import ConstantParamScheduler, CosineParamScheduler, MultiStepParamScheduler
from torch import nn

from libdet.solver import LRMultiplier, WarmupCosineLR, WarmupMultiStepLR, WarmupParamScheduler


def _opt(lr=1.0):
    return torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=lr, momentum=0.9)


def _lrs(opt, sched, n):
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_multistep_curve():
    # 100 iterations, warmup 10 linear from 0.001, x0.1 at 50 and 80
    multiplier = WarmupParamScheduler(
        MultiStepParamScheduler([1.0, 0.1, 0.01], milestones=[50, 80], num_updates=100),
        warmup_factor=0.001,
        warmup_length=10 / 100,
    )
    opt = _opt(2.0)
    lrs = _lrs(opt, LRMultiplier(opt, multiplier, max_iter=100), 100)
    assert lrs[0] == pytest.approx(2.0 * 0.001)
    assert lrs[5] == pytest.approx(2.0 * (0.001 + (1 - 0.001) * 0.5))  # halfway through warmup
    assert lrs[10] == pytest.approx(2.0)
    assert lrs[49] == pytest.approx(2.0) and lrs[50] == pytest.approx(0.2)
    assert lrs[79] == pytest.approx(0.2) and lrs[80] == pytest.approx(0.02) and lrs[99] == pytest.approx(0.02)


def test_warmup_cosine_curve_fixed_and_rescaled():
    cos = CosineParamScheduler(1.0, 0.0)
    fixed = WarmupParamScheduler(cos, warmup_factor=0.1, warmup_length=0.2)
    # warmup ends at cos(0.2); after warmup the absolute progress is used
    end = 0.5 * (1 + math.cos(math.pi * 0.2))
    assert fixed(0.0) == pytest.approx(0.1)
    assert fixed(0.1) == pytest.approx(0.1 + (end - 0.1) * 0.5)
    assert fixed(0.6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.6)))
    rescaled = WarmupParamScheduler(cos, warmup_factor=0.1, warmup_length=0.2, rescale_interval=True)
    assert rescaled(0.1) == pytest.approx(0.1 + (1.0 - 0.1) * 0.5)
    assert rescaled(0.2) == pytest.approx(1.0)
    assert rescaled(0.6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))  # (0.6-0.2)/0.8 = 0.5


def test_constant_warmup_and_errors():
    s = WarmupParamScheduler(CosineParamScheduler(1.0, 0.0), 0.25, 0.5, warmup_method="constant")
    assert s(0.0) == s(0.4) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="warmup_method"):
        WarmupParamScheduler(CosineParamScheduler(1.0, 0.0), 0.1, 0.1, warmup_method="exp")
    with pytest.raises(ValueError, match="warmup_length"):
        WarmupParamScheduler(CosineParamScheduler(1.0, 0.0), 0.1, 1.0)
    with pytest.raises(TypeError, match="ParamScheduler"):
        LRMultiplier(_opt(), lambda x: 1.0, 10)


def test_lr_multiplier_state_dict_weights_only_and_resume():
    mult = CosineParamScheduler(1.0, 0.0)
    opt = _opt()
    sched = LRMultiplier(opt, mult, max_iter=10)
    full = _lrs(opt, sched, 10)
    opt2 = _opt()
    sched2 = LRMultiplier(opt2, mult, max_iter=10)
    _lrs(opt2, sched2, 4)
    buf = io.BytesIO()
    torch.save(sched2.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    opt3 = _opt()
    sched3 = LRMultiplier(opt3, mult, max_iter=10)
    sched3.load_state_dict(state)
    assert _lrs(opt3, sched3, 6) == pytest.approx(full[4:])
    with pytest.raises(ValueError, match="max_iter"):
        LRMultiplier(_opt(), mult, max_iter=20).load_state_dict(state)


def test_lr_multiplier_start_mid_schedule():
    opt = _opt(1.0)
    sched = LRMultiplier(opt, CosineParamScheduler(1.0, 0.0), max_iter=10, last_iter=4)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert sched.last_epoch == 5


def test_legacy_schedulers():
    opt = _opt(1.0)
    lrs = _lrs(opt, WarmupMultiStepLR(opt, milestones=[4, 6], gamma=0.5, warmup_factor=0.1, warmup_iters=2), 8)
    assert lrs == pytest.approx([0.1, 0.55, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25])
    opt = _opt(1.0)
    lrs = _lrs(opt, WarmupCosineLR(opt, max_iters=4, warmup_factor=0.5, warmup_iters=1), 4)
    assert lrs == pytest.approx([0.5, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))])
    with pytest.raises(ValueError, match="increasing"):
        WarmupMultiStepLR(_opt(), milestones=[5, 2])


def test_lr_multiplier_steps_past_the_last_iteration_with_a_constant_schedule():
    """The trainer steps the scheduler after the last iteration too; fvcore schedulers are only defined on [0, 1),
    so that step keeps the last iteration's value instead of raising (ConstantParamScheduler(1.0) rejects 1.0)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = LRMultiplier(opt, ConstantParamScheduler(0.5), max_iter=3)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(3):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == [0.05] * 4

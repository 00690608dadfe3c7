import pytest
import torch
from torch import nn

from libdet.layers import FrozenBatchNorm2d, NaiveSyncBatchNorm
from libdet.layers.batch_norm import LayerNorm
from libdet.solver import get_default_optimizer_params, reduce_param_groups


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.ln = LayerNorm(4)
        self.sync = NaiveSyncBatchNorm(4)
        self.frozen = FrozenBatchNorm2d(4)  # buffers only: contributes no parameters
        self.fc = nn.Linear(4, 2)
        self.pos_embed = nn.Parameter(torch.zeros(1, 4))
        self.shared = self.fc  # a shared module must be counted once


def _group_of(groups, param):
    (g,) = [g for g in groups if any(p is param for p in g["params"])]
    return g


def test_no_decay_on_norm_and_bias():
    net = _Net()
    groups = get_default_optimizer_params(
        net, base_lr=0.1, weight_decay=1e-4, weight_decay_norm=0.0, weight_decay_bias=0.0
    )
    for m in (net.bn, net.gn, net.ln, net.sync):
        assert _group_of(groups, m.weight)["weight_decay"] == 0.0
    assert _group_of(groups, net.conv.weight)["weight_decay"] == 1e-4
    assert _group_of(groups, net.conv.bias)["weight_decay"] == 0.0
    assert _group_of(groups, net.pos_embed)["weight_decay"] == 1e-4
    # merged: one decayed group, one non-decayed group, in order of first appearance
    assert len(groups) == 2
    assert groups[0]["params"][:2] == [net.pos_embed, net.conv.weight]  # root module first
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    opt = torch.optim.SGD(groups, lr=0.5, momentum=0.9)
    assert opt.param_groups[0]["lr"] == 0.1


def test_defaults_left_to_optimizer():
    net = _Net()
    groups = get_default_optimizer_params(net)
    assert len(groups) == 1 and set(groups[0]) == {"params"}
    opt = torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.05)
    assert opt.param_groups[0]["weight_decay"] == 0.05


def test_bias_lr_factor_overrides_and_lr_factor_func():
    net = _Net()
    groups = get_default_optimizer_params(
        net,
        base_lr=1.0,
        weight_decay=0.1,
        bias_lr_factor=2.0,
        lr_factor_func=lambda name: 0.5 if name.startswith("fc.") else 1.0,
        overrides={"pos_embed": {"weight_decay": 0.0}, "conv.weight": {"lr": 7.0}},
    )
    assert _group_of(groups, net.fc.weight)["lr"] == 0.5
    assert _group_of(groups, net.conv.bias)["lr"] == 2.0
    assert _group_of(groups, net.conv.weight)["lr"] == 7.0  # full-name override
    assert _group_of(groups, net.pos_embed) == {"params": [net.pos_embed], "lr": 1.0, "weight_decay": 0.0}
    # bias overrides replace the lr computed with lr_factor_func (as in detectron2)
    assert _group_of(groups, net.fc.bias)["lr"] == 2.0


def test_frozen_params_skipped_and_errors():
    net = _Net()
    net.conv.weight.requires_grad_(False)
    groups = get_default_optimizer_params(net)
    assert not any(p is net.conv.weight for g in groups for p in g["params"])
    with pytest.raises(ValueError, match="needs base_lr"):
        get_default_optimizer_params(net, bias_lr_factor=2.0)
    with pytest.raises(ValueError, match="needs base_lr"):
        get_default_optimizer_params(net, lr_factor_func=lambda n: 1.0)
    with pytest.raises(ValueError, match="not both"):
        get_default_optimizer_params(net, base_lr=1.0, weight_decay_bias=0.0, overrides={"bias": {"lr": 1.0}})


def test_reduce_param_groups():
    a, b, c = (nn.Parameter(torch.zeros(1)) for _ in range(3))
    groups = reduce_param_groups([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 2.0}, {"params": [c], "lr": 1.0}])
    assert [g["lr"] for g in groups] == [1.0, 2.0]
    assert groups[0]["params"] == [a, c]

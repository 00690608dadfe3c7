import pytest
import torch
import torch.nn.functional as F
from torch import nn

from libdet.layers import batch_norm as bn_module
from libdet.layers.batch_norm import (
    CycleBatchNormList,
    FrozenBatchNorm2d,
    LayerNorm,
    NaiveSyncBatchNorm,
    get_norm,
)
from libdet.layers.wrappers import Conv2d

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.(script|trace)` is deprecated:FutureWarning")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _random_bn(c: int = 4, eps: float = 1e-5) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c, eps=eps)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1.0, 1.0)
        bn.running_mean.uniform_(-1.0, 1.0)
        bn.running_var.uniform_(0.5, 2.0)
    return bn.eval()


def _frozen_from(bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    frozen.load_state_dict(bn.state_dict())
    return frozen


def test_frozen_bn_fresh_is_identity():
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(FrozenBatchNorm2d(3)(x), x)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_frozen_bn_equals_eval_bn(requires_grad):
    bn = _random_bn(4, eps=1e-3)
    frozen = _frozen_from(bn)
    x = torch.randn(2, 4, 5, 6, requires_grad=requires_grad)
    torch.testing.assert_close(frozen(x), bn(x))
    if requires_grad:
        frozen(x).sum().backward()
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        torch.testing.assert_close(x.grad, scale.view(1, -1, 1, 1).expand_as(x).detach())
    assert not any(True for _ in frozen.parameters())


def test_frozen_bn_float16_and_scripted():
    bn = _random_bn(4)
    frozen = _frozen_from(bn)
    x = torch.randn(2, 4, 5, 6)
    out16 = frozen(x.half())
    assert out16.dtype == torch.float16
    torch.testing.assert_close(out16.float(), bn(x), atol=1e-2, rtol=1e-2)
    scripted = torch.jit.script(frozen)
    torch.testing.assert_close(scripted(x), bn(x))


def test_frozen_bn_state_dict_and_repr():
    frozen = FrozenBatchNorm2d(3, eps=1e-4)
    assert list(frozen.state_dict().keys()) == ["weight", "bias", "running_mean", "running_var"]
    assert repr(frozen) == "FrozenBatchNorm2d(num_features=3, eps=0.0001)"


def test_frozen_bn_loads_bn_state_dict_with_num_batches_tracked():
    bn = _random_bn(4)
    sd = bn.state_dict()
    assert "num_batches_tracked" in sd
    frozen = FrozenBatchNorm2d(4)
    result = frozen.load_state_dict(sd, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for k in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(getattr(frozen, k), sd[k])


def test_frozen_bn_loads_old_checkpoint_without_running_stats():
    frozen = FrozenBatchNorm2d(3)
    sd = {"weight": torch.tensor([1.0, 2.0, 3.0]), "bias": torch.tensor([0.5, 0.0, -0.5])}  # no metadata
    frozen.load_state_dict(sd, strict=True)
    assert torch.equal(frozen.running_mean, torch.zeros(3))
    assert torch.equal(frozen.running_var, torch.ones(3))
    # A current checkpoint (version metadata present) must still report missing statistics.
    current = FrozenBatchNorm2d(3).state_dict()
    del current["running_var"]
    with pytest.raises(RuntimeError, match="running_var"):
        FrozenBatchNorm2d(3).load_state_dict(current, strict=True)


def test_convert_frozen_batchnorm_preserves_outputs_and_keys():
    model = nn.Sequential(
        Conv2d(3, 4, 3, padding=1, bias=False, norm=_random_bn(4)),
        nn.ReLU(),
        nn.Sequential(_random_bn(4), nn.Conv2d(4, 2, 1)),
    ).eval()
    x = torch.randn(2, 3, 6, 6)
    expected = model(x)
    keys = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]

    converted = FrozenBatchNorm2d.convert_frozen_batchnorm(model)
    assert converted is model
    assert isinstance(model[0].norm, FrozenBatchNorm2d) and isinstance(model[2][0], FrozenBatchNorm2d)
    assert list(converted.state_dict().keys()) == keys
    torch.testing.assert_close(converted(x), expected)

    back = FrozenBatchNorm2d.convert_frozenbatchnorm2d_to_batchnorm2d(converted)
    assert type(back[0].norm) is nn.BatchNorm2d and type(back[2][0]) is nn.BatchNorm2d
    torch.testing.assert_close(back.eval()(x), expected)


def test_convert_frozen_batchnorm_on_a_bn_returns_new_module():
    bn = _random_bn(4, eps=1e-3)
    frozen = FrozenBatchNorm2d.convert_frozen_batchnorm(bn)
    assert isinstance(frozen, FrozenBatchNorm2d) and frozen.eps == 1e-3
    x = torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(frozen(x), bn(x))
    sync = NaiveSyncBatchNorm(4)
    assert isinstance(FrozenBatchNorm2d.convert_frozen_batchnorm(sync), FrozenBatchNorm2d)


@pytest.mark.parametrize(
    "name, cls",
    [
        ("BN", nn.BatchNorm2d),
        ("SyncBN", nn.SyncBatchNorm),
        ("FrozenBN", FrozenBatchNorm2d),
        ("GN", nn.GroupNorm),
        ("nnSyncBN", nn.SyncBatchNorm),
        ("naiveSyncBN", NaiveSyncBatchNorm),
        ("naiveSyncBN_N", NaiveSyncBatchNorm),
        ("LN", LayerNorm),
    ],
)
def test_get_norm_names(name, cls):
    norm = get_norm(name, 64)
    assert type(norm) is cls
    if name == "GN":
        assert norm.num_groups == 32 and norm.num_channels == 64
    elif name == "LN":
        assert norm.weight.shape == (64,)
    else:
        assert norm.num_features == 64
    if name.startswith("naiveSyncBN"):
        assert norm._stats_mode == ("N" if name.endswith("_N") else "")


def test_get_norm_none_callable_and_errors():
    assert get_norm("", 8) is None
    assert get_norm(None, 8) is None
    norm = get_norm(lambda c: nn.GroupNorm(2, c), 8)
    assert isinstance(norm, nn.GroupNorm) and norm.num_groups == 2
    with pytest.raises(ValueError) as err:
        get_norm("BatchNorm", 8)
    msg = str(err.value)
    assert "'BatchNorm'" in msg
    for valid in ("BN", "SyncBN", "FrozenBN", "GN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N", "LN"):
        assert f"'{valid}'" in msg
    with pytest.raises(TypeError, match="norm"):
        get_norm(3, 8)


def test_layer_norm_normalises_channels():
    ln = LayerNorm(4, eps=1e-6)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 2)
        ln.bias.uniform_(-1, 1)
    x = torch.randn(2, 4, 3, 5)
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (4,), ln.weight, ln.bias, eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(ln(x), expected)


def test_naive_sync_bn_single_process_equals_bn():
    bn = nn.BatchNorm2d(4)
    sync = NaiveSyncBatchNorm(4)
    sync.load_state_dict(bn.state_dict())
    x = torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(sync(x), bn(x))
    torch.testing.assert_close(sync.running_mean, bn.running_mean)
    torch.testing.assert_close(sync.running_var, bn.running_var)
    sync.eval(), bn.eval()
    torch.testing.assert_close(sync(x), bn(x))
    with pytest.raises(ValueError, match="stats_mode"):
        NaiveSyncBatchNorm(4, stats_mode="M")


def test_naive_sync_bn_distributed_math(monkeypatch):
    """Two identical processes (simulated) must give exactly the single-process batch statistics."""
    monkeypatch.setattr(bn_module, "_dist_world_size", lambda: 2)
    monkeypatch.setattr(bn_module, "_all_reduce_sum", lambda v: v * 2)
    x = torch.randn(3, 4, 5, 5, requires_grad=True)
    for mode in ("", "N"):
        bn = nn.BatchNorm2d(4, momentum=0.3)
        with torch.no_grad():
            bn.weight.uniform_(0.5, 2)
            bn.bias.uniform_(-1, 1)
        sync = NaiveSyncBatchNorm(4, momentum=0.3, stats_mode=mode)
        sync.load_state_dict(bn.state_dict())
        out = sync(x)
        torch.testing.assert_close(out, bn(x))
        (g_sync,) = torch.autograd.grad(out.pow(2).sum(), x)
        (g_bn,) = torch.autograd.grad(bn(x).pow(2).sum(), x)
        torch.testing.assert_close(g_sync, g_bn)
        torch.testing.assert_close(sync.running_mean, 0.3 * x.detach().mean(dim=[0, 2, 3]))
        biased_var = x.detach().var(dim=[0, 2, 3], unbiased=False)
        torch.testing.assert_close(sync.running_var, 0.7 + 0.3 * biased_var)


def test_naive_sync_bn_stats_mode_n_empty_local_batch(monkeypatch):
    other = torch.randn(2, 3, 4, 4)  # the batch held by the (simulated) other process
    other_vec = torch.cat([other.mean(dim=[0, 2, 3]), (other * other).mean(dim=[0, 2, 3]), torch.ones(1)]) * 2
    monkeypatch.setattr(bn_module, "_dist_world_size", lambda: 2)
    monkeypatch.setattr(bn_module, "_all_reduce_sum", lambda v: v + other_vec)
    sync = NaiveSyncBatchNorm(3, stats_mode="N", momentum=0.5)
    x = torch.zeros(0, 3, 4, 4, requires_grad=True)
    out = sync(x)
    assert out.shape == (0, 3, 4, 4)
    out.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(sync.running_mean, 0.5 * other.mean(dim=[0, 2, 3]))
    with pytest.raises(ValueError, match="stats_mode"):
        NaiveSyncBatchNorm(3)(torch.zeros(0, 3, 4, 4))


def test_naive_sync_bn_all_processes_empty_keeps_stats(monkeypatch):
    monkeypatch.setattr(bn_module, "_dist_world_size", lambda: 2)
    monkeypatch.setattr(bn_module, "_all_reduce_sum", lambda v: v * 2)
    sync = NaiveSyncBatchNorm(3, stats_mode="N")
    sync(torch.zeros(0, 3, 4, 4))
    assert torch.equal(sync.running_mean, torch.zeros(3)) and torch.equal(sync.running_var, torch.ones(3))
    assert int(sync.num_batches_tracked) == 0


def test_cycle_batch_norm_list():
    cycle = CycleBatchNormList(length=2, num_features=3, momentum=1.0)
    assert set(cycle.state_dict().keys()) >= {"weight", "bias", "0.running_mean", "1.running_mean"}
    assert "0.weight" not in cycle.state_dict()
    a = torch.randn(2, 3, 4, 4) + 5
    b = torch.randn(2, 3, 4, 4) - 5
    with torch.no_grad():
        cycle.weight.fill_(2.0)
        cycle.bias.fill_(1.0)
    out_a = cycle(a)
    cycle(b)
    torch.testing.assert_close(cycle[0].running_mean, a.mean(dim=[0, 2, 3]))
    torch.testing.assert_close(cycle[1].running_mean, b.mean(dim=[0, 2, 3]))
    torch.testing.assert_close(out_a, 2 * F.batch_norm(a, None, None, training=True) + 1)
    assert cycle._pos == 0
    no_affine = CycleBatchNormList(length=3, num_features=3, affine=False)
    assert "weight" not in no_affine.state_dict() and "affine=False" in repr(no_affine)

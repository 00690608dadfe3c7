import pytest
import torch
import torch.nn.functional as F
from torch import nn

from libdet.layers.aspp import ASPP
from libdet.layers.blocks import DepthwiseSeparableConv2d


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _manual_aspp(aspp: ASPP, x: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    branches = [aspp.convs[i](x) for i in range(4)]
    pool_conv = aspp.convs[4][1]
    pool_out = pool_conv(pooled)
    branches.append(F.interpolate(pool_out, size=x.shape[-2:], mode="bilinear", align_corners=False))
    return aspp.project(torch.cat(branches, dim=1))


@pytest.mark.parametrize("norm", ["BN", ""])
def test_aspp_global_pooling(norm):
    aspp = ASPP(6, 5, [1, 2, 3], norm=norm, activation=nn.ReLU()).eval()
    x = torch.randn(2, 6, 9, 11)
    out = aspp(x)
    assert out.shape == (2, 5, 9, 11)
    # The pooling branch sees the global mean, broadcast to every position.
    expected = _manual_aspp(aspp, x, x.mean(dim=(2, 3), keepdim=True))
    torch.testing.assert_close(out, expected)
    pool_branch = aspp.convs[4](x)
    assert pool_branch.shape == (2, 5, 1, 1)

    keys = set(aspp.state_dict().keys())
    expected_keys = {"convs.0.weight", "convs.3.weight", "convs.4.1.weight", "convs.4.1.bias", "project.weight"}
    assert expected_keys <= keys
    assert ("convs.0.norm.running_mean" in keys) == (norm == "BN")
    assert ("convs.0.bias" in keys) == (norm == "")
    assert not any(k.startswith("convs.4.1.norm") for k in keys)  # no norm on the 1x1 pooled map
    assert aspp.convs[2].dilation == (2, 2) and aspp.convs[2].padding == (2, 2)


def test_aspp_pool_kernel_size():
    aspp = ASPP(4, 3, [1, 2, 3], norm="", activation=None, pool_kernel_size=(2, 3)).eval()
    x = torch.randn(1, 4, 4, 6)
    out = aspp(x)
    assert out.shape == (1, 3, 4, 6)
    expected = _manual_aspp(aspp, x, F.avg_pool2d(x, (2, 3), stride=1))
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="pool_kernel_size"):
        aspp(torch.randn(1, 4, 5, 6))


@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("pool_kernel_size", [None, 2])
def test_aspp_scripted(pool_kernel_size):
    aspp = ASPP(3, 4, [1, 2, 3], norm="BN", activation=nn.ReLU(), pool_kernel_size=pool_kernel_size).eval()
    x = torch.randn(1, 3, 6, 8)
    torch.testing.assert_close(torch.jit.script(aspp)(x), aspp(x))


def test_aspp_argument_and_input_checks():
    with pytest.raises(ValueError, match="dilations"):
        ASPP(4, 3, [1, 2], norm="", activation=None)
    aspp = ASPP(4, 3, [1, 2, 3], norm="", activation=None)
    with pytest.raises(ValueError, match=r"\(N, 4, H, W\)"):
        aspp(torch.randn(1, 5, 8, 8))


def test_aspp_depthwise_separable_and_dropout():
    aspp = ASPP(4, 3, [1, 2, 3], norm="BN", activation=nn.ReLU(), dropout=0.5, use_depthwise_separable_conv=True)
    assert all(isinstance(aspp.convs[i], DepthwiseSeparableConv2d) for i in (1, 2, 3))
    assert aspp.convs[3].depthwise.dilation == (3, 3)
    x = torch.randn(2, 4, 8, 8)
    aspp.train()
    torch.manual_seed(1)
    out = aspp(x)
    assert out.shape == (2, 3, 8, 8)
    torch.manual_seed(1)
    branches = [conv(x) for conv in aspp.convs]
    branches[-1] = F.interpolate(branches[-1], size=(8, 8), mode="bilinear", align_corners=False)
    expected = F.dropout(aspp.project(torch.cat(branches, dim=1)), 0.5, training=True)
    torch.testing.assert_close(out, expected)
    assert (out == 0).any()
    aspp.eval()
    torch.testing.assert_close(aspp(x), aspp(x))

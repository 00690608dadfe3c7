import pytest
import torch
import torch.nn.functional as F
from torch import nn

from libdet.layers.batch_norm import FrozenBatchNorm2d
from libdet.layers.blocks import CNNBlockBase, DepthwiseSeparableConv2d
from libdet.layers.wrappers import Conv2d


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class _Block(CNNBlockBase):
    def __init__(self):
        super().__init__(in_channels=3, out_channels=4, stride=2)
        self.conv = Conv2d(3, 4, 3, stride=2, padding=1, bias=False, norm=nn.BatchNorm2d(4))
        self.extra = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.extra(self.conv(x))


def test_cnn_block_base_attributes():
    block = _Block()
    assert (block.in_channels, block.out_channels, block.stride) == (3, 4, 2)


def test_cnn_block_freeze():
    block = _Block()
    with torch.no_grad():
        for bn in (block.conv.norm, block.extra):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 2)
    block.eval()
    x = torch.randn(2, 3, 8, 8)
    expected = block(x)
    assert block.freeze() is block
    assert isinstance(block.conv.norm, FrozenBatchNorm2d) and isinstance(block.extra, FrozenBatchNorm2d)
    assert all(not p.requires_grad for p in block.parameters())
    block.train()  # frozen: training mode changes nothing
    torch.testing.assert_close(block(x), expected)


def test_depthwise_separable_conv_structure_and_output():
    m = DepthwiseSeparableConv2d(4, 6, kernel_size=3, padding=2, dilation=2, norm1="BN", activation1=F.relu)
    keys = list(m.state_dict().keys())
    assert "depthwise.weight" in keys and "depthwise.norm.running_mean" in keys
    assert "depthwise.bias" not in keys
    assert "pointwise.bias" in keys and not any(k.startswith("pointwise.norm") for k in keys)
    assert m.depthwise.groups == 4 and m.depthwise.weight.shape == (4, 1, 3, 3)
    assert m.pointwise.weight.shape == (6, 4, 1, 1)
    assert torch.count_nonzero(m.pointwise.bias) == 0

    m.eval()
    x = torch.randn(2, 4, 7, 9)
    y = F.conv2d(x, m.depthwise.weight, None, padding=2, dilation=2, groups=4)
    y = F.relu(m.depthwise.norm(y))
    expected = F.conv2d(y, m.pointwise.weight, m.pointwise.bias)
    out = m(x)
    assert out.shape == (2, 6, 7, 9)
    torch.testing.assert_close(out, expected)

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from libdet.layers.deform_conv import DeformConv, ModulatedDeformConv


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _out_hw(h, w, k, s, p, d):
    return (h + 2 * p - d * (k - 1) - 1) // s + 1, (w + 2 * p - d * (k - 1) - 1) // s + 1


@pytest.mark.parametrize("stride, padding, dilation, groups, dg", [(1, 1, 1, 1, 1), (2, 2, 2, 2, 2)])
def test_deform_conv_zero_offset_equals_conv(stride, padding, dilation, groups, dg):
    conv = DeformConv(4, 6, 3, stride=stride, padding=padding, dilation=dilation, groups=groups, deformable_groups=dg)
    x = torch.randn(2, 4, 9, 8)
    ho, wo = _out_hw(9, 8, 3, stride, padding, dilation)
    offset = torch.zeros(2, 2 * dg * 9, ho, wo)
    expected = F.conv2d(x, conv.weight, None, stride, padding, dilation, groups)
    out = conv(x, offset)
    assert out.shape == (2, 6, ho, wo)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_deform_conv_offset_layout_is_y_then_x():
    conv = DeformConv(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 6, 7)
    offset = torch.zeros(1, 18, 6, 7)
    padded = F.pad(x, (1, 1, 1, 1))  # (1, 2, 8, 9)
    offset[:, 1::2] = 1.0  # every x offset +1 pixel: sample the padded input shifted left
    shifted = torch.cat([padded[..., 1:], torch.zeros(1, 2, 8, 1)], dim=-1)
    torch.testing.assert_close(conv(x, offset), F.conv2d(shifted, conv.weight), atol=1e-5, rtol=1e-5)
    offset = torch.zeros(1, 18, 6, 7)
    offset[:, 0::2] = 1.0  # every y offset +1 pixel
    shifted = torch.cat([padded[:, :, 1:], torch.zeros(1, 2, 1, 9)], dim=2)
    torch.testing.assert_close(conv(x, offset), F.conv2d(shifted, conv.weight), atol=1e-5, rtol=1e-5)


def test_modulated_deform_conv_zero_offset_equals_conv_plus_bias():
    conv = ModulatedDeformConv(4, 5, 3, stride=1, padding=1, deformable_groups=2)
    with torch.no_grad():
        conv.bias.uniform_(-1, 1)
    x = torch.randn(2, 4, 7, 6)
    offset = torch.zeros(2, 2 * 2 * 9, 7, 6)
    mask = torch.ones(2, 2 * 9, 7, 6)
    plain = F.conv2d(x, conv.weight, None, padding=1)
    bias = conv.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(conv(x, offset, mask), plain + bias, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        conv(x, offset, mask * 0.25), 0.25 * plain + conv.bias.view(1, -1, 1, 1), atol=1e-5, rtol=1e-5
    )


def test_parameter_names_match_detectron2():
    assert list(DeformConv(4, 6, 3).state_dict().keys()) == ["weight"]
    assert DeformConv(4, 6, 3).bias is None
    m = ModulatedDeformConv(4, 6, (3, 1), groups=2, norm=nn.BatchNorm2d(6))
    assert list(m.state_dict().keys())[:3] == ["weight", "bias", "norm.weight"]
    assert m.weight.shape == (6, 2, 3, 1) and m.bias.shape == (6,)
    assert list(ModulatedDeformConv(4, 6, 3, bias=False).state_dict().keys()) == ["weight"]
    assert "deformable_groups=1" in repr(m) and "bias=True" in repr(m)


def test_deform_conv_norm_activation_and_bias():
    conv = DeformConv(3, 4, 3, padding=1, bias=True, norm=nn.BatchNorm2d(4).eval(), activation=F.relu)
    with torch.no_grad():
        conv.bias.uniform_(-1, 1)
    x = torch.randn(1, 3, 5, 5)
    expected = F.relu(conv.norm(F.conv2d(x, conv.weight, conv.bias, padding=1)))
    torch.testing.assert_close(conv(x, torch.zeros(1, 18, 5, 5)), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_empty_batch(training):
    conv = ModulatedDeformConv(3, 4, 3, stride=2, padding=1, norm=nn.BatchNorm2d(4), activation=nn.ReLU())
    conv.train(training)
    x = torch.zeros(0, 3, 9, 10, requires_grad=True)
    out = conv(x, torch.zeros(0, 18, 5, 5), torch.zeros(0, 9, 5, 5))
    assert out.shape == (0, 4, 5, 5)
    out.sum().backward()
    assert x.grad is not None and conv.weight.grad is not None
    out = DeformConv(3, 4, 3)(torch.zeros(0, 3, 9, 10), torch.zeros(0, 18, 7, 8))
    assert out.shape == (0, 4, 7, 8)


def test_shape_and_argument_errors():
    conv = DeformConv(4, 6, 3, padding=1, deformable_groups=2)
    x = torch.randn(1, 4, 5, 5)
    with pytest.raises(ValueError, match="`offset` must have shape \\(1, 36, 5, 5\\)"):
        conv(x, torch.zeros(1, 18, 5, 5))
    with pytest.raises(ValueError, match="`x`"):
        conv(torch.randn(1, 3, 5, 5), torch.zeros(1, 36, 5, 5))
    mconv = ModulatedDeformConv(4, 6, 3, padding=1)
    with pytest.raises(ValueError, match="`mask`"):
        mconv(x, torch.zeros(1, 18, 5, 5), torch.ones(1, 18, 5, 5))
    with pytest.raises(ValueError, match="groups"):
        DeformConv(4, 6, 3, groups=4)
    with pytest.raises(ValueError, match="deformable_groups"):
        DeformConv(4, 6, 3, deformable_groups=3)


def test_gradcheck_float64():
    conv = ModulatedDeformConv(2, 1, 3, padding=1, deformable_groups=1).double()
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    # Fractional offsets keep samples away from pixel boundaries, where bilinear is not differentiable.
    offset = (torch.rand(1, 18, 3, 3, dtype=torch.float64) * 0.6 + 0.2).requires_grad_()
    mask = torch.rand(1, 9, 3, 3, dtype=torch.float64, requires_grad=True)
    weight = conv.weight.detach().clone().requires_grad_()
    bias = torch.randn(1, dtype=torch.float64, requires_grad=True)

    def f(x, offset, mask, weight, bias):
        return torch.func.functional_call(conv, {"weight": weight, "bias": bias}, (x, offset, mask))

    assert torch.autograd.gradcheck(f, (x, offset, mask, weight, bias), eps=1e-6, atol=1e-5)
    dconv = DeformConv(2, 1, 3, padding=1).double()
    assert torch.autograd.gradcheck(lambda x, o: dconv(x, o), (x, offset), eps=1e-6, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    conv = ModulatedDeformConv(4, 6, 3, padding=1, deformable_groups=2)
    x = torch.randn(2, 4, 8, 8)
    offset = torch.randn(2, 36, 8, 8)
    mask = torch.rand(2, 18, 8, 8)
    expected = conv(x, offset, mask)
    out = conv.cuda()(x.cuda(), offset.cuda(), mask.cuda())
    torch.testing.assert_close(out.cpu(), expected, atol=1e-4, rtol=1e-4)

from pathlib import Path

import pytest
import torch
from torch import nn

from libdet.layers import FrozenBatchNorm2d
from libdet.modeling.backbone import Backbone, BasicBlock, BasicStem, BottleneckBlock, ResNet, make_stage
from libdet.modeling.backbone.resnet import DeformBottleneckBlock

# detectron2's state_dict key tables, copied into the repository (key<TAB>shape per line).
D2_KEYS = Path(__file__).resolve().parent.parent / "d2_keys"


def _d2_rows(name, prefix):
    rows = []
    for line in (D2_KEYS / f"{name}.txt").read_text().splitlines():
        key, shape = line.split("\t")
        if key.startswith(prefix):
            rows.append((key[len(prefix) :], shape))
    return rows


def _rows(module):
    return [(k, str(list(v.shape))) for k, v in module.state_dict().items()]


def _r50(out_features=("res2", "res3", "res4", "res5"), **kwargs):
    stages = ResNet.make_default_stages(50, stride_in_1x1=True, norm="FrozenBN", **kwargs)
    return ResNet(
        BasicStem(in_channels=3, out_channels=64, norm="FrozenBN"), stages, out_features=list(out_features), freeze_at=2
    )


@pytest.fixture(scope="module")
def r50():
    return _r50()


def test_r50_state_dict_equals_detectron2_fpn_bottom_up(r50):
    assert _rows(r50) == _d2_rows("mask_rcnn_fpn", "backbone.bottom_up.")


def test_r50_c4_state_dict_equals_detectron2_c4_backbone():
    # C4: the backbone stops at res4 (res5 lives in the ROI heads).
    r = _r50(out_features=["res4"])
    assert not hasattr(r, "res5")
    assert _rows(r) == _d2_rows("mask_rcnn_c4", "backbone.")
    res5 = nn.Sequential(
        *ResNet.make_stage(
            BottleneckBlock,
            3,
            stride_per_block=[2, 1, 1],
            in_channels=1024,
            out_channels=2048,
            bottleneck_channels=512,
            norm="FrozenBN",
            stride_in_1x1=True,
        )
    )
    assert _rows(res5) == _d2_rows("mask_rcnn_c4", "roi_heads.res5.")


def test_output_shape_and_strides(r50):
    shapes = r50.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {
        "res2": (256, 4),
        "res3": (512, 8),
        "res4": (1024, 16),
        "res5": (2048, 32),
    }
    assert isinstance(r50, Backbone) and r50.size_divisibility == 0


def test_freeze_at_two(r50):
    assert all(not p.requires_grad for p in r50.stem.parameters())
    assert all(not p.requires_grad for p in r50.res2.parameters())
    assert all(p.requires_grad for p in r50.res3.parameters())
    r = ResNet(BasicStem(norm="BN"), ResNet.make_default_stages(18, norm="BN"), out_features=["res5"], freeze_at=3)
    assert isinstance(r.stem.conv1.norm, FrozenBatchNorm2d)
    assert isinstance(r.res3[1].conv2.norm, FrozenBatchNorm2d)
    assert type(r.res4[0].conv1.norm) is nn.BatchNorm2d
    assert not any(p.requires_grad for p in r.res3.parameters())
    assert all(p.requires_grad for p in r.res4.parameters())
    r0 = ResNet(BasicStem(norm="BN"), ResNet.make_default_stages(18, norm="BN"), out_features=["res5"], freeze_at=0)
    assert all(p.requires_grad for p in r0.parameters())


def test_r18_forward_shapes_64px():
    torch.manual_seed(0)
    r = ResNet(
        BasicStem(norm="BN"),
        ResNet.make_default_stages(18, norm="BN"),
        out_features=["stem", "res2", "res3", "res4", "res5"],
    )
    r.eval()
    out = r(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stem": (1, 64, 16, 16),
        "res2": (1, 64, 16, 16),
        "res3": (1, 128, 8, 8),
        "res4": (1, 256, 4, 4),
        "res5": (1, 512, 2, 2),
    }
    assert r.res2[0].shortcut is None and r.res3[0].shortcut is not None  # BasicBlock projects only on channel change
    assert isinstance(r.res2[0], BasicBlock)
    # Only the first block of a stage strides; stride on the 3x3 conv.
    assert r.res3[0].conv1.stride == (2, 2) and r.res3[1].conv1.stride == (1, 1)


def test_classifier_head():
    r = ResNet(
        BasicStem(norm="BN"), ResNet.make_default_stages(18, norm="BN"), num_classes=5, out_features=["linear", "res5"]
    )
    out = r(torch.randn(2, 3, 64, 64))
    assert out["linear"].shape == (2, 5) and out["res5"].shape == (2, 512, 2, 2)
    assert "linear" not in r.output_shape()


def test_stride_in_1x1(r50):
    assert r50.res3[0].conv1.stride == (2, 2) and r50.res3[0].conv2.stride == (1, 1)
    s = ResNet.make_default_stages(50, stride_in_1x1=False, norm="BN")
    assert s[1][0].conv1.stride == (1, 1) and s[1][0].conv2.stride == (2, 2)
    assert s[1][0].shortcut.stride == (2, 2)


def test_dc5_dilation_keeps_stride_16():
    torch.manual_seed(0)
    r = _r50(out_features=["res5"], res5_dilation=2)
    assert r.output_shape()["res5"].stride == 16
    for block in r.res5:
        assert block.conv2.dilation == (2, 2) and block.conv2.padding == (2, 2) and block.stride == 1
    assert r.res4[0].conv2.dilation == (1, 1)
    out = r(torch.randn(1, 3, 64, 64))["res5"]
    assert out.shape == (1, 2048, 4, 4)


def test_resnext_group_shapes():
    s = ResNet.make_default_stages(50, num_groups=32, width_per_group=4, norm="FrozenBN")
    # bottleneck channels 32 * 4 * 2**i: 128, 256, 512, 1024; the 3x3 conv is grouped 32 ways.
    assert [st[0].conv2.weight.shape for st in s] == [
        torch.Size([128, 4, 3, 3]),
        torch.Size([256, 8, 3, 3]),
        torch.Size([512, 16, 3, 3]),
        torch.Size([1024, 32, 3, 3]),
    ]
    assert [st[0].conv2.groups for st in s] == [32] * 4
    assert s[0][0].conv1.weight.shape == (128, 64, 1, 1) and s[3][-1].conv3.weight.shape == (2048, 1024, 1, 1)
    # 32x8d: res2 bottleneck 32 * 8 = 256.
    s8d = ResNet.make_default_stages(50, num_groups=32, width_per_group=8, norm="FrozenBN")
    assert s8d[0][0].conv2.weight.shape == (256, 8, 3, 3) and s8d[3][0].conv2.weight.shape == (2048, 64, 3, 3)


def test_make_default_stages_custom_widths():
    """A half-width ResNet-18 (the CPU quickstart's backbone) and a wider-res2 ResNet-50."""
    r = ResNet(
        BasicStem(out_channels=32, norm="BN"),
        ResNet.make_default_stages(18, norm="BN", stem_out_channels=32, res2_out_channels=32),
        out_features=["res2", "res3", "res4", "res5"],
    )
    out = r(torch.randn(1, 3, 64, 64))
    assert [out[k].shape[1] for k in ("res2", "res3", "res4", "res5")] == [32, 64, 128, 256]
    assert r.res2[0].shortcut is None  # 32 -> 32: no projection
    stages = ResNet.make_default_stages(50, stem_out_channels=32, res2_out_channels=128)
    assert [(st[0].in_channels, st[0].out_channels) for st in stages] == [
        (32, 128),
        (128, 256),
        (256, 512),
        (512, 1024),
    ]


def test_make_default_stages_depths_and_errors():
    assert [len(st) for st in ResNet.make_default_stages(34, norm="BN")] == [3, 4, 6, 3]
    assert len(ResNet.make_default_stages(18, num_groups=1, norm="BN")[0]) == 2  # the default is accepted
    with pytest.raises(ValueError, match="num_groups"):
        ResNet.make_default_stages(18, num_groups=2)
    with pytest.raises(ValueError, match="depth"):
        ResNet.make_default_stages(42)
    with pytest.raises(ValueError, match="res5_dilation"):
        ResNet.make_default_stages(18, res5_dilation=2)


def test_make_stage_per_block_arguments():
    blocks = make_stage(BasicBlock, 3, in_channels=8, out_channels=16, stride_per_block=[2, 1, 1], norm="BN")
    assert [b.stride for b in blocks] == [2, 1, 1]
    assert [b.in_channels for b in blocks] == [8, 16, 16]
    with pytest.raises(ValueError, match="stride_per_block"):
        make_stage(BasicBlock, 3, in_channels=8, out_channels=16, stride_per_block=[2, 1])


def test_resnet_argument_errors():
    stages = ResNet.make_default_stages(18, norm="BN")
    with pytest.raises(ValueError, match="out_features"):
        ResNet(BasicStem(norm="BN"), stages, out_features=["res6"])
    with pytest.raises(TypeError, match="stages"):
        ResNet(BasicStem(norm="BN"), [[nn.Conv2d(64, 64, 1)]])
    r = ResNet(BasicStem(norm="BN"), stages, out_features=["res3"])
    assert not hasattr(r, "res4")  # unused stages are dropped
    with pytest.raises(ValueError, match="N, C, H, W"):
        r(torch.randn(3, 64, 64))


@pytest.mark.parametrize("modulated", [False, True])
def test_deform_bottleneck_block(modulated):
    torch.manual_seed(0)
    kw = dict(bottleneck_channels=8, stride=2, norm="FrozenBN", num_groups=2)
    deform = DeformBottleneckBlock(16, 32, deform_modulated=modulated, deform_num_groups=2, **kw).eval()
    assert deform.conv2_offset.weight.shape == ((27 if modulated else 18) * 2, 8, 3, 3)
    assert set(deform.state_dict()) - set(BottleneckBlock(16, 32, **kw).state_dict()) == {
        "conv2_offset.weight",
        "conv2_offset.bias",
    }
    plain = BottleneckBlock(16, 32, **kw).eval()
    plain.load_state_dict({k: v for k, v in deform.state_dict().items() if not k.startswith("conv2_offset")})
    x = torch.randn(2, 16, 12, 12)
    if not modulated:
        # Zero-initialised offsets: exactly a regular convolution.
        assert torch.allclose(deform(x), plain(x), atol=1e-5)
    else:
        # Zero offsets and mask sigmoid(0) = 0.5: the 3x3 conv output is halved.
        plain.conv2.weight.data *= 0.5
        assert torch.allclose(deform(x), plain(x), atol=1e-5)
    with torch.no_grad():
        deform.conv2_offset.bias.normal_()
    assert not torch.allclose(deform(x), plain(x), atol=1e-3)
    assert deform(x).shape == (2, 32, 6, 6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_r18_cuda_matches_cpu():
    torch.manual_seed(0)
    r = ResNet(
        BasicStem(norm="FrozenBN"), ResNet.make_default_stages(18, norm="FrozenBN"), out_features=["res5"]
    ).eval()
    x = torch.randn(1, 3, 64, 64)
    expected = r(x)["res5"]
    out = r.cuda()(x.cuda())["res5"]
    assert torch.allclose(out.cpu(), expected, atol=1e-3, rtol=1e-3)

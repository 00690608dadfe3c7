import pytest
import torch

from libdet.layers import FrozenBatchNorm2d
from libdet.modeling.backbone import RegNet
from libdet.modeling.backbone.regnet import ResBottleneckBlock, ResStem, SimpleStem, generate_regnet_parameters


def test_generate_regnet_parameters_tiny_by_hand():
    # widths 8 + 8j -> k = round(log2(w / 8)) = [0, 1, 2, 2] -> [8, 16, 32, 32]
    ws, ds, num_stages, total_stages, ws_all, ws_cont = generate_regnet_parameters(8.0, 8, 2.0, 4)
    assert ws == [8, 16, 32] and ds == [1, 1, 2] and num_stages == 3 and total_stages == 3
    assert ws_all == [8, 16, 32, 32] and ws_cont == [8.0, 16.0, 24.0, 32.0]
    with pytest.raises(ValueError, match="w_0"):
        generate_regnet_parameters(8.0, 12, 2.0, 4)


# Published RegNet-4GF settings (detectron2 configs / pycls); widths, depths and the ImageNet parameter count
# (backbone + 1000-way classifier) of "Designing Network Design Spaces": X-4.0GF 22.1M, Y-4.0GF 20.6M.
@pytest.mark.parametrize(
    "depth,w_a,w_0,w_m,group_width,se_ratio,widths,depths,params_m",
    [
        (23, 38.65, 96, 2.43, 40, 0.0, [80, 240, 560, 1360], [2, 5, 14, 2], 22.1),
        (22, 31.41, 96, 2.24, 64, 0.25, [128, 192, 512, 1088], [2, 6, 12, 2], 20.6),
    ],
)
def test_regnet_4gf_structure(depth, w_a, w_0, w_m, group_width, se_ratio, widths, depths, params_m):
    m = RegNet(
        stem_class=SimpleStem,
        stem_width=32,
        block_class=ResBottleneckBlock,
        depth=depth,
        w_a=w_a,
        w_0=w_0,
        w_m=w_m,
        group_width=group_width,
        se_ratio=se_ratio,
        freeze_at=2,
        norm="FrozenBN",
        out_features=["s1", "s2", "s3", "s4"],
    )
    shapes = m.output_shape()
    assert [shapes[f"s{i}"].channels for i in range(1, 5)] == widths
    assert [shapes[f"s{i}"].stride for i in range(1, 5)] == [4, 8, 16, 32]
    assert [len(list(getattr(m, f"s{i}").children())) for i in range(1, 5)] == depths
    n = sum(p.numel() for p in m.parameters()) + sum(
        b.numel() for n_, b in m.named_buffers() if n_.endswith(("weight", "bias"))
    )
    assert round((n + widths[-1] * 1000 + 1000) / 1e6, 1) == params_m
    keys = set(m.state_dict())
    assert {
        "stem.conv.weight",
        "stem.bn.running_var",
        "s1.b1.proj.weight",
        "s1.b1.bn.weight",
        "s1.b1.f.a.weight",
        "s1.b1.f.b.weight",
        "s1.b1.f.c_bn.bias",
        "s4.b2.f.c.weight",
    } <= keys
    assert ("s1.b1.f.se.f_ex.0.weight" in keys) == (se_ratio > 0)
    assert "s1.b2.proj.weight" not in keys
    # group width: the 3x3 conv of s2 has width / group_width groups
    assert m.s2.b1.f.b.groups == widths[1] // group_width


def _tiny(**kw):
    args = dict(
        stem_class=SimpleStem,
        stem_width=8,
        block_class=ResBottleneckBlock,
        depth=4,
        w_a=8.0,
        w_0=8,
        w_m=2.0,
        group_width=8,
        out_features=["stem", "s1", "s2", "s3"],
    )
    args.update(kw)
    return RegNet(**args)


@pytest.mark.parametrize("stem_class,stem_stride", [(SimpleStem, 2), (ResStem, 4)])
def test_tiny_regnet_forward_shapes(stem_class, stem_stride):
    torch.manual_seed(0)
    m = _tiny(stem_class=stem_class, se_ratio=0.25).eval()
    out = m(torch.randn(2, 3, 64, 64))
    s = stem_stride
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stem": (2, 8, 64 // s, 64 // s),
        "s1": (2, 8, 32 // s, 32 // s),
        "s2": (2, 16, 16 // s, 16 // s),
        "s3": (2, 32, 8 // s, 8 // s),
    }
    assert {k: v.stride for k, v in m.output_shape().items()} == {"stem": s, "s1": 2 * s, "s2": 4 * s, "s3": 8 * s}


def test_regnet_freeze_at():
    m = _tiny(freeze_at=2)
    assert isinstance(m.stem.bn, FrozenBatchNorm2d) and isinstance(m.s1.b1.f.a_bn, FrozenBatchNorm2d)
    assert not any(p.requires_grad for p in m.s1.parameters())
    assert type(m.s2.b1.f.a_bn) is torch.nn.BatchNorm2d and all(p.requires_grad for p in m.s2.parameters())


def test_regnet_bad_out_feature():
    with pytest.raises(ValueError, match="out_features"):
        _tiny(out_features=["s5"])

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from libdet.layers import ShapeSpec
from libdet.modeling.backbone import FPN, Backbone, BasicStem, ResNet
from libdet.modeling.backbone.fpn import LastLevelMaxPool, LastLevelP6P7

# detectron2's state_dict key tables, copied into the repository (key<TAB>shape per line).
D2_KEYS = Path(__file__).resolve().parent.parent / "d2_keys"


def _d2_rows(name, prefix="backbone."):
    rows = []
    for line in (D2_KEYS / f"{name}.txt").read_text().splitlines():
        key, shape = line.split("\t")
        if key.startswith(prefix):
            rows.append((key[len(prefix) :], shape))
    return rows


def _rows(module):
    return [(k, str(list(v.shape))) for k, v in module.state_dict().items()]


def _r50(out_features):
    stages = ResNet.make_default_stages(50, stride_in_1x1=True, norm="FrozenBN")
    return ResNet(
        BasicStem(in_channels=3, out_channels=64, norm="FrozenBN"), stages, out_features=out_features, freeze_at=2
    )


def test_mask_rcnn_fpn_backbone_keys_in_detectron2_order():
    fpn = FPN(
        bottom_up=_r50(["res2", "res3", "res4", "res5"]),
        in_features=["res2", "res3", "res4", "res5"],
        out_channels=256,
        top_block=LastLevelMaxPool(),
    )
    assert _rows(fpn) == _d2_rows("mask_rcnn_fpn")
    assert {k: v.stride for k, v in fpn.output_shape().items()} == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    assert fpn.size_divisibility == 32


def test_retinanet_backbone_keys_in_detectron2_order():
    fpn = FPN(
        bottom_up=_r50(["res3", "res4", "res5"]),
        in_features=["res3", "res4", "res5"],
        out_channels=256,
        top_block=LastLevelP6P7(2048, 256, in_feature="res5"),
    )
    assert _rows(fpn) == _d2_rows("retinanet")
    assert list(fpn.output_shape()) == ["p3", "p4", "p5", "p6", "p7"]
    assert fpn.output_shape()["p7"] == ShapeSpec(channels=256, stride=128)


class _FixedBackbone(Backbone):
    """Returns given feature maps r3, r4, r5 (strides 8, 16, 32) regardless of the input."""

    def __init__(self, feats):
        super().__init__()
        self.feats = feats
        self._out_features = ["r3", "r4", "r5"]
        self._out_feature_channels = {k: v.shape[1] for k, v in feats.items()}
        self._out_feature_strides = {"r3": 8, "r4": 16, "r5": 32}

    def forward(self, x):
        return dict(self.feats)


def _fixed():
    g = torch.Generator().manual_seed(0)
    return _FixedBackbone(
        {
            "r3": torch.randn(1, 3, 8, 8, generator=g),
            "r4": torch.randn(1, 5, 4, 4, generator=g),
            "r5": torch.randn(1, 7, 2, 2, generator=g),
        }
    )


@pytest.mark.parametrize("fuse_type", ["sum", "avg"])
def test_top_down_computation_by_hand(fuse_type):
    bb = _fixed()
    fpn = FPN(
        bottom_up=bb, in_features=["r3", "r4", "r5"], out_channels=4, fuse_type=fuse_type, top_block=LastLevelMaxPool()
    )
    out = fpn(torch.zeros(1, 3, 64, 64))
    c = bb.feats
    up = lambda t: F.interpolate(t, scale_factor=2.0, mode="nearest")  # noqa: E731
    fuse = (lambda a, b: a + b) if fuse_type == "sum" else (lambda a, b: (a + b) / 2)  # noqa: E731
    t5 = fpn.fpn_lateral5(c["r5"])
    t4 = fuse(fpn.fpn_lateral4(c["r4"]), up(t5))
    t3 = fuse(fpn.fpn_lateral3(c["r3"]), up(t4))
    assert list(out) == ["p3", "p4", "p5", "p6"]
    assert torch.allclose(out["p5"], fpn.fpn_output5(t5), atol=1e-6)
    assert torch.allclose(out["p4"], fpn.fpn_output4(t4), atol=1e-6)
    assert torch.allclose(out["p3"], fpn.fpn_output3(t3), atol=1e-6)
    assert torch.equal(out["p6"], out["p5"][:, :, ::2, ::2])
    assert {k: v.stride for k, v in fpn.output_shape().items()} == {"p3": 8, "p4": 16, "p5": 32, "p6": 64}


def test_p6p7_from_pyramid_level_and_from_bottom_up():
    bb = _fixed()
    fpn = FPN(bottom_up=bb, in_features=["r4", "r5"], out_channels=4, top_block=LastLevelP6P7(4, 4, in_feature="p5"))
    out = fpn(torch.zeros(1, 3, 64, 64))
    assert list(out) == ["p4", "p5", "p6", "p7"]
    assert [tuple(v.shape) for v in out.values()] == [(1, 4, 4, 4), (1, 4, 2, 2), (1, 4, 1, 1), (1, 4, 1, 1)]
    p6 = fpn.top_block.p6(out["p5"])
    assert torch.allclose(out["p6"], p6) and torch.allclose(out["p7"], fpn.top_block.p7(F.relu(p6)))
    fpn = FPN(bottom_up=bb, in_features=["r4", "r5"], out_channels=4, top_block=LastLevelP6P7(7, 4, in_feature="r5"))
    out = fpn(torch.zeros(1, 3, 64, 64))
    assert torch.allclose(out["p6"], fpn.top_block.p6(bb.feats["r5"]))
    # A top block reading a level it produces itself is an error that names the key.
    fpn = FPN(bottom_up=bb, in_features=["r3", "r4"], out_channels=4, top_block=LastLevelMaxPool())
    with pytest.raises(ValueError, match="in_feature"):
        fpn(torch.zeros(1, 3, 64, 64))


def test_norm_and_padding_constraints():
    fpn = FPN(bottom_up=_fixed(), in_features=["r3", "r4"], out_channels=32, norm="GN", square_pad=64)
    keys = set(fpn.state_dict())
    assert "fpn_lateral3.norm.weight" in keys and "fpn_lateral3.bias" not in keys
    assert fpn.padding_constraints == {"square_size": 64}
    assert fpn.size_divisibility == 16


def test_small_resnet_fpn_forward_64px():
    torch.manual_seed(0)
    r = ResNet(
        BasicStem(norm="BN"), ResNet.make_default_stages(18, norm="BN"), out_features=["res2", "res3", "res4", "res5"]
    )
    fpn = FPN(
        bottom_up=r, in_features=["res2", "res3", "res4", "res5"], out_channels=8, top_block=LastLevelMaxPool()
    ).eval()
    out = fpn(torch.randn(2, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "p2": (2, 8, 16, 16),
        "p3": (2, 8, 8, 8),
        "p4": (2, 8, 4, 4),
        "p5": (2, 8, 2, 2),
        "p6": (2, 8, 1, 1),
    }


def test_fpn_argument_errors():
    bb = _fixed()
    with pytest.raises(ValueError, match="double"):
        FPN(bottom_up=bb, in_features=["r3", "r5"], out_channels=4)
    with pytest.raises(ValueError, match="not outputs"):
        FPN(bottom_up=bb, in_features=["r6"], out_channels=4)
    with pytest.raises(ValueError, match="fuse_type"):
        FPN(bottom_up=bb, in_features=["r3"], out_channels=4, fuse_type="max")
    with pytest.raises(TypeError, match="bottom_up"):
        FPN(bottom_up=torch.nn.Conv2d(3, 3, 1), in_features=["r3"], out_channels=4)
    with pytest.raises(TypeError):
        Backbone()  # abstract


def test_same_outputs_as_torchvision_fpn():
    # torchvision's independent FPN (sum fusion, nearest upsampling, max-pool p6) with the same weights.
    from collections import OrderedDict

    from torchvision.ops import FeaturePyramidNetwork
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool as TVLastLevelMaxPool

    bb = _fixed()
    fpn = FPN(bottom_up=bb, in_features=["r3", "r4", "r5"], out_channels=4, top_block=LastLevelMaxPool())
    tv = FeaturePyramidNetwork([3, 5, 7], 4, extra_blocks=TVLastLevelMaxPool())
    sd = {}
    for i, stage in enumerate((3, 4, 5)):
        for kind, tv_name in (("lateral", "inner_blocks"), ("output", "layer_blocks")):
            for p in ("weight", "bias"):
                sd[f"{tv_name}.{i}.0.{p}"] = getattr(fpn, f"fpn_{kind}{stage}").state_dict()[p]
    tv.load_state_dict(sd, strict=True)
    expected = tv(OrderedDict(bb.feats))
    out = fpn(torch.zeros(1, 3, 64, 64))
    for ours, theirs in zip(out.values(), expected.values()):
        assert torch.allclose(ours, theirs, atol=1e-6)
    assert len(out) == len(expected) == 4

import pytest
import torch

from libdet.layers.memory_format import to_backbone_memory_format
from libdet.modeling.backbone import BasicStem, ResNet


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def test_memory_format_choice():
    x = torch.randn(2, 3, 8, 10)
    assert _is_channels_last(to_backbone_memory_format(x, None))  # CPU default
    assert _is_channels_last(to_backbone_memory_format(x, True))
    assert to_backbone_memory_format(x, False) is x
    assert to_backbone_memory_format(x[0], True).shape == (3, 8, 10)  # not an image batch: unchanged
    assert torch.equal(to_backbone_memory_format(x, True), x)


@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.trace` is deprecated:FutureWarning")
def test_tracing_and_export_keep_the_layout():
    class Probe(torch.nn.Module):
        def forward(self, x):
            return to_backbone_memory_format(x, True) * 1

    x = torch.randn(2, 3, 8, 10)
    traced = torch.jit.trace(Probe(), x)
    assert "contiguous" not in str(traced.graph)
    exported = torch.export.export(Probe(), (x,))
    assert not any("clone" in str(node.target) or "contiguous" in str(node.target) for node in exported.graph.nodes)


def _resnet(channels_last):
    return ResNet(
        BasicStem(in_channels=3, out_channels=8, norm="BN"),
        ResNet.make_default_stages(18, norm="BN", stem_out_channels=8, res2_out_channels=8),
        out_features=["res2", "res5"],
        channels_last=channels_last,
    )


def _regnet(channels_last):
    from tests.modeling.backbone.test_regnet import _tiny

    return _tiny(out_features=["s1", "s3"], channels_last=channels_last)


def _mobilenet(channels_last):
    from libdet.modeling.backbone import MobileNetV3

    return MobileNetV3(arch="small", width_mult=0.25, out_features=["s2", "s4"], channels_last=channels_last)


@pytest.mark.parametrize("build", [_resnet, _regnet, _mobilenet])
@pytest.mark.parametrize("channels_last", [None, True, False])
def test_backbone_memory_format(build, channels_last):
    """Every CNN backbone passes ``channels_last`` through: its outputs are channels-last unless it is False,
    with the same values as in NCHW."""
    torch.manual_seed(0)
    backbone = build(channels_last).eval()
    x = torch.randn(2, 3, 64, 48)
    outputs = backbone(x)
    assert all(_is_channels_last(v) == (channels_last is not False) for v in outputs.values())
    backbone.channels_last = False
    expected = backbone(x)
    for name, value in outputs.items():
        torch.testing.assert_close(value, expected[name], atol=1e-5, rtol=1e-4)

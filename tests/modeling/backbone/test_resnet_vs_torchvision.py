"""Forward equivalence with torchvision's independent ResNet implementation (same architecture when the
stride sits in the 3x3 conv, ``stride_in_1x1=False``), after renaming torchvision's parameters."""

import re

import pytest
import torch
import torchvision

from libdet.modeling.backbone import BasicStem, ResNet


def _rename(tv_key):
    if tv_key.startswith("conv1."):
        return "stem." + tv_key
    if tv_key.startswith("bn1."):
        return "stem.conv1.norm." + tv_key[len("bn1.") :]
    m = re.match(r"layer(\d)\.(\d+)\.(.*)", tv_key)
    stage, block, rest = int(m.group(1)) + 1, m.group(2), m.group(3)
    rest = re.sub(r"^bn(\d)\.", r"conv\1.norm.", rest)
    rest = rest.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
    return f"res{stage}.{block}.{rest}"


def _tv_features(tv, x):
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    out = {}
    for i in range(1, 5):
        x = getattr(tv, f"layer{i}")(x)
        out[f"res{i + 1}"] = x
    return out


@pytest.mark.parametrize(
    "tv_builder,depth,kwargs",
    [
        (torchvision.models.resnet18, 18, {}),
        (torchvision.models.resnext50_32x4d, 50, {"num_groups": 32, "width_per_group": 4, "stride_in_1x1": False}),
    ],
)
def test_same_outputs_as_torchvision(tv_builder, depth, kwargs):
    torch.manual_seed(0)
    tv = tv_builder(weights=None).eval()
    with torch.no_grad():  # non-trivial normalisation statistics
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    outs = ["res2", "res3", "res4", "res5"]
    ours = ResNet(
        BasicStem(norm="BN"), ResNet.make_default_stages(depth, norm="BN", **kwargs), out_features=outs
    ).eval()
    sd = {_rename(k): v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    ours.load_state_dict(sd, strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected, got = _tv_features(tv, x), ours(x)
    for name in outs:
        assert torch.allclose(got[name], expected[name], atol=1e-4, rtol=1e-4), name

"""MobileNetV3 backbones and the efficient 320-px configs (``*_fpn_320*``: MobileNetV3, RegNetX-400MF): shapes and
strides, torchvision weight names, and each config's model trains two iterations and infers on CPU on tiny
synthetic images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from libdet.checkpoint import DetectionCheckpointer
from libdet.config import LazyConfig, instantiate
from libdet.layers import FrozenBatchNorm2d
from libdet.modeling.backbone import FPN, LastLevelMaxPool, MobileNetV3, RegNet
from libdet.structures import Instances

from ._tiny_models import single_thread, synthetic_image  # noqa: F401 (pytest fixture)

torchvision_models = pytest.importorskip("torchvision.models")

REPO_ROOT = Path(__file__).resolve().parents[2]
EFFICIENT_CONFIGS = sorted(
    str(p.relative_to(REPO_ROOT))
    for pattern in ("configs/COCO/*_fpn_320*.py", "configs/shapes/*_fpn_320*.py")
    for p in REPO_ROOT.glob(pattern)
)
ALL_STAGES = ["stem", "s1", "s2", "s3", "s4"]
# (stride, channels) of each stage of torchvision's MobileNetV3 at width 1.0 (Tables 1 and 2 of the paper; "s4" is
# the last 1x1 expansion conv).
EXPECTED = {
    "large": {"stem": (2, 16), "s1": (4, 24), "s2": (8, 40), "s3": (16, 112), "s4": (32, 960)},
    "small": {"stem": (2, 16), "s1": (4, 16), "s2": (8, 24), "s3": (16, 48), "s4": (32, 576)},
}


def _randomize_bn_statistics(module: nn.Module, seed: int) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters, so loading them is observable."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("arch", ["large", "small"])
def test_output_shapes_and_strides(arch, single_thread):  # noqa: F811
    backbone = MobileNetV3(arch=arch, out_features=ALL_STAGES).eval()
    shapes = backbone.output_shape()
    assert {k: (v.stride, v.channels) for k, v in shapes.items()} == EXPECTED[arch]
    height, width = 70, 100  # not multiples of 32: every stride-2 conv rounds up
    with torch.no_grad():
        outputs = backbone(torch.randn(2, 3, height, width))
    assert list(outputs) == ALL_STAGES
    for name, y in outputs.items():
        stride, channels = EXPECTED[arch][name]
        expected_h, expected_w = height, width
        for _ in range(stride.bit_length() - 1):
            expected_h, expected_w = (expected_h + 1) // 2, (expected_w + 1) // 2
        assert tuple(y.shape) == (2, channels, expected_h, expected_w), name


def test_fpn_on_mobilenet(single_thread):  # noqa: F811
    bottom_up = MobileNetV3(arch="small", out_features=["s2", "s3", "s4"])
    fpn = FPN(bottom_up=bottom_up, in_features=["s2", "s3", "s4"], out_channels=32, top_block=LastLevelMaxPool())
    assert {k: v.stride for k, v in fpn.output_shape().items()} == {"p3": 8, "p4": 16, "p5": 32, "p6": 64}
    outputs = fpn(torch.randn(1, 3, 128, 96))
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        "p3": (1, 32, 16, 12),
        "p4": (1, 32, 8, 6),
        "p5": (1, 32, 4, 3),
        "p6": (1, 32, 2, 2),
    }


def test_only_needed_blocks_run():
    backbone = MobileNetV3(arch="small", out_features=["s2"])
    calls = []
    for index, block in enumerate(backbone.features):
        block.register_forward_hook(lambda *_, index=index: calls.append(index))
    backbone(torch.randn(1, 3, 64, 64))
    assert calls == list(range(backbone._stage_end["s2"] + 1))


@pytest.mark.parametrize("arch", ["large", "small"])
@pytest.mark.parametrize("norm", ["BN", "FrozenBN"])
def test_torchvision_state_dict_loads(arch, norm, tmp_path, single_thread):  # noqa: F811
    """A state dict saved from torchvision's classifier loads by name and reproduces torchvision's features."""
    torch.manual_seed(0)
    build = torchvision_models.mobilenet_v3_large if arch == "large" else torchvision_models.mobilenet_v3_small
    reference = build()
    _randomize_bn_statistics(reference, seed=1)
    reference.eval()
    path = tmp_path / "mobilenet_v3.pth"
    torch.save(reference.state_dict(), path)

    torch.manual_seed(123)  # a different initialisation: only the loaded weights can make the outputs agree
    backbone = MobileNetV3(arch=arch, norm=norm, out_features=["s4"], weights=str(path)).eval()
    if norm == "FrozenBN":
        assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
        assert any(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules())
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        expected = reference.features(x)
        actual = backbone(x)["s4"]
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
    # parameter names equal torchvision's
    own = {k for k in backbone.state_dict() if not k.endswith("num_batches_tracked")}
    theirs = {k for k in reference.state_dict() if k.startswith("features.") and not k.endswith("num_batches_tracked")}
    assert own == theirs


def test_torchvision_weights_load_into_detector_config(tmp_path, single_thread):  # noqa: F811
    """The COCO configs' ``train.init_checkpoint`` route: a torchvision file with suffix matching fills the backbone."""
    torch.manual_seed(0)
    reference = torchvision_models.mobilenet_v3_large()
    _randomize_bn_statistics(reference, seed=2)
    path = tmp_path / "mobilenet_v3_large.pth"
    torch.save(reference.state_dict(), path)
    cfg = LazyConfig.load(str(REPO_ROOT / "configs/COCO/faster_rcnn_mnv3_fpn_320.py"))
    assert cfg.train.init_checkpoint.endswith("?matching_heuristics=True")
    model = instantiate(cfg.model)
    DetectionCheckpointer(model).load(f"{path}?matching_heuristics=True", allow_partial=True)
    loaded = model.backbone.bottom_up.state_dict()
    for key, value in reference.state_dict().items():
        if key.startswith("features.") and not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(loaded[key], value, msg=key)


def test_bad_weights_are_named(tmp_path):
    path = tmp_path / "small.pth"
    torch.save(torchvision_models.mobilenet_v3_small().state_dict(), path)
    with pytest.raises(ValueError, match="does not fit MobileNetV3-large"):
        MobileNetV3(arch="large", weights=str(path))
    torch.save({"layer.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="no 'features"):
        MobileNetV3(arch="small", weights=str(path))
    with pytest.raises(ValueError, match="neither a file nor a torchvision weights name"):
        MobileNetV3(arch="small", weights="NO_SUCH_WEIGHTS")
    with pytest.raises(ValueError, match="`arch`"):
        MobileNetV3(arch="medium")
    with pytest.raises(ValueError, match="not outputs"):
        MobileNetV3(arch="small", out_features=["res5"])


def test_freeze_at():
    backbone = MobileNetV3(arch="small", out_features=["s4"], freeze_at=2)  # stem and s1
    last_frozen = backbone._stage_end["s1"]
    for index, block in enumerate(backbone.features):
        frozen = index <= last_frozen
        assert all(p.requires_grad != frozen for p in block.parameters()), index
        has_bn = any(isinstance(m, nn.BatchNorm2d) for m in block.modules())
        assert has_bn != frozen, index


def _training_batch():
    return [
        synthetic_image(0, 96, 128, boxes=[[10, 12, 50, 60], [60, 30, 120, 90]], classes=[0, 1]),
        synthetic_image(1, 128, 96, boxes=[[20, 20, 80, 70]], classes=[2]),
    ]


@pytest.mark.parametrize("config_file", EFFICIENT_CONFIGS)
def test_efficient_config_trains_and_infers(config_file, single_thread):  # noqa: F811
    """Each efficient config's model (as written) takes two optimizer steps with its own optimizer, then infers."""
    assert len(EFFICIENT_CONFIGS) >= 10, EFFICIENT_CONFIGS  # the 5 COCO configs and their shapes variants
    cfg = LazyConfig.load(str(REPO_ROOT / config_file))
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    assert isinstance(model.backbone.bottom_up, (MobileNetV3, RegNet))
    model.train()
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    for group in optimizer.param_groups:
        group["lr"] = min(group["lr"], 1e-3)  # no warmup here: keep the two steps small
    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    batch = _training_batch()
    for _ in range(2):
        losses = model(batch)
        assert losses and all(torch.isfinite(v) for v in losses.values()), losses
        if "mask" in config_file:
            assert "loss_mask" in losses
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainable))

    model.eval()
    inputs = [{"image": b["image"], "height": 64, "width": 80} for b in batch]
    with torch.no_grad():
        outputs = model(inputs)
    assert len(outputs) == 2
    for output in outputs:
        instances = output["instances"]
        assert isinstance(instances, Instances) and instances.image_size == (64, 80)
        assert instances.pred_boxes.tensor.shape[1] == 4
        assert torch.isfinite(instances.scores).all()
        if "mask" in config_file:
            assert instances.pred_masks.shape[1:] == (64, 80)

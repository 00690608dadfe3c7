"""optimize_for_inference keeps a detector's outputs (float32 options exactly up to rounding, bf16 closely)."""

import copy
from pathlib import Path

import pytest
import torch

from libdet.config import LazyConfig, instantiate
from libdet.engine.fast_mode import fold_conv_batchnorm, optimize_for_inference
from libdet.layers import Conv2d, FrozenBatchNorm2d, get_norm

CONFIG = Path(__file__).resolve().parents[2] / "configs/shapes/mask_rcnn_cpu.py"


def _randomise_norms(model: torch.nn.Module) -> None:
    """Give every (Frozen)BatchNorm trained-looking statistics (they are the identity when built)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (FrozenBatchNorm2d, torch.nn.BatchNorm2d)):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)


@pytest.mark.parametrize("norm", ["FrozenBN", "BN"])
def test_fold_conv_batchnorm(norm):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        Conv2d(3, 8, 3, padding=1, bias=False, norm=get_norm(norm, 8)),
        Conv2d(8, 4, 1, bias=True, norm=get_norm(norm, 4), activation=torch.relu),
    ).eval()
    _randomise_norms(net)
    x = torch.randn(2, 3, 10, 12)
    expected = net(x)
    assert fold_conv_batchnorm(net) == 2
    assert all(m.norm is None for m in net)
    torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)


def test_bn_in_training_mode_is_not_folded():
    net = torch.nn.Sequential(Conv2d(3, 4, 1, norm=get_norm("BN", 4))).train()
    assert fold_conv_batchnorm(net) == 0


def test_bad_bf16_argument():
    with pytest.raises(ValueError, match="bf16"):
        optimize_for_inference(torch.nn.Linear(2, 2), bf16="yes")


@pytest.fixture(scope="module")
def detector():
    cfg = LazyConfig.load(str(CONFIG))
    cfg.model.roi_heads.box_predictor.test_score_thresh = 0.0  # random weights: keep every detection
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    _randomise_norms(model)
    with torch.no_grad():  # spread the class scores so that the detections' order is stable
        model.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.2)
    image = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8).float()
    return model, [{"image": image, "height": 96, "width": 128}]


@torch.no_grad()
def test_float32_options_keep_the_outputs(detector):
    model, inputs = detector
    expected = model(inputs)[0]["instances"]
    fast = optimize_for_inference(copy.deepcopy(model), bf16=False, channels_last=True, compile=False)
    out = fast(inputs)[0]["instances"]
    assert len(out) == len(expected) > 0
    torch.testing.assert_close(out.pred_boxes.tensor, expected.pred_boxes.tensor, rtol=0, atol=1e-3)
    torch.testing.assert_close(out.scores, expected.scores, rtol=0, atol=1e-5)
    assert torch.equal(out.pred_classes, expected.pred_classes)
    assert (out.pred_masks != expected.pred_masks).float().mean() < 1e-3


@torch.no_grad()
def test_bf16_blocks_hand_back_float32(detector):
    model, inputs = detector
    images = model.preprocess_image(inputs).tensor
    expected = model.backbone(images)
    fast = optimize_for_inference(copy.deepcopy(model), bf16=True, channels_last=False, compile=False)
    features = fast.backbone(images)
    for name, feature in features.items():
        assert feature.dtype == torch.float32
        err = (feature - expected[name]).norm() / expected[name].norm()
        assert 0 < err < 0.05, name  # computed in bf16: close, not equal
    out = fast(inputs)[0]["instances"]
    assert out.pred_boxes.tensor.dtype == out.scores.dtype == torch.float32
    assert len(out) > 0 and torch.isfinite(out.pred_boxes.tensor).all()


def test_fold_conv_batchnorm_in_torchvision_blocks():
    """A BatchNorm right after an ``nn.Conv2d`` in an ``nn.Sequential`` (torchvision's Conv-BN-activation)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU()
    ).eval()
    _randomise_norms(net)
    x = torch.randn(2, 3, 10, 12)
    expected = net(x)
    assert fold_conv_batchnorm(net) == 1
    assert isinstance(net[1], torch.nn.Identity)
    torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)

"""SemSegFPNHead (structure, loss against a hand-written cross-entropy with ignored pixels, output size) and
SemanticSegmentor end to end on the tiny semantic FPN config."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from libdet.config import instantiate
from libdet.layers import ShapeSpec
from libdet.modeling.meta_arch.semantic_seg import SemanticSegmentor, SemSegFPNHead

from ._tiny_models import (  # noqa: F401 (single_thread is a fixture)
    NUM_SEM_CLASSES,
    mapped_example_with_crowd,
    single_thread,
    tiny_semantic_fpn,
)


def _head(**kwargs):
    defaults = dict(num_classes=3, conv_dims=32, common_stride=4, norm="GN", ignore_value=255)
    defaults.update(kwargs)
    shapes = {"p4": ShapeSpec(channels=8, stride=16), "p2": ShapeSpec(channels=8, stride=4)}
    return SemSegFPNHead(shapes, **defaults)


def _features(n=2, h=32, w=48):
    g = torch.Generator().manual_seed(0)
    return {
        "p2": torch.randn(n, 8, h // 4, w // 4, generator=g),
        "p4": torch.randn(n, 8, h // 16, w // 16, generator=g),
    }


def test_head_structure_follows_strides():
    head = _head()
    assert head.in_features == ["p2", "p4"]  # sorted by stride
    keys = list(head.state_dict().keys())
    assert keys == [
        "p2.0.weight", "p2.0.norm.weight", "p2.0.norm.bias",
        "p4.0.weight", "p4.0.norm.weight", "p4.0.norm.bias",
        "p4.2.weight", "p4.2.norm.weight", "p4.2.norm.bias",
        "predictor.weight", "predictor.bias",
    ]  # fmt: skip
    assert isinstance(head.p4[1], torch.nn.Upsample) and len(head.p2) == 1
    plain = _head(norm=None)
    assert "p2.0.bias" in plain.state_dict() and plain.p2[0].norm is None


def _manual_ce(logits, targets, ignore):
    """Mean over non-ignored pixels of -log softmax(logits)[target], written out."""
    total, count = 0.0, 0
    log_p = logits.log_softmax(dim=1)
    n, _, h, w = logits.shape
    for i in range(n):
        for y in range(h):
            for x in range(w):
                t = int(targets[i, y, x])
                if t == ignore:
                    continue
                total -= float(log_p[i, t, y, x])
                count += 1
    return total / count


def test_loss_is_cross_entropy_over_non_ignored_pixels():
    head = _head(loss_weight=0.5).train()
    features = _features(n=1, h=32, w=32)
    g = torch.Generator().manual_seed(1)
    targets = torch.randint(0, 3, (1, 32, 32), generator=g)
    targets[0, :5] = 255
    _, losses = head(features, targets)
    logits = F.interpolate(head.layers(features), scale_factor=4, mode="bilinear", align_corners=False)
    expected = _manual_ce(logits.detach(), targets, 255) * 0.5
    assert set(losses) == {"loss_sem_seg"}
    assert losses["loss_sem_seg"].item() == pytest.approx(expected, rel=1e-5)


def test_all_ignored_targets_give_a_zero_connected_loss():
    head = _head().train()
    _, losses = head(_features(n=1, h=32, w=32), torch.full((1, 32, 32), 255))
    assert losses["loss_sem_seg"].item() == 0.0 and losses["loss_sem_seg"].requires_grad
    losses["loss_sem_seg"].backward()
    assert head.predictor.weight.grad is not None


def test_head_errors_name_the_problem():
    head = _head().train()
    with pytest.raises(ValueError, match="needs `targets`"):
        head(_features(), None)
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        head(_features(n=1, h=32, w=32), torch.full((1, 32, 32), 7))
    with pytest.raises(ValueError, match=r"\['p4'\] are missing"):
        head.layers({"p2": torch.zeros(1, 8, 4, 4)})
    with pytest.raises(ValueError, match="finer than common_stride"):
        SemSegFPNHead({"p1": ShapeSpec(channels=8, stride=2)}, num_classes=3, conv_dims=8, common_stride=4)


def test_inference_output_is_at_input_resolution():
    head = _head().eval()
    scores, losses = head(_features(n=2, h=32, w=48))
    assert scores.shape == (2, 3, 32, 48) and losses == {}


@pytest.mark.usefixtures("single_thread")
def test_tiny_semantic_fpn_trains_and_infers(tmp_path):
    torch.manual_seed(0)
    model = instantiate(tiny_semantic_fpn())
    assert isinstance(model, SemanticSegmentor)
    example = mapped_example_with_crowd(tmp_path)
    other = {"image": torch.rand(3, 50, 70) * 255, "sem_seg": torch.full((50, 70), 255, dtype=torch.int64)}
    model.train()
    losses = model([example, other])
    assert set(losses) == {"loss_sem_seg"} and torch.isfinite(losses["loss_sem_seg"])
    losses["loss_sem_seg"].backward()
    assert model.sem_seg_head.predictor.weight.grad.abs().sum() > 0

    with pytest.raises(ValueError, match=r"batched_inputs\[0\]\['sem_seg'\]"):
        model([{"image": other["image"]}])

    model.eval()
    with torch.no_grad():
        outputs = model([{"image": example["image"], "height": 32, "width": 48}, {"image": other["image"]}])
    assert [tuple(o["sem_seg"].shape) for o in outputs] == [(NUM_SEM_CLASSES, 32, 48), (NUM_SEM_CLASSES, 50, 70)]
    assert all(torch.isfinite(o["sem_seg"]).all() for o in outputs)

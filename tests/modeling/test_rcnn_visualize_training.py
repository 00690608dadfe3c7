"""GeneralizedRCNN(vis_period=...): GT boxes | top proposals put into the event storage every vis_period iterations."""

from __future__ import annotations

import pytest
import torch

from libdet.config import instantiate
from libdet.modeling.meta_arch import GeneralizedRCNN
from libdet.structures import Boxes, Instances
from libdet.utils.events import EventStorage

from ._tiny_models import single_thread, synthetic_image, tiny_mask_rcnn_fpn  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")

VIS_NAME = "Left: GT bounding boxes;  Right: Predicted proposals"
H, W = 64, 96


def _model(vis_period, input_format="BGR"):
    torch.manual_seed(0)
    cfg = tiny_mask_rcnn_fpn(mask=False)
    cfg.vis_period = vis_period
    cfg.input_format = input_format
    return instantiate(cfg).train()


def _batch():
    return [
        synthetic_image(0, H, W, [[8, 8, 40, 48]], [0]),
        synthetic_image(1, 64, 64, [[10, 12, 50, 40]], [1]),
    ]


def test_puts_one_image_gt_left_proposals_right():
    model = _model(vis_period=1)
    batch = _batch()
    with EventStorage(0) as storage:
        losses = model(batch)
        assert all(torch.isfinite(v) for v in losses.values())
        assert len(storage.vis_data) == 1  # only the first image of the batch
        name, img, it = storage.vis_data[0]
    assert name == VIS_NAME and it == 0
    assert img.shape == (3, H, 2 * W) and img.dtype == torch.float32
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    # the input image, converted BGR -> RGB and scaled to [0, 1]
    rgb = batch[0]["image"].flip(0).round().clamp(0, 255) / 255.0
    left, right = img[:, :, :W], img[:, :, W:]
    # the GT box (x 8..40, y 8..48) is outlined: pixels on its edge change, pixels far from it do not
    assert (left[:, 28, 6:11] - rgb[:, 28, 6:11]).abs().max() > 0.1
    assert torch.allclose(left[:, 30:60, 60:90], rgb[:, 30:60, 60:90], atol=2 / 255)
    # proposals are drawn on the right half (untrained RPN: boxes somewhere in the image)
    assert (right - rgb).abs().amax(dim=0).gt(0.1).sum() > 50


def test_vis_period_counts_storage_iterations():
    model = _model(vis_period=3)
    with EventStorage(1) as storage:
        for _ in range(5):  # iterations 1..5: only 3 is a multiple of 3
            model(_batch())
            storage.step()
        assert [it for _, _, it in storage.vis_data] == [3]


def test_no_image_when_vis_period_is_zero():
    model = _model(vis_period=0)
    with EventStorage(0) as storage:
        model(_batch())
        assert storage.vis_data == []
    model(_batch())  # needs no event storage at all


def test_rgb_input_format_and_precomputed_proposals():
    model = _model(vis_period=1, input_format="RGB")
    model.proposal_generator = None
    sample = synthetic_image(2, H, W, [[20, 10, 60, 50]], [2])
    proposals = Instances((H, W))
    proposals.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, 30.0, 30.0]] * 30))
    proposals.objectness_logits = torch.zeros(30)
    sample["proposals"] = proposals
    with EventStorage(0) as storage:
        model([sample])
        ((_, img, _),) = storage.vis_data
    rgb = sample["image"].round().clamp(0, 255) / 255.0
    assert img.shape == (3, H, 2 * W)
    assert torch.allclose(img[:, 40:60, W + 40 : W + 90], rgb[:, 40:60, 40:90], atol=2 / 255)  # away from boxes
    assert (img[:, 15, W + 28 : W + 33] - rgb[:, 15, 28:33]).abs().max() > 0.1  # right edge of the proposal


def test_errors():
    model = _model(vis_period=1)
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="vis_period"):
            GeneralizedRCNN(
                backbone=model.backbone,
                proposal_generator=model.proposal_generator,
                roi_heads=model.roi_heads,
                pixel_mean=[0.0] * 3,
                pixel_std=[1.0] * 3,
                vis_period=bad,
            )
    with pytest.raises(RuntimeError, match="EventStorage"):
        model(_batch())
    model = _model(vis_period=1, input_format="YUV-BT.601")
    with EventStorage(0), pytest.raises(ValueError, match="input_format"):
        model(_batch())

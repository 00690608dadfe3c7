"""GeneralizedRCNN / ProposalNetwork: input handling, inference variants, and overfitting a tiny Mask R-CNN."""

from __future__ import annotations

import pytest
import torch

from libdet.config import instantiate
from libdet.modeling.meta_arch import GeneralizedRCNN, ProposalNetwork
from libdet.structures import Boxes, Instances

from ._tiny_models import single_thread, synthetic_image, tiny_mask_rcnn_fpn  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return instantiate(tiny_mask_rcnn_fpn())


def test_pixel_stats_are_non_persistent_buffers(model):
    buffers = dict(model.named_buffers())
    assert buffers["pixel_mean"].shape == (3, 1, 1) and buffers["pixel_std"].shape == (3, 1, 1)
    assert "pixel_mean" not in model.state_dict() and "pixel_std" not in model.state_dict()
    assert model.device == torch.device("cpu")
    with pytest.raises(ValueError, match="same shape"):
        GeneralizedRCNN(
            backbone=model.backbone,
            proposal_generator=None,
            roi_heads=model.roi_heads,
            pixel_mean=[1.0, 2.0, 3.0],
            pixel_std=[1.0],
        )


def test_preprocess_pads_to_backbone_divisibility(model):
    images = model.preprocess_image([{"image": torch.full((3, 50, 70), 103.53)}, {"image": torch.zeros(3, 64, 33)}])
    assert images.tensor.shape == (2, 3, 64, 96)  # multiples of 32
    assert images.image_sizes == [(50, 70), (64, 33)]
    assert images.tensor[0, 0, :50, :70].abs().max() < 1e-4  # normalised by the pixel mean
    with pytest.raises(ValueError, match=r"batched_inputs\[0\]\['image'\]"):
        model.preprocess_image([{"image": torch.zeros(1, 32, 32)}])


def test_inference_variants(model):
    model.eval()
    image = synthetic_image(0, 64, 96, [[8, 8, 40, 48]], [0])["image"]
    with torch.no_grad():
        raw = model.inference([{"image": image}], do_postprocess=False)
        assert isinstance(raw[0], Instances) and raw[0].image_size == (64, 96)
        given = Instances((64, 96), pred_boxes=Boxes(torch.tensor([[8.0, 8, 40, 48]])), pred_classes=torch.tensor([0]))
        (out,) = model.inference([{"image": image, "height": 32, "width": 48}], detected_instances=[given])
    inst = out["instances"]
    assert inst.image_size == (32, 48) and len(inst) == 1
    assert torch.allclose(inst.pred_boxes.tensor, torch.tensor([[4.0, 4, 20, 24]]))
    assert inst.pred_masks.shape == (1, 32, 48)
    model.train()
    with pytest.raises(ValueError, match="instances"):
        model([{"image": image}])
    with pytest.raises(RuntimeError, match="eval"):
        model.inference([{"image": image}])


def test_precomputed_proposals_and_proposal_network(model):
    model.eval()
    sample = synthetic_image(1, 64, 64, [[8, 8, 40, 48]], [1])
    proposals = Instances(
        (64, 64),
        proposal_boxes=Boxes(torch.tensor([[8.0, 8, 40, 48], [0, 0, 30, 30]])),
        objectness_logits=torch.tensor([1.0, 0.0]),
    )
    no_rpn = GeneralizedRCNN(
        backbone=model.backbone,
        proposal_generator=None,
        roi_heads=model.roi_heads,
        pixel_mean=model.pixel_mean.flatten().tolist(),
        pixel_std=model.pixel_std.flatten().tolist(),
    )
    no_rpn.eval()
    with torch.no_grad():
        (out,) = no_rpn([{"image": sample["image"], "proposals": proposals}])
    assert out["instances"].image_size == (64, 64)
    with pytest.raises(ValueError, match="proposals"):
        no_rpn([{"image": sample["image"]}])

    rpn_only = ProposalNetwork(
        backbone=model.backbone,
        proposal_generator=model.proposal_generator,
        pixel_mean=[103.53, 116.28, 123.675],
        pixel_std=[57.375, 57.12, 58.395],
    )
    losses = rpn_only.train()([sample])
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc"}
    rpn_only.eval()
    with torch.no_grad():
        (out,) = rpn_only([{"image": sample["image"], "height": 128, "width": 128}])
    assert out["proposals"].image_size == (128, 128) and len(out["proposals"]) > 0
    assert out["proposals"].proposal_boxes.tensor.max() <= 128


def test_tiny_mask_rcnn_overfits_synthetic_images():
    torch.manual_seed(0)
    model = instantiate(tiny_mask_rcnn_fpn()).train()
    batch = [
        synthetic_image(0, 64, 96, [[8, 8, 40, 48], [52, 16, 88, 56]], [0, 2]),
        synthetic_image(1, 80, 64, [[10, 30, 50, 70]], [1], polygons=True),
    ]
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(60):
        losses = model(batch)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append({k: v.item() for k, v in losses.items()})
    totals = [sum(h.values()) for h in history]
    assert sum(totals[-5:]) / 5 < 0.5 * totals[0], totals
    assert history[-1]["loss_mask"] < 0.5 * history[0]["loss_mask"]
    assert history[-1]["loss_rpn_cls"] < 0.5 * history[0]["loss_rpn_cls"]

"""Panoptic DETR: mask head parity with Hugging Face, weight round trips, losses and panoptic post-processing."""

from __future__ import annotations

import pytest
import torch
from detr.segmentation import dice_loss, panoptic_inference
from detr.weight_conversion import detect_layout, hf_to_libdet, libdet_to_hf, libdet_to_official, official_to_libdet

from libdet.structures import BitMasks, Boxes, Instances


def _randomised(model):
    g = torch.Generator().manual_seed(1)
    sd = {k: torch.rand(v.shape, generator=g) * 0.2 + 0.9 for k, v in model.state_dict().items()}
    model.load_state_dict(sd)
    return sd


def _assert_same(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("layout", ["v4", "v5"])
def test_segmentation_weight_round_trips(tiny_detr_segm, layout):
    sd = _randomised(tiny_detr_segm())
    official = libdet_to_official(sd, coco_classes=False)
    assert "detr.backbone.0.body.conv1.weight" in official and "mask_head.lay1.weight" in official
    assert detect_layout(official) == "official"
    _assert_same(official_to_libdet(official, coco_classes=False), sd)
    hf = libdet_to_hf(sd, coco_classes=False, layout=layout)
    assert ("mask_head.lay3.weight" if layout == "v4" else "mask_head.fpn_stages.0.refine.conv.weight") in hf
    assert "detr.class_labels_classifier.weight" in hf and detect_layout(hf) == "hf"
    _assert_same(hf_to_libdet(hf, coco_classes=False), sd)


def test_panoptic_class_rows(tiny_detr_segm):
    sd = _randomised(tiny_detr_segm(num_classes=133, is_thing=[True] * 80 + [False] * 53))
    ids = list(range(1, 91)) + list(range(92, 92 + 43))  # 133 made-up panoptic ids
    official = libdet_to_official(sd, panoptic_category_ids=ids)
    assert official["detr.class_embed.weight"].shape[0] == 251
    assert torch.equal(official["detr.class_embed.bias"][ids[100]], sd["detr.class_embed.bias"][100])
    _assert_same(official_to_libdet(official, panoptic_category_ids=ids), sd)
    with pytest.raises(ValueError, match="panoptic_category_ids"):
        official_to_libdet(official)


def test_hf_segmentation_parity(tiny_detr_segm):
    transformers = pytest.importorskip("transformers", reason="Hugging Face parity needs `transformers` (test extra)")
    backbone_config = transformers.ResNetConfig(
        embedding_size=16,
        hidden_sizes=[32, 64, 128, 256],
        depths=[3, 4, 6, 3],
        layer_type="bottleneck",
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = transformers.DetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=backbone_config,
        d_model=128,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=8,
        decoder_attention_heads=8,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_queries=10,
        num_labels=5,
    )
    torch.manual_seed(0)
    hf = transformers.DetrForSegmentation(config).eval()
    model = tiny_detr_segm(num_classes=5).eval()
    model.load_state_dict(hf_to_libdet(hf.state_dict(), coco_classes=False))
    torch.manual_seed(3)
    images, mask = model.detr.preprocess_image(
        [{"image": torch.rand(3, 96, 128) * 255}, {"image": torch.rand(3, 64, 96) * 255}]
    )
    with torch.no_grad():
        out = model.predict(images.tensor, mask)
        ref = hf(pixel_values=images.tensor, pixel_mask=(~mask).long())
    torch.testing.assert_close(out["logits"][-1], ref.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["boxes"][-1], ref.pred_boxes, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["masks"], ref.pred_masks, atol=1e-3, rtol=1e-4)
    import transformers as tr

    layout = "v4" if int(tr.__version__.split(".")[0]) < 5 else "v5"
    hf.load_state_dict(libdet_to_hf(model.state_dict(), coco_classes=False, layout=layout), strict=True)


def test_panoptic_inference_segments():
    # 4 queries over 3 classes (0: thing, 1 and 2: stuff); query 3 is "no object"
    logits = torch.full((4, 4), -10.0)
    logits[0, 0] = logits[1, 1] = logits[2, 1] = logits[3, 3] = 10.0
    masks = torch.full((4, 8, 8), -5.0)
    masks[0, :4, :4] = 5.0  # the thing: top-left
    masks[1, 4:, :] = 5.0  # stuff class 1, two queries, merged
    masks[2, :4, 4:] = 5.0
    masks[3] = 9.0  # "no object": never shown
    seg, info = panoptic_inference(logits, masks, output_size=(16, 16), is_thing=[True, False, False])
    assert [(s["category_id"], s["isthing"], s["area"]) for s in info] == [(0, True, 64), (1, False, 192)]
    assert seg.shape == (16, 16) and set(seg.unique().tolist()) == {1, 2}
    assert (seg[:8, :8] == 1).all() and (seg[8:, :] == 2).all() and (seg[:8, 8:] == 2).all()
    # a segment of at most min_area pixels is dropped and its pixels go to the others
    masks[0] = -5.0
    masks[0, 0, 0] = 50.0  # one pixel
    masks[1, :4, :4] = 1.0  # the rest of the top-left goes to stuff class 1
    seg, info = panoptic_inference(logits, masks, output_size=(8, 8), is_thing=[True, False, False], min_area=4)
    assert [s["category_id"] for s in info] == [1] and (seg == 1).all()
    # nothing confident: an empty segmentation
    seg, info = panoptic_inference(logits, masks, output_size=(8, 8), is_thing=[True, False, False], threshold=1.0)
    assert info == [] and (seg == 0).all()


def test_dice_loss_values():
    targets = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    perfect = torch.tensor([[50.0, 50.0, -50.0, -50.0]])
    assert dice_loss(perfect, targets, torch.tensor(1.0)).item() == pytest.approx(0.0, abs=1e-6)
    # sigmoid(0) = 0.5 everywhere: 1 - (2 * 1 + 1) / (2 + 2 + 1)
    assert dice_loss(torch.zeros(1, 4), targets, torch.tensor(1.0)).item() == pytest.approx(1 - 3 / 5)


def _segm_inputs():
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(2, 64, 96, dtype=torch.bool)
    masks[0, 8:40, 10:50] = True
    masks[1, 40:, :] = True
    inst = Instances((64, 96), gt_classes=torch.tensor([1, 4]), gt_masks=BitMasks(masks))
    inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
    assert isinstance(inst.gt_boxes, Boxes)
    return [{"image": torch.rand(3, 64, 96, generator=g) * 255, "instances": inst, "height": 64, "width": 96}]


def test_frozen_detr_trains_only_the_mask_head(tiny_detr_segm):
    model = tiny_detr_segm().train()
    losses = model(_segm_inputs())
    assert set(losses) == {"loss_mask", "loss_dice"}
    sum(losses.values()).backward()
    assert model.mask_head.out_lay.weight.grad.abs().sum() > 0
    assert model.bbox_attention.q_linear.weight.grad is not None
    assert all(p.grad is None for p in model.detr.parameters())


def test_unfrozen_losses_and_inference(tiny_detr_segm):
    model = tiny_detr_segm(freeze_detr=False).train()
    losses = model(_segm_inputs())
    assert {"loss_ce", "loss_bbox", "loss_giou", "loss_ce_0", "loss_mask", "loss_dice"} <= set(losses)
    model.eval()
    model.panoptic_threshold = 0.0  # an untrained model is never confident ...
    with torch.no_grad():
        model.detr.class_embed.bias[-1] = -100.0  # ... and may call everything "no object"
        (out,) = model(_segm_inputs())
    seg, info = out["panoptic_seg"]
    assert seg.shape == (64, 96) and len(info) >= 1
    assert set(seg.unique().tolist()) <= {s["id"] for s in info} | {0}
    assert len(out["instances"]) <= 10

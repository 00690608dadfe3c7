"""DETR's matcher, loss, positional encoding, transformer padding and inference."""

from __future__ import annotations

import itertools

import pytest
import torch
from detr import (
    HungarianMatcher,
    PositionEmbeddingLearned,
    PositionEmbeddingSine,
    SetCriterion,
    Transformer,
    box_cxcywh_to_xyxy,
    box_xyxy_to_cxcywh,
    generalized_box_iou,
)

from libdet.structures import Boxes, Instances


def _random_boxes(n: int, g: torch.Generator) -> torch.Tensor:
    centre = torch.rand(n, 2, generator=g) * 0.6 + 0.2
    size = torch.rand(n, 2, generator=g) * 0.3 + 0.05
    return torch.cat([centre, size], dim=1)


@pytest.mark.parametrize("seed", range(6))
def test_matcher_equals_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    num_queries, num_targets = 5, int(torch.randint(0, 5, (1,), generator=g))
    logits = torch.randn(1, num_queries, 4, generator=g)
    boxes = _random_boxes(num_queries, g)[None]
    target = {"labels": torch.randint(0, 3, (num_targets,), generator=g), "boxes": _random_boxes(num_targets, g)}
    matcher = HungarianMatcher(cost_class=1, cost_bbox=5, cost_giou=2)
    ((rows, cols),) = matcher(logits, boxes, [target])
    assert len(rows) == len(cols) == num_targets

    # brute force: every injective assignment of targets to queries, cost written out directly
    prob = logits[0].softmax(-1)

    def cost(q: int, t: int) -> float:
        l1 = (boxes[0, q] - target["boxes"][t]).abs().sum()
        giou = generalized_box_iou(
            box_cxcywh_to_xyxy(boxes[0, q : q + 1]), box_cxcywh_to_xyxy(target["boxes"][t : t + 1])
        )
        return float(-prob[q, target["labels"][t]] + 5 * l1 - 2 * giou[0, 0])

    best = min(
        sum(cost(q, t) for t, q in enumerate(perm)) for perm in itertools.permutations(range(num_queries), num_targets)
    )
    found = sum(cost(int(q), int(t)) for q, t in zip(rows, cols))
    assert found == pytest.approx(best, abs=1e-5)


def test_generalized_box_iou_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [4.0, 0.0, 6.0, 2.0]])
    # IoU 1/7, hull 9, union 7 -> 1/7 - 2/9; identical -> 1; disjoint: 0 - (12 - 8) / 12
    expected = torch.tensor([[1 / 7 - 2 / 9, 1.0, -1 / 3]])
    torch.testing.assert_close(generalized_box_iou(a, b), expected)
    torch.testing.assert_close(box_xyxy_to_cxcywh(box_cxcywh_to_xyxy(b)), b)


def _criterion(num_classes: int = 3) -> SetCriterion:
    return SetCriterion(num_classes=num_classes, matcher=HungarianMatcher())


def test_criterion_zero_for_perfect_predictions_and_aux_keys():
    g = torch.Generator().manual_seed(0)
    num_layers, num_queries, num_classes = 3, 6, 3
    targets = [
        {"labels": torch.tensor([0, 2]), "boxes": _random_boxes(2, g)},
        {"labels": torch.tensor([1]), "boxes": _random_boxes(1, g)},
    ]
    logits = torch.full((num_layers, 2, num_queries, num_classes + 1), -50.0)
    logits[..., num_classes] = 50.0  # "no object" everywhere ...
    boxes = _random_boxes(num_layers * 2 * num_queries, g).view(num_layers, 2, num_queries, 4)
    for i, t in enumerate(targets):  # ... except the queries holding the targets (not the first ones)
        for j, (label, box) in enumerate(zip(t["labels"], t["boxes"])):
            q = num_queries - 1 - j
            logits[:, i, q, :] = -50.0
            logits[:, i, q, label] = 50.0
            boxes[:, i, q] = box
    losses = _criterion(num_classes)(logits, boxes, targets)
    expected = {"loss_ce", "loss_bbox", "loss_giou"}
    expected |= {f"{k}_{i}" for k in ("loss_ce", "loss_bbox", "loss_giou") for i in range(num_layers - 1)}
    assert set(losses) == expected
    for k, v in losses.items():
        assert float(v) < 1e-6, k

    # a displaced box gives the weighted L1: 5 * |shift| * 2 coordinates / 3 boxes
    boxes[-1, 1, num_queries - 1, :2] += 0.05
    losses = _criterion(num_classes)(logits, boxes, targets)
    assert float(losses["loss_bbox"]) == pytest.approx(5 * 0.1 / 3, rel=1e-4)
    assert float(losses["loss_bbox_0"]) < 1e-6


def test_criterion_without_targets_is_finite():
    logits = torch.randn(2, 1, 4, 4, requires_grad=True)
    boxes = torch.rand(2, 1, 4, 4).mul(0.5).add(0.25).requires_grad_()
    losses = _criterion()(logits, boxes, [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}])
    assert losses["loss_bbox"].item() == 0.0 and losses["loss_giou"].item() == 0.0
    assert torch.isfinite(losses["loss_ce"]) and losses["loss_ce"].item() > 0
    sum(losses.values()).backward()
    assert torch.isfinite(logits.grad).all()


def test_sine_encoding_depends_on_padding_mask():
    enc = PositionEmbeddingSine(num_pos_feats=8)
    mask = torch.zeros(2, 6, 8, dtype=torch.bool)
    mask[1, 4:, :] = True  # image 1 is 4 x 5 inside a 6 x 8 batch
    mask[1, :, 5:] = True
    pos = enc(mask)
    assert pos.shape == (2, 16, 6, 8)
    assert not torch.allclose(pos[0, :, :4, :5], pos[1, :, :4, :5])
    # the padded image encodes exactly as the same image alone
    alone = enc(torch.zeros(1, 4, 5, dtype=torch.bool))
    torch.testing.assert_close(pos[1, :, :4, :5], alone[0])
    # normalised: the last real row / column reach the same value (scale) whatever the image size
    torch.testing.assert_close(pos[1, 0, 3, 0], pos[0, 0, 5, 0])


def test_learned_encoding_shape_and_limit():
    enc = PositionEmbeddingLearned(num_pos_feats=4, max_size=6)
    pos = enc(torch.zeros(2, 3, 5, dtype=torch.bool))
    assert pos.shape == (2, 8, 3, 5)
    torch.testing.assert_close(pos[0, :4, 1, 2], enc.col_embed.weight[2])
    torch.testing.assert_close(pos[0, 4:, 1, 2], enc.row_embed.weight[1])
    with pytest.raises(ValueError, match="max_size"):
        enc(torch.zeros(1, 7, 2, dtype=torch.bool))


def test_transformer_ignores_padded_features():
    """What batching changes for the transformer (garbage features at padded cells) changes none of its outputs."""
    torch.manual_seed(0)
    transformer = Transformer(
        d_model=16, nhead=2, num_encoder_layers=2, num_decoder_layers=3, dim_feedforward=32
    ).eval()
    enc = PositionEmbeddingSine(num_pos_feats=8)
    queries = torch.randn(4, 16)
    src = torch.randn(1, 16, 3, 4)
    hs, memory = transformer(
        src, torch.zeros(1, 3, 4, dtype=torch.bool), queries, enc(torch.zeros(1, 3, 4, dtype=torch.bool))
    )
    assert hs.shape == (3, 1, 4, 16) and memory.shape == (1, 16, 3, 4)
    padded = torch.randn(1, 16, 5, 7) * 10  # garbage where the image is padded
    padded[:, :, :3, :4] = src
    mask = torch.ones(1, 5, 7, dtype=torch.bool)
    mask[:, :3, :4] = False
    hs_p, memory_p = transformer(padded, mask, queries, enc(mask))
    torch.testing.assert_close(hs_p, hs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(memory_p[:, :, :3, :4], memory, atol=1e-5, rtol=1e-5)


def _inputs(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.rand(3, h, w, generator=g) * 255, "height": 2 * h, "width": 2 * w} for h, w in sizes]


def test_batched_and_single_inference_agree(tiny_detr):
    # Images of one size: with different sizes the backbone's convolutions see the padding (after FrozenBN it is no
    # longer zero) near the bottom / right border, so features there legitimately differ from the unbatched ones, as
    # in the official model. The transformer's own padding handling is tested exactly below.
    model = tiny_detr().eval()
    inputs = _inputs([(64, 96), (64, 96), (64, 96)])
    with torch.no_grad():
        batched = model(inputs)
        single = [model([x])[0] for x in inputs]
    for b, s in zip(batched, single):
        b, s = b["instances"], s["instances"]
        assert b.image_size == (128, 192)
        torch.testing.assert_close(b.pred_boxes.tensor, s.pred_boxes.tensor, atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(b.scores, s.scores, atol=1e-5, rtol=1e-4)
        assert torch.equal(b.pred_classes, s.pred_classes)


def test_inference_output(tiny_detr):
    model = tiny_detr(num_classes=5, num_queries=10).eval()
    inputs = _inputs([(64, 96), (80, 64)])
    with torch.no_grad():
        out = model(inputs)
        images, mask = model.preprocess_image(inputs)
        logits, boxes, _ = model.predict(images.tensor, mask)
    assert mask[1, :80, :64].logical_not().all() and mask[1, :, 64:].all()
    for i, (o, x) in enumerate(zip(out, inputs)):
        inst = o["instances"]
        assert inst.image_size == (x["height"], x["width"])
        assert len(inst) <= 10 and inst.pred_classes.max() < 5
        probs = logits[-1, i].softmax(-1)[:, :5]
        assert set(inst.scores.tolist()) <= set(probs.max(-1).values.tolist())


def test_training_losses_and_gradients(tiny_detr):
    model = tiny_detr(num_classes=5, num_queries=10).train()
    inputs = _inputs([(64, 96), (80, 64)])
    inputs[0]["instances"] = Instances(
        (64, 96), gt_boxes=Boxes(torch.tensor([[10.0, 8.0, 50.0, 40.0]])), gt_classes=torch.tensor([2])
    )
    inputs[1]["instances"] = Instances(
        (80, 64), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64)
    )
    losses = model(inputs)
    assert {"loss_ce", "loss_bbox", "loss_giou", "loss_ce_0", "loss_giou_0"} <= set(losses)
    sum(losses.values()).backward()
    assert model.query_embed.weight.grad.abs().sum() > 0
    assert model.backbone.res5[0].conv1.weight.grad is not None


def test_dc5_stages_follow_torchvision():
    from detr.backbone import make_detr_resnet_stages

    kwargs = dict(depth=50, stem_out_channels=16, res2_out_channels=32, width_per_group=8, norm="FrozenBN")
    res5 = make_detr_resnet_stages(dc5=True, **kwargs)[3]
    # stride 16 kept; the first block's 3x3 conv undilated, the others dilated by 2 (torchvision's DC5)
    assert [b.conv2.dilation for b in res5] == [(1, 1), (2, 2), (2, 2)]
    assert all(b.conv1.stride == (1, 1) and b.conv2.stride == (1, 1) for b in res5)
    plain = make_detr_resnet_stages(dc5=False, **kwargs)[3]
    assert plain[0].conv2.stride == (2, 2) and [b.conv2.dilation for b in plain] == [(1, 1)] * 3
    # same parameters either way: the weights of one load into the other
    assert [p.shape for b in res5 for p in b.state_dict().values()] == [
        p.shape for b in plain for p in b.state_dict().values()
    ]

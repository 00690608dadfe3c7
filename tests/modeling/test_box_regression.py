import math

import pytest
import torch

from libdet.modeling.box_regression import (
    Box2BoxTransform,
    Box2BoxTransformLinear,
    Box2BoxTransformRotated,
    _dense_box_regression_loss,
)
from libdet.structures import Boxes


def _random_boxes(n, seed=0, dim=4):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 50 + 1
    return torch.cat([xy, xy + wh], dim=1)


def test_get_deltas_hand_computed():
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    src = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    tgt = torch.tensor([[5.0, 5.0, 25.0, 15.0]])  # centre (15, 10), size 20 x 10
    deltas = t.get_deltas(src, tgt)
    assert torch.allclose(deltas, torch.tensor([[1.0, 0.5, math.log(2.0), 0.0]]))
    t = Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0))
    assert torch.allclose(t.get_deltas(src, tgt), torch.tensor([[10.0, 5.0, 5 * math.log(2.0), 0.0]]))


def test_apply_deltas_hand_computed_with_weights():
    t = Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0))
    box = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), 10 x 20; widths are x1 - x0 (no +1)
    deltas = torch.tensor([[1.0, 2.0, 0.0, 5 * math.log(2.0)]])
    # ctr_x = 5 + 0.1 * 10 = 6, ctr_y = 10 + 0.2 * 20 = 14, w = 10, h = 40
    assert torch.allclose(t.apply_deltas(deltas, box), torch.tensor([[1.0, -6.0, 11.0, 34.0]]))


def test_apply_deltas_clamps_dw_dh():
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    assert math.isclose(t.scale_clamp, math.log(1000.0 / 16))
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    out = t.apply_deltas(torch.tensor([[0.0, 0.0, 100.0, -1.0]]), box)
    w = 10 * 1000.0 / 16  # exp(clamp) * 10 = 625
    h = 10 * math.exp(-1.0)  # negative values are not clamped
    assert torch.allclose(out, torch.tensor([[5 - w / 2, 5 - h / 2, 5 + w / 2, 5 + h / 2]]))
    t2 = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0), scale_clamp=math.log(2.0))
    assert torch.allclose(
        t2.apply_deltas(torch.tensor([[0.0, 0.0, 3.0, 3.0]]), box), torch.tensor([[-5.0, -5.0, 15.0, 15.0]])
    )


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_round_trip_and_multiclass_layout(weights):
    t = Box2BoxTransform(weights=weights)
    src, tgt = _random_boxes(50, 0), _random_boxes(50, 1)
    deltas = t.get_deltas(src, tgt)
    assert torch.allclose(t.apply_deltas(deltas, src), tgt, atol=1e-3)
    # k boxes per row: each group of 4 decodes independently against the same reference box.
    deltas2 = torch.cat([deltas, torch.zeros_like(deltas)], dim=1)
    out = t.apply_deltas(deltas2, src)
    assert out.shape == (50, 8)
    assert torch.allclose(out[:, :4], tgt, atol=1e-3)
    assert torch.allclose(out[:, 4:], src, atol=1e-4)


def test_apply_deltas_computes_in_float32():
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    out = t.apply_deltas(torch.zeros(3, 4, dtype=torch.float16), _random_boxes(3).half())
    assert out.dtype == torch.float32


def test_box2box_errors():
    with pytest.raises(ValueError, match="weights"):
        Box2BoxTransform(weights=(1.0, 1.0))
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="width"):
        t.get_deltas(torch.tensor([[5.0, 0.0, 5.0, 10.0]]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    with pytest.raises(TypeError):
        t.get_deltas(Boxes(torch.zeros(1, 4)), torch.zeros(1, 4))


def test_rotated_round_trip_and_angle_wrap():
    t = Box2BoxTransformRotated(weights=(10.0, 10.0, 5.0, 5.0, 1.0))
    g = torch.Generator().manual_seed(0)
    src = torch.cat(
        [
            torch.rand(20, 2, generator=g) * 100,
            torch.rand(20, 2, generator=g) * 40 + 1,
            torch.rand(20, 1, generator=g) * 360 - 180,
        ],
        1,
    )
    tgt = torch.cat(
        [
            torch.rand(20, 2, generator=g) * 100,
            torch.rand(20, 2, generator=g) * 40 + 1,
            torch.rand(20, 1, generator=g) * 360 - 180,
        ],
        1,
    )
    out = t.apply_deltas(t.get_deltas(src, tgt), src)
    assert torch.allclose(out[:, :4], tgt[:, :4], atol=1e-3)
    dang = (out[:, 4] - tgt[:, 4] + 180) % 360 - 180
    assert dang.abs().max() < 1e-3
    # 170 -> -170 is +20 degrees, not -340.
    d = Box2BoxTransformRotated(weights=(1.0, 1.0, 1.0, 1.0, 1.0)).get_deltas(
        torch.tensor([[0.0, 0.0, 10.0, 10.0, 170.0]]), torch.tensor([[0.0, 0.0, 10.0, 10.0, -170.0]])
    )
    assert torch.allclose(d, torch.tensor([[0.0, 0.0, 0.0, 0.0, math.radians(20.0)]]), atol=1e-6)


def test_linear_transform_hand_computed():
    t = Box2BoxTransformLinear(normalize_by_size=True)
    src = torch.tensor([[0.0, 0.0, 8.0, 8.0]])  # an anchor point at (4, 4) of stride 8
    tgt = torch.tensor([[2.0, 0.0, 20.0, 12.0]])
    deltas = t.get_deltas(src, tgt)
    assert torch.allclose(deltas, torch.tensor([[2.0, 4.0, 16.0, 8.0]]) / 8)
    assert torch.allclose(t.apply_deltas(deltas, src), tgt)
    # Negative distances are clamped: the decoded box is never inverted.
    assert torch.allclose(
        t.apply_deltas(torch.tensor([[-1.0, 0.5, 1.0, 0.5]]), src), torch.tensor([[4.0, 0.0, 12.0, 8.0]])
    )
    t_raw = Box2BoxTransformLinear(normalize_by_size=False)
    assert torch.allclose(t_raw.get_deltas(src, tgt), torch.tensor([[2.0, 4.0, 16.0, 8.0]]))
    two = t.apply_deltas(torch.cat([deltas, deltas], dim=1), src)
    assert torch.allclose(two, torch.cat([tgt, tgt], dim=1))


def _dense_setup():
    anchors = [
        Boxes(torch.tensor([[0.0, 0.0, 8.0, 8.0], [8.0, 0.0, 16.0, 8.0]])),
        Boxes(torch.tensor([[0.0, 0.0, 16.0, 16.0]])),
    ]
    gt = [torch.tensor([[1.0, 1.0, 9.0, 9.0], [8.0, 0.0, 16.0, 8.0], [0.0, 0.0, 20.0, 20.0]])]
    fg_mask = torch.tensor([[True, False, True]])
    return anchors, gt, fg_mask


def test_dense_loss_smooth_l1_exact():
    anchors, gt, fg_mask = _dense_setup()
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    all_anchors = torch.cat([a.tensor for a in anchors])
    gt_deltas = t.get_deltas(all_anchors, gt[0])  # (3, 4)
    pred = gt_deltas.clone()
    pred[0, 0] += 0.5  # foreground: contributes 0.5 (L1)
    pred[1, 1] += 3.0  # background: ignored
    pred[2, 2] -= 0.25  # foreground
    pred_levels = [pred[None, :2], pred[None, 2:]]
    loss = _dense_box_regression_loss(anchors, t, pred_levels, gt, fg_mask, "smooth_l1", 0.0)
    assert torch.allclose(loss, torch.tensor(0.75), atol=1e-5)
    # beta = 1: 0.5 * x**2 / beta for |x| < beta -> 0.125 + 0.03125
    loss = _dense_box_regression_loss(anchors, t, pred_levels, gt, fg_mask, "smooth_l1", 1.0)
    assert torch.allclose(loss, torch.tensor(0.15625), atol=1e-5)
    # Tensor anchors work the same.
    loss_t = _dense_box_regression_loss([a.tensor for a in anchors], t, pred_levels, gt, fg_mask, "smooth_l1", 0.0)
    assert torch.allclose(loss_t, torch.tensor(0.75), atol=1e-5)


@pytest.mark.parametrize("loss_type", ["giou", "diou", "ciou"])
def test_dense_loss_iou_types(loss_type):
    anchors, gt, fg_mask = _dense_setup()
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    all_anchors = torch.cat([a.tensor for a in anchors])
    perfect = t.get_deltas(all_anchors, gt[0])
    loss = _dense_box_regression_loss(anchors, t, [perfect[None, :2], perfect[None, 2:]], gt, fg_mask, loss_type)
    assert loss.abs() < 1e-4
    zeros = torch.zeros(1, 3, 4)  # predicts the anchors themselves
    loss = _dense_box_regression_loss(anchors, t, [zeros[:, :2], zeros[:, 2:]], gt, fg_mask, loss_type)
    # anchor 0 vs gt 0: IoU 49 / 79; anchor 2 (16x16) inside gt 2 (20x20): IoU 256 / 400.
    if loss_type == "giou":
        # enclosing areas 81 and 400: giou = iou - (C - U) / C
        expected = (1 - (49 / 79 - 2 / 81)) + (1 - 256 / 400)
        assert torch.allclose(loss, torch.tensor(expected), atol=1e-4)
    else:
        assert loss > (1 - 49 / 79) + (1 - 256 / 400)


def test_dense_loss_unknown_type():
    anchors, gt, fg_mask = _dense_setup()
    with pytest.raises(ValueError, match="box_reg_loss_type"):
        _dense_box_regression_loss(anchors, Box2BoxTransform((1.0,) * 4), [torch.zeros(1, 3, 4)], gt, fg_mask, "l2")

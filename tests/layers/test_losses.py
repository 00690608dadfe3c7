import math

import pytest
import torch

from libdet.layers import losses
from libdet.layers.losses import ciou_loss, diou_loss

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.(script|trace)` is deprecated:FutureWarning")


def _t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("loss_fn", [diou_loss, ciou_loss])
def test_identical_boxes_give_zero(loss_fn):
    boxes = _t([0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 6.0, 9.0])
    torch.testing.assert_close(loss_fn(boxes, boxes.clone()), torch.zeros(2, dtype=torch.float64), atol=1e-6, rtol=0)


@pytest.mark.parametrize("loss_fn", [diou_loss, ciou_loss])
def test_disjoint_boxes(loss_fn):
    # IoU 0; centres (0.5, 0.5) and (2.5, 0.5): d^2 = 4; enclosing box (0, 0, 3, 1): c^2 = 10.
    # Same aspect ratio, so the CIoU term is 0.
    out = loss_fn(_t([0.0, 0.0, 1.0, 1.0]), _t([2.0, 0.0, 3.0, 1.0]))
    torch.testing.assert_close(out, _t(1.4), atol=1e-6, rtol=0)


def test_partial_overlap_diou():
    # Intersection 2, union 6 -> IoU 1/3; centres (1, 1), (2, 1) -> d^2 = 1; enclosing (0, 0, 3, 2) -> c^2 = 13.
    out = diou_loss(_t([0.0, 0.0, 2.0, 2.0]), _t([1.0, 0.0, 3.0, 2.0]))
    torch.testing.assert_close(out, _t(1 - 1 / 3 + 1 / 13), atol=1e-6, rtol=0)


def test_aspect_ratio_term_ciou():
    # IoU 4/8; centres (1, 1), (2, 1) -> d^2 = 1; enclosing (0, 0, 4, 2) -> c^2 = 20.
    v = 4 / math.pi**2 * (math.atan(2.0) - math.atan(1.0)) ** 2
    alpha = v / (1 - 0.5 + v)
    b1, b2 = _t([0.0, 0.0, 2.0, 2.0]), _t([0.0, 0.0, 4.0, 2.0])
    torch.testing.assert_close(ciou_loss(b1, b2), _t(0.5 + 1 / 20 + alpha * v), atol=1e-6, rtol=0)
    torch.testing.assert_close(diou_loss(b1, b2), _t(0.5 + 1 / 20), atol=1e-6, rtol=0)


def test_ciou_alpha_carries_no_gradient():
    b1 = _t([0.0, 0.0, 2.0, 2.0]).requires_grad_()
    b2 = _t([0.0, 0.0, 4.0, 2.0])
    (grad,) = torch.autograd.grad(ciou_loss(b1, b2), b1)
    v = 4 / math.pi**2 * (math.atan(2.0) - math.atan(1.0)) ** 2
    alpha = v / (1 - 0.5 + v)

    def with_constant_alpha(b):
        return (
            diou_loss(b, b2)
            + alpha * 4 / math.pi**2 * (math.atan(2.0) - torch.atan((b[0, 2] - b[0, 0]) / (b[0, 3] - b[0, 1]))) ** 2
        )

    (expected,) = torch.autograd.grad(with_constant_alpha(b1), b1)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("loss_fn", [diou_loss, ciou_loss])
def test_reductions(loss_fn):
    b1 = _t([0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 4.0, 3.0], [0.0, 0.0, 1.0, 1.0])
    b2 = _t([1.0, 0.0, 3.0, 2.0], [1.0, 1.0, 4.0, 3.0], [2.0, 0.0, 3.0, 1.0])
    per_box = loss_fn(b1, b2, reduction="none")
    assert per_box.shape == (3,)
    torch.testing.assert_close(loss_fn(b1, b2, reduction="mean"), per_box.mean())
    torch.testing.assert_close(loss_fn(b1, b2, reduction="sum"), per_box.sum())
    with pytest.raises(ValueError, match="reduction"):
        loss_fn(b1, b2, reduction="avg")


@pytest.mark.parametrize("loss_fn", [diou_loss, ciou_loss])
def test_empty_input_and_bad_boxes(loss_fn):
    empty = torch.zeros(0, 4, requires_grad=True)
    loss = loss_fn(empty, torch.zeros(0, 4), reduction="mean")
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert loss_fn(empty, torch.zeros(0, 4), reduction="none").shape == (0,)
    with pytest.raises(ValueError, match="boxes1"):
        loss_fn(_t([2.0, 0.0, 1.0, 1.0]), _t([0.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        loss_fn(torch.zeros(2, 5), torch.zeros(2, 5))


def test_fvcore_reexports():
    import fvcore.nn

    for name in ("giou_loss", "smooth_l1_loss", "sigmoid_focal_loss", "sigmoid_focal_loss_jit"):
        assert getattr(losses, name) is getattr(fvcore.nn, name)
        assert name in dir(losses)
    from libdet.layers.losses import giou_loss

    assert giou_loss is fvcore.nn.giou_loss
    with pytest.raises(AttributeError):
        _ = losses.no_such_loss
